//! The background resync of a volume assembled after an unclean shutdown: the redundancy of
//! every stripe that may hold a torn write rewritten from its data ([`Array::resync_stripe`]:
//! parity and Q recomputed, RAID 1 primaries copied to their secondaries, each under the
//! stripe's whole-stripe write lock) while user I/O goes on.
//!
//! Which stripes: those of the parity-map regions that await their resync
//! ([`dagraid_core::parity_map`]; assembly pins the regions that were dirty at the crash, or
//! every region of a volume that kept no map). A region is released ([`ParityMap::synced`]) once
//! all its stripes are done; it then cools down and is cleared like any other, so the persisted
//! map is the resync's checkpoint: after a second crash only the regions still dirty are
//! resynced.
//!
//! The worker runs a few stripes at a time ([`RESYNC_STRIPES_IN_FLIGHT`], so user accesses keep
//! most of the stripe locks and node bandwidth) and reports its progress ([`ResyncStatus`]).
//!
//! - A stripe whose data answers data loss is repaired where the redundancy allows, or its bad
//!   blocks are recorded lost ([`dagraid_core::resync`]); the resync goes on either way, and
//!   counts those stripes.
//! - A stripe whose data is on a failed column cannot be resynced (its parity is what rebuilds
//!   that data): in a forced assembly it is skipped and counted; otherwise (a column failed
//!   during the resync) it is an error like any other.
//! - An error (a node timing out beyond the tolerance, the state not recorded, ...) stops the
//!   pass after the stripes in flight; the worker waits ([`ResyncSettings`]: 1 s doubling to
//!   30 s by default, back to the start after a pass that made progress) and tries again from
//!   the first stripe not done, skipping the stripes done since. The status shows the error
//!   and the retries meanwhile, and the volume stays `resyncing`.
//! - At shutdown the worker stops between stripes (or during its wait); a resync cut short
//!   leaves the volume dirty and its regions not done dirty in the map, so the next assembly
//!   resyncs those.
//!
//! The volume may be marked clean only once [`ResyncStatus::completed`]: every stripe
//! rewritten, repaired, recorded lost, or (forced assembly) skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dagraid_core::access::Array;
#[cfg(doc)]
use dagraid_core::parity_map::ParityMap;
use dagraid_core::resync::StripeOutcome;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Stripes resynced at once.
pub const RESYNC_STRIPES_IN_FLIGHT: usize = 4;

/// Default wait before the first retry of a resync that stopped with an error.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);

/// Default longest wait between retries.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);

/// How a resync that stopped with an error is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResyncSettings {
    /// Wait before the first retry (and after a pass that made progress).
    pub retry_initial: Duration,
    /// The wait doubles after every pass that made no progress, up to this.
    pub retry_max: Duration,
}

impl Default for ResyncSettings {
    fn default() -> Self {
        ResyncSettings {
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }
}

/// Progress of a resync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResyncStatus {
    /// Still running: resyncing stripes, or waiting to retry after an error.
    pub running: bool,
    /// Stripes done: rewritten, repaired, recorded lost, or skipped.
    pub done: u64,
    /// Stripes to resync: those of the regions awaiting their resync.
    pub total: u64,
    /// Parity-map regions to resync.
    pub regions_total: u64,
    /// Of those, regions done (every stripe of theirs).
    pub regions_done: u64,
    /// Whether every stripe is resynced because the volume kept no parity map.
    pub full: bool,
    /// Stripes skipped because a data unit of theirs is on a failed column (forced assembly).
    pub skipped: u64,
    /// Stripes whose unreadable blocks were rebuilt from redundancy.
    pub repaired: u64,
    /// Stripes with unreadable blocks that could not be rebuilt: recorded lost.
    pub lost: u64,
    /// The error that stopped the last pass (while running: the resync waits to retry); why it
    /// stopped before the end (when not running); `None` once it completed.
    pub error: Option<String>,
    /// Passes started again after an error.
    pub retries: u32,
}

impl ResyncStatus {
    /// Whether it ran to its end (every stripe rewritten, repaired, recorded lost or skipped).
    pub fn completed(&self) -> bool {
        !self.running && self.error.is_none() && self.done == self.total
    }
}

/// A running (or finished) resync of one volume.
#[derive(Debug)]
pub struct Resync {
    status: Arc<Mutex<ResyncStatus>>,
    cancel: CancellationToken,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Resync {
    /// Starts resyncing, in the background, the regions of `array` that await their resync
    /// (pinned by the caller in its parity map; until each is done its stripes are served
    /// conservatively: RAID 1 reads its primary, degraded reads write nothing back). With
    /// `skip_lost`, stripes whose data is on a failed column are skipped (forced assembly);
    /// otherwise they are an error (retried). `full` says every region was pinned because the
    /// volume kept no map (shown in the status).
    pub fn start(
        volume: String,
        array: Arc<Array>,
        skip_lost: bool,
        full: bool,
        settings: ResyncSettings,
    ) -> Arc<Resync> {
        let map = array.parity_map();
        let regions = map.pending_sync();
        let stripes: Vec<u64> = regions.iter().flat_map(|&r| map.stripes_of(r)).collect();
        let region_left: BTreeMap<u64, u64> = regions
            .iter()
            .map(|&r| {
                let s = map.stripes_of(r);
                (r, s.end - s.start)
            })
            .collect();
        let status = Arc::new(Mutex::new(ResyncStatus {
            running: true,
            total: stripes.len() as u64,
            regions_total: regions.len() as u64,
            full,
            ..ResyncStatus::default()
        }));
        let cancel = CancellationToken::new();
        let worker = Worker {
            volume,
            array,
            skip_lost,
            settings,
            stripes,
            region_left: Mutex::new(region_left),
            status: status.clone(),
            cancel: cancel.clone(),
        };
        let task = tokio::spawn(worker.run());
        Arc::new(Resync {
            status,
            cancel,
            task: tokio::sync::Mutex::new(Some(task)),
        })
    }

    /// The progress now.
    pub fn status(&self) -> ResyncStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops after the stripes in progress, and waits for that.
    pub async fn stop(&self) {
        self.cancel.cancel();
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

/// Which of the worker's stripes (positions in its list) are done: all below
/// `first_not_done`, and those in `above`.
#[derive(Debug, Default)]
struct Done {
    first_not_done: u64,
    above: BTreeSet<u64>,
}

impl Done {
    fn insert(&mut self, stripe: u64) {
        self.above.insert(stripe);
        while self.above.remove(&self.first_not_done) {
            self.first_not_done += 1;
        }
    }
}

struct Worker {
    volume: String,
    array: Arc<Array>,
    skip_lost: bool,
    settings: ResyncSettings,
    /// The stripes to resync, region by region.
    stripes: Vec<u64>,
    /// Stripes not done yet per region.
    region_left: Mutex<BTreeMap<u64, u64>>,
    status: Arc<Mutex<ResyncStatus>>,
    cancel: CancellationToken,
}

impl Worker {
    fn update(&self, f: impl FnOnce(&mut ResyncStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    async fn run(self) {
        let total = self.stripes.len() as u64;
        let s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tracing::info!(
            volume = %self.volume,
            stripes = total,
            regions = s.regions_total,
            full = s.full,
            "resync started"
        );
        let mut done = Done::default();
        let mut delay = self.settings.retry_initial;
        loop {
            let before = done.first_not_done + done.above.len() as u64;
            let error = self.pass(&mut done, total).await;
            let after = done.first_not_done + done.above.len() as u64;
            if self.cancel.is_cancelled() && after < total {
                let why = match error {
                    Some(e) => {
                        format!("stopped: the coordinator is shutting down (last error: {e})")
                    }
                    None => "stopped: the coordinator is shutting down".to_owned(),
                };
                return self.stopped(why, after, total);
            }
            let Some(error) = error else {
                let s = self
                    .status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                tracing::info!(
                    volume = %self.volume,
                    stripes = total,
                    repaired = s.repaired,
                    lost = s.lost,
                    skipped = s.skipped,
                    retries = s.retries,
                    "resync finished"
                );
                self.update(|s| {
                    s.running = false;
                    s.error = None;
                });
                return;
            };
            if after > before {
                delay = self.settings.retry_initial;
            }
            tracing::warn!(
                volume = %self.volume,
                done = after,
                stripes = total,
                error = %error,
                retry_in = ?delay,
                "resync stopped; it will be retried"
            );
            self.update(|s| s.error = Some(error.clone()));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => {
                    let why = format!("stopped: the coordinator is shutting down (last error: {error})");
                    return self.stopped(why, after, total);
                }
            }
            delay = (delay * 2).min(self.settings.retry_max.max(self.settings.retry_initial));
            self.update(|s| s.retries += 1);
        }
    }

    /// Counts `stripe` done in its region; a region with every stripe done is released.
    fn stripe_done(&self, stripe: u64) {
        let map = self.array.parity_map();
        let region = map.region_of(stripe);
        let mut left = self.region_left.lock().unwrap_or_else(|p| p.into_inner());
        let Some(n) = left.get_mut(&region) else {
            return;
        };
        *n = n.saturating_sub(1);
        if *n == 0 {
            left.remove(&region);
            drop(left);
            map.synced(region);
            self.update(|s| s.regions_done += 1);
        }
    }

    fn stopped(&self, why: String, done: u64, total: u64) {
        tracing::warn!(volume = %self.volume, done, stripes = total, error = %why, "resync stopped");
        self.update(|s| {
            s.running = false;
            s.error = Some(why);
        });
    }

    /// One pass over the stripes not done yet; stops issuing stripes at the first error (or at
    /// shutdown) and lets those in flight finish. Returns the first error.
    async fn pass(&self, done: &mut Done, total: u64) -> Option<String> {
        let stop = self.cancel.child_token();
        let skip: BTreeSet<u64> = done.above.clone();
        let stripes =
            futures::stream::iter((done.first_not_done..total).filter(move |s| !skip.contains(s)))
                .take_until(stop.clone().cancelled_owned())
                .map(|at| {
                    let array = self.array.clone();
                    let skip_lost = self.skip_lost;
                    let stripe = self.stripes[at as usize];
                    async move { (at, stripe, array.resync_stripe(stripe, skip_lost).await) }
                })
                .buffer_unordered(RESYNC_STRIPES_IN_FLIGHT);
        futures::pin_mut!(stripes);
        let mut error = None;
        while let Some((at, stripe, r)) = stripes.next().await {
            match r {
                Ok(result) => {
                    done.insert(at);
                    self.stripe_done(stripe);
                    self.update(|s| {
                        s.done += 1;
                        match result.outcome {
                            StripeOutcome::Rewritten => {}
                            StripeOutcome::Skipped => s.skipped += 1,
                            StripeOutcome::Repaired => s.repaired += 1,
                            StripeOutcome::Lost => s.lost += 1,
                        }
                    });
                }
                Err(e) => {
                    error.get_or_insert(format!("stripe {stripe}: {e}"));
                    stop.cancel();
                }
            }
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use dagraid_core::access::{ArrayConfig, InMemoryStates};
    use dagraid_core::array::{ComponentState, ComponentStates};
    use dagraid_core::dag::ComponentTable;
    use dagraid_core::io::{ComponentIo, IoErrorKind};
    use dagraid_core::layout::{Geometry, Layout, RaidLevel};
    use dagraid_core::testing::{Fault, FaultyComponent, IoLog, IoOp, MemComponent, Trigger};

    const UNIT_BLOCKS: u64 = 4;
    const STRIPES: u64 = 12;

    /// RAID 5 over 4 in-memory columns, `failed` failed (a forced assembly).
    fn raid5(failed: &[usize]) -> (Layout, Arc<Array>, Vec<Arc<FaultyComponent>>, IoLog) {
        let layout = Layout::new(
            RaidLevel::Raid5,
            Geometry::new(4, UNIT_BLOCKS, 16, STRIPES * UNIT_BLOCKS).unwrap(),
        )
        .unwrap();
        let log = IoLog::new();
        let faulty: Vec<Arc<FaultyComponent>> = (0..4)
            .map(|c| {
                let m = MemComponent::new(format!("c{c}"), 16, STRIPES * UNIT_BLOCKS);
                FaultyComponent::new(m as Arc<dyn ComponentIo>, log.clone())
            })
            .collect();
        let table: ComponentTable = faulty
            .iter()
            .map(|f| f.clone() as Arc<dyn ComponentIo>)
            .collect::<Vec<_>>()
            .into();
        let mut states = vec![ComponentState::Optimal; 4];
        for &c in failed {
            states[c] = ComponentState::Failed;
        }
        let states = ComponentStates::from_states(&layout, states).unwrap();
        let array = Array::new(
            layout,
            table,
            states,
            ArrayConfig::default(),
            Arc::new(InMemoryStates),
        )
        .unwrap();
        (layout, array, faulty, log)
    }

    fn awaiting_resync(array: &Array) {
        array
            .parity_map()
            .needs_sync(&dagraid_core::lost::LostSet::from_ranges(std::iter::once(
                0..STRIPES,
            )));
    }

    async fn finished(r: &Resync) -> ResyncStatus {
        for _ in 0..10_000 {
            let s = r.status();
            if !s.running {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the resync never ended: {:?}", r.status());
    }

    /// A node that times out once, with no tolerance left to fail its column: the pass stops,
    /// is retried after the back-off from the first stripe not done, and completes; no stripe
    /// is rewritten twice, and the timed-out stripe is not counted skipped.
    #[tokio::test(start_paused = true)]
    async fn a_resync_that_fails_on_a_timeout_is_retried_to_completion() {
        let (layout, array, faulty, log) = raid5(&[0]);
        faulty[1].inject(
            Trigger::always().op(IoOp::Read).times(1),
            Fault::Fail(IoErrorKind::Timeout),
        );
        awaiting_resync(&array);
        let r = Resync::start(
            "v".into(),
            array.clone(),
            true,
            true,
            ResyncSettings::default(),
        );
        let s = finished(&r).await;
        let with_failed_data: Vec<u64> = (0..STRIPES)
            .filter(|&s| {
                layout
                    .stripe(s)
                    .unwrap()
                    .data_columns()
                    .any(|(_, c)| c == 0)
            })
            .collect();
        assert!(s.completed(), "{s:?}");
        assert_eq!(s.done, STRIPES);
        assert_eq!(s.skipped, with_failed_data.len() as u64, "{s:?}");
        assert_eq!(s.retries, 1, "{s:?}");
        assert_eq!(s.error, None);
        // Every stripe with all its data alive (its parity is on the failed column: nothing to
        // write) had its data read exactly once, the timed-out stripe too: no stripe was done
        // twice, none was left out.
        let reads = log.records();
        for stripe in (0..STRIPES).filter(|s| !with_failed_data.contains(s)) {
            let n = reads
                .iter()
                .filter(|r| {
                    r.component == "c1"
                        && r.op == IoOp::Read
                        && r.fault.is_none()
                        && r.start_block == stripe * UNIT_BLOCKS
                })
                .count();
            assert_eq!(n, 1, "stripe {stripe}: read {n} times");
        }
        assert_eq!(
            array.array_state(),
            dagraid_core::array::ArrayState::Degraded
        );
    }

    /// The back-off doubles while no progress is made, up to its maximum, and the status
    /// shows the error and the retries meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_resync_that_keeps_failing_backs_off_and_shows_the_error() {
        // Every read times out: no pass makes progress.
        let (_, array, faulty, _) = raid5(&[]);
        for f in &faulty {
            f.inject(
                Trigger::always().op(IoOp::Read),
                Fault::Fail(IoErrorKind::Timeout),
            );
        }
        let settings = ResyncSettings {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(4),
        };
        let start = tokio::time::Instant::now();
        awaiting_resync(&array);
        let r = Resync::start("v".into(), array, false, true, settings);
        // Waits 1 + 2 + 4 + 4 s before the fifth pass.
        for _ in 0..1000 {
            let s = r.status();
            if s.retries >= 4 || !s.running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(r.status().retries, 4, "{:?}", r.status());
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(11) && waited < Duration::from_secs(13),
            "{waited:?}"
        );
        let s = r.status();
        assert!(s.running);
        assert!(!s.completed());
        // The first timeout failed column 0; every pass since stops at a stripe whose data
        // is on it.
        assert!(
            s.error.as_deref().is_some_and(|e| e.starts_with("stripe ")),
            "{s:?}"
        );
        r.stop().await;
        let s = r.status();
        assert!(!s.running && !s.completed(), "{s:?}");
        assert!(
            s.error
                .as_deref()
                .is_some_and(|e| e.contains("shutting down")),
            "{s:?}"
        );
    }
}
