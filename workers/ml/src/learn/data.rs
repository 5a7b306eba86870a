//! The two shapes of a data object, read from its JSON text: a matrix (`{"X": [[...]], "y":
//! [...]}`) or records (`{"records": [{...}], "target": "name"}`). Values are kept as raw JSON
//! slices of the text until their column decides what they may be, so a type error can name
//! its row and field.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::LearnError;

/// One JSON value, classified.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Field<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Field<'_> {
    /// What the value is, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Field::Null => "null",
            Field::Bool(_) => "a boolean",
            Field::Num(_) => "a number",
            Field::Str(_) => "a string",
            Field::Array => "an array",
            Field::Object => "an object",
        }
    }
}

/// Classifies a raw JSON value. A number that does not fit an f64 (`1e999`) is an error:
/// serde_json with `arbitrary_precision` keeps its text, and it would become infinity.
pub(crate) fn field(raw: &RawValue) -> Result<Field<'_>, String> {
    let text = raw.get();
    Ok(match text.as_bytes().first() {
        Some(b'n') => Field::Null,
        Some(b't') => Field::Bool(true),
        Some(b'f') => Field::Bool(false),
        Some(b'[') => Field::Array,
        Some(b'{') => Field::Object,
        Some(b'"') => {
            let inner = &text[1..text.len() - 1];
            if inner.contains('\\') {
                Field::Str(Cow::Owned(
                    serde_json::from_str::<String>(text).map_err(|e| e.to_string())?,
                ))
            } else {
                Field::Str(Cow::Borrowed(inner))
            }
        }
        _ => {
            let x: f64 = text
                .parse()
                .map_err(|_| format!("{text} is not a number"))?;
            if !x.is_finite() {
                let shown: String = text.chars().take(30).collect();
                return Err(format!("{shown} is out of range for a 64-bit float"));
            }
            Field::Num(x)
        }
    })
}

/// One record: its fields in the order given.
#[derive(Debug, Default)]
pub(crate) struct Record<'a>(pub(crate) Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Record<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Record<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record (an object of fields)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::new();
        while let Some(Key(name)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            fields.push((name, value));
        }
        Ok(Record(fields))
    }
}

/// A field name, borrowed from the text unless it has escapes.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// A training data object, either shape, before any column is decided.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainingText<'a> {
    #[serde(rename = "X", borrow, default)]
    x: Option<Vec<Vec<&'a RawValue>>>,
    #[serde(borrow, default)]
    y: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    records: Option<Vec<Record<'a>>>,
    #[serde(default)]
    target: Option<String>,
}

/// Training data, read and checked for shape (not yet encoded).
pub(crate) enum Training<'a> {
    /// Rows of finite numbers, all of one width.
    Matrix {
        width: usize,
        values: Vec<f64>,
        y: Vec<&'a RawValue>,
    },
    /// Records and the name of their target field; the target is taken out of each record.
    Records {
        records: Vec<Record<'a>>,
        target: String,
        y: Vec<&'a RawValue>,
    },
}

impl Training<'_> {
    pub(crate) fn rows(&self) -> usize {
        match self {
            Training::Matrix { y, .. } | Training::Records { y, .. } => y.len(),
        }
    }
}

/// Reads a training data object.
pub(crate) fn training(text: &str) -> Result<Training<'_>, LearnError> {
    let parsed: TrainingText = serde_json::from_str(text).map_err(|e| {
        LearnError::data(format!(
            "{e} (expected {{\"X\": [[...]], \"y\": [...]}} or {{\"records\": [...], \"target\": \"field\"}})"
        ))
    })?;
    match parsed {
        TrainingText {
            x: Some(x),
            y,
            records: None,
            target: None,
        } => {
            let y = y.ok_or_else(|| LearnError::data("matrix data needs \"y\", the targets"))?;
            matrix(x, y)
        }
        TrainingText {
            x: None,
            y: None,
            records: Some(records),
            target,
        } => {
            let target = target.ok_or_else(|| {
                LearnError::data("records need \"target\", the name of the field to predict")
            })?;
            records_with_target(records, target)
        }
        _ => Err(LearnError::data(
            "expected either {\"X\": [[...]], \"y\": [...]} or {\"records\": [...], \"target\": \"field\"}",
        )),
    }
}

fn matrix<'a>(x: Vec<Vec<&'a RawValue>>, y: Vec<&'a RawValue>) -> Result<Training<'a>, LearnError> {
    if x.is_empty() {
        return Err(LearnError::data("X has no rows"));
    }
    if x.len() != y.len() {
        return Err(LearnError::data(format!(
            "X has {} rows but y has {} values",
            x.len(),
            y.len()
        )));
    }
    let width = x[0].len();
    if width == 0 {
        return Err(LearnError::data("X's rows have no features"));
    }
    let mut values = Vec::with_capacity(x.len() * width);
    for (r, row) in x.iter().enumerate() {
        if row.len() != width {
            return Err(LearnError::data(format!(
                "X is ragged: row 0 has {width} features, row {r} has {}",
                row.len()
            )));
        }
        for (c, raw) in row.iter().enumerate() {
            match field(raw) {
                Ok(Field::Num(v)) => values.push(v),
                Ok(other) => {
                    return Err(LearnError::data(format!(
                        "X row {r}, column {c} is {}, not a number",
                        other.kind()
                    )))
                }
                Err(why) => return Err(LearnError::data(format!("X row {r}, column {c}: {why}"))),
            }
        }
    }
    Ok(Training::Matrix { width, values, y })
}

fn records_with_target(
    mut records: Vec<Record<'_>>,
    target: String,
) -> Result<Training<'_>, LearnError> {
    if records.is_empty() {
        return Err(LearnError::data("records is empty"));
    }
    let mut y = Vec::with_capacity(records.len());
    for (r, record) in records.iter_mut().enumerate() {
        let mut found = None;
        record.0.retain(|(name, raw)| {
            if *name == target {
                found = Some(*raw);
                false
            } else {
                true
            }
        });
        let raw = found.ok_or_else(|| {
            LearnError::data(format!("record {r} has no {target:?} field (the target)"))
        })?;
        y.push(raw);
    }
    Ok(Training::Records { records, target, y })
}
