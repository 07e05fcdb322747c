//! The one place snakepit masks secrets in URLs and DSNs before it shows them: the run
//! history's URL (`snakepit-state`), connector URLs, their errors and `Debug` output
//! (`snakepit-connectors`). One copy, because copies drift: an earlier one split at the
//! first `@` and showed part of a password that contained one, and left `?password=`.
//!
//! ```
//! use snakepit_redact::mask_url;
//! assert_eq!(mask_url("postgres://app:p@ss@db/ledger"), "postgres://app:***@db/ledger");
//! assert_eq!(mask_url("mysql://db/x?user=a&password=pw"), "mysql://db/x?user=a&password=***");
//! assert_eq!(mask_url("host=db user=app password='a b'"), "host=db user=app password=***");
//! ```

use std::ops::Range;

/// Query or DSN keys whose value is a secret (compared without case, after
/// percent-decoding).
fn is_secret_key(key: &str) -> bool {
    let k = percent_decode(key).to_ascii_lowercase();
    k.contains("password")
        || k.contains("passwd")
        || k.contains("secret")
        || k.contains("token")
        || k == "pwd"
}

/// `%XX` sequences decoded (invalid ones kept as they are); for comparing keys only.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with its secrets replaced by `***`: the password of its userinfo (which may
/// itself contain `@`, `/`, `?` or `:`, or be percent-encoded) and the value of every
/// secret query parameter (`password=`, `sslpassword=`, `token=`, ...). A libpq-style
/// DSN without a scheme (`host=db password=x`) has its secret values masked.
pub fn mask_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut at = 0;
    for span in secret_spans(url) {
        out.push_str(&url[at..span.start]);
        out.push_str("***");
        at = span.end;
    }
    out.push_str(&url[at..]);
    out
}

/// The secrets [`mask_url`] masks, as written and percent-decoded, for scrubbing them
/// out of messages that quote them some other way (a driver's error).
pub fn secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    for span in secret_spans(url) {
        let raw = &url[span];
        let decoded = percent_decode(raw);
        if decoded != raw {
            out.push(decoded);
        }
        out.push(raw.to_owned());
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Where the secrets of `url` are, in order.
fn secret_spans(url: &str) -> Vec<Range<usize>> {
    let Some(sep) = url.find("://") else {
        return dsn_spans(url);
    };
    let start = sep + 3;
    let rest = &url[start..];
    let mut spans = Vec::new();
    // The userinfo ends at the last `@` before the path that follows the first `@`: a
    // password may hold `@`, `/` or `?` unencoded; the path and the query come after.
    // (`/` or `?` right after an `@` of the password is read as the path: the part of
    // the password before it is masked, the rest is shown.)
    let mut after = start;
    if let Some(first) = rest.find('@') {
        let path = rest[first..]
            .find(['/', '?', '#'])
            .map_or(rest.len(), |i| first + i);
        let at = rest[..path].rfind('@').unwrap_or(first);
        let userinfo = &rest[..at];
        let user_end = userinfo.find(':').unwrap_or(userinfo.len());
        // A user name never holds `/`, `?` or `#`: then this `@` is in the path or the
        // query, and there is no userinfo.
        if !userinfo[..user_end].contains(['/', '?', '#']) {
            if user_end < userinfo.len() {
                spans.push(start + user_end + 1..start + at);
            }
            after = start + at + 1;
        }
    }
    if let Some(q) = url[after..].find('?') {
        let mut pos = after + q + 1;
        let end = url[pos..].find('#').map_or(url.len(), |f| pos + f);
        for kv in url[pos..end].split('&') {
            if let Some((k, v)) = kv.split_once('=') {
                if is_secret_key(k) {
                    let v_start = pos + k.len() + 1;
                    spans.push(v_start..v_start + v.len());
                }
            }
            pos += kv.len() + 1;
        }
    }
    spans
}

/// The secret values of a `key=value key2='quoted value'` DSN.
fn dsn_spans(dsn: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut pos = 0;
    while let Some(eq) = dsn[pos..].find('=').map(|i| pos + i) {
        let key_start = dsn[pos..eq]
            .rfind(|c: char| c.is_whitespace() || c == ';')
            .map_or(pos, |i| pos + i + 1);
        let key = dsn[key_start..eq].trim();
        let value = &dsn[eq + 1..];
        let len = if let Some(quoted) = value.strip_prefix('\'') {
            // A quoted value ends at the next unescaped quote.
            let b = quoted.as_bytes();
            let mut i = 0;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            (i + 2).min(value.len())
        } else {
            value
                .find(|c: char| c.is_whitespace() || c == ';')
                .unwrap_or(value.len())
        };
        if is_secret_key(key) {
            spans.push(eq + 1..eq + 1 + len);
        }
        pos = eq + 1 + len;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::{mask_url, secrets};

    #[test]
    fn secrets_are_listed_as_written_and_decoded() {
        assert_eq!(
            secrets("postgres://u:p%40ss@h/db?password=x%21y"),
            ["p@ss", "p%40ss", "x!y", "x%21y"]
        );
        assert!(secrets("postgres://u@h/db").is_empty());
    }

    #[test]
    fn userinfo_passwords_are_masked_in_postgres_and_mysql_urls() {
        for scheme in ["postgres", "postgresql", "mysql", "mariadb"] {
            assert_eq!(
                mask_url(&format!("{scheme}://user:pass@db.internal:5432/ledger")),
                format!("{scheme}://user:***@db.internal:5432/ledger")
            );
        }
        assert_eq!(mask_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(mask_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            mask_url("sqlite:///a/b.db?mode=rwc"),
            "sqlite:///a/b.db?mode=rwc"
        );
        assert_eq!(mask_url("postgres://:pw@h/db"), "postgres://:***@h/db");
    }

    #[test]
    fn a_password_holding_at_slash_question_or_colon_is_masked_whole() {
        for pw in ["p@ss", "p@ss@word", "pa/ss", "pa?ss", "a:b", "@", "x/y@z"] {
            let url = format!("postgres://app:{pw}@db:5432/ledger?sslmode=disable");
            let m = mask_url(&url);
            assert_eq!(
                m, "postgres://app:***@db:5432/ledger?sslmode=disable",
                "{pw}"
            );
        }
        // An `@` after the path is not userinfo.
        assert_eq!(
            mask_url("postgres://u:pw@h/db?application_name=a@b"),
            "postgres://u:***@h/db?application_name=a@b"
        );
    }

    #[test]
    fn percent_encoded_passwords_and_keys_are_masked() {
        assert_eq!(
            mask_url("mysql://root:p%40ss%3Aw%2Fd@127.0.0.1:3306/test"),
            "mysql://root:***@127.0.0.1:3306/test"
        );
        assert_eq!(
            mask_url("postgres://h/db?%70assword=pw&PASSWORD=x&sslpassword=k&token=t&user=u"),
            "postgres://h/db?%70assword=***&PASSWORD=***&sslpassword=***&token=***&user=u"
        );
    }

    #[test]
    fn query_passwords_are_masked_with_or_without_userinfo() {
        assert_eq!(
            mask_url("mysql://root:pw@127.0.0.1:3306/test?password=pw&ssl-mode=disabled"),
            "mysql://root:***@127.0.0.1:3306/test?password=***&ssl-mode=disabled"
        );
        assert_eq!(
            mask_url("postgres://h/db?user=u&password=se@cret#frag"),
            "postgres://h/db?user=u&password=***#frag"
        );
    }

    #[test]
    fn dsns_without_a_scheme_are_masked() {
        assert_eq!(
            mask_url("host=db user=app password=s3cret dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
        assert_eq!(
            mask_url(r"host=db password='a \' b' port=5"),
            "host=db password=*** port=5"
        );
        assert_eq!(mask_url("Server=db;Pwd=x;Uid=u"), "Server=db;Pwd=***;Uid=u");
        assert_eq!(mask_url("just text"), "just text");
    }
}
