//! The preprocessing a model keeps, fitted on its training data, and the encoding of rows into
//! its input width with it.
//!
//! - Matrix data: every column is standardized ((x − mean) / std, std 1 for a constant column).
//! - Records: a column's kind is decided at training by its values (null aside) and fixed:
//!   - **numeric**: standardized; null (or a missing field) becomes the training **mean**
//!     (0 once standardized).
//!   - **boolean**: 1 or 0; null becomes the share of `true` among the training rows.
//!   - **categorical** (strings): one-hot over the categories seen at training (the
//!     [`MAX_CATEGORIES`] most frequent ones), plus one bucket for null, unseen and rarer ones.
//!   - a column that is null in every training row is always 0, whatever a request sends.
//!
//!   Standardized values are clamped to ±1e100, so that a request's 1e308 cannot overflow an
//!   estimator's arithmetic.
//!
//!   At prediction a missing field is null, an unknown field is ignored (the target too), and a
//!   value of another type than its column's is an error naming the record and the field.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::data::{field, Field, Key, Record, Training};
use super::{Encoded, LearnError};

/// Most categories one-hot encoded per column; the rarer ones share the "other" bucket.
pub const MAX_CATEGORIES: usize = 100;

/// Largest standardized value: squared and summed over thousands of features it stays finite.
const MAX_STANDARDIZED: f64 = 1e100;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Scale {
    mean: f64,
    std: f64,
}

impl Scale {
    fn fit(name: &str, values: impl Iterator<Item = f64>) -> Result<Self, LearnError> {
        // Welford: no sum of squares to overflow before the mean is known.
        let (mut n, mut mean, mut m2) = (0f64, 0f64, 0f64);
        for x in values {
            n += 1.0;
            let delta = x - mean;
            mean += delta / n;
            m2 += delta * (x - mean);
        }
        let var = if n > 0.0 { m2 / n } else { 0.0 };
        if !mean.is_finite() || !var.is_finite() {
            return Err(LearnError::data(format!(
                "{name}'s values are too large to standardize"
            )));
        }
        let std = var.sqrt();
        Ok(Scale {
            mean,
            std: if std > 0.0 { std } else { 1.0 },
        })
    }

    /// The standardized value, clamped to ±[`MAX_STANDARDIZED`]: a request may send 1e308,
    /// and no estimator's distance or score may overflow to infinity or NaN on it.
    #[inline]
    fn apply(&self, x: f64) -> f64 {
        ((x - self.mean) / self.std).clamp(-MAX_STANDARDIZED, MAX_STANDARDIZED)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Kind {
    Numeric(Scale),
    Boolean {
        fill: f64,
    },
    /// Each known category's slot; slot `count` is the bucket for null and anything else.
    Categorical {
        slots: BTreeMap<String, usize>,
        count: usize,
    },
    /// Null in every training row: always 0, whatever a request sends (nothing was learnt of
    /// it).
    Empty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Column {
    name: String,
    offset: usize,
    kind: Kind,
}

impl Column {
    fn width(&self) -> usize {
        match &self.kind {
            Kind::Categorical { count, .. } => count + 1,
            _ => 1,
        }
    }

    /// Writes the column's null encoding into `row`.
    #[inline]
    fn null(&self, row: &mut [f64]) {
        match &self.kind {
            Kind::Numeric(_) | Kind::Empty => row[self.offset] = 0.0,
            Kind::Boolean { fill } => row[self.offset] = *fill,
            Kind::Categorical { count, .. } => {
                let slots = &mut row[self.offset..self.offset + count + 1];
                slots.fill(0.0);
                slots[*count] = 1.0;
            }
        }
    }

    /// Writes `value` into `row`, or says which kind of column refused it.
    #[inline]
    fn put(&self, value: &Field, row: &mut [f64]) -> Result<(), &'static str> {
        match (&self.kind, value) {
            (_, Field::Null) | (Kind::Empty, _) => self.null(row),
            (Kind::Numeric(scale), Field::Num(x)) => row[self.offset] = scale.apply(*x),
            (Kind::Boolean { .. }, Field::Bool(b)) => row[self.offset] = f64::from(u8::from(*b)),
            (Kind::Categorical { slots, count }, Field::Str(s)) => {
                let slot = slots.get(s.as_ref()).copied().unwrap_or(*count);
                let cells = &mut row[self.offset..self.offset + count + 1];
                cells.fill(0.0);
                cells[slot] = 1.0;
            }
            (Kind::Numeric(_), _) => return Err("numeric"),
            (Kind::Boolean { .. }, _) => return Err("boolean"),
            (Kind::Categorical { .. }, _) => return Err("categorical (strings)"),
        }
        Ok(())
    }
}

/// How a model turns a data object into rows of its input width.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Preprocessor {
    Matrix {
        scales: Vec<Scale>,
    },
    Records {
        target: String,
        columns: Vec<Column>,
        by_name: BTreeMap<String, usize>,
        width: usize,
    },
}

/// What a training pass learns about one records column.
#[derive(Default)]
struct Seen {
    kind: Option<&'static str>,
    first_row: usize,
    numbers: Vec<f64>,
    trues: usize,
    bools: usize,
    counts: HashMap<String, usize>,
}

impl Preprocessor {
    /// Fits the preprocessing on training data and encodes its rows with it.
    pub(crate) fn fit(data: &Training) -> Result<(Preprocessor, Encoded), LearnError> {
        match data {
            Training::Matrix { width, values, .. } => {
                let rows = values.len() / width;
                let scales = (0..*width)
                    .map(|c| {
                        Scale::fit(
                            &format!("X column {c}"),
                            (0..rows).map(|r| values[r * width + c]),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let mut encoded = values.clone();
                for row in encoded.chunks_exact_mut(*width) {
                    for (x, s) in row.iter_mut().zip(&scales) {
                        *x = s.apply(*x);
                    }
                }
                let x = Encoded::new(rows, *width, encoded);
                Ok((Preprocessor::Matrix { scales }, x))
            }
            Training::Records {
                records, target, ..
            } => Self::fit_records(records, target),
        }
    }

    fn fit_records(
        records: &[Record],
        target: &str,
    ) -> Result<(Preprocessor, Encoded), LearnError> {
        let mut order: Vec<String> = Vec::new();
        let mut seen: HashMap<String, Seen> = HashMap::new();
        for (r, record) in records.iter().enumerate() {
            for (name, raw) in &record.0 {
                let value = field(raw).map_err(|why| {
                    LearnError::data(format!("record {r}, field {name:?}: {why}"))
                })?;
                let kind = match &value {
                    Field::Null => continue,
                    Field::Num(_) => "numbers",
                    Field::Bool(_) => "booleans",
                    Field::Str(_) => "strings",
                    Field::Array | Field::Object => {
                        return Err(LearnError::data(format!(
                            "record {r}, field {name:?} is {}; fields must be numbers, strings, booleans or null",
                            value.kind()
                        )))
                    }
                };
                if !seen.contains_key(name.as_ref()) {
                    order.push(name.to_string());
                }
                let column = seen.entry(name.to_string()).or_default();
                match column.kind {
                    None => {
                        column.kind = Some(kind);
                        column.first_row = r;
                    }
                    Some(k) if k != kind => {
                        return Err(LearnError::data(format!(
                            "column {name:?} mixes {k} (record {}) and {kind} (record {r})",
                            column.first_row
                        )))
                    }
                    Some(_) => {}
                }
                match value {
                    Field::Num(x) => column.numbers.push(x),
                    Field::Bool(b) => {
                        column.bools += 1;
                        column.trues += usize::from(b);
                    }
                    Field::Str(s) => *column.counts.entry(s.into_owned()).or_default() += 1,
                    _ => {}
                }
            }
        }
        // Names seen only with null values are columns too: always 0.
        for record in records {
            for (name, _) in &record.0 {
                if !seen.contains_key(name.as_ref()) {
                    order.push(name.to_string());
                    seen.insert(name.to_string(), Seen::default());
                }
            }
        }
        if order.is_empty() {
            return Err(LearnError::data(format!(
                "the records have no field besides the target {target:?}"
            )));
        }
        let mut columns = Vec::with_capacity(order.len());
        let mut offset = 0;
        for name in order {
            let s = seen.remove(&name).unwrap_or_default();
            let kind = match s.kind {
                Some("booleans") => Kind::Boolean {
                    fill: s.trues as f64 / s.bools.max(1) as f64,
                },
                Some("strings") => {
                    let mut by_count: Vec<(String, usize)> = s.counts.into_iter().collect();
                    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    by_count.truncate(MAX_CATEGORIES);
                    let mut names: Vec<String> = by_count.into_iter().map(|(n, _)| n).collect();
                    names.sort();
                    let count = names.len();
                    let slots = names.into_iter().enumerate().map(|(i, n)| (n, i)).collect();
                    Kind::Categorical { slots, count }
                }
                None => Kind::Empty,
                _ => Kind::Numeric(Scale::fit(
                    &format!("column {name:?}"),
                    s.numbers.into_iter(),
                )?),
            };
            let column = Column { name, offset, kind };
            offset += column.width();
            columns.push(column);
        }
        let by_name = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let pre = Preprocessor::Records {
            target: target.to_string(),
            columns,
            by_name,
            width: offset,
        };
        let mut values = vec![0.0; records.len() * offset];
        for (r, (record, row)) in records
            .iter()
            .zip(values.chunks_exact_mut(offset))
            .enumerate()
        {
            pre.start_row(row);
            for (name, raw) in &record.0 {
                pre.put(r, name, raw, row)?;
            }
        }
        Ok((pre, Encoded::new(records.len(), offset, values)))
    }

    /// The model's input width.
    pub(crate) fn width(&self) -> usize {
        match self {
            Preprocessor::Matrix { scales } => scales.len(),
            Preprocessor::Records { width, .. } => *width,
        }
    }

    /// The feature schema as a user reads it.
    pub(crate) fn schema(&self) -> Value {
        match self {
            Preprocessor::Matrix { scales } => json!({ "features": scales.len() }),
            Preprocessor::Records { columns, .. } => Value::Array(
                columns
                    .iter()
                    .map(|c| match &c.kind {
                        Kind::Numeric(_) => json!({"name": c.name, "kind": "numeric"}),
                        Kind::Boolean { .. } => json!({"name": c.name, "kind": "boolean"}),
                        Kind::Empty => json!({"name": c.name, "kind": "empty"}),
                        Kind::Categorical { count, .. } => {
                            json!({"name": c.name, "kind": "categorical", "categories": count})
                        }
                    })
                    .collect(),
            ),
        }
    }

    fn start_row(&self, row: &mut [f64]) {
        if let Preprocessor::Records { columns, .. } = self {
            for c in columns {
                c.null(row);
            }
        }
    }

    /// Encodes one field of record `r` into `row`; an unknown field (or the target) is ignored.
    #[inline]
    fn put(&self, r: usize, name: &str, raw: &RawValue, row: &mut [f64]) -> Result<(), LearnError> {
        let Preprocessor::Records {
            columns, by_name, ..
        } = self
        else {
            return Ok(());
        };
        let Some(&c) = by_name.get(name) else {
            return Ok(());
        };
        let column = &columns[c];
        let value = field(raw)
            .map_err(|why| LearnError::data(format!("record {r}, field {name:?}: {why}")))?;
        column.put(&value, row).map_err(|kind| {
            LearnError::data(format!(
                "record {r}, field {name:?} is {}, but the column is {kind}",
                value.kind()
            ))
        })
    }

    /// Parses and encodes a prediction request's data object.
    pub(crate) fn encode(&self, text: &str) -> Result<Encoded, LearnError> {
        let mut sink = Sink {
            pre: self,
            values: Vec::new(),
            rows: 0,
            failure: None,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let outcome = (&mut de)
            .deserialize_map(Top { sink: &mut sink })
            .and_then(|()| de.end());
        if let Some(failure) = sink.failure {
            return Err(failure);
        }
        outcome.map_err(|e| LearnError::data(e.to_string()))?;
        Ok(Encoded::new(sink.rows, self.width(), sink.values))
    }
}

/// Where a request's rows are encoded, and the first error with its context.
struct Sink<'p> {
    pre: &'p Preprocessor,
    values: Vec<f64>,
    rows: usize,
    failure: Option<LearnError>,
}

impl Sink<'_> {
    fn fail<E: serde::de::Error>(&mut self, error: LearnError) -> E {
        let message = error.to_string();
        self.failure = Some(error);
        E::custom(message)
    }
}

struct Top<'s, 'p> {
    sink: &'s mut Sink<'p>,
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a data object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let records = matches!(self.sink.pre, Preprocessor::Records { .. });
        let mut found = false;
        while let Some(Key(key)) = map.next_key()? {
            match (key.as_ref(), records) {
                ("X", false) => {
                    map.next_value_seed(Rows { sink: self.sink })?;
                    found = true;
                }
                ("records", true) => {
                    map.next_value_seed(Rows { sink: self.sink })?;
                    found = true;
                }
                ("y", false) | ("target", true) => {
                    map.next_value::<IgnoredAny>()?;
                }
                ("X" | "y", true) => {
                    return Err(self.sink.fail(LearnError::data(
                        "this model was trained on records: send {\"records\": [...]}",
                    )))
                }
                ("records" | "target", false) => {
                    return Err(self.sink.fail(LearnError::data(
                        "this model was trained on a matrix: send {\"X\": [[...]]}",
                    )))
                }
                (other, _) => {
                    let shown: String = other.chars().take(40).collect();
                    let wanted = if records { "records" } else { "X" };
                    return Err(self.sink.fail(LearnError::data(format!(
                        "unknown field {shown:?} in the data object (expected {wanted:?})"
                    ))));
                }
            }
        }
        if !found {
            let wanted = if records {
                "{\"records\": [...]}"
            } else {
                "{\"X\": [[...]]}"
            };
            return Err(self
                .sink
                .fail(LearnError::data(format!("expected {wanted}"))));
        }
        Ok(())
    }
}

/// The array of rows (matrix rows or records).
struct Rows<'s, 'p> {
    sink: &'s mut Sink<'p>,
}

impl<'de> DeserializeSeed<'de> for Rows<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Rows<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.sink.values.reserve(n * self.sink.pre.width());
        }
        while seq.next_element_seed(Row { sink: self.sink })?.is_some() {
            self.sink.rows += 1;
        }
        Ok(())
    }
}

/// One row: an array of numbers (matrix) or an object (record), appended to the sink.
struct Row<'s, 'p> {
    sink: &'s mut Sink<'p>,
}

impl<'de> DeserializeSeed<'de> for Row<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.sink.pre {
            Preprocessor::Matrix { .. } => d.deserialize_seq(self),
            Preprocessor::Records { .. } => d.deserialize_map(self),
        }
    }
}

impl<'de> Visitor<'de> for Row<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.sink.pre {
            Preprocessor::Matrix { .. } => f.write_str("a row (an array of numbers)"),
            Preprocessor::Records { .. } => f.write_str("a record (an object)"),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let sink = self.sink;
        let Preprocessor::Matrix { scales } = sink.pre else {
            return Err(sink.fail(LearnError::data("expected a record")));
        };
        let r = sink.rows;
        let mut c = 0;
        loop {
            if c == scales.len() {
                let mut extra = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    extra += 1;
                }
                if extra == 0 {
                    return Ok(());
                }
                return Err(sink.fail(LearnError::data(format!(
                    "the model takes {} features, row {r} has {}",
                    scales.len(),
                    scales.len() + extra
                ))));
            }
            match seq.next_element_seed(Number) {
                Ok(Some(x)) => {
                    sink.values.push(scales[c].apply(x));
                    c += 1;
                }
                Ok(None) => {
                    return Err(sink.fail(LearnError::data(format!(
                        "the model takes {} features, row {r} has {c}",
                        scales.len()
                    ))))
                }
                Err(e) => {
                    let why = e.to_string();
                    return Err(
                        sink.fail(LearnError::data(format!("X row {r}, column {c}: {why}")))
                    );
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let sink = self.sink;
        let width = sink.pre.width();
        let start = sink.values.len();
        sink.values.resize(start + width, 0.0);
        sink.pre.start_row(&mut sink.values[start..]);
        let r = sink.rows;
        while let Some(Key(name)) = map.next_key()? {
            let raw: &RawValue = map.next_value()?;
            if let Err(e) = sink.pre.put(r, &name, raw, &mut sink.values[start..]) {
                return Err(sink.fail(e));
            }
        }
        Ok(())
    }
}

/// One matrix cell: a number, deserialized straight to an f64 (serde_json refuses one that
/// overflows, like `1e999`).
struct Number;

impl<'de> DeserializeSeed<'de> for Number {
    type Value = f64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<f64, D::Error> {
        d.deserialize_f64(self)
    }
}

impl Visitor<'_> for Number {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a finite number")
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(E::custom("not a finite number"))
        }
    }

    fn visit_u64<E>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_i64<E>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
}
