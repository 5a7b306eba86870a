//! The calculator's basic operations, answered in the shapes seed 002's client prints.

use serde_json::Number;
use sluice_messages::compute::CalcOutput;

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
