//! One way for every task of the daemon to be told to stop: a [`Stop`] that the daemon keeps and
//! a [`StopSignal`] that the task waits on. The order in which the tasks are stopped is written in
//! one place, [`super::run`]'s module documentation and its `stop_in_order`.

use std::future::Future;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::error;

/// Asks a task to stop.
pub struct Stop(watch::Sender<bool>);

/// What a task waits on to know that it must stop.
#[derive(Clone)]
pub struct StopSignal(watch::Receiver<bool>);

/// A new stop request, not yet made.
pub fn stop_signal() -> (Stop, StopSignal) {
    let (tx, rx) = watch::channel(false);
    (Stop(tx), StopSignal(rx))
}

impl Stop {
    pub fn request(&self) {
        let _ = self.0.send(true);
    }
}

impl StopSignal {
    /// Completes once a stop is requested (at once if it already was, or if nobody can ask any
    /// more: a task must never outlive the daemon).
    pub async fn requested(mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }
}

/// A spawned task of the daemon and the means to stop it.
pub struct Task {
    name: &'static str,
    stop: Stop,
    handle: JoinHandle<()>,
}

impl Task {
    /// Spawns the future that `start` makes from the task's stop signal.
    pub fn spawn<F>(name: &'static str, start: impl FnOnce(StopSignal) -> F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, signal) = stop_signal();
        Task { name, stop, handle: tokio::spawn(start(signal)) }
    }

    /// Asks the task to stop and waits until it has.
    pub async fn stop(self) {
        self.stop.request();
        if let Err(e) = self.handle.await {
            error!("the {} task failed: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn a_task_runs_until_asked_and_is_waited_for() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let task = Task::spawn("test", move |stop| async move {
            stop.requested().await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            flag.store(true, Ordering::SeqCst);
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!done.load(Ordering::SeqCst), "it runs until asked");
        task.stop().await;
        assert!(done.load(Ordering::SeqCst), "stop waits for the end");
    }

    #[tokio::test]
    async fn a_signal_whose_stop_is_gone_completes() {
        let (stop, signal) = stop_signal();
        drop(stop);
        signal.requested().await;
    }
}
