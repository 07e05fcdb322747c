//! Templates in a step's kwargs (README, "Jobs"), evaluated against the run's scheduled time
//! in the install's time zone: `${month.previous}`, `${month.current}` (YYYY-MM),
//! `${date.today}`, `${date.yesterday}` (YYYY-MM-DD), `${params.NAME}`, `${job.name}`,
//! `${run.id}`.
//!
//! Values keep their type: only strings are rendered (inside lists and tables too),
//! and a string that is exactly one `${params.NAME}` becomes the param's value with its
//! own type (`limit = "${params.limit}"` with `params = { limit = 10 }` is the integer
//! 10). A string that is exactly `${date.today}` or `${date.yesterday}` is a date (the
//! wire's `date`: a `datetime.date` in the worker, a DATE parameter in SQL); the worker
//! gives it as its ISO text to a parameter annotated `str` (and a `${month.*}` text to one
//! annotated `date` as the month's first day: see the shim's `references.coerce`). A
//! param or a date inside a longer string is written as text (a string as itself, other
//! values as JSON). Unknown templates are load-time errors (see
//! `snakepit_host::load_jobs`), so rendering cannot fail.

use chrono::{DateTime, Datelike, Months, NaiveDate};
use chrono_tz::Tz;
use snakepit::{Map, Value};

/// What the templates of one run evaluate against.
#[derive(Debug, Clone)]
pub struct TemplateContext<'a> {
    /// The run's scheduled time, in the install's time zone.
    pub scheduled_for: DateTime<Tz>,
    pub job: &'a str,
    pub run_id: &'a str,
    /// The run's params.
    pub params: &'a Map,
}

impl TemplateContext<'_> {
    fn today(&self) -> NaiveDate {
        self.scheduled_for.date_naive()
    }

    /// The text of a template other than a param; None for an unknown name.
    fn builtin(&self, name: &str) -> Option<String> {
        let today = self.today();
        Some(match name {
            "month.current" => today.format("%Y-%m").to_string(),
            "month.previous" => {
                let first = today.with_day(1)?;
                (first - Months::new(1)).format("%Y-%m").to_string()
            }
            "date.today" => today.format("%Y-%m-%d").to_string(),
            "date.yesterday" => today.pred_opt()?.format("%Y-%m-%d").to_string(),
            "job.name" => self.job.to_owned(),
            "run.id" => self.run_id.to_owned(),
            _ => return None,
        })
    }

    fn param(&self, name: &str) -> Option<&Value> {
        let key = name.strip_prefix("params.")?;
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Renders a value: strings are rendered, lists and maps recursively, the rest is kept.
    pub fn render(&self, v: &Value) -> Value {
        match v {
            Value::Str(s) => self.render_str(s),
            Value::List(items) => Value::List(items.iter().map(|i| self.render(i)).collect()),
            Value::Map(pairs) => Value::Map(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), self.render(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The day of a whole `${date.*}` template.
    fn day(&self, name: &str) -> Option<NaiveDate> {
        match name {
            "date.today" => Some(self.today()),
            "date.yesterday" => self.today().pred_opt(),
            _ => None,
        }
    }

    fn render_str(&self, s: &str) -> Value {
        if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            if !name.contains('}') {
                if let Some(v) = self.param(name) {
                    return v.clone();
                }
                if let Some(day) = self.day(name) {
                    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
                    let days = (day - epoch).num_days();
                    return Value::Date(i32::try_from(days).unwrap_or(i32::MAX));
                }
            }
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            match (self.builtin(name), self.param(name)) {
                (Some(text), _) => out.push_str(&text),
                (None, Some(Value::Str(p))) => out.push_str(p),
                (None, Some(p)) => out.push_str(&p.to_json().to_string()),
                (None, None) => out.push_str(&rest[i..i + 3 + end]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Value::Str(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(tz: Tz, y: i32, m: u32, d: u32, h: u32) -> DateTime<Tz> {
        tz.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    /// A whole date template is a date (the wire's `date`).
    fn date(iso: &str) -> Value {
        let day = NaiveDate::parse_from_str(iso, "%Y-%m-%d").unwrap();
        Value::Date((day - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32)
    }

    fn render(when: DateTime<Tz>, s: &str) -> Value {
        let params: Map = vec![
            ("region".into(), Value::from("eu")),
            ("limit".into(), Value::Int(10)),
            ("dry".into(), Value::Bool(true)),
        ];
        TemplateContext {
            scheduled_for: when,
            job: "j",
            run_id: "r1",
            params: &params,
        }
        .render(&Value::from(s))
    }

    #[test]
    fn months_and_days_across_year_boundaries() {
        let utc = chrono_tz::UTC;
        let jan1 = at(utc, 2026, 1, 1, 2);
        assert_eq!(render(jan1, "${month.previous}"), Value::from("2025-12"));
        assert_eq!(render(jan1, "${month.current}"), Value::from("2026-01"));
        assert_eq!(render(jan1, "${date.yesterday}"), date("2025-12-31"));
        assert_eq!(render(jan1, "${date.today}"), date("2026-01-01"));
        assert_eq!(
            render(jan1, "on ${date.today}"),
            Value::from("on 2026-01-01")
        );
        let mar1 = at(utc, 2028, 3, 1, 0);
        assert_eq!(render(mar1, "${date.yesterday}"), date("2028-02-29"));
        assert_eq!(render(mar1, "${month.previous}"), Value::from("2028-02"));
        let may31 = at(utc, 2026, 5, 31, 0);
        assert_eq!(render(may31, "${month.previous}"), Value::from("2026-04"));
    }

    #[test]
    fn the_time_zone_decides_the_day() {
        // 2026-06-01 00:30 in Paris is still May 31 in UTC.
        let paris = at(chrono_tz::Europe::Paris, 2026, 6, 1, 0);
        assert_eq!(render(paris, "${month.previous}"), Value::from("2026-05"));
        assert_eq!(render(paris, "${date.today}"), date("2026-06-01"));
        let utc = paris.with_timezone(&chrono_tz::UTC);
        assert_eq!(render(utc, "${month.previous}"), Value::from("2026-04"));
        assert_eq!(render(utc, "${date.today}"), date("2026-05-31"));
    }

    #[test]
    fn params_keep_their_type_alone_and_become_text_inside() {
        let t = at(chrono_tz::UTC, 2026, 5, 2, 0);
        assert_eq!(render(t, "${params.limit}"), Value::Int(10));
        assert_eq!(render(t, "${params.dry}"), Value::Bool(true));
        assert_eq!(
            render(t, "${params.region}-${job.name}/${run.id} x${params.limit}"),
            Value::from("eu-j/r1 x10")
        );
        assert_eq!(render(t, "${params.region"), Value::from("${params.region"));
        let list = Value::List(vec![Value::from("${date.today}"), Value::Bool(false)]);
        let params = Map::new();
        let cx = TemplateContext {
            scheduled_for: t,
            job: "j",
            run_id: "r",
            params: &params,
        };
        assert_eq!(
            cx.render(&list),
            Value::List(vec![date("2026-05-02"), Value::Bool(false)])
        );
    }
}
