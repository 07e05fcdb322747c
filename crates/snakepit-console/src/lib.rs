//! The web console of `snakepit serve`: a page of runs, jobs, pools and workers, reloads
//! and connector activity, the JSON API behind it, `/metrics` (Prometheus), `/healthz`
//! and `/readyz`. Served by the same binary, with its page embedded (plain HTML, CSS
//! and JavaScript: no CDN, no build step).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async {
//! use std::sync::Arc;
//! use snakepit_console::{Console, Metrics};
//! use snakepit_host::{control::ServeInfo, Host, HttpSettings};
//! use snakepit_jobs::{JobSet, Scheduler, SystemClock};
//! use snakepit_state::State;
//!
//! let apps = tempfile::tempdir()?;
//! std::fs::write(apps.path().join("app.toml"), "[runtime]\nworkers = 1\n")?;
//! let host = Arc::new(Host::open(apps.path()).await?);
//! let install = host.install();
//! let state = State::open_for_apps(&install.dir, None).await?;
//! let jobs = JobSet::load(&install).map_err(|p| format!("{p:?}"))?;
//! let metrics = Metrics::new();
//! metrics.watch_host(&host);
//! let clock = Arc::new(SystemClock);
//! let scheduler = Arc::new(
//!     Scheduler::new(host.clone(), state.clone(), clock, jobs).observe(metrics.clone()),
//! );
//! let info = ServeInfo { started: std::time::SystemTime::now(), watching: None, jobs: None, wake: None };
//! let settings = HttpSettings { addr: "127.0.0.1:0".parse()?, token: None };
//! let console = Console { host: host.clone(), state, scheduler, info, metrics };
//! let server = console.serve(&settings).await?;
//! println!("the console is at http://{}/", server.addr());
//! server.stop().await;
//! host.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # })
//! # }
//! ```
//!
//! # Theory of operation
//!
//! One axum server, one owner per concern:
//! - [`access`]: every request passes its guard first: the token (bearer header or the
//!   cookie `/login` sets) when `[runtime] http_token` is set, else loopback `Host`
//!   names only; CSRF checks on POSTs; security headers on every answer.
//! - [`api`]: the JSON handlers, reading the host (`Host::status`), the run history
//!   (`snakepit_state::State`) and the scheduler (its jobs and runner). "Run now" queues
//!   a manual run for any node and wakes this node's scheduler, which claims it: with
//!   SQLite (one node) it runs here at once, with PostgreSQL on whichever node claims it.
//! - [`live`]: a run's log as Server-Sent Events, read from the history as the runner
//!   writes it.
//! - [`metrics`]: the Prometheus registry, fed by observers (the host's calls, the
//!   connectors' audit records, the runner's runs) and by the worker event stream that
//!   [`crashes`] reads; the gauges are read from `Host::status` at scrape time.
//! - The page (`assets/`): one HTML document whose script routes by `#/runs`,
//!   `#/runs/ID`, `#/runs/ID/calls`, `#/jobs`, `#/pools`, `#/reload`, `#/connectors`
//!   and renders what the API returns.

pub mod access;
pub mod api;
pub mod crashes;
pub mod live;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use snakepit_host::control::ServeInfo;
use snakepit_host::{Host, HttpSettings};
use snakepit_jobs::Scheduler;
use tokio::sync::watch;

pub use access::Access;
pub use crashes::{Crash, Crashes};
pub use metrics::Metrics;

/// What the console shows and acts on: the serve's parts.
pub struct Console {
    pub host: Arc<Host>,
    pub state: snakepit_state::State,
    pub scheduler: Arc<Scheduler>,
    pub info: ServeInfo,
    /// Set up beforehand: the scheduler and the connectors report to it.
    pub metrics: Arc<Metrics>,
}

/// What the handlers share.
pub struct Shared {
    pub host: Arc<Host>,
    pub state: snakepit_state::State,
    pub scheduler: Arc<Scheduler>,
    pub info: ServeInfo,
    pub metrics: Arc<Metrics>,
    pub crashes: Crashes,
    access: Access,
    /// The page, its CSRF token filled in.
    index: String,
}

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen on {addr} for the web console: {source}; choose another address with --http or [runtime] http")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A console being served; [`ConsoleServer::stop`] ends it.
#[derive(Debug)]
pub struct ConsoleServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    follow: tokio::task::JoinHandle<()>,
}

impl ConsoleServer {
    /// The address it listens on (the port chosen, for `:0`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections; open log streams are closed.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        self.follow.abort();
        let _ = self.task.await;
    }
}

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

impl Console {
    /// Listens on `settings.addr` and serves until [`ConsoleServer::stop`].
    pub async fn serve(self, settings: &HttpSettings) -> Result<ConsoleServer, ConsoleError> {
        let listener = tokio::net::TcpListener::bind(settings.addr)
            .await
            .map_err(|source| ConsoleError::Bind {
                addr: settings.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ConsoleError::Bind {
            addr: settings.addr,
            source,
        })?;
        let access = Access::new(settings.token.clone());
        let crashes = Crashes::default();
        let follow = tokio::spawn(
            crashes
                .clone()
                .follow(self.host.events(), self.metrics.clone()),
        );
        let shared = Arc::new(Shared {
            index: INDEX.replace("{{csrf}}", access.csrf()),
            host: self.host,
            state: self.state,
            scheduler: self.scheduler,
            info: self.info,
            metrics: self.metrics,
            crashes,
            access: access.clone(),
        });
        let app = router(shared, access);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the web console stopped");
            }
        });
        Ok(ConsoleServer {
            addr,
            stop,
            task,
            follow,
        })
    }
}

fn router(shared: Arc<Shared>, access: Access) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_form).post(login))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/status", get(api::status))
        .route("/api/crashes", get(api::crashes))
        .route("/api/nodes", get(api::nodes))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{id}", get(api::run))
        .route("/api/runs/{id}/log", get(api::log))
        .route("/api/runs/{id}/calls", get(api::calls))
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{name}/run", post(api::run_now))
        .route("/api/reload", post(api::reload))
        .route("/api/connectors", get(api::connectors))
        .with_state(shared)
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
}

async fn index(State(s): State<Arc<Shared>>) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(s.index.clone())).into_response()
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

async fn app_css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS).into_response()
}

async fn login_form() -> Html<String> {
    Html(LOGIN.replace("{{message}}", ""))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Sets the token cookie when the token is right.
async fn login(State(s): State<Arc<Shared>>, Form(form): Form<LoginForm>) -> Response {
    let Some(cookie) = s.access.login_cookie() else {
        return Redirect::to("/").into_response();
    };
    if !s.access.is_token(form.token.trim()) {
        let page = LOGIN.replace(
            "{{message}}",
            "<p class=\"error\">That is not the console's token.</p>",
        );
        return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
    }
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
