//! The outbox's two gauges for the metrics endpoint: how many replies wait, and the age of the
//! oldest. The outbox says when it changed; this task scans it and sets the gauges, off the
//! milter's path, so that the metrics module needs to know nothing about the outbox.

use super::store::{self, Outbox};
use crate::metrics;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the gauges are refreshed when nothing happens, so that the age moves.
pub const TICK: Duration = Duration::from_secs(10);
/// The shortest time between two scans, however busy the outbox.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Keeps the outbox gauges current until `stop` completes: a scan at start, after each change (at
/// most one a second) and every [`TICK`] otherwise. The scans read the directory in a blocking
/// task.
pub async fn watch(outbox: Arc<Outbox>, stop: impl Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    loop {
        let o = outbox.clone();
        let scan = tokio::task::spawn_blocking(move || (o.depth(), o.oldest_age(SystemTime::now())));
        if let Ok((depth, oldest)) = scan.await {
            metrics::outbox_gauges(depth, oldest);
        }
        let changed = async {
            tokio::time::sleep(MIN_GAP).await;
            store::CHANGED.notified().await;
        };
        tokio::select! {
            () = &mut stop => break,
            () = changed => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}
