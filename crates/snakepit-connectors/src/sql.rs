//! SQL connectors: one typed sqlx pool per connector (SQLite, PostgreSQL, MySQL/MariaDB),
//! created at first use, so that loading needs no server. Parameters are bound with
//! the type the value has (PostgreSQL: the type the statement wants); rows come back
//! as maps of wire values that keep their types.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;
use rust_decimal::Decimal;
use snakepit::Value;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlRow};
use sqlx::postgres::{PgConnectOptions, PgRow, PgTypeInfo, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteRow};
use sqlx::{
    Arguments, Column, Connection, Database, Either, Executor, IntoArguments, Row, Statement,
    TypeInfo, ValueRef,
};

use crate::config::{Backend, SqlConfig};
use crate::convert;

/// How long acquiring a connection may take (connecting included).
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The driver or the database refused.
    Db(sqlx::Error),
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlError::Param(m) | SqlError::Column(m) => f.write_str(m),
            SqlError::Db(sqlx::Error::Database(e)) => f.write_str(e.message()),
            SqlError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl From<sqlx::Error> for SqlError {
    fn from(e: sqlx::Error) -> Self {
        SqlError::Db(e)
    }
}

/// A backend: how to learn what a statement wants, bind a value, convert a row.
pub(crate) trait Db: Database {
    /// What binding and row conversion need to know of a statement: PostgreSQL the
    /// types of its parameters, SQLite the declared types of its columns.
    type Info: Send + Sync + 'static;

    /// Whether a pooled connection is pinged before each use (a network connection may
    /// have died; a SQLite one cannot, and the ping is a round trip to its thread).
    const PING_BEFORE_USE: bool = true;

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

fn unbindable(v: &Value) -> String {
    format!(
        "is a {}, which SQL cannot take (pass None, bool, int, float, str, bytes, Decimal, date or datetime)",
        v.type_name()
    )
}

impl Db for Sqlite {
    /// The declared type of each column (upper case), when it has one.
    type Info = Vec<Option<String>>;

    const PING_BEFORE_USE: bool = false;

    fn affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn info<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
    ) -> BoxFuture<'c, Result<Self::Info, sqlx::Error>> {
        Box::pin(async move {
            let mut handle = conn.lock_handle().await?;
            Ok(sqlite_decltypes(handle.as_raw_handle().as_ptr(), sql))
        })
    }

    fn bind<'q>(
        args: &mut <Self as Database>::Arguments<'q>,
        v: &Value,
        _: &Self::Info,
        _: usize,
    ) -> Result<(), String> {
        match v {
            Value::Nil => add::<Sqlite, _>(args, None::<String>),
            Value::Bool(b) => add::<Sqlite, _>(args, *b),
            Value::Int(i) => add::<Sqlite, _>(args, *i),
            Value::Float(f) => add::<Sqlite, _>(args, *f),
            Value::Str(s) => add::<Sqlite, _>(args, s.clone()),
            Value::Bytes(b) => add::<Sqlite, _>(args, b.clone()),
            // SQLite has no decimal type: the text, which NUMERIC columns store as numbers.
            Value::Decimal(s) => add::<Sqlite, _>(args, convert::decimal(s)?.to_string()),
            Value::Date(d) => add::<Sqlite, _>(args, convert::date(*d)?),
            Value::DateTime(dt) => match dt.offset {
                None => add::<Sqlite, _>(args, convert::naive(dt.micros)?),
                Some(o) => add::<Sqlite, _>(args, convert::aware(dt.micros, o)?),
            },
            Value::List(_) | Value::Map(_) => Err(unbindable(v)),
        }
    }

    fn value(row: &SqliteRow, i: usize, decls: &Self::Info) -> Result<Value, String> {
        let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
        if raw.is_null() {
            return Ok(Value::Nil);
        }
        let storage = raw.type_info().name().to_owned();
        let decl = decls.get(i).cloned().flatten().unwrap_or_default();
        let get_err = |e: sqlx::Error| e.to_string();
        let by_storage = || -> Result<Value, String> {
            Ok(match storage.as_str() {
                "INTEGER" => Value::Int(row.try_get_unchecked::<i64, _>(i).map_err(get_err)?),
                "REAL" => Value::Float(row.try_get_unchecked::<f64, _>(i).map_err(get_err)?),
                "BLOB" => Value::Bytes(row.try_get_unchecked::<Vec<u8>, _>(i).map_err(get_err)?),
                _ => Value::Str(row.try_get_unchecked::<String, _>(i).map_err(get_err)?),
            })
        };
        if decl.contains("INT") {
            return by_storage();
        }
        if decl.contains("DEC") || decl.contains("NUMERIC") || decl.contains("MONEY") {
            let text = match storage.as_str() {
                "INTEGER" => row
                    .try_get_unchecked::<i64, _>(i)
                    .map_err(get_err)?
                    .to_string(),
                "REAL" => row
                    .try_get_unchecked::<f64, _>(i)
                    .map_err(get_err)?
                    .to_string(),
                _ => row.try_get_unchecked::<String, _>(i).map_err(get_err)?,
            };
            return Ok(match convert::decimal(&text) {
                Ok(d) => convert::from_decimal(d),
                Err(_) => Value::Str(text),
            });
        }
        if decl.starts_with("BOOL") && storage == "INTEGER" {
            return Ok(Value::Bool(
                row.try_get_unchecked::<i64, _>(i).map_err(get_err)? != 0,
            ));
        }
        if decl.contains("TIMESTAMP") || decl.contains("DATETIME") {
            if let Ok(d) = row.try_get_unchecked::<DateTime<FixedOffset>, _>(i) {
                if storage == "TEXT"
                    && has_offset(&row.try_get_unchecked::<String, _>(i).unwrap_or_default())
                {
                    return Ok(convert::from_aware(d));
                }
            }
            if let Ok(n) = row.try_get_unchecked::<NaiveDateTime, _>(i) {
                return Ok(convert::from_naive(n));
            }
            return by_storage();
        }
        if decl == "DATE" {
            if let Ok(d) = row.try_get_unchecked::<NaiveDate, _>(i) {
                return Ok(convert::from_date(d));
            }
        }
        by_storage()
    }
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

/// The declared types of the columns of `sql`'s first statement (SQLite knows them
/// per statement; sqlx keeps only those it maps to a Rust type).
fn sqlite_decltypes(db: *mut libsqlite3_sys::sqlite3, sql: &str) -> Vec<Option<String>> {
    use libsqlite3_sys as ffi;
    let Ok(len) = i32::try_from(sql.len()) else {
        return Vec::new();
    };
    let mut stmt: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
    // SAFETY: `db` is the open connection, locked for us by `lock_handle`; the statement is
    // finalized before returning and the decltype strings are copied while it lives.
    unsafe {
        let rc = ffi::sqlite3_prepare_v2(
            db,
            sql.as_ptr().cast(),
            len,
            &mut stmt,
            std::ptr::null_mut(),
        );
        if rc != ffi::SQLITE_OK || stmt.is_null() {
            // The statement itself reports the error when it runs.
            return Vec::new();
        }
        let n = ffi::sqlite3_column_count(stmt);
        let out = (0..n)
            .map(|i| {
                let p = ffi::sqlite3_column_decltype(stmt, i);
                (!p.is_null()).then(|| {
                    std::ffi::CStr::from_ptr(p)
                        .to_string_lossy()
                        .to_ascii_uppercase()
                })
            })
            .collect();
        ffi::sqlite3_finalize(stmt);
        out
    }
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
            Value::List(_) | Value::Map(_) => Err(unbindable(v)),
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
            Value::List(_) | Value::Map(_) => Err(unbindable(v)),
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
                .test_before_acquire(DB::PING_BEFORE_USE)
                .connect_lazy_with(self.options.clone())
        })
    }

    /// What `sql` (named `name`) needs for binding and conversion, learned once.
    pub(crate) async fn info(
        &self,
        conn: &mut DB::Connection,
        name: &str,
        sql: &str,
    ) -> Result<Arc<DB::Info>, sqlx::Error> {
        if let Some(i) = self
            .infos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(i.clone());
        }
        let info = Arc::new(DB::info(conn, sql).await?);
        self.infos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), info.clone());
        Ok(info)
    }
}

/// A connector's pool, whichever its backend.
pub(crate) enum SqlPool {
    Sqlite(Lazy<Sqlite>),
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
            Backend::Sqlite => SqlPool::Sqlite(Lazy::new(
                SqliteConnectOptions::from_str(url).map_err(bad)?,
                max,
            )),
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

/// Runs `$body` with `$lazy` bound to the backend's [`Lazy`] and `$DB` to its type.
macro_rules! with_backend {
    ($pool:expr, $lazy:ident, $DB:ident => $body:expr) => {
        match $pool {
            $crate::sql::SqlPool::Sqlite($lazy) => {
                type $DB = ::sqlx::sqlite::Sqlite;
                $body
            }
            $crate::sql::SqlPool::Postgres($lazy) => {
                type $DB = ::sqlx::postgres::Postgres;
                $body
            }
            $crate::sql::SqlPool::MySql($lazy) => {
                type $DB = ::sqlx::mysql::MySql;
                $body
            }
        }
    };
}
pub(crate) use with_backend;

/// Acquires a connection and runs the named query `name` on it.
pub(crate) async fn run_named(
    pool: &SqlPool,
    name: &str,
    sql: &str,
    values: &[&Value],
    names: &[String],
    mode: Mode,
) -> Result<Output, SqlError> {
    with_backend!(pool, lazy, DB => {
        let mut conn = lazy.pool().acquire().await?;
        let info = lazy.info(&mut conn, name, sql).await?;
        execute::<DB>(&mut conn, sql, values, names, &info, mode).await
    })
}

/// Prepares each of `queries` (name, SQL) on `pool`'s database, on a connection of its
/// own (not the pool's, whose connection attempts retry until their timeout and hide
/// the cause): the queries that do not prepare (a typo, a missing table or column),
/// with the database's reason.
pub(crate) async fn prepare_all(
    pool: &SqlPool,
    queries: &[(&str, &str)],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    with_backend!(pool, lazy, DB => {
        let connect = <<DB as Database>::Connection as Connection>::connect_with(&lazy.options);
        let mut conn = tokio::time::timeout(ACQUIRE_TIMEOUT, connect)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
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
