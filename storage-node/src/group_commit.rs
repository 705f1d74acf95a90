//! Group commit: concurrent writes of a component share one fdatasync.
//!
//! After its pwrite completes, a write takes a ticket. A sync covers every ticket taken before the
//! sync *started*, so a write is acknowledged only by a sync that began after its data reached the
//! file. Whoever waits while no sync is running starts the sync loop on a blocking thread: it
//! starts the next sync the moment one ends while tickets are waiting (no hand-off between syncs),
//! and it runs to completion even if its starter is cancelled, so a cancelled caller never leaves
//! the machinery stuck. If a sync fails, the group commit is failed for good and every present and
//! future waiter gets the failure: nothing is retried and acknowledged later.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::backend::StorageBackend;

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it; the counters are still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The shared-sync machinery of one component.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn StorageBackend>,
    state: Mutex<State>,
    /// Bumped after every completed sync (or failure), to wake waiters.
    progress: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// Last ticket handed out; tickets start at 1.
    last_ticket: u64,
    /// Every ticket up to this one is durable.
    durable_through: u64,
    /// Whether the sync loop is running.
    sync_running: bool,
    failure: Option<String>,
    syncs_completed: u64,
}

impl GroupCommit {
    /// Group commit over `backend`.
    pub fn new(backend: Arc<dyn StorageBackend>) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                state: Mutex::new(State::default()),
                progress: watch::channel(0).0,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock_state()
    }

    /// Takes a ticket. Call it only after the write's data is in the backend.
    pub fn ticket(&self) -> u64 {
        let mut state = self.state();
        state.last_ticket += 1;
        state.last_ticket
    }

    /// Why the component failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.state().failure.clone()
    }

    /// Fails the group commit for good (for example after a failed pwrite). Keeps the first reason.
    pub fn fail(&self, reason: String) {
        self.state().failure.get_or_insert(reason);
        self.inner.progress.send_modify(|v| *v += 1);
    }

    /// Number of tickets handed out so far.
    pub fn ticket_count(&self) -> u64 {
        self.state().last_ticket
    }

    /// Number of syncs completed so far (tests and metrics).
    pub fn syncs_completed(&self) -> u64 {
        self.state().syncs_completed
    }

    /// Waits until `ticket` is durable; `Err` carries the failure reason if a sync failed.
    pub async fn wait_durable(&self, ticket: u64) -> Result<(), String> {
        let mut progress = self.inner.progress.subscribe();
        loop {
            {
                let mut state = self.state();
                if let Some(reason) = &state.failure {
                    return Err(reason.clone());
                }
                if state.durable_through >= ticket {
                    return Ok(());
                }
                if !state.sync_running {
                    state.sync_running = true;
                    let covers = state.last_ticket;
                    let inner = self.inner.clone();
                    // Detached: the syncs run to completion even if this caller is cancelled.
                    drop(tokio::task::spawn_blocking(move || {
                        sync_loop(&inner, covers)
                    }));
                }
            }
            if progress.changed().await.is_err() {
                return Err("group commit stopped".into());
            }
        }
    }
}

/// Runs syncs on a blocking thread, the first covering every ticket up to `covers`, until no
/// ticket is left waiting. Each sync covers the tickets taken before it started; the tickets taken
/// while it ran get the next one, started at once on the same thread (no hand-off between syncs).
fn sync_loop(inner: &Inner, mut covers: u64) {
    loop {
        // A panicking backend must not leave `sync_running` set with waiters parked forever.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.backend.sync()))
                .unwrap_or_else(|_| Err(std::io::Error::other("the sync panicked")));
        let mut state = inner.lock_state();
        state.syncs_completed += 1;
        match result {
            Ok(()) => state.durable_through = state.durable_through.max(covers),
            Err(err) => {
                state
                    .failure
                    .get_or_insert(format!("fdatasync failed: {err}"));
            }
        }
        let more = state.failure.is_none() && state.last_ticket > state.durable_through;
        if more {
            covers = state.last_ticket;
        } else {
            state.sync_running = false;
        }
        drop(state);
        inner.progress.send_modify(|v| *v += 1);
        if !more {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GatedBackend;

    /// A write whose ticket was taken while a sync was running is not acknowledged by that sync;
    /// the writes that queued up behind it share the next one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn later_writes_wait_for_a_sync_that_started_after_them() {
        let backend = Arc::new(GatedBackend::new(1 << 16));
        let commit = GroupCommit::new(backend.clone());

        backend.close_gate();
        let first = commit.ticket();
        let first_wait = tokio::spawn({
            let commit = commit.clone();
            async move { commit.wait_durable(first).await }
        });
        backend.wait_sync_started(1).await;

        // These arrive while sync #1 is running.
        let later: Vec<_> = (0..5)
            .map(|_| {
                let ticket = commit.ticket();
                let commit = commit.clone();
                tokio::spawn(async move { commit.wait_durable(ticket).await })
            })
            .collect();
        // Sync #1 completes: only `first` is acknowledged.
        backend.release_one();
        first_wait.await.unwrap().unwrap();
        backend.wait_sync_started(2).await;
        for w in &later {
            assert!(
                !w.is_finished(),
                "acknowledged by a sync that started before its ticket"
            );
        }
        backend.open_gate();
        for w in later {
            w.await.unwrap().unwrap();
        }
        assert_eq!(
            commit.syncs_completed(),
            2,
            "five queued writes shared one sync"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_fails_every_waiter_for_good() {
        let backend = Arc::new(GatedBackend::new(1 << 16));
        let commit = GroupCommit::new(backend.clone());
        backend.fail_syncs();
        let t = commit.ticket();
        let err = commit.wait_durable(t).await.unwrap_err();
        assert!(err.contains("fdatasync failed"), "{err}");
        // Even once the disk "recovers", nothing is acknowledged any more.
        backend.heal_syncs();
        let t2 = commit.ticket();
        assert!(commit.wait_durable(t2).await.is_err());
        assert_eq!(commit.failure().as_deref(), Some(err.as_str()));
    }
}
