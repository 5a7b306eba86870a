//! The target: its values read from the data, the task inferred from them (or checked against
//! the one given), and the class labels of a classifier in their original JSON form.
//!
//! # Task inference
//! - `linear_regression` is always regression; `logistic_regression` and `naive_bayes` always
//!   classification.
//! - For the others: a boolean or string target is classification; a numeric target whose
//!   values are all integers, with at most [`MAX_INFERRED_CLASSES`] distinct values and at most
//!   half as many distinct values as rows (distinct × 2 ≤ rows: two rows per value on average,
//!   not for each), is classification; any other numeric target is regression.
//!
//! A classifier needs labels: booleans, strings or integral numbers (a non-integral number is
//! an error, "a continuous target"), and at least two classes. A regression needs numbers.

use std::cmp::Ordering;

use serde_json::value::RawValue;
use serde_json::Value;

use super::data::{field, Field};
use super::{Algorithm, LearnError, Task};

/// Most distinct integer values a numeric target may have to be taken for classes.
pub const MAX_INFERRED_CLASSES: usize = 20;

/// Largest target magnitude: squares of larger values (R², a tree's variance) overflow to
/// infinity, which no artifact or metric can hold.
const MAX_TARGET: f64 = 1e150;

/// Whole numbers from 2^53 on cannot be class labels: there distinct integers share an f64.
const MAX_INTEGER_LABEL: f64 = 9_007_199_254_740_992.0;

/// The targets, encoded for an estimator.
#[derive(Debug, Clone)]
pub(crate) enum Targets {
    /// Each row's class index into `labels`.
    Classes {
        index: Vec<u32>,
        labels: Vec<Value>,
    },
    Values(Vec<f64>),
}

impl Targets {
    pub(crate) fn len(&self) -> usize {
        match self {
            Targets::Classes { index, .. } => index.len(),
            Targets::Values(v) => v.len(),
        }
    }

    /// The targets of the rows `rows`, in that order (labels kept whole).
    pub(crate) fn select(&self, rows: &[usize]) -> Targets {
        match self {
            Targets::Classes { index, labels } => Targets::Classes {
                index: rows.iter().map(|&r| index[r]).collect(),
                labels: labels.clone(),
            },
            Targets::Values(v) => Targets::Values(rows.iter().map(|&r| v[r]).collect()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Number,
    Bool,
    Str,
}

/// Reads the target values of the `rows` given, decides the task and encodes the targets.
/// `what(r)` names row r's target in messages ("y[3]", "record 3's \"sold\"").
pub(crate) fn read(
    raw: &[&RawValue],
    algorithm: Algorithm,
    task: Option<Task>,
    what: &dyn Fn(usize) -> String,
) -> Result<(Task, Targets), LearnError> {
    let mut values = Vec::with_capacity(raw.len());
    let mut kind = None;
    for (r, value) in raw.iter().enumerate() {
        let mut f = field(value).map_err(|why| LearnError::data(format!("{}: {why}", what(r))))?;
        if let Field::Num(x) = &mut f {
            if x.abs() > MAX_TARGET {
                return Err(LearnError::data(format!(
                    "{} is {x:e}: targets beyond ±{MAX_TARGET:e} cannot be fitted (their squares overflow)",
                    what(r)
                )));
            }
            // -0.0 and 0.0 are one value: compared, sorted and deduplicated alike.
            if *x == 0.0 {
                *x = 0.0;
            }
        }
        let k = match &f {
            Field::Num(_) => Kind::Number,
            Field::Bool(_) => Kind::Bool,
            Field::Str(_) => Kind::Str,
            Field::Null => {
                return Err(LearnError::data(format!(
                    "{} is null: every row needs a target",
                    what(r)
                )))
            }
            other => {
                return Err(LearnError::data(format!(
                    "{} is {}; a target is a number, a boolean or a string",
                    what(r),
                    other.kind()
                )))
            }
        };
        match kind {
            None => kind = Some(k),
            Some(first) if first != k => {
                return Err(LearnError::data(format!(
                    "the target mixes {} and {} ({})",
                    name(first),
                    name(k),
                    what(r)
                )))
            }
            Some(_) => {}
        }
        values.push(f);
    }
    let kind = kind.ok_or_else(|| LearnError::data("there are no rows"))?;
    let fixed = match algorithm {
        Algorithm::LinearRegression => Some(Task::Regression),
        Algorithm::LogisticRegression | Algorithm::NaiveBayes => Some(Task::Classification),
        _ => None,
    };
    let task = match (fixed, task) {
        (Some(fixed), Some(given)) if fixed != given => {
            return Err(LearnError::task(format!(
                "{} does {}, not {}",
                algorithm.as_str(),
                fixed.as_str(),
                given.as_str()
            )))
        }
        (Some(fixed), _) => fixed,
        (None, Some(given)) => given,
        (None, None) => infer(kind, &values),
    };
    let targets = match task {
        Task::Regression => {
            if kind != Kind::Number {
                return Err(LearnError::task(format!(
                    "{} on a target of {}: regression needs numbers",
                    algorithm.as_str(),
                    name(kind)
                )));
            }
            Targets::Values(
                values
                    .iter()
                    .map(|f| match f {
                        Field::Num(x) => *x,
                        _ => 0.0,
                    })
                    .collect(),
            )
        }
        Task::Classification => classes(algorithm, raw, &values)?,
    };
    Ok((task, targets))
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Number => "numbers",
        Kind::Bool => "booleans",
        Kind::Str => "strings",
    }
}

fn infer(kind: Kind, values: &[Field]) -> Task {
    if kind != Kind::Number {
        return Task::Classification;
    }
    let mut distinct: Vec<f64> = Vec::new();
    for f in values {
        let Field::Num(x) = f else { continue };
        if x.fract() != 0.0 {
            return Task::Regression;
        }
        if !distinct.contains(x) {
            distinct.push(*x);
            if distinct.len() > MAX_INFERRED_CLASSES {
                return Task::Regression;
            }
        }
    }
    if distinct.len() * 2 <= values.len() {
        Task::Classification
    } else {
        Task::Regression
    }
}

fn order(a: &Field, b: &Field) -> Ordering {
    match (a, b) {
        (Field::Num(x), Field::Num(y)) => x.total_cmp(y),
        (Field::Bool(x), Field::Bool(y)) => x.cmp(y),
        (Field::Str(x), Field::Str(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// Sorted distinct labels, each kept as the JSON it first appeared as (so `0.0` stays a float).
fn classes(
    algorithm: Algorithm,
    raw: &[&RawValue],
    values: &[Field],
) -> Result<Targets, LearnError> {
    if let Some(x) = values.iter().find_map(|f| match f {
        Field::Num(x) if x.fract() != 0.0 => Some(*x),
        _ => None,
    }) {
        return Err(LearnError::task(format!(
            "{} is a classification, but the target is continuous ({x} is not a class label: use integers, booleans or strings)",
            algorithm.as_str()
        )));
    }
    if let Some(x) = values.iter().find_map(|f| match f {
        Field::Num(x) if x.abs() >= MAX_INTEGER_LABEL => Some(*x),
        _ => None,
    }) {
        return Err(LearnError::task(format!(
            "class label {x:e} is beyond ±2^53, where whole numbers cannot be told apart: send the labels as strings"
        )));
    }
    let mut firsts: Vec<usize> = (0..values.len()).collect();
    firsts.sort_by(|&a, &b| order(&values[a], &values[b]).then(a.cmp(&b)));
    firsts.dedup_by(|b, a| order(&values[*a], &values[*b]) == Ordering::Equal);
    if firsts.len() < 2 {
        return Err(LearnError::task(format!(
            "the target has a single class ({}): a classifier needs at least two",
            raw[firsts[0]].get()
        )));
    }
    let labels = firsts
        .iter()
        .map(|&r| serde_json::from_str::<Value>(raw[r].get()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LearnError::data(e.to_string()))?;
    let index = values
        .iter()
        .map(|f| {
            firsts
                .binary_search_by(|&c| order(&values[c], f))
                .map(|i| i as u32)
                .unwrap_or(0)
        })
        .collect();
    Ok(Targets::Classes { index, labels })
}
