//! CPU-bound work off the async runtime: a bounded pool of blocking threads
//! ([`BlockingPool`]), and [`OnThreads`], which runs a synchronous handler there. While a fit
//! takes a minute on the pool, the runtime keeps polling, heartbeating and running other stages.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::job::{Cx, Handler, Job, Outcome};

/// Runs closures on at most `threads` blocking threads at once; the rest wait their turn.
#[derive(Clone)]
pub struct BlockingPool {
    permits: Arc<Semaphore>,
}

/// The work panicked; the payload's text when it had one.
#[derive(Debug, thiserror::Error)]
#[error("blocking work panicked: {0}")]
pub struct Panicked(pub String);

impl BlockingPool {
    pub fn new(threads: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(threads.max(1))),
        }
    }

    /// Runs `work` on a blocking thread once one of the pool's slots is free. A panic is
    /// returned, not propagated, so the caller decides what it means.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Panicked> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        // The permit moves with the work: a caller that stops waiting (a timeout, shutdown)
        // does not free a slot the thread still uses.
        let outcome = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await;
        outcome.map_err(|e| {
            let text = e
                .try_into_panic()
                .ok()
                .and_then(|payload| {
                    payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                })
                .unwrap_or_else(|| "no message".into());
            Panicked(text)
        })
    }
}

/// A stage's logic that computes rather than waits.
pub trait BlockingHandler: Send + Sync + 'static {
    fn handle(&self, job: &Job, cx: &Cx) -> Outcome;
}

/// Runs a [`BlockingHandler`] on a [`BlockingPool`]. A panic in it is a bug: it is raised again
/// on the stage, which stops the process.
pub struct OnThreads<H> {
    handler: Arc<H>,
    pool: BlockingPool,
}

impl<H: BlockingHandler> OnThreads<H> {
    pub fn new(handler: H, pool: BlockingPool) -> Self {
        Self {
            handler: Arc::new(handler),
            pool,
        }
    }
}

impl<H: BlockingHandler> Handler for OnThreads<H> {
    async fn handle(&self, job: &Job, cx: &Cx) -> Outcome {
        let handler = self.handler.clone();
        let (job, cx) = (job.clone(), cx.clone());
        match self.pool.run(move || handler.handle(&job, &cx)).await {
            Ok(outcome) => outcome,
            Err(Panicked(text)) => std::panic::panic_any(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn the_pool_bounds_its_threads_and_returns_panics() {
        let pool = BlockingPool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let works = (0..6).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            pool.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                running.fetch_sub(1, Ordering::SeqCst);
            })
        });
        for outcome in futures::future::join_all(works).await {
            outcome.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        let panicked = pool.run(|| panic!("bad fit")).await.unwrap_err();
        assert_eq!(panicked.0, "bad fit");
    }
}
