//! connectors.toml (README, "Connectors"): read against its schema, `${VAR}`s filled from the
//! supervisor's environment, every query's `:name` parameters parsed for its backend,
//! every endpoint's `{placeholder}`s parsed. Errors name the file, the line and column,
//! and the entry (`[sql.billing] url`, `[api.crm.endpoints] get-customer`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
pub use snakepit_redact::mask_url;
use toml::Spanned;

use crate::params::{self, Dialect, NamedSql};
use crate::toml_diag::{line_col, parse_duration, toml_error};

/// Why connectors.toml could not be loaded: the file and one sentence (which names the
/// line, column and entry).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", file.display())]
pub struct LoadError {
    pub file: PathBuf,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    sql: BTreeMap<String, RawSql>,
    #[serde(default)]
    api: BTreeMap<String, RawApi>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSql {
    url: Spanned<String>,
    max_connections: Option<Spanned<i64>>,
    #[serde(default)]
    queries: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    base_url: Spanned<String>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    endpoints: BTreeMap<String, RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    method: Spanned<String>,
    path: Spanned<String>,
}

/// Which database a SQL connector talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    pub(crate) fn dialect(self) -> Dialect {
        match self {
            Backend::Sqlite => Dialect::Sqlite,
            Backend::Postgres => Dialect::Postgres,
            Backend::MySql => Dialect::MySql,
        }
    }
}

/// A connection URL: the real one (with its password) stays in the supervisor; `Debug`
/// and `Display` show it masked (`postgres://postgres:***@host/db`).
#[derive(Clone)]
pub struct Url {
    pub(crate) real: String,
    masked: String,
}

impl Url {
    pub(crate) fn new(real: String) -> Url {
        let masked = mask_url(&real);
        Url { real, masked }
    }
    /// The URL with its password masked.
    pub fn masked(&self) -> &str {
        &self.masked
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.masked)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked)
    }
}

/// `[sql.NAME]`.
#[derive(Debug, Clone)]
pub struct SqlConfig {
    pub name: String,
    pub backend: Backend,
    pub url: Url,
    /// For SQLite: the database file (relative URLs are resolved against the apps dir).
    pub sqlite_file: Option<PathBuf>,
    pub max_connections: u32,
    /// Query name → its SQL, parameters parsed for the backend.
    pub queries: BTreeMap<String, NamedSql>,
}

/// One `[api.NAME.endpoints]` entry.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: reqwest::Method,
    /// The path, split at its `{placeholders}`.
    pub path: Vec<PathPart>,
}

/// A piece of an endpoint's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPart {
    Text(String),
    Placeholder(String),
}

/// A header value: `Debug` shows `***`.
#[derive(Clone)]
pub struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `[api.NAME]`.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub name: String,
    /// Without a trailing `/`.
    pub base_url: Url,
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// connectors.toml, loaded. `Debug` shows no secret.
#[derive(Clone, Default)]
pub struct ConnectorsConfig {
    /// The file it came from (which may not exist: no connectors).
    pub file: PathBuf,
    pub sql: BTreeMap<String, SqlConfig>,
    pub api: BTreeMap<String, ApiConfig>,
    /// The environment variables its `${VAR}`s read: secrets that must not reach a worker.
    pub env_vars: BTreeSet<String>,
    /// Every secret value (passwords, header values), masked out of every message.
    pub(crate) secrets: Vec<String>,
}

impl fmt::Debug for ConnectorsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorsConfig")
            .field("file", &self.file)
            .field("sql", &self.sql)
            .field("api", &self.api)
            .field("env_vars", &self.env_vars)
            .finish_non_exhaustive()
    }
}

/// The default `max_connections` of a SQL connector.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 5;
/// The default `timeout` of an API connector.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(30);

impl ConnectorsConfig {
    /// Reads `<apps>/connectors.toml`; a missing file is an empty configuration.
    /// `${VAR}`s come from the process environment.
    pub fn load(apps_dir: &Path) -> Result<ConnectorsConfig, LoadError> {
        let file = apps_dir.join("connectors.toml");
        if !file.exists() {
            return Ok(ConnectorsConfig {
                file,
                ..Default::default()
            });
        }
        let text = std::fs::read_to_string(&file).map_err(|e| LoadError {
            file: file.clone(),
            reason: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, &file, apps_dir, |v| std::env::var(v).ok())
    }

    /// Parses `text` as the connectors.toml `file` of the install in `apps_dir`, taking
    /// `${VAR}`s from `env`.
    pub fn parse(
        text: &str,
        file: &Path,
        apps_dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConnectorsConfig, LoadError> {
        let err = |reason: String| LoadError {
            file: file.to_owned(),
            reason,
        };
        let raw: RawFile =
            toml::from_str(text).map_err(|e| err(toml_error(text, &e, "connectors.toml")))?;
        let at = |span: std::ops::Range<usize>, entry: String, what: String| {
            let (line, col) = line_col(text, span.start);
            err(format!("line {line}, column {col}: {entry} {what}"))
        };
        let mut out = ConnectorsConfig {
            file: file.to_owned(),
            ..Default::default()
        };
        let expand = |value: &Spanned<String>, entry: String| {
            let (s, vars) = expand_vars(value.get_ref(), &env)
                .map_err(|why| at(value.span(), entry.clone(), why))?;
            Ok::<_, LoadError>((s, vars))
        };
        for (name, sql) in raw.sql {
            let entry = format!("[sql.{}]", key(&name));
            let (url, vars) = expand(&sql.url, format!("{entry} url"))?;
            let (backend, sqlite_file, url) = sql_url(&url, apps_dir)
                .map_err(|why| at(sql.url.span(), format!("{entry} url"), why))?;
            if !vars.is_empty() {
                out.secrets.extend(vars.iter().map(|(_, v)| v.clone()));
            }
            out.secrets.extend(snakepit_redact::secrets(&url));
            out.env_vars.extend(vars.into_iter().map(|(k, _)| k));
            let max_connections = match &sql.max_connections {
                None => DEFAULT_MAX_CONNECTIONS,
                Some(n) if (1..=10_000).contains(n.get_ref()) => *n.get_ref() as u32,
                Some(n) => {
                    return Err(at(
                        n.span(),
                        format!("{entry} max_connections"),
                        format!("must be an integer from 1 to 10000, got {}", n.get_ref()),
                    ))
                }
            };
            let mut queries = BTreeMap::new();
            for (qname, q) in &sql.queries {
                let parsed = params::parse(q.get_ref(), backend.dialect()).map_err(|why| {
                    at(
                        q.span(),
                        format!("[sql.{}.queries] {}", key(&name), key(qname)),
                        why,
                    )
                })?;
                queries.insert(qname.clone(), parsed);
            }
            out.sql.insert(
                name.clone(),
                SqlConfig {
                    name,
                    backend,
                    url: Url::new(url),
                    sqlite_file,
                    max_connections,
                    queries,
                },
            );
        }
        for (name, api) in raw.api {
            let entry = format!("[api.{}]", key(&name));
            if out.sql.contains_key(&name) {
                return Err(at(
                    api.base_url.span(),
                    entry,
                    format!(
                        "has the name of [sql.{}]; give every connector its own name",
                        key(&name)
                    ),
                ));
            }
            let (base, vars) = expand(&api.base_url, format!("{entry} base_url"))?;
            out.secrets.extend(vars.iter().map(|(_, v)| v.clone()));
            out.env_vars.extend(vars.into_iter().map(|(k, _)| k));
            let base = base.trim_end_matches('/').to_owned();
            if let Err(e) = reqwest::Url::parse(&base) {
                return Err(at(
                    api.base_url.span(),
                    format!("{entry} base_url"),
                    format!("is not a URL: {e}"),
                ));
            }
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(at(
                    api.base_url.span(),
                    format!("{entry} base_url"),
                    "must start with http:// or https://".into(),
                ));
            }
            let mut headers = Vec::new();
            for (h, v) in &api.headers {
                let e = format!("{entry} headers.{h}");
                let (value, vars) = expand(v, e.clone())?;
                if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(at(v.span(), e, "is not a valid header name".into()));
                }
                if reqwest::header::HeaderValue::from_str(&value).is_err() {
                    return Err(at(
                        v.span(),
                        e,
                        "is not a valid header value (control characters or non-ASCII)".into(),
                    ));
                }
                for (k, v) in vars {
                    out.env_vars.insert(k);
                    out.secrets.push(v);
                }
                out.secrets.push(value.clone());
                headers.push((h.clone(), Secret(value)));
            }
            let timeout = match &api.timeout {
                None => DEFAULT_API_TIMEOUT,
                Some(t) => parse_duration(t.get_ref())
                    .map_err(|why| at(t.span(), format!("{entry} timeout"), why))?,
            };
            let mut endpoints = BTreeMap::new();
            for (ename, ep) in &api.endpoints {
                let e = format!("[api.{}.endpoints] {}", key(&name), key(ename));
                let method = ep.method.get_ref().to_ascii_uppercase();
                let method = match method.as_str() {
                    "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" => {
                        reqwest::Method::from_bytes(method.as_bytes()).expect("a standard method")
                    }
                    _ => {
                        return Err(at(
                            ep.method.span(),
                            e,
                            format!(
                                "method {:?} is not one of GET, POST, PUT, PATCH, DELETE, HEAD",
                                ep.method.get_ref()
                            ),
                        ))
                    }
                };
                let path = parse_path(ep.path.get_ref())
                    .map_err(|why| at(ep.path.span(), e.clone(), why))?;
                endpoints.insert(ename.clone(), Endpoint { method, path });
            }
            out.api.insert(
                name.clone(),
                ApiConfig {
                    name,
                    base_url: Url::new(base),
                    headers,
                    timeout,
                    endpoints,
                },
            );
        }
        out.secrets.retain(|s| s.len() >= 3);
        out.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out.secrets.dedup();
        Ok(out)
    }

    /// `message` with every secret of this file replaced by `***`.
    pub fn scrub(&self, message: &str) -> String {
        let mut m = message.to_owned();
        for s in &self.secrets {
            if m.contains(s.as_str()) {
                m = m.replace(s.as_str(), "***");
            }
        }
        m
    }

    /// The names of every connector, SQL then API.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sql.keys().chain(self.api.keys()).map(String::as_str)
    }
}

/// A TOML key as written in a header: bare when it can be, quoted otherwise.
pub(crate) fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_owned()
    } else {
        format!("{k:?}")
    }
}

/// Fills `${VAR}`s from `env`; returns the text and the variables used (name, value).
/// An error is a sentence that reads after the setting's name (and masks a URL's
/// password): `uses ${CRM_TOKEN}, which is not set in the supervisor's environment; …`.
pub fn expand_vars(
    s: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(String, Vec<(String, String)>), String> {
    let mut out = String::with_capacity(s.len());
    let mut used = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "has a \"${{\" without its closing \"}}\" in {:?}",
                mask_url(s)
            ));
        };
        let var = &after[..end];
        let valid = var
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "uses ${{{var}}}, which is not a variable name (letters, digits, _)"
            ));
        }
        match env(var) {
            Some(v) => {
                out.push_str(&v);
                used.push((var.to_owned(), v));
            }
            None => {
                return Err(format!(
                    "uses ${{{var}}}, which is not set in the supervisor's environment; set {var} before starting snakepit"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok((out, used))
}

/// Which backend a URL names; SQLite paths resolved against the apps dir.
fn sql_url(url: &str, apps_dir: &Path) -> Result<(Backend, Option<PathBuf>, String), String> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, format!("?{q}")),
            None => (rest, String::new()),
        };
        if path.is_empty() || path == ":memory:" {
            return Err(
                "names no database file; write sqlite://FILE (relative to the apps dir)".into(),
            );
        }
        let file = apps_dir.join(path);
        let real = format!("sqlite://{}{query}", file.display());
        return Ok((Backend::Sqlite, Some(file), real));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, None, url.to_owned()));
    }
    if url.starts_with("mysql://") {
        return Ok((Backend::MySql, None, url.to_owned()));
    }
    if let Some(rest) = url.strip_prefix("mariadb://") {
        return Ok((Backend::MySql, None, format!("mysql://{rest}")));
    }
    Err(format!(
        "{:?} is not a sqlite://, postgres://, mysql:// or mariadb:// URL",
        mask_url(url)
    ))
}

/// Splits an endpoint path at its `{placeholders}`.
fn parse_path(path: &str) -> Result<Vec<PathPart>, String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with \"/\""));
    }
    let mut parts = Vec::new();
    let mut rest = path;
    while let Some(i) = rest.find(['{', '}']) {
        if rest.as_bytes()[i] == b'}' {
            return Err(format!("path {path:?} has a \"}}\" without its \"{{\""));
        }
        if i > 0 {
            parts.push(PathPart::Text(rest[..i].to_owned()));
        }
        let after = &rest[i + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("path {path:?} has a \"{{\" without its \"}}\""))?;
        let name = &after[..end];
        if !params::is_identifier(name) {
            return Err(format!(
                "path {path:?}: {{{name}}} is not a parameter name (letters, digits, _)"
            ));
        }
        parts.push(PathPart::Placeholder(name.to_owned()));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(PathPart::Text(rest.to_owned()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<ConnectorsConfig, String> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConnectorsConfig::parse(
            text,
            Path::new("/apps/connectors.toml"),
            Path::new("/apps"),
            |v| env.get(v).cloned(),
        )
        .map_err(|e| e.to_string())
    }

    fn parse(text: &str) -> Result<ConnectorsConfig, String> {
        parse_env(text, &[])
    }

    const SPEC: &str = r#"
[sql.billing]
url = "sqlite://billing.db"            # relative to the apps dir
max_connections = 5
[sql.billing.queries]
drafts-for-period = "SELECT id, customer, amount FROM invoices WHERE status = 'draft' AND period = :period"
"issue-invoice:write" = "UPDATE invoices SET status = 'issued' WHERE id = :id"

[sql.ledger]
url = "postgres://postgres:${PGPASS}@127.0.0.1:5432/test"

[api.crm]
base_url = "http://127.0.0.1:9000/api/"
headers = { Authorization = "Bearer ${CRM_TOKEN}" }
timeout = "10s"
[api.crm.endpoints]
get-customer = { method = "GET", path = "/customers/{id}" }
sync-deal   = { method = "POST", path = "/deals/{deal_id}/sync" }
"#;

    #[test]
    fn the_spec_example_loads() {
        let c = parse_env(SPEC, &[("CRM_TOKEN", "tok-123"), ("PGPASS", "s3cret")]).unwrap();
        let b = &c.sql["billing"];
        assert_eq!(b.backend, Backend::Sqlite);
        assert_eq!(
            b.sqlite_file.as_deref(),
            Some(Path::new("/apps/billing.db"))
        );
        assert_eq!(b.queries["drafts-for-period"].params, ["period"]);
        let l = &c.sql["ledger"];
        assert_eq!(
            l.url.masked(),
            "postgres://postgres:***@127.0.0.1:5432/test"
        );
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        assert!(!format!("{c:?}").contains("tok-123"), "{c:?}");
        let crm = &c.api["crm"];
        assert_eq!(crm.base_url.masked(), "http://127.0.0.1:9000/api");
        assert_eq!(crm.timeout, Duration::from_secs(10));
        assert_eq!(
            crm.endpoints["sync-deal"].path,
            [
                PathPart::Text("/deals/".into()),
                PathPart::Placeholder("deal_id".into()),
                PathPart::Text("/sync".into())
            ]
        );
        assert_eq!(
            c.env_vars.iter().collect::<Vec<_>>(),
            ["CRM_TOKEN", "PGPASS"]
        );
        assert_eq!(
            c.scrub("auth failed for s3cret and Bearer tok-123"),
            "auth failed for *** and ***"
        );
    }

    #[test]
    fn passwords_with_at_signs_and_query_passwords_are_masked_everywhere() {
        let toml = "[sql.pg]\nurl = \"postgres://app:p@ss%21w@db:5432/x?password=q@ss\"\n[sql.my]\nurl = \"mysql://root:${PW}@127.0.0.1:3306/test\"\n";
        let c = ConnectorsConfig::parse(
            toml,
            Path::new("/apps/connectors.toml"),
            Path::new("/apps"),
            |v| (v == "PW").then(|| "r@@t".to_owned()),
        )
        .unwrap();
        assert_eq!(
            c.sql["pg"].url.masked(),
            "postgres://app:***@db:5432/x?password=***"
        );
        assert_eq!(
            c.sql["my"].url.masked(),
            "mysql://root:***@127.0.0.1:3306/test"
        );
        let debug = format!("{c:?}");
        for secret in ["p@ss", "ss%21w", "ss!w", "q@ss", "r@@t"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert_eq!(
            c.scrub("password authentication failed for p@ss!w, q@ss and r@@t"),
            "password authentication failed for ***, *** and ***"
        );
    }

    #[test]
    fn errors_name_line_column_and_entry() {
        let e = parse_env(SPEC, &[("PGPASS", "x")]).unwrap_err();
        assert!(
            e.contains("/apps/connectors.toml: line 14, column 29: [api.crm] headers.Authorization uses ${CRM_TOKEN}, which is not set"),
            "{e}"
        );
        let e = parse("[sql.billing]\nurl = \"sqlite://b.db\"\nmax_conections = 3\n").unwrap_err();
        assert!(
            e.contains("line 3, column 1: [sql.billing] max_conections is not a setting"),
            "{e}"
        );
        let e = parse("[api.crm]\nbase_url = \"http://x\"\n[api.crm.endpoints]\nget-customer = { method = \"GET\", pth = \"/c\" }\n").unwrap_err();
        assert!(
            e.contains("line 4") && e.contains("[api.crm.endpoints] get-customer"),
            "{e}"
        );
        let e = parse("[api.crm]\nbase_url = \"http://x\"\n[api.crm.endpoints]\nget-customer = { method = \"FETCH\", path = \"/c\" }\n").unwrap_err();
        assert!(
            e.contains("line 4, column 27: [api.crm.endpoints] get-customer method \"FETCH\" is not one of"),
            "{e}"
        );
        let e = parse("[sql.billing]\nurl = \"sqlite://b.db\"\n[sql.billing.queries]\nbad = \"SELECT 'oops FROM t WHERE a = :a\"\n").unwrap_err();
        assert!(
            e.contains("line 4, column 7: [sql.billing.queries] bad has a string literal"),
            "{e}"
        );
        let e = parse("[sql.x]\nurl = \"oracle://scott:tiger@db\"\n").unwrap_err();
        assert!(
            e.contains("[sql.x] url \"oracle://scott:***@db\" is not a sqlite://"),
            "{e}"
        );
        assert!(!e.contains("tiger"), "{e}");
        let e = parse("[sql.x]\nurl = \"sqlite://a.db\"\nmax_connections = 0\n").unwrap_err();
        assert!(
            e.contains("line 3, column 19: [sql.x] max_connections must be"),
            "{e}"
        );
    }
}
