//! The array's side of reconstruction and copyback: a column taking a new component, the
//! reconstruction of one stripe under its write lock ([`Array::reconstruct_stripe`]), the copy of
//! one stripe to a copyback's replacement ([`Array::copy_stripe`]), and the ends of both. The
//! unit logic is [`crate::reconstruct`]; the sweep, its throttle and its checkpoint are the
//! coordinator's job.
//!
//! Rules (docs/STATE.md, "Reconstruction"):
//! - A column's component changes only while the column is failed (a spare or a blank component
//!   takes its place, and the column becomes `reconstructing` at watermark 0), or at a
//!   copyback's start and end. Every stripe takes its copy of the component table after its
//!   stripe lock, so a DAG never mixes two.
//! - A stripe is reconstructed under its whole-stripe write lock, from its first read until every
//!   target acknowledged its write; only then does the column's watermark move past it (in
//!   memory; the job makes it durable as its checkpoint, so a checkpoint never names a stripe
//!   the target has not acknowledged).
//! - A target is never read for a stripe at or above its watermark: the column is missing there
//!   for every DAG, and a user write to such a stripe is a degraded write that the sweep will
//!   reconstruct when it gets there.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::array::{ComponentState, ComponentStates};
use crate::io::{ComponentIo, IoErrorKind};
use crate::layout::{ColumnSet, RaidLevel};
use crate::reconstruct::CopybackIo;
use crate::stripe_lock::{LockMode, StripeLockRequest};

use super::{AccessError, Array};

/// A write of whole blocks: (column, first component block, data).
type BlockWrite = (usize, u64, bytes::Bytes);

/// A batch of stripes being reconstructed ([`Array::start_reconstruct_stripes`]): its locks
/// are held by its own task until its targets acknowledged and the watermarks moved.
#[derive(Debug)]
pub struct ReconstructBatch {
    stripes: Range<u64>,
    task: tokio::task::JoinHandle<Result<StripeRebuild, AccessError>>,
    /// Closed once the task moved the watermarks past the batch or gave up: what a batch
    /// started above this one waits for before it moves them. Taken by that batch.
    settled: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl ReconstructBatch {
    /// The batch's stripes.
    pub fn stripes(&self) -> Range<u64> {
        self.stripes.clone()
    }

    /// Waits for the batch: what it did, or its first error (see
    /// [`Array::start_reconstruct_stripes`]).
    pub async fn finish(self) -> Result<StripeRebuild, AccessError> {
        self.task
            .await
            .map_err(|e| AccessError::Internal(format!("reconstruction task lost: {e}")))?
    }
}

/// What the reconstruction of one stripe did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StripeRebuild {
    /// Columns whose watermark moved past the stripe.
    pub columns: Vec<usize>,
    /// Bytes written to the targets.
    pub bytes: u64,
    /// Volume blocks recorded lost (unreadable on surviving columns beyond the redundancy).
    pub lost: Vec<Range<u64>>,
    /// Bad blocks of surviving columns rebuilt and written back.
    pub repaired_blocks: u64,
    /// Columns marked failed on the way.
    pub marked_failed: Vec<usize>,
}

impl Array {
    /// Starts the reconstruction of failed `column`: onto `component` when given (a spare, or
    /// a blank component at the column's place), else onto the column's own component. The
    /// column becomes `reconstructing` at watermark 0, durably, before this returns. A column
    /// already reconstructing is left as it is (`component` must then be `None`).
    pub async fn start_reconstruction(
        &self,
        column: usize,
        component: Option<Arc<dyn ComponentIo>>,
    ) -> Result<(), AccessError> {
        self.start_recovery(column, component, ComponentState::Reconstructing)
            .await
    }

    /// Starts the re-add of failed `column` onto `component`, the column's own component come
    /// back (its node already fenced it at a new epoch): the column becomes `stale` at
    /// watermark 0, durably, before this returns. The sweep then moves the watermark past the
    /// regions the parity map calls clean ([`Array::advance_clean`]) and reconstructs the
    /// stripes of the dirty ones ([`Array::start_reconstruct_stripes`]). A column that is
    /// stale already is left as it is (`component` must then be `None`).
    pub async fn start_readd(
        &self,
        column: usize,
        component: Option<Arc<dyn ComponentIo>>,
    ) -> Result<(), AccessError> {
        self.start_recovery(column, component, ComponentState::Stale)
            .await
    }

    async fn start_recovery(
        &self,
        column: usize,
        component: Option<Arc<dyn ComponentIo>>,
        to: ComponentState,
    ) -> Result<(), AccessError> {
        if let Some(c) = &component {
            self.check_component(column, c.as_ref())?;
        }
        let generation = {
            let mut st = self.lock_states();
            let state = st
                .get(column)
                .ok_or(crate::array::ArrayError::NoSuchColumn {
                    column,
                    columns: self.layout.columns(),
                })?;
            if state == to && component.is_none() {
                return Ok(());
            }
            if state != ComponentState::Failed {
                return Err(AccessError::Array(crate::array::ArrayError::NotAllowed {
                    column,
                    from: state,
                    to,
                }));
            }
            if let Some(c) = component {
                self.replace_component(column, c);
            }
            st.transition(&self.layout, column, to)?;
            st.generation()
        };
        self.make_durable(generation).await
    }

    /// Moves the watermark of each column of `columns` that is recovering at `stripes.start`
    /// past the stripes of `stripes` whose parity-map region is clean, up to the first stripe
    /// of a dirty region: a re-added column missed no write there (the map is held while a
    /// column is not current). Checked under the stripes' write locks, so a write into a
    /// region that is marked meanwhile either marked it first (the watermark stops there) or
    /// builds its DAG after the watermark moved (and writes the column). Answers where the
    /// watermarks are now.
    pub async fn advance_clean(
        &self,
        columns: &ColumnSet,
        stripes: Range<u64>,
    ) -> Result<u64, AccessError> {
        let stripes = stripes.start..stripes.end.min(self.layout.stripes());
        if stripes.is_empty() {
            return Ok(stripes.start);
        }
        let requests: Vec<StripeLockRequest> = stripes
            .clone()
            .map(|stripe| StripeLockRequest::whole_stripe(&self.layout, stripe, LockMode::Write))
            .collect();
        let locks = self
            .locks
            .lock(requests)
            .await
            .map_err(|e| AccessError::Internal(e.to_string()))?;
        let map = &self.parity_map;
        let mut end = stripes.start;
        while end < stripes.end && !map.is_dirty(map.region_of(end)) {
            end = map.stripes_of(map.region_of(end)).end.min(stripes.end);
        }
        if end > stripes.start {
            let mut st = self.lock_states();
            // Only a re-added column: a reconstructing one holds nothing of its own.
            for t in targets_at(&st, columns, stripes.start).iter() {
                if st.get(t) == Some(ComponentState::Stale) {
                    st.advance_recovery(t, end)?;
                }
            }
        }
        drop(locks);
        Ok(end)
    }

    /// Ends `column`'s reconstruction (or re-add) once its watermark reached the last stripe:
    /// the column is optimal, durably, before this returns.
    pub async fn finish_reconstruction(&self, column: usize) -> Result<(), AccessError> {
        let generation = {
            let mut st = self.lock_states();
            let state = st.get(column);
            let watermark = st.recovered().get(column).copied().unwrap_or(0);
            if !state.is_some_and(|s| s.is_recovering()) || watermark < self.layout.stripes() {
                return Err(AccessError::Rebuild {
                    column,
                    detail: format!(
                        "cannot finish: the column is {} at stripe {watermark} of {}",
                        state.map(|s| s.name()).unwrap_or("missing"),
                        self.layout.stripes()
                    ),
                });
            }
            st.transition(&self.layout, column, ComponentState::Optimal)?;
            st.generation()
        };
        self.make_durable(generation).await
    }

    /// Makes the current states durable: the reconstruction's checkpoint (its watermarks).
    pub async fn checkpoint(&self) -> Result<(), AccessError> {
        let generation = self.lock_states().generation();
        self.make_durable(generation).await
    }

    /// Reconstructs stripe `stripe` of every column of `columns` that is reconstructing with
    /// its watermark at `stripe` ([`Array::reconstruct_stripes`] of one stripe).
    pub async fn reconstruct_stripe(
        self: &Arc<Self>,
        columns: &ColumnSet,
        stripe: u64,
    ) -> Result<StripeRebuild, AccessError> {
        self.reconstruct_stripes(columns, stripe..stripe + 1).await
    }

    /// Reconstructs the stripes of `stripes` (the first at the watermark of every column of
    /// `columns` that is reconstructing; RAID 6: two columns in one pass): one batch
    /// ([`Array::start_reconstruct_stripes`]) with none in flight below it, waited for.
    pub async fn reconstruct_stripes(
        self: &Arc<Self>,
        columns: &ColumnSet,
        stripes: Range<u64>,
    ) -> Result<StripeRebuild, AccessError> {
        self.start_reconstruct_stripes(columns, stripes, None)
            .await?
            .finish()
            .await
    }

    /// Starts the reconstruction of the batch `stripes`: its write locks are taken (in
    /// increasing order) before this returns, and held until every target acknowledged and the
    /// watermarks moved, by a task of its own (a dropped caller cannot tear a stripe). The
    /// stripes are rebuilt concurrently; the watermarks then move past the longest run of
    /// stripes done from the first (in memory: [`Array::checkpoint`] makes them durable), so a
    /// stripe above a watermark is never current on its target. Blocks unreadable beyond the
    /// redundancy are recorded lost, durably, before anything is written, and the stripe is
    /// made consistent; a column that faults on the way is failed (within the tolerance) and
    /// the stripe tried again; a write with an unknown outcome is fenced before the stripe is
    /// tried again. The first error is answered after the watermarks moved past the stripes
    /// done before it.
    ///
    /// Without `after`, the first stripe is at the targets' watermark. With `after` (the batch
    /// just below, `after.stripes().end == stripes.start`, still in flight), this batch reads,
    /// solves and writes at once (its targets: the columns reconstructing at or below its first
    /// stripe), but moves the watermarks only once `after` settled, and only for a target whose
    /// watermark `after` brought to this batch's first stripe: the watermarks move strictly in
    /// order, and never past a stripe whose rebuilt blocks were not acknowledged. Anything
    /// unusual (a unit that does not read back whole, a write that failed) waits for `after`
    /// before it is handled stripe by stripe. A batch whose `after` stopped short moves nothing
    /// (its answer names no column); the sweep starts again from the watermark.
    pub async fn start_reconstruct_stripes(
        self: &Arc<Self>,
        columns: &ColumnSet,
        stripes: Range<u64>,
        after: Option<&mut ReconstructBatch>,
    ) -> Result<ReconstructBatch, AccessError> {
        let stripes = stripes.start..stripes.end.min(self.layout.stripes());
        let below = match after {
            Some(b) if b.stripes.end != stripes.start => {
                return Err(AccessError::Internal(format!(
                    "a batch at stripes {stripes:?} cannot follow one at {:?}",
                    b.stripes
                )));
            }
            Some(b) => Some(b.settled.take().ok_or_else(|| {
                AccessError::Internal(format!(
                    "the batch at stripes {:?} has a successor already",
                    b.stripes
                ))
            })?),
            None => None,
        };
        let (settle, settled) = tokio::sync::oneshot::channel::<()>();
        if stripes.is_empty() {
            let task = tokio::spawn(async move {
                if let Some(below) = below {
                    let _ = below.await;
                }
                drop(settle);
                Ok(StripeRebuild::default())
            });
            return Ok(ReconstructBatch {
                stripes,
                task,
                settled: Some(settled),
            });
        }
        let sb = self.layout.stripe_data_bytes();
        let mut accesses = Vec::with_capacity((stripes.end - stripes.start) as usize);
        for stripe in stripes.clone() {
            let map = self.layout.map(stripe * sb, sb)?;
            accesses.push(map.stripes[0].clone());
        }
        let requests: Vec<StripeLockRequest> = stripes
            .clone()
            .map(|stripe| StripeLockRequest::whole_stripe(&self.layout, stripe, LockMode::Write))
            .collect();
        let locks = self
            .locks
            .lock(requests)
            .await
            .map_err(|e| AccessError::Internal(e.to_string()))?;
        let this = self.clone();
        let columns = columns.clone();
        let range = stripes.clone();
        let task = tokio::spawn(async move {
            let first = stripes.start;
            let pipelined = below.is_some();
            // The common case first: every unit reads back whole, one call per column and MiB
            // for the batch, one write per target and MiB; anything else goes stripe by stripe
            // below (the locks are still held, so that is no blind retry).
            let fast = this
                .reconstruct_fast(&accesses, &columns, first, pipelined)
                .await;
            // The watermarks move in order: the batch below first.
            if let Some(below) = below {
                let _ = below.await;
            }
            let result = match fast {
                Ok(Some(written)) => {
                    let moved = this.advance_batch(&written.columns, first, stripes.end);
                    drop(locks);
                    moved.map(|columns| StripeRebuild {
                        bytes: if columns.is_empty() { 0 } else { written.bytes },
                        columns,
                        ..StripeRebuild::default()
                    })
                }
                Ok(None) => {
                    this.reconstruct_slow(&accesses, &columns, stripes, locks)
                        .await
                }
                Err(e) => {
                    let generation = this.lock_states().generation();
                    let durable = this.make_durable(generation).await;
                    drop(locks);
                    durable.and(Err(e))
                }
            };
            drop(settle);
            result
        });
        Ok(ReconstructBatch {
            stripes: range,
            task,
            settled: Some(settled),
        })
    }

    /// Moves the watermark of each of `targets` that is still reconstructing at stripe `first`
    /// to `end` (the stripes between were acknowledged); returns the columns moved.
    fn advance_batch(
        &self,
        targets: &[usize],
        first: u64,
        end: u64,
    ) -> Result<Vec<usize>, AccessError> {
        let mut st = self.lock_states();
        let mut moved = Vec::new();
        for &t in targets {
            if st.get(t).is_some_and(|s| s.is_recovering())
                && st.recovered().get(t).copied() == Some(first)
            {
                st.advance_recovery(t, end)?;
                moved.push(t);
            }
        }
        Ok(moved)
    }

    /// The batch stripe by stripe, under its locks (`locks`, released at the end).
    async fn reconstruct_slow(
        &self,
        accesses: &[crate::layout::StripeAccess],
        columns: &ColumnSet,
        stripes: Range<u64>,
        locks: crate::stripe_lock::StripeLocks,
    ) -> Result<StripeRebuild, AccessError> {
        let first = stripes.start;
        let runs = accesses.iter().map(|s| async move {
            let mut generation = 0;
            let r = self
                .reconstruct_locked(s, columns, first, &mut generation)
                .await;
            (r, generation)
        });
        let results = futures::future::join_all(runs).await;
        let generation = results.iter().map(|(_, g)| *g).max().unwrap_or(0);
        let mut done = StripeRebuild::default();
        let mut first_error = None;
        {
            let mut st = self.lock_states();
            for (stripe, (r, _)) in stripes.zip(results) {
                match r {
                    Ok(d) => {
                        done.bytes += d.bytes;
                        done.lost.extend(d.lost);
                        done.repaired_blocks += d.repaired_blocks;
                        done.marked_failed.extend(d.marked_failed);
                        if first_error.is_none() {
                            for t in d.columns {
                                if st.recovered().get(t).copied() == Some(stripe) {
                                    st.advance_recovery(t, stripe + 1)?;
                                    if !done.columns.contains(&t) {
                                        done.columns.push(t);
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        // Failures and lost marks are durable before the stripes are released.
        let durable = self.make_durable(generation).await;
        drop(locks);
        if let Some(e) = first_error {
            return Err(e);
        }
        durable.map(|_| done)
    }

    /// The batch's fast path: reads every column that is not missing over the whole batch (a
    /// call per MiB, all in flight at once), plans every stripe and writes each target's units
    /// (a call per MiB). Answers the targets written and the bytes, for the caller to move the
    /// watermarks. `Ok(None)` when a read answered anything but whole data or a write failed
    /// after its component was fenced (the caller then goes stripe by stripe, under the same
    /// locks); a target whose write failed and could not be fenced is failed (`Err`). Targets:
    /// the columns reconstructing at `first` (`pipelined`: at or below it, a batch below being
    /// in flight).
    async fn reconstruct_fast(
        &self,
        accesses: &[crate::layout::StripeAccess],
        columns: &ColumnSet,
        first: u64,
        pipelined: bool,
    ) -> Result<Option<StripeRebuild>, AccessError> {
        const CALL_BYTES: u64 = 1 << 20;
        let Some(last) = accesses.last() else {
            return Ok(Some(StripeRebuild::default()));
        };
        let (missing, targets, table) = {
            let st = self.lock_states();
            let targets = if pipelined {
                targets_below(&st, columns, first)
            } else {
                targets_at(&st, columns, first)
            };
            // The batch's stripes are all above the targets' watermark: one missing set.
            (st.missing_for(first), targets, self.components())
        };
        if targets.is_empty() || missing.len() > self.layout.fault_tolerance() {
            return Ok(None);
        }
        if accesses
            .iter()
            .any(|s| self.lock_states().missing_for(s.stripe) != missing)
        {
            return Ok(None);
        }
        let deadline = self.config.engine.node_deadline;
        let bs = self.layout.geometry().block_size();
        let unit = accesses[0].layout.component_blocks().count;
        let start = accesses[0].layout.component_blocks().first;
        let end = last.layout.component_blocks().first + unit;
        let per_call = (CALL_BYTES / bs).max(unit) / unit * unit;
        let calls: Vec<(u64, u64)> = (start..end)
            .step_by(per_call as usize)
            .map(|at| (at, per_call.min(end - at)))
            .collect();
        let reads = (0..self.layout.columns())
            .filter(|c| !missing.contains(*c))
            .flat_map(|c| {
                let io = table[c].clone();
                calls.iter().map(move |&(at, n)| {
                    let io = io.clone();
                    async move {
                        match tokio::time::timeout(deadline, io.read(at, n as u32)).await {
                            Ok(Ok(b)) if b.len() as u64 == n * bs => Some((c, at, b)),
                            _ => None,
                        }
                    }
                })
            });
        // Per column, its calls' answers in block order.
        let mut images: Vec<Vec<(u64, bytes::Bytes)>> = vec![Vec::new(); self.layout.columns()];
        for r in futures::future::join_all(reads).await {
            match r {
                Some((c, at, data)) => images[c].push((at, data)),
                None => return Ok(None),
            }
        }
        let n = self.layout.columns();
        let one_parity = matches!(self.layout.level(), RaidLevel::Raid4 | RaidLevel::Raid5)
            && targets.len() == 1
            && missing == targets
            && accesses
                .iter()
                .all(|s| (0..n).all(|c| s.layout.role_of(c).is_some()));
        let writes = if one_parity {
            // One unit missing per stripe of RAID 4/5: it is the XOR of the stripe's other
            // units, data or parity alike, and every column holds its units of the batch's
            // stripes in the same blocks. So the target's image of the batch is the XOR of the
            // other columns' images, call by call: one pass, no copy, no plan per stripe.
            let t = targets.iter().next().unwrap_or(0);
            let mut writes = Vec::with_capacity(calls.len());
            for &(at, count) in &calls {
                let sources: Vec<&[u8]> = images
                    .iter()
                    .filter_map(|answers| answers.iter().find(|(a, _)| *a == at))
                    .map(|(_, d)| &d[..])
                    .collect();
                if sources.len() != n - 1 {
                    return Ok(None);
                }
                let mut image = vec![0u8; (count * bs) as usize];
                crate::parity::xor_many(&mut image, &sources)
                    .map_err(|e| AccessError::Internal(e.to_string()))?;
                writes.push((t, at, bytes::Bytes::from(image)));
            }
            Some(writes)
        } else {
            self.plan_batch(accesses, &images, &missing, &targets, start, per_call)?
        };
        let Some(writes) = writes else {
            return Ok(None);
        };
        let errors = crate::resync::apply(&table, &writes, deadline).await;
        for e in &errors {
            let io = &table[e.column];
            let fenced = e.error.kind.outcome_unknown()
                && matches!(tokio::time::timeout(deadline, io.fence()).await, Ok(Ok(())));
            if !fenced && e.error.kind.outcome_unknown() {
                // A write that may still land late and cannot be fenced: the target is failed.
                let mut st = self.lock_states();
                st.transition(&self.layout, e.column, ComponentState::Failed)?;
                return Err(AccessError::Rebuild {
                    column: e.column,
                    detail: format!(
                        "the component being rebuilt failed and could not be fenced: {}",
                        e.error
                    ),
                });
            }
        }
        if !errors.is_empty() {
            return Ok(None);
        }
        Ok(Some(StripeRebuild {
            columns: targets.iter().collect(),
            bytes: writes.iter().map(|(_, _, d)| d.len() as u64).sum(),
            ..StripeRebuild::default()
        }))
    }

    /// The writes of a batch's targets, planned stripe by stripe ([`crate::reconstruct::plan`])
    /// from `images` (per column, its read answers by first block); `None` when a stripe needs
    /// anything but whole units written to the targets (lost blocks, repairs).
    fn plan_batch(
        &self,
        accesses: &[crate::layout::StripeAccess],
        images: &[Vec<(u64, bytes::Bytes)>],
        missing: &ColumnSet,
        targets: &ColumnSet,
        start: u64,
        per_call: u64,
    ) -> Result<Option<Vec<BlockWrite>>, AccessError> {
        let bs = self.layout.geometry().block_size();
        let unit = accesses[0].layout.component_blocks().count;
        let ub = (unit * bs) as usize;
        // The unit of column `c` at component block `block` (within one call's answer, since a
        // call covers whole units).
        let unit_of = |c: usize, block: u64| -> Option<&[u8]> {
            let (at, data) = images[c]
                .iter()
                .find(|(at, d)| *at <= block && block < *at + d.len() as u64 / bs)?;
            let o = ((block - at) * bs) as usize;
            Some(&data[o..o + ub])
        };
        let mut out: Vec<Vec<u8>> = vec![Vec::new(); self.layout.columns()];
        for (k, s) in accesses.iter().enumerate() {
            let block = start + k as u64 * unit;
            let image = crate::resync::StripeImage {
                units: (0..self.layout.columns())
                    .map(|c| {
                        if missing.contains(c) {
                            return None;
                        }
                        unit_of(c, block).map(|d| crate::resync::UnitImage {
                            data: d.to_vec(),
                            bad: vec![false; unit as usize],
                        })
                    })
                    .collect(),
            };
            let plan = crate::reconstruct::plan(&self.layout, &s.layout, &image, targets).map_err(
                |detail| AccessError::Rebuild {
                    column: targets.iter().next().unwrap_or(0),
                    detail,
                },
            )?;
            if !plan.lost.is_empty() {
                return Ok(None);
            }
            for (c, at, data) in plan.writes {
                if !targets.contains(c) || at != block || data.len() != ub {
                    return Ok(None);
                }
                out[c].extend_from_slice(&data);
            }
        }
        let writes: Vec<(usize, u64, bytes::Bytes)> = targets
            .iter()
            .flat_map(|t| {
                let data = bytes::Bytes::from(std::mem::take(&mut out[t]));
                let chunk = (per_call * bs) as usize;
                (0..data.len())
                    .step_by(chunk.max(1))
                    .map(move |o| {
                        (
                            t,
                            start + o as u64 / bs,
                            data.slice(o..(o + chunk).min(data.len())),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(Some(writes))
    }

    /// One stripe of a batch that starts at stripe `first`: its targets are the columns of
    /// `columns` reconstructing with their watermark at `first` (the caller holds every lock
    /// from `first` to this stripe, so no watermark moves meanwhile). The watermarks are the
    /// caller's to move.
    async fn reconstruct_locked(
        &self,
        s: &crate::layout::StripeAccess,
        columns: &ColumnSet,
        first: u64,
        generation: &mut u64,
    ) -> Result<StripeRebuild, AccessError> {
        let sl = s.layout;
        let stripe = s.stripe;
        let deadline = self.config.engine.node_deadline;
        let mut done = StripeRebuild::default();
        let mut last = String::new();
        for _ in 0..self.config.max_tries.max(1) {
            let (missing, targets, table) = {
                let st = self.lock_states();
                let targets = targets_at(&st, columns, first);
                (st.missing_for(stripe), targets, self.components())
            };
            if targets.is_empty() {
                return Ok(done);
            }
            if missing.len() > self.layout.fault_tolerance() {
                // A column besides the targets is gone or failed beyond the tolerance: its data
                // may come back with its node, so nothing is rebuilt (or recorded lost) from
                // what is left.
                return Err(AccessError::Unrecoverable {
                    offset: s.volume_range.start,
                    len: s.volume_range.end - s.volume_range.start,
                    lost: missing.iter().collect(),
                    detail: format!(
                        "reconstruction waits: columns {:?} are missing for stripe {stripe}, more than {} tolerates",
                        missing.iter().collect::<Vec<_>>(),
                        self.layout.level()
                    ),
                    torn: false,
                });
            }
            let image =
                match crate::resync::read_stripe(&self.layout, &table, &sl, &missing, deadline)
                    .await
                {
                    Ok(image) => image,
                    Err(e) => {
                        last = e.error.to_string();
                        self.rebuild_io_error(s, &table, e, &targets, &mut done, generation)
                            .await?;
                        continue;
                    }
                };
            let plan = crate::reconstruct::plan(&self.layout, &sl, &image, &targets).map_err(
                |detail| AccessError::Rebuild {
                    column: targets.iter().next().unwrap_or(0),
                    detail,
                },
            )?;
            if !plan.lost.is_empty() {
                let g = {
                    let mut st = self.lock_states();
                    for blocks in &plan.lost {
                        st.mark_lost(blocks.clone());
                    }
                    st.generation()
                };
                *generation = (*generation).max(g);
                tracing::warn!(
                    stripe,
                    blocks = ?plan.lost,
                    "reconstruction: blocks unreadable beyond the redundancy; recorded lost"
                );
                // Durable before the bad blocks are overwritten.
                self.make_durable(g).await?;
                done.lost.extend(plan.lost.iter().cloned());
            }
            let errors = crate::resync::apply(&table, &plan.writes, deadline).await;
            if errors.is_empty() {
                let bs = self.layout.geometry().block_size();
                done.bytes += plan
                    .writes
                    .iter()
                    .filter(|(c, _, _)| targets.contains(*c))
                    .map(|(_, _, d)| d.len() as u64)
                    .sum::<u64>()
                    .min(targets.len() as u64 * sl.component_blocks().count * bs);
                done.repaired_blocks += plan.repaired_blocks;
                done.columns.extend(targets.iter());
                return Ok(done);
            }
            for e in errors {
                last = e.error.to_string();
                self.rebuild_io_error(s, &table, e, &targets, &mut done, generation)
                    .await?;
            }
        }
        Err(AccessError::RetriesExhausted {
            stripe,
            tries: self.config.max_tries.max(1),
            last,
        })
    }

    /// A component call of a reconstruction failed. A write with an unknown outcome is fenced
    /// first (it must not land late, after the stripe lock is released); then a component
    /// fault fails the column: a target simply stops being reconstructed (its state becomes
    /// failed), a surviving column is failed within the tolerance like an access does.
    async fn rebuild_io_error(
        &self,
        s: &crate::layout::StripeAccess,
        table: &crate::dag::ComponentTable,
        e: crate::resync::ColumnError,
        targets: &ColumnSet,
        done: &mut StripeRebuild,
        generation: &mut u64,
    ) -> Result<(), AccessError> {
        let column = e.column;
        if e.error.kind.outcome_unknown() {
            let io = &table[column];
            let fenced = tokio::time::timeout(self.config.engine.node_deadline, io.fence()).await;
            if matches!(fenced, Ok(Ok(()))) {
                tracing::info!(column, stripe = s.stripe, error = %e.error, "reconstruction: a write with an unknown outcome was fenced; the stripe is tried again");
                return Ok(());
            }
        }
        if targets.contains(column) {
            let g = {
                let mut st = self.lock_states();
                st.transition(&self.layout, column, ComponentState::Failed)?;
                st.generation()
            };
            *generation = (*generation).max(g);
            done.marked_failed.push(column);
            tracing::warn!(column, stripe = s.stripe, error = %e.error, "reconstruction: the target failed");
            return Err(AccessError::Rebuild {
                column,
                detail: format!("the component being rebuilt failed: {}", e.error),
            });
        }
        let mut result = crate::resync::StripeResync {
            outcome: crate::resync::StripeOutcome::Rewritten,
            marked_failed: Vec::new(),
            lost_blocks: Vec::new(),
        };
        self.resync_io_error(s, e, &mut result, generation)?;
        done.marked_failed.extend(result.marked_failed);
        Ok(())
    }

    /// Starts a copyback of optimal `column` (which lives on a spare) to `replacement`: the
    /// column's component becomes a [`CopybackIo`] over both and the column `copyback`,
    /// durably. Returns the copyback component the sweep advances.
    pub async fn start_copyback(
        &self,
        column: usize,
        replacement: Arc<dyn ComponentIo>,
    ) -> Result<Arc<CopybackIo>, AccessError> {
        self.check_component(column, replacement.as_ref())?;
        let (copy, generation) = {
            let mut st = self.lock_states();
            let state = st
                .get(column)
                .ok_or(crate::array::ArrayError::NoSuchColumn {
                    column,
                    columns: self.layout.columns(),
                })?;
            if state != ComponentState::Optimal || st.gone_columns().contains(column) {
                return Err(AccessError::Array(crate::array::ArrayError::NotAllowed {
                    column,
                    from: state,
                    to: ComponentState::Copyback,
                }));
            }
            let source = self.components()[column].clone();
            let copy = CopybackIo::new(source, replacement);
            st.transition(&self.layout, column, ComponentState::Copyback)?;
            self.replace_component(column, copy.clone());
            (copy, st.generation())
        };
        self.make_durable(generation).await?;
        Ok(copy)
    }

    /// Takes up a copyback cut short by a coordinator restart: `column` is `copyback` (as
    /// assembled, its component is the spare), and `replacement` is the component the copy
    /// went to. The column's component becomes a [`CopybackIo`] over both whose copy reached
    /// the durable checkpoint (the column's watermark), so every write below it goes to the
    /// replacement again from now on. Returns the copyback component and the checkpoint (the
    /// stripe the sweep goes on from); the stripes below it written while the replacement was
    /// not written (a write cut by the crash, or made before this call) lie in regions the
    /// parity map names (it is held during a copyback): the sweep copies those again.
    pub async fn resume_copyback(
        &self,
        column: usize,
        replacement: Arc<dyn ComponentIo>,
    ) -> Result<(Arc<CopybackIo>, u64), AccessError> {
        self.check_component(column, replacement.as_ref())?;
        let st = self.lock_states();
        let state = st
            .get(column)
            .ok_or(crate::array::ArrayError::NoSuchColumn {
                column,
                columns: self.layout.columns(),
            })?;
        if state != ComponentState::Copyback {
            return Err(AccessError::Rebuild {
                column,
                detail: format!("the column is {state}, not in copyback"),
            });
        }
        let source = self.components()[column].clone();
        if source.id() == replacement.id() {
            return Err(AccessError::Rebuild {
                column,
                detail: "the column's component is the replacement already".into(),
            });
        }
        let stripes = self.layout.stripes();
        let from = st.recovered()[column].min(stripes);
        let copy = CopybackIo::new(source, replacement);
        copy.advance(self.copy_block(from));
        self.replace_component(column, copy.clone());
        Ok((copy, from))
    }

    /// The first component block of stripe `stripe` (the end of the used blocks past the last
    /// stripe): a copyback whose watermark is `stripe` copied every block below it.
    fn copy_block(&self, stripe: u64) -> u64 {
        match self.layout.stripe(stripe) {
            Some(sl) => sl.component_blocks().first,
            None => self.layout.geometry().used_blocks_per_column(),
        }
    }

    /// Makes a copyback's checkpoint durable: every stripe below `stripe` is on the
    /// replacement (the column's watermark moves up to it; labels, then store). A column no
    /// longer in copyback is left as it is.
    pub async fn checkpoint_copyback(&self, column: usize, stripe: u64) -> Result<(), AccessError> {
        let generation = {
            let mut st = self.lock_states();
            if st.get(column) == Some(ComponentState::Copyback) {
                st.advance_recovery(column, stripe)?;
            }
            st.generation()
        };
        self.make_durable(generation).await
    }

    /// Copies stripe `stripe` of `column` from the copyback's spare to its replacement, under
    /// the stripe's write lock, and moves the copy's watermark past it. Returns the bytes
    /// copied.
    pub async fn copy_stripe(
        self: &Arc<Self>,
        column: usize,
        copy: &Arc<CopybackIo>,
        stripe: u64,
    ) -> Result<u64, AccessError> {
        let sl = self
            .layout
            .stripe(stripe)
            .ok_or_else(|| AccessError::Internal(format!("no stripe {stripe}")))?;
        let unit = sl.component_blocks();
        let lock = StripeLockRequest::whole_stripe(&self.layout, stripe, LockMode::Write);
        let locks = self
            .locks
            .lock([lock])
            .await
            .map_err(|e| AccessError::Internal(e.to_string()))?;
        let copy = copy.clone();
        let deadline = self.config.engine.node_deadline;
        let this = self.clone();
        tokio::spawn(async move {
            let fail = |detail: String| AccessError::Rebuild { column, detail };
            if this.lock_states().get(column) != Some(ComponentState::Copyback) {
                return Err(fail("the column is no longer in copyback".into()));
            }
            let count = u32::try_from(unit.count).map_err(|_| fail("unit too large".into()))?;
            let data = tokio::time::timeout(deadline, copy.source().read(unit.first, count))
                .await
                .map_err(|_| {
                    fail(format!(
                        "the spare did not answer a read within {deadline:?}"
                    ))
                })?
                .map_err(|e| fail(format!("the spare: {e}")))?;
            let written =
                tokio::time::timeout(deadline, copy.target().write(unit.first, data.clone()))
                    .await
                    .map_err(|_| IoErrorKind::Timeout)
                    .and_then(|r| r.map_err(|e| e.kind));
            if let Err(kind) = written {
                let why = format!("the replacement refused stripe {stripe}: {}", kind.as_str());
                copy.set_broken(why.clone());
                return Err(fail(why));
            }
            copy.advance(unit.first + unit.count);
            drop(locks);
            Ok(data.len() as u64)
        })
        .await
        .map_err(|e| AccessError::Internal(format!("copyback task lost: {e}")))?
    }

    /// Ends a copyback whose sweep reached the end: the replacement becomes the column's
    /// component and the column optimal, durably; then every access that might still hold the
    /// copyback component has finished ([`Array::quiesce`]), so the spare may be handed back.
    pub async fn finish_copyback(
        &self,
        column: usize,
        copy: &Arc<CopybackIo>,
    ) -> Result<(), AccessError> {
        let end = self.layout.geometry().used_blocks_per_column();
        let generation = {
            let mut st = self.lock_states();
            if st.get(column) != Some(ComponentState::Copyback) {
                return Err(AccessError::Rebuild {
                    column,
                    detail: "the column is no longer in copyback".into(),
                });
            }
            if let Some(why) = copy.broken() {
                return Err(AccessError::Rebuild {
                    column,
                    detail: why,
                });
            }
            if copy.copied_below() < end {
                return Err(AccessError::Rebuild {
                    column,
                    detail: format!("copied {} of {end} blocks", copy.copied_below()),
                });
            }
            self.replace_component(column, copy.target().clone());
            st.transition(&self.layout, column, ComponentState::Optimal)?;
            st.generation()
        };
        self.make_durable(generation).await?;
        self.quiesce().await
    }

    /// Stops a copyback: the column stays on its spare (optimal), durably; the replacement is
    /// no longer written.
    pub async fn abort_copyback(
        &self,
        column: usize,
        copy: &Arc<CopybackIo>,
        why: &str,
    ) -> Result<(), AccessError> {
        copy.set_broken(why.to_owned());
        let generation = {
            let mut st = self.lock_states();
            if st.get(column) == Some(ComponentState::Copyback) {
                self.replace_component(column, copy.source().clone());
                st.transition(&self.layout, column, ComponentState::Optimal)?;
            }
            st.generation()
        };
        self.make_durable(generation).await?;
        self.quiesce().await
    }

    /// Ends a copyback that has no sweep (a coordinator restarted during it: the component
    /// table holds the spare, as assembled, and the replacement was never named): the column
    /// is optimal on its spare again, durably. Not for a copyback whose sweep runs (that one
    /// ends with [`Array::abort_copyback`]).
    pub async fn clear_copyback(&self, column: usize) -> Result<(), AccessError> {
        let generation = {
            let mut st = self.lock_states();
            if st.get(column) != Some(ComponentState::Copyback) {
                return Ok(());
            }
            st.transition(&self.layout, column, ComponentState::Optimal)?;
            st.generation()
        };
        self.make_durable(generation).await
    }

    /// Waits until every access that took its stripe locks before this call has finished: each
    /// stripe's write lock is taken and released in turn (the locks are fair, so every earlier
    /// holder goes first).
    pub async fn quiesce(&self) -> Result<(), AccessError> {
        for stripe in 0..self.layout.stripes() {
            let lock = StripeLockRequest::whole_stripe(&self.layout, stripe, LockMode::Write);
            let held = self
                .locks
                .lock([lock])
                .await
                .map_err(|e| AccessError::Internal(e.to_string()))?;
            drop(held);
        }
        Ok(())
    }

    /// Every column that is recovering (reconstructing, or stale: being re-added), with its
    /// watermark.
    pub fn reconstructing(&self) -> Vec<(usize, u64)> {
        let st = self.lock_states();
        (0..self.layout.columns())
            .filter(|&c| st.get(c).is_some_and(|s| s.is_recovering()))
            .map(|c| (c, st.recovered()[c]))
            .collect()
    }

    fn check_component(&self, column: usize, c: &dyn ComponentIo) -> Result<(), AccessError> {
        match super::misfit(&self.layout, c) {
            Some(detail) => Err(AccessError::Rebuild { column, detail }),
            None => Ok(()),
        }
    }

    /// Puts `component` at `column` (callers hold the states lock and have checked the rules
    /// above).
    fn replace_component(&self, column: usize, component: Arc<dyn ComponentIo>) {
        let mut table = self.components.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<Arc<dyn ComponentIo>> = table.iter().cloned().collect();
        next[column] = component;
        *table = next.into();
        self.load[column].store(0, Ordering::Relaxed);
    }
}

/// The columns of `columns` reconstructing with their watermark at or below `first`: those a
/// batch starting at `first` reconstructs while the batches below it are in flight.
fn targets_below(st: &ComponentStates, columns: &ColumnSet, first: u64) -> ColumnSet {
    columns
        .iter()
        .filter(|&c| {
            st.get(c).is_some_and(|s| s.is_recovering())
                && st.recovered().get(c).is_some_and(|&w| w <= first)
        })
        .collect()
}

/// The columns of `columns` that a batch starting at stripe `first` reconstructs: those
/// reconstructing with their watermark at `first`.
fn targets_at(st: &ComponentStates, columns: &ColumnSet, first: u64) -> ColumnSet {
    columns
        .iter()
        .filter(|&c| {
            st.get(c).is_some_and(|s| s.is_recovering())
                && st.recovered().get(c).copied() == Some(first)
        })
        .collect()
}
