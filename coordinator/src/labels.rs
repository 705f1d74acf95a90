//! Component labels on the storage nodes: writing a volume's [`DurableState`] to the label area
//! of its surviving components, and reading every column's label back at assembly.
//!
//! The label format is the core's ([`dagraid_core::meta::label`]); the node keeps it in two
//! alternating checksummed slots, so each write replaces the label atomically. Writes go to all
//! the columns concurrently, each under the deadline of one node operation, and carry the
//! coordinator's fencing (a node that has a newer owner refuses them).
//!
//! Reads at assembly ([`VolumeLabels::read_all`]) poll the nodes that do not answer until the
//! assembly deadline, but only while the answer matters: a column that the best record found so
//! far already calls failed is not waited for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use dagraid_core::array::ComponentState;
use dagraid_core::layout::Layout;
use dagraid_core::meta::assembly::{self, Found};
use dagraid_core::meta::label::{
    ComponentLabel, LABEL_MAGIC, LABEL_VERSION, LabelGeometry, LabelState, LostSummary, Member,
};
use dagraid_core::meta::record::MetadataRecord;
use tokio::time::Instant;

use crate::error::{NodeClientError, NodeErrorKind};
use crate::node_client::{LABEL_AREA_BYTES, NodeClient, SlotArea};
use crate::store::{DurableState, VolumeRecord};

/// Environment variable of the test-only crash hook of state changes ([`CrashHook`],
/// [`CrashPoint::LabelWrites`]).
pub const CRASH_AFTER_LABEL_WRITES_ENV: &str = "DAGRAID_TEST_CRASH_AFTER_LABEL_WRITES";

/// Environment variable of the test-only crash hook of parity-map updates ([`CrashHook`],
/// [`CrashPoint::MapWrites`]).
pub const CRASH_AFTER_MAP_WRITES_ENV: &str = "DAGRAID_TEST_CRASH_AFTER_MAP_WRITES";

/// Interval between two rounds of label reads while nodes are awaited at assembly.
pub const ASSEMBLY_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What a [`CrashHook`] cuts short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The first state change an access (or the health loop, or an administrator) records
    /// after the process started: right after the `k`-th label write, or, when the change
    /// writes `k` labels or fewer, after the last of them and before the store write; `k = 0`
    /// aborts before any label write. Set by [`CRASH_AFTER_LABEL_WRITES_ENV`].
    LabelWrites,
    /// The first parity-map update after the process started (`VolumeStates::persist_map`: a
    /// mark before a write, or a clear after the cooldown; assembly is not one): right after
    /// the `k`-th metadata record write; `k = n` (the records written) after the last of
    /// them and before the store write; `k > n` after the store write, before the update
    /// returns (so the write that waited for a mark is never issued). `k = 0` aborts before
    /// any record write. Set by [`CRASH_AFTER_MAP_WRITES_ENV`].
    MapWrites,
}

impl CrashPoint {
    fn env(self) -> &'static str {
        match self {
            CrashPoint::LabelWrites => CRASH_AFTER_LABEL_WRITES_ENV,
            CrashPoint::MapWrites => CRASH_AFTER_MAP_WRITES_ENV,
        }
    }

    fn writes(self) -> &'static str {
        match self {
            CrashPoint::LabelWrites => "label writes",
            CrashPoint::MapWrites => "metadata record writes of a parity-map update",
        }
    }
}

/// **Test only.** Makes the process abort in the middle of the first state change
/// ([`CrashPoint::LabelWrites`]) or parity-map update ([`CrashPoint::MapWrites`]) after it
/// started, after `k` of its writes. While armed, that change or update writes its labels or
/// records one at a time in column order, so exactly `k` are written. The crash-consistency
/// tests use it to cut a state change after every `k` of its `n` label writes, and a map
/// update after every `k` of its `n` record writes and its store write.
#[derive(Debug)]
pub struct CrashHook {
    point: CrashPoint,
    after: usize,
    armed: AtomicBool,
}

impl CrashHook {
    /// A hook aborting after `after` writes of the next change of kind `point`.
    pub fn new(point: CrashPoint, after: usize) -> Arc<Self> {
        Arc::new(Self {
            point,
            after,
            armed: AtomicBool::new(true),
        })
    }

    /// Takes the hook for one change: `Some(k)` the first time only.
    fn take(&self) -> Option<usize> {
        self.armed
            .swap(false, Ordering::AcqRel)
            .then_some(self.after)
    }
}

/// The test-only crash hooks of a coordinator (none in production).
#[derive(Debug, Clone, Default)]
pub struct CrashHooks {
    /// Cuts the first state change ([`CrashPoint::LabelWrites`]).
    pub labels: Option<Arc<CrashHook>>,
    /// Cuts the first parity-map update ([`CrashPoint::MapWrites`]).
    pub map: Option<Arc<CrashHook>>,
}

/// What the writes of one state change (or parity-map update) do when the hook is armed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArmedCrash {
    point: CrashPoint,
    after: usize,
}

impl ArmedCrash {
    /// Takes `hook` for this change, if there is one and it is still armed.
    pub(crate) fn take(hook: Option<&Arc<CrashHook>>) -> Option<ArmedCrash> {
        hook.and_then(|h| {
            h.take().map(|after| ArmedCrash {
                point: h.point,
                after,
            })
        })
    }

    /// Aborts if the change has written as many labels (or records) as the hook allows.
    pub(crate) fn check(self, written: usize) {
        if written >= self.after {
            self.abort(written);
        }
    }

    /// Aborts after `written` label (or record) writes, before the store write.
    pub(crate) fn abort(self, written: usize) -> ! {
        eprintln!(
            "dagraid-coordinator: test hook {}: aborting after {written} {}",
            self.point.env(),
            self.point.writes()
        );
        std::process::abort()
    }

    /// Aborts after the store write, before the change returns.
    pub(crate) fn abort_after_store(self) -> ! {
        eprintln!(
            "dagraid-coordinator: test hook {}: aborting after the {} and the store write",
            self.point.env(),
            self.point.writes()
        );
        std::process::abort()
    }
}

/// One column as its label names it and as the coordinator reaches it.
#[derive(Debug, Clone)]
pub struct LabelColumn {
    /// The node's id.
    pub node_id: String,
    /// The component's id on the node.
    pub component_id: String,
    /// The component's serial (0: unknown).
    pub serial: u64,
    /// The connection to the node.
    pub client: NodeClient,
}

/// Why a label write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelWriteError {
    /// The node refused this coordinator's epoch or cluster: another coordinator owns it.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The component cannot hold its label any more (node down, no answer within the
    /// deadline, component failed or gone): the column must be failed.
    #[error("{0}")]
    Component(String),
    /// The request itself was refused (a bug: a label too large, a malformed call).
    #[error("refused: {0}")]
    Refused(String),
}

impl LabelWriteError {
    fn of(e: &NodeClientError) -> LabelWriteError {
        match e.kind() {
            Some(NodeErrorKind::Fenced | NodeErrorKind::WrongCluster) => {
                LabelWriteError::Fenced(e.to_string())
            }
            Some(NodeErrorKind::InvalidRequest | NodeErrorKind::OutOfRange) | None => {
                LabelWriteError::Refused(e.to_string())
            }
            Some(_) => LabelWriteError::Component(e.to_string()),
        }
    }
}

/// Everything needed to write and read the labels of one volume.
#[derive(Debug, Clone)]
pub struct VolumeLabels {
    cluster_id: String,
    volume_id: String,
    volume_name: String,
    geometry: LabelGeometry,
    /// The members; a column's member changes when a spare or a blank component takes its
    /// place ([`VolumeLabels::set_column`]). Shared by the clones.
    columns: Arc<RwLock<Vec<LabelColumn>>>,
    /// Deadline of one label write or read.
    deadline: Duration,
}

impl VolumeLabels {
    /// The labels of the volume `record` describes (geometry `layout`), over `columns` (one per
    /// column, in order), each call under `deadline`.
    pub fn new(
        cluster_id: &str,
        record: &VolumeRecord,
        layout: &Layout,
        columns: Vec<LabelColumn>,
        deadline: Duration,
    ) -> Self {
        Self {
            cluster_id: cluster_id.to_owned(),
            volume_id: record.id.clone(),
            volume_name: record.name.clone(),
            geometry: LabelGeometry::of(layout),
            columns: Arc::new(RwLock::new(columns)),
            deadline,
        }
    }

    /// The columns, as they are now.
    pub fn columns(&self) -> Vec<LabelColumn> {
        self.columns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every column's member as it is now, for the store.
    pub fn members(&self) -> Vec<crate::store::MemberRecord> {
        self.columns()
            .into_iter()
            .map(|c| crate::store::MemberRecord {
                node_address: c.client.address().to_owned(),
                node_id: c.node_id,
                component_id: c.component_id,
                serial: c.serial,
            })
            .collect()
    }

    /// Column `column` as it is now.
    fn col(&self, column: usize) -> LabelColumn {
        self.columns.read().unwrap_or_else(|p| p.into_inner())[column].clone()
    }

    fn len(&self) -> usize {
        self.columns.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Makes `member` the component of `column` (a spare or a blank component taking a failed
    /// column's place, or a copyback's replacement): the next change recorded writes its label
    /// and names it in every label and in the store.
    pub fn set_column(&self, column: usize, member: LabelColumn) {
        let mut columns = self.columns.write().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = columns.get_mut(column) {
            *c = member;
        }
    }

    /// The label of `column` for `state`.
    pub fn label(&self, column: usize, state: &DurableState) -> ComponentLabel {
        ComponentLabel {
            magic: LABEL_MAGIC.to_owned(),
            version: LABEL_VERSION,
            cluster_id: self.cluster_id.clone(),
            volume_id: self.volume_id.clone(),
            volume_name: self.volume_name.clone(),
            column: column as u32,
            serial: self.col(column).serial,
            geometry: self.geometry.clone(),
            mod_counter: state.mod_counter,
            config_epoch: state.config_epoch,
            clean: state.clean,
            members: self
                .columns()
                .iter()
                .zip(&state.states)
                .enumerate()
                .map(|(i, (c, s))| Member {
                    node_id: c.node_id.clone(),
                    component_id: c.component_id.clone(),
                    state: LabelState::from(*s),
                    recovered: state.recovered.get(i).copied().unwrap_or(0),
                })
                .collect(),
            log_period: state.log_period,
            lost: LostSummary {
                counter: state.lost_counter,
                blocks: state.lost.blocks(),
            },
        }
    }

    /// The metadata record of `state` (the same on every column).
    pub fn record(&self, state: &DurableState) -> MetadataRecord {
        MetadataRecord::new(
            &self.volume_id,
            state.mod_counter,
            &state.lost,
            state.lost_counter,
            state.map.as_ref().map(|m| (m, state.map_counter)),
        )
    }

    /// The largest encoded label of this volume, in bytes (all columns failed but one is as
    /// long as any).
    pub fn largest_label_bytes(&self) -> usize {
        let mut state = DurableState::new(
            u64::MAX,
            u64::MAX,
            false,
            vec![ComponentState::Reconstructing; self.len()],
        );
        state.recovered = vec![u64::MAX; self.len()];
        state.lost_counter = u64::MAX;
        state.lost = dagraid_core::lost::LostSet::from_ranges(std::iter::once(0..u64::MAX));
        (0..self.len())
            .map(|c| self.label(c, &state).encode().len())
            .max()
            .unwrap_or(0)
    }

    /// Whether the labels fit the node's label area.
    pub fn fit(&self) -> Result<(), String> {
        let bytes = self.largest_label_bytes();
        if bytes > LABEL_AREA_BYTES {
            return Err(format!(
                "its component labels would take {bytes} bytes; a label holds at most {LABEL_AREA_BYTES} (fewer columns, or shorter node ids)"
            ));
        }
        Ok(())
    }

    /// Writes one column's copy of `state`: the metadata record first when `record` (this
    /// change wrote the lost set or the parity map: a label never names a lost set its own
    /// component does not hold), then the label.
    async fn write_one(
        &self,
        column: usize,
        state: &DurableState,
        record: bool,
    ) -> Result<(), LabelWriteError> {
        if record {
            let record = self
                .record(state)
                .encode()
                .map_err(|e| LabelWriteError::Refused(e.to_string()))?;
            self.write_area(column, SlotArea::Metadata, Bytes::from(record))
                .await?;
        }
        let payload = Bytes::from(self.label(column, state).encode());
        self.write_area(column, SlotArea::Label, payload).await
    }

    async fn write_area(
        &self,
        column: usize,
        area: SlotArea,
        payload: Bytes,
    ) -> Result<(), LabelWriteError> {
        let c = &self.col(column);
        match tokio::time::timeout(
            self.deadline,
            c.client.write_slot(&c.component_id, area, payload),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(LabelWriteError::of(&e)),
            Err(_) => Err(LabelWriteError::Component(format!(
                "node {} ({}): no answer to the {area:?} write within {:?}",
                c.node_id,
                c.client.address(),
                self.deadline
            ))),
        }
    }

    /// Writes `state`'s metadata record (not the label) to every column `state` does not call
    /// failed: a parity-map update. Concurrently, or one at a time in column order when the
    /// crash hook is armed for this update (it may abort after any of them, or after the
    /// last, before the caller's store write). Returns the columns whose write failed.
    pub(crate) async fn write_records(
        &self,
        state: &DurableState,
        crash: Option<ArmedCrash>,
    ) -> Vec<(usize, LabelWriteError)> {
        let bytes = match self.record(state).encode() {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return (0..self.len())
                    .map(|c| (c, LabelWriteError::Refused(e.to_string())))
                    .collect();
            }
        };
        let targets =
            (0..self.len()).filter(|&c| !state.states.get(c).is_none_or(|s| s.is_failed()));
        if let Some(crash) = crash {
            let mut failed = Vec::new();
            let mut written = 0;
            crash.check(written);
            for c in targets {
                match self.write_area(c, SlotArea::Metadata, bytes.clone()).await {
                    Ok(()) => {
                        written += 1;
                        crash.check(written);
                    }
                    Err(e) => failed.push((c, e)),
                }
            }
            return failed;
        }
        let writes = targets.map(|c| {
            let bytes = bytes.clone();
            async move { (c, self.write_area(c, SlotArea::Metadata, bytes).await) }
        });
        futures::future::join_all(writes)
            .await
            .into_iter()
            .filter_map(|(c, r)| r.err().map(|e| (c, e)))
            .collect()
    }

    /// Reads the metadata records of `columns` for assembly (`None` for a column not asked for,
    /// without a record, or whose record cannot be read or decoded). Reads that fail are tried
    /// again every [`ASSEMBLY_POLL_INTERVAL`] until `until`.
    pub async fn read_records(
        &self,
        columns: &[usize],
        until: Instant,
    ) -> Vec<Option<MetadataRecord>> {
        let n = self.len();
        let mut out: Vec<Option<MetadataRecord>> = vec![None; n];
        let mut pending: Vec<usize> = columns.iter().copied().filter(|&c| c < n).collect();
        loop {
            let remaining = until.saturating_duration_since(Instant::now());
            let attempt = self.deadline.min(remaining.max(Duration::from_millis(200)));
            let reads = pending.iter().map(|&c| async move {
                let col = &self.col(c);
                let r = tokio::time::timeout(
                    attempt,
                    col.client.read_slot(&col.component_id, SlotArea::Metadata),
                )
                .await;
                (c, r)
            });
            let mut again = Vec::new();
            for (c, r) in futures::future::join_all(reads).await {
                match r {
                    Ok(Ok(Some(slot))) => match MetadataRecord::decode(&slot.payload) {
                        Ok(record) => out[c] = Some(record),
                        Err(e) => {
                            tracing::warn!(column = c, error = %e, "metadata record not usable")
                        }
                    },
                    Ok(Ok(None)) => {}
                    Ok(Err(e))
                        if e.kind().is_some_and(|k| {
                            matches!(k, NodeErrorKind::Timeout | NodeErrorKind::Unavailable)
                        }) =>
                    {
                        again.push(c)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(column = c, error = %e, "metadata record not readable")
                    }
                    Err(_) => again.push(c),
                }
            }
            pending = again;
            if pending.is_empty() || Instant::now() >= until {
                return out;
            }
            tokio::time::sleep(ASSEMBLY_POLL_INTERVAL.min(remaining)).await;
        }
    }

    /// Writes `state`'s label to every column `state` does not call failed: concurrently, or
    /// one at a time when the crash hook is armed for this change. Returns the columns whose
    /// write failed, with why.
    pub(crate) async fn write(
        &self,
        state: &DurableState,
        record: bool,
        crash: Option<ArmedCrash>,
    ) -> Vec<(usize, LabelWriteError)> {
        let targets: Vec<usize> = (0..self.len())
            .filter(|&c| !state.states.get(c).is_none_or(|s| s.is_failed()))
            .collect();
        let mut failed = Vec::new();
        match crash {
            None => {
                let writes: Vec<_> = targets
                    .iter()
                    .copied()
                    .map(|c| async move { (c, self.write_one(c, state, record).await) })
                    .collect();
                for (c, r) in futures::future::join_all(writes).await {
                    if let Err(e) = r {
                        failed.push((c, e));
                    }
                }
            }
            Some(crash) => {
                let mut written = 0;
                crash.check(written);
                for &c in &targets {
                    match self.write_one(c, state, record).await {
                        Ok(()) => {
                            written += 1;
                            crash.check(written);
                        }
                        Err(e) => failed.push((c, e)),
                    }
                }
                // Fewer labels than the hook allows: cut before the store write.
                crash.abort(written);
            }
        }
        failed
    }

    /// Reads `column`'s label once, within `deadline`: a label of this cluster and serial, or
    /// why there is none (a re-add reads the label of the component that came back).
    pub async fn read_label(&self, column: usize, deadline: Duration) -> Found {
        match self.read_one(column, None, deadline).await {
            Ok(found) => found,
            Err(why) => Found::Unreachable(why),
        }
    }

    /// Reads one column's label once: `Ok` is a final answer, `Err` a transient failure (worth
    /// another try) with its reason. `unlabelled` is the record's own label, used when the
    /// component has none and the record was never labelled (migrated from version 1).
    async fn read_one(
        &self,
        column: usize,
        unlabelled: Option<&ComponentLabel>,
        deadline: Duration,
    ) -> Result<Found, String> {
        let c = &self.col(column);
        let answer = tokio::time::timeout(
            deadline,
            c.client.read_slot(&c.component_id, SlotArea::Label),
        )
        .await;
        let slot = match answer {
            Err(_) => {
                return Err(format!(
                    "node {} ({}) did not answer within {deadline:?}",
                    c.node_id,
                    c.client.address()
                ));
            }
            Ok(Err(e)) => {
                return match e.kind() {
                    Some(NodeErrorKind::UnknownComponent) => Ok(Found::Foreign(format!(
                        "component {} is missing on node {}",
                        c.component_id, c.node_id
                    ))),
                    Some(NodeErrorKind::ComponentFailed) => Ok(Found::Unreachable(format!(
                        "component {} has failed on node {}: {e}",
                        c.component_id, c.node_id
                    ))),
                    Some(
                        NodeErrorKind::Fenced
                        | NodeErrorKind::WrongCluster
                        | NodeErrorKind::InvalidRequest,
                    ) => Ok(Found::Unreachable(format!("node {}: {e}", c.node_id))),
                    _ => Err(format!("node {}: {e}", c.node_id)),
                };
            }
            Ok(Ok(slot)) => slot,
        };
        let Some(slot) = slot else {
            return Ok(match unlabelled {
                Some(label) => Found::Label(label.clone()),
                None => Found::Foreign(format!(
                    "component {} on node {} has no label",
                    c.component_id, c.node_id
                )),
            });
        };
        Ok(match ComponentLabel::decode(&slot.payload) {
            Err(e) => Found::Foreign(format!(
                "the label of component {} on node {}: {e}",
                c.component_id, c.node_id
            )),
            Ok(l) if l.cluster_id != self.cluster_id => {
                Found::Foreign(format!("label of cluster {:?}", l.cluster_id))
            }
            Ok(l) if c.serial != 0 && l.serial != 0 && l.serial != c.serial => Found::Foreign(
                format!("label of component serial {}, not {}", l.serial, c.serial),
            ),
            Ok(l) => Found::Label(l),
        })
    }

    /// Reads every column's label for assembly. Nodes that do not answer are asked again every
    /// [`ASSEMBLY_POLL_INTERVAL`] until `until`, for as long as their column is optimal in the
    /// best record found so far (the store's `recorded` view or a label); then they are
    /// [`Found::Unreachable`].
    pub async fn read_all(
        &self,
        layout: &Layout,
        recorded: &DurableState,
        until: Instant,
    ) -> Vec<Found> {
        let unlabelled = (recorded.mod_counter == 0).then(|| {
            (0..self.len())
                .map(|c| self.label(c, recorded))
                .collect::<Vec<_>>()
        });
        let n = self.len();
        let mut found: Vec<Option<Found>> = vec![None; n];
        let mut last_error: Vec<String> = vec![String::new(); n];
        loop {
            let remaining = until.saturating_duration_since(Instant::now());
            let attempt = self.deadline.min(remaining.max(Duration::from_millis(200)));
            let pending: Vec<usize> = (0..n).filter(|&c| found[c].is_none()).collect();
            let reads: Vec<_> = pending
                .into_iter()
                .map(|c| {
                    let own = unlabelled.as_ref().map(|u| u[c].clone());
                    async move { (c, self.read_one(c, own.as_ref(), attempt).await) }
                })
                .collect();
            for (c, r) in futures::future::join_all(reads).await {
                match r {
                    Ok(f) => found[c] = Some(f),
                    Err(why) => last_error[c] = why,
                }
            }
            let view: Vec<Found> = (0..n)
                .map(|c| {
                    found[c]
                        .clone()
                        .unwrap_or_else(|| Found::Unreachable(last_error[c].clone()))
                })
                .collect();
            // Wait only for columns the best record so far still calls optimal.
            let plan = assembly::plan(layout, &self.volume_id, &recorded.recorded(), &view);
            let worth_waiting = plan.newly_failed.iter().any(|(c, _)| found[*c].is_none());
            if !worth_waiting || Instant::now() >= until {
                return view;
            }
            tokio::time::sleep(ASSEMBLY_POLL_INTERVAL.min(remaining)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use dagraid_core::layout::{Geometry, RaidLevel};

    use super::*;
    use crate::node_client::{FencingContext, NodeClientConfig};
    use crate::store::{ComponentRecord, LevelRecord, StateRecord, VOLUME_RECORD_VERSION};

    fn volume(columns: usize, node_id: impl Fn(usize) -> String) -> VolumeLabels {
        let layout = Layout::new(
            RaidLevel::Raid6,
            Geometry::new(columns, 16, 4096, 1 << 20).unwrap(),
        )
        .unwrap();
        let id = "v0123456789abcdef";
        let record = VolumeRecord {
            version: VOLUME_RECORD_VERSION,
            log_period: 0,
            name: "a-volume-name".into(),
            id: id.into(),
            level: LevelRecord::Raid6,
            stripe_unit_blocks: 16,
            block_size: 4096,
            blocks_per_column: 1 << 20,
            mod_counter: 1,
            config_epoch: 1,
            clean: false,
            components: (0..columns)
                .map(|c| ComponentRecord {
                    column: c as u32,
                    node_id: node_id(c),
                    node_address: "127.0.0.1:1".into(),
                    component_id: format!("{id}-c{c}"),
                    serial: u64::MAX,
                    state: StateRecord::Optimal,
                    recovered: 0,
                })
                .collect(),
            lost: Default::default(),
            parity_map: None,
        };
        let fencing = FencingContext::new("dagraid", 1);
        let columns = record
            .components
            .iter()
            .map(|c| LabelColumn {
                node_id: c.node_id.clone(),
                component_id: c.component_id.clone(),
                serial: c.serial,
                client: NodeClient::new(
                    "127.0.0.1:1",
                    fencing.clone(),
                    NodeClientConfig::default(),
                )
                .unwrap(),
            })
            .collect();
        VolumeLabels::new("dagraid", &record, &layout, columns, Duration::from_secs(1))
    }

    #[tokio::test]
    async fn a_label_carries_the_durable_state_and_every_member() {
        let v = volume(5, |c| format!("node{}", c + 1));
        let state = DurableState::new(
            9,
            4,
            true,
            vec![
                ComponentState::Optimal,
                ComponentState::Failed,
                ComponentState::Optimal,
                ComponentState::Optimal,
                ComponentState::Optimal,
            ],
        );
        let label = v.label(3, &state);
        let back = ComponentLabel::decode(&label.encode()).unwrap();
        assert_eq!(back, label);
        assert_eq!(
            (back.column, back.mod_counter, back.config_epoch),
            (3, 9, 4)
        );
        assert!(back.clean);
        assert_eq!(back.cluster_id, "dagraid");
        assert_eq!(back.members[1].state, LabelState::Failed);
        assert_eq!(back.members[4].node_id, "node5");
        assert_eq!(back.states(), state.states);
    }

    #[tokio::test]
    async fn labels_must_fit_the_label_area() {
        // Up to a few dozen columns with ordinary ids fit in 4 KiB.
        volume(16, |c| format!("node{}", c + 1)).fit().unwrap();
        let too_many = volume(64, |c| format!("storage-node-with-a-long-name-{c}"));
        let err = too_many.fit().unwrap_err();
        assert!(err.contains("4096"), "{err}");
        assert!(too_many.largest_label_bytes() > LABEL_AREA_BYTES);
    }

    #[test]
    fn the_crash_hook_is_taken_by_one_change_only() {
        let hook = CrashHook::new(CrashPoint::MapWrites, 2);
        assert!(matches!(
            ArmedCrash::take(Some(&hook)),
            Some(ArmedCrash {
                point: CrashPoint::MapWrites,
                after: 2
            })
        ));
        assert!(ArmedCrash::take(Some(&hook)).is_none());
        assert!(ArmedCrash::take(None).is_none());
    }
}
