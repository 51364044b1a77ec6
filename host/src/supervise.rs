//! Long-running tasks that outlive a panic. A bug that panics in a
//! connector's dispatch loop or a background task (heartbeat, config sync,
//! retention, lease rescue) would otherwise end that task silently: the
//! process stays up, `/healthz` answers, and a connector stops delivering.
//! Under supervision the task is logged, counted
//! (`switchboard_task_panics_total{task}`) and started again, after a
//! backoff that grows while it keeps failing (1 s doubling to 60 s; back to
//! 1 s once it has run for a minute).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A task that ran this long before panicking starts again after the
/// first backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs the task `make` builds until it returns, building and running it
/// again whenever it panics, unless `stop` has turned true. `task` names it
/// in the log and the metric (a bounded label: a kind and a connector name).
pub async fn supervised<F, Fut>(task: String, mut stop: watch::Receiver<bool>, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let mut run = Abort(tokio::spawn(make()));
        let panic = match (&mut run.0).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => panic_message(e.into_panic()),
            // Cancelled: the runtime is going away.
            Err(_) => return,
        };
        crate::metrics::global().task_panicked(&task);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::error!(
            task = %task,
            panic = %panic,
            restart_in_ms = backoff.as_millis() as u64,
            "a gateway task panicked (a bug: please report it with this line); starting it again"
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Spawns [`supervised`] on its own task.
pub fn spawn<F, Fut>(
    task: String,
    stop: watch::Receiver<bool>,
    make: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(supervised(task, stop, make))
}

/// The task's handle; aborts the task if the supervisor itself is dropped,
/// so a supervised task never outlives its supervisor.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a panic said, if it said it with a string.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => "(a panic without a message)".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_task_that_panics_is_started_again_and_one_that_returns_is_not() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (_stop, rx) = watch::channel(false);
        let counted = runs.clone();
        supervised("test:panics-once".into(), rx, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("first run fails");
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        let mut text = String::new();
        crate::metrics::global().render(&mut text);
        assert!(
            text.contains("switchboard_task_panics_total{task=\"test:panics-once\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn no_restart_once_stopped() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (stop, rx) = watch::channel(false);
        stop.send(true).unwrap();
        let counted = runs.clone();
        supervised("test:stopped".into(), rx, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { panic!("always") }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn panic_messages_are_read_from_either_string_kind() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(7)), "(a panic without a message)");
    }
}
