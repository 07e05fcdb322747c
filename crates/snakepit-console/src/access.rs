//! Who may use the console, checked on every request before any handler runs.
//!
//! - **Token.** When `[runtime] http_token` is set (it must be for any address other than
//!   loopback), every request carries it: `Authorization: Bearer TOKEN` (scripts,
//!   Prometheus), or the `snakepit_console` cookie that `POST /login` sets once for a
//!   browser (HttpOnly, SameSite=Strict). Anything else gets 401 and a one-line body;
//!   only the login form itself (`/login`) answers without the token.
//! - **Loopback without a token.** The console trusts the local machine, so it refuses a
//!   request whose `Host` names anything but a loopback address or `localhost` (421):
//!   a web page whose name an attacker resolves to 127.0.0.1 (DNS rebinding) cannot read
//!   it.
//! - **CSRF.** A POST that a browser could be tricked into sending (one without a bearer
//!   header) must be a JSON request carrying the `X-Snakepit-Csrf` header with the
//!   process's CSRF token, which only a page served by the console can read (in its
//!   `<meta name="csrf">`), and an `Origin`, when sent, that is the console's own. A
//!   cross-site form cannot set either header. `POST /login` takes a form but checks the
//!   `Origin` too.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The cookie that carries the token for a browser.
pub const COOKIE: &str = "snakepit_console";
/// The header that carries the CSRF token of a POST.
pub const CSRF_HEADER: &str = "x-snakepit-csrf";

/// The access rules of one console.
#[derive(Clone)]
pub struct Access {
    /// Required of every request when set.
    token: Option<String>,
    /// Random per process; the page reads it from its `<meta name="csrf">`.
    csrf: String,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// Compares without stopping at the first difference (the time taken does not tell how
/// much of a guess was right).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Whether a `Host` header names this machine's loopback: `127.x.x.x`, `[::1]` or
/// `localhost`, with any port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a request is refused: its status and a one-line body.
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{} {}\n", self.0.as_u16(), self.1),
        )
            .into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl Access {
    pub fn new(token: Option<String>) -> Access {
        let csrf = (0..4)
            .map(|_| format!("{:016x}", fastrand::u64(..)))
            .collect();
        Access { token, csrf }
    }

    /// The CSRF token pages embed.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether `token` is the console's.
    pub fn is_token(&self, token: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| same(t.as_bytes(), token.as_bytes()))
    }

    /// The `Set-Cookie` value that logs a browser in.
    pub fn login_cookie(&self) -> Option<String> {
        let t = self.token.as_deref()?;
        Some(format!("{COOKIE}={t}; HttpOnly; SameSite=Strict; Path=/"))
    }

    /// How the request proved itself: by its bearer header (not a browser's doing:
    /// no CSRF check), by its cookie, or by coming to a loopback console with no token.
    fn authenticate(&self, headers: &HeaderMap) -> Result<bool, Refusal> {
        let Some(_) = &self.token else {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !loopback_host(host) {
                return Err(Refusal(
                    StatusCode::MISDIRECTED_REQUEST,
                    "this console answers only to 127.0.0.1, [::1] and localhost (set [runtime] http_token to serve other names)",
                ));
            }
            return Ok(false);
        };
        if bearer(headers).is_some_and(|t| self.is_token(t)) {
            return Ok(true);
        }
        if cookie(headers, COOKIE).is_some_and(|t| self.is_token(t)) {
            return Ok(false);
        }
        Err(Refusal(StatusCode::UNAUTHORIZED, "Unauthorized"))
    }

    /// A POST from a page must be the console's own page's (see the module doc).
    fn check_csrf(&self, headers: &HeaderMap, form: bool) -> Result<(), Refusal> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if let Some(origin) = headers.get(header::ORIGIN) {
            let ours = host.map(|h| format!("http://{h}"));
            if origin.to_str().ok() != ours.as_deref() {
                return Err(Refusal(
                    StatusCode::FORBIDDEN,
                    "Forbidden: the request comes from another site (Origin)",
                ));
            }
        }
        if form {
            return Ok(());
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if json && token.is_some_and(|t| same(t.as_bytes(), self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal(
                StatusCode::FORBIDDEN,
                "Forbidden: a POST needs Content-Type: application/json and the X-Snakepit-Csrf header of the console's page (or an Authorization: Bearer header)",
            ))
        }
    }
}

/// The middleware: authentication, then CSRF on POSTs; `/login` is open.
pub async fn guard(State(access): State<Access>, req: Request<Body>, next: Next) -> Response {
    let login = req.uri().path() == "/login";
    let headers = req.headers();
    let by_bearer = if login {
        false
    } else {
        match access.authenticate(headers) {
            Ok(b) => b,
            Err(r) => return r.into_response(),
        }
    };
    if req.method() == Method::POST && !by_bearer {
        if let Err(r) = access.check_csrf(headers, login) {
            return r.into_response();
        }
    }
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // `same-origin`, not `no-referrer`: with the latter a browser sends `Origin: null`
        // on the login form, and the CSRF check could not tell it from another site.
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    ] {
        h.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1:8650",
            "127.0.0.1",
            "localhost:1",
            "LOCALHOST",
            "[::1]:8650",
            "127.1.2.3:9",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8650",
            "localhost.evil.example",
            "10.0.0.1:8650",
            "[::2]:1",
            "",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        let a = Access::new(Some("0123456789abcdef".into()));
        assert!(a.is_token("0123456789abcdef"));
        assert!(!a.is_token("0123456789abcde"));
        assert!(!a.is_token("0123456789abcdeF"));
        assert!(!Access::new(None).is_token(""));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; snakepit_console=tok; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
