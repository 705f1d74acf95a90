//! Admission of accesses: how overload is met by back-pressure at the volume API instead of
//! by failing a column.
//!
//! Every read, write and flush of every volume sharing one [`Admission`] passes through it
//! before it takes a stripe lock: at most `in_progress` accesses run at once, at most `queued`
//! more wait their turn (first come, first served), and one that finds the queue full is
//! refused at once with [`Overloaded`] (the volume API answers RESOURCE_EXHAUSTED /
//! `overloaded`: nothing was done, retry later). An admitted access keeps its place until its
//! last DAG is done, in its own task even when its caller went away.
//!
//! That is what bounds every queue below it: each access has a bounded number of disk calls in
//! flight (its stripes in flight times the calls of one DAG), so the calls waiting for a place
//! among a storage node's calls in flight are bounded too, and a call's wait there is bounded
//! by the calls ahead of it, each of which ends within its own deadline. No deadline counts a
//! wait in any of these queues (see [`crate::io::ComponentIo::own_deadline`]).

use std::fmt;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of an [`Admission`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Accesses running at once.
    pub in_progress: usize,
    /// Accesses waiting for one of those places; one more is refused.
    pub queued: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            in_progress: 128,
            queued: 1024,
        }
    }
}

/// An access refused because the queue of accesses waiting to run was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "overloaded: {in_progress} accesses in progress and {queued} waiting, the most allowed; nothing was done, retry later"
)]
pub struct Overloaded {
    /// The limit of accesses in progress.
    pub in_progress: usize,
    /// The limit of accesses waiting.
    pub queued: usize,
}

/// A bounded queue of accesses in front of a bounded number running (shared by the arrays of
/// one coordinator: they share its storage nodes).
pub struct Admission {
    limits: AdmissionLimits,
    /// Places in the queue and among the running, together: taken without waiting.
    accepted: Arc<Semaphore>,
    /// Places among the running: waited for, in order.
    running: Arc<Semaphore>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("limits", &self.limits)
            .field("running", &self.running())
            .field("waiting", &self.waiting())
            .finish()
    }
}

/// An admitted access's place; dropping it lets the next one in.
#[derive(Debug)]
pub struct Admitted {
    _running: OwnedSemaphorePermit,
    _accepted: OwnedSemaphorePermit,
}

impl Admission {
    /// An admission with `limits`; zero limits are raised to one running and none waiting.
    pub fn new(limits: AdmissionLimits) -> Arc<Admission> {
        let limits = AdmissionLimits {
            in_progress: limits.in_progress.clamp(1, Semaphore::MAX_PERMITS / 2),
            queued: limits.queued.min(Semaphore::MAX_PERMITS / 2),
        };
        Arc::new(Admission {
            limits,
            accepted: Arc::new(Semaphore::new(limits.in_progress + limits.queued)),
            running: Arc::new(Semaphore::new(limits.in_progress)),
        })
    }

    /// Its limits.
    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// Accesses running now.
    pub fn running(&self) -> usize {
        self.limits.in_progress - self.running.available_permits()
    }

    /// Accesses waiting now.
    pub fn waiting(&self) -> usize {
        let accepted =
            self.limits.in_progress + self.limits.queued - self.accepted.available_permits();
        accepted.saturating_sub(self.running())
    }

    /// Waits for a place among the running, in the queue; refuses at once when the queue is
    /// full. Dropping the future leaves the queue.
    pub async fn admit(&self) -> Result<Admitted, Overloaded> {
        let accepted = self
            .accepted
            .clone()
            .try_acquire_owned()
            .map_err(|_| Overloaded {
                in_progress: self.limits.in_progress,
                queued: self.limits.queued,
            })?;
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            // Never closed.
            .map_err(|_| Overloaded {
                in_progress: self.limits.in_progress,
                queued: self.limits.queued,
            })?;
        Ok(Admitted {
            _running: running,
            _accepted: accepted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_places_free_in_order() {
        let a = Admission::new(AdmissionLimits {
            in_progress: 2,
            queued: 1,
        });
        let first = a.admit().await.unwrap();
        let _second = a.admit().await.unwrap();
        assert_eq!((a.running(), a.waiting()), (2, 0));
        let a2 = a.clone();
        let third = tokio::spawn(async move { a2.admit().await });
        tokio::task::yield_now().await;
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(a.waiting(), 1);
        let e = a.admit().await.unwrap_err();
        assert_eq!(
            e,
            Overloaded {
                in_progress: 2,
                queued: 1
            }
        );
        assert!(e.to_string().contains("retry later"), "{e}");
        drop(first);
        let _third = third.await.unwrap().unwrap();
        assert_eq!((a.running(), a.waiting()), (2, 0));
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_leaves_the_queue() {
        let a = Admission::new(AdmissionLimits {
            in_progress: 1,
            queued: 1,
        });
        let held = a.admit().await.unwrap();
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(10), a.admit()).await;
        assert!(gave_up.is_err());
        assert_eq!(a.waiting(), 0);
        drop(held);
        a.admit().await.unwrap();
    }

    #[test]
    fn zero_limits_still_admit_one() {
        let a = Admission::new(AdmissionLimits {
            in_progress: 0,
            queued: 0,
        });
        assert_eq!(
            a.limits(),
            AdmissionLimits {
                in_progress: 1,
                queued: 0
            }
        );
    }
}
