//! Reading a host request's payload, and the failures a request ends with.

use snakepit::{HostFailure, Value};

use crate::config;

pub(crate) fn failure(type_name: &str, message: impl Into<String>) -> HostFailure {
    HostFailure {
        type_name: type_name.into(),
        message: message.into(),
    }
}

pub(crate) fn connector_error(message: impl Into<String>) -> HostFailure {
    failure("ConnectorError", message)
}

pub(crate) fn permission_error(message: impl Into<String>) -> HostFailure {
    failure("PermissionError", message)
}

pub(crate) fn grant_hint(package: &str, connector: &str, key: &str) -> String {
    format!(
        "package {package:?} may not use connector {connector:?}: add {connector:?} to [plugins.{}] {key} in app.toml",
        config::key(package)
    )
}

pub(crate) fn str_field<'v>(
    payload: &'v Value,
    method: &str,
    key: &str,
) -> Result<&'v str, HostFailure> {
    payload
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| connector_error(format!("{method}: the payload has no str {key:?}")))
}

/// `key`, a list of dicts (`sql.run_many`'s parameter sets).
pub(crate) fn list_of_maps(
    payload: &Value,
    method: &str,
    key: &str,
) -> Result<Vec<Vec<(String, Value)>>, HostFailure> {
    let Some(Value::List(items)) = payload.get(key) else {
        return Err(connector_error(format!(
            "{method}: the payload has no list {key:?} (one dict of parameters per run)"
        )));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Map(m) => Ok(m.clone()),
            other => Err(connector_error(format!(
                "{method}: {key}[{i}] is a {}, not a dict",
                other.type_name()
            ))),
        })
        .collect()
}

pub(crate) fn map_field(
    payload: &Value,
    method: &str,
    key: &str,
) -> Result<Vec<(String, Value)>, HostFailure> {
    match payload.get(key) {
        None | Some(Value::Nil) => Ok(Vec::new()),
        Some(Value::Map(m)) => Ok(m.clone()),
        Some(other) => Err(connector_error(format!(
            "{method}: {key:?} is a {}, not a dict",
            other.type_name()
        ))),
    }
}
