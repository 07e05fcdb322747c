//! API connectors: one reqwest client per connector, with its headers and timeout.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use snakepit::Value;

use crate::config::{ApiConfig, Endpoint, PathPart};

/// A connector's client.
pub(crate) struct ApiClient {
    pub cfg: ApiConfig,
    client: reqwest::Client,
}

impl ApiClient {
    pub(crate) fn new(cfg: ApiConfig) -> Result<ApiClient, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let mut value = HeaderValue::from_str(&value.0).map_err(|e| e.to_string())?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .default_headers(headers)
            .build()
            .map_err(|e| e.without_url().to_string())?;
        Ok(ApiClient { cfg, client })
    }

    /// Calls `endpoint` with `params`: path placeholders first, the rest as the query
    /// string (GET, DELETE, HEAD) or a JSON body (the others). Returns the status and the
    /// decoded body (JSON, else the text; an empty body is None). `base` replaces the
    /// connector's base URL (a test server, in a sandbox).
    pub(crate) async fn call(
        &self,
        name: &str,
        endpoint: &Endpoint,
        params: &[(String, Value)],
        base: Option<&str>,
    ) -> Result<(u16, Value), CallFailure> {
        let mut url = base.unwrap_or(&self.cfg.base_url.real).to_owned();
        let mut used = Vec::new();
        for part in &endpoint.path {
            match part {
                PathPart::Text(t) => url.push_str(t),
                PathPart::Placeholder(p) => {
                    let v = params
                        .iter()
                        .find(|(k, _)| k == p)
                        .map(|(_, v)| v)
                        .ok_or_else(|| {
                            CallFailure::Usage(format!(
                                "missing parameter {p} (the path of {name} is {})",
                                path_text(endpoint)
                            ))
                        })?;
                    let text = scalar_text(v).ok_or_else(|| {
                        CallFailure::Usage(format!(
                            "parameter {p} is a {}, which cannot go in a path",
                            v.type_name()
                        ))
                    })?;
                    url.push_str(&percent_encode(&text));
                    used.push(p.as_str());
                }
            }
        }
        let rest: Vec<&(String, Value)> = params
            .iter()
            .filter(|(k, _)| !used.contains(&k.as_str()))
            .collect();
        let mut req = self.client.request(endpoint.method.clone(), &url);
        let in_query = matches!(
            endpoint.method,
            reqwest::Method::GET | reqwest::Method::DELETE | reqwest::Method::HEAD
        );
        if in_query {
            let mut pairs: Vec<(&str, String)> = Vec::new();
            for (k, v) in &rest {
                let items = match v {
                    Value::List(items) => items.iter().collect(),
                    Value::Nil => vec![],
                    v => vec![v],
                };
                for item in items {
                    let text = scalar_text(item).ok_or_else(|| {
                        CallFailure::Usage(format!(
                            "parameter {k} is a {}, which cannot go in a query string",
                            item.type_name()
                        ))
                    })?;
                    pairs.push((k, text));
                }
            }
            if !pairs.is_empty() {
                req = req.query(&pairs);
            }
        } else if !rest.is_empty() {
            let body = Value::Map(rest.into_iter().cloned().collect()).to_json();
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(CallFailure::Transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(CallFailure::Transport)?;
        let body = if bytes.is_empty() {
            Value::Nil
        } else {
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(j) => Value::from_json(&j),
                Err(_) => Value::Str(String::from_utf8_lossy(&bytes).into_owned()),
            }
        };
        Ok((status, body))
    }
}

/// Why an API call got no answer.
pub(crate) enum CallFailure {
    /// The parameters do not fit the endpoint.
    Usage(String),
    /// No response: connection refused, timeout, a broken body.
    Transport(reqwest::Error),
}

fn path_text(e: &Endpoint) -> String {
    e.path
        .iter()
        .map(|p| match p {
            PathPart::Text(t) => t.clone(),
            PathPart::Placeholder(n) => format!("{{{n}}}"),
        })
        .collect()
}

/// The text of a scalar for a URL.
fn scalar_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => if *b { "true" } else { "false" }.to_owned(),
        Value::Decimal(d) => d.clone(),
        Value::Date(d) => snakepit_proto::date_iso(*d),
        Value::DateTime(dt) => dt.iso(),
        _ => return None,
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_values_are_encoded() {
        assert_eq!(percent_encode("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
        assert_eq!(scalar_text(&Value::Date(20574)).unwrap(), "2026-05-01");
        assert_eq!(scalar_text(&Value::Bool(true)).unwrap(), "true");
        assert!(scalar_text(&Value::Map(vec![])).is_none());
    }
}
