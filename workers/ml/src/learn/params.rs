//! Reading hyper-parameters: each algorithm asks for the names it knows, with a default and a
//! range; whatever is left over is an unknown name, and an error. The effective values, defaults
//! filled in, are what the report shows.

use serde_json::{Map, Value};

use super::LearnError;

/// The parameters given for one algorithm, consumed name by name.
pub(crate) struct Params<'a> {
    given: &'a Map<String, Value>,
    known: Vec<&'static str>,
    effective: Map<String, Value>,
}

impl<'a> Params<'a> {
    pub(crate) fn new(given: &'a Map<String, Value>) -> Self {
        Self {
            given,
            known: Vec::new(),
            effective: Map::new(),
        }
    }

    fn take(&mut self, name: &'static str) -> Option<&'a Value> {
        self.known.push(name);
        self.given.get(name).filter(|v| !v.is_null())
    }

    fn record(&mut self, name: &'static str, value: Value) {
        self.effective.insert(name.to_string(), value);
    }

    /// An integer in `min..=max`; `5.0` is accepted as 5.
    pub(crate) fn int(
        &mut self,
        name: &'static str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, LearnError> {
        let value = match self.take(name) {
            None => default,
            Some(v) => integer(v).ok_or_else(|| {
                LearnError::param(format!("{name} must be an integer, not {}", shown(v)))
            })?,
        };
        if value < min || value > max {
            return Err(LearnError::param(format!(
                "{name} must be between {min} and {max}, not {value}"
            )));
        }
        self.record(name, Value::from(value));
        Ok(value)
    }

    /// An integer in `min..=max`, or none (null or absent) when `default` is none.
    pub(crate) fn optional_int(
        &mut self,
        name: &'static str,
        default: Option<usize>,
        min: usize,
        max: usize,
    ) -> Result<Option<usize>, LearnError> {
        let value = match self.take(name) {
            None => default,
            Some(v) => Some(integer(v).ok_or_else(|| {
                LearnError::param(format!(
                    "{name} must be an integer or null, not {}",
                    shown(v)
                ))
            })?),
        };
        if let Some(value) = value {
            if value < min || value > max {
                return Err(LearnError::param(format!(
                    "{name} must be between {min} and {max}, not {value}"
                )));
            }
        }
        self.record(name, value.map_or(Value::Null, Value::from));
        Ok(value)
    }

    /// A finite number above `above` (exclusive) and at most `max`.
    pub(crate) fn number(
        &mut self,
        name: &'static str,
        default: f64,
        above: f64,
        max: f64,
    ) -> Result<f64, LearnError> {
        let value = match self.take(name) {
            None => default,
            Some(v) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                LearnError::param(format!("{name} must be a number, not {}", shown(v)))
            })?,
        };
        if value <= above || value > max {
            return Err(LearnError::param(format!(
                "{name} must be above {above} and at most {max}, not {value}"
            )));
        }
        self.record(name, number_value(value));
        Ok(value)
    }

    /// `true` or `false`.
    pub(crate) fn boolean(
        &mut self,
        name: &'static str,
        default: bool,
    ) -> Result<bool, LearnError> {
        let value = match self.take(name) {
            None => default,
            Some(v) => v.as_bool().ok_or_else(|| {
                LearnError::param(format!("{name} must be true or false, not {}", shown(v)))
            })?,
        };
        self.record(name, Value::from(value));
        Ok(value)
    }

    /// One of `choices`.
    pub(crate) fn choice(
        &mut self,
        name: &'static str,
        default: &'static str,
        choices: &[&'static str],
    ) -> Result<&'static str, LearnError> {
        let value = match self.take(name) {
            None => default,
            Some(v) => {
                let given = v.as_str().unwrap_or("");
                choices
                    .iter()
                    .copied()
                    .find(|c| *c == given)
                    .ok_or_else(|| {
                        LearnError::param(format!(
                            "{name} must be one of {}, not {}",
                            choices.join(", "),
                            shown(v)
                        ))
                    })?
            }
        };
        self.record(name, Value::from(value));
        Ok(value)
    }

    /// A list of integers in `min..=max`, at least one and at most `most` of them.
    pub(crate) fn int_list(
        &mut self,
        name: &'static str,
        default: &[usize],
        (min, max): (usize, usize),
        most: usize,
    ) -> Result<Vec<usize>, LearnError> {
        let value = match self.take(name) {
            None => default.to_vec(),
            Some(v) => {
                let bad = || {
                    LearnError::param(format!(
                        "{name} must be a list of 1 to {most} integers between {min} and {max}, not {}",
                        shown(v)
                    ))
                };
                let list = v.as_array().ok_or_else(bad)?;
                let parsed = list.iter().map(integer).collect::<Option<Vec<_>>>();
                let parsed = parsed.ok_or_else(bad)?;
                if parsed.is_empty()
                    || parsed.len() > most
                    || parsed.iter().any(|n| *n < min || *n > max)
                {
                    return Err(bad());
                }
                parsed
            }
        };
        self.record(name, Value::from(value.clone()));
        Ok(value)
    }

    /// The effective parameters, or an error naming the first unknown one.
    pub(crate) fn finish(self, algorithm: &str) -> Result<Map<String, Value>, LearnError> {
        if let Some(unknown) = self
            .given
            .keys()
            .find(|k| !self.known.contains(&k.as_str()))
        {
            let shown: String = unknown.chars().take(40).collect();
            let known = if self.known.is_empty() {
                "none".to_string()
            } else {
                self.known.join(", ")
            };
            return Err(LearnError::param(format!(
                "{algorithm} has no parameter {shown:?} (it takes: {known})"
            )));
        }
        Ok(self.effective)
    }
}

fn integer(v: &Value) -> Option<usize> {
    if let Some(n) = v.as_u64() {
        return usize::try_from(n).ok();
    }
    let x = v.as_f64()?;
    (x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= 1e15).then_some(x as usize)
}

/// A JSON number for `x`; a finite float always has one.
pub(crate) fn number_value(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}
