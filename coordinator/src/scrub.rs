//! Online parity verification and rewrite (`docs/SCRUB.md`): one job per volume at a time, a
//! **check** ([`Array::check_stripe`]: each stripe's redundancy compared with its data under
//! the stripe's read lock; mismatches reported, never fixed) or a **rewrite**
//! ([`Array::resync_stripe`]: each stripe's redundancy rewritten from its data under its write
//! lock), sweeping the stripes from the first while clients read and write.
//!
//! **Resumable.** A job's checkpoint (the next stripe, and its counts so far) is in the store
//! (`crate::store::ParityJobRecord`), written when it starts and about every second, removed
//! when it completes: a job cut short by a coordinator restart (kill -9 included) resumes from
//! it once the volume is assembled again ([`Scrubs::resume`]), at most a second's stripes done
//! twice.
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
use std::time::Duration;

// tokio's clock: the simulation's where there is one (turmoil), the system's otherwise.
use tokio::time::Instant;

use dagraid_core::access::{AccessError, Array, CheckOutcome, StripeCheck};
use dagraid_core::array::ComponentState;
use dagraid_core::layout::RaidLevel;
use dagraid_core::resync::StripeOutcome;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use futures::StreamExt;

use crate::service_error::ServiceError;
use crate::store::{PARITY_JOB_RECORD_VERSION, ParityJobRecord, Store};
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
    /// The stripe its checkpoint resumed it from after a coordinator restart (0: it started
    /// from the first).
    pub resumed_from: u64,
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
    store: Store,
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
    /// The parity jobs over `volumes`' volumes, their checkpoints in `store`.
    pub fn new(volumes: Arc<VolumeManager>, store: Store, settings: ScrubSettings) -> Arc<Self> {
        Arc::new(Self {
            volumes,
            store,
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
    /// the volume runs, while it resyncs, and while a column is reconstructed, re-added or
    /// copied back.
    pub fn start(
        self: &Arc<Self>,
        name: &str,
        kind: ParityJobKind,
        rate: u64,
    ) -> Result<Arc<Volume>, ServiceError> {
        let rate = if rate == 0 {
            self.settings.default_rate
        } else {
            rate
        };
        self.launch(name, kind, rate, None)
    }

    /// Why a parity job of `volume` cannot start now, if it cannot.
    fn not_now(&self, volume: &Volume) -> Option<String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Some("the coordinator is stopping".into());
        }
        if volume.layout().level() == RaidLevel::Raid0 {
            return Some("RAID 0 has no redundancy: nothing to check or rewrite".into());
        }
        if volume.resyncing() {
            return Some("the volume is resyncing after an unclean shutdown (the resync rewrites every stripe's redundancy); start the parity job once it is done".into());
        }
        let states = volume.array().states();
        states
            .states()
            .iter()
            .enumerate()
            .find(|(_, s)| {
                matches!(
                    s,
                    ComponentState::Reconstructing
                        | ComponentState::Stale
                        | ComponentState::Copyback
                )
            })
            .map(|(c, s)| {
                format!(
                    "column {c} is {} (a repair comes first); start the parity job once it is done",
                    s.name()
                )
            })
    }

    /// Starts the job (from `resume`'s checkpoint when given) once the checks pass.
    fn launch(
        self: &Arc<Self>,
        name: &str,
        kind: ParityJobKind,
        rate: u64,
        resume: Option<&ParityJobRecord>,
    ) -> Result<Arc<Volume>, ServiceError> {
        let volume = self.volumes.get(name)?;
        if let Some(why) = self.not_now(&volume) {
            return Err(refused(name, why));
        }
        let total = volume.layout().stripes();
        let from = resume.map_or(0, |r| r.next_stripe.min(total));
        let job = Arc::new(Job {
            status: std::sync::Mutex::new(ParityJobStatus {
                kind,
                running: true,
                completed: false,
                stripes_done: from,
                stripes_total: total,
                mismatches: resume.map_or(0, |r| r.mismatches),
                mismatched_stripes: resume.map_or_else(Vec::new, |r| r.mismatched_stripes.clone()),
                rate: 0,
                rate_limit: rate,
                eta: None,
                error: String::new(),
                skipped: resume.map_or(0, |r| r.skipped),
                failed: resume.map_or(0, |r| r.failed),
                unreadable_blocks: resume.map_or(0, |r| r.unreadable_blocks),
                rewritten: resume.map_or(0, |r| r.rewritten),
                resumed_from: from,
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
        if resume.is_some() {
            tracing::info!(volume = %name, kind = kind.name(), rate, from, "parity job resumes from its checkpoint");
        } else {
            tracing::info!(volume = %name, kind = kind.name(), rate, "parity job starts");
        }
        let this = self.clone();
        let v = volume.clone();
        tokio::spawn(async move { this.sweep(v, kind, job, counters, rate, from).await });
        Ok(volume)
    }

    /// Resumes the jobs a restart cut short, from their checkpoints in the store: each waits
    /// (checking every second) until its volume is assembled and no resync or repair runs; a
    /// checkpoint whose volume is gone from the store is dropped.
    pub async fn resume(self: &Arc<Self>) {
        let records = match self.store.parity_jobs_async().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "parity-job checkpoints not read; none is resumed");
                return;
            }
        };
        for record in records {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "a parity-job checkpoint is not resumed");
                    continue;
                }
            };
            let this = self.clone();
            tokio::spawn(async move { this.resume_one(record).await });
        }
    }

    async fn resume_one(self: Arc<Self>, record: ParityJobRecord) {
        let kind = if record.kind == "rewrite" {
            ParityJobKind::Rewrite
        } else {
            ParityJobKind::Check
        };
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let entry = self
                .volumes
                .entries()
                .into_iter()
                .find(|e| e.id() == record.volume_id);
            match entry {
                None => {
                    tracing::info!(volume = %record.volume, "the volume of a parity-job checkpoint is gone; checkpoint dropped");
                    let _ = self
                        .store
                        .remove_parity_job_async(record.volume_id.clone())
                        .await;
                    return;
                }
                Some(e) => {
                    if let Ok(v) = self.volumes.get(e.name())
                        && self.not_now(&v).is_none()
                    {
                        match self.launch(e.name(), kind, record.rate, Some(&record)) {
                            Ok(_) => return,
                            Err(err) => {
                                tracing::debug!(volume = %record.volume, error = %err, "parity job not resumed yet")
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.cancel.cancelled() => return,
            }
        }
    }

    /// The checkpoint of `job` on volume `volume`, at `next`.
    fn record(
        volume: &Volume,
        kind: ParityJobKind,
        rate: u64,
        s: &ParityJobStatus,
        next: u64,
    ) -> ParityJobRecord {
        ParityJobRecord {
            version: PARITY_JOB_RECORD_VERSION,
            volume_id: volume.id().to_owned(),
            volume: volume.name().to_owned(),
            kind: kind.name().to_owned(),
            rate,
            next_stripe: next,
            mismatches: s.mismatches,
            mismatched_stripes: s.mismatched_stripes.clone(),
            skipped: s.skipped,
            failed: s.failed,
            unreadable_blocks: s.unreadable_blocks,
            rewritten: s.rewritten,
        }
    }

    /// Makes the checkpoint of `job` at `next` durable (a failure is logged: the job goes on,
    /// and a restart resumes it from an older checkpoint).
    async fn checkpoint(
        &self,
        volume: &Volume,
        kind: ParityJobKind,
        rate: u64,
        job: &Job,
        next: u64,
    ) {
        let record = Self::record(volume, kind, rate, &job.status(), next);
        if let Err(e) = self.store.put_parity_job_async(record).await {
            tracing::warn!(volume = volume.name(), error = %e, "parity-job checkpoint not recorded");
        }
    }

    /// Drops `volume`'s checkpoint: its job completed, or the volume is gone.
    async fn forget(&self, volume: &Volume) {
        if let Err(e) = self
            .store
            .remove_parity_job_async(volume.id().to_owned())
            .await
        {
            tracing::warn!(volume = volume.name(), error = %e, "parity-job checkpoint not removed (a restart runs the job again)");
        }
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
        from: u64,
    ) {
        let array = volume.array().clone();
        let name = volume.name().to_owned();
        let total = volume.layout().stripes();
        let per_stripe = volume.layout().unit_bytes() * volume.layout().columns() as u64;
        let mut throttle = Throttle::new(rate, self.settings.busy_rate, self.accesses());
        let in_flight = self.settings.stripes_in_flight.max(1) as u64;
        let mut stripe = from;
        self.checkpoint(&volume, kind, rate, &job, stripe).await;
        let mut checkpointed = Instant::now();
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
                self.checkpoint(&volume, kind, rate, &job, stripe).await;
                end(format!(
                    "stopped at stripe {stripe} (the coordinator is stopping); it resumes from its checkpoint"
                ));
                return;
            }
            match self.volumes.get(&name) {
                Ok(v) if v.id() == volume.id() => {}
                _ => {
                    if !self.volumes.entries().iter().any(|e| e.id() == volume.id()) {
                        self.forget(&volume).await;
                    }
                    end("the volume was deleted or is no longer assembled".into());
                    return;
                }
            }
            if checkpointed.elapsed() >= Duration::from_secs(1) {
                self.checkpoint(&volume, kind, rate, &job, stripe).await;
                checkpointed = Instant::now();
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
            let bytes = (stripe - from) * per_stripe;
            let (per_sec, eta) = progress(job.started, bytes, stripe - from, total - stripe);
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
        self.forget(&volume).await;
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
