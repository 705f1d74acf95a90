//! Reconstruction and copyback jobs: the coordinator's side of healing (`docs/REBUILD.md`).
//!
//! A **monitor** looks at every assembled volume every `poll` interval (and first assembles
//! again a volume not assembled for a node that did not answer, once it answers:
//! [`VolumeManager::assemble_returned`]):
//! - a column that is `reconstructing` with no job (the coordinator restarted) gets its job
//!   back, resuming from its durable watermark (the checkpoint);
//! - a column left in `copyback` by a restart gets its job back: the replacement is the one
//!   its copyback record names (`crate::store::CopybackRecord`), and the copy goes on from its
//!   durable watermark (the checkpoint), after copying again the stripes below it that the
//!   parity map names (written while the replacement may have missed them);
//! - a column that has been `failed` for the down-out delay is reconstructed onto a spare of
//!   the pool that fits; while none fits, or the delay has not passed, or a resync must finish
//!   first, the volume says why (`Volume.rebuild_waiting`).
//!
//! A **job** sweeps the stripes from the watermark up in batches
//! ([`Array::start_reconstruct_stripes`], under the batch's write locks; two batches in flight
//! while clients are idle, the watermarks moving in order), then the rate limit, and user I/O
//! first (one batch at a time while clients are active; a batch waits while accesses queue for
//! admission, up to a bound so the rebuild always moves). The watermark is made
//! durable every `checkpoint_every` (the checkpoint: only stripes the target acknowledged lie
//! below it), and at the end the column becomes optimal. Several volumes rebuild at once, each
//! job bounded by its rate. A copyback job copies a column that lives on a spare to a
//! replacement with [`Array::copy_stripe`], then the replacement takes the column's place and
//! the spare returns to the pool.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

// tokio's clock: the simulation's where there is one (turmoil), the system's otherwise.
use tokio::time::Instant;

use dagraid_core::access::{AccessError, Array, ReconstructBatch};
use dagraid_core::array::ComponentState;
use dagraid_core::io::ComponentIo;
use dagraid_core::layout::ColumnSet;
use dashmap::DashMap;

use crate::labels::LabelColumn;
use crate::remote::RemoteComponent;
use crate::service_error::ServiceError;
use crate::spares::SpareRecord;
use crate::store::CopybackRecord;
use crate::throttle::{Throttle, progress};
use crate::volumes::{Volume, VolumeManager};

/// How many times the monitor tries to re-add a failed column whose node came back (one try
/// per look) before it gives up and says why in `Volume.rebuild_waiting`.
pub const READD_TRIES: u32 = 5;

/// Settings of the reconstruction jobs.
#[derive(Debug, Clone, Copy)]
pub struct RebuildSettings {
    /// How long a column stays failed before it is rebuilt onto a spare.
    pub down_out_delay: Duration,
    /// Default rate limit while clients are idle, bytes written per second (0: none).
    pub default_rate: u64,
    /// Rate limit while clients read or write (0: none).
    pub busy_rate: u64,
    /// How often a job makes its watermark durable.
    pub checkpoint_every: Duration,
    /// How often the monitor looks at the volumes.
    pub poll: Duration,
    /// Wait before a stripe that failed is tried again.
    pub retry: Duration,
    /// Stripes reconstructed together, under their write locks held at once (more in flight
    /// to the nodes; user I/O to those stripes waits for the batch).
    pub stripes_per_batch: u64,
    /// Batches in flight at once while clients are idle (the reads of one overlap the writes
    /// of the other; the watermarks still move in order); one while they are active.
    pub batches_in_flight: usize,
}

impl Default for RebuildSettings {
    fn default() -> Self {
        Self {
            down_out_delay: Duration::from_millis(crate::config::DEFAULT_DOWN_OUT_DELAY_MS),
            default_rate: crate::config::DEFAULT_REBUILD_RATE,
            busy_rate: crate::config::DEFAULT_REBUILD_RATE_BUSY,
            checkpoint_every: Duration::from_secs(1),
            poll: Duration::from_millis(500),
            retry: Duration::from_secs(1),
            stripes_per_batch: 32,
            batches_in_flight: 2,
        }
    }
}

/// What a job writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildKind {
    /// Reconstruction onto a spare of the pool.
    Spare,
    /// Reconstruction onto a blank component at the column's place.
    InPlace,
    /// Copy of a column from its spare to a replacement.
    Copyback,
    /// Re-add of the column's own component, back after an outage: only the regions the
    /// parity map names (written while it was away, or in flight when it failed) are rebuilt.
    ReAdd,
}

impl RebuildKind {
    /// Stable lowercase name (metrics, logs).
    pub fn name(self) -> &'static str {
        match self {
            RebuildKind::Spare => "spare",
            RebuildKind::InPlace => "in_place",
            RebuildKind::Copyback => "copyback",
            RebuildKind::ReAdd => "re_add",
        }
    }
}

/// Where a reconstruction asked for by hand goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebuildTarget {
    /// The spare of the pool that fits best.
    BestSpare,
    /// This spare.
    Spare(String),
    /// A blank component at the column's own place.
    InPlace,
}

/// The progress of one job, as the API and metrics show it.
#[derive(Debug, Clone)]
pub struct RebuildStatus {
    /// The column.
    pub column: usize,
    /// What it writes to.
    pub kind: RebuildKind,
    /// The component written: node and id.
    pub node_id: String,
    /// The component's id.
    pub component_id: String,
    /// Whether it runs.
    pub running: bool,
    /// Whether it finished.
    pub completed: bool,
    /// Stripes below the watermark.
    pub stripes_done: u64,
    /// Stripes of the volume.
    pub stripes_total: u64,
    /// Bytes written to the target by this job.
    pub bytes_done: u64,
    /// Recent rate, bytes per second.
    pub rate: u64,
    /// The rate limit (0: none).
    pub rate_limit: u64,
    /// Estimated time left.
    pub eta: Option<Duration>,
    /// Volume blocks recorded lost on the way.
    pub lost_blocks: u64,
    /// Why it stopped early; while running, the last error retried.
    pub error: String,
    /// Stripe it resumed from.
    pub resumed_from: u64,
    /// Stripes below the last durable checkpoint: a restart resumes from there at the latest.
    pub stripes_checkpointed: u64,
    /// A re-add: dirty regions rebuilt so far.
    pub regions_resynced: u64,
    /// A re-add: regions the parity map named dirty when it started (writes meanwhile may
    /// add more).
    pub regions_total: u64,
    /// Why the job is what it is, when that needs saying (a re-add that fell back to a full
    /// reconstruction, and why).
    pub note: String,
}

struct Job {
    status: std::sync::Mutex<RebuildStatus>,
    stop: AtomicBool,
    started: Instant,
}

impl Job {
    fn update(&self, f: impl FnOnce(&mut RebuildStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn status(&self) -> RebuildStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn running(&self) -> bool {
        self.status().running
    }
}

/// The reconstruction subsystem of a coordinator: the monitor, the jobs, their statuses.
pub struct Rebuilds {
    volumes: Arc<VolumeManager>,
    settings: RebuildSettings,
    /// The last job of each (volume name, column).
    jobs: DashMap<(String, usize), Arc<Job>>,
    /// When the monitor first saw each (volume id, column) failed.
    failed_since: DashMap<(String, usize), Instant>,
    /// Why a volume's failed columns wait, by volume name.
    waiting: DashMap<String, String>,
    /// Volumes (by id) whose copyback records the monitor has checked for copybacks that
    /// ended without their record removed (a crash at the end).
    copybacks_checked: DashMap<String, ()>,
    /// Re-adds of (volume id, column) cut short in a row (the column failed again while its
    /// node answered): each is noted as returned again, up to [`READD_TRIES`].
    readds_cut_short: DashMap<(String, usize), u32>,
    stopping: AtomicBool,
}

impl std::fmt::Debug for Rebuilds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuilds")
            .field("settings", &self.settings)
            .field("jobs", &self.jobs.len())
            .finish_non_exhaustive()
    }
}

fn refused(volume: &str, column: usize, detail: impl Into<String>) -> ServiceError {
    ServiceError::Access {
        volume: volume.to_owned(),
        source: AccessError::Rebuild {
            column,
            detail: detail.into(),
        },
    }
}

impl Rebuilds {
    /// The subsystem over `volumes`' volumes and spare pool.
    pub fn new(volumes: Arc<VolumeManager>, settings: RebuildSettings) -> Arc<Self> {
        Arc::new(Self {
            volumes,
            settings,
            jobs: DashMap::new(),
            failed_since: DashMap::new(),
            waiting: DashMap::new(),
            copybacks_checked: DashMap::new(),
            readds_cut_short: DashMap::new(),
            stopping: AtomicBool::new(false),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &RebuildSettings {
        &self.settings
    }

    /// Runs the monitor until `shutdown` resolves, then stops the jobs (each ends its stripe and
    /// makes its checkpoint durable).
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.clone().look().await;
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.settings.poll) => {}
            }
        }
        self.stop().await;
    }

    /// Stops every job: each ends its stripe and makes its checkpoint durable; waits up to 30 s.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for j in self.jobs.iter() {
            j.stop.store(true, Ordering::SeqCst);
        }
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && self.jobs.iter().any(|j| j.running()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The jobs of volume `name` (running ones and the last of each column), by column.
    pub fn statuses(&self, name: &str) -> Vec<RebuildStatus> {
        let mut out: Vec<RebuildStatus> = self
            .jobs
            .iter()
            .filter(|e| e.key().0 == name)
            .map(|e| e.value().status())
            .collect();
        out.sort_by_key(|s| s.column);
        out
    }

    /// Every job's status with its volume's name.
    pub fn all(&self) -> Vec<(String, RebuildStatus)> {
        self.jobs
            .iter()
            .map(|e| (e.key().0.clone(), e.value().status()))
            .collect()
    }

    /// Why volume `name`'s failed columns are not being rebuilt, if they wait.
    pub fn waiting(&self, name: &str) -> Option<String> {
        self.waiting.get(name).map(|w| w.clone())
    }

    fn running(&self, name: &str, column: usize) -> bool {
        self.jobs
            .get(&(name.to_owned(), column))
            .is_some_and(|j| j.running())
    }

    /// One look at every volume (the monitor's round).
    async fn look(self: Arc<Self>) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        // Volumes not assembled for a node that did not answer, once it does.
        self.volumes.assemble_returned().await;
        for volume in self.volumes.list() {
            if volume.layout().fault_tolerance() == 0 {
                continue;
            }
            if let Err(e) = self.clone().look_at(&volume).await {
                tracing::warn!(volume = volume.name(), error = %e, "rebuild monitor");
            }
        }
    }

    async fn look_at(self: Arc<Self>, volume: &Arc<Volume>) -> Result<(), ServiceError> {
        let name = volume.name().to_owned();
        let array = volume.array().clone();
        let states = array.states();
        // Reconstructions without a job (the coordinator restarted): resume them, grouped by
        // watermark so columns at the same place go in one pass.
        let mut groups: std::collections::BTreeMap<(bool, u64), Vec<usize>> = Default::default();
        for (c, w) in array.reconstructing() {
            if !self.running(&name, c) {
                let readd = states.get(c) == Some(ComponentState::Stale);
                groups.entry((readd, w)).or_default().push(c);
            }
        }
        for ((readd, w), columns) in groups {
            let members = volume.components();
            let kind = |c: usize| {
                if readd {
                    RebuildKind::ReAdd
                } else if self
                    .volumes
                    .spares()
                    .get(&members[c].component_id)
                    .is_some()
                {
                    RebuildKind::Spare
                } else {
                    RebuildKind::InPlace
                }
            };
            tracing::info!(volume = %name, ?columns, watermark = w, "resuming reconstruction from its checkpoint");
            let targets: Vec<(usize, RebuildKind)> =
                columns.iter().map(|&c| (c, kind(c))).collect();
            self.clone().spawn_reconstruction(
                volume.clone(),
                targets,
                self.settings.default_rate,
                w,
            );
        }
        // Copybacks cut short by a restart: resumed from their checkpoints.
        self.look_at_copybacks(volume).await?;
        let id = volume.id().to_owned();
        // Failed columns whose node came back: re-added from their own component (the map
        // says what they missed), before any spare is considered.
        let mut readd_refused = Vec::new();
        if !volume.resyncing() {
            for c in 0..states.columns() {
                if states.get(c) != Some(ComponentState::Failed)
                    || !self.volumes.returned(&id, c)
                    || self.running(&name, c)
                {
                    continue;
                }
                let tries = self.volumes.forget_returned(&id, c).unwrap_or(0) + 1;
                match self
                    .start_readd(volume, c, self.settings.default_rate)
                    .await
                {
                    Ok(kind) => {
                        tracing::info!(volume = %name, column = c, kind = kind.name(), "failed column came back; re-added")
                    }
                    // A node that answers its health checks may still time out a label read
                    // or a fence once: tried again on the next looks, a few times.
                    Err(e) if tries < READD_TRIES => {
                        tracing::warn!(volume = %name, column = c, error = %e, tries, "failed column came back but was not re-added; tried again");
                        self.volumes.retry_returned(&id, c, tries);
                    }
                    Err(e) => {
                        tracing::warn!(volume = %name, column = c, error = %e, tries, "failed column came back but was not re-added; given up (`dagraid volume re-add` tries by hand)");
                        readd_refused.push(format!("column {c} was not re-added: {e}"));
                    }
                }
            }
        }
        let states = array.states();
        let failed: Vec<usize> = (0..states.columns())
            .filter(|&c| states.get(c) == Some(ComponentState::Failed))
            .collect();
        self.failed_since
            .retain(|(v, c), _| *v != id || failed.contains(c));
        if failed.is_empty() {
            self.waiting.remove(&name);
            return Ok(());
        }
        let now = Instant::now();
        for &c in &failed {
            self.failed_since.entry((id.clone(), c)).or_insert(now);
        }
        if volume.resyncing() {
            self.waiting.insert(
                name.clone(),
                "the resync must finish before a failed column is rebuilt".into(),
            );
            return Ok(());
        }
        if !states.gone_columns().is_empty() {
            self.waiting.insert(
                name.clone(),
                format!(
                    "columns {:?} are gone beyond the tolerance: nothing is rebuilt until their nodes answer again",
                    states.gone_columns().iter().collect::<Vec<_>>()
                ),
            );
            return Ok(());
        }
        let ready: Vec<usize> = failed
            .iter()
            .copied()
            .filter(|&c| {
                self.failed_since
                    .get(&(id.clone(), c))
                    .is_some_and(|t| t.elapsed() >= self.settings.down_out_delay)
            })
            .collect();
        if ready.is_empty() {
            let left = failed
                .iter()
                .filter_map(|&c| self.failed_since.get(&(id.clone(), c)).map(|t| *t))
                .map(|t| self.settings.down_out_delay.saturating_sub(t.elapsed()))
                .min()
                .unwrap_or_default();
            let mut why = readd_refused;
            why.push(format!(
                "column(s) {failed:?} failed; rebuilt onto a spare when the down-out delay ({}s) has passed, in {}s",
                self.settings.down_out_delay.as_secs(),
                left.as_secs()
            ));
            self.waiting.insert(name.clone(), why.join("; "));
            return Ok(());
        }
        let mut targets = Vec::new();
        let mut missing = Vec::new();
        let mut chosen: Vec<String> = Vec::new();
        for &c in &ready {
            match self.spare_for(volume, c, None, &chosen) {
                Ok(spare) => {
                    chosen.push(spare.id.clone());
                    targets.push((c, spare));
                }
                Err(why) => missing.push(why),
            }
        }
        missing.extend(readd_refused);
        if !missing.is_empty() {
            self.waiting.insert(name.clone(), missing.join("; "));
        } else {
            self.waiting.remove(&name);
        }
        let mut started = Vec::new();
        for (c, spare) in targets {
            match self.begin_on_spare(volume, c, spare).await {
                Ok(()) => started.push((c, RebuildKind::Spare)),
                Err(e) => {
                    tracing::warn!(volume = %name, column = c, error = %e, "reconstruction onto a spare could not start");
                    self.waiting
                        .insert(name.clone(), format!("column {c}: {e}"));
                }
            }
        }
        if !started.is_empty() {
            self.clone().spawn_reconstruction(
                volume.clone(),
                started,
                self.settings.default_rate,
                0,
            );
        }
        Ok(())
    }

    /// The spare for `column` of `volume`: `wanted` if given (it must fit), else one the pool
    /// already gave this column (a start cut short), else the best fit not in `chosen`.
    fn spare_for(
        &self,
        volume: &Volume,
        column: usize,
        wanted: Option<&str>,
        chosen: &[String],
    ) -> Result<SpareRecord, String> {
        let pool = self.volumes.spares();
        let g = volume.layout().geometry();
        let block_size = g.block_size() as u32;
        let blocks = g.blocks_per_column();
        let members = volume.components();
        let nodes: Vec<String> = members.iter().map(|m| m.node_id.clone()).collect();
        let ours = |s: &SpareRecord| {
            s.in_use
                .as_ref()
                .is_some_and(|u| u.volume_id == volume.id() && u.column as usize == column)
        };
        if let Some(id) = wanted {
            let s = pool
                .get(id)
                .ok_or_else(|| format!("there is no spare {id:?} in the pool"))?;
            if s.in_use.is_some() && !ours(&s) {
                let u = s.in_use.as_ref().map(|u| (u.volume.clone(), u.column));
                return Err(format!("spare {id} is in use by {u:?}"));
            }
            if s.block_size != block_size || s.block_count < blocks {
                return Err(format!(
                    "spare {id} has {} blocks of {} bytes; column {column} needs {blocks} blocks of {block_size}",
                    s.block_count, s.block_size
                ));
            }
            if nodes.contains(&s.node_id) {
                return Err(format!(
                    "spare {id} is on node {}, which holds a column of the volume",
                    s.node_id
                ));
            }
            if !pool.reachable(&s) {
                return Err(format!("spare {id}'s node {} does not answer", s.node_id));
            }
            return Ok(s);
        }
        if let Some(s) = pool
            .used_by(volume.name())
            .into_iter()
            .find(|s| ours(s) && pool.reachable(s))
        {
            return Ok(s);
        }
        pool.fits(block_size, blocks, &nodes)
            .into_iter()
            .find(|s| !chosen.contains(&s.id))
            .ok_or_else(|| {
                format!(
                    "no spare fits column {column}: it needs {blocks} blocks of {block_size} bytes on a reachable node holding no column of the volume (`dagraid spare add --node NODE`)"
                )
            })
    }

    /// Takes `spare` for `column` and makes it the column's component, reconstructing from
    /// watermark 0, durably.
    async fn begin_on_spare(
        &self,
        volume: &Arc<Volume>,
        column: usize,
        spare: SpareRecord,
    ) -> Result<(), ServiceError> {
        let pool = self.volumes.spares();
        let ours = spare
            .in_use
            .as_ref()
            .is_some_and(|u| u.volume_id == volume.id() && u.column as usize == column);
        if !ours {
            pool.take(&spare.id, volume.name(), volume.id(), column as u32)
                .await?;
        }
        let before = volume.components()[column].component_id.clone();
        let r = self
            .begin_on(volume, column, &spare.node_id, &spare.id, spare.serial)
            .await;
        if r.is_err() {
            if let Err(e) = pool.release(&spare.id).await {
                tracing::warn!(spare = %spare.id, error = %e, "spare not returned to the pool");
            }
        } else {
            self.retire_old_spare(volume, column, &before).await;
        }
        r
    }

    /// After another component took `column`'s place: the spare the column failed on (if its
    /// member `old` was one) leaves the column, back to the pool or dropped from it.
    async fn retire_old_spare(&self, volume: &Volume, column: usize, old: &str) {
        let pool = self.volumes.spares();
        let was_ours = pool.get(old).is_some_and(|s| {
            s.in_use
                .as_ref()
                .is_some_and(|u| u.volume_id == volume.id() && u.column as usize == column)
        });
        if was_ours && volume.components()[column].component_id != old {
            match pool.retire(old).await {
                Ok(back) => {
                    tracing::info!(
                        spare = old,
                        back,
                        "the spare column {column} failed on left it"
                    )
                }
                Err(e) => {
                    tracing::warn!(spare = old, error = %e, "the spare column {column} failed on is still marked in use")
                }
            }
        }
    }

    /// Makes component `component_id` (serial `serial`) on node `node_id` the component of
    /// failed `column`: the labels name it, the array writes it, and the column is
    /// reconstructing from watermark 0, durably. Undone if that fails.
    async fn begin_on(
        &self,
        volume: &Arc<Volume>,
        column: usize,
        node_id: &str,
        component_id: &str,
        serial: u64,
    ) -> Result<(), ServiceError> {
        let node = self.volumes.registry().get(node_id).ok_or_else(|| {
            refused(
                volume.name(),
                column,
                format!("node {node_id:?} is not registered"),
            )
        })?;
        let g = volume.layout().geometry();
        let remote = RemoteComponent::new(
            node.client().clone(),
            component_id.to_owned(),
            g.block_size() as u32,
            g.blocks_per_column(),
        )
        .map_err(|e| refused(volume.name(), column, e.to_string()))?;
        let labels = volume.recorder().labels();
        let before = labels.columns()[column].clone();
        labels.set_column(
            column,
            LabelColumn {
                node_id: node_id.to_owned(),
                component_id: component_id.to_owned(),
                serial,
                client: node.client().clone(),
            },
        );
        let io: Arc<dyn ComponentIo> = Arc::new(remote);
        match volume.array().start_reconstruction(column, Some(io)).await {
            Ok(()) => {
                tracing::info!(
                    volume = volume.name(),
                    column,
                    node = node_id,
                    component = component_id,
                    "reconstruction starts"
                );
                Ok(())
            }
            Err(e) => {
                if volume.array().states().get(column) == Some(ComponentState::Failed) {
                    labels.set_column(column, before);
                }
                Err(volume_error(volume, e))
            }
        }
    }

    /// Starts a reconstruction of failed `column` of volume `name` now, onto `target`, at
    /// `rate` bytes per second (0: the default). Answers once the column is reconstructing.
    pub async fn rebuild_column(
        self: &Arc<Self>,
        name: &str,
        column: usize,
        target: RebuildTarget,
        rate: u64,
    ) -> Result<Arc<Volume>, ServiceError> {
        let volume = self.volumes.get(name)?;
        redundant_column(&volume, column, "rebuild")?;
        let state = volume.array().states().get(column);
        if state != Some(ComponentState::Failed) {
            let detail = match state {
                Some(ComponentState::Reconstructing) => {
                    "it is being reconstructed already".to_owned()
                }
                Some(s) => format!(
                    "it is {s}; only a failed column is rebuilt (`dagraid volume fail` first to replace a working one)"
                ),
                None => "no such column".to_owned(),
            };
            return Err(refused(name, column, detail));
        }
        if volume.resyncing() {
            return Err(refused(
                name,
                column,
                "the volume's resync must finish first",
            ));
        }
        if self.running(name, column) {
            return Err(refused(name, column, "a job runs on this column already"));
        }
        let rate = if rate == 0 {
            self.settings.default_rate
        } else {
            rate
        };
        let kind = match target {
            RebuildTarget::InPlace => {
                self.begin_in_place(&volume, column).await?;
                RebuildKind::InPlace
            }
            RebuildTarget::Spare(id) => {
                let spare = self
                    .spare_for(&volume, column, Some(&id), &[])
                    .map_err(|d| refused(name, column, d))?;
                self.begin_on_spare(&volume, column, spare).await?;
                RebuildKind::Spare
            }
            RebuildTarget::BestSpare => {
                let spare = self
                    .spare_for(&volume, column, None, &[])
                    .map_err(|d| refused(name, column, d))?;
                self.begin_on_spare(&volume, column, spare).await?;
                RebuildKind::Spare
            }
        };
        self.clone()
            .spawn_reconstruction(volume.clone(), vec![(column, kind)], rate, 0);
        Ok(volume)
    }

    /// A blank component at `column`'s own place (its node), created there; the failed one is
    /// deleted first if the node still has it.
    async fn begin_in_place(
        &self,
        volume: &Arc<Volume>,
        column: usize,
    ) -> Result<(), ServiceError> {
        let member = volume.components()[column].clone();
        let node = self
            .volumes
            .registry()
            .get(&member.node_id)
            .ok_or_else(|| {
                refused(
                    volume.name(),
                    column,
                    format!("node {:?} is not registered", member.node_id),
                )
            })?;
        if !node.reachable() {
            return Err(refused(
                volume.name(),
                column,
                format!("node {} does not answer", member.node_id),
            ));
        }
        if let Err(e) = node.client().delete_component(&member.component_id).await {
            tracing::info!(volume = volume.name(), column, component = %member.component_id, error = %e, "the failed component was not deleted (the node may have lost it)");
        }
        let g = volume.layout().geometry();
        let id = format!(
            "{}-c{column}-r{:08x}",
            volume.id(),
            self.volumes.ids().u32()
        );
        let info = node
            .client()
            .create_component(&id, g.block_size() as u32, g.blocks_per_column(), 0)
            .await
            .map_err(|e| {
                refused(
                    volume.name(),
                    column,
                    format!("creating a blank component on {}: {e}", member.node_id),
                )
            })?;
        let r = self
            .begin_on(volume, column, &member.node_id, &info.id, info.serial)
            .await;
        if r.is_err() {
            let _ = node.client().delete_component(&info.id).await;
        } else {
            self.retire_old_spare(volume, column, &member.component_id)
                .await;
        }
        r
    }

    /// Re-adds failed `column` of volume `name` from its own component, now, at `rate` bytes
    /// per second (0: the default): the component must be back on its node with a label that
    /// fits (`docs/REBUILD.md`, "Re-add"). Answers once the column is stale (being re-added)
    /// or, when the parity map cannot say what it missed, reconstructing in full.
    pub async fn re_add_column(
        self: &Arc<Self>,
        name: &str,
        column: usize,
        rate: u64,
    ) -> Result<Arc<Volume>, ServiceError> {
        let volume = self.volumes.get(name)?;
        redundant_column(&volume, column, "re-add")?;
        match volume.array().states().get(column) {
            Some(ComponentState::Failed) => {}
            Some(s) => {
                return Err(refused(
                    name,
                    column,
                    format!("it is {s}; only a failed column is re-added"),
                ));
            }
            None => return Err(refused(name, column, "no such column")),
        }
        if volume.resyncing() {
            return Err(refused(
                name,
                column,
                "the volume's resync must finish first",
            ));
        }
        if self.running(name, column) {
            return Err(refused(name, column, "a job runs on this column already"));
        }
        let rate = if rate == 0 {
            self.settings.default_rate
        } else {
            rate
        };
        self.volumes.forget_returned(volume.id(), column);
        self.start_readd(&volume, column, rate).await?;
        Ok(volume)
    }

    /// Fences failed `column`'s own component at a new epoch, checks that it came back fit to
    /// be re-added, and starts its re-add (or, when the map cannot be trusted for it, a full
    /// reconstruction onto it, saying why). Answers the kind of job started.
    ///
    /// The fence comes first: a fence of this coordinator the node applied without its answer
    /// getting here (a one-way partition, a connection cut; the column failed meanwhile) left
    /// the component at an epoch the calls of this coordinator do not carry, and the node
    /// refuses every one of them as stale, the label read included, until a fence is answered.
    /// Nothing recorded the lost fence, so this one goes at its epoch again, which the node
    /// takes again (a component fence at the component's current epoch drains and answers);
    /// no epoch is ever taken as accepted without the node's answer.
    async fn start_readd(
        self: &Arc<Self>,
        volume: &Arc<Volume>,
        column: usize,
        rate: u64,
    ) -> Result<RebuildKind, ServiceError> {
        let name = volume.name();
        let member = volume.components()[column].clone();
        let node = self
            .volumes
            .registry()
            .get(&member.node_id)
            .ok_or_else(|| {
                refused(
                    name,
                    column,
                    format!("node {:?} is not registered", member.node_id),
                )
            })?;
        if !node.reachable() {
            return Err(refused(
                name,
                column,
                format!("node {} does not answer", member.node_id),
            ));
        }
        // A late write of the old epoch must never land on the component from now on, and
        // the label is read at the new epoch (see above).
        node.client()
            .fence_component(&member.component_id)
            .await
            .map_err(|e| refused(name, column, fence_refused(&member, &e)))?;
        let labels = volume.recorder().labels();
        let durable = volume.recorder().durable();
        let label = match labels.read_label(column, node.client().io_deadline()).await {
            dagraid_core::meta::assembly::Found::Label(l) => l,
            dagraid_core::meta::assembly::Found::Foreign(why)
            | dagraid_core::meta::assembly::Found::Unreachable(why) => {
                return Err(refused(
                    name,
                    column,
                    format!("its component cannot be re-added: {why}"),
                ));
            }
        };
        let expected = labels.label(column, &durable);
        let misfit = if label.volume_id != volume.id() {
            Some(format!(
                "its label belongs to volume {:?} ({})",
                label.volume_name, label.volume_id
            ))
        } else if label.column as usize != column {
            Some(format!("its label names column {}", label.column))
        } else if label.geometry != expected.geometry {
            Some(format!(
                "its label has another geometry ({:?}, not {:?})",
                label.geometry, expected.geometry
            ))
        } else if label.mod_counter > durable.mod_counter {
            Some(format!(
                "its label counter {} is newer than the volume's {}",
                label.mod_counter, durable.mod_counter
            ))
        } else {
            None
        };
        if let Some(why) = misfit {
            return Err(refused(
                name,
                column,
                format!(
                    "component {} on {} does not fit: {why}; it is never re-added (rebuild the column instead)",
                    member.component_id, member.node_id
                ),
            ));
        }
        let full = untrusted_map(&durable, label.mod_counter);
        let g = volume.layout().geometry();
        let remote = RemoteComponent::new(
            node.client().clone(),
            member.component_id.clone(),
            g.block_size() as u32,
            g.blocks_per_column(),
        )
        .map_err(|e| refused(name, column, e.to_string()))?;
        let io: Arc<dyn ComponentIo> = Arc::new(remote);
        let kind = match &full {
            None => {
                volume
                    .array()
                    .start_readd(column, Some(io))
                    .await
                    .map_err(|e| volume_error(volume, e))?;
                RebuildKind::ReAdd
            }
            Some(why) => {
                tracing::warn!(volume = name, column, reason = %why, "re-add falls back to a full reconstruction onto the column's own component");
                volume
                    .array()
                    .start_reconstruction(column, Some(io))
                    .await
                    .map_err(|e| volume_error(volume, e))?;
                RebuildKind::InPlace
            }
        };
        let dirty = volume.array().parity_map().counts().dirty;
        tracing::info!(
            volume = name,
            column,
            node = %member.node_id,
            component = %member.component_id,
            label_counter = label.mod_counter,
            dirty_regions = dirty,
            kind = kind.name(),
            "re-add starts"
        );
        let job = self.new_job(volume, column, kind, rate, 0);
        job.update(|s| {
            if kind == RebuildKind::ReAdd {
                s.regions_total = dirty;
            }
            if let Some(why) = &full {
                s.note = format!("re-add fell back to a full reconstruction: {why}");
            }
        });
        let this = self.clone();
        let v = volume.clone();
        tokio::spawn(async move {
            this.sweep(
                v.clone(),
                std::iter::once(column).collect(),
                vec![job.clone()],
                rate,
                0,
            )
            .await;
            this.after_readd(&v, &[(column, kind)], &[job]);
        });
        Ok(kind)
    }

    fn new_job(
        &self,
        volume: &Volume,
        column: usize,
        kind: RebuildKind,
        rate: u64,
        from: u64,
    ) -> Arc<Job> {
        let member = volume.components()[column].clone();
        let job = Arc::new(Job {
            status: std::sync::Mutex::new(RebuildStatus {
                column,
                kind,
                node_id: member.node_id,
                component_id: member.component_id,
                running: true,
                completed: false,
                stripes_done: from,
                stripes_total: volume.layout().stripes(),
                bytes_done: 0,
                rate: 0,
                rate_limit: rate,
                eta: None,
                lost_blocks: 0,
                error: String::new(),
                resumed_from: from,
                stripes_checkpointed: from,
                regions_resynced: 0,
                regions_total: 0,
                note: String::new(),
            }),
            stop: AtomicBool::new(false),
            started: Instant::now(),
        });
        self.jobs
            .insert((volume.name().to_owned(), column), job.clone());
        job
    }

    fn spawn_reconstruction(
        self: Arc<Self>,
        volume: Arc<Volume>,
        targets: Vec<(usize, RebuildKind)>,
        rate: u64,
        from: u64,
    ) {
        let jobs: Vec<Arc<Job>> = targets
            .iter()
            .map(|&(c, kind)| self.new_job(&volume, c, kind, rate, from))
            .collect();
        let columns: ColumnSet = targets.iter().map(|(c, _)| *c).collect();
        tokio::spawn(async move {
            self.sweep(volume.clone(), columns, jobs.clone(), rate, from)
                .await;
            self.after_readd(&volume, &targets, &jobs);
        });
    }

    /// A re-add cut short by its column failing again (a write that timed out on a node that
    /// is slow, or answers again only in part) is tried again: its node answers, so nothing
    /// else would note the column as returned, and the volume would stay degraded until the
    /// down-out delay (found by the simulation: seed 55 and slow links).
    fn after_readd(&self, volume: &Volume, targets: &[(usize, RebuildKind)], jobs: &[Arc<Job>]) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let id = volume.id().to_owned();
        let states = volume.array().states();
        for (&(column, kind), job) in targets.iter().zip(jobs) {
            if kind != RebuildKind::ReAdd {
                continue;
            }
            let key = (id.clone(), column);
            if job.status().error.is_empty() {
                self.readds_cut_short.remove(&key);
                continue;
            }
            if states.get(column) != Some(ComponentState::Failed) {
                continue;
            }
            let mut tries = self.readds_cut_short.entry(key).or_insert(0);
            *tries += 1;
            if *tries < READD_TRIES {
                tracing::warn!(
                    volume = volume.name(),
                    column,
                    tries = *tries,
                    "re-add cut short; tried again"
                );
                self.volumes.retry_returned(&id, column, 0);
            }
        }
    }

    fn should_stop(&self, jobs: &[Arc<Job>]) -> bool {
        self.stopping.load(Ordering::SeqCst) || jobs.iter().any(|j| j.stop.load(Ordering::SeqCst))
    }

    /// Client accesses answered so far on every volume (reads and writes).
    fn accesses(&self) -> u64 {
        self.volumes.client_accesses()
    }

    /// User I/O first: while accesses wait for admission, the next stripe waits too (at most
    /// 50 ms, so the rebuild always moves).
    async fn yield_to_users(&self) {
        if let Some(admission) = self.volumes.admission() {
            crate::throttle::yield_to_users(admission).await;
        }
    }

    async fn sweep(
        &self,
        volume: Arc<Volume>,
        columns: ColumnSet,
        jobs: Vec<Arc<Job>>,
        rate: u64,
        from: u64,
    ) {
        let array = volume.array().clone();
        let name = volume.name().to_owned();
        let total = volume.layout().stripes();
        let mut throttle = Throttle::new(rate, self.settings.busy_rate, self.accesses());
        let mut checkpoint = Instant::now();
        // The watermark the batches reached (their targets acknowledged every stripe below
        // it), and the first stripe no batch has started yet.
        let mut stripe = from;
        let mut next = from;
        let mut in_flight: VecDeque<ReconstructBatch> = VecDeque::new();
        let mut bytes = 0u64;
        // A re-add rebuilds only the stripes of dirty regions; the last region it rebuilt.
        let readd = jobs.iter().any(|j| j.status().kind == RebuildKind::ReAdd);
        let map = array.parity_map();
        let mut last_region: Option<u64> = None;
        let all = |f: &dyn Fn(&mut RebuildStatus)| {
            for j in &jobs {
                j.update(f);
            }
        };
        let end = |why: String| {
            tracing::warn!(volume = %name, columns = ?columns.iter().collect::<Vec<_>>(), error = %why, "reconstruction stopped");
            all(&|s| {
                s.running = false;
                s.error = why.clone();
                s.eta = None;
            });
        };
        while stripe < total {
            if self.should_stop(&jobs) {
                settle(&mut in_flight).await;
                let _ = array.checkpoint().await;
                end(format!(
                    "stopped at stripe {stripe} (the coordinator is stopping); it resumes from its checkpoint"
                ));
                return;
            }
            if self.volumes.get(&name).is_err() {
                settle(&mut in_flight).await;
                end("the volume was deleted or is no longer assembled".into());
                return;
            }
            // Another batch while there is room: up to `batches_in_flight` while the clients
            // are idle (the reads of one overlap the writes of the other), one at a time while
            // they are active.
            let limit = throttle.rate(self.accesses());
            let depth = if throttle.clients_active() {
                1
            } else {
                self.settings.batches_in_flight.max(1)
            };
            // A re-add skips the regions the map calls clean: once the batches below landed,
            // the watermark moves past them under their locks (nothing is read or written).
            let clean_next = readd && next < total && !map.is_dirty(map.region_of(next));
            if clean_next && in_flight.is_empty() && next == stripe {
                match array.advance_clean(&columns, next..total).await {
                    Ok(at) if at > next => {
                        stripe = at;
                        next = at;
                        all(&|s| s.stripes_done = at);
                        continue;
                    }
                    // Marked meanwhile: rebuilt like any dirty region.
                    Ok(_) => {}
                    Err(e) => {
                        let why = e.to_string();
                        tracing::warn!(volume = %name, stripe, error = %why, "re-add could not pass a clean region; tried again");
                        all(&|s| s.error = why.clone());
                        tokio::time::sleep(self.settings.retry).await;
                        continue;
                    }
                }
            }
            let room = !clean_next || in_flight.is_empty();
            let started = if room && in_flight.len() < depth && next < total {
                self.yield_to_users().await;
                // No more stripes in a batch than a second's worth at the limit now, so the
                // checkpoint after it follows the rate.
                let per_stripe = volume.layout().unit_bytes() * columns.len().max(1) as u64;
                let mut per_batch = self.settings.stripes_per_batch.max(1);
                if limit > 0 {
                    per_batch = per_batch.min((limit / per_stripe.max(1)).max(1));
                }
                let mut end = (next + per_batch).min(total);
                if readd {
                    // Never into the next region, which may be clean.
                    let region = map.region_of(next);
                    end = end.min(map.stripes_of(region).end);
                    if last_region != Some(region) {
                        last_region = Some(region);
                        all(&|s| s.regions_resynced += 1);
                    }
                }
                let batch = next..end;
                let started = array
                    .start_reconstruct_stripes(&columns, batch.clone(), in_flight.back_mut())
                    .await;
                if let Ok(b) = started {
                    next = batch.end;
                    in_flight.push_back(b);
                    continue;
                }
                started.err()
            } else {
                None
            };
            let (result, batch_end) = match started {
                Some(e) => (Err(e), next),
                None => match in_flight.pop_front() {
                    Some(b) => {
                        let end = b.stripes().end;
                        (b.finish().await, end)
                    }
                    None => {
                        next = stripe;
                        continue;
                    }
                },
            };
            // Where the watermarks are now (a batch cut short by an error moved them past the
            // stripes done before it).
            let states = array.states();
            if let Some(c) = columns
                .iter()
                .find(|&c| !states.get(c).is_some_and(|s| s.is_recovering()))
            {
                settle(&mut in_flight).await;
                end(format!(
                    "column {c} is {} now",
                    states.get(c).map(|s| s.name()).unwrap_or("gone")
                ));
                return;
            }
            let at = columns
                .iter()
                .map(|c| states.recovered()[c])
                .min()
                .unwrap_or(stripe);
            match result {
                Ok(done) => {
                    // The batches above may have moved the watermarks further already; this
                    // one's part ends at its last stripe.
                    let at = at.min(batch_end);
                    if at <= stripe {
                        settle(&mut in_flight).await;
                        end(format!(
                            "no progress at stripe {stripe}: the watermarks of the columns differ"
                        ));
                        return;
                    }
                    if at < batch_end {
                        // The batch stopped short: the ones above it move nothing; the next
                        // batch starts at the watermark.
                        settle(&mut in_flight).await;
                        next = at;
                    }
                    stripe = at;
                    bytes += done.bytes;
                    let lost: u64 = done.lost.iter().map(|r| r.end - r.start).sum();
                    let (per_sec, eta) =
                        progress(jobs[0].started, bytes, stripe - from, total - stripe);
                    let share = bytes / jobs.len().max(1) as u64;
                    all(&|s| {
                        s.stripes_done = stripe;
                        s.bytes_done = share;
                        s.rate = per_sec;
                        s.eta = eta;
                        s.lost_blocks += lost;
                        s.error.clear();
                    });
                    // The checkpoint before the throttle's wait: it never lags the stripes
                    // done by more than the batches in flight.
                    if checkpoint.elapsed() >= self.settings.checkpoint_every {
                        match array.checkpoint().await {
                            Ok(()) => all(&|s| s.stripes_checkpointed = stripe),
                            Err(e) => {
                                tracing::warn!(volume = %name, error = %e, "reconstruction checkpoint not recorded");
                            }
                        }
                        checkpoint = Instant::now();
                    }
                    throttle.consume(done.bytes, self.accesses()).await;
                    let limit = throttle.current();
                    all(&|s| s.rate_limit = limit);
                }
                Err(AccessError::Rebuild { column, detail }) => {
                    settle(&mut in_flight).await;
                    end(format!("column {column}: {detail}"));
                    return;
                }
                Err(e) => {
                    // The batches above moved nothing past the one that failed.
                    settle(&mut in_flight).await;
                    stripe = at.max(stripe);
                    next = stripe;
                    let why = e.to_string();
                    tracing::warn!(volume = %name, stripe, error = %why, "reconstruction of a stripe failed; tried again");
                    all(&|s| s.error = why.clone());
                    tokio::time::sleep(self.settings.retry).await;
                    continue;
                }
            }
        }
        settle(&mut in_flight).await;
        for c in columns.iter() {
            let mut tries = 0;
            loop {
                match array.finish_reconstruction(c).await {
                    Ok(()) => break,
                    Err(e) if tries < 10 && !self.should_stop(&jobs) => {
                        tries += 1;
                        tracing::warn!(volume = %name, column = c, error = %e, "reconstruction done but not recorded; tried again");
                        tokio::time::sleep(self.settings.retry).await;
                    }
                    Err(e) => {
                        end(format!("column {c}: the end could not be recorded: {e}"));
                        return;
                    }
                }
            }
        }
        if readd {
            let regions = jobs.first().map_or(0, |j| j.status().regions_resynced);
            tracing::info!(volume = %name, columns = ?columns.iter().collect::<Vec<_>>(), bytes, regions, "re-add complete");
        } else {
            tracing::info!(volume = %name, columns = ?columns.iter().collect::<Vec<_>>(), bytes, "reconstruction complete");
        }
        all(&|s| {
            s.running = false;
            s.completed = true;
            s.eta = None;
            s.stripes_done = total;
            s.stripes_checkpointed = total;
        });
    }

    /// Copies `column` of volume `name`, which lives on a spare, to a new component on node
    /// `to_node`, at `rate` bytes per second (0: the default); then the replacement takes the
    /// column's place and the spare returns to the pool. Answers once the copy started.
    pub async fn copyback(
        self: &Arc<Self>,
        name: &str,
        column: usize,
        to_node: &str,
        rate: u64,
    ) -> Result<Arc<Volume>, ServiceError> {
        let volume = self.volumes.get(name)?;
        let members = volume.components();
        let Some(member) = members.get(column).cloned() else {
            return Err(volume_error(
                &volume,
                AccessError::Array(dagraid_core::array::ArrayError::NoSuchColumn {
                    column,
                    columns: members.len(),
                }),
            ));
        };
        let pool = self.volumes.spares();
        let spare = pool
            .get(&member.component_id)
            .filter(|s| s.in_use.as_ref().is_some_and(|u| u.volume_id == volume.id() && u.column as usize == column))
            .ok_or_else(|| refused(name, column, format!("column {column} does not live on a spare of the pool (its component is {} on {})", member.component_id, member.node_id)))?;
        if self.running(name, column) {
            return Err(refused(name, column, "a job runs on this column already"));
        }
        if let Some(other) = members
            .iter()
            .find(|m| m.node_id == to_node && m.column as usize != column)
        {
            return Err(refused(
                name,
                column,
                format!(
                    "node {to_node} holds column {} of the volume already",
                    other.column
                ),
            ));
        }
        let node =
            self.volumes.registry().get(to_node).ok_or_else(|| {
                refused(name, column, format!("node {to_node:?} is not registered"))
            })?;
        if !node.reachable() {
            return Err(refused(
                name,
                column,
                format!("node {to_node} does not answer"),
            ));
        }
        let g = volume.layout().geometry();
        let id = format!(
            "{}-c{column}-r{:08x}",
            volume.id(),
            self.volumes.ids().u32()
        );
        let info = node
            .client()
            .create_component(&id, g.block_size() as u32, g.blocks_per_column(), 0)
            .await
            .map_err(|e| {
                refused(
                    name,
                    column,
                    format!("creating the replacement on {to_node}: {e}"),
                )
            })?;
        let remote = RemoteComponent::new(
            node.client().clone(),
            info.id.clone(),
            g.block_size() as u32,
            g.blocks_per_column(),
        )
        .map_err(|e| refused(name, column, e.to_string()))?;
        // The job exists (running) before the column is in copyback, so the monitor never
        // takes the copyback for one cut short by a restart.
        let rate = if rate == 0 {
            self.settings.default_rate
        } else {
            rate
        };
        let job = self.new_job(&volume, column, RebuildKind::Copyback, rate, 0);
        job.update(|s| {
            s.node_id = to_node.to_owned();
            s.component_id = info.id.clone();
        });
        // The replacement is recorded before the column is in copyback: after a restart the
        // copy resumes onto it (the members name it only at the end).
        let record = CopybackRecord {
            version: crate::store::COPYBACK_RECORD_VERSION,
            volume_id: volume.id().to_owned(),
            column: column as u32,
            spare_id: spare.id.clone(),
            node_id: to_node.to_owned(),
            component_id: info.id.clone(),
            serial: info.serial,
            rate,
        };
        let key = record.key();
        if let Err(e) = self.volumes.store().put_copyback_async(record).await {
            let _ = node.client().delete_component(&info.id).await;
            job.update(|s| {
                s.running = false;
                s.error = e.to_string();
            });
            return Err(e.into());
        }
        let copy = match volume
            .array()
            .start_copyback(column, Arc::new(remote) as Arc<dyn ComponentIo>)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = node.client().delete_component(&info.id).await;
                let _ = self.volumes.store().remove_copyback_async(key).await;
                job.update(|s| {
                    s.running = false;
                    s.error = e.to_string();
                });
                return Err(volume_error(&volume, e));
            }
        };
        let this = self.clone();
        let v = volume.clone();
        let replacement = LabelColumn {
            node_id: to_node.to_owned(),
            component_id: info.id.clone(),
            serial: info.serial,
            client: node.client().clone(),
        };
        let spare_id = spare.id.clone();
        tokio::spawn(async move {
            this.copy(v, column, copy, replacement, spare_id, job, rate, 0, key)
                .await;
        });
        Ok(volume)
    }

    /// The copybacks of `volume` cut short by a restart (a column `copyback` with no job):
    /// each resumes onto the replacement its record names, from its checkpoint; one with no
    /// usable record leaves the column on its spare. Once per volume, a record left by a
    /// copyback that ended (a crash before its removal) is settled.
    async fn look_at_copybacks(self: &Arc<Self>, volume: &Arc<Volume>) -> Result<(), ServiceError> {
        let name = volume.name().to_owned();
        let id = volume.id().to_owned();
        let array = volume.array().clone();
        let states = array.states();
        let cut: Vec<usize> = (0..states.columns())
            .filter(|&c| states.get(c) == Some(ComponentState::Copyback) && !self.running(&name, c))
            .collect();
        let checked = self.copybacks_checked.contains_key(&id);
        if cut.is_empty() && checked {
            return Ok(());
        }
        let records: Vec<CopybackRecord> = self
            .volumes
            .store()
            .copybacks_async()
            .await?
            .into_iter()
            .filter_map(|r| match r {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "copyback record unusable; its copyback is not resumed");
                    None
                }
            })
            .filter(|r| r.volume_id == id)
            .collect();
        for c in cut {
            match records.iter().find(|r| r.column as usize == c) {
                Some(r) => self.resume_copyback(volume, r.clone()).await?,
                None => {
                    array
                        .clear_copyback(c)
                        .await
                        .map_err(|e| volume_error(volume, e))?;
                    tracing::warn!(volume = %name, column = c, "copyback cut short by a restart, with no record of its replacement (an older coordinator?); the column stays on its spare (start it again by hand)");
                }
            }
        }
        if !checked {
            let states = array.states();
            for r in &records {
                let c = r.column as usize;
                if states.get(c) != Some(ComponentState::Copyback) && !self.running(&name, c) {
                    self.settle_copyback_record(volume, r).await;
                }
            }
            self.copybacks_checked.insert(id, ());
        }
        Ok(())
    }

    /// A copyback record whose column is no longer in copyback, with no job: the copyback
    /// ended before a restart. Completed (the replacement is the member): the spare goes back
    /// to the pool if it is still marked in use by the column. Otherwise (stopped, or cut
    /// before the column was in copyback): the replacement is deleted. Then the record goes.
    async fn settle_copyback_record(&self, volume: &Volume, r: &CopybackRecord) {
        let c = r.column as usize;
        let members = volume.components();
        let completed = members
            .get(c)
            .is_some_and(|m| m.component_id == r.component_id);
        if completed {
            let pool = self.volumes.spares();
            let held = pool.get(&r.spare_id).is_some_and(|s| {
                s.in_use
                    .as_ref()
                    .is_some_and(|u| u.volume_id == r.volume_id && u.column as usize == c)
            });
            if held && let Err(e) = pool.release(&r.spare_id).await {
                tracing::warn!(spare = %r.spare_id, error = %e, "copyback completed before a restart, but the spare could not be returned to the pool");
                return;
            }
        } else if let Some(node) = self.volumes.registry().get(&r.node_id) {
            let _ = node.client().delete_component(&r.component_id).await;
        }
        if let Err(e) = self.volumes.store().remove_copyback_async(r.key()).await {
            tracing::warn!(volume = volume.name(), column = c, error = %e, "copyback record not removed");
        }
    }

    /// Resumes the copyback of record `r` (its column is `copyback`, with no job).
    async fn resume_copyback(
        self: &Arc<Self>,
        volume: &Arc<Volume>,
        r: CopybackRecord,
    ) -> Result<(), ServiceError> {
        let name = volume.name().to_owned();
        let column = r.column as usize;
        let array = volume.array().clone();
        let Some(node) = self
            .volumes
            .registry()
            .get(&r.node_id)
            .filter(|n| n.reachable())
        else {
            // Tried again on the next looks; the column is current on its spare meanwhile.
            self.waiting.insert(
                name.clone(),
                format!(
                    "the copyback of column {column} resumes when node {} answers",
                    r.node_id
                ),
            );
            return Ok(());
        };
        let member = volume.components()[column].clone();
        let g = volume.layout().geometry();
        let resumed = if member.component_id != r.spare_id {
            Err(format!(
                "the column lives on {}, not on the recorded spare {}",
                member.component_id, r.spare_id
            ))
        } else {
            match RemoteComponent::new(
                node.client().clone(),
                r.component_id.clone(),
                g.block_size() as u32,
                g.blocks_per_column(),
            ) {
                Ok(remote) => array
                    .resume_copyback(column, Arc::new(remote) as Arc<dyn ComponentIo>)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        let (copy, from) = match resumed {
            Ok(x) => x,
            Err(why) => {
                tracing::warn!(volume = %name, column, error = %why, "copyback cut short by a restart cannot resume; the column stays on its spare");
                array
                    .clear_copyback(column)
                    .await
                    .map_err(|e| volume_error(volume, e))?;
                let _ = node.client().delete_component(&r.component_id).await;
                let _ = self.volumes.store().remove_copyback_async(r.key()).await;
                return Ok(());
            }
        };
        self.waiting.remove(&name);
        tracing::info!(volume = %name, column, watermark = from, node = %r.node_id, "resuming copyback from its checkpoint");
        let job = self.new_job(volume, column, RebuildKind::Copyback, r.rate, from);
        job.update(|s| {
            s.node_id = r.node_id.clone();
            s.component_id = r.component_id.clone();
        });
        let replacement = LabelColumn {
            node_id: r.node_id.clone(),
            component_id: r.component_id.clone(),
            serial: r.serial,
            client: node.client().clone(),
        };
        let this = self.clone();
        let v = volume.clone();
        let key = r.key();
        tokio::spawn(async move {
            this.copy(
                v,
                column,
                copy,
                replacement,
                r.spare_id,
                job,
                r.rate,
                from,
                key,
            )
            .await;
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &self,
        volume: Arc<Volume>,
        column: usize,
        copy: Arc<dagraid_core::reconstruct::CopybackIo>,
        replacement: LabelColumn,
        spare_id: String,
        job: Arc<Job>,
        rate: u64,
        from: u64,
        key: String,
    ) {
        let array: Arc<Array> = volume.array().clone();
        let name = volume.name().to_owned();
        let total = volume.layout().stripes();
        let mut throttle = Throttle::new(rate, self.settings.busy_rate, self.accesses());
        let mut bytes = 0;
        let abort = |why: String| {
            let array = array.clone();
            let copy = copy.clone();
            let job = job.clone();
            let name = name.clone();
            let replacement = replacement.clone();
            let store = self.volumes.store().clone();
            let key = key.clone();
            async move {
                tracing::warn!(volume = %name, column, error = %why, "copyback stopped; the column stays on its spare");
                if let Err(e) = array.abort_copyback(column, &copy, &why).await {
                    tracing::warn!(volume = %name, column, error = %e, "copyback abort not recorded");
                }
                let _ = replacement
                    .client
                    .delete_component(&replacement.component_id)
                    .await;
                if let Err(e) = store.remove_copyback_async(key).await {
                    tracing::warn!(volume = %name, column, error = %e, "copyback record not removed");
                }
                job.update(|s| {
                    s.running = false;
                    s.error = why;
                    s.eta = None;
                });
            }
        };
        // Resumed after a restart: the stripes below the checkpoint that took a write the
        // replacement may have missed (cut by the crash, or made before the copy resumed) lie
        // in regions the parity map names (it is held during a copyback); copied again first.
        let map = array.parity_map();
        let mut redo: VecDeque<u64> = (0..from)
            .filter(|&s| map.is_dirty(map.region_of(s)))
            .collect();
        if !redo.is_empty() {
            tracing::info!(volume = %name, column, stripes = redo.len(), "copyback resumed: copying again the stripes below its checkpoint written meanwhile");
        }
        // The watermark: every stripe below it is on the replacement (once `redo` is empty).
        let mut next = from;
        let mut failures = 0;
        let mut checkpoint = Instant::now();
        while next < total || !redo.is_empty() {
            if self.should_stop(std::slice::from_ref(&job)) {
                // The coordinator stops: the column stays in copyback, its checkpoint durable
                // and its record kept; the next coordinator resumes it.
                if let Err(e) = array.checkpoint_copyback(column, next).await {
                    tracing::warn!(volume = %name, column, error = %e, "copyback checkpoint not recorded");
                }
                job.update(|s| {
                    s.running = false;
                    s.error = format!(
                        "stopped at stripe {next} (the coordinator is stopping); it resumes from its checkpoint"
                    );
                    s.eta = None;
                });
                return;
            }
            if let Some(why) = copy.broken() {
                abort(why).await;
                return;
            }
            self.yield_to_users().await;
            let stripe = redo.front().copied().unwrap_or(next);
            match array.copy_stripe(column, &copy, stripe).await {
                Ok(n) => {
                    if redo.pop_front().is_none() {
                        next += 1;
                    }
                    bytes += n;
                    failures = 0;
                    let (per_sec, eta) = progress(job.started, bytes, next, total - next);
                    job.update(|s| {
                        s.stripes_done = next;
                        s.bytes_done = bytes;
                        s.rate = per_sec;
                        s.eta = eta;
                    });
                    throttle.consume(n, self.accesses()).await;
                    let limit = throttle.current();
                    job.update(|s| s.rate_limit = limit);
                    if checkpoint.elapsed() >= self.settings.checkpoint_every {
                        match array.checkpoint_copyback(column, next).await {
                            Ok(()) => job.update(|s| s.stripes_checkpointed = next),
                            Err(e) => {
                                tracing::warn!(volume = %name, column, error = %e, "copyback checkpoint not recorded");
                            }
                        }
                        checkpoint = Instant::now();
                    }
                }
                Err(e) if failures < 5 && copy.broken().is_none() => {
                    failures += 1;
                    job.update(|s| s.error = e.to_string());
                    tokio::time::sleep(self.settings.retry).await;
                }
                Err(e) => {
                    abort(e.to_string()).await;
                    return;
                }
            }
        }
        // The replacement takes the column's place: named in the labels first (a record written
        // meanwhile that names it is safe: it holds every stripe and takes every write).
        let labels = volume.recorder().labels();
        let before = labels.columns()[column].clone();
        labels.set_column(column, replacement.clone());
        if let Err(e) = array.finish_copyback(column, &copy).await {
            labels.set_column(column, before);
            abort(e.to_string()).await;
            return;
        }
        if let Err(e) = self.volumes.spares().release(&spare_id).await {
            tracing::warn!(spare = %spare_id, error = %e, "copyback done, but the spare could not be returned to the pool");
            job.update(|s| s.error = format!("the spare was not returned to the pool: {e}"));
        } else if let Err(e) = self.volumes.store().remove_copyback_async(key).await {
            tracing::warn!(volume = %name, column, error = %e, "copyback record not removed (the monitor removes it at the next start)");
        }
        tracing::info!(volume = %name, column, node = %replacement.node_id, "copyback complete; the spare is back in the pool");
        job.update(|s| {
            s.running = false;
            s.completed = true;
            s.eta = None;
            s.stripes_done = total;
            s.stripes_checkpointed = total;
        });
    }
}

/// Why the fence of a re-add's component was refused, in the words of the label check for a
/// component its node lost or failed (the label check itself comes after the fence).
fn fence_refused(member: &crate::store::ComponentRecord, status: &tonic::Status) -> String {
    match crate::error::classify(status) {
        crate::error::NodeErrorKind::UnknownComponent => format!(
            "its component cannot be re-added: component {} is missing on node {}",
            member.component_id, member.node_id
        ),
        crate::error::NodeErrorKind::ComponentFailed => format!(
            "its component cannot be re-added: component {} has failed on node {}: {}",
            member.component_id,
            member.node_id,
            status.message()
        ),
        _ => format!("its component could not be fenced: {}", status.message()),
    }
}

/// Why a re-add of a component whose label counter is `label_counter` cannot trust the
/// parity map of `durable` to name every region it missed (then the column is reconstructed in
/// full onto it); `None`: it can. The map is held while a column is not current, so it names
/// every region written since the component's last label unless a region was cleared after
/// that label (Linux md's `events_cleared` rule).
fn untrusted_map(durable: &crate::store::DurableState, label_counter: u64) -> Option<String> {
    match (durable.map.as_ref(), durable.map_cleared_at) {
        (None, _) => Some("the volume keeps no parity map yet".to_owned()),
        (Some(_), None) => Some(
            "the parity map does not say when it last cleared a region (written by an older coordinator)"
                .to_owned(),
        ),
        (Some(_), Some(cleared)) if label_counter < cleared => Some(format!(
            "the component's label counter {label_counter} is below the counter {cleared} at which the parity map last cleared a region: it may have missed writes the map no longer names"
        )),
        _ => None,
    }
}

/// Waits for every batch still in flight (a job that stops or starts again from the watermark):
/// each moves no watermark past a stripe its target did not acknowledge, nor past one a batch
/// below it did not reach, and releases its locks itself.
async fn settle(batches: &mut VecDeque<ReconstructBatch>) {
    while let Some(b) = batches.pop_front() {
        let _ = b.finish().await;
    }
}

/// Refuses a job on `column` of `volume` when there is no such column or the layout has no
/// redundancy to `verb` from.
fn redundant_column(volume: &Volume, column: usize, verb: &str) -> Result<(), ServiceError> {
    let columns = volume.layout().columns();
    if column >= columns {
        return Err(volume_error(
            volume,
            AccessError::Array(dagraid_core::array::ArrayError::NoSuchColumn { column, columns }),
        ));
    }
    if volume.layout().fault_tolerance() == 0 {
        return Err(refused(
            volume.name(),
            column,
            format!(
                "{} has no redundancy to {verb} from",
                volume.layout().level()
            ),
        ));
    }
    Ok(())
}

fn volume_error(volume: &Volume, source: AccessError) -> ServiceError {
    ServiceError::Access {
        volume: volume.name().to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use dagraid_core::parity_map::DirtyRegions;

    use super::*;
    use crate::store::DurableState;

    #[test]
    fn a_re_add_trusts_the_map_only_for_a_label_at_or_above_its_last_clear() {
        let mut d = DurableState::new(10, 3, false, vec![ComponentState::Failed; 3]);
        let why = untrusted_map(&d, 9).expect("no map");
        assert!(why.contains("no parity map"), "{why}");
        d.map = Some(DirtyRegions::default());
        let why = untrusted_map(&d, 9).expect("a map of an older coordinator");
        assert!(why.contains("older coordinator"), "{why}");
        d.map_cleared_at = Some(7);
        assert_eq!(untrusted_map(&d, 7), None);
        assert_eq!(untrusted_map(&d, 9), None);
        let why = untrusted_map(&d, 6).expect("cleared after its label");
        assert!(why.contains("below the counter 7"), "{why}");
    }
}
