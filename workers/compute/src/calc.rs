//! The calculator's requests and answers, in the shapes seed 002's client prints.

use serde::{Deserialize, Serialize};
use serde_json::Number;

/// A compute job's payload: `{"op": "add", "a": 10, "b": 5}` or
/// `{"op": "sum_squares", "n": 9, "parts": 3}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalcRequest {
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<f64>,
    /// Kept as written so that values beyond 64 bits are refused with a clear answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    SumSquares,
}

impl Op {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "add" => Self::Add,
            "sub" => Self::Sub,
            "mul" => Self::Mul,
            "div" => Self::Div,
            "sum_squares" => Self::SumSquares,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Sub => "sub",
            Self::Mul => "mul",
            Self::Div => "div",
            Self::SumSquares => "sum_squares",
        }
    }
}

/// One range of a sum_squares answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartOutput {
    pub a: u64,
    pub b: u64,
    pub result: Number,
}

/// A calculator answer. Field order is the seed's: `ok`, then `error` or
/// `result`, `a`, `b`, `op` (basic operations) or `result`, `parts` (sum_squares).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalcOutput {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<PartOutput>>,
}

impl CalcOutput {
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            result: None,
            a: None,
            b: None,
            op: None,
            parts: None,
        }
    }
}

/// Applies a basic operation. Division by zero and non-finite results are answers
/// (`ok: false`), not failures.
pub fn apply(op: Op, a: f64, b: f64) -> CalcOutput {
    let value = match op {
        Op::Add => a + b,
        Op::Sub => a - b,
        Op::Mul => a * b,
        Op::Div if b == 0.0 => return CalcOutput::error("division by zero"),
        Op::Div => a / b,
        Op::SumSquares => unreachable!("sum_squares is split, not applied"),
    };
    let Some(result) = Number::from_f64(value).filter(|_| value.is_finite()) else {
        return CalcOutput::error("result is not a finite number");
    };
    CalcOutput {
        ok: true,
        error: None,
        result: Some(result),
        a: Some(a),
        b: Some(b),
        op: Some(op.name().to_string()),
        parts: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_operations_give_the_seed_answers() {
        let add = serde_json::to_string(&apply(Op::Add, 10.0, 5.0)).unwrap();
        assert_eq!(
            add,
            r#"{"ok":true,"result":15.0,"a":10.0,"b":5.0,"op":"add"}"#
        );
        assert_eq!(apply(Op::Sub, 20.0, 7.0).result, Number::from_f64(13.0));
        assert_eq!(apply(Op::Mul, 6.0, 9.0).result, Number::from_f64(54.0));
        assert_eq!(apply(Op::Div, 10.0, 2.0).result, Number::from_f64(5.0));
    }

    #[test]
    fn division_by_zero_and_overflow_are_answers() {
        let div = serde_json::to_string(&apply(Op::Div, 10.0, 0.0)).unwrap();
        assert_eq!(div, r#"{"ok":false,"error":"division by zero"}"#);
        assert!(!apply(Op::Mul, 1e300, 1e300).ok);
    }
}
