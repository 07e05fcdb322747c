//! Wire values to and from the Rust types the drivers speak (chrono, rust_decimal).

use std::str::FromStr;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use snakepit::Value;

/// Days from 0001-01-01 (CE day 1) to 1970-01-01.
const UNIX_EPOCH_CE_DAYS: i32 = 719_163;

pub(crate) fn date(days: i32) -> Result<NaiveDate, String> {
    days.checked_add(UNIX_EPOCH_CE_DAYS)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .ok_or_else(|| format!("date {days} days from 1970-01-01 is out of range"))
}

pub(crate) fn from_date(d: NaiveDate) -> Value {
    Value::Date(d.num_days_from_ce() - UNIX_EPOCH_CE_DAYS)
}

/// A naive datetime (wall-clock micros from 1970-01-01T00:00:00).
pub(crate) fn naive(micros: i64) -> Result<NaiveDateTime, String> {
    DateTime::from_timestamp_micros(micros)
        .map(|d| d.naive_utc())
        .ok_or_else(|| "datetime out of range".to_owned())
}

/// An aware datetime (micros of the UTC instant, offset in seconds).
pub(crate) fn aware(micros: i64, offset: i32) -> Result<DateTime<FixedOffset>, String> {
    let tz = FixedOffset::east_opt(offset).ok_or("UTC offset out of range")?;
    DateTime::from_timestamp_micros(micros)
        .map(|d| d.with_timezone(&tz))
        .ok_or_else(|| "datetime out of range".to_owned())
}

pub(crate) fn from_naive(n: NaiveDateTime) -> Value {
    Value::DateTime(snakepit::DateTime {
        micros: n.and_utc().timestamp_micros(),
        offset: None,
    })
}

pub(crate) fn from_aware<Tz: TimeZone>(d: DateTime<Tz>) -> Value {
    use chrono::Offset;
    Value::DateTime(snakepit::DateTime {
        micros: d.timestamp_micros(),
        offset: Some(d.offset().fix().local_minus_utc()),
    })
}

pub(crate) fn from_utc(d: DateTime<Utc>) -> Value {
    from_aware(d)
}

/// `str(Decimal)` text to a rust_decimal (plain or scientific notation).
pub(crate) fn decimal(s: &str) -> Result<Decimal, String> {
    Decimal::from_str(s)
        .or_else(|_| Decimal::from_scientific(s))
        .map_err(|_| {
            format!(
                "Decimal({s:?}) does not fit a 96-bit decimal (NaN and infinities do not either)"
            )
        })
}

pub(crate) fn from_decimal(d: Decimal) -> Value {
    Value::Decimal(d.to_string())
}

/// Why `v` (a list or a dict) cannot be a SQL parameter.
pub(crate) fn unbindable(v: &Value) -> String {
    format!(
        "is a {}, which SQL cannot take (pass None, bool, int, float, str, bytes, Decimal, date or datetime)",
        v.type_name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_datetimes_round_trip() {
        let d = date(20574).unwrap();
        assert_eq!(d.to_string(), "2026-05-01");
        assert_eq!(from_date(d), Value::Date(20574));
        let dt = snakepit::DateTime::parse_iso("2026-05-01T12:30:45.123456+02:00").unwrap();
        let a = aware(dt.micros, 7200).unwrap();
        assert_eq!(a.to_rfc3339(), "2026-05-01T12:30:45.123456+02:00");
        assert_eq!(from_aware(a), Value::DateTime(dt));
        let n = snakepit::DateTime::parse_iso("2026-05-01T12:30:45").unwrap();
        assert_eq!(from_naive(naive(n.micros).unwrap()), Value::DateTime(n));
        assert_eq!(decimal("-1E+3").unwrap().to_string(), "-1000");
        assert_eq!(
            from_decimal(decimal("12.50").unwrap()),
            Value::Decimal("12.50".into())
        );
        assert!(decimal("NaN").is_err());
    }
}
