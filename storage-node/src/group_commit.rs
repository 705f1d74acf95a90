//! Group commit: concurrent writes of a component share fdatasyncs.
//!
//! After its pwrite completes, a write takes a ticket. A sync covers every ticket taken before the
//! sync *started*, so a write is acknowledged only by a sync that began after its data reached the
//! file: the highest ticket covered by a sync whose success is trusted (below) is the durable
//! point, `durable_through`.
//!
//! A waiter whose ticket no started sync covers starts one, if fewer than
//! [`MAX_SYNCS_IN_FLIGHT`] run; otherwise it waits, and the first sync to end starts the next one
//! on its own blocking thread at once, covering every ticket taken so far (no hand-off between
//! syncs). Syncs run to completion even if the call that started them is cancelled, so a
//! cancelled caller never leaves the machinery stuck.
//!
//! # A write-back error is never hidden
//!
//! Linux reports a write-back error of a file to *one* fsync per open file description (the
//! `errseq` cursor of the `struct file` advances when an fsync reports it), and every sync of a
//! component runs on the same descriptor. When syncs overlap, the page whose write-back failed
//! may belong to one sync's range while another sync, running at the same time, is the one that
//! reports the error; the first then returns success although its data is not on disk (and the
//! kernel has marked the failed pages clean, so no later sync writes them again). So:
//!
//! - **A sync's success is trusted only once every sync that overlapped it has succeeded.** Syncs
//!   are numbered in start order. When sync `s` ends successfully, every sync numbered below
//!   `next_sync` (the next number to hand out) has started, and only those can have run during
//!   `s`: a sync that starts after `s` returned cannot take an error `s` should have seen, since
//!   `s` waited for its pages' write-back and checked for errors before returning. `s` is kept
//!   as *unconfirmed* with that mark, and raises `durable_through` only when no sync numbered
//!   below the mark still runs. Marks are taken in completion order, so the unconfirmed syncs form
//!   a queue confirmed from its front.
//! - **Any failure fails everything not yet durable, for good.** A failed sync (or a failed
//!   pwrite, [`GroupCommit::fail`]) sets the failure, drops every unconfirmed success and freezes
//!   `durable_through`: no later success is applied. Every waiter, present and future, gets the
//!   failure; nothing is retried and acknowledged later.
//!
//! Whatever the order in which overlapping syncs end, then: if any of them fails, none of their
//! successes counts, because each success waits for the others to end and a failure arriving
//! first or last drops it; a success counts only when it overlapped no failure. The writes covered
//! only by those syncs, and every write pending when the failure happened, are never
//! acknowledged. The price is latency: an acknowledgement may wait, beyond its own sync, for the
//! syncs that were running when that sync ended (at most [`MAX_SYNCS_IN_FLIGHT`] - 1 of them,
//! each already under way).
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::backend::StorageBackend;

/// Syncs of one component that may run at once. A sync that starts while others run writes back
/// its pages while the earlier ones wait for the device's cache flush, so a write arriving
/// mid-sync need not wait for that sync and a whole next one. Concurrent fdatasyncs are sound:
/// each one makes durable every write that completed before it started. Measured with the
/// `node_io` bench on the shared 2-core VM (4 KiB writes, 16 in flight; means of 2 to 6 runs
/// while other builds ran): 1 sync at a time about 4,800 IOPS, 2 about 5,600, 3 about 7,000, 4
/// about 7,300, 8 about 7,500 with only 1.4 writes per sync left; 4 keeps most of the gain and
/// still shares a sync among 2 to 3 writes.
pub const MAX_SYNCS_IN_FLIGHT: usize = 4;

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
    /// Every ticket up to this one is durable: covered by a sync whose success is trusted.
    durable_through: u64,
    /// Every ticket up to this one is covered by a sync that has started.
    started_through: u64,
    /// Number of the next sync to start (syncs are numbered from 0 in start order).
    next_sync: u64,
    /// Numbers of the syncs running now, at most [`MAX_SYNCS_IN_FLIGHT`].
    running: BTreeSet<u64>,
    /// Successful syncs waiting for the syncs that overlapped them, in completion order.
    unconfirmed: VecDeque<Unconfirmed>,
    failure: Option<String>,
    syncs_completed: u64,
}

/// A sync that succeeded, not yet trusted.
struct Unconfirmed {
    /// Every sync numbered below this one had started when it ended: it is trusted once they
    /// have all ended well.
    overlapped_below: u64,
    /// The last ticket it covers.
    covers: u64,
}

impl State {
    /// Starts a sync covering every ticket taken so far; returns its number and what it covers.
    fn start_sync(&mut self) -> (u64, u64) {
        let number = self.next_sync;
        self.next_sync += 1;
        self.running.insert(number);
        self.started_through = self.last_ticket;
        (number, self.last_ticket)
    }

    /// Applies the outcome of sync `number`, which covered tickets up to `covers`.
    fn finish_sync(&mut self, number: u64, covers: u64, result: std::io::Result<()>) {
        self.running.remove(&number);
        self.syncs_completed += 1;
        match result {
            Ok(()) => self.unconfirmed.push_back(Unconfirmed {
                overlapped_below: self.next_sync,
                covers,
            }),
            Err(err) => {
                self.failure
                    .get_or_insert(format!("fdatasync failed: {err}"));
            }
        }
        self.confirm();
    }

    /// Raises the durable point with every success whose overlapping syncs have all ended (and
    /// so, with no failure seen, ended well); after a failure, drops them all.
    fn confirm(&mut self) {
        if self.failure.is_some() {
            self.unconfirmed.clear();
            return;
        }
        let oldest_running = self.running.first().copied().unwrap_or(self.next_sync);
        while let Some(front) = self.unconfirmed.front() {
            if front.overlapped_below > oldest_running {
                break;
            }
            self.durable_through = self.durable_through.max(front.covers);
            self.unconfirmed.pop_front();
        }
    }
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

    /// Fails the group commit for good (for example after a failed pwrite): nothing not yet
    /// durable is acknowledged any more. Keeps the first reason.
    pub fn fail(&self, reason: String) {
        {
            let mut state = self.state();
            state.failure.get_or_insert(reason);
            state.confirm();
        }
        self.inner.progress.send_modify(|v| *v += 1);
    }

    /// Number of tickets handed out so far.
    pub fn ticket_count(&self) -> u64 {
        self.state().last_ticket
    }

    /// Every ticket up to this one is durable (tests).
    #[cfg(test)]
    fn durable_through(&self) -> u64 {
        self.state().durable_through
    }

    /// Waits until no sync runs (tests: a waiter can be acknowledged by a later sync while an
    /// earlier one is still finishing).
    #[cfg(test)]
    pub(crate) async fn idle(&self) {
        while !self.state().running.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Waits until `n` syncs have completed and their outcome is applied (tests).
    #[cfg(test)]
    pub(crate) async fn wait_syncs_completed(&self, n: u64) {
        let mut progress = self.inner.progress.subscribe();
        while self.syncs_completed() < n {
            if progress.changed().await.is_err() {
                return;
            }
        }
    }

    /// Number of syncs completed so far (tests and metrics).
    pub fn syncs_completed(&self) -> u64 {
        self.state().syncs_completed
    }

    /// Waits until `ticket` is durable; `Err` carries the failure reason if a sync failed.
    pub async fn wait_durable(&self, ticket: u64) -> Result<(), String> {
        let mut progress = self.inner.progress.subscribe();
        loop {
            let started = {
                let mut state = self.state();
                if let Some(reason) = &state.failure {
                    return Err(reason.clone());
                }
                if state.durable_through >= ticket {
                    return Ok(());
                }
                (ticket > state.started_through && state.running.len() < MAX_SYNCS_IN_FLIGHT)
                    .then(|| state.start_sync())
            };
            if let Some((number, covers)) = started {
                let inner = self.inner.clone();
                if inner.backend.blocks() {
                    // Detached: the syncs run to completion even if this caller is cancelled.
                    drop(tokio::task::spawn_blocking(move || {
                        sync_loop(&inner, number, covers)
                    }));
                } else {
                    // A backend that never blocks syncs at once, on this task.
                    sync_loop(&inner, number, covers);
                }
            }
            if progress.changed().await.is_err() {
                return Err("group commit stopped".into());
            }
        }
    }
}

/// Runs syncs on a blocking thread, the first (number `number`) covering every ticket up to
/// `covers`. When a sync ends and tickets taken after the last started sync are waiting, the same
/// thread starts the next one at once, covering every ticket taken so far; otherwise it gives up
/// its place.
fn sync_loop(inner: &Inner, mut number: u64, mut covers: u64) {
    loop {
        // A panicking backend must not keep its place with waiters parked forever.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.backend.sync()))
                .unwrap_or_else(|_| Err(std::io::Error::other("the sync panicked")));
        let mut state = inner.lock_state();
        state.finish_sync(number, covers, result);
        let more = state.failure.is_none() && state.last_ticket > state.started_through;
        if more {
            (number, covers) = state.start_sync();
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

    /// A write whose ticket was taken while a sync was running is not acknowledged by that sync,
    /// even when that sync ends first.
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

        // These arrive while sync #1 is running; they start syncs of their own (held at the gate).
        let later: Vec<_> = (0..5)
            .map(|_| {
                let ticket = commit.ticket();
                let commit = commit.clone();
                tokio::spawn(async move { commit.wait_durable(ticket).await })
            })
            .collect();
        backend.wait_sync_started(2).await;
        // Sync #1 (and only it: the gate releases in start order) completes. Its success is
        // trusted only once the syncs that overlapped it end, but it never covers the later
        // writes.
        backend.release_one();
        commit.wait_syncs_completed(1).await;
        assert!(
            commit.durable_through() <= first,
            "acknowledged by a sync that started before its ticket"
        );
        for w in &later {
            assert!(!w.is_finished(), "acknowledged without its own sync");
        }
        backend.open_gate();
        first_wait.await.unwrap().unwrap();
        for w in later {
            w.await.unwrap().unwrap();
        }
        commit.idle().await;
        assert!(
            commit.syncs_completed() <= 1 + MAX_SYNCS_IN_FLIGHT as u64,
            "{} syncs for 6 writes",
            commit.syncs_completed()
        );
    }

    /// However many writes wait, at most MAX_SYNCS_IN_FLIGHT syncs run at once, and the writes that
    /// queue up behind them share the next one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn syncs_in_flight_are_bounded_and_queued_writes_share_one() {
        let backend = Arc::new(GatedBackend::new(1 << 16));
        let commit = GroupCommit::new(backend.clone());
        backend.close_gate();
        let mut waits = Vec::new();
        for i in 0..MAX_SYNCS_IN_FLIGHT as u64 {
            let ticket = commit.ticket();
            let c = commit.clone();
            waits.push(tokio::spawn(async move { c.wait_durable(ticket).await }));
            backend.wait_sync_started(i + 1).await;
        }
        // Every place is taken: these 20 wait without starting a sync.
        for _ in 0..20 {
            let ticket = commit.ticket();
            let c = commit.clone();
            waits.push(tokio::spawn(async move { c.wait_durable(ticket).await }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(backend.syncs_started(), MAX_SYNCS_IN_FLIGHT as u64);
        backend.open_gate();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        commit.idle().await;
        assert_eq!(
            commit.syncs_completed(),
            MAX_SYNCS_IN_FLIGHT as u64 + 1,
            "the 20 queued writes shared one sync"
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

    /// Starts sync #1 covering one write and sync #2 covering three more (held at the gate, which
    /// releases them only when told), after sync #0 acknowledged a first write. Returns the first
    /// write's ticket and the waits of the four others.
    async fn two_overlapping_syncs(
        commit: &GroupCommit,
        backend: &GatedBackend,
    ) -> (u64, Vec<tokio::task::JoinHandle<Result<(), String>>>) {
        let acknowledged = commit.ticket();
        commit.wait_durable(acknowledged).await.unwrap();
        backend.close_gate();
        let wait = |ticket: u64| {
            let commit = commit.clone();
            tokio::spawn(async move { commit.wait_durable(ticket).await })
        };
        let mut waits = vec![wait(commit.ticket())];
        backend.wait_sync_started(2).await;
        // Taken before any of them waits: sync #2 covers all three.
        let later: Vec<u64> = (0..3).map(|_| commit.ticket()).collect();
        waits.extend(later.into_iter().map(wait));
        backend.wait_sync_started(3).await;
        (acknowledged, waits)
    }

    async fn assert_all_failed(waits: Vec<tokio::task::JoinHandle<Result<(), String>>>) {
        for (i, w) in waits.into_iter().enumerate() {
            let result = w.await.unwrap();
            assert!(
                result.is_err(),
                "write {i}, pending when a sync failed, was acknowledged"
            );
        }
    }

    /// Sync #1 fails first; sync #2, which started later and covers every pending write, then
    /// succeeds: it must not acknowledge (or count as durable) anything pending at the failure.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_that_ends_after_a_failed_one_acknowledges_nothing_pending_at_the_failure() {
        let backend = Arc::new(GatedBackend::new(1 << 16));
        let commit = GroupCommit::new(backend.clone());
        let (acknowledged, waits) = two_overlapping_syncs(&commit, &backend).await;
        backend.fail_sync(1);
        backend.release(1);
        commit.wait_syncs_completed(2).await;
        backend.release(2);
        commit.wait_syncs_completed(3).await;
        assert_eq!(
            commit.durable_through(),
            acknowledged,
            "a sync ending after the failure raised the durable point"
        );
        assert_all_failed(waits).await;
        let next = commit.ticket();
        assert!(commit.wait_durable(next).await.is_err());
    }

    /// The failing sync (#1) ends last: sync #2, which started while #1 ran, succeeds first. Its
    /// success proves nothing (the write-back error it would have reported may have gone to #1),
    /// so it must acknowledge nothing until #1 is done, and then nothing at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_that_succeeds_while_an_earlier_one_later_fails_acknowledges_nothing() {
        let backend = Arc::new(GatedBackend::new(1 << 16));
        let commit = GroupCommit::new(backend.clone());
        let (acknowledged, waits) = two_overlapping_syncs(&commit, &backend).await;
        backend.fail_sync(1);
        backend.release(2);
        commit.wait_syncs_completed(2).await;
        backend.release(1);
        commit.wait_syncs_completed(3).await;
        assert_eq!(commit.durable_through(), acknowledged);
        assert_all_failed(waits).await;
    }

    /// The later sync (#2) fails last, after the earlier one (#1) succeeded: Linux reports a
    /// write-back error to one fsync of the file only, so #2 may have taken the error of a page
    /// #1 wrote back, and #1's writes are not acknowledged either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_that_overlapped_a_failed_one_acknowledges_nothing() {
        let backend = Arc::new(GatedBackend::new(1 << 16));
        let commit = GroupCommit::new(backend.clone());
        let (acknowledged, waits) = two_overlapping_syncs(&commit, &backend).await;
        backend.fail_sync(2);
        backend.release(1);
        commit.wait_syncs_completed(2).await;
        backend.release(2);
        commit.wait_syncs_completed(3).await;
        assert_eq!(commit.durable_through(), acknowledged);
        assert_all_failed(waits).await;
    }
}
