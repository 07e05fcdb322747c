//! Integration tests: real CPython workers against the fixture plugins in
//! `tests/plugins/`. One binary, a module per area.

mod support;

mod calls;
mod chaos;
mod connectors;
mod dispatch;
mod host;
mod hostile;
mod isolation;
mod jobs;
mod lifecycle;
mod logs;
mod nodes;
mod plugin_host;
mod reload;
mod state;
mod usage;
