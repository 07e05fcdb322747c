//! SQLite connectors, served with `rusqlite` where the request is read.
//!
//! A SQLite statement is a function call into the library, not a conversation with a
//! server: it runs right inside the host handler's future, on the runtime thread that
//! polls it (for a worker's request, the thread that read the request), and that future
//! is ready on its first poll. No other thread is woken, which is what made sqlx's
//! SQLite driver (a worker thread per connection, a channel each way) cost ≈ 150 µs per
//! query where Python's `sqlite3` takes ≈ 20 µs. The price: a long statement holds that
//! runtime thread for as long as it runs.
//!
//! Waiting for a lock is not done there. Connections have no busy timeout of their own:
//! a statement that finds the database locked (`SQLITE_BUSY`, another connection or
//! process is writing) is run again on tokio's blocking pool with the busy timeout
//! ([`BUSY_TIMEOUT`], sqlx's default), so that a runtime thread never sleeps on a lock
//! that another request of the same runtime may be about to release.
//!
//! Connections: at most `max_connections`, opened on first need and kept; prepared
//! statements are cached per connection. Opening follows sqlx's URL options (`mode=ro`,
//! `rw` (the default), `rwc`, `memory`; `cache`, `immutable`, `vfs`) and its defaults
//! (`PRAGMA foreign_keys = ON`), so that a file means what it meant before.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Batch, Connection, ErrorCode, OpenFlags, Statement};
use snakepit::sync::Recover;
use snakepit::Value;
use sqlx::sqlite::SqliteConnectOptions;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::convert;
use crate::params::NamedSql;
use crate::sql::{BatchError, Mode, OpenTx, Output, SqlError, ACQUIRE_TIMEOUT};

/// How long a statement waits for a lock another connection holds (sqlx's default).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection (named queries and transaction SQL).
const STATEMENT_CACHE: usize = 64;

/// The result columns of a named query that is one statement (prepared once, cached).
type Shape = Vec<Column>;

/// A result column: its name and declared type (upper case, empty when none).
struct Column {
    name: String,
    decl: String,
}

/// The shapes of a connector's named queries that are one statement, by SQL.
#[derive(Default)]
struct Shapes(Mutex<HashMap<String, Arc<Shape>>>);

impl Shapes {
    /// What `sql` is, learned once.
    fn get(&self, conn: &Connection, sql: &str) -> Result<Arc<Shape>, SqlError> {
        if let Some(s) = self.0.lock().recover().get(sql) {
            return Ok(s.clone());
        }
        let shape = Arc::new(columns(&*conn.prepare_cached(sql)?));
        self.0
            .lock()
            .recover()
            .insert(sql.to_owned(), shape.clone());
        Ok(shape)
    }
}

/// A SQLite connector's connections.
pub(crate) struct SqlitePool {
    /// The SQLite URI (`file:…?…`) and flags its connections open with.
    uri: String,
    flags: OpenFlags,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    shapes: Arc<Shapes>,
}

/// Bytes a SQLite URI's path keeps as they are (RFC 3986 unreserved, and `/`).
fn uri_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl SqlitePool {
    /// The pool of `url` (`sqlite://FILE?OPTIONS`), at most `max` connections; makes no
    /// connection. The URL is read by sqlx's rules (its errors are sqlx's).
    pub(crate) fn new(url: &str, max: u32) -> Result<SqlitePool, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?;
        let file = options.get_filename().to_string_lossy().into_owned();
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let mut flags = OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut params = Vec::new();
        let mut mode = "rw";
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("mode", m)) => mode = m,
                _ => params.push(pair),
            }
        }
        flags |= match mode {
            "ro" => OpenFlags::SQLITE_OPEN_READ_ONLY,
            "rwc" => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            "memory" => {
                params.push("cache=shared");
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_MEMORY
            }
            _ => OpenFlags::SQLITE_OPEN_READ_WRITE,
        };
        let mut uri = format!("file:{}", uri_path(&file));
        if !params.is_empty() {
            uri.push('?');
            uri.push_str(&params.join("&"));
        }
        Ok(SqlitePool {
            uri,
            flags,
            idle: Mutex::default(),
            permits: Semaphore::new(max as usize),
            shapes: Arc::default(),
        })
    }

    /// A new connection, set up like sqlx's.
    pub(crate) fn open(&self) -> Result<Connection, SqlError> {
        let conn = Connection::open_with_flags(&self.uri, self.flags)?;
        conn.busy_timeout(Duration::ZERO)?;
        conn.execute_batch("PRAGMA foreign_keys = ON")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// A connection: at once when one is free (no await), else when one is given back
    /// (at most [`ACQUIRE_TIMEOUT`]).
    pub(crate) async fn acquire(&self) -> Result<Checkout<'_>, SqlError> {
        let permit = match self.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.acquire())
                .await
                .map_err(|_| SqlError::PoolTimedOut)?
                .map_err(|_| SqlError::PoolTimedOut)?,
        };
        let idle = self.idle.lock().recover().pop();
        let conn = match idle {
            Some(c) => c,
            None => self.open()?,
        };
        Ok(Checkout {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }
}

/// A connection taken from its pool; given back when dropped (rolled back first if a
/// transaction is still open on it).
pub(crate) struct Checkout<'p> {
    pool: &'p SqlitePool,
    /// None only while a statement runs on the blocking pool, or after it was lost there.
    conn: Option<Connection>,
    _permit: SemaphorePermit<'p>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if !conn.is_autocommit() && conn.execute_batch("ROLLBACK").is_err() {
            return; // closed, not reused
        }
        self.pool.idle.lock().recover().push(conn);
    }
}

/// A failure that [`Checkout::run`] can tell "the database is locked" from.
pub(crate) trait Busy: From<SqlError> {
    fn busy(&self) -> bool;
}

impl Busy for SqlError {
    fn busy(&self) -> bool {
        matches!(self, SqlError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == ErrorCode::DatabaseBusy)
    }
}

impl Busy for BatchError {
    fn busy(&self) -> bool {
        self.error.busy()
    }
}

impl Checkout<'_> {
    /// Runs `work` on the connection, here; when it finds the database locked, again on
    /// the blocking pool with the busy timeout (a statement, or a batch in a transaction
    /// of its own, that got `SQLITE_BUSY` changed nothing: it can run again). Work that
    /// could not run again (`inline` false: several statements, each in autocommit or
    /// in the plugin's transaction) goes to the blocking pool at once.
    async fn run<T: Send + 'static, E: Busy + Send + 'static>(
        &mut self,
        inline: bool,
        work: impl Fn(&Shapes, &Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        if inline {
            let conn = self.conn.as_ref().ok_or(SqlError::Lost)?;
            match work(&self.pool.shapes, conn) {
                Err(e) if e.busy() => {}
                done => return done,
            }
        }
        let conn = self.conn.take().ok_or(SqlError::Lost)?;
        let shapes = self.pool.shapes.clone();
        let (conn, res) = tokio::task::spawn_blocking(move || {
            let res = match conn.busy_timeout(BUSY_TIMEOUT) {
                Ok(()) => work(&shapes, &conn),
                Err(e) => Err(SqlError::from(e).into()),
            };
            // A connection whose busy timeout cannot be cleared is not given back.
            let reset = conn.busy_timeout(Duration::ZERO);
            (reset.is_ok().then_some(conn), res)
        })
        .await
        .map_err(|e| SqlError::Task(e.to_string()))?;
        self.conn = conn;
        res
    }
}

/// Begins a transaction (deferred, as sqlx did) on a connection of `pool`.
pub(crate) async fn begin(pool: &SqlitePool) -> Result<Checkout<'_>, SqlError> {
    let mut conn = pool.acquire().await?;
    conn.command("BEGIN".into()).await?;
    Ok(conn)
}

impl OpenTx for Checkout<'_> {
    async fn execute(&mut self, sql: &NamedSql, values: Vec<Value>) -> Result<Output, SqlError> {
        let (text, names) = (sql.sql.clone(), sql.params.clone());
        self.run(!sql.several, move |_, conn| {
            execute(conn, None, &text, &values, &names, Mode::Any)
        })
        .await
    }

    async fn command(&mut self, sql: String) -> Result<(), SqlError> {
        self.run(true, move |_, conn| {
            conn.execute_batch(&sql).map_err(SqlError::from)
        })
        .await
    }

    async fn end(mut self, commit: bool) -> Result<(), SqlError> {
        let end = if commit { "COMMIT" } else { "ROLLBACK" };
        self.command(end.into()).await
    }
}

/// Runs the named query `sql` with each of `sets` (values in binding order): one set
/// alone in autocommit (`batch` false), or every set in one transaction (`BEGIN
/// IMMEDIATE` for writes: the write lock is taken before the first statement, so that
/// a busy database is found before any work).
pub(crate) async fn run_named(
    pool: &SqlitePool,
    named: &NamedSql,
    sets: Vec<Vec<Value>>,
    mode: Mode,
    batch: bool,
) -> Result<Vec<Output>, BatchError> {
    let mut conn = pool.acquire().await?;
    let (sql, names, several) = (named.sql.clone(), named.params.clone(), named.several);
    conn.run(batch || !several, move |shapes, conn| {
        // One statement: its shape is kept and it is prepared once.
        let shapes = (!several).then_some(shapes);
        if !batch {
            let out = execute(conn, shapes, &sql, &sets[0], &names, mode)?;
            return Ok(vec![out]);
        }
        let begin = if mode == Mode::Write {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        };
        conn.execute_batch(begin).map_err(SqlError::from)?;
        let mut outs = Vec::with_capacity(sets.len());
        for (set, values) in sets.iter().enumerate() {
            match execute(conn, shapes, &sql, values, &names, mode) {
                Ok(out) => outs.push(out),
                Err(error) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(BatchError {
                        set: Some(set),
                        error,
                    });
                }
            }
        }
        if let Err(e) = conn.execute_batch("COMMIT") {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(SqlError::from(e).into());
        }
        Ok(outs)
    })
    .await
}

/// Prepares each of `queries` (name, SQL) on a connection of its own: the queries that
/// do not prepare, with SQLite's reason.
pub(crate) fn prepare_all(
    pool: &SqlitePool,
    queries: &[(&str, &str)],
) -> Result<Vec<(String, String)>, SqlError> {
    let conn = pool.open()?;
    let mut bad = Vec::new();
    for (name, sql) in queries {
        let mut batch = Batch::new(&conn, sql);
        loop {
            match batch.next() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    bad.push((name.to_string(), SqlError::from(e).to_string()));
                    break;
                }
            }
        }
    }
    Ok(bad)
}

fn columns(stmt: &Statement<'_>) -> Vec<Column> {
    stmt.columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            decl: c.decl_type().unwrap_or("").to_ascii_uppercase(),
        })
        .collect()
}

/// Runs `sql` with `values` (in binding order; several statements take them in turn).
/// `shapes` is given for a named query of one statement, whose shape it keeps.
fn execute(
    conn: &Connection,
    shapes: Option<&Shapes>,
    sql: &str,
    values: &[Value],
    names: &[String],
    mode: Mode,
) -> Result<Output, SqlError> {
    let mut out = Output::default();
    if let Some(shapes) = shapes {
        let shape = shapes.get(conn, sql)?;
        let mut stmt = conn.prepare_cached(sql)?;
        step(conn, &mut stmt, &shape, values, names, mode, &mut out)?;
        return Ok(finish(out, mode));
    }
    let mut batch = Batch::new(conn, sql);
    let mut offset = 0;
    while let Some(mut stmt) = batch.next()? {
        let n = stmt
            .parameter_count()
            .min(values.len().saturating_sub(offset));
        let cols = columns(&stmt);
        let (vals, nms) = (
            &values[offset..offset + n],
            names.get(offset..offset + n).unwrap_or(&[]),
        );
        step(conn, &mut stmt, &cols, vals, nms, mode, &mut out)?;
        offset += n;
    }
    Ok(finish(out, mode))
}

fn finish(mut out: Output, mode: Mode) -> Output {
    if mode == Mode::Read || (mode == Mode::Any && out.affected == 0) {
        out.affected = out.rows.len() as u64;
    }
    out
}

/// Binds `values` to `stmt`, runs it, and adds its rows (unless `mode` is a write) and
/// its changes to `out`.
fn step(
    conn: &Connection,
    stmt: &mut Statement<'_>,
    cols: &[Column],
    values: &[Value],
    names: &[String],
    mode: Mode,
    out: &mut Output,
) -> Result<(), SqlError> {
    for (i, v) in values.iter().enumerate() {
        let bound = bindable(v).map_err(|why| {
            SqlError::Param(format!(
                "parameter :{} {why}",
                names.get(i).map_or("?", |s| s)
            ))
        })?;
        stmt.raw_bind_parameter(i + 1, bound)?;
    }
    let writes = !stmt.readonly();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        if mode == Mode::Write {
            continue;
        }
        let mut pairs = Vec::with_capacity(cols.len());
        for (i, col) in cols.iter().enumerate() {
            let v = value(row.get_ref(i)?, &col.decl)
                .map_err(|why| SqlError::Column(format!("column {:?} {why}", col.name)))?;
            pairs.push((col.name.clone(), v));
        }
        out.rows.push(Value::Map(pairs));
    }
    if writes {
        out.affected += conn.changes();
    }
    Ok(())
}

/// A wire value as SQLite stores it (what sqlx's SQLite encoding wrote: booleans as
/// 0/1, decimals, dates and datetimes as text).
fn bindable(v: &Value) -> Result<ToSqlOutput<'_>, String> {
    use rusqlite::types::Value as Owned;
    Ok(match v {
        Value::Nil => ToSqlOutput::Owned(Owned::Null),
        Value::Bool(b) => ToSqlOutput::Owned(Owned::Integer(i64::from(*b))),
        Value::Int(i) => ToSqlOutput::Owned(Owned::Integer(*i)),
        Value::Float(f) => ToSqlOutput::Owned(Owned::Real(*f)),
        Value::Str(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        // SQLite has no decimal type: the text, which NUMERIC columns store as numbers.
        Value::Decimal(s) => ToSqlOutput::Owned(Owned::Text(convert::decimal(s)?.to_string())),
        Value::Date(d) => {
            ToSqlOutput::Owned(Owned::Text(convert::date(*d)?.format("%F").to_string()))
        }
        Value::DateTime(dt) => ToSqlOutput::Owned(Owned::Text(match dt.offset {
            None => convert::naive(dt.micros)?.format("%F %T%.f").to_string(),
            Some(o) => {
                convert::aware(dt.micros, o)?.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
            }
        })),
        Value::List(_) | Value::Map(_) => return Err(convert::unbindable(v)),
    })
}

/// A stored value as a wire value, by its storage class and the column's declared type
/// (`decl`, upper case): INT columns keep integers, DEC/NUMERIC/MONEY give decimals,
/// BOOL integers booleans, TIMESTAMP/DATETIME datetimes (aware when the text has an
/// offset), DATE dates.
fn value(raw: ValueRef<'_>, decl: &str) -> Result<Value, String> {
    let text = |t: &[u8]| {
        std::str::from_utf8(t)
            .map(str::to_owned)
            .map_err(|e| format!("is not UTF-8 text: {e}"))
    };
    let by_storage = || -> Result<Value, String> {
        Ok(match raw {
            ValueRef::Null => Value::Nil,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Float(f),
            ValueRef::Text(t) => Value::Str(text(t)?),
            ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
        })
    };
    if matches!(raw, ValueRef::Null) || decl.contains("INT") {
        return by_storage();
    }
    if decl.contains("DEC") || decl.contains("NUMERIC") || decl.contains("MONEY") {
        let digits = match raw {
            ValueRef::Integer(i) => i.to_string(),
            ValueRef::Real(f) => f.to_string(),
            ValueRef::Text(t) => text(t)?,
            _ => return by_storage(),
        };
        return Ok(match convert::decimal(&digits) {
            Ok(d) => convert::from_decimal(d),
            Err(_) => Value::Str(digits),
        });
    }
    if decl.starts_with("BOOL") {
        if let ValueRef::Integer(i) = raw {
            return Ok(Value::Bool(i != 0));
        }
    }
    if decl.contains("TIMESTAMP") || decl.contains("DATETIME") {
        return match datetime(raw) {
            Some((d, true)) => Ok(convert::from_aware(d)),
            Some((d, false)) => Ok(convert::from_naive(d.naive_local())),
            None => by_storage(),
        };
    }
    if decl == "DATE" {
        if let ValueRef::Text(t) = raw {
            if let Some(d) = std::str::from_utf8(t)
                .ok()
                .and_then(|s| NaiveDate::parse_from_str(s, "%F").ok())
            {
                return Ok(convert::from_date(d));
            }
        }
    }
    by_storage()
}

/// A stored datetime (text in SQLite's formats, unix seconds, or a Julian day), and
/// whether it is aware (text that ends with an offset).
fn datetime(raw: ValueRef<'_>) -> Option<(DateTime<FixedOffset>, bool)> {
    match raw {
        ValueRef::Text(t) => {
            let s = std::str::from_utf8(t).ok()?;
            datetime_text(s).map(|d| (d, has_offset(s)))
        }
        ValueRef::Integer(i) => Utc.fix().timestamp_opt(i, 0).single().map(|d| (d, false)),
        ValueRef::Real(f) => {
            let seconds = (f - 2_440_587.5) * 86_400.0;
            if !seconds.is_finite() {
                return None;
            }
            let nanos = (seconds.fract() * 1e9).abs() as u32;
            Utc.fix()
                .timestamp_opt(seconds.trunc() as i64, nanos)
                .single()
                .map(|d| (d, false))
        }
        _ => None,
    }
}

/// The datetime formats SQLite's date functions and sqlx write.
fn datetime_text(s: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d);
    }
    const FORMATS: [&str; 12] = [
        "%F %T%.f",
        "%F %R",
        "%F %RZ",
        "%F %R%:z",
        "%F %T%.fZ",
        "%F %T%.f%:z",
        "%FT%R",
        "%FT%RZ",
        "%FT%R%:z",
        "%FT%T%.f",
        "%FT%T%.fZ",
        "%FT%T%.f%:z",
    ];
    FORMATS.iter().find_map(|f| {
        DateTime::parse_from_str(s, f).ok().or_else(|| {
            NaiveDateTime::parse_from_str(s, f)
                .ok()
                .map(|n| Utc.fix().from_utc_datetime(&n))
        })
    })
}

/// Whether a datetime's text ends with a UTC offset (`Z`, `+02:00`, `-0500`).
fn has_offset(text: &str) -> bool {
    let t = text.trim();
    if t.ends_with('Z') || t.ends_with('z') {
        return true;
    }
    let time = t.get(10..).unwrap_or("");
    time.rfind(['+', '-']).is_some_and(|p| {
        time[p + 1..]
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':')
    })
}

/// SQLite's message for `e` (for a file that does not open, without the path: the
/// caller names the connector's URL).
pub(crate) fn message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::CannotOpen => {
            "unable to open database file".to_owned()
        }
        e => e.to_string(),
    }
}
