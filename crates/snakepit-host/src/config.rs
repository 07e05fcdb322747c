//! An install on disk (the "apps dir", README "Plugin host"): where it is, which
//! interpreter runs its workers, and its app.toml read against the full schema (README,
//! "From the command line").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{de::Error as _, Deserialize, Deserializer};
use snakepit::{Pool, PoolBuilder};
use snakepit_connectors::{BeforeQuery, Connectors, ConnectorsConfig, Grant, Grants, BEFORE_QUERY};

pub use snakepit_connectors::parse_duration;
pub(crate) use snakepit_connectors::toml_error;

use crate::HostError;

/// app.toml, as written (README, "From the command line"). Unknown keys anywhere are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppToml {
    #[serde(default)]
    pub runtime: RuntimeTable,
    #[serde(default)]
    pub isolation: Isolation,
    #[serde(default)]
    pub auth: Auth,
    /// Event name → references, called in order.
    #[serde(default)]
    pub hooks: BTreeMap<String, Vec<String>>,
    /// Package → grants; `"*"` is the table of packages without their own.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginGrants>,
    /// Named pools; "default" always exists (its settings are `[runtime]`'s).
    #[serde(default)]
    pub pools: BTreeMap<String, PoolSettings>,
}

/// `[runtime]`. Its pool settings repeat [`PoolSettings`]' fields rather than
/// `#[serde(flatten)]` them, because serde cannot combine `flatten` with
/// `deny_unknown_fields`, and unknown keys must be reported.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeTable {
    pub python: Option<String>,
    #[serde(default, deserialize_with = "positive_usize")]
    pub workers: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub call_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "positive_u64")]
    pub max_calls_per_worker: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    pub max_worker_rss: Option<u64>,
    /// Whether `snakepit serve` reloads on code changes (default true).
    pub watch: Option<bool>,
    /// The run history's database url (`snakepit_state::State::open_for_apps`).
    pub state: Option<String>,
    /// The IANA time zone of cron schedules and job templates (default UTC).
    pub timezone: Option<String>,
    /// How long a run's lease lasts (default 15 s; several nodes: a node that stops
    /// renewing it for this long loses its runs). Between 3 s and 1 h.
    #[serde(default, deserialize_with = "lease")]
    pub lease: Option<Duration>,
    /// Where `snakepit serve` serves the web console, `/metrics`, `/healthz` and
    /// `/readyz` (see [`Install::http`]).
    pub http: Option<String>,
    /// The token the console asks for, usually `"${VAR}"`; needed for any address
    /// other than loopback.
    pub http_token: Option<String>,
}

impl RuntimeTable {
    /// The settings of the "default" pool.
    pub fn pool(&self) -> PoolSettings {
        PoolSettings {
            workers: self.workers,
            call_timeout: self.call_timeout,
            max_calls_per_worker: self.max_calls_per_worker,
            max_worker_rss: self.max_worker_rss,
            isolation: None,
        }
    }
}

/// Where the web console listens and the token it asks for: `[runtime] http` and
/// `http_token`, resolved (see [`Install::http`]). `Debug` does not show the token.
#[derive(Clone)]
pub struct HttpSettings {
    pub addr: std::net::SocketAddr,
    /// Required of every request when set; always set for a non-loopback address.
    pub token: Option<String>,
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The shortest console token accepted.
pub const MIN_HTTP_TOKEN: usize = 16;

/// The settings of a pool: `[runtime]` for "default", `[pools.NAME]` for the others.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    #[serde(default, deserialize_with = "positive_usize")]
    pub workers: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub call_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "positive_u64")]
    pub max_calls_per_worker: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    pub max_worker_rss: Option<u64>,
    /// `[pools.NAME.isolation]`: overrides `[isolation]` key by key.
    pub isolation: Option<Isolation>,
}

/// `[isolation]` (README, "Untrusted plugins"), and `[pools.NAME.isolation]`. Every key is
/// enforced, or the pool refuses to start (see [`snakepit::Isolation`]).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Isolation {
    /// The only variables passed from the supervisor's environment to the workers.
    pub env: Option<Vec<String>>,
    #[serde(default, deserialize_with = "size")]
    pub memory_limit: Option<u64>,
    #[serde(default, deserialize_with = "positive_u64")]
    pub cpu_seconds: Option<u64>,
    #[serde(default, deserialize_with = "positive_u64")]
    pub max_processes: Option<u64>,
    pub network: Option<bool>,
    pub filesystem: Option<FilesystemSetting>,
    #[serde(default, deserialize_with = "size")]
    pub tmp_size: Option<u64>,
    pub user: Option<String>,
    pub enforce: Option<EnforceSetting>,
}

/// `filesystem = "open" | "plugins-readonly"`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilesystemSetting {
    Open,
    PluginsReadonly,
}

/// `enforce = "strict" | "best-effort"`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnforceSetting {
    Strict,
    BestEffort,
}

impl Isolation {
    /// This table's keys over `global`'s, key by key.
    pub fn over(&self, global: &Isolation) -> Isolation {
        Isolation {
            env: self.env.clone().or_else(|| global.env.clone()),
            memory_limit: self.memory_limit.or(global.memory_limit),
            cpu_seconds: self.cpu_seconds.or(global.cpu_seconds),
            max_processes: self.max_processes.or(global.max_processes),
            network: self.network.or(global.network),
            filesystem: self.filesystem.or(global.filesystem),
            tmp_size: self.tmp_size.or(global.tmp_size),
            user: self.user.clone().or_else(|| global.user.clone()),
            enforce: self.enforce.or(global.enforce),
        }
    }

    /// What the pool builder enforces.
    pub fn to_pool(&self) -> snakepit::Isolation {
        let d = snakepit::Isolation::default();
        snakepit::Isolation {
            memory_limit: self.memory_limit,
            cpu_seconds: self.cpu_seconds,
            max_processes: self.max_processes,
            network: self.network.unwrap_or(d.network),
            filesystem: match self.filesystem {
                Some(FilesystemSetting::PluginsReadonly) => snakepit::Filesystem::PluginsReadonly,
                Some(FilesystemSetting::Open) | None => snakepit::Filesystem::Open,
            },
            tmp_size: self.tmp_size.unwrap_or(d.tmp_size),
            user: self.user.clone(),
            enforce: match self.enforce {
                Some(EnforceSetting::BestEffort) => snakepit::Enforce::BestEffort,
                Some(EnforceSetting::Strict) | None => snakepit::Enforce::Strict,
            },
        }
    }
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub password_validator: Option<String>,
}

/// `[plugins.PKG]`: which pool runs the package, and which connectors it may use (see
/// [`Grant`]: a key left out takes `[plugins."*"]`'s, else the default: every
/// connector, write queries allowed, no raw pools).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginGrants {
    pub connectors: Option<Vec<String>>,
    pub write: Option<bool>,
    pub raw_pools: Option<Vec<String>>,
    pub pool: Option<String>,
}

/// `host:port` as a socket address: an IP, or a name that resolves (`localhost`).
fn resolve_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not an address ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    positive_u64(d).map(|n| n.map(|n| n as usize))
}

fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::Integer(n) if n >= 1 => Ok(Some(n as u64)),
        v => Err(D::Error::custom(format!(
            "must be an integer >= 1, got {v}"
        ))),
    }
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => parse_duration(&s).map(Some).map_err(D::Error::custom),
        v => Err(D::Error::custom(format!(
            "must be a duration string like \"30s\", got {v}"
        ))),
    }
}

/// The shortest `[runtime] lease`: it is renewed every third of it, and a renewal is a
/// database write.
const LEASE_MIN: Duration = Duration::from_secs(3);
/// The longest `[runtime] lease`: a lost node's runs wait this long for another node.
const LEASE_MAX: Duration = Duration::from_secs(3600);

fn lease<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match duration(d)? {
        Some(l) if !(LEASE_MIN..=LEASE_MAX).contains(&l) => Err(D::Error::custom(format!(
            "must be between 3s and 1h (a run's lease, renewed every third of it), got {}",
            humantime::format_duration(l)
        ))),
        l => Ok(l),
    }
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::Integer(n) if n > 0 => Ok(Some(n as u64)),
        toml::Value::String(s) if parse_size(&s).is_some() => Ok(parse_size(&s)),
        v => Err(D::Error::custom(format!(
            "must be a size like \"512MiB\", got {v}"
        ))),
    }
}

/// Parses `512MiB`, `1GiB`, `100MB`, `4096` into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Reads and checks app.toml: a syntax or schema error names the file, line and column.
pub fn parse_app_toml(file: &Path) -> Result<AppToml, HostError> {
    let err = |reason: String| HostError::Config {
        file: file.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(format!("cannot read it: {e}")))?;
    let doc: AppToml = toml::from_str(&text).map_err(|e| err(toml_error(&text, &e, "app.toml")))?;
    if doc.pools.contains_key("default") {
        return Err(err(
            "[pools.default] is not a table: the \"default\" pool takes the [runtime] settings; move them there".into(),
        ));
    }
    for (pkg, grants) in &doc.plugins {
        if let Some(pool) = &grants.pool {
            if pool != "default" && !doc.pools.contains_key(pool) {
                let known: Vec<String> = std::iter::once("default".to_owned())
                    .chain(doc.pools.keys().cloned())
                    .collect();
                return Err(err(format!(
                    "[plugins.{}] pool = {pool:?} names no pool; add a [pools.{pool}] table or use one of {}",
                    toml_key(pkg),
                    known.join(", ")
                )));
            }
        }
    }
    Ok(doc)
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_owned()
    } else {
        format!("{k:?}")
    }
}

/// An install: its apps dir, its interpreter (and where that came from), its app.toml.
#[derive(Debug)]
pub struct Install {
    pub dir: PathBuf,
    pub python: PathBuf,
    /// Where `python` came from, for error messages.
    pub python_from: String,
    /// The app.toml file (which may not exist).
    pub app_toml: PathBuf,
    pub config: AppToml,
    /// connectors.toml's connectors, with app.toml's grants and `connector.before_query`
    /// hooks: the host handler of every pool of the install.
    pub connectors: Connectors,
}

/// The events snakepit documents (README, "Plugin host"): `[hooks]` may name others, which only
/// `dispatch` raises.
pub const EVENTS: [&str; 3] = ["screen.before_save", "screen.after_save", BEFORE_QUERY];

impl Install {
    /// The events a dispatch may name: the documented ones ([`EVENTS`]) and every event
    /// `[hooks]` maps, sorted.
    pub fn known_events(&self) -> Vec<String> {
        let mut events: Vec<String> = EVENTS.iter().map(|e| e.to_string()).collect();
        events.extend(self.config.hooks.keys().cloned());
        events.sort();
        events.dedup();
        events
    }

    /// Finds the apps dir (`apps`, else the working directory), reads its app.toml (if any)
    /// and resolves the interpreter (README, "From the command line"): `python` (a
    /// `--python` flag), else `[runtime] python`, `$SNAKEPIT_PYTHON`,
    /// `<apps>/.venv/bin/python`, `./.venv/bin/python`, `python3` on PATH.
    pub fn load(apps: Option<&Path>, python: Option<&Path>) -> Result<Install, HostError> {
        let dir = match apps {
            Some(d) => d.to_owned(),
            None => std::env::current_dir()
                .map_err(|e| HostError::Usage(format!("cannot read the working directory: {e}")))?,
        };
        if !dir.is_dir() {
            let what = if dir.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(HostError::Usage(format!(
                "the apps dir {} {what}; pass --apps DIR or set LIBERTY_APPS_DIR",
                dir.display()
            )));
        }
        // Absolute from here on: the watcher matches the absolute paths inotify reports,
        // and workers run with another working directory.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        // plugins/ is optional (plugins may be pip-installed), but one that is there must
        // be a readable folder: a worker would otherwise just fail to import from it.
        let plugins = dir.join("plugins");
        if plugins.exists() {
            if !plugins.is_dir() {
                return Err(HostError::Usage(format!(
                    "{} is not a directory; the plugins folder must be a directory of Python packages and modules",
                    plugins.display()
                )));
            }
            if let Err(e) = std::fs::read_dir(&plugins) {
                return Err(HostError::Usage(format!(
                    "cannot read the plugins folder {}: {e}; make it readable by the user running snakepit",
                    plugins.display()
                )));
            }
        }
        let file = dir.join("app.toml");
        let config = if file.exists() {
            parse_app_toml(&file)?
        } else {
            AppToml::default()
        };
        let env_python = std::env::var_os("SNAKEPIT_PYTHON").map(PathBuf::from);
        let venv = dir.join(".venv/bin/python");
        let (python, python_from) = if let Some(p) = python {
            (p.to_owned(), "--python".to_owned())
        } else if let Some(p) = &config.runtime.python {
            (
                dir.join(p),
                format!("[runtime] python in {}", file.display()),
            )
        } else if let Some(p) = env_python {
            (p, "$SNAKEPIT_PYTHON".to_owned())
        } else if venv.exists() {
            (venv, "the apps dir's .venv".to_owned())
        } else if Path::new(".venv/bin/python").exists() {
            (PathBuf::from(".venv/bin/python"), "./.venv".to_owned())
        } else {
            (
                PathBuf::from("python3"),
                "python3 on PATH (the default)".to_owned(),
            )
        };
        let connectors = load_connectors(&dir, &file, &config, &python)?;
        Ok(Install {
            dir,
            python,
            python_from,
            app_toml: file,
            config,
            connectors,
        })
    }

    /// Where the web console listens: `flag` (`serve --http ADDR`), else `[runtime] http`,
    /// else nowhere (None). Its token is `[runtime] http_token` with its `${VAR}`s filled
    /// from the environment. An address other than loopback without a token, a token
    /// shorter than [`MIN_HTTP_TOKEN`] or a `${VAR}` that is not set is an error naming
    /// the setting and the fix.
    pub fn http(&self, flag: Option<&str>) -> Result<Option<HttpSettings>, HostError> {
        let config = |reason: String| HostError::Config {
            file: self.app_toml.clone(),
            reason,
        };
        let runtime = &self.config.runtime;
        let (text, what) = match (flag, &runtime.http) {
            (Some(f), _) => (f, format!("--http {f}")),
            (None, Some(h)) => (h.as_str(), format!("[runtime] http = {h:?}")),
            (None, None) => return Ok(None),
        };
        let addr = resolve_addr(text).map_err(|e| {
            config(format!(
                "{what}: {e}; give an address and port, e.g. \"127.0.0.1:8650\""
            ))
        })?;
        let token = match &runtime.http_token {
            None => None,
            Some(t) => {
                let (token, _) = snakepit_connectors::expand_vars(t, &|v| std::env::var(v).ok())
                    .map_err(|e| config(format!("[runtime] http_token {e}")))?;
                if token.chars().count() < MIN_HTTP_TOKEN {
                    return Err(config(format!(
                        "[runtime] http_token is {} characters long; a console token needs at least {MIN_HTTP_TOKEN} (e.g. `openssl rand -hex 32`)",
                        token.chars().count()
                    )));
                }
                Some(token)
            }
        };
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(config(format!(
                "{what} is not a loopback address, and [runtime] http_token is not set: anyone who reaches it could run jobs; set http_token = \"${{SNAKEPIT_HTTP_TOKEN}}\" in [runtime] (and the variable in the environment), or serve on 127.0.0.1"
            )));
        }
        Ok(Some(HttpSettings { addr, token }))
    }

    /// The `[runtime]` pool settings (those of the "default" pool).
    pub fn runtime(&self) -> PoolSettings {
        self.config.runtime.pool()
    }

    /// The pool that runs `reference`'s package and its settings: `[plugins.PKG] pool`,
    /// else `[plugins."*"] pool`, else "default" (whose settings are `[runtime]`'s).
    pub fn pool_for(&self, reference: &str) -> (&str, PoolSettings) {
        let name = self.pool_name(reference);
        match self.config.pools.get(name) {
            Some(s) => (name, s.clone()),
            None => ("default", self.runtime()),
        }
    }

    /// The name of the pool that runs `reference`'s package (see [`Install::pool_for`]),
    /// without its settings.
    pub fn pool_name(&self, reference: &str) -> &str {
        let module = reference.split(':').next().unwrap_or(reference);
        let package = module.split('.').next().unwrap_or(module);
        let plugins = &self.config.plugins;
        let name = plugins
            .get(package)
            .and_then(|g| g.pool.as_deref())
            .or_else(|| plugins.get("*").and_then(|g| g.pool.as_deref()))
            .unwrap_or("default");
        match self.config.pools.get_key_value(name) {
            Some((name, _)) => name,
            None => "default",
        }
    }

    /// The sentence for a pool that could not be built: bad settings and an unusable
    /// interpreter are the user's to fix, anything else is a failure to run.
    pub fn build_error(&self, e: snakepit::BuildError) -> HostError {
        use snakepit::{BuildError, SpawnError};
        match e {
            BuildError::Config(m) => HostError::Usage(m),
            BuildError::Spawn(
                e @ (SpawnError::Interpreter { .. } | SpawnError::PythonTooOld { .. }),
            ) => HostError::Usage(format!(
                "{e}\n  the interpreter comes from {}; point it at a CPython >= 3.9",
                self.python_from
            )),
            BuildError::Spawn(e) => HostError::Pool(format!(
                "{e} (interpreter {}, from {})",
                self.python.display(),
                self.python_from
            )),
        }
    }

    /// A pool builder for this install with the "default" pool's settings: its
    /// interpreter, `plugins/` first on sys.path, the `[isolation] env` allowlist and the
    /// `[runtime]` settings.
    pub fn pool_builder(&self) -> PoolBuilder {
        self.pool_builder_with(&self.runtime())
    }

    /// A pool builder for this install with the given pool settings, serving the
    /// install's connectors.
    pub fn pool_builder_with(&self, s: &PoolSettings) -> PoolBuilder {
        workers_builder(&self.python, &self.dir, &self.config, s)
            .shared_host_handler(self.connectors.handler())
    }
}

/// Reads connectors.toml with app.toml's grants and `connector.before_query` hooks. A
/// grant that names no connector, and an `[isolation] env` that would pass a connector's
/// secret to the workers, are errors of app.toml.
fn load_connectors(
    dir: &Path,
    app_toml: &Path,
    config: &AppToml,
    python: &Path,
) -> Result<Connectors, HostError> {
    let conn_err = |e: snakepit_connectors::LoadError| HostError::Config {
        file: e.file,
        reason: e.reason,
    };
    let app_err = |reason: String| HostError::Config {
        file: app_toml.to_owned(),
        reason,
    };
    let cc = ConnectorsConfig::load(dir).map_err(conn_err)?;
    let grants = Grants::new(
        config
            .plugins
            .iter()
            .map(|(pkg, g)| {
                let grant = Grant {
                    connectors: g.connectors.clone(),
                    write: g.write,
                    raw_pools: g.raw_pools.clone(),
                };
                (pkg.clone(), grant)
            })
            .collect(),
    );
    for (pkg, key, name) in grants.named() {
        let known = if key == "raw_pools" {
            cc.sql.contains_key(name)
        } else {
            cc.names().any(|n| n == name)
        };
        if !known {
            let what = if key == "raw_pools" {
                "SQL connector"
            } else {
                "connector"
            };
            return Err(app_err(format!(
                "[plugins.{}] {key} names {name:?}, which is no {what} of {}; add [{}.{name}] there or remove it from the list",
                toml_key(pkg),
                cc.file.display(),
                if key == "raw_pools" || cc.api.is_empty() { "sql" } else { "sql or api" }
            )));
        }
    }
    let tables = std::iter::once(("[isolation]".to_owned(), &config.isolation)).chain(
        config.pools.iter().filter_map(|(name, p)| {
            Some((
                format!("[pools.{}.isolation]", toml_key(name)),
                p.isolation.as_ref()?,
            ))
        }),
    );
    for (table, iso) in tables {
        if let Some(var) = iso.env.iter().flatten().find(|v| cc.env_vars.contains(*v)) {
            return Err(app_err(format!(
                "{table} env passes {var} to the workers, and {} reads a secret from it; remove {var} from the list (connectors live in the supervisor)",
                cc.file.display()
            )));
        }
    }
    let before_query = config.hooks.get(BEFORE_QUERY).map(|hooks| BeforeQuery {
        hooks: hooks.clone(),
        pool: workers_builder(python, dir, config, &config.runtime.pool()).workers(HOOK_WORKERS),
    });
    Connectors::new(cc, grants, before_query).map_err(conn_err)
}

/// Workers in the pool of the `connector.before_query` hooks.
const HOOK_WORKERS: usize = 2;

/// A pool builder with the install's interpreter, `plugins/` first on sys.path, the
/// pool's isolation (`[isolation]` under its own table, with the `env` allowlist) and
/// the settings `s`; no host handler.
fn workers_builder(python: &Path, dir: &Path, config: &AppToml, s: &PoolSettings) -> PoolBuilder {
    let iso = s
        .isolation
        .as_ref()
        .map_or_else(|| config.isolation.clone(), |i| i.over(&config.isolation));
    let mut b = Pool::builder()
        .python(python)
        .sys_path(dir.join("plugins"))
        .isolation(iso.to_pool());
    if let Some(n) = s.workers {
        b = b.workers(n);
    }
    if let Some(t) = s.call_timeout {
        b = b.call_timeout(t);
    }
    if let Some(n) = s.max_calls_per_worker {
        b = b.max_calls_per_worker(n);
    }
    if let Some(n) = s.max_worker_rss {
        b = b.max_worker_rss(n);
    }
    if let Some(env) = iso.env {
        b = b.env_allowlist(env);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("100MB"), Some(100_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12 parsecs"), None);
    }

    fn parse(text: &str) -> Result<AppToml, String> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.toml");
        std::fs::write(&f, text).unwrap();
        parse_app_toml(&f).map_err(|e| e.to_string())
    }

    #[test]
    fn app_toml_errors_name_the_file_line_and_entry() {
        let e = parse("[runtime]\nworkers = \"four\"\n").unwrap_err();
        assert!(
            e.contains("app.toml: line 2, column 11: [runtime] workers must be an integer >= 1, got \"four\""),
            "{e}"
        );
        for (lease, why) in [
            ("\"100ms\"", "must be between 3s and 1h"),
            ("\"2d\"", "must be between 3s and 1h"),
            ("\"soon\"", "[runtime] lease"),
            ("15", "must be a duration string"),
        ] {
            let e = parse(&format!("[runtime]\nlease = {lease}\n")).unwrap_err();
            assert!(
                e.contains("app.toml: line 2") && e.contains(why),
                "{lease}: {e}"
            );
        }
        let doc = parse("[runtime]\nlease = \"15s\"\n").unwrap();
        assert_eq!(doc.runtime.lease, Some(Duration::from_secs(15)));
        let e = parse("[runtime\n").unwrap_err();
        assert!(e.contains("app.toml: line 1, column 9"), "{e}");
        let doc = parse(
            "[runtime]\npython = \"venv/bin/python\"\ncall_timeout = \"5s\"\nmax_worker_rss = \"64MiB\"\n",
        )
        .unwrap();
        let rt = &doc.runtime;
        assert_eq!(
            (rt.call_timeout, rt.max_worker_rss, rt.python.as_deref()),
            (
                Some(Duration::from_secs(5)),
                Some(64 << 20),
                Some("venv/bin/python")
            )
        );
    }

    #[test]
    fn the_full_schema_loads_and_unknown_keys_are_named() {
        let doc = parse(
            r#"
[runtime]
workers = 4
call_timeout = "30s"
max_calls_per_worker = 10000
max_worker_rss = "512MiB"
watch = true
state = "sqlite://.snakepit/state.db"

[isolation]
memory_limit = "1GiB"
cpu_seconds = 600
network = true
filesystem = "open"
env = ["TZ", "LANG"]

[auth]
password_validator = "security.passwords:validate"

[hooks]
"screen.before_save" = ["audit.hooks:before_save", "audit.hooks:other"]

[plugins.billing]
connectors = ["billing", "crm"]
write = true
raw_pools = ["billing"]
pool = "trusted"

[plugins."*"]
pool = "untrusted"

[pools.trusted]
workers = 2

[pools.untrusted]
workers = 2
call_timeout = "5s"
"#,
        )
        .unwrap();
        assert_eq!(doc.hooks["screen.before_save"].len(), 2);
        assert_eq!(
            doc.pools["untrusted"].call_timeout,
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            doc.isolation.env.as_deref(),
            Some(&["TZ".into(), "LANG".into()][..])
        );

        let e = parse("[pools.x]\nworkers = 1\nwrokers = 2\n").unwrap_err();
        assert!(
            e.contains("line 3, column 1: [pools.x] wrokers is not a setting; expected one of"),
            "{e}"
        );
        let e = parse("[runtim]\nworkers = 1\n").unwrap_err();
        assert!(
            e.contains("line 1, column 2: [runtim] is not a table of app.toml"),
            "{e}"
        );
        let e = parse("[plugins.billing]\npool = \"nope\"\n").unwrap_err();
        assert!(
            e.contains("[plugins.billing] pool = \"nope\" names no pool"),
            "{e}"
        );
    }
}
