//! API calls (`api.call`).

use std::time::{Instant, SystemTime};

use snakepit::{HostFailure, Value};

use crate::api::CallFailure;
use crate::audit::Outcome;
use crate::payload::{connector_error, grant_hint, map_field, permission_error, str_field};
use crate::{config, Caller, Connectors};

impl Connectors {
    pub(crate) async fn api_call(
        &self,
        who: &Caller,
        payload: &Value,
    ) -> Result<Value, HostFailure> {
        let connector = str_field(payload, "api.call", "connector")?;
        let endpoint = str_field(payload, "api.call", "endpoint")?;
        let params = map_field(payload, "api.call", "params")?;
        let start = (SystemTime::now(), Instant::now());
        let Some(client) = self.inner.api.get(connector) else {
            return Err(connector_error(self.unknown("API", connector)));
        };
        if !self.inner.grants.connector(&who.package, connector) {
            self.audit(who, connector, endpoint, None, start, Outcome::Denied);
            return Err(permission_error(grant_hint(
                &who.package,
                connector,
                "connectors",
            )));
        }
        let Some(ep) = client.cfg.endpoints.get(endpoint) else {
            self.audit(who, connector, endpoint, None, start, Outcome::Failed);
            let known: Vec<&str> = client.cfg.endpoints.keys().map(String::as_str).collect();
            return Err(connector_error(format!(
                "connector {connector:?} has no endpoint {endpoint:?} (it has: {}); add it to [api.{}.endpoints] in connectors.toml",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") },
                config::key(connector)
            )));
        };
        let base = self.sandbox().and_then(|s| s.api_base(connector));
        match client.call(endpoint, ep, &params, base.as_deref()).await {
            Ok((status, body)) => {
                let outcome = if status >= 400 {
                    Outcome::HttpError(status)
                } else {
                    Outcome::Ok
                };
                self.audit(who, connector, endpoint, None, start, outcome);
                Ok(Value::map([
                    ("status", Value::Int(status.into())),
                    ("body", body),
                ]))
            }
            Err(f) => {
                self.audit(who, connector, endpoint, None, start, Outcome::Failed);
                let why = match f {
                    CallFailure::Usage(m) => m,
                    CallFailure::Transport(e) if e.is_timeout() => {
                        format!("no answer within {:?}", client.cfg.timeout)
                    }
                    CallFailure::Transport(e) => {
                        let mut causes = String::new();
                        let mut src = std::error::Error::source(&e);
                        while let Some(s) = src {
                            causes.push_str(&format!(": {s}"));
                            src = s.source();
                        }
                        let m = format!("{}{causes}", e.without_url());
                        format!("cannot reach {}: {m}", client.cfg.base_url)
                    }
                };
                Err(connector_error(self.inner.config.scrub(&format!(
                    "connector {connector:?}, endpoint {endpoint:?}: {why}"
                ))))
            }
        }
    }
}
