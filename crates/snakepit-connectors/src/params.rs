//! `:name` parameters in SQL, rewritten for the backend: `?` for SQLite and MySQL (one
//! per occurrence), `$n` for PostgreSQL (one per name). String literals, quoted
//! identifiers, comments, PostgreSQL dollar quotes and `::casts` are left alone.

use snakepit::Value;

/// The SQL dialect that decides what is a literal, a comment and a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

/// SQL whose `:name` parameters are rewritten for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSql {
    /// The SQL as written.
    pub text: String,
    /// The SQL the database sees.
    pub sql: String,
    /// The parameter of each placeholder, in binding order.
    pub params: Vec<String>,
    /// Whether it may be several statements: a `;` outside literals and comments is
    /// followed by more SQL (a trigger's body counts too).
    pub several: bool,
}

pub(crate) fn is_identifier(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `text`'s `:name` parameters for `dialect`.
pub fn parse(text: &str, dialect: Dialect) -> Result<NamedSql, String> {
    let b = text.as_bytes();
    let mut sql = String::with_capacity(text.len() + 8);
    let mut params: Vec<String> = Vec::new();
    let mut copied = 0; // text[..copied] is in `sql`
    let mut i = 0;
    let (mut after_semicolon, mut several) = (false, false);
    // Index just past the closing `close` from `from`, honouring `''` (by re-entry) and,
    // when `backslash`, `\x` escapes.
    let skip_to = |from: usize, close: u8, backslash: bool| -> Option<usize> {
        let mut j = from;
        while j < b.len() {
            if backslash && b[j] == b'\\' {
                j += 2;
                continue;
            }
            if b[j] == close {
                return Some(j + 1);
            }
            j += 1;
        }
        None
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        let comment = (c == b'-' && next == Some(b'-'))
            || (c == b'/' && next == Some(b'*'))
            || (c == b'#' && dialect == Dialect::MySql);
        if after_semicolon && !c.is_ascii_whitespace() && c != b';' && !comment {
            several = true;
        }
        after_semicolon |= c == b';';
        match c {
            b'\'' => {
                let e_string = dialect == Dialect::Postgres
                    && i > 0
                    && matches!(b[i - 1], b'E' | b'e')
                    && (i < 2 || !(b[i - 2].is_ascii_alphanumeric() || b[i - 2] == b'_'));
                let backslash = dialect == Dialect::MySql || e_string;
                i = skip_to(i + 1, b'\'', backslash)
                    .ok_or("has a string literal that is not closed (a ' without its closing ')")?;
            }
            b'"' => {
                i = skip_to(i + 1, b'"', dialect == Dialect::MySql)
                    .ok_or("has a quoted name that is not closed (a \" without its closing \")")?;
            }
            b'`' if dialect != Dialect::Postgres => {
                i = skip_to(i + 1, b'`', false)
                    .ok_or("has a quoted name that is not closed (a ` without its closing `)")?;
            }
            b'-' if next == Some(b'-') => {
                i = skip_to(i + 2, b'\n', false).unwrap_or(b.len());
            }
            b'#' if dialect == Dialect::MySql => {
                i = skip_to(i + 1, b'\n', false).unwrap_or(b.len());
            }
            b'/' if next == Some(b'*') => {
                i = text[i + 2..]
                    .find("*/")
                    .map(|j| i + 2 + j + 2)
                    .ok_or("has a /* comment that is not closed")?;
            }
            b'$' if dialect == Dialect::Postgres => {
                // A dollar quote: $$...$$ or $tag$...$tag$ ($1 is a positional parameter).
                let tag_len = text[i + 1..]
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    .count();
                let starts_tag = next.is_some_and(|c| !c.is_ascii_digit());
                if starts_tag && b.get(i + 1 + tag_len) == Some(&b'$') {
                    let tag = &text[i..i + tag_len + 2];
                    let body = i + tag.len();
                    i = text[body..]
                        .find(tag)
                        .map(|j| body + j + tag.len())
                        .ok_or_else(|| format!("has a {tag} quote that is not closed"))?;
                } else {
                    i += 1;
                }
            }
            b'?' if dialect != Dialect::Postgres => {
                return Err(
                    "has a ? placeholder; write named parameters (:name) instead".to_owned(),
                );
            }
            b':' if next == Some(b':') => i += 2,
            b':' if next.is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') => {
                let len = text[i + 1..]
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    .count();
                let name = &text[i + 1..i + 1 + len];
                sql.push_str(&text[copied..i]);
                match dialect {
                    Dialect::Postgres => {
                        let n = match params.iter().position(|p| p == name) {
                            Some(n) => n,
                            None => {
                                params.push(name.to_owned());
                                params.len() - 1
                            }
                        };
                        sql.push_str(&format!("${}", n + 1));
                    }
                    Dialect::Sqlite | Dialect::MySql => {
                        params.push(name.to_owned());
                        sql.push('?');
                    }
                }
                i += 1 + len;
                copied = i;
            }
            _ => i += 1,
        }
    }
    sql.push_str(&text[copied..]);
    if sql.trim().is_empty() {
        return Err("is empty; write the SQL of the query".to_owned());
    }
    Ok(NamedSql {
        text: text.to_owned(),
        sql,
        params,
        several,
    })
}

impl NamedSql {
    /// The distinct parameter names, in order of first use.
    pub fn names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.params {
            if !out.contains(&p.as_str()) {
                out.push(p);
            }
        }
        out
    }

    /// The values to bind, in binding order, from `given`; a missing or an extra
    /// parameter is an error that names it and lists what the query takes.
    pub fn bind_values<'v>(&self, given: &'v [(String, Value)]) -> Result<Vec<&'v Value>, String> {
        let names = self.names();
        let takes = || {
            if names.is_empty() {
                "it takes no parameters".to_owned()
            } else {
                let list: Vec<String> = names.iter().map(|n| format!(":{n}")).collect();
                format!("it takes {}", list.join(", "))
            }
        };
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !given.iter().any(|(k, _)| k == *n))
            .map(|n| format!(":{n}"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing parameter{} {} ({})",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", "),
                takes()
            ));
        }
        let extra: Vec<String> = given
            .iter()
            .filter(|(k, _)| !names.contains(&k.as_str()))
            .map(|(k, _)| format!(":{k}"))
            .collect();
        if !extra.is_empty() {
            return Err(format!(
                "unexpected parameter{} {} ({})",
                if extra.len() == 1 { "" } else { "s" },
                extra.join(", "),
                takes()
            ));
        }
        Ok(self
            .params
            .iter()
            .map(|p| &given.iter().find(|(k, _)| k == p).expect("checked above").1)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(s: &str) -> (String, Vec<String>) {
        let n = parse(s, Dialect::Postgres).unwrap();
        (n.sql, n.params)
    }

    #[test]
    fn parameters_are_rewritten_per_backend() {
        let q = "SELECT a FROM t WHERE p = :period AND id = :id OR p2 = :period";
        assert_eq!(
            pg(q),
            (
                "SELECT a FROM t WHERE p = $1 AND id = $2 OR p2 = $1".into(),
                vec!["period".into(), "id".into()]
            )
        );
        let s = parse(q, Dialect::Sqlite).unwrap();
        assert_eq!(s.sql, "SELECT a FROM t WHERE p = ? AND id = ? OR p2 = ?");
        assert_eq!(s.params, ["period", "id", "period"]);
        assert_eq!(s.names(), ["period", "id"]);
        assert!(!s.several);
    }

    #[test]
    fn several_statements_are_told_from_one() {
        let one = |q: &str| !parse(q, Dialect::Sqlite).unwrap().several;
        assert!(one("UPDATE t SET a = ';' WHERE b = :b;  -- done; really\n"));
        assert!(one("SELECT 1; /* ; */ ;"));
        assert!(!one("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)"));
        assert!(!one(
            "CREATE TRIGGER g AFTER INSERT ON t BEGIN SELECT 1; END"
        ));
    }

    #[test]
    fn literals_casts_and_comments_are_left_alone() {
        let q = "SELECT ':no', \":no\", x::text, $$ :no $$, $t$ :no $t$ -- :no\n/* :no */ FROM t WHERE a = :yes";
        assert_eq!(
            pg(q),
            (
                "SELECT ':no', \":no\", x::text, $$ :no $$, $t$ :no $t$ -- :no\n/* :no */ FROM t WHERE a = $1".into(),
                vec!["yes".into()]
            )
        );
        let m = parse(
            "SELECT 'it\\'s :no', `:no` # :no\nFROM t WHERE a = :yes",
            Dialect::MySql,
        )
        .unwrap();
        assert_eq!(m.params, ["yes"]);
        assert_eq!(pg("SELECT 'a''b :no' || :x").1, ["x"]);
        assert_eq!(pg("SELECT E'\\' :no' || :x").1, ["x"]);
        assert_eq!(pg("SELECT a[1:2], $1").1, Vec::<String>::new());
    }

    #[test]
    fn broken_sql_is_refused() {
        assert!(parse("SELECT 'a", Dialect::Sqlite)
            .unwrap_err()
            .contains("string literal"));
        assert!(parse("SELECT /* a", Dialect::Postgres)
            .unwrap_err()
            .contains("comment"));
        assert!(parse("SELECT ? ", Dialect::Sqlite)
            .unwrap_err()
            .contains("named parameters"));
        assert!(parse(" ", Dialect::Sqlite).unwrap_err().contains("empty"));
    }

    #[test]
    fn missing_and_extra_parameters_are_named() {
        let q = parse("SELECT :a, :b", Dialect::Sqlite).unwrap();
        let given = vec![("a".to_owned(), Value::Int(1))];
        assert_eq!(
            q.bind_values(&given).unwrap_err(),
            "missing parameter :b (it takes :a, :b)"
        );
        let given = vec![
            ("a".to_owned(), Value::Int(1)),
            ("b".to_owned(), Value::Int(2)),
            ("c".to_owned(), Value::Int(3)),
        ];
        assert_eq!(
            q.bind_values(&given).unwrap_err(),
            "unexpected parameter :c (it takes :a, :b)"
        );
        assert_eq!(q.bind_values(&given[..2]).unwrap().len(), 2);
    }
}
