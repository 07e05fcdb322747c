//! Values that cross the wire, and the canonical MessagePack codec for them.
//!
//! The encoder writes the smallest header for every int, str, bin, array and map, and
//! floats always as float 64, exactly as the Python shim does, so a value has one byte
//! form on both sides (the golden frames pin it).

use std::fmt;

use crate::codec::{Reader, Writer};
use crate::DecodeError;

/// Ext type code of `datetime.datetime`.
pub const EXT_DATETIME: i8 = 1;
/// Ext type code of `datetime.date`.
pub const EXT_DATE: i8 = 2;
/// Ext type code of `decimal.Decimal`.
pub const EXT_DECIMAL: i8 = 3;

/// A value as Python sees it: the types that keep their identity across the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    /// A dict: str keys, in insertion order.
    Map(Vec<(String, Value)>),
    DateTime(DateTime),
    /// A `datetime.date`, as days since 1970-01-01.
    Date(i32),
    /// A `decimal.Decimal`, as the text of `str(value)`.
    Decimal(String),
}

/// A `datetime.datetime`.
///
/// `offset` is `None` for a naive datetime, whose `micros` count from
/// 1970-01-01T00:00:00 to its wall-clock fields; for an aware one, `micros` is the UTC
/// instant and `offset` the UTC offset in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub micros: i64,
    pub offset: Option<i32>,
}

impl Value {
    /// Builds a map from `(key, value)` pairs.
    pub fn map<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The value under `key` when this is a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The Python type name of this value, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "dict",
            Value::DateTime(_) => "datetime",
            Value::Date(_) => "date",
            Value::Decimal(_) => "Decimal",
        }
    }

    /// Encodes this value alone (canonical MessagePack).
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        w.value(self);
        w.into_inner()
    }

    /// Decodes exactly one value that fills `bytes`.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Value, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = r.value(0)?;
        r.finish()?;
        Ok(v)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl fmt::Display for Value {
    /// Shows the value as JSON (the CLI's form; see [`Value::to_json`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// ISO 8601 text of a date given as days since 1970-01-01.
pub fn date_iso(days: i32) -> String {
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

impl DateTime {
    /// ISO 8601 text, as Python's `datetime.isoformat()` writes it.
    pub fn iso(&self) -> String {
        let local = self.micros + self.offset.unwrap_or(0) as i64 * 1_000_000;
        let days = local.div_euclid(MICROS_PER_DAY);
        let rest = local.rem_euclid(MICROS_PER_DAY);
        let (y, mo, d) = civil_from_days(days);
        let (secs, us) = (rest / 1_000_000, rest % 1_000_000);
        let mut s = format!(
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        if us != 0 {
            s.push_str(&format!(".{us:06}"));
        }
        if let Some(off) = self.offset {
            let sign = if off < 0 { '-' } else { '+' };
            let a = off.unsigned_abs();
            s.push_str(&format!("{sign}{:02}:{:02}", a / 3600, a / 60 % 60));
            if a % 60 != 0 {
                s.push_str(&format!(":{:02}", a % 60));
            }
        }
        s
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.ffffff][Z|±HH:MM]`.
    pub fn parse_iso(s: &str) -> Option<DateTime> {
        let b = s.as_bytes();
        if b.len() < 19 || !matches!(b[10], b'T' | b' ') {
            return None;
        }
        let days = parse_date(&s[..10])? as i64;
        let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if b[13] != b':' || b[16] != b':' || h > 23 || mi > 59 || se > 59 {
            return None;
        }
        let mut rest = &s[19..];
        let mut us = 0;
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 || n > 6 {
                return None;
            }
            us = frac[..n].parse::<i64>().ok()? * 10i64.pow(6 - n as u32);
            rest = &frac[n..];
        }
        let offset = match rest {
            "" => None,
            "Z" => Some(0),
            _ => {
                let sign = match rest.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let (oh, om) = rest[1..].split_once(':')?;
                Some(sign * (oh.parse::<i32>().ok()? * 3600 + om.parse::<i32>().ok()? * 60))
            }
        };
        let local = days * MICROS_PER_DAY + (h * 3600 + mi * 60 + se) * 1_000_000 + us;
        Some(DateTime {
            micros: local - offset.unwrap_or(0) as i64 * 1_000_000,
            offset,
        })
    }
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..10].parse().ok()?;
    if !(1..=12).contains(&m) || d == 0 || d > 31 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_iso() {
        for (s, days) in [("1970-01-01", 0), ("1969-12-31", -1), ("2026-05-01", 20574)] {
            assert_eq!(parse_date(s), Some(days), "{s}");
            assert_eq!(date_iso(days), s);
        }
        assert_eq!(parse_date("2026-02-30"), None);
    }

    #[test]
    fn datetimes_render_like_python_isoformat() {
        let dt = DateTime::parse_iso("2026-05-01T12:30:45.123456+02:00").unwrap();
        assert_eq!(dt.offset, Some(7200));
        assert_eq!(dt.iso(), "2026-05-01T12:30:45.123456+02:00");
        let naive = DateTime::parse_iso("2026-05-01T12:30:45").unwrap();
        assert_eq!(naive.iso(), "2026-05-01T12:30:45");
        assert_eq!(
            DateTime::parse_iso("2026-01-01T00:00:00Z").unwrap().iso(),
            "2026-01-01T00:00:00+00:00"
        );
    }
}
