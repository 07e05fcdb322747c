//! The JSON API behind the page (documented in docs/console.md): the same field names
//! as the CLI's `--json` output, so that scripts can use either. Parameter values are
//! never sent (a run's `params` has its keys with `"***"`), connector URLs only masked.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use snakepit_host::control::Reply;
use snakepit_jobs::{enqueue_for_any_node, job_reports, RunError, RunRequest};
use snakepit_state::{RunQuery, StateError, Trigger};

use crate::Shared;

/// The runs a page lists when it does not say.
pub const PAGE: u32 = 50;
/// The most runs one page lists.
pub const MAX_PAGE: u32 = 500;
/// The session user of runs started from the console.
pub const CONSOLE_USER: &str = "console";

const STATUSES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
];

/// An error as the API sends it: a status and `{"error": "..."}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        match e {
            e @ StateError::Ambiguous { .. } => ApiError(StatusCode::BAD_REQUEST, e.to_string()),
            e => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

fn bad(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

type ApiResult = Result<Response, ApiError>;

fn no_store(body: Value) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// A run's (or a run record's) params with every value replaced by `"***"`.
fn mask_params(run: &mut Value) {
    if let Some(Value::Object(params)) = run.get_mut("params") {
        for v in params.values_mut() {
            *v = Value::String("***".into());
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {e}"),
        )
    })
}

/// `GET /api/status`: `snakepit status --json`.
pub async fn status(State(s): State<Arc<Shared>>) -> ApiResult {
    Ok(no_store(to_json(&s.info.status(&s.host).await)?))
}

/// `GET /api/nodes`: every node recorded in the state (`snakepit status --cluster
/// --json`), lost ones marked.
pub async fn nodes(State(s): State<Arc<Shared>>) -> ApiResult {
    Ok(no_store(to_json(&s.state.nodes(Utc::now()).await?)?))
}

/// `GET /api/crashes`: the latest worker crashes with their stderr tail, newest first.
pub async fn crashes(State(s): State<Arc<Shared>>) -> ApiResult {
    Ok(no_store(to_json(&s.crashes.list())?))
}

#[derive(Debug, Deserialize)]
pub struct RunsParams {
    job: Option<String>,
    status: Option<String>,
    trigger: Option<String>,
    /// A date (`2026-06-01`, from its start) or an RFC 3339 time.
    since: Option<String>,
    /// A date (up to its end) or an RFC 3339 time.
    until: Option<String>,
    /// The `next` of the previous page.
    after: Option<String>,
    limit: Option<u32>,
}

fn time_param(name: &str, text: &str, end_of_day: bool) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        bad(format!(
            "{name}={text:?} is not a date (2026-06-01) or an RFC 3339 time"
        ))
    })?;
    let day = if end_of_day {
        day.succ_opt()
    } else {
        Some(day)
    };
    day.and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| bad(format!("{name}={text:?} is out of range")))
}

fn empty_is_none(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// `GET /api/runs?job=&status=&trigger=&since=&until=&after=&limit=`: `{"runs": [...],
/// "next": cursor or null}`, each run as `snakepit runs --json` lists it.
pub async fn runs(State(s): State<Arc<Shared>>, Query(p): Query<RunsParams>) -> ApiResult {
    let status = empty_is_none(p.status);
    if let Some(st) = &status {
        if !STATUSES.contains(&st.as_str()) {
            return Err(bad(format!(
                "status={st:?} is not a run status; the statuses are {}",
                STATUSES.join(", ")
            )));
        }
    }
    let trigger = empty_is_none(p.trigger);
    if let Some(t) = &trigger {
        if t != "schedule" && t != "manual" {
            return Err(bad(format!(
                "trigger={t:?} is not a trigger; give schedule or manual"
            )));
        }
    }
    let after = match empty_is_none(p.after) {
        None => None,
        Some(c) => {
            let (t, id) = c
                .split_once('|')
                .ok_or_else(|| bad(format!("after={c:?} is not a cursor from `next`")))?;
            Some((time_param("after", t, false)?, id.to_owned()))
        }
    };
    let since = empty_is_none(p.since);
    let until = empty_is_none(p.until);
    let limit = p.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let q = RunQuery {
        job: empty_is_none(p.job),
        status,
        trigger,
        since: since.map(|t| time_param("since", &t, false)).transpose()?,
        until: until.map(|t| time_param("until", &t, true)).transpose()?,
        after,
        limit,
    };
    let runs = s.state.run_page(&q).await?;
    let next = (runs.len() == limit as usize)
        .then(|| runs.last())
        .flatten()
        .map(|r| {
            format!(
                "{}|{}",
                r.queued_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
                r.id
            )
        });
    let mut runs = to_json(&runs)?;
    if let Value::Array(list) = &mut runs {
        list.iter_mut().for_each(mask_params);
    }
    Ok(no_store(json!({ "runs": runs, "next": next })))
}

/// `GET /api/runs/{id}`: `snakepit runs show ID --json` (params masked).
pub async fn run(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let Some(record) = s.state.run(&id).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no run {id:?} in the history"),
        ));
    };
    let mut record = to_json(&record)?;
    mask_params(&mut record);
    Ok(no_store(record))
}

/// The connector calls one page lists when it does not say (as `runs show --calls`).
pub const CALLS_PAGE: u32 = 100;
/// The most connector calls one page lists.
pub const MAX_CALLS_PAGE: u32 = 1000;

#[derive(Debug, Deserialize)]
pub struct CallsParams {
    /// The `next_after` of the previous page.
    after: Option<i64>,
    limit: Option<u32>,
}

/// `GET /api/runs/{id}/calls?after=&limit=`: a page of the run's connector calls, oldest
/// first, as `snakepit runs show ID --calls --json` prints it: `{"run_id", "total",
/// "calls", "next_after"}` (pass `next_after` as `after` for the next page).
pub async fn calls(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(p): Query<CallsParams>,
) -> ApiResult {
    let limit = p.limit.unwrap_or(CALLS_PAGE).clamp(1, MAX_CALLS_PAGE);
    let Some(page) = s.state.calls(&id, p.after, limit).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no run {id:?} in the history"),
        ));
    };
    Ok(no_store(to_json(&page)?))
}

#[derive(Debug, Deserialize)]
pub struct LogParams {
    after: Option<i64>,
}

/// `GET /api/runs/{id}/log?after=N`: the run's log lines as Server-Sent Events (see
/// [`crate::live`]); `Last-Event-ID` resumes a stream.
pub async fn log(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(p): Query<LogParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if s.state.run_status(&id).await?.is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no run {id:?} in the history (give its whole id)"),
        ));
    }
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let after = resumed.or(p.after).unwrap_or(0);
    Ok(crate::live::stream(s.state.clone(), id, after).into_response())
}

/// `GET /api/jobs`: `snakepit jobs --json`.
pub async fn jobs(State(s): State<Arc<Shared>>) -> ApiResult {
    let jobs = job_reports(&s.scheduler.jobs(), &s.state, Utc::now()).await?;
    Ok(no_store(to_json(&jobs)?))
}

#[derive(Debug, Default, Deserialize)]
pub struct RunNow {
    /// Overrides of the job's params, as `--param K=V` takes them (a string, or a JSON
    /// number or bool).
    #[serde(default)]
    params: serde_json::Map<String, Value>,
}

/// `POST /api/jobs/{name}/run` with `{"params": {...}}`: queues a manual run. With
/// SQLite this node's scheduler runs it at once; with PostgreSQL whichever node claims
/// it first (this one is woken). 202 with `{"run_id", "placement"}`.
pub async fn run_now(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(body): Json<RunNow>,
) -> ApiResult {
    let params = body
        .params
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            v @ (Value::Number(_) | Value::Bool(_)) => Ok((k, v.to_string())),
            other => Err(bad(format!(
                "params.{k}: give a string, a number or a bool, not {other}"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let req = RunRequest {
        job: name,
        trigger: Trigger::Manual,
        scheduled_for: Utc::now(),
        params,
        session_user: CONSOLE_USER.to_owned(),
    };
    // The path of `snakepit run --enqueue`: on PostgreSQL the insert wakes every node.
    let queued = enqueue_for_any_node(&s.state, &s.scheduler.jobs(), req, Utc::now()).await;
    let run_id = match queued {
        Ok(id) => id,
        Err(e @ RunError::UnknownJob { .. }) => {
            return Err(ApiError(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e @ (RunError::BadParam(_) | RunError::Duplicate { .. })) => {
            return Err(bad(e.to_string()))
        }
        Err(RunError::State(e)) => return Err(e.into()),
    };
    s.scheduler.wake();
    let placement = if s.state.is_shared() {
        "queued for the cluster"
    } else {
        "this node"
    };
    tracing::info!(run_id = %run_id, placement, "run queued from the web console");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": run_id, "placement": placement })),
    )
        .into_response())
}

/// `POST /api/reload`: `snakepit reload --json`.
pub async fn reload(State(s): State<Arc<Shared>>) -> ApiResult {
    let reply = match s.host.reload("web console").await {
        Ok(generation) => Reply::Reloaded { generation },
        Err(problems) => Reply::Refused {
            generation: s.host.generation(),
            problems,
        },
    };
    Ok(no_store(to_json(&reply)?))
}

#[derive(Debug, Deserialize)]
pub struct ActivityParams {
    hours: Option<u32>,
}

/// `GET /api/connectors?hours=24`: the connectors (URLs masked) and the audited calls of
/// the last `hours`, per package, connector and target.
pub async fn connectors(
    State(s): State<Arc<Shared>>,
    Query(p): Query<ActivityParams>,
) -> ApiResult {
    let hours = p.hours.unwrap_or(24).clamp(1, 24 * 366);
    let since = Utc::now() - chrono::Duration::hours(i64::from(hours));
    let activity = s.state.connector_activity(since, 1000).await?;
    let install = s.host.install();
    let config = install.connectors.config();
    let mut list: Vec<Value> = config
        .sql
        .values()
        .map(|c| json!({"name": c.name, "kind": "sql", "url": c.url.masked()}))
        .collect();
    list.extend(
        config
            .api
            .values()
            .map(|c| json!({"name": c.name, "kind": "api", "url": c.base_url.masked()})),
    );
    Ok(no_store(json!({
        "since": since.to_rfc3339_opts(SecondsFormat::Secs, true),
        "connectors": list,
        "activity": to_json(&activity)?,
    })))
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// How long `/readyz` waits for the state database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /readyz`: 200 when every pool of the serving generation has a live worker and
/// the state database answers; 503 with the reasons otherwise.
pub async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let status = s.host.status();
    let mut problems: Vec<String> = status
        .pools
        .iter()
        .filter(|p| p.live == 0)
        .map(|p| format!("pool {} has no live worker", p.name))
        .collect();
    match tokio::time::timeout(READY_TIMEOUT, s.state.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("the state database does not answer: {e}")),
        Err(_) => problems.push(format!(
            "the state database did not answer within {}s",
            READY_TIMEOUT.as_secs()
        )),
    }
    let code = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": problems.is_empty(),
        "generation": status.generation,
        "problems": problems,
    });
    (code, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// `GET /metrics`: the Prometheus text format.
pub async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    match s.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
