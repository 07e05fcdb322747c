//! Integration tests: real CPython workers against the fixture plugins in
//! `tests/plugins/`. One binary, a module per area.

mod calls;
mod support;
