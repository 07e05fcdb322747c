//! SQL connectors: one pool per connector, created at first use, so that loading needs
//! no server: sqlx for PostgreSQL and MySQL/MariaDB, `rusqlite` for SQLite (see
//! [`crate::sqlite`]: a SQLite statement runs where the request is read). Parameters
//! are bound with the type the value has (PostgreSQL: the type the statement wants);
//! rows come back as maps of wire values that keep their types.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;
use rust_decimal::Decimal;
use snakepit::sync::Recover;
use snakepit::Value;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlRow};
use sqlx::postgres::{PgConnectOptions, PgRow, PgTypeInfo, Postgres};
use sqlx::{
    Arguments, Column, Connection, Database, Either, Executor, IntoArguments, Row, Statement,
    TypeInfo, ValueRef,
};
use tokio::sync::{mpsc, oneshot};

use crate::audit::Outcome;
use crate::config::{Backend, SqlConfig};
use crate::convert;
use crate::params::NamedSql;
use crate::sqlite::SqlitePool;

/// How long acquiring a connection may take (connecting included).
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled connection idle this long is pinged before it is handed out; one used more
/// recently is not. sqlx's default pings on every acquire: one more round trip to the
/// server per query, ≈ a third of a loop of small writes (the seed loop, issue 13). A
/// server that went away within this window costs one failed query; HikariCP's
/// `aliveBypassWindowMs` makes the same trade with 500 ms.
const PING_AFTER_IDLE: Duration = Duration::from_millis(500);

/// What a statement is run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Rows back.
    Read,
    /// Rows affected back.
    Write,
    /// Both (a statement of a transaction: any SQL).
    Any,
}

/// What a statement gave.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub rows: Vec<Value>,
    pub affected: u64,
}

/// Why a statement failed.
#[derive(Debug)]
pub(crate) enum SqlError {
    /// A parameter cannot be bound (named, with the reason).
    Param(String),
    /// A value in a row cannot be converted.
    Column(String),
    /// No connection came within [`ACQUIRE_TIMEOUT`].
    PoolTimedOut,
    /// The driver or the database refused (sqlx: PostgreSQL, MySQL).
    Db(sqlx::Error),
    /// SQLite refused.
    Sqlite(rusqlite::Error),
    /// A SQLite connection was lost with a statement that ran on the blocking pool.
    Lost,
    /// That statement's task failed.
    Task(String),
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlError::Param(m) | SqlError::Column(m) => f.write_str(m),
            SqlError::PoolTimedOut => f.write_str("no connection came in time"),
            SqlError::Db(sqlx::Error::Database(e)) => f.write_str(e.message()),
            SqlError::Db(e) => write!(f, "{e}"),
            SqlError::Sqlite(e) => f.write_str(&crate::sqlite::message(e)),
            SqlError::Lost => f.write_str("the connection was lost with a statement that failed"),
            SqlError::Task(e) => write!(f, "the statement's task failed: {e}"),
        }
    }
}

impl From<sqlx::Error> for SqlError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => SqlError::PoolTimedOut,
            e => SqlError::Db(e),
        }
    }
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> Self {
        SqlError::Sqlite(e)
    }
}

/// Why a batch of parameter sets failed: the set at fault (None: beginning or
/// committing the batch's transaction) and the error.
#[derive(Debug)]
pub(crate) struct BatchError {
    pub set: Option<usize>,
    pub error: SqlError,
}

impl From<SqlError> for BatchError {
    fn from(error: SqlError) -> Self {
        BatchError { set: None, error }
    }
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        SqlError::from(e).into()
    }
}

/// A backend: how to learn what a statement wants, bind a value, convert a row.
pub(crate) trait Db: Database {
    /// What binding needs to know of a statement: PostgreSQL the types of its
    /// parameters.
    type Info: Send + Sync + 'static;

    fn info<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
    ) -> BoxFuture<'c, Result<Self::Info, sqlx::Error>>;

    fn bind<'q>(
        args: &mut <Self as Database>::Arguments<'q>,
        v: &Value,
        info: &Self::Info,
        index: usize,
    ) -> Result<(), String>;

    fn value(row: &Self::Row, i: usize, info: &Self::Info) -> Result<Value, String>;

    fn affected(done: &Self::QueryResult) -> u64;
}

/// Binds `v` to `args`, or says why not.
fn add<'q, DB: Database, T>(args: &mut DB::Arguments<'q>, v: T) -> Result<(), String>
where
    T: sqlx::Encode<'q, DB> + sqlx::Type<DB> + Send + 'q,
{
    args.add(v).map_err(|e| e.to_string())
}

impl Db for Postgres {
    /// The types of the statement's parameters, as PostgreSQL inferred them.
    type Info = Vec<PgTypeInfo>;

    fn affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn info<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
    ) -> BoxFuture<'c, Result<Self::Info, sqlx::Error>> {
        Box::pin(async move {
            let stmt = conn.prepare(sql).await?;
            Ok(match stmt.parameters() {
                Some(Either::Left(types)) => types.to_vec(),
                _ => Vec::new(),
            })
        })
    }

    fn bind<'q>(
        args: &mut <Self as Database>::Arguments<'q>,
        v: &Value,
        want: &Self::Info,
        index: usize,
    ) -> Result<(), String> {
        let t = want.get(index).map_or("", |t| t.name());
        let wrong = || {
            format!(
                "is a {}, and the query wants a PostgreSQL {}",
                v.type_name(),
                t.to_ascii_lowercase()
            )
        };
        macro_rules! put {
            ($e:expr) => {
                add::<Postgres, _>(args, $e)
            };
        }
        let range = || format!("does not fit a PostgreSQL {}", t.to_ascii_lowercase());
        match v {
            Value::Nil => match t {
                "BOOL" => put!(None::<bool>),
                "INT2" => put!(None::<i16>),
                "INT4" => put!(None::<i32>),
                "INT8" => put!(None::<i64>),
                "FLOAT4" => put!(None::<f32>),
                "FLOAT8" => put!(None::<f64>),
                "NUMERIC" => put!(None::<Decimal>),
                "BYTEA" => put!(None::<Vec<u8>>),
                "DATE" => put!(None::<NaiveDate>),
                "TIMESTAMP" => put!(None::<NaiveDateTime>),
                "TIMESTAMPTZ" => put!(None::<DateTime<Utc>>),
                _ => put!(None::<String>),
            },
            Value::Bool(b) if matches!(t, "BOOL" | "") => put!(*b),
            Value::Int(i) => match t {
                "INT2" => put!(i16::try_from(*i).map_err(|_| range())?),
                "INT4" => put!(i32::try_from(*i).map_err(|_| range())?),
                "INT8" | "" => put!(*i),
                "NUMERIC" => put!(Decimal::from(*i)),
                "FLOAT4" => put!(*i as f32),
                "FLOAT8" => put!(*i as f64),
                _ => Err(wrong()),
            },
            Value::Float(f) => match t {
                "FLOAT8" | "" => put!(*f),
                "FLOAT4" => put!(*f as f32),
                "NUMERIC" => put!(Decimal::try_from(*f).map_err(|e| e.to_string())?),
                _ => Err(wrong()),
            },
            Value::Decimal(s) => match t {
                "NUMERIC" | "" => put!(convert::decimal(s)?),
                "FLOAT8" => put!(s.parse::<f64>().map_err(|e| e.to_string())?),
                _ => Err(wrong()),
            },
            Value::Str(s) if matches!(t, "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "UNKNOWN" | "") => {
                put!(s.clone())
            }
            Value::Bytes(b) if matches!(t, "BYTEA" | "") => put!(b.clone()),
            Value::Date(d) if matches!(t, "DATE" | "") => put!(convert::date(*d)?),
            Value::DateTime(dt) => match (dt.offset, t) {
                (None, "TIMESTAMP" | "") => put!(convert::naive(dt.micros)?),
                (Some(o), "TIMESTAMPTZ" | "") => put!(convert::aware(dt.micros, o)?.with_timezone(&Utc)),
                (None, "TIMESTAMPTZ") => Err("is a naive datetime, and the query wants a timestamptz: give it a timezone".into()),
                (Some(_), "TIMESTAMP") => Err("is an aware datetime, and the query wants a timestamp (without time zone): pass a naive one".into()),
                _ => Err(wrong()),
            },
            Value::List(_) | Value::Map(_) => Err(convert::unbindable(v)),
            _ => Err(wrong()),
        }
    }

    fn value(row: &PgRow, i: usize, _: &Self::Info) -> Result<Value, String> {
        let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
        if raw.is_null() {
            return Ok(Value::Nil);
        }
        let t = raw.type_info().name().to_owned();
        macro_rules! get {
            ($ty:ty) => {
                row.try_get::<$ty, _>(i).map_err(|e| e.to_string())?
            };
        }
        Ok(match t.as_str() {
            "BOOL" => Value::Bool(get!(bool)),
            "INT2" => Value::Int(get!(i16).into()),
            "INT4" => Value::Int(get!(i32).into()),
            "INT8" => Value::Int(get!(i64)),
            "OID" => Value::Int(get!(sqlx::postgres::types::Oid).0.into()),
            "FLOAT4" => Value::Float(get!(f32).into()),
            "FLOAT8" => Value::Float(get!(f64)),
            "NUMERIC" => convert::from_decimal(get!(Decimal)),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "UNKNOWN" => Value::Str(get!(String)),
            "BYTEA" => Value::Bytes(get!(Vec<u8>)),
            "DATE" => convert::from_date(get!(NaiveDate)),
            "TIMESTAMP" => convert::from_naive(get!(NaiveDateTime)),
            "TIMESTAMPTZ" => convert::from_utc(get!(DateTime<Utc>)),
            "VOID" => Value::Nil,
            other => {
                return Err(format!(
                    "has the PostgreSQL type {}, which snakepit does not convert; cast it in the query (::text)",
                    other.to_ascii_lowercase()
                ))
            }
        })
    }
}

impl Db for MySql {
    type Info = ();

    fn affected(done: &sqlx::mysql::MySqlQueryResult) -> u64 {
        done.rows_affected()
    }

    fn info<'c>(_: &'c mut Self::Connection, _: &'c str) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        Box::pin(async { Ok(()) })
    }

    fn bind<'q>(
        args: &mut <Self as Database>::Arguments<'q>,
        v: &Value,
        _: &(),
        _: usize,
    ) -> Result<(), String> {
        match v {
            Value::Nil => add::<MySql, _>(args, None::<String>),
            Value::Bool(b) => add::<MySql, _>(args, *b),
            Value::Int(i) => add::<MySql, _>(args, *i),
            Value::Float(f) => add::<MySql, _>(args, *f),
            Value::Str(s) => add::<MySql, _>(args, s.clone()),
            Value::Bytes(b) => add::<MySql, _>(args, b.clone()),
            Value::Decimal(s) => add::<MySql, _>(args, convert::decimal(s)?),
            Value::Date(d) => add::<MySql, _>(args, convert::date(*d)?),
            Value::DateTime(dt) => match dt.offset {
                None => add::<MySql, _>(args, convert::naive(dt.micros)?),
                // MySQL keeps no offset: the instant, in UTC (the session's time zone).
                Some(o) => add::<MySql, _>(args, convert::aware(dt.micros, o)?.with_timezone(&Utc)),
            },
            Value::List(_) | Value::Map(_) => Err(convert::unbindable(v)),
        }
    }

    fn value(row: &MySqlRow, i: usize, _: &()) -> Result<Value, String> {
        let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
        if raw.is_null() {
            return Ok(Value::Nil);
        }
        let t = raw.type_info().name().to_owned();
        macro_rules! get {
            ($ty:ty) => {
                row.try_get_unchecked::<$ty, _>(i)
                    .map_err(|e| e.to_string())?
            };
        }
        Ok(match t.as_str() {
            "BOOLEAN" => Value::Bool(get!(bool)),
            "TINYINT" | "SMALLINT" | "INT" | "MEDIUMINT" | "BIGINT" => Value::Int(get!(i64)),
            "YEAR" | "BIT" | "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "INT UNSIGNED"
            | "MEDIUMINT UNSIGNED" | "BIGINT UNSIGNED" => {
                let u = get!(u64);
                match i64::try_from(u) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Decimal(u.to_string()),
                }
            }
            "FLOAT" => Value::Float(get!(f32).into()),
            "DOUBLE" => Value::Float(get!(f64)),
            "DECIMAL" => convert::from_decimal(get!(Decimal)),
            "DATE" => convert::from_date(get!(NaiveDate)),
            "DATETIME" => convert::from_naive(get!(NaiveDateTime)),
            "TIMESTAMP" => convert::from_utc(get!(DateTime<Utc>)),
            "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB"
            | "GEOMETRY" => Value::Bytes(get!(Vec<u8>)),
            "NULL" => Value::Nil,
            // CHAR, VARCHAR, TEXT, ENUM, SET, JSON, TIME: text.
            _ => match row.try_get_unchecked::<String, _>(i) {
                Ok(s) => Value::Str(s),
                Err(_) => Value::Bytes(get!(Vec<u8>)),
            },
        })
    }
}

/// `values` by reference, as [`execute`] takes them.
fn refs(values: &[Value]) -> Vec<&Value> {
    values.iter().collect()
}

/// Runs `sql` with `values` on `conn`.
pub(crate) async fn execute<DB: Db>(
    conn: &mut DB::Connection,
    sql: &str,
    values: &[&Value],
    names: &[String],
    info: &DB::Info,
    mode: Mode,
) -> Result<Output, SqlError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    let mut args = DB::Arguments::default();
    for (i, v) in values.iter().enumerate() {
        DB::bind(&mut args, v, info, i).map_err(|why| {
            SqlError::Param(format!(
                "parameter :{} {why}",
                names.get(i).map_or("?", |s| s)
            ))
        })?;
    }
    let query = sqlx::query_with::<DB, _>(sql, args);
    let mut out = Output::default();
    match mode {
        Mode::Write => out.affected = DB::affected(&query.execute(&mut *conn).await?),
        Mode::Read => {
            for row in query.fetch_all(&mut *conn).await? {
                out.rows.push(row_map::<DB>(&row, info)?);
            }
            out.affected = out.rows.len() as u64;
        }
        Mode::Any => {
            let mut stream = (&mut *conn).fetch_many(query);
            while let Some(item) = stream.try_next().await? {
                match item {
                    Either::Left(done) => out.affected += DB::affected(&done),
                    Either::Right(row) => out.rows.push(row_map::<DB>(&row, info)?),
                }
            }
            if out.affected == 0 {
                out.affected = out.rows.len() as u64;
            }
        }
    }
    Ok(out)
}

fn row_map<DB: Db>(row: &DB::Row, info: &DB::Info) -> Result<Value, SqlError> {
    let mut pairs = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = DB::value(row, i, info)
            .map_err(|why| SqlError::Column(format!("column {:?} {why}", col.name())))?;
        pairs.push((col.name().to_owned(), v));
    }
    Ok(Value::Map(pairs))
}

/// A connector's pool of one backend, created at first use, and what it learned of
/// each named query.
pub(crate) struct Lazy<DB: Db> {
    options: <DB::Connection as Connection>::Options,
    max: u32,
    pool: OnceLock<sqlx::Pool<DB>>,
    infos: Mutex<HashMap<String, Arc<DB::Info>>>,
}

impl<DB: Db> Lazy<DB> {
    fn new(options: <DB::Connection as Connection>::Options, max: u32) -> Self {
        Lazy {
            options,
            max,
            pool: OnceLock::new(),
            infos: Mutex::default(),
        }
    }

    /// The pool (made on the first call, which must be inside the connectors' runtime).
    pub(crate) fn pool(&self) -> &sqlx::Pool<DB> {
        self.pool.get_or_init(|| {
            sqlx::pool::PoolOptions::<DB>::new()
                .max_connections(self.max)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_AFTER_IDLE {
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                })
                .connect_lazy_with(self.options.clone())
        })
    }

    /// What the named query `sql` needs for binding, learned once.
    pub(crate) async fn info(
        &self,
        conn: &mut DB::Connection,
        sql: &str,
    ) -> Result<Arc<DB::Info>, sqlx::Error> {
        if let Some(i) = self.infos.lock().recover().get(sql) {
            return Ok(i.clone());
        }
        let info = Arc::new(DB::info(conn, sql).await?);
        self.infos
            .lock()
            .recover()
            .insert(sql.to_owned(), info.clone());
        Ok(info)
    }
}

/// A connector's pool, whichever its backend.
pub(crate) enum SqlPool {
    Sqlite(SqlitePool),
    Postgres(Lazy<Postgres>),
    MySql(Lazy<MySql>),
}

impl SqlPool {
    pub(crate) fn new(cfg: &SqlConfig) -> Result<SqlPool, String> {
        use std::str::FromStr;
        let url = &cfg.url.real;
        let max = cfg.max_connections;
        let bad = |e: sqlx::Error| format!("{} is not a usable URL: {e}", cfg.url.masked());
        Ok(match cfg.backend {
            Backend::Sqlite => SqlPool::Sqlite(SqlitePool::new(url, max).map_err(bad)?),
            Backend::Postgres => SqlPool::Postgres(Lazy::new(
                PgConnectOptions::from_str(url).map_err(bad)?,
                max,
            )),
            Backend::MySql => SqlPool::MySql(Lazy::new(
                MySqlConnectOptions::from_str(url).map_err(bad)?,
                max,
            )),
        })
    }
}

/// Runs `$sqlite` with `$pool` bound to a SQLite pool, or `$body` with `$lazy` bound to
/// the sqlx backend's [`Lazy`] and `$DB` to its type.
macro_rules! with_backend {
    ($pool:expr, $sqlite_pool:ident => $sqlite:expr, $lazy:ident, $DB:ident => $body:expr) => {
        match $pool {
            SqlPool::Sqlite($sqlite_pool) => $sqlite,
            SqlPool::Postgres($lazy) => {
                type $DB = Postgres;
                $body
            }
            SqlPool::MySql($lazy) => {
                type $DB = MySql;
                $body
            }
        }
    };
}

/// Runs the named query `named` with each of `sets` (values in binding order): the one
/// set in autocommit (`batch` false: each write commits before it returns), or every set
/// in one transaction (`batch` true: all or nothing; the failing set is named).
pub(crate) async fn run_named(
    pool: &SqlPool,
    named: &NamedSql,
    sets: Vec<Vec<Value>>,
    mode: Mode,
    batch: bool,
) -> Result<Vec<Output>, BatchError> {
    with_backend!(pool, p => {
        crate::sqlite::run_named(p, named, sets, mode, batch).await
    }, lazy, DB => {
        let (sql, names) = (named.sql.as_str(), named.params.as_slice());
        let mut conn = lazy.pool().acquire().await?;
        let info = lazy.info(&mut conn, sql).await?;
        if !batch {
            let out = execute::<DB>(&mut conn, sql, &refs(&sets[0]), names, &info, mode).await?;
            return Ok(vec![out]);
        }
        let mut tx = conn.begin().await?;
        let mut outs = Vec::with_capacity(sets.len());
        for (set, values) in sets.iter().enumerate() {
            match execute::<DB>(&mut tx, sql, &refs(values), names, &info, mode).await {
                Ok(out) => outs.push(out),
                Err(error) => {
                    let _ = tx.rollback().await;
                    return Err(BatchError { set: Some(set), error });
                }
            }
        }
        tx.commit().await?;
        Ok(outs)
    })
}

/// Prepares each of `queries` (name, SQL) on `pool`'s database, on a connection of its
/// own (not the pool's, whose connection attempts retry until their timeout and hide
/// the cause): the queries that do not prepare (a typo, a missing table or column),
/// with the database's reason.
pub(crate) async fn prepare_all(
    pool: &SqlPool,
    queries: &[(&str, &str)],
) -> Result<Vec<(String, String)>, SqlError> {
    with_backend!(pool, p => crate::sqlite::prepare_all(p, queries), lazy, DB => {
        let connect = <<DB as Database>::Connection as Connection>::connect_with(&lazy.options);
        let mut conn = tokio::time::timeout(ACQUIRE_TIMEOUT, connect)
            .await
            .map_err(|_| SqlError::PoolTimedOut)??;
        let mut bad = Vec::new();
        for (name, sql) in queries {
            if let Err(e) = (&mut conn).prepare(sql).await {
                bad.push((name.to_string(), SqlError::Db(e).to_string()));
            }
        }
        let _ = conn.close().await;
        Ok(bad)
    })
}

/// A command to an open transaction's task.
pub(crate) enum TxCmd {
    Execute {
        sql: NamedSql,
        params: Vec<(String, Value)>,
        reply: oneshot::Sender<Result<Output, SqlError>>,
    },
    Commit(oneshot::Sender<Result<(), SqlError>>),
    Rollback(oneshot::Sender<Result<(), SqlError>>),
}

/// An open transaction, whichever its backend.
pub(crate) trait OpenTx {
    /// Runs `sql` (any SQL) with `values` in binding order.
    async fn execute(&mut self, sql: &NamedSql, values: Vec<Value>) -> Result<Output, SqlError>;
    /// Runs one statement that takes no parameter and answers no row (`SAVEPOINT`, ...),
    /// as it is (not prepared).
    async fn command(&mut self, sql: String) -> Result<(), SqlError>;
    async fn end(self, commit: bool) -> Result<(), SqlError>;
}

pub(crate) struct SqlxTx<DB: Db>(sqlx::Transaction<'static, DB>);

impl<DB: Db> OpenTx for SqlxTx<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    async fn execute(&mut self, sql: &NamedSql, values: Vec<Value>) -> Result<Output, SqlError> {
        let info = DB::info(&mut self.0, &sql.sql).await?;
        execute::<DB>(
            &mut self.0,
            &sql.sql,
            &refs(&values),
            &sql.params,
            &info,
            Mode::Any,
        )
        .await
    }

    async fn command(&mut self, sql: String) -> Result<(), SqlError> {
        let conn: &mut DB::Connection = &mut self.0;
        conn.execute(sqlx::raw_sql(&sql)).await?;
        Ok(())
    }

    async fn end(self, commit: bool) -> Result<(), SqlError> {
        let done = if commit {
            self.0.commit().await
        } else {
            self.0.rollback().await
        };
        Ok(done?)
    }
}

/// A transaction open on a connector's pool, whichever its backend.
pub(crate) enum AnyTx<'p> {
    Sqlite(crate::sqlite::Checkout<'p>),
    Postgres(SqlxTx<Postgres>),
    MySql(SqlxTx<MySql>),
}

/// Runs `$body` with `$tx` bound to the backend's open transaction.
macro_rules! on_tx {
    ($self:expr, $tx:ident => $body:expr) => {
        match $self {
            AnyTx::Sqlite($tx) => $body,
            AnyTx::Postgres($tx) => $body,
            AnyTx::MySql($tx) => $body,
        }
    };
}

impl AnyTx<'_> {
    /// [`OpenTx::execute`] of the backend's.
    pub(crate) async fn execute(
        &mut self,
        sql: &NamedSql,
        values: Vec<Value>,
    ) -> Result<Output, SqlError> {
        on_tx!(self, tx => tx.execute(sql, values).await)
    }

    /// [`OpenTx::command`] of the backend's.
    pub(crate) async fn command(&mut self, sql: String) -> Result<(), SqlError> {
        on_tx!(self, tx => tx.command(sql).await)
    }

    /// [`OpenTx::end`] of the backend's.
    pub(crate) async fn end(self, commit: bool) -> Result<(), SqlError> {
        on_tx!(self, tx => tx.end(commit).await)
    }
}

/// Begins a transaction on a connection of `pool`.
pub(crate) async fn begin(pool: &SqlPool) -> Result<AnyTx<'_>, SqlError> {
    Ok(match pool {
        SqlPool::Sqlite(p) => AnyTx::Sqlite(crate::sqlite::begin(p).await?),
        SqlPool::Postgres(lazy) => AnyTx::Postgres(SqlxTx(lazy.pool().begin().await?)),
        SqlPool::MySql(lazy) => AnyTx::MySql(SqlxTx(lazy.pool().begin().await?)),
    })
}

/// Runs a plugin's statement (`tx.execute`) in `tx`: its `:name` parameters bound from
/// `params`.
pub(crate) async fn execute_in(
    tx: &mut AnyTx<'_>,
    sql: &NamedSql,
    params: &[(String, Value)],
) -> Result<Output, SqlError> {
    match sql.bind_values(params) {
        Err(why) => Err(SqlError::Param(why)),
        Ok(values) => tx.execute(sql, values.into_iter().cloned().collect()).await,
    }
}

/// Runs one transaction on its own task until it is committed, rolled back, or its
/// channel closes (the call ended: rolled back). Returns the rows affected and how it
/// ended.
pub(crate) async fn transaction(
    pool: &SqlPool,
    rx: mpsc::UnboundedReceiver<TxCmd>,
    began: oneshot::Sender<Result<(), SqlError>>,
) -> (Option<u64>, Outcome) {
    serve_tx(begin(pool).await, rx, began).await
}

async fn serve_tx(
    tx: Result<AnyTx<'_>, SqlError>,
    mut rx: mpsc::UnboundedReceiver<TxCmd>,
    began: oneshot::Sender<Result<(), SqlError>>,
) -> (Option<u64>, Outcome) {
    let mut tx = match tx {
        Ok(tx) => tx,
        Err(e) => {
            let _ = began.send(Err(e));
            return (None, Outcome::Failed);
        }
    };
    if began.send(Ok(())).is_err() {
        let _ = tx.end(false).await;
        return (None, Outcome::RolledBack);
    }
    let mut rows = 0;
    while let Some(cmd) = rx.recv().await {
        match cmd {
            TxCmd::Execute { sql, params, reply } => {
                let res = execute_in(&mut tx, &sql, &params).await;
                if let Ok(out) = &res {
                    rows += out.affected;
                }
                let _ = reply.send(res);
            }
            TxCmd::Commit(reply) => {
                let res = tx.end(true).await;
                let outcome = if res.is_ok() {
                    Outcome::Committed
                } else {
                    Outcome::Failed
                };
                let _ = reply.send(res);
                return (Some(rows), outcome);
            }
            TxCmd::Rollback(reply) => {
                let _ = reply.send(tx.end(false).await);
                return (Some(rows), Outcome::RolledBack);
            }
        }
    }
    let _ = tx.end(false).await;
    (Some(rows), Outcome::RolledBack)
}
