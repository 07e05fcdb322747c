//! What the unit tests share: requests as a worker sends them, connectors on a SQLite
//! database with one table.

use std::collections::BTreeMap;

use snakepit::{HostHandler, HostRequest, RawValue, Value};

use crate::{Connectors, ConnectorsConfig, Grant, Grants};

pub(crate) fn request(call_id: u64, method: &str, payload: Value) -> HostRequest {
    HostRequest {
        pool: "default".into(),
        worker: 0,
        call_id,
        reference: "txs.mod:f".into(),
        run_id: None,
        method: method.into(),
        payload: RawValue::encode(&payload),
    }
}

pub(crate) async fn sqlite_connectors(dir: &std::path::Path) -> Connectors {
    let toml = "[sql.billing]\nurl = \"sqlite://b.db?mode=rwc\"\n[sql.billing.queries]\ncount = \"SELECT count(*) AS n FROM t\"\n\"add:write\" = \"INSERT INTO t (x) VALUES (:x)\"\n";
    let cfg = ConnectorsConfig::parse(toml, &dir.join("connectors.toml"), dir, |_| None).unwrap();
    let mut m = BTreeMap::new();
    m.insert(
        "txs".to_owned(),
        Grant {
            raw_pools: Some(vec!["billing".into()]),
            ..Default::default()
        },
    );
    let c = Connectors::new(cfg, Grants::new(m), None).unwrap();
    let setup = Value::map([("pool", Value::from("billing"))]);
    let tx = c.handle(request(1, "tx.begin", setup)).await.unwrap();
    let id = tx.get("tx").cloned().unwrap();
    let ddl = Value::map([
        ("tx", id.clone()),
        ("sql", Value::from("CREATE TABLE t (x INTEGER)")),
    ]);
    c.handle(request(1, "tx.execute", ddl)).await.unwrap();
    c.handle(request(1, "tx.commit", Value::map([("tx", id)])))
        .await
        .unwrap();
    c
}

pub(crate) async fn count(c: &Connectors) -> Value {
    let q = Value::map([
        ("connector", Value::from("billing")),
        ("query", Value::from("count")),
    ]);
    c.handle(request(99, "sql.run", q)).await.unwrap()
}
