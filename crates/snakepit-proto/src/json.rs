//! JSON views of values, for the command line and for embedders that speak JSON.
//!
//! To JSON: datetimes and dates become ISO 8601 strings, decimals their text (exact),
//! bytes a base64 string, NaN and infinite floats `null`. From JSON: integers that fit
//! 64 bits become `Int`, other numbers `Float`; strings stay strings.

use crate::value::{date_iso, Value};
use crate::{DecodeError, RawValue};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Value {
    /// The JSON form of the value.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Nil => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Bytes(b) => J::String(base64(b)),
            Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(pairs) => J::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
            Value::DateTime(dt) => J::String(dt.iso()),
            Value::Date(d) => J::String(date_iso(*d)),
            Value::Decimal(s) => J::String(s.clone()),
        }
    }

    /// The value of a JSON document.
    pub fn from_json(j: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match j {
            J::Null => Value::Nil,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => n
                .as_i64()
                .map_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN)), Value::Int),
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::List(items.iter().map(Value::from_json).collect()),
            J::Object(map) => Value::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }
}

impl RawValue {
    /// Decodes straight into JSON.
    pub fn to_json(&self) -> Result<serde_json::Value, DecodeError> {
        Ok(self.decode()?.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_like_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0, 0xff]), "AP8=");
    }

    #[test]
    fn json_round_trip_keeps_ints_and_order() {
        let j: serde_json::Value =
            serde_json::from_str(r#"{"b": 1, "a": [1.5, "x", null, true]}"#).unwrap();
        let v = Value::from_json(&j);
        assert_eq!(v.get("b"), Some(&Value::Int(1)));
        assert_eq!(v.to_json(), j);
    }
}
