//! Several nodes on one PostgreSQL (README, "Several machines"): two "nodes" in this
//! process, each a `State` opened as its own owner (on its own host, so each judges the
//! other by its lease), share one schema. A due tick runs once, on one of them; queued runs
//! are claimed once (`FOR UPDATE SKIP LOCKED`); a run whose node stopped renewing its lease
//! is re-queued and finished by the other, at most `MAX_REQUEUES` times. On SQLite (one
//! node) such a run is interrupted. A node that finds its run taken over stops it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use snakepit_host::Host;
use snakepit_jobs::{Clock, JobSet, ManualClock, RunRequest, Runner, Scheduler, SYSTEM_USER};
use snakepit_state::{Claim, NewRun, Owner, RunFilter, State, Trigger, MAX_REQUEUES};
use tokio::sync::watch;

use crate::jobs::{at, jobs_install, open_state, Backend, TestState};
use crate::state::new_run;
use crate::support::wait_for;

/// A node's owner: its own host name, this process.
fn owner(node: &str) -> Owner {
    Owner {
        host: node.into(),
        boot_id: "test-boot".into(),
        pid: std::process::id(),
        start: 1,
    }
}

/// `runs` of a state, polled until `pred` holds for one of them (20 s at most).
async fn run_where(
    state: &State,
    what: &str,
    pred: impl Fn(&snakepit_state::Run) -> bool,
) -> snakepit_state::Run {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let runs = state.runs(&RunFilter::default()).await.unwrap();
        if let Some(r) = runs.into_iter().find(|r| pred(r)) {
            return r;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two nodes with workers: the jobs fixture, one host (the nodes' step caller), the
/// shared PostgreSQL schema and a node state each.
struct Nodes {
    _dir: tempfile::TempDir,
    host: Arc<Host>,
    jobs: JobSet,
    store: TestState,
    a: State,
    b: State,
}

async fn nodes() -> Nodes {
    let dir = jobs_install("");
    let install = snakepit_host::Install::load(Some(dir.path()), None).unwrap();
    let jobs = JobSet::load(&install).expect("the fixture jobs load");
    let store = open_state(Backend::Postgres, dir.path()).await;
    let a = store.node(dir.path(), owner("node-a")).await;
    let b = store.node(dir.path(), owner("node-b")).await;
    let host = Arc::new(
        Host::start_checked(install)
            .await
            .expect("the install opens"),
    );
    Nodes {
        _dir: dir,
        host,
        jobs,
        store,
        a,
        b,
    }
}

impl Nodes {
    fn scheduler(&self, state: &State, clock: &Arc<ManualClock>) -> Scheduler {
        Scheduler::new(
            self.host.clone(),
            state.clone(),
            clock.clone(),
            self.jobs.clone(),
        )
    }

    async fn close(self) {
        self.a.close().await;
        self.b.close().await;
        self.host.shutdown(Duration::from_secs(2)).await;
        self.store.close().await;
    }
}

/// A stop signal for `Scheduler::run` and its trigger.
fn stopper() -> (watch::Sender<bool>, impl std::future::Future<Output = ()>) {
    let (tx, mut rx) = watch::channel(false);
    (tx, async move {
        let _ = rx.wait_for(|s| *s).await;
    })
}

#[tokio::test]
async fn a_due_tick_runs_exactly_once_on_one_of_two_nodes() {
    let n = nodes().await;
    let clock = Arc::new(ManualClock::new(at("2026-03-01T05:59:30Z")));
    let (sched_a, sched_b) = (n.scheduler(&n.a, &clock), n.scheduler(&n.b, &clock));
    let (stop_tx, stop_a) = stopper();
    let stop_b = {
        let mut rx = stop_tx.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let driver = async {
        wait_for("both nodes to sleep", Duration::from_secs(10), || {
            clock.sleeping() == 2
        })
        .await;
        clock.set(at("2026-03-01T06:00:00Z"));
        let run = run_where(&n.store.state, "the 06:00 run to succeed", |r| {
            r.status == "succeeded"
        })
        .await;
        assert_eq!(run.scheduled_for, at("2026-03-01T06:00:00Z"));
        assert!(
            [owner("node-a"), owner("node-b")].contains(&Owner::parse(&run.owner).unwrap()),
            "{}",
            run.owner
        );
        // Both nodes looked again after the tick and sleep: still one run.
        wait_for("both nodes to sleep again", Duration::from_secs(10), || {
            clock.sleeping() == 2
        })
        .await;
        let runs = n.store.state.runs(&RunFilter::default()).await.unwrap();
        assert_eq!(runs.len(), 1, "{runs:#?}");
        stop_tx.send(true).unwrap();
    };
    tokio::join!(sched_a.run(stop_a), sched_b.run(stop_b), driver);
    n.close().await;
}

/// `count` queued scheduled runs of distinct jobs, a minute apart from 02:00.
async fn queue_runs(state: &State, count: u32) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let id = format!("20260601-02{i:02}00-{i:06x}");
        assert!(state
            .insert_run(&new_run(&id, &format!("job-{i}"), i))
            .await
            .unwrap());
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn queued_runs_are_claimed_once_across_nodes_skipping_locked_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_state(Backend::Postgres, dir.path()).await;
    let a = store.node(dir.path(), owner("node-a")).await;
    let b = store.node(dir.path(), owner("node-b")).await;
    let now = at("2026-06-01T03:00:00Z");
    let ids = queue_runs(&store.state, 2).await;

    // A claim skips a run another transaction has locked, without waiting for it.
    let pool = sqlx::PgPool::connect(&store.url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM runs WHERE id = $1 FOR UPDATE")
        .bind(&ids[0])
        .execute(&mut *tx)
        .await
        .unwrap();
    let claimed = tokio::time::timeout(Duration::from_secs(5), a.claim_run(now))
        .await
        .expect("a claim does not wait for a locked run")
        .unwrap()
        .expect("the unlocked run");
    assert_eq!(claimed.run.id, ids[1]);
    assert_eq!(claimed.run.status, "running");
    assert_eq!(Owner::parse(&claimed.run.owner), Some(owner("node-a")));
    assert!(
        b.claim_run(now).await.unwrap().is_none(),
        "the rest is locked"
    );
    tx.rollback().await.unwrap();
    pool.close().await;
    let first = b.claim_run(now).await.unwrap().expect("unlocked now");
    assert_eq!(first.run.id, ids[0]);

    // Many runs, two nodes claiming at once: each run is claimed exactly once.
    let ids = {
        let mut more = Vec::new();
        for i in 10..40 {
            let id = format!("20260602-02{i:02}00-{i:06x}");
            let run = NewRun {
                queued_at: at("2026-06-02T02:00:00Z") + chrono::Duration::minutes(i),
                ..new_run(&id, &format!("job-{i}"), 0)
            };
            assert!(store.state.insert_run(&run).await.unwrap());
            more.push(id);
        }
        more
    };
    async fn drain(state: &State, now: DateTime<Utc>) -> Vec<String> {
        let mut got = Vec::new();
        while let Some(c) = state.claim_run(now).await.unwrap() {
            got.push(c.run.id);
            tokio::task::yield_now().await;
        }
        got
    }
    let (by_a, by_b) = tokio::join!(drain(&a, now), drain(&b, now));
    let mut all: Vec<String> = by_a.iter().chain(&by_b).cloned().collect();
    all.sort();
    assert_eq!(
        all, ids,
        "every run claimed once (a: {by_a:?}, b: {by_b:?})"
    );
    for (node, got) in [("node-a", &by_a), ("node-b", &by_b)] {
        for id in got {
            let run = store.state.run(id).await.unwrap().unwrap().run;
            assert_eq!(Owner::parse(&run.owner), Some(owner(node)), "{id}");
        }
    }

    // One scheduled run per job at a time: a queued run of a job that runs on node A
    // is not claimed until that run ends.
    let next = NewRun {
        queued_at: at("2026-06-03T00:00:00Z"),
        ..new_run("20260603-000000-000001", "job-0", 30)
    };
    assert!(store.state.insert_run(&next).await.unwrap());
    assert!(
        b.claim_run(now).await.unwrap().is_none(),
        "job-0 is running"
    );
    b.finish_run(
        &first.claim,
        snakepit_state::RunStatus::Succeeded,
        None,
        now,
    )
    .await
    .unwrap();
    let c = a.claim_run(now).await.unwrap().expect("job-0 is free");
    assert_eq!(c.run.id, next.id);
    a.close().await;
    b.close().await;
    store.close().await;
}

#[tokio::test]
async fn a_run_of_a_node_that_stopped_renewing_is_requeued_and_finished_by_another() {
    let n = nodes().await;
    let clock = Arc::new(ManualClock::new(at("2026-03-01T05:59:30Z")));
    // Node A queues and claims a run of "hourly", starts its step, then stops: it
    // neither runs it nor renews its lease.
    let runner_a = Runner::new(n.host.clone(), n.a.clone(), clock.clone());
    let req = RunRequest {
        job: "hourly".into(),
        trigger: Trigger::Schedule,
        scheduled_for: at("2026-03-01T05:00:00Z"),
        params: vec![],
        session_user: SYSTEM_USER.into(),
    };
    let queued = runner_a.enqueue(&n.jobs, req).await.unwrap().unwrap();
    let claimed = runner_a.claim(&n.jobs).await.unwrap().expect("A claims it");
    assert_eq!(claimed.id, queued.id);
    let claim = Claim {
        run_id: queued.id.clone(),
        epoch: claimed.epoch(),
    };
    n.a.start_step(&claim, 0, 1, clock.now()).await.unwrap();

    let sched_b = n.scheduler(&n.b, &clock);
    let (stop_tx, stop) = stopper();
    let driver = async {
        // B looks while A's lease holds (until 06:00:30): the run stays A's.
        wait_for("node B to sleep", Duration::from_secs(10), || {
            clock.sleeping() == 1
        })
        .await;
        let rec = n.b.run(&queued.id).await.unwrap().unwrap();
        assert_eq!(rec.run.status, "running");
        assert_eq!(Owner::parse(&rec.run.owner), Some(owner("node-a")));
        // The lease runs out; B's next look re-queues the run, claims it, finishes it.
        clock.set(at("2026-03-01T06:01:00Z"));
        run_where(&n.b, "node B to finish the run", |r| {
            r.id == queued.id && r.status == "succeeded"
        })
        .await;
        stop_tx.send(true).unwrap();
    };
    tokio::join!(sched_b.run(stop), driver);
    let rec = n.b.run(&queued.id).await.unwrap().unwrap();
    assert_eq!(Owner::parse(&rec.run.owner), Some(owner("node-b")));
    assert_eq!(rec.run.scheduled_for, at("2026-03-01T05:00:00Z"));
    assert_eq!(rec.steps[0].status, "succeeded");
    assert_eq!(rec.steps[0].attempts, 2, "A's attempt counts");
    let requeued: Vec<&str> = rec
        .logs
        .iter()
        .filter(|l| l.message.starts_with("re-queued"))
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(requeued.len(), 1, "{:#?}", rec.logs);
    assert!(
        requeued[0].starts_with(&format!(
            "re-queued from {} (1 of at most {MAX_REQUEUES}): its supervisor",
            owner("node-a")
        )) && requeued[0].contains("stopped renewing its lease"),
        "{}",
        requeued[0]
    );
    n.close().await;
}

/// Claims the run as `node` at `t`, then recovers it as `other` after the lease.
async fn claim_and_lapse(
    node: &State,
    other: &State,
    t: DateTime<Utc>,
) -> snakepit_state::Recovered {
    node.claim_run(t).await.unwrap().expect("the queued run");
    let lapsed = t + chrono::Duration::seconds(61);
    assert_eq!(
        other.recover(t).await.unwrap(),
        Default::default(),
        "not while the lease holds"
    );
    other.recover(lapsed).await.unwrap()
}

#[tokio::test]
async fn a_run_that_kills_every_node_is_requeued_at_most_three_times() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_state(Backend::Postgres, dir.path()).await;
    let a = store.node(dir.path(), owner("node-a")).await;
    let b = store.node(dir.path(), owner("node-b")).await;
    let id = queue_runs(&store.state, 1).await.remove(0);
    let mut t = at("2026-06-01T03:00:00Z");
    for nth in 1..=MAX_REQUEUES {
        let (node, other) = if nth % 2 == 1 { (&a, &b) } else { (&b, &a) };
        let got = claim_and_lapse(node, other, t).await;
        assert_eq!(got.requeued, [id.as_str()], "re-queue {nth}");
        let rec = store.state.run(&id).await.unwrap().unwrap();
        assert_eq!(
            (rec.run.status.as_str(), rec.run.owner.as_str()),
            ("queued", "")
        );
        assert!(rec.steps.iter().all(|s| s.status == "pending"));
        t += chrono::Duration::minutes(5);
    }
    // The node that lost the run cannot renew its lease any more (its runner stops).
    // Its claim was the second (epochs: claimed 1, re-queued 2, claimed by B 3, ...).
    let b_claim = Claim {
        run_id: id.clone(),
        epoch: 3,
    };
    assert!(!b.renew_lease(&b_claim, t).await.unwrap());
    let got = claim_and_lapse(&b, &a, t).await;
    assert_eq!(got.interrupted, [id.as_str()]);
    let rec = store.state.run(&id).await.unwrap().unwrap();
    assert_eq!(rec.run.status, "interrupted");
    let error = rec.run.error.unwrap();
    assert!(
        error.contains("stopped renewing its lease") && error.contains("re-queued 3 times already"),
        "{error}"
    );
    let notes = rec
        .logs
        .iter()
        .filter(|l| l.message.starts_with("re-queued from"))
        .count();
    assert_eq!(notes, 3);
    a.close().await;
    b.close().await;
    store.close().await;
}

/// SQLite serves one node: a scheduled run whose owner is gone is interrupted, not
/// re-queued.
#[tokio::test]
async fn on_sqlite_a_scheduled_run_of_a_gone_owner_is_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_state(Backend::Sqlite, dir.path()).await;
    let a = store.node(dir.path(), owner("node-a")).await;
    let id = queue_runs(&store.state, 1).await.remove(0);
    let got = claim_and_lapse(&a, &store.state, at("2026-06-01T03:00:00Z")).await;
    assert_eq!(got.interrupted, [id.as_str()]);
    assert!(got.requeued.is_empty());
    let rec = store.state.run(&id).await.unwrap().unwrap();
    assert_eq!(rec.run.status, "interrupted");
    a.close().await;
    store.close().await;
}

/// A node that was only slow (its run re-queued meanwhile) finds out at its next
/// renewal: it cancels the call and writes nothing more (fenced), leaving the run to
/// its new owner.
#[tokio::test]
async fn a_node_that_lost_its_run_cancels_the_call_and_leaves_the_run_alone() {
    let n = nodes().await;
    let clock = Arc::new(ManualClock::new(at("2027-01-01T00:00:00Z")));
    let runner_a = Runner::new(n.host.clone(), n.a.clone(), clock.clone())
        .renew_every(Duration::from_millis(50));
    let req = RunRequest {
        job: "new-year".into(),
        trigger: Trigger::Schedule,
        scheduled_for: clock.now(),
        params: vec![],
        session_user: SYSTEM_USER.into(),
    };
    let id = runner_a.enqueue(&n.jobs, req).await.unwrap().unwrap().id;
    let run = runner_a.claim(&n.jobs).await.unwrap().expect("A claims it");
    let (_halt, halt_rx) = watch::channel(None);
    let executing = tokio::spawn({
        let runner = runner_a.clone();
        async move { runner.execute(run, None, halt_rx).await }
    });
    let until = Instant::now() + Duration::from_secs(20);
    while !n
        .a
        .run(&id)
        .await
        .unwrap()
        .unwrap()
        .logs
        .iter()
        .any(|l| l.message.starts_with("hanging"))
    {
        assert!(Instant::now() < until, "the step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Seen from B ten minutes later, A's lease ran out: B re-queues the run.
    let later = clock.now() + chrono::Duration::minutes(10);
    assert_eq!(n.b.recover(later).await.unwrap().requeued, [id.as_str()]);
    let status = tokio::time::timeout(Duration::from_secs(20), executing)
        .await
        .expect("A stops the run at its next renewal")
        .unwrap()
        .unwrap();
    assert_eq!(status, snakepit_state::RunStatus::Interrupted);
    let rec = n.b.run(&id).await.unwrap().unwrap();
    assert_eq!(
        (rec.run.status.as_str(), rec.run.owner.as_str()),
        ("queued", "")
    );
    assert_eq!(rec.steps[0].status, "pending");
    // Its note on stopping is fenced off too: the record is the next execution's.
    assert!(
        rec.logs
            .iter()
            .all(|l| !l.message.starts_with("step stopped")),
        "{:#?}",
        rec.logs
    );
    n.close().await;
}

/// Two nodes claiming two queued runs of one job at the same moment: the one whose
/// claim commits second is refused by the index of one running scheduled run per job,
/// looks again, and finds nothing to claim.
#[tokio::test]
async fn two_runs_of_one_job_claimed_at_once_still_run_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_state(Backend::Postgres, dir.path()).await;
    let b = store.node(dir.path(), owner("node-b")).await;
    let (first, second) = ("20260601-020000-000001", "20260601-020100-000002");
    for (id, minute) in [(first, 0), (second, 1)] {
        assert!(store
            .state
            .insert_run(&new_run(id, "job-0", minute))
            .await
            .unwrap());
    }
    // Node A's claim of the first run, caught before it commits.
    let pool = sqlx::PgPool::connect(&store.url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE runs SET status = 'running', owner = $1 WHERE id = $2")
        .bind(owner("node-a").to_string())
        .bind(first)
        .execute(&mut *tx)
        .await
        .unwrap();
    // B skips the locked run, takes the second, and waits on the index for A.
    let now = at("2026-06-01T03:00:00Z");
    let claiming = tokio::spawn({
        let b = b.clone();
        async move { b.claim_run(now).await }
    });
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE 'UPDATE runs SET status = ''running'', owner = $1, lease_until%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < until, "B's claim never waited for A's");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.commit().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), claiming)
        .await
        .expect("B's claim ends once A's commits")
        .unwrap()
        .unwrap();
    assert!(got.is_none(), "job-0 runs on A: {got:?}");
    let rec = store.state.run(second).await.unwrap().unwrap();
    assert_eq!(
        (rec.run.status.as_str(), rec.run.owner.as_str()),
        ("queued", "")
    );
    pool.close().await;
    b.close().await;
    store.close().await;
}

/// Fencing: once the run of a node whose lease ran out is recovered (and, on
/// PostgreSQL, re-queued and claimed by another node), every write of the node that lost
/// it is refused, and the record holds the new execution's writes alone.
async fn a_node_that_lost_its_lease_cannot_write_to_the_run(backend: Backend) {
    use snakepit_state::{LogLine, RunStatus, StateError, StepEnd, StepStatus};
    let dir = tempfile::tempdir().unwrap();
    let store = open_state(backend, dir.path()).await;
    let a = store.node(dir.path(), owner("node-a")).await;
    let b = store.node(dir.path(), owner("node-b")).await;
    let id = queue_runs(&store.state, 1).await.remove(0);
    let t = at("2026-06-01T03:00:00Z");
    let stale = a.claim_run(t).await.unwrap().expect("the queued run").claim;
    a.start_step(&stale, 0, 1, t).await.unwrap();
    let lapsed = t + chrono::Duration::seconds(61);
    let recovered = b.recover(lapsed).await.unwrap();
    let fresh = if backend == Backend::Postgres {
        assert_eq!(recovered.requeued, [id.as_str()]);
        let fresh = b.claim_run(lapsed).await.unwrap().expect("re-queued").claim;
        assert!(fresh.epoch > stale.epoch, "{fresh:?} after {stale:?}");
        Some(fresh)
    } else {
        assert_eq!(recovered.interrupted, [id.as_str()]);
        None
    };
    let line = |message: &str| LogLine {
        run_id: id.clone(),
        step: Some("a".into()),
        attempt: Some(1),
        time: t,
        level: 20,
        logger: "job.x".into(),
        message: message.into(),
    };
    let ended = |result: &str| StepEnd {
        status: StepStatus::Succeeded,
        attempts: 1,
        result: Some(serde_json::json!(result)),
        error: None,
        usage: None,
    };
    let fenced = |r: Result<(), StateError>| {
        assert!(matches!(r, Err(StateError::Fenced { .. })), "{r:?}");
    };
    fenced(a.start_run(&stale, t).await);
    fenced(a.start_step(&stale, 0, 2, t).await);
    fenced(a.finish_step(&stale, 0, &ended("stale"), t).await);
    fenced(a.append_logs(&stale, &[line("stale")]).await);
    fenced(a.finish_run(&stale, RunStatus::Succeeded, None, t).await);
    fenced(
        a.finish_run(&stale, RunStatus::Interrupted, Some("stale"), t)
            .await,
    );
    assert!(!a.renew_lease(&stale, lapsed).await.unwrap());
    if let Some(fresh) = &fresh {
        b.start_step(fresh, 0, 1, lapsed).await.unwrap();
        b.append_logs(fresh, &[line("fresh")]).await.unwrap();
        b.finish_step(fresh, 0, &ended("fresh"), lapsed)
            .await
            .unwrap();
        b.finish_run(fresh, RunStatus::Succeeded, None, lapsed)
            .await
            .unwrap();
    }
    let rec = store.state.run(&id).await.unwrap().unwrap();
    assert!(
        rec.logs.iter().all(|l| l.message != "stale"),
        "{:#?}",
        rec.logs
    );
    match fresh {
        Some(fresh) => {
            assert_eq!(rec.run.status, "succeeded");
            assert_eq!(Owner::parse(&rec.run.owner), Some(owner("node-b")));
            assert_eq!(rec.run.epoch, fresh.epoch);
            assert_eq!(rec.steps[0].result, Some(serde_json::json!("fresh")));
            assert_eq!(rec.steps[0].epoch, fresh.epoch);
            assert!(rec.logs.iter().any(|l| l.message == "fresh"));
        }
        None => {
            assert_eq!(rec.run.status, "interrupted");
            assert_eq!(rec.steps[0].status, "interrupted");
            assert_eq!(rec.steps[0].result, None);
        }
    }
    a.close().await;
    b.close().await;
    store.close().await;
}

#[tokio::test]
async fn a_node_that_lost_its_lease_cannot_write_to_the_run_postgres() {
    a_node_that_lost_its_lease_cannot_write_to_the_run(Backend::Postgres).await;
}

#[tokio::test]
async fn a_node_that_lost_its_lease_cannot_write_to_the_run_sqlite() {
    a_node_that_lost_its_lease_cannot_write_to_the_run(Backend::Sqlite).await;
}

/// Waits up to 10 s for the next wake-up.
async fn woken(w: &mut snakepit_state::Wakeups) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(10), w.next()).await
}

/// LISTEN/NOTIFY: a run queued or ended by any node wakes the listeners of its schema,
/// and only those.
#[tokio::test]
async fn queued_and_ended_runs_wake_the_nodes_of_their_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_state(Backend::Postgres, dir.path()).await;
    let a = store.node(dir.path(), owner("node-a")).await;
    let mut wakeups = a.wakeups().await.unwrap().expect("PostgreSQL listens");
    let id = queue_runs(&store.state, 1).await.remove(0);
    woken(&mut wakeups)
        .await
        .expect("a queued run wakes the node");
    let claim = store
        .state
        .claim_run(at("2026-06-01T03:00:00Z"))
        .await
        .unwrap()
        .expect("the run")
        .claim;
    store
        .state
        .finish_run(
            &claim,
            snakepit_state::RunStatus::Succeeded,
            None,
            at("2026-06-01T03:00:01Z"),
        )
        .await
        .unwrap();
    woken(&mut wakeups)
        .await
        .expect("an ended run wakes the node");
    // Another schema's run does not; this schema's next one does.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open_state(Backend::Postgres, other_dir.path()).await;
    queue_runs(&other.state, 1).await;
    let second = NewRun {
        queued_at: at("2026-06-02T00:00:00Z"),
        ..new_run("20260602-000000-000002", "job-9", 0)
    };
    assert!(store.state.insert_run(&second).await.unwrap());
    woken(&mut wakeups).await.expect("the second run wakes it");
    let run = store.state.run(&id).await.unwrap().unwrap().run;
    assert_eq!(run.status, "succeeded");
    drop(wakeups);
    other.close().await;
    a.close().await;
    store.close().await;
    let sqlite = open_state(Backend::Sqlite, dir.path()).await;
    assert!(sqlite.state.wakeups().await.unwrap().is_none());
    sqlite.close().await;
}

/// Each node records itself; one not seen for its lease is lost; a clean stop removes it.
#[tokio::test]
async fn nodes_record_themselves_and_are_lost_after_their_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_state(Backend::Postgres, dir.path()).await;
    let a = store.node(dir.path(), owner("node-a")).await;
    let b = store
        .node(dir.path(), owner("node-b"))
        .await
        .with_lease(Duration::from_secs(30));
    let t = at("2026-06-01T03:00:00Z");
    a.heartbeat("1.2.3", t, 2, t).await.unwrap();
    b.heartbeat("1.2.3", t, 0, t).await.unwrap();
    a.heartbeat("1.2.3", t, 3, t + chrono::Duration::seconds(10))
        .await
        .unwrap();
    let later = t + chrono::Duration::seconds(20);
    let nodes = store.state.nodes(later).await.unwrap();
    let seen: Vec<(&str, i64, bool)> = nodes
        .iter()
        .map(|n| (n.host.as_str(), n.runs, n.lost))
        .collect();
    // At 20 s both were seen within their lease; at 26 s A (15 s, seen at 10 s) is lost.
    assert_eq!(seen, [("node-a", 3, false), ("node-b", 0, false)]);
    let nodes = store
        .state
        .nodes(t + chrono::Duration::seconds(26))
        .await
        .unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.lost).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(nodes[0].id, owner("node-a").to_string());
    assert_eq!(
        (nodes[0].pid, nodes[0].version.as_str()),
        (i64::from(std::process::id()), "1.2.3")
    );
    a.leave().await.unwrap();
    let nodes = store.state.nodes(later).await.unwrap();
    assert_eq!(nodes.len(), 1);
    a.close().await;
    b.close().await;
    store.close().await;
}
