//! Reader/writer range locks on stripes (RAIDframe's `rf_stripelocks.c`).
//!
//! Every access, RAID 0 included, locks the stripes it touches before its DAGs read the array
//! state, and holds them until its last DAG is done: two accesses never interleave inside a
//! stripe (no torn parity, no lost sub-block write), and a DAG retried after a failure keeps its
//! locks.
//!
//! - **Key space**: one [`StripeLockTable`] per volume; a lock names a stripe and a range of
//!   blocks *relative to the start of a stripe unit* ([`StripeAccess::unit_blocks`]: the hull of
//!   the in-unit ranges, rounded out to whole blocks, which is also the parity range). Two
//!   requests on one stripe conflict when their ranges overlap and one of them writes. Whole
//!   blocks, because components are written by whole blocks: two writes of different bytes of
//!   one block must not run at once.
//! - **No deadlock**: [`StripeLockTable::lock`] takes an access's stripes one at a time in
//!   increasing stripe order. A waiter waits only on a stripe higher than every stripe it
//!   holds, so waits never form a cycle.
//! - **Fair**: each stripe has a FIFO queue, and a request is granted only when it conflicts
//!   with nothing ahead of it, granted or waiting. A waiting writer therefore holds back the
//!   readers that arrive after it; requests that conflict with nothing ahead (disjoint ranges,
//!   readers with only readers ahead) go at once.
//! - **No global lock on the hot path**: stripes are spread over independently locked shards;
//!   a stripe's queue exists only while someone holds or waits for it.
//! - **Cancel-safe**: dropping a [`StripeLockTable::lock`] future releases what it had taken
//!   and withdraws its waiting request; dropping a guard releases its stripe.
//! - **Observable**: [`StripeLockTable::stats`] counts acquisitions, contention and total wait
//!   time; a [`LockWaitObserver`] sees every wait as it ends; guards report their own wait.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::layout::{AccessMap, Layout, StripeAccess};

/// Shards of the stripe table: enough that two cores rarely meet on one.
const SHARDS: usize = 64;

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// Shared with other readers.
    Read,
    /// Exclusive.
    Write,
}

/// One stripe's lock, as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StripeLockRequest {
    /// The stripe.
    pub stripe: u64,
    /// Blocks relative to the start of a stripe unit (non-empty).
    pub blocks: Range<u64>,
    /// Read or write.
    pub mode: LockMode,
}

impl StripeLockRequest {
    /// The lock an access needs on one of its stripes: its in-unit block hull.
    pub fn for_access(access: &StripeAccess, mode: LockMode) -> StripeLockRequest {
        StripeLockRequest {
            stripe: access.stripe,
            blocks: access.unit_blocks.clone(),
            mode,
        }
    }

    /// A lock on a whole stripe (rebuild, parity rewrite, scrub).
    pub fn whole_stripe(layout: &Layout, stripe: u64, mode: LockMode) -> StripeLockRequest {
        StripeLockRequest {
            stripe,
            blocks: 0..layout.geometry().stripe_unit_blocks(),
            mode,
        }
    }

    /// The locks of every stripe of an access map, in stripe order.
    pub fn for_map(map: &AccessMap, mode: LockMode) -> Vec<StripeLockRequest> {
        map.stripes
            .iter()
            .map(|s| StripeLockRequest::for_access(s, mode))
            .collect()
    }

    fn conflicts(&self, other: &StripeLockRequest) -> bool {
        (self.mode == LockMode::Write || other.mode == LockMode::Write)
            && self.blocks.start < other.blocks.end
            && other.blocks.start < self.blocks.end
    }
}

/// Errors of the stripe lock table: bad requests, refused before anything is locked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeLockError {
    /// A request locks no block: a caller bug that would otherwise go unprotected.
    #[error("stripe {stripe}: empty lock range {blocks:?}")]
    EmptyRange {
        /// The stripe.
        stripe: u64,
        /// The range given.
        blocks: Range<u64>,
    },
}

/// Told of every lock wait as it ends: the observability work hangs a histogram here without
/// this crate knowing any metrics library.
pub trait LockWaitObserver: Send + Sync {
    /// A request on `stripe` waited `waited` before it was granted.
    fn waited(&self, stripe: u64, mode: LockMode, waited: Duration);
}

/// Counters since the table was created (gauges for `waiting` and `held`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StripeLockStats {
    /// Stripe locks granted.
    pub acquired: u64,
    /// Of those, how many had to wait.
    pub contended: u64,
    /// Total time granted requests waited.
    pub wait_total: Duration,
    /// Waiting requests withdrawn (their future was dropped).
    pub cancelled: u64,
    /// Requests waiting now.
    pub waiting: u64,
    /// Stripe locks held now.
    pub held: u64,
}

struct Entry {
    id: u64,
    request: StripeLockRequest,
    granted: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Counters {
    acquired: AtomicU64,
    contended: AtomicU64,
    wait_nanos: AtomicU64,
    cancelled: AtomicU64,
    waiting: AtomicU64,
    held: AtomicU64,
    /// Waits of the requests that had to wait.
    waits: crate::stats::LatencyHistogram,
}

type Shard = HashMap<u64, Vec<Entry>>;

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    next_id: AtomicU64,
    counters: Counters,
    observer: Option<Arc<dyn LockWaitObserver>>,
}

impl Inner {
    fn shard(&self, stripe: u64) -> MutexGuard<'_, Shard> {
        // Fibonacci hashing: neighbouring stripes (one sequential access) land on different
        // shards.
        let h = stripe.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58;
        // Nothing panics while a shard is held, so a poisoned lock still holds consistent data.
        self.shards[h as usize % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes entry `id` of `stripe` and grants what that unblocks. Returns whether the entry
    /// was still there and granted.
    fn remove(&self, stripe: u64, id: u64) -> bool {
        let mut wake = Vec::new();
        let was_granted = {
            let mut shard = self.shard(stripe);
            let Some(queue) = shard.get_mut(&stripe) else {
                return false;
            };
            let Some(pos) = queue.iter().position(|e| e.id == id) else {
                return false;
            };
            let removed = queue.remove(pos);
            if queue.is_empty() {
                shard.remove(&stripe);
            } else {
                grant_ready(queue, &mut wake);
            }
            removed.granted
        };
        for w in wake {
            w.wake();
        }
        was_granted
    }
}

/// Grants every waiting entry that conflicts with nothing ahead of it.
fn grant_ready(queue: &mut [Entry], wake: &mut Vec<Waker>) {
    for i in 0..queue.len() {
        if queue[i].granted {
            continue;
        }
        let (ahead, rest) = queue.split_at_mut(i);
        let entry = &mut rest[0];
        if ahead.iter().all(|a| !a.request.conflicts(&entry.request)) {
            entry.granted = true;
            wake.extend(entry.waker.take());
        }
    }
}

/// The stripe locks of one volume. Cheap to clone (shared).
#[derive(Clone)]
pub struct StripeLockTable {
    inner: Arc<Inner>,
}

impl Default for StripeLockTable {
    fn default() -> Self {
        StripeLockTable::new()
    }
}

impl fmt::Debug for StripeLockTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeLockTable")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl StripeLockTable {
    /// An empty table.
    pub fn new() -> StripeLockTable {
        StripeLockTable::build(None)
    }

    /// An empty table that reports every wait to `observer`.
    pub fn with_observer(observer: Arc<dyn LockWaitObserver>) -> StripeLockTable {
        StripeLockTable::build(Some(observer))
    }

    fn build(observer: Option<Arc<dyn LockWaitObserver>>) -> StripeLockTable {
        StripeLockTable {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                next_id: AtomicU64::new(0),
                counters: Counters::default(),
                observer,
            }),
        }
    }

    /// Locks every requested stripe, one at a time in increasing stripe order; requests on the
    /// same stripe are merged (the hull of their ranges, write if any writes). All requests are
    /// checked before anything is locked. Dropping the future releases whatever it had taken.
    pub async fn lock(
        &self,
        requests: impl IntoIterator<Item = StripeLockRequest>,
    ) -> Result<StripeLocks, StripeLockError> {
        let mut requests: Vec<StripeLockRequest> = requests.into_iter().collect();
        for r in &requests {
            check(r)?;
        }
        requests.sort_by_key(|r| r.stripe);
        let mut merged: Vec<StripeLockRequest> = Vec::with_capacity(requests.len());
        for r in requests {
            match merged.last_mut() {
                Some(last) if last.stripe == r.stripe => {
                    last.blocks =
                        last.blocks.start.min(r.blocks.start)..last.blocks.end.max(r.blocks.end);
                    if r.mode == LockMode::Write {
                        last.mode = LockMode::Write;
                    }
                }
                _ => merged.push(r),
            }
        }
        let mut guards = Vec::with_capacity(merged.len());
        for r in merged {
            guards.push(self.acquire(r).await);
        }
        Ok(StripeLocks { guards })
    }

    /// Locks one stripe.
    pub async fn lock_one(
        &self,
        request: StripeLockRequest,
    ) -> Result<StripeLockGuard, StripeLockError> {
        check(&request)?;
        Ok(self.acquire(request).await)
    }

    async fn acquire(&self, request: StripeLockRequest) -> StripeLockGuard {
        let inner = &self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let stripe = request.stripe;
        let granted_now = {
            let mut shard = inner.shard(stripe);
            let queue = shard.entry(stripe).or_default();
            let free = queue.iter().all(|e| !e.request.conflicts(&request));
            queue.push(Entry {
                id,
                request: request.clone(),
                granted: free,
                waker: None,
            });
            free
        };
        let waited = if granted_now {
            Duration::ZERO
        } else {
            inner.counters.waiting.fetch_add(1, Ordering::Relaxed);
            let start = Instant::now();
            Wait {
                inner,
                stripe,
                id,
                done: false,
            }
            .await;
            inner.counters.waiting.fetch_sub(1, Ordering::Relaxed);
            let waited = start.elapsed();
            inner.counters.contended.fetch_add(1, Ordering::Relaxed);
            inner
                .counters
                .wait_nanos
                .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
            inner.counters.waits.observe(waited);
            if let Some(observer) = &inner.observer {
                observer.waited(stripe, request.mode, waited);
            }
            waited
        };
        inner.counters.acquired.fetch_add(1, Ordering::Relaxed);
        inner.counters.held.fetch_add(1, Ordering::Relaxed);
        StripeLockGuard {
            inner: self.inner.clone(),
            request,
            id,
            waited,
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> StripeLockStats {
        let c = &self.inner.counters;
        StripeLockStats {
            acquired: c.acquired.load(Ordering::Relaxed),
            contended: c.contended.load(Ordering::Relaxed),
            wait_total: Duration::from_nanos(c.wait_nanos.load(Ordering::Relaxed)),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            waiting: c.waiting.load(Ordering::Relaxed),
            held: c.held.load(Ordering::Relaxed),
        }
    }

    /// How long the requests that had to wait waited (uncontended grants are not in it).
    pub fn wait_histogram(&self) -> crate::stats::HistogramSnapshot {
        self.inner.counters.waits.snapshot()
    }

    /// Stripes with a lock held or waited for (idle stripes take no memory). Walks every shard:
    /// for tests and status pages, not for the hot path.
    pub fn active_stripes(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

fn check(r: &StripeLockRequest) -> Result<(), StripeLockError> {
    if r.blocks.start >= r.blocks.end {
        return Err(StripeLockError::EmptyRange {
            stripe: r.stripe,
            blocks: r.blocks.clone(),
        });
    }
    Ok(())
}

/// Waits until entry `id` is granted; withdraws it if dropped first.
struct Wait<'a> {
    inner: &'a Inner,
    stripe: u64,
    id: u64,
    done: bool,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let granted = {
            let mut shard = self.inner.shard(self.stripe);
            // The entry stays in its queue until this future or its guard removes it.
            let entry = shard
                .get_mut(&self.stripe)
                .and_then(|q| q.iter_mut().find(|e| e.id == self.id));
            match entry {
                Some(e) if e.granted => true,
                Some(e) => {
                    if !e.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        e.waker = Some(cx.waker().clone());
                    }
                    false
                }
                None => false,
            }
        };
        if granted {
            self.done = true;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.inner.counters.waiting.fetch_sub(1, Ordering::Relaxed);
            self.inner
                .counters
                .cancelled
                .fetch_add(1, Ordering::Relaxed);
            self.inner.remove(self.stripe, self.id);
        }
    }
}

/// A held lock on one stripe; released on drop.
pub struct StripeLockGuard {
    inner: Arc<Inner>,
    request: StripeLockRequest,
    id: u64,
    waited: Duration,
}

impl StripeLockGuard {
    /// The stripe.
    pub fn stripe(&self) -> u64 {
        self.request.stripe
    }

    /// The locked blocks, relative to the start of a stripe unit.
    pub fn blocks(&self) -> Range<u64> {
        self.request.blocks.clone()
    }

    /// Read or write.
    pub fn mode(&self) -> LockMode {
        self.request.mode
    }

    /// How long the request waited before it was granted.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl fmt::Debug for StripeLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeLockGuard")
            .field("request", &self.request)
            .field("waited", &self.waited)
            .finish()
    }
}

impl Drop for StripeLockGuard {
    fn drop(&mut self) {
        self.inner.counters.held.fetch_sub(1, Ordering::Relaxed);
        self.inner.remove(self.request.stripe, self.id);
    }
}

/// The stripe locks of one access, in increasing stripe order; released on drop.
#[derive(Debug)]
pub struct StripeLocks {
    guards: Vec<StripeLockGuard>,
}

impl StripeLocks {
    /// The held locks, in stripe order.
    pub fn guards(&self) -> &[StripeLockGuard] {
        &self.guards
    }

    /// Total time spent waiting for them.
    pub fn waited(&self) -> Duration {
        self.guards.iter().map(|g| g.waited).sum()
    }

    /// The guards, to release stripes one by one as their DAGs finish.
    pub fn into_guards(self) -> Vec<StripeLockGuard> {
        self.guards
    }
}

#[cfg(test)]
mod tests;
