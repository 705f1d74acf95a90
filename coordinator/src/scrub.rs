//! Online parity verification and rewrite (`docs/SCRUB.md`): one job per volume at a time, a
//! **check** ([`Array::check_stripe`]: each stripe's redundancy compared with its data under
//! the stripe's read lock; mismatches reported, never fixed) or a **rewrite**
//! ([`Array::resync_stripe`]: each stripe's redundancy rewritten from its data under its write
//! lock), sweeping the stripes from the first while clients read and write.
//!
//! User I/O first, as for reconstruction: the job paces itself with the shared [`Throttle`]
//! (an idle rate, and a lower one while client accesses ran within the last 200 ms) and waits
//! while accesses queue for admission. A job does not start while the volume resyncs (the
//! resync rewrites every stripe anyway) or while a column is being reconstructed or copied
//! back (the repair comes first). A reconstruction that starts while a job runs is safe: both
//! take each stripe's lock and read the columns' states after it, so a check never reads a
//! column above its watermark and a rewrite never writes one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dagraid_core::access::{AccessError, Array, CheckOutcome, StripeCheck};
use dagraid_core::array::ComponentState;
use dagraid_core::layout::RaidLevel;
use dagraid_core::resync::StripeOutcome;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use futures::StreamExt;

use crate::service_error::ServiceError;
use crate::throttle::{Throttle, progress};
use crate::volumes::{Volume, VolumeManager};

/// How many mismatching stripe numbers a job keeps (the count goes on).
pub const MISMATCHES_LISTED: usize = 100;

/// Settings of the parity jobs.
#[derive(Debug, Clone, Copy)]
pub struct ScrubSettings {
    /// Default rate limit while clients are idle, bytes of stripes per second (0: none).
    pub default_rate: u64,
    /// Rate limit while clients read or write (0: none).
    pub busy_rate: u64,
    /// Stripes checked or rewritten at once (each under its own lock).
    pub stripes_in_flight: usize,
}

impl Default for ScrubSettings {
    fn default() -> Self {
        Self {
            default_rate: crate::config::DEFAULT_SCRUB_RATE,
            busy_rate: crate::config::DEFAULT_SCRUB_RATE_BUSY,
            stripes_in_flight: 4,
        }
    }
}

/// What a parity job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParityJobKind {
    /// Compares every stripe's redundancy with its data; writes nothing.
    Check,
    /// Rewrites every stripe's redundancy from its data.
    Rewrite,
}

impl ParityJobKind {
    /// Stable lowercase name (metrics, logs).
    pub fn name(self) -> &'static str {
        match self {
            ParityJobKind::Check => "check",
            ParityJobKind::Rewrite => "rewrite",
        }
    }
}

/// The progress of a parity job, as the API and metrics show it.
#[derive(Debug, Clone)]
pub struct ParityJobStatus {
    /// Check or rewrite.
    pub kind: ParityJobKind,
    /// Whether it runs.
    pub running: bool,
    /// Whether it went over every stripe.
    pub completed: bool,
    /// Stripes done (in order from the first).
    pub stripes_done: u64,
    /// Stripes of the volume.
    pub stripes_total: u64,
    /// Stripes whose redundancy disagreed with their data.
    pub mismatches: u64,
    /// The first [`MISMATCHES_LISTED`] of them, in increasing order.
    pub mismatched_stripes: Vec<u64>,
    /// Recent rate, bytes of stripes per second.
    pub rate: u64,
    /// The rate limit in force (0: none).
    pub rate_limit: u64,
    /// Estimated time left.
    pub eta: Option<Duration>,
    /// Why it stopped early; while running, the last stripe error met.
    pub error: String,
    /// Stripes skipped: too many columns missing, or lost blocks.
    pub skipped: u64,
    /// Stripes whose check or rewrite failed.
    pub failed: u64,
    /// Blocks that answered data loss (check).
    pub unreadable_blocks: u64,
    /// Stripes whose redundancy was rewritten (rewrite).
    pub rewritten: u64,
}

struct Job {
    status: std::sync::Mutex<ParityJobStatus>,
    started: Instant,
}

impl Job {
    fn update(&self, f: impl FnOnce(&mut ParityJobStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn status(&self) -> ParityJobStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Stripes checked and mismatches found on one volume since the coordinator started (the
/// metrics' counters).
#[derive(Debug, Default)]
pub struct ScrubCounters {
    /// Stripes compared (check).
    pub checked: AtomicU64,
    /// Stripes found mismatching (check).
    pub mismatches: AtomicU64,
    /// Stripes rewritten (rewrite).
    pub rewritten: AtomicU64,
}

/// The parity jobs of a coordinator.
pub struct Scrubs {
    volumes: Arc<VolumeManager>,
    settings: ScrubSettings,
    /// The last job of each volume, by name.
    jobs: DashMap<String, Arc<Job>>,
    counters: DashMap<String, Arc<ScrubCounters>>,
    stopping: AtomicBool,
    /// Cancelled by [`Scrubs::stop`]: ends a throttle's wait at once.
    cancel: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Scrubs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubs")
            .field("settings", &self.settings)
            .field("jobs", &self.jobs.len())
            .finish_non_exhaustive()
    }
}

fn refused(volume: &str, detail: impl Into<String>) -> ServiceError {
    ServiceError::ParityRefused {
        volume: volume.to_owned(),
        detail: detail.into(),
    }
}

impl Scrubs {
    /// The parity jobs over `volumes`' volumes.
    pub fn new(volumes: Arc<VolumeManager>, settings: ScrubSettings) -> Arc<Self> {
        Arc::new(Self {
            volumes,
            settings,
            jobs: DashMap::new(),
            counters: DashMap::new(),
            stopping: AtomicBool::new(false),
            cancel: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &ScrubSettings {
        &self.settings
    }

    /// Volume `name`'s parity job: running, or the last one since the coordinator started.
    pub fn status(&self, name: &str) -> Option<ParityJobStatus> {
        self.jobs.get(name).map(|j| j.status())
    }

    /// Every volume's counters, by name.
    pub fn counters(&self) -> Vec<(String, Arc<ScrubCounters>)> {
        self.counters
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// Every job's status with its volume's name.
    pub fn all(&self) -> Vec<(String, ParityJobStatus)> {
        self.jobs
            .iter()
            .map(|e| (e.key().clone(), e.value().status()))
            .collect()
    }

    /// Stops every job (each ends the stripes in flight) and waits up to 30 s.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.cancel.cancel();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && self.jobs.iter().any(|j| j.status().running) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a parity `kind` of volume `name` at `rate` bytes per second (0: the default);
    /// answers once it runs. Refused (FAILED_PRECONDITION) for RAID 0, while a parity job of
    /// the volume runs, while it resyncs, and while a column is reconstructed or copied back.
    pub fn start(
        self: &Arc<Self>,
        name: &str,
        kind: ParityJobKind,
        rate: u64,
    ) -> Result<Arc<Volume>, ServiceError> {
        let volume = self.volumes.get(name)?;
        if self.stopping.load(Ordering::SeqCst) {
            return Err(refused(name, "the coordinator is stopping"));
        }
        if volume.layout().level() == RaidLevel::Raid0 {
            return Err(refused(
                name,
                "RAID 0 has no redundancy: nothing to check or rewrite",
            ));
        }
        if volume.resyncing() {
            return Err(refused(
                name,
                "the volume is resyncing after an unclean shutdown (the resync rewrites every stripe's redundancy); start the parity job once it is done",
            ));
        }
        let states = volume.array().states();
        if let Some((c, s)) =
            states.states().iter().enumerate().find(|(_, s)| {
                matches!(s, ComponentState::Reconstructing | ComponentState::Copyback)
            })
        {
            return Err(refused(
                name,
                format!(
                    "column {c} is {} (a repair comes first); start the parity job once it is done",
                    s.name()
                ),
            ));
        }
        let total = volume.layout().stripes();
        let rate = if rate == 0 {
            self.settings.default_rate
        } else {
            rate
        };
        let job = Arc::new(Job {
            status: std::sync::Mutex::new(ParityJobStatus {
                kind,
                running: true,
                completed: false,
                stripes_done: 0,
                stripes_total: total,
                mismatches: 0,
                mismatched_stripes: Vec::new(),
                rate: 0,
                rate_limit: rate,
                eta: None,
                error: String::new(),
                skipped: 0,
                failed: 0,
                unreadable_blocks: 0,
                rewritten: 0,
            }),
            started: Instant::now(),
        });
        match self.jobs.entry(name.to_owned()) {
            Entry::Occupied(mut e) => {
                let s = e.get().status();
                if s.running {
                    return Err(refused(
                        name,
                        format!(
                            "a parity {} is already running (stripe {} of {}); one parity job per volume at a time",
                            s.kind.name(),
                            s.stripes_done,
                            s.stripes_total
                        ),
                    ));
                }
                e.insert(job.clone());
            }
            Entry::Vacant(e) => {
                e.insert(job.clone());
            }
        }
        let counters = self
            .counters
            .entry(name.to_owned())
            .or_default()
            .value()
            .clone();
        tracing::info!(volume = %name, kind = kind.name(), rate, "parity job starts");
        let this = self.clone();
        let v = volume.clone();
        tokio::spawn(async move { this.sweep(v, kind, job, counters, rate).await });
        Ok(volume)
    }

    /// Client accesses answered so far on every volume (reads and writes).
    fn accesses(&self) -> u64 {
        self.volumes.client_accesses()
    }

    async fn sweep(
        &self,
        volume: Arc<Volume>,
        kind: ParityJobKind,
        job: Arc<Job>,
        counters: Arc<ScrubCounters>,
        rate: u64,
    ) {
        let array = volume.array().clone();
        let name = volume.name().to_owned();
        let total = volume.layout().stripes();
        let per_stripe = volume.layout().unit_bytes() * volume.layout().columns() as u64;
        let mut throttle = Throttle::new(rate, self.settings.busy_rate, self.accesses());
        let in_flight = self.settings.stripes_in_flight.max(1) as u64;
        let mut stripe = 0;
        let end = |why: String| {
            tracing::warn!(volume = %name, kind = kind.name(), error = %why, "parity job stopped");
            job.update(|s| {
                s.running = false;
                s.error = why;
                s.eta = None;
            });
        };
        while stripe < total {
            if self.stopping.load(Ordering::SeqCst) {
                end(format!(
                    "stopped at stripe {stripe} (the coordinator is stopping)"
                ));
                return;
            }
            match self.volumes.get(&name) {
                Ok(v) if v.id() == volume.id() => {}
                _ => {
                    end("the volume was deleted or is no longer assembled".into());
                    return;
                }
            }
            if let Some(admission) = self.volumes.admission() {
                crate::throttle::yield_to_users(admission).await;
            }
            let batch = stripe..(stripe + in_flight).min(total);
            let n = batch.end - batch.start;
            match kind {
                ParityJobKind::Check => {
                    let checks = check_batch(&array, batch.clone()).await;
                    for (s, r) in batch.clone().zip(checks) {
                        self.record_check(&name, &job, &counters, s, r);
                    }
                }
                ParityJobKind::Rewrite => {
                    let runs = batch.clone().map(|s| {
                        let array = array.clone();
                        async move { (s, array.resync_stripe(s, true).await) }
                    });
                    let results: Vec<_> = futures::stream::iter(runs)
                        .buffered(in_flight as usize)
                        .collect()
                        .await;
                    for (s, r) in results {
                        match r {
                            Ok(done) if done.outcome == StripeOutcome::Skipped => {
                                job.update(|st| st.skipped += 1)
                            }
                            Ok(done) => {
                                counters.rewritten.fetch_add(1, Ordering::Relaxed);
                                if done.outcome != StripeOutcome::Rewritten {
                                    tracing::warn!(volume = %name, stripe = s, outcome = done.outcome.as_str(), lost = ?done.lost_blocks, "parity rewrite: unreadable blocks met");
                                }
                                job.update(|st| st.rewritten += 1);
                            }
                            Err(e) => {
                                tracing::warn!(volume = %name, stripe = s, error = %e, "parity rewrite of a stripe failed");
                                job.update(|st| {
                                    st.failed += 1;
                                    st.error = format!("stripe {s}: {e}");
                                });
                            }
                        }
                    }
                }
            }
            stripe = batch.end;
            let bytes = stripe * per_stripe;
            let (per_sec, eta) = progress(job.started, bytes, stripe, total - stripe);
            job.update(|s| {
                s.stripes_done = stripe;
                s.rate = per_sec;
                s.eta = eta;
            });
            tokio::select! {
                _ = throttle.consume(n * per_stripe, self.accesses()) => {}
                _ = self.cancel.cancelled() => {}
            }
            let limit = throttle.current();
            job.update(|s| s.rate_limit = limit);
        }
        let s = job.status();
        tracing::info!(
            volume = %name,
            kind = kind.name(),
            stripes = total,
            mismatches = s.mismatches,
            rewritten = s.rewritten,
            skipped = s.skipped,
            failed = s.failed,
            "parity job complete"
        );
        job.update(|s| {
            s.running = false;
            s.completed = true;
            s.eta = None;
            s.stripes_done = total;
        });
    }

    fn record_check(
        &self,
        name: &str,
        job: &Job,
        counters: &ScrubCounters,
        stripe: u64,
        r: Result<StripeCheck, AccessError>,
    ) {
        let check = match r {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(volume = %name, stripe, error = %e, "parity check of a stripe failed");
                job.update(|s| {
                    s.failed += 1;
                    s.error = format!("stripe {stripe}: {e}");
                });
                return;
            }
        };
        let unreadable: u64 = check
            .unreadable
            .iter()
            .flat_map(|u| u.blocks.iter())
            .map(|r| r.end - r.start)
            .sum();
        if unreadable > 0 {
            tracing::warn!(volume = %name, stripe, unreadable = ?check.unreadable, "parity check: blocks answer data loss");
        }
        match &check.outcome {
            CheckOutcome::Checked => {
                counters.checked.fetch_add(1, Ordering::Relaxed);
                if check.mismatched() {
                    counters.mismatches.fetch_add(1, Ordering::Relaxed);
                    let detail: Vec<String> = check
                        .mismatches
                        .iter()
                        .map(|m| format!("column {} ({}) blocks {:?}", m.column, m.role, m.blocks))
                        .collect();
                    tracing::warn!(
                        volume = %name,
                        stripe,
                        columns = ?check.mismatched_columns(),
                        detail = %detail.join("; "),
                        "parity mismatch: the stripe's redundancy disagrees with its data"
                    );
                }
                job.update(|s| {
                    s.unreadable_blocks += unreadable;
                    if check.mismatched() {
                        s.mismatches += 1;
                        if s.mismatched_stripes.len() < MISMATCHES_LISTED {
                            s.mismatched_stripes.push(stripe);
                        }
                    }
                });
            }
            CheckOutcome::NothingToCheck | CheckOutcome::Degraded | CheckOutcome::Lost => {
                job.update(|s| s.skipped += 1)
            }
            CheckOutcome::ReadFailed { column, detail } => {
                tracing::warn!(volume = %name, stripe, column, error = %detail, "parity check: a unit could not be read");
                job.update(|s| {
                    s.failed += 1;
                    s.error = format!("stripe {stripe}, column {column}: {detail}");
                });
            }
        }
    }
}

/// Checks the stripes of `batch` concurrently, each under its own lock; answers in order.
async fn check_batch(
    array: &Arc<Array>,
    batch: std::ops::Range<u64>,
) -> Vec<Result<StripeCheck, AccessError>> {
    futures::future::join_all(batch.map(|s| array.check_stripe(s))).await
}
