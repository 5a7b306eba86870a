//! One waiter per process: a [`JobWaiter`] owns a single `LISTEN` connection on
//! [`JOBS_CHANNEL`](crate::JOBS_CHANNEL) and wakes every caller waiting for a job the
//! notification names, however many jobs are awaited at once.
//!
//! A notification only says "look again": the row is the truth. So nothing is lost when a
//! notification is: after the listener reconnects every waiter re-reads its row, and once a
//! [`RECHECK_EVERY`] one query finds every awaited job that finished unnoticed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_core::pause::Pause;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::notify;
use crate::queries::{self, JobRow};

/// How often the awaited jobs are re-read whatever the notifications said.
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// Waits for jobs to finish. Cheap to clone: every clone shares the one listener, which stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct JobWaiter {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    interest: Arc<Interest>,
    _stop_listener: DropGuard,
}

/// The jobs someone waits for. A job's channel carries no value: a new version means "re-read".
#[derive(Default)]
struct Interest {
    jobs: Mutex<HashMap<Uuid, watch::Sender<()>>>,
}

impl Interest {
    fn register(self: &Arc<Self>, job_id: Uuid) -> Registration {
        let receiver = self
            .jobs
            .lock()
            .expect("waiter map poisoned")
            .entry(job_id)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        Registration {
            interest: self.clone(),
            job_id,
            receiver: Some(receiver),
        }
    }

    fn wake(&self, changed: &notify::Changed) {
        let jobs = self.jobs.lock().expect("waiter map poisoned");
        match changed {
            notify::Changed::Jobs(ids) => {
                ids.iter().filter_map(|id| jobs.get(id)).for_each(|job| {
                    job.send_replace(());
                })
            }
            notify::Changed::Anything => jobs.values().for_each(|job| {
                job.send_replace(());
            }),
        }
    }

    fn awaited(&self) -> Vec<Uuid> {
        let jobs = self.jobs.lock().expect("waiter map poisoned");
        jobs.keys().copied().collect()
    }
}

/// A caller's interest in one job; forgotten when dropped, the job's entry with its last one.
struct Registration {
    interest: Arc<Interest>,
    job_id: Uuid,
    receiver: Option<watch::Receiver<()>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut jobs = self.interest.jobs.lock().expect("waiter map poisoned");
        // Dropped under the lock, so a caller registering meanwhile keeps the entry alive.
        self.receiver = None;
        if jobs
            .get(&self.job_id)
            .is_some_and(|job| job.receiver_count() == 0)
        {
            jobs.remove(&self.job_id);
        }
    }
}

impl JobWaiter {
    /// Opens the listening connection (one, next to `pool`, whose settings it copies) and
    /// starts listening.
    pub async fn start(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Self::with_recheck(pool, RECHECK_EVERY).await
    }

    /// As [`JobWaiter::start`], re-reading the awaited jobs every `recheck_every` without a
    /// notification.
    pub async fn with_recheck(pool: &PgPool, recheck_every: Duration) -> Result<Self, sqlx::Error> {
        // A pool of its own, of one connection that never expires: the listener holds it for
        // good and reconnects through it, and `pool` keeps all of its connections for reads.
        let options = (*pool.connect_options())
            .clone()
            .application_name("sluice-job-waiter");
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options)
            .await?;
        let mut listener = PgListener::connect_with(&listener_pool).await?;
        listener.listen(crate::JOBS_CHANNEL).await?;
        let interest = Arc::new(Interest::default());
        let stop = CancellationToken::new();
        tokio::spawn(listen(listener, interest.clone(), stop.clone()));
        tokio::spawn(recheck(
            pool.clone(),
            interest.clone(),
            recheck_every,
            stop.clone(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                pool: pool.clone(),
                interest,
                _stop_listener: stop.drop_guard(),
            }),
        })
    }

    /// Waits until job `job_id` is no longer pending, or `timeout` passes: the row as last read
    /// (pending at the timeout; `None` when there is no such job).
    pub async fn wait(
        &self,
        job_id: Uuid,
        timeout: Duration,
    ) -> Result<Option<JobRow>, sqlx::Error> {
        let deadline = Instant::now() + timeout;
        // Registered before the first read: a change after that read wakes this caller.
        let mut registration = self.inner.interest.register(job_id);
        let receiver = registration
            .receiver
            .as_mut()
            .expect("set until the registration is dropped");
        loop {
            let row = queries::job(&self.inner.pool, job_id).await?;
            if row.as_ref().is_some_and(|r| r.status != "pending") || Instant::now() >= deadline {
                return Ok(row);
            }
            // The sender lives as long as the registration; the deadline ends the wait.
            let _ = tokio::time::timeout_at(deadline, receiver.changed()).await;
        }
    }
}

/// The listener's loop: wakes the waiters a notification names, and all of them after a
/// reconnection. Its receive is never interrupted but to stop: a message half read would be lost.
async fn listen(mut listener: PgListener, interest: Arc<Interest>, stop: CancellationToken) {
    let first_pause = Duration::from_millis(100);
    let mut pause = Pause::starting_at(first_pause);
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => {
                pause = Pause::starting_at(first_pause);
                interest.wake(&notify::parse(notification.payload()));
            }
            // The connection was lost and is back, listening again: what was sent meanwhile is
            // gone, so everyone looks again.
            Ok(None) => interest.wake(&notify::Changed::Anything),
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                // Reconnecting failed (the next receive tries again) or the server ended the
                // session; either way notifications may have been missed.
                tracing::warn!(error = %e, "job notifications interrupted; reconnecting");
                if !pause.wait(&stop).await {
                    return;
                }
                interest.wake(&notify::Changed::Anything);
            }
        }
    }
}

/// Every `every`, one query for all awaited jobs wakes those no longer pending: a notification
/// lost without a reconnection (or a writer that sent none) delays an answer, never holds it.
async fn recheck(pool: PgPool, interest: Arc<Interest>, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let awaited = interest.awaited();
        if awaited.is_empty() {
            continue;
        }
        match queries::finished_among(&pool, &awaited).await {
            Ok(finished) => interest.wake(&notify::Changed::Jobs(finished)),
            Err(e) => tracing::warn!(error = %e, "re-reading awaited jobs failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_is_forgotten_with_its_last_waiter() {
        let interest = Arc::new(Interest::default());
        let id = Uuid::new_v4();
        let first = interest.register(id);
        let mut second = interest.register(id);
        drop(first);
        assert_eq!(interest.awaited(), vec![id]);
        interest.wake(&notify::Changed::Jobs(vec![id]));
        let receiver = second.receiver.as_mut().unwrap();
        assert!(
            receiver.has_changed().unwrap(),
            "woken by a notification naming it"
        );
        drop(second);
        assert!(interest.awaited().is_empty());
    }

    #[tokio::test]
    async fn only_the_named_jobs_wake_unless_anything_changed() {
        let interest = Arc::new(Interest::default());
        let mut named = interest.register(Uuid::new_v4());
        let mut other = interest.register(Uuid::new_v4());
        interest.wake(&notify::Changed::Jobs(vec![named.job_id]));
        assert!(named.receiver.as_mut().unwrap().has_changed().unwrap());
        assert!(!other.receiver.as_mut().unwrap().has_changed().unwrap());
        interest.wake(&notify::Changed::Anything);
        assert!(other.receiver.as_mut().unwrap().has_changed().unwrap());
    }
}
