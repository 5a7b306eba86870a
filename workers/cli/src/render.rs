//! JSON as seed 002's Python client prints it: `{"ok": true, "result": 15.0}`, with a space
//! after every `:` and `,`.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

struct PythonStyle;

/// `, ` before every element but the first.
fn separator<W: ?Sized + io::Write>(w: &mut W, first: bool) -> io::Result<()> {
    if first {
        Ok(())
    } else {
        w.write_all(b", ")
    }
}

impl Formatter for PythonStyle {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        separator(w, first)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        separator(w, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

pub fn to_line<T: Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonStyle);
    value
        .serialize(&mut serializer)
        .expect("serializing to memory cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_messages::compute::CalcOutput;

    #[test]
    fn prints_like_the_seed_client() {
        let answer = CalcOutput {
            ok: true,
            error: None,
            result: Some(serde_json::Number::from_f64(15.0).unwrap()),
            a: Some(10.0),
            b: Some(5.0),
            op: Some("add".into()),
            parts: None,
        };
        assert_eq!(
            to_line(&answer),
            r#"{"ok": true, "result": 15.0, "a": 10.0, "b": 5.0, "op": "add"}"#
        );
        assert_eq!(to_line(&serde_json::json!([1, 2])), "[1, 2]");
    }
}
