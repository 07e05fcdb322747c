//! The run history itself on SQLite and PostgreSQL: reopening (migrations run once),
//! listing by job with a limit, finding a run by an id prefix, the audit log, a run's
//! connector calls summed up and paged.

use serde_json::json;
use snakepit_state::{AuditEntry, Claim, NewRun, Owner, RunFilter, RunStatus, Trigger};

use crate::jobs::{at, open_state, Backend};

/// The claim of a run recorded owned by no one and not claimed yet (epoch 0).
pub fn unclaimed(id: &str) -> Claim {
    Claim {
        run_id: id.into(),
        epoch: 0,
    }
}

/// The claim of a manual run recorded by its own process (epoch 1).
pub fn owned(id: &str) -> Claim {
    Claim {
        run_id: id.into(),
        epoch: 1,
    }
}

pub fn new_run(id: &str, job: &str, minute: u32) -> NewRun {
    let t = at(&format!("2026-06-01T02:{minute:02}:00Z"));
    NewRun {
        id: id.into(),
        job: job.into(),
        trigger: Trigger::Schedule,
        session_user: "system".into(),
        params: json!({"region": "eu"}),
        scheduled_for: t,
        queued_at: t,
        steps: vec!["a".into(), "b".into()],
    }
}

async fn history(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_state(backend, dir.path()).await;
    let state = &store.state;
    assert!(state
        .insert_run(&new_run("20260601-020000-aaaaaa", "x", 0))
        .await
        .unwrap());
    assert!(state
        .insert_run(&new_run("20260601-020100-bbbbbb", "x", 1))
        .await
        .unwrap());
    assert!(state
        .insert_run(&new_run("20260601-020200-cccccc", "y", 2))
        .await
        .unwrap());
    // A second run of the same job at the same tick is not recorded.
    let twin = new_run("20260601-020000-dddddd", "x", 0);
    assert!(!state.insert_run(&twin).await.unwrap());

    let all = state.runs(&RunFilter::default()).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|r| &r.id[16..]).collect();
    assert_eq!(ids, ["cccccc", "bbbbbb", "aaaaaa"], "newest first");
    let x = state
        .runs(&RunFilter {
            job: Some("x".into()),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].id, "20260601-020100-bbbbbb");
    assert_eq!(x[0].params, json!({"region": "eu"}));
    assert_eq!(x[0].status, "queued");

    state
        .start_run(
            &unclaimed("20260601-020000-aaaaaa"),
            at("2026-06-01T02:00:01Z"),
        )
        .await
        .unwrap();
    state
        .finish_run(
            &unclaimed("20260601-020000-aaaaaa"),
            RunStatus::Failed,
            Some("why"),
            at("2026-06-01T02:00:03Z"),
        )
        .await
        .unwrap();
    let rec = state
        .run("20260601-0200")
        .await
        .unwrap()
        .expect("a unique prefix");
    assert_eq!(rec.run.id, "20260601-020000-aaaaaa");
    assert_eq!(rec.run.status, "failed");
    assert_eq!(rec.run.error.as_deref(), Some("why"));
    assert_eq!(rec.run.duration(chrono::Utc::now()).unwrap().as_secs(), 2);
    let steps: Vec<(&str, &str)> = rec
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(steps, [("a", "skipped"), ("b", "skipped")]);
    let e = state.run("20260601-02").await.unwrap_err();
    assert!(e.to_string().contains("names several runs"), "{e}");
    assert!(state.run("nope").await.unwrap().is_none());

    state
        .insert_audit(&[AuditEntry {
            time: at("2026-06-01T02:00:02Z"),
            package: "billing",
            call_id: 7,
            run_id: Some("20260601-020000-aaaaaa"),
            connector: "billing",
            target: "drafts-for-period",
            rows: Some(3),
            duration_us: 1500,
            outcome: "ok",
        }])
        .await
        .unwrap();
    let audit = state.audit(10).await.unwrap();
    assert_eq!(audit.len(), 1);
    let a = &audit[0];
    assert_eq!(
        (
            a.package.as_str(),
            a.call_id,
            a.target.as_str(),
            a.row_count,
            a.duration_us,
            a.outcome.as_str()
        ),
        ("billing", 7, "drafts-for-period", Some(3), 1500, "ok")
    );
    assert_eq!(a.run_id.as_deref(), Some("20260601-020000-aaaaaa"));
    store.close().await;
}

#[tokio::test]
async fn the_history_lists_finds_and_audits_sqlite() {
    history(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_history_lists_finds_and_audits_postgres() {
    history(Backend::Postgres).await;
}

/// 2,500 calls of a run over three targets (and one call of another run, and a row
/// of dropped records): the summary per target (counts, rows, errors, nearest-rank
/// p50/p99 over known durations) in first-call order, and pages of 1,000 in order.
async fn calls_summed_up_and_paged(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_state(backend, dir.path()).await;
    let state = &store.state;
    let run = "20260601-020000-aaaaaa";
    assert!(state.insert_run(&new_run(run, "x", 0)).await.unwrap());
    let t = at("2026-06-01T02:00:02Z");
    let call =
        |target: &'static str, rows: Option<u64>, duration_us: u64, outcome: &'static str| {
            AuditEntry {
                time: t,
                package: "billing",
                call_id: 7,
                run_id: Some(run),
                connector: "db",
                target,
                rows,
                duration_us,
                outcome,
            }
        };
    let mut entries = vec![call("first", Some(3), 10, "ok")];
    // "write": durations 1..=2000 µs in a shuffled order, every 100th denied.
    for i in 0..2000u64 {
        let d = (i * 7919) % 2000 + 1;
        let outcome = if i % 100 == 0 { "denied" } else { "ok" };
        let rows = (outcome == "ok").then_some(1);
        entries.push(call("write", rows, d, outcome));
    }
    // "api": 499 calls of 5 µs, no rows, and transactions: committed is no error.
    entries.extend((0..499).map(|_| call("api", None, 5, "http 503")));
    entries.push(call("transaction", Some(2), 40, "committed"));
    entries.push(AuditEntry::dropped(t, Some(run), 42));
    entries.push(AuditEntry {
        run_id: Some("another-run"),
        ..call("first", Some(1), 1, "ok")
    });
    state.insert_audit(&entries).await.unwrap();

    let rec = state.run(run).await.unwrap().unwrap();
    let s = &rec.connector_calls;
    let targets: Vec<&str> = s.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(targets, ["first", "write", "api", "transaction"]);
    let w = &s[1];
    assert_eq!(
        (w.package.as_str(), w.connector.as_str()),
        ("billing", "db")
    );
    assert_eq!((w.calls, w.rows, w.errors), (2000, Some(1980), 20));
    assert_eq!(w.total_us, 2000 * 2001 / 2);
    assert_eq!((w.p50_us, w.p99_us), (1000, 1980));
    assert_eq!(
        (s[0].calls, s[0].rows, s[0].p50_us, s[0].p99_us),
        (1, Some(3), 10, 10)
    );
    assert_eq!((s[2].calls, s[2].rows, s[2].errors), (499, None, 499));
    assert_eq!((s[2].p50_us, s[2].p99_us, s[2].total_us), (5, 5, 2495));
    assert_eq!((s[3].errors, s[3].rows), (0, Some(2)));
    assert_eq!(rec.connector_calls_dropped, 42);

    let mut after = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = state.calls(&run[..12], after, 1000).await.unwrap().unwrap();
        pages += 1;
        assert_eq!((page.run_id.as_str(), page.total), (run, 2502));
        seen.extend(page.calls.iter().map(|c| (c.id, c.target.clone())));
        match page.next_after {
            Some(n) => {
                assert_eq!(page.calls.len(), 1000);
                after = Some(n);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen.len(),
        2502,
        "every row of the run, the dropped one too"
    );
    assert!(seen.windows(2).all(|p| p[0].0 < p[1].0));
    assert_eq!(seen[0].1, "first");
    assert_eq!(seen[2501].1, "audit records dropped");
    // A page past the end is empty; a run with no calls has an empty summary.
    let end = state
        .calls(run, Some(seen[2501].0), 10)
        .await
        .unwrap()
        .unwrap();
    assert!(end.calls.is_empty() && end.next_after.is_none());
    assert!(state.insert_run(&new_run("r-quiet", "y", 1)).await.unwrap());
    let quiet = state.run("r-quiet").await.unwrap().unwrap();
    assert!(quiet.connector_calls.is_empty());
    assert_eq!(quiet.connector_calls_dropped, 0);
    assert!(state.calls("nope", None, 10).await.unwrap().is_none());
    store.close().await;
}

#[tokio::test]
async fn a_runs_calls_are_summed_up_and_paged_sqlite() {
    calls_summed_up_and_paged(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_runs_calls_are_summed_up_and_paged_postgres() {
    calls_summed_up_and_paged(Backend::Postgres).await;
}

#[tokio::test]
async fn reopening_keeps_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let first = open_state(Backend::Sqlite, dir.path()).await;
    assert!(first
        .state
        .insert_run(&new_run("r-1", "x", 0))
        .await
        .unwrap());
    first.close().await;
    assert!(dir.path().join(".snakepit/state.db").is_file());
    let again = open_state(Backend::Sqlite, dir.path()).await;
    assert_eq!(
        again.state.runs(&RunFilter::default()).await.unwrap().len(),
        1
    );
    again.close().await;
}

/// Several machines on one PostgreSQL: a manual run owned by another machine is left
/// alone while its lease holds and marked interrupted once the lease has run out (a
/// scheduled one is re-queued instead: `nodes.rs`).
#[tokio::test]
async fn a_manual_run_of_another_machine_is_interrupted_when_its_lease_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_state(Backend::Postgres, dir.path()).await;
    let state = &store.state;
    // The other machine (opened first: opening recovers against the real time).
    let elsewhere = store
        .node(dir.path(), Owner::parse("elsewhere/boot/4242/99").unwrap())
        .await;
    for (id, minute) in [("r-held", 0), ("r-lapsed", 1)] {
        let run = NewRun {
            trigger: Trigger::Manual,
            ..new_run(id, id, minute)
        };
        assert!(state.insert_run(&run).await.unwrap());
        state
            .start_run(&owned(id), at("2026-06-01T02:00:00Z"))
            .await
            .unwrap();
        state
            .start_step(&owned(id), 0, 1, at("2026-06-01T02:00:00Z"))
            .await
            .unwrap();
    }
    store
        .execute(
            "UPDATE runs SET owner = 'elsewhere/boot/4242/99'; \
                  UPDATE runs SET lease_until = '2026-06-01T02:05:00Z' WHERE id = 'r-held'; \
                  UPDATE runs SET lease_until = '2026-06-01T02:01:00Z' WHERE id = 'r-lapsed'",
        )
        .await;
    let recovered = state.recover(at("2026-06-01T02:02:00Z")).await.unwrap();
    assert_eq!(recovered.interrupted, ["r-lapsed"]);
    assert!(recovered.requeued.is_empty());
    let lapsed = state.run("r-lapsed").await.unwrap().unwrap();
    assert_eq!(lapsed.run.status, "interrupted");
    assert!(lapsed
        .run
        .error
        .unwrap()
        .contains("stopped renewing its lease"));
    assert_eq!(lapsed.steps[0].status, "interrupted");
    assert_eq!(lapsed.steps[1].status, "pending");
    let held = state.run("r-held").await.unwrap().unwrap();
    assert_eq!(held.run.status, "running");
    // Only its owner renews the lease, and renewing moves it: still held at 02:06.
    assert!(!state
        .renew_lease(&owned("r-held"), at("2026-06-01T02:10:00Z"))
        .await
        .unwrap());
    assert!(elsewhere
        .renew_lease(&owned("r-held"), at("2026-06-01T02:10:00Z"))
        .await
        .unwrap());
    elsewhere.close().await;
    assert_eq!(
        state.recover(at("2026-06-01T02:06:00Z")).await.unwrap(),
        Default::default()
    );
    store.close().await;
}
