//! Log records, prints and fd-level output reach `Call::logs` tagged with the call.

use std::time::Duration;

use snakepit::{Call, LogRecord, PoolBuilder};
use tokio::sync::mpsc;

use crate::support::{both_launchers, builder};

/// Receives records until one satisfies `pred` (within `deadline`); returns all so far.
async fn collect_until(
    rx: &mut mpsc::UnboundedReceiver<LogRecord>,
    got: &mut Vec<LogRecord>,
    what: &str,
    pred: impl Fn(&LogRecord) -> bool,
) {
    if got.iter().any(&pred) {
        return;
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(rec)) => {
                let hit = pred(&rec);
                got.push(rec);
                if hit {
                    return;
                }
            }
            Ok(None) | Err(_) => panic!("no record {what}; got {got:#?}"),
        }
    }
}

fn find<'a>(got: &'a [LogRecord], logger: &str, message: &str) -> &'a LogRecord {
    got.iter()
        .find(|r| r.logger == logger && r.message == message)
        .unwrap_or_else(|| panic!("no record {logger}: {message:?} in {got:#?}"))
}

#[tokio::test]
async fn logging_records_and_prints_carry_the_call_id() {
    let pool = builder().workers(2).build().await.unwrap();
    let (tx_a, mut rx_a) = mpsc::unbounded_channel();
    let (tx_b, mut rx_b) = mpsc::unbounded_channel();
    let (a, b) = tokio::join!(
        pool.submit(Call::new("fx.logs:mixed").kwarg("tag", "A").logs(tx_a)),
        pool.submit(Call::new("fx.logs:mixed").kwarg("tag", "B").logs(tx_b)),
    );
    a.unwrap();
    b.unwrap();
    let mut ids = Vec::new();
    for (tag, rx) in [("A", &mut rx_a), ("B", &mut rx_b)] {
        let mut got = Vec::new();
        collect_until(rx, &mut got, "to stderr", |r| r.logger == "stderr").await;
        while let Ok(r) = rx.try_recv() {
            got.push(r);
        }
        let info = find(&got, "fx.logs", &format!("info record {tag}"));
        assert_eq!(info.level, 20);
        assert!(info.time > 1.6e9, "{info:?}");
        assert_eq!(
            find(&got, "fx.logs", &format!("warning record {tag}")).level,
            30
        );
        let exc = find(&got, "fx.logs", &format!("with traceback {tag}"));
        assert_eq!(exc.level, 40);
        let text = exc.exc_text.as_deref().unwrap_or("");
        assert!(text.contains("ValueError: logged failure"), "{exc:?}");
        assert_eq!(find(&got, "stdout", &format!("printed {tag}")).level, 20);
        assert_eq!(find(&got, "stderr", &format!("to stderr {tag}")).level, 30);
        // Every record is this call's, none the other's.
        let id = got[0].call_id.expect("records carry the call id");
        for r in &got {
            assert_eq!(r.call_id, Some(id), "{r:?}");
            assert!(r.message.ends_with(tag), "{r:?}");
        }
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}

both_launchers!(fd_level_output_arrives_tagged_with_the_call);

async fn fd_level_output_arrives_tagged_with_the_call(b: PoolBuilder) {
    let pool = b.build().await.unwrap();
    // Several calls: a line that is read only after its call ended is lost to the call's
    // log channel, and that race must not show in any of them.
    for i in 0..10 {
        let tag = format!("call {i}");
        let tag = tag.as_str();
        let (tx, mut rx) = mpsc::unbounded_channel();
        pool.submit(Call::new("fx.logs:fd_output").kwarg("tag", tag).logs(tx))
            .await
            .unwrap();
        let mut got = Vec::new();
        let out = format!("raw stdout {tag}");
        let err = format!("raw stderr {tag}");
        collect_until(&mut rx, &mut got, &out, |r| r.message == out).await;
        collect_until(&mut rx, &mut got, &err, |r| r.message == err).await;
        let o = find(&got, "fd.stdout", &out);
        let e = find(&got, "fd.stderr", &err);
        assert!(o.call_id.is_some() && o.call_id == e.call_id, "{o:?} {e:?}");
        assert_eq!((o.level, e.level), (20, 30));
    }
}
