//! Sentences for TOML files a person wrote: where (line, column, the `[table] key`)
//! and what. Shared by every TOML file of an install: connectors.toml here, app.toml
//! and jobs.toml in `snakepit-host` (which depends on this crate).

use std::time::Duration;

/// Parses `30s`, `5m`, `1h 30m`; zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(format!(
            "{s:?} is zero; give a duration like \"30s\" or \"5m\""
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{s:?} is not a duration like \"30s\" or \"5m\": {e}"
        )),
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// "line L, column C: `[table] key` message" from toml's span (1-based, columns in
/// characters); the entry is read from the lines at and above the span. `kind` names
/// the kind of file ("app.toml", "jobs.toml") in "is not a table of ...".
pub fn toml_error(text: &str, e: &toml::de::Error, kind: &str) -> String {
    let message = e.message().trim();
    let message = message.strip_suffix('.').unwrap_or(message);
    let message = message
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    let Some(span) = e.span() else {
        return message;
    };
    let (line, col) = line_col(text, span.start);
    let at = format!("line {line}, column {col}");
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line - 1).copied().unwrap_or("").trim();
    let header = |l: &str| {
        l.starts_with('[')
            .then(|| l.split('#').next().unwrap_or(l).trim().to_owned())
    };
    let table = lines[..line.min(lines.len())]
        .iter()
        .rev()
        .find_map(|l| header(l.trim()));
    let key = (!here.starts_with('['))
        .then(|| here.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .flatten();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (name, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let expected = if expected.is_empty() {
            String::new()
        } else {
            format!("; expected {expected}")
        };
        return match (&table, &key) {
            // A key inside an inline table: name the entry too.
            (Some(t), Some(k)) if k != name.trim_matches('`') => format!(
                "{at}: {t} {k}: {} is not a setting{expected}",
                name.trim_matches('`')
            ),
            (Some(t), Some(_)) => format!(
                "{at}: {t} {} is not a setting{expected}",
                name.trim_matches('`')
            ),
            (None, Some(k)) => format!("{at}: {k} is not a table of {kind}{expected}"),
            (_, None) => format!(
                "{at}: [{}] is not a table of {kind}{expected}",
                name.trim_matches('`')
            ),
        };
    }
    if message.starts_with("missing field ") && here.starts_with('[') {
        let header = here.split('#').next().unwrap_or(here).trim();
        return format!("{at}: {header} is {message}");
    }
    match (table, key) {
        (Some(t), Some(k)) => format!("{at}: {t} {k} {message}"),
        (None, Some(k)) => format!("{at}: {k} {message}"),
        _ => format!("{at}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("a = 1\nb = \"é\"x", 13), (2, 7));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
