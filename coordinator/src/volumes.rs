//! The coordinator's volumes: creation (provisioning one component per column on distinct
//! storage nodes, labelling them), deletion, lookup, and assembly from the labels and the store.
//!
//! A [`Volume`] is its stored record (identity, layout, the node and component of every column),
//! the core's [`Array`] over [`RemoteComponent`]s, and its [`VolumeStates`] recorder, which makes
//! every state change durable on the surviving labels and in the store. A volume the coordinator
//! could not assemble (not clean and degraded without force, or beyond its tolerance) is an
//! [`UnassembledVolume`]: listed, with the reason, but serving no I/O.
//!
//! **Assembly** ([`VolumeManager::assemble_all`] at start, [`VolumeManager::assemble_volume`] on
//! demand): every column's label is read (nodes that do not answer are awaited, see
//! [`crate::labels`]), the core decides ([`dagraid_core::meta::assembly::plan`]), and then:
//! - *assemble*: the decided state (newly failed columns, not clean, counter bumped) is made
//!   durable on the labels and in the store before the volume serves; a volume that was not
//!   shut down cleanly is resynced in the background ([`crate::resync`]) while it serves;
//! - *needs force* (not clean and degraded): not assembled unless forced; forced, it is assembled
//!   the same way, and its resync skips the stripes whose data is on a failed column;
//! - *refuse* (beyond the tolerance): not assembled.
//!
//! A volume not assembled with failed columns whose nodes did not answer
//! ([`UnassembledVolume::waiting_for`]) is assembled again, not forced, once one of those nodes
//! answers ([`VolumeManager::assemble_returned`], called by the reconstruction monitor on each
//! look): a column that was current at the crash and is back needs no force.
//!
//! Creation, deletion and on-demand assembly are serialised (one at a time); accesses never wait
//! for them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dagraid_core::access::{AccessError, Array, ArrayConfig};
use dagraid_core::array::{ArrayError, ComponentState, ComponentStates, FailOutcome};
use dagraid_core::dag::ComponentTable;
use dagraid_core::io::ComponentIo;
use dagraid_core::layout::{Geometry, Layout, RaidLevel};
use dagraid_core::lost::LostSet;
use dagraid_core::meta::assembly::{self, Source, Verdict};
use dagraid_core::parity_map::{DirtyRegions, region_stripes};
use dashmap::DashMap;
use tokio::time::Instant;

use crate::durable::{Proposed, VolumeStates};
use crate::error::NodeErrorKind;
use crate::labels::{CrashHooks, LabelColumn, VolumeLabels};
use crate::node_client::ComponentInfo;
use crate::registry::{NodeRegistry, RegisteredNode};
use crate::remote::RemoteComponent;
use crate::resync::{Resync, ResyncSettings, ResyncStatus};
use crate::service_error::ServiceError;
use crate::spares::{SparePool, SpareRecord};
use crate::store::{
    ComponentRecord, DurableState, MapRecord, StateRecord, Store, VOLUME_RECORD_VERSION,
    VolumeRecord,
};

/// Longest volume name.
pub const MAX_NAME_LEN: usize = 64;
/// Stripe unit when the request gives none: 64 KiB.
pub const DEFAULT_STRIPE_UNIT_BYTES: u64 = 64 << 10;
/// Block size when the request gives none.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// Smallest block size a storage node accepts.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size a storage node accepts.
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;

/// What a client asks for when it creates a volume (the proto request, checked for nothing yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeSpec {
    /// The name.
    pub name: String,
    /// The level; `None` if the request gave none (refused).
    pub level: Option<RaidLevel>,
    /// Usable size, rounded up to whole stripes.
    pub size_bytes: u64,
    /// Columns; 0 means every registered node (RAID 1: an even number of them).
    pub columns: u32,
    /// Stripe unit in bytes; 0 means [`DEFAULT_STRIPE_UNIT_BYTES`].
    pub stripe_unit_bytes: u64,
    /// Block size; 0 means [`DEFAULT_BLOCK_SIZE`].
    pub block_size: u32,
    /// Node ids in column order; empty lets the coordinator pick.
    pub nodes: Vec<String>,
}

/// How an assembled volume came to be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssemblyNote {
    /// Assembled by force (not clean and degraded).
    pub forced: bool,
    /// What forcing risked.
    pub at_risk: Option<String>,
    /// Not clean and degraded, assembled by replaying the partial-parity log
    /// (`dagraid_core::ppl`): the stripes it applied to.
    pub log_replayed: Option<u64>,
}

/// One assembled volume: its record, its array and its recorder.
#[derive(Debug)]
pub struct Volume {
    record: VolumeRecord,
    array: Arc<Array>,
    recorder: Arc<VolumeStates>,
    resync: Mutex<Option<Arc<Resync>>>,
    note: AssemblyNote,
    /// How long a parity-map region stays dirty after its last write.
    map_cooldown: Duration,
}

impl Volume {
    /// How long a parity-map region stays dirty after its last write.
    pub fn map_cooldown(&self) -> Duration {
        self.map_cooldown
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// The unique id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        self.array.layout()
    }

    /// The columns: each one's member as it is now (a spare or a replacement may have taken
    /// a column's place); their states are in [`Volume::array`].
    pub fn components(&self) -> Vec<ComponentRecord> {
        let members = self.recorder.labels().columns();
        self.record
            .components
            .iter()
            .zip(members)
            .map(|(c, m)| ComponentRecord {
                node_address: m.client.address().to_owned(),
                node_id: m.node_id,
                component_id: m.component_id,
                serial: m.serial,
                ..c.clone()
            })
            .collect()
    }

    /// The stored record as assembled (its members as they were then).
    pub fn record(&self) -> &VolumeRecord {
        &self.record
    }

    /// The array serving the volume.
    pub fn array(&self) -> &Arc<Array> {
        &self.array
    }

    /// The recorder of its durable state.
    pub fn recorder(&self) -> &Arc<VolumeStates> {
        &self.recorder
    }

    /// How it was assembled.
    pub fn note(&self) -> &AssemblyNote {
        &self.note
    }

    /// The resync started at its assembly, if any.
    pub fn resync(&self) -> Option<ResyncStatus> {
        self.resync_handle().map(|r| r.status())
    }

    fn resync_handle(&self) -> Option<Arc<Resync>> {
        self.resync
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the volume still needs its resync: one was started and has not completed
    /// (running, waiting to retry after an error, or stopped). Such a volume is dirty, and is
    /// never shown optimal.
    pub fn resyncing(&self) -> bool {
        self.resync().is_some_and(|r| !r.completed())
    }

    fn access_error(&self, source: AccessError) -> ServiceError {
        ServiceError::Access {
            volume: self.record.name.clone(),
            source,
        }
    }
}

/// A stored volume the coordinator did not assemble: it serves no I/O until an assembly (on
/// demand, maybe forced) succeeds.
#[derive(Debug)]
pub struct UnassembledVolume {
    record: VolumeRecord,
    states: Vec<ComponentState>,
    problem: String,
    needs_force: bool,
    /// The nodes of its failed columns that did not answer at the assembly.
    waiting_for: Vec<String>,
}

impl UnassembledVolume {
    /// The name.
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// Its stored record.
    pub fn record(&self) -> &VolumeRecord {
        &self.record
    }

    /// The component states the last assembly decided.
    pub fn states(&self) -> &[ComponentState] {
        &self.states
    }

    /// Why it is not assembled.
    pub fn problem(&self) -> &str {
        &self.problem
    }

    /// Whether a forced assembly would assemble it.
    pub fn needs_force(&self) -> bool {
        self.needs_force
    }

    /// The nodes of its failed columns that did not answer at the assembly: when one of them
    /// answers again, the volume is assembled again ([`VolumeManager::assemble_returned`]).
    pub fn waiting_for(&self) -> &[String] {
        &self.waiting_for
    }

    fn error(&self) -> ServiceError {
        ServiceError::NotAssembled {
            volume: self.record.name.clone(),
            problem: self.problem.clone(),
        }
    }
}

/// A volume as the API lists it: assembled or not.
#[derive(Debug, Clone)]
pub enum VolumeEntry {
    /// Serving.
    Assembled(Arc<Volume>),
    /// Not serving; says why.
    Unassembled(Arc<UnassembledVolume>),
}

impl VolumeEntry {
    /// The name.
    pub fn name(&self) -> &str {
        match self {
            VolumeEntry::Assembled(v) => v.name(),
            VolumeEntry::Unassembled(u) => u.name(),
        }
    }

    fn components(&self) -> Vec<ComponentRecord> {
        match self {
            VolumeEntry::Assembled(v) => v.components(),
            VolumeEntry::Unassembled(u) => u.record.components.clone(),
        }
    }

    /// The volume's id.
    pub fn id(&self) -> &str {
        match self {
            VolumeEntry::Assembled(v) => v.id(),
            VolumeEntry::Unassembled(u) => &u.record.id,
        }
    }
}

/// What an assembly did.
#[derive(Debug, Clone)]
pub struct AssemblyReport {
    /// The volume, assembled.
    pub volume: Arc<Volume>,
    /// Columns it failed, with why.
    pub newly_failed: Vec<(usize, String)>,
}

/// Checks a volume name: 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<(), ServiceError> {
    let bad = |reason| ServiceError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("it is longer than 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

/// The shape of a volume to create, checked: everything but the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Level over geometry, the size rounded up to whole stripes.
    pub layout: Layout,
}

/// Checks level, block size, stripe unit, size and `columns`, and rounds the size up to whole
/// stripes.
pub fn plan(spec: &VolumeSpec, columns: usize) -> Result<Plan, ServiceError> {
    let bad = |detail: String| ServiceError::BadGeometry { detail };
    let level = spec
        .level
        .ok_or_else(|| bad("the RAID level is required (RAID_LEVEL_RAID0, 1, 4, 5 or 6)".into()))?;
    let block_size = match spec.block_size {
        0 => DEFAULT_BLOCK_SIZE,
        b => b,
    };
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(bad(format!(
            "block size {block_size} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
        )));
    }
    let block = u64::from(block_size);
    let unit_bytes = match spec.stripe_unit_bytes {
        0 => DEFAULT_STRIPE_UNIT_BYTES,
        u => u,
    };
    if !unit_bytes.is_multiple_of(block) {
        return Err(bad(format!(
            "stripe unit {unit_bytes} is not a multiple of the block size {block_size}"
        )));
    }
    if spec.size_bytes == 0 {
        return Err(bad("size must be at least 1 byte".into()));
    }
    let unit_blocks = unit_bytes / block;
    // One stripe first: the level's column rules and the bytes per stripe.
    let one = Geometry::new(columns, unit_blocks, block, unit_blocks)
        .and_then(|g| Layout::new(level, g))
        .map_err(|e| bad(e.to_string()))?;
    let stripes = spec.size_bytes.div_ceil(one.stripe_data_bytes());
    let blocks_per_column = stripes
        .checked_mul(unit_blocks)
        .ok_or_else(|| bad(format!("size {} is too large", spec.size_bytes)))?;
    let layout = Geometry::new(columns, unit_blocks, block, blocks_per_column)
        .and_then(|g| Layout::new(level, g))
        .map_err(|e| bad(e.to_string()))?;
    Ok(Plan { layout })
}

/// How the volumes are assembled and labelled.
#[derive(Debug, Clone)]
pub struct VolumeManagerConfig {
    /// The access pipeline's settings.
    pub array: ArrayConfig,
    /// Deadline of one label read or write.
    pub label_deadline: Duration,
    /// How long assembly waits for storage nodes that do not answer.
    pub assembly_wait: Duration,
    /// Test only: the crash hooks ([`crate::labels::CrashHook`]).
    pub crash: CrashHooks,
    /// How a resync that stopped with an error is retried.
    pub resync: ResyncSettings,
    /// How long a parity-map region stays dirty after its last write.
    pub map_cooldown: Duration,
    /// Where volume ids and replacement component ids come from.
    pub ids: Arc<crate::ids::IdSource>,
}

/// The volumes of one coordinator.
#[derive(Debug)]
pub struct VolumeManager {
    store: Store,
    registry: Arc<NodeRegistry>,
    spares: Arc<SparePool>,
    config: VolumeManagerConfig,
    /// The volumes by name: every access looks its volume up here, so it takes no global lock
    /// (a sharded map; listings sort by name).
    volumes: DashMap<String, VolumeEntry>,
    /// Serialises creations, deletions and on-demand assemblies.
    admin: tokio::sync::Mutex<()>,
    /// Nodes the health loop found gone, or that did not answer the assembly of a volume whose
    /// column on them is failed, until they answer again.
    away: DashMap<String, ()>,
    /// Failed columns (volume id, column) whose node was gone and answers again, with the
    /// re-adds tried so far: the reconstruction monitor re-adds them (`docs/REBUILD.md`,
    /// "Re-add").
    returned: DashMap<(String, usize), u32>,
    /// Columns (volume id, column) the administrator failed (`dagraid fail`), while they stay
    /// failed: re-added only by hand, never because their node was away and answers again.
    failed_by_hand: DashMap<(String, usize), ()>,
}

impl VolumeManager {
    /// No volumes yet; `spares` is the hot-spare pool the volumes take spares from.
    pub fn new(
        store: Store,
        registry: Arc<NodeRegistry>,
        spares: Arc<SparePool>,
        config: VolumeManagerConfig,
    ) -> Self {
        Self {
            store,
            registry,
            spares,
            config,
            volumes: DashMap::new(),
            admin: tokio::sync::Mutex::new(()),
            away: DashMap::new(),
            returned: DashMap::new(),
            failed_by_hand: DashMap::new(),
        }
    }

    /// The coordinator's store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where new ids come from.
    pub fn ids(&self) -> &crate::ids::IdSource {
        &self.config.ids
    }

    /// Whether failed `column` of volume `volume_id` came back: its node was gone and answers
    /// again since (kept until [`VolumeManager::forget_returned`]).
    pub fn returned(&self, volume_id: &str, column: usize) -> bool {
        self.returned.contains_key(&(volume_id.to_owned(), column))
    }

    /// Forgets that `column` of volume `volume_id` came back (its re-add started or was
    /// refused); answers the re-adds tried so far, if it was noted.
    pub fn forget_returned(&self, volume_id: &str, column: usize) -> Option<u32> {
        self.returned
            .remove(&(volume_id.to_owned(), column))
            .map(|(_, tries)| tries)
    }

    /// Notes again that `column` of volume `volume_id` came back, its re-add tried `tries`
    /// times (the monitor tries again on its next look).
    pub fn retry_returned(&self, volume_id: &str, column: usize, tries: u32) {
        self.returned.insert((volume_id.to_owned(), column), tries);
    }

    /// The node registry.
    pub fn registry(&self) -> &Arc<NodeRegistry> {
        &self.registry
    }

    /// The hot-spare pool.
    pub fn spares(&self) -> &Arc<SparePool> {
        &self.spares
    }

    /// The free spares of the pool that volume `entry` could take for a failed column now:
    /// its block size, at least its blocks per column, on a node holding none of its columns
    /// (`Volume.spares_available`, `dagraid_volume_spare_nodes`). Best fit first.
    pub fn spares_fitting(&self, entry: &VolumeEntry) -> Vec<SpareRecord> {
        let record = match entry {
            VolumeEntry::Assembled(v) => &v.record,
            VolumeEntry::Unassembled(u) => &u.record,
        };
        let nodes: Vec<String> = entry
            .components()
            .iter()
            .map(|c| c.node_id.clone())
            .collect();
        self.spares
            .fits(record.block_size, record.blocks_per_column, &nodes)
    }

    /// Bytes of the largest column of any volume: the size of a spare when AddSpare gives
    /// none; `None` without volumes.
    pub fn largest_component_bytes(&self) -> Option<u64> {
        self.volumes
            .iter()
            .map(|e| {
                let r = match e.value() {
                    VolumeEntry::Assembled(v) => &v.record,
                    VolumeEntry::Unassembled(u) => &u.record,
                };
                r.blocks_per_column.saturating_mul(u64::from(r.block_size))
            })
            .max()
    }

    /// The admission queue every volume's accesses share, if there is one.
    pub fn admission(&self) -> Option<&Arc<dagraid_core::admission::Admission>> {
        self.config.array.admission.as_ref()
    }

    /// Every entry, sorted by name.
    fn sorted(&self) -> Vec<VolumeEntry> {
        let mut entries: Vec<(String, VolumeEntry)> = self
            .volumes
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.into_iter().map(|(_, e)| e).collect()
    }

    /// Assembles every stored volume (at start, before serving), concurrently, sharing one
    /// wait for the nodes of [`VolumeManagerConfig::assembly_wait`]. A volume that cannot be
    /// assembled is kept as an [`UnassembledVolume`], with the reason.
    pub async fn assemble_all(&self, records: Vec<VolumeRecord>) {
        let until = Instant::now() + self.config.assembly_wait;
        let assemblies = records.into_iter().map(|record| async move {
            let name = record.name.clone();
            let entry = self.assemble_record(record, until, false).await;
            (name, entry)
        });
        for (name, entry) in futures::future::join_all(assemblies).await {
            self.volumes.insert(name, entry);
        }
    }

    /// Runs the assembly of volume `name` again (AssembleVolume): an assembled volume is
    /// answered as it is; one that is not is assembled from its labels now, by `force` if it
    /// is not clean and degraded.
    pub async fn assemble_volume(
        &self,
        name: &str,
        force: bool,
    ) -> Result<AssemblyReport, ServiceError> {
        let _one_at_a_time = self.admin.lock().await;
        let entry = self.entry(name)?;
        let unassembled = match entry {
            VolumeEntry::Assembled(volume) => {
                return Ok(AssemblyReport {
                    volume,
                    newly_failed: Vec::new(),
                });
            }
            VolumeEntry::Unassembled(u) => u,
        };
        let until = Instant::now() + self.config.assembly_wait;
        let (entry, newly_failed) = self
            .assemble_record_reporting(unassembled.record.clone(), until, force)
            .await;
        self.volumes.insert(name.to_owned(), entry.clone());
        match entry {
            VolumeEntry::Assembled(volume) => Ok(AssemblyReport {
                volume,
                newly_failed,
            }),
            VolumeEntry::Unassembled(u) => Err(u.error()),
        }
    }

    /// Assembles again, not forced, every volume not assembled while a node of one of its
    /// failed columns did not answer, once such a node answers (the reconstruction monitor
    /// calls this on each look). Its assembly failed the column; now the column reads, and a
    /// volume refused for a column current at the crash and missing then needs no force (that
    /// refusal says the volume assembles by itself when the node is back; found by the
    /// simulation, seed 42). An assembly that fails again waits for the nodes missing then.
    pub async fn assemble_returned(&self) {
        for entry in self.sorted() {
            let VolumeEntry::Unassembled(u) = entry else {
                continue;
            };
            let back: Vec<&String> = u
                .waiting_for
                .iter()
                .filter(|id| self.registry.get(id).is_some_and(|n| n.reachable()))
                .collect();
            if back.is_empty() {
                continue;
            }
            tracing::info!(volume = u.name(), nodes = ?back, "a node the volume's assembly missed answers again; assembling it again");
            match self.assemble_volume(u.name(), false).await {
                Ok(report) => tracing::info!(
                    volume = u.name(),
                    state = %report.volume.array.array_state(),
                    "volume assembled once its node answered again"
                ),
                Err(e) => {
                    tracing::warn!(volume = u.name(), error = %e, "volume still not assembled")
                }
            }
        }
    }

    async fn assemble_record(
        &self,
        record: VolumeRecord,
        until: Instant,
        force: bool,
    ) -> VolumeEntry {
        self.assemble_record_reporting(record, until, force).await.0
    }

    /// Reads the labels of `record`'s volume, decides, and acts (see the module doc).
    async fn assemble_record_reporting(
        &self,
        record: VolumeRecord,
        until: Instant,
        force: bool,
    ) -> (VolumeEntry, Vec<(usize, String)>) {
        let name = record.name.clone();
        let unassembled = |record: VolumeRecord,
                           states: Vec<ComponentState>,
                           problem: String,
                           needs_force| {
            let mut waiting_for: Vec<String> = Vec::new();
            for (c, member) in record.components.iter().enumerate() {
                if states.get(c).is_some_and(|s| s.is_failed())
                    && self
                        .registry
                        .get(&member.node_id)
                        .is_some_and(|n| !n.reachable())
                    && !waiting_for.contains(&member.node_id)
                {
                    waiting_for.push(member.node_id.clone());
                }
            }
            tracing::warn!(volume = %name, %problem, needs_force, ?waiting_for, "volume not assembled");
            VolumeEntry::Unassembled(Arc::new(UnassembledVolume {
                record,
                states,
                problem,
                needs_force,
                waiting_for,
            }))
        };
        let layout = match record.layout() {
            Ok(l) => l,
            Err(e) => {
                let states = record.states();
                return (
                    unassembled(record, states, format!("bad geometry: {e}"), false),
                    Vec::new(),
                );
            }
        };
        let labels = match self.labels_of(&record, &layout) {
            Ok(l) => l,
            Err(e) => {
                let states = record.states();
                return (unassembled(record, states, e, false), Vec::new());
            }
        };
        // As at creation: every node must take a whole stripe unit in one call (a node restarted
        // with a smaller limit would refuse every access).
        let unit = layout.unit_bytes();
        if let Some((node, max)) = record
            .components
            .iter()
            .filter_map(|c| self.registry.get(&c.node_id))
            .filter_map(|n| n.health().max_io_bytes.map(|m| (n, m)))
            .find(|(_, max)| *max < unit)
        {
            let states = record.states();
            let problem = format!(
                "storage node {} takes at most {max} bytes per call, less than the volume's stripe unit of {unit} bytes: restart it with a larger --max-io-bytes",
                node.id()
            );
            return (unassembled(record, states, problem, false), Vec::new());
        }
        let recorded = record.durable();
        let found = labels.read_all(&layout, &recorded, until).await;
        let plan = assembly::plan(&layout, &record.id, &recorded.recorded(), &found);
        // The lost set: from the store and the metadata records of the columns in use.
        let lineage: Vec<usize> = (0..layout.columns())
            .filter(|&c| !plan.states[c].is_failed())
            .collect();
        // Read when the store's lost set may be behind, or the volume was not shut down
        // cleanly (the records' parity maps add to the store's).
        let records = if plan.lost_counter > recorded.lost_counter || !plan.clean {
            labels.read_records(&lineage, until).await
        } else {
            vec![None; layout.columns()]
        };
        let lost = match assembly::merged_lost(
            &plan,
            &record.id,
            &recorded.recorded(),
            &found,
            &records,
        ) {
            Ok(lost) => lost,
            Err(e) => {
                return (
                    unassembled(record, plan.states.clone(), e, false),
                    plan.newly_failed,
                );
            }
        };
        let source = match plan.source {
            Source::Store => "store".to_owned(),
            Source::Label(c) => format!("label of column {c}"),
        };
        tracing::info!(
            volume = %name,
            counter = plan.mod_counter,
            source = %source,
            clean = plan.clean,
            newly_failed = ?plan.newly_failed,
            verdict = ?plan.verdict,
            "assembly decided"
        );
        let (resync, note) = match &plan.verdict {
            Verdict::Refuse { reason } => {
                return (
                    unassembled(record, plan.states.clone(), reason.clone(), false),
                    plan.newly_failed,
                );
            }
            Verdict::NeedsForce { at_risk } if !force => {
                let problem = format!(
                    "not shut down cleanly and degraded; assembling it by force risks this: {at_risk} (`dagraid volume assemble {name} --force`)"
                );
                return (
                    unassembled(record, plan.states.clone(), problem, true),
                    plan.newly_failed,
                );
            }
            Verdict::NeedsForce { at_risk } => {
                tracing::warn!(volume = %name, %at_risk, "volume assembled by force");
                (
                    true,
                    AssemblyNote {
                        forced: true,
                        at_risk: Some(at_risk.clone()),
                        log_replayed: None,
                    },
                )
            }
            Verdict::Replay => (
                true,
                AssemblyNote {
                    log_replayed: Some(0),
                    ..AssemblyNote::default()
                },
            ),
            Verdict::Assemble { resync } => (*resync, AssemblyNote::default()),
        };
        // The authoritative record as it was, before this assembly's own failures.
        let mut before = plan.states.clone();
        for (c, _) in &plan.newly_failed {
            before[*c] = ComponentState::Optimal;
        }
        let authoritative = DurableState {
            mod_counter: plan.mod_counter,
            config_epoch: plan.config_epoch,
            clean: plan.clean,
            states: before,
            recovered: plan.recovered.clone(),
            lost: lost.clone(),
            lost_counter: plan.lost_counter,
            members: recorded.members.clone(),
            map: recorded.map.clone(),
            map_counter: recorded.map_counter,
            map_cleared_at: recorded.map_cleared_at,
            log_period: plan.log_period,
        };
        let mut proposed = Proposed {
            states: plan.states.clone(),
            recovered: plan.recovered.clone(),
            lost,
            log_period: plan.log_period,
        };
        let mut volume = match self.build(
            record.clone(),
            labels,
            authoritative,
            proposed.clone(),
            note,
        ) {
            Ok(v) => v,
            Err(e) => {
                return (
                    unassembled(record, plan.states.clone(), e, false),
                    plan.newly_failed,
                );
            }
        };
        // The array's log period: the record's, or one drawn now for a record without one.
        proposed.log_period = volume.array.states().log_period();
        if volume.note.log_replayed.is_some() {
            // Dirty and degraded: the partial-parity log puts every stripe a write was cut short
            // in back in step, before anything is served; a stripe it cannot is marked lost.
            let report = match volume.array.replay_log(force).await {
                Ok(report) => report,
                Err(unreadable) => {
                    // Nothing applied, nothing recorded: a later assembly reads the log again.
                    let problem = format!(
                        "not shut down cleanly while degraded, and {unreadable}: a write cut short in a stripe whose entries are there would leave that stripe's failed data wrong. Assemble it again once the log reads (`dagraid volume assemble {name}`), or by force without those entries (`--force`)"
                    );
                    return (
                        unassembled(record, plan.states.clone(), problem, true),
                        plan.newly_failed,
                    );
                }
            };
            if !report.unread.is_empty() {
                let at_risk = format!(
                    "{}, and its entries there were not applied: a write cut short in a stripe they covered leaves that stripe's failed data wrong",
                    dagraid_core::ppl::UnreadableLog(report.unread.clone())
                );
                tracing::warn!(volume = %name, %at_risk, "volume assembled by force");
                volume.note.forced = true;
                volume.note.at_risk = Some(at_risk);
            }
            tracing::info!(
                volume = %name,
                entries = report.entries,
                replayed = report.replayed,
                unapplied = report.unapplied.len(),
                "partial-parity log replayed"
            );
            proposed.lost = volume.array.states().lost().clone();
            volume.note.log_replayed = Some(report.replayed);
        }
        // The stripes that may hold a torn write: the dirty regions of the parity map, or every
        // stripe of a volume that kept none. They await their resync before anything else.
        let resync = resync && volume.layout().fault_tolerance() > 0;
        let mut full = false;
        if resync {
            let stripes = layout.stripes();
            let dirty = assembly::merged_map(
                &plan,
                &record.id,
                &found,
                &records,
                recorded.map.as_ref(),
                stripes,
            )
            .unwrap_or_else(|| {
                full = true;
                LostSet::from_ranges(std::iter::once(0..stripes))
            });
            volume.array.parity_map().needs_sync(&dirty);
        } else if volume.array.map_held()
            && let Some(m) = recorded.map.as_ref()
        {
            // Shut down cleanly while a column was not current: the map is that column's
            // written-while-failed bitmap, kept for its re-add (nothing to resync).
            volume.array.parity_map().load(&m.stripes(layout.stripes()));
        }
        let map = volume.array.parity_map().snapshot();
        // Durable before the first access: newly failed columns, not clean, a new counter, the
        // regions awaiting their resync.
        if let Err(e) = volume
            .recorder
            .persist_assembly_retrying(proposed, DirtyRegions::from(&map), until)
            .await
        {
            let problem = format!("the assembled state could not be recorded: {e}");
            return (
                unassembled(record, plan.states.clone(), problem, false),
                plan.newly_failed,
            );
        }
        volume.array.parity_map().persisted(map.version);
        let volume = Arc::new(volume);
        // A failed column whose node does not answer now is away, as if the health loop had
        // found it gone: when it answers again, the column is re-added (a node back before
        // this coordinator's gone rule ran out would otherwise stay failed). One whose node
        // answers stays failed: it may have been failed by hand (`dagraid fail`, re-added only
        // by hand), which nothing durable records yet; so a coordinator that crashed between
        // a node's return and its column's re-add leaves that column failed (open: the
        // simulation's seed 2 with coordinator crashes).
        for (column, c) in volume.record.components.iter().enumerate() {
            if plan.states[column].is_failed()
                && self
                    .registry
                    .get(&c.node_id)
                    .is_some_and(|n| !n.reachable())
            {
                self.away.insert(c.node_id.clone(), ());
            }
        }
        self.cool_parity_map(&volume);
        if resync {
            // After a replay, as after a forced assembly, a stripe whose data is on a failed
            // column is left as it is: the log put it in step, or no write was cut short in it.
            let r = Resync::start(
                name.clone(),
                volume.array.clone(),
                volume.note.forced || volume.note.log_replayed.is_some(),
                full,
                self.config.resync,
            );
            *volume.resync.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        }
        tracing::info!(
            volume = %name,
            id = volume.id(),
            state = %volume.array.array_state(),
            resync,
            "volume assembled"
        );
        (VolumeEntry::Assembled(volume), plan.newly_failed)
    }

    /// The labels of `record`'s volume, over the registered nodes.
    fn labels_of(&self, record: &VolumeRecord, layout: &Layout) -> Result<VolumeLabels, String> {
        let columns = record
            .components
            .iter()
            .map(|c| {
                let node = self
                    .registry
                    .get(&c.node_id)
                    .ok_or_else(|| format!("storage node {:?} is not registered", c.node_id))?;
                Ok(LabelColumn {
                    node_id: c.node_id.clone(),
                    component_id: c.component_id.clone(),
                    serial: c.serial,
                    client: node.client().clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(VolumeLabels::new(
            self.registry.fencing().cluster_id(),
            record,
            layout,
            columns,
            self.config.label_deadline,
        ))
    }

    /// The volume of a record: the array over remote components in `states`, and its recorder
    /// starting from `durable`. The address of each column becomes the one in use (the
    /// configuration's, if it changed).
    fn build(
        &self,
        mut record: VolumeRecord,
        labels: VolumeLabels,
        durable: DurableState,
        proposed: Proposed,
        note: AssemblyNote,
    ) -> Result<Volume, String> {
        let layout = record.layout()?;
        let mut components: Vec<Arc<dyn ComponentIo>> = Vec::new();
        for c in &mut record.components {
            let node = self
                .registry
                .get(&c.node_id)
                .ok_or_else(|| format!("storage node {:?} is not registered", c.node_id))?;
            if node.address() != c.node_address {
                tracing::info!(
                    volume = %record.name,
                    node = %c.node_id,
                    recorded = %c.node_address,
                    configured = node.address(),
                    "storage node address changed; using the configured one"
                );
                c.node_address = node.address().to_owned();
            }
            let remote = RemoteComponent::new(
                node.client().clone(),
                c.component_id.clone(),
                record.block_size,
                record.blocks_per_column,
            )
            .map_err(|e| e.to_string())?;
            components.push(Arc::new(remote));
        }
        let states = ComponentStates::from_states(&layout, proposed.states)
            .map_err(|e| e.to_string())?
            .with_recovery(proposed.recovered, proposed.lost)
            .with_log_period(proposed.log_period);
        let recorder = Arc::new(
            VolumeStates::new(
                self.store.clone(),
                record.name.clone(),
                record.id.clone(),
                layout,
                labels,
                durable,
                self.config.crash.clone(),
            )
            .keeping_log(self.config.array.partial_parity_log),
        );
        let table: ComponentTable = components.into();
        let array = Array::new(
            layout,
            table,
            states,
            self.config.array.clone(),
            recorder.clone(),
        )
        .map_err(|e| e.to_string())?;
        recorder.attach(&array);
        Ok(Volume {
            record,
            array,
            recorder,
            resync: Mutex::new(None),
            note,
            map_cooldown: self.config.map_cooldown,
        })
    }

    /// Clears the parity-map regions of `volume` that were quiet for the cooldown, from now
    /// until the volume is dropped (a task that holds it only while it works).
    fn cool_parity_map(&self, volume: &Arc<Volume>) {
        let cooldown = self.config.map_cooldown;
        let array = Arc::downgrade(&volume.array);
        let name = volume.name().to_owned();
        let tick = (cooldown / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(array) = array.upgrade() else {
                    return;
                };
                if let Err(error) = array.cool_parity_map(cooldown).await {
                    // The regions stay dirty on disk (more resync after a crash, never less);
                    // the next tick tries again. After a clean shutdown nothing is recorded.
                    tracing::debug!(volume = %name, %error, "parity map not cleared");
                }
            }
        });
    }

    /// Client reads and writes answered so far, over every assembled volume: what the
    /// background jobs' throttles watch to tell busy clients from idle ones.
    pub fn client_accesses(&self) -> u64 {
        self.list()
            .iter()
            .map(|v| {
                let s = v.array().stats();
                s.reads.load(std::sync::atomic::Ordering::Relaxed)
                    + s.writes.load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    }

    /// Volume `name`, assembled: an unassembled one is FAILED_PRECONDITION / `not-assembled`.
    pub fn get(&self, name: &str) -> Result<Arc<Volume>, ServiceError> {
        match self.entry(name)? {
            VolumeEntry::Assembled(v) => Ok(v),
            VolumeEntry::Unassembled(u) => Err(u.error()),
        }
    }

    /// Volume `name`, assembled or not.
    pub fn entry(&self, name: &str) -> Result<VolumeEntry, ServiceError> {
        self.volumes
            .get(name)
            .map(|e| e.value().clone())
            .ok_or_else(|| ServiceError::UnknownVolume {
                name: name.to_owned(),
            })
    }

    /// Every volume, assembled or not, by name.
    pub fn entries(&self) -> Vec<VolumeEntry> {
        self.sorted()
    }

    /// Every assembled volume, by name.
    pub fn list(&self) -> Vec<Arc<Volume>> {
        self.sorted()
            .into_iter()
            .filter_map(|e| match e {
                VolumeEntry::Assembled(v) => Some(v),
                VolumeEntry::Unassembled(_) => None,
            })
            .collect()
    }

    /// Columns of all volumes on node `node_id`.
    pub fn components_on(&self, node_id: &str) -> usize {
        self.volumes
            .iter()
            .map(|v| {
                v.value()
                    .components()
                    .iter()
                    .filter(|c| c.node_id == node_id)
                    .count()
            })
            .sum()
    }

    /// Forgets every volume (the coordinator is stopping).
    pub fn clear(&self) {
        self.volumes.clear();
    }

    /// Stops every resync after the stripes in progress (the coordinator is stopping); a
    /// volume whose resync did not finish stays dirty.
    pub async fn stop_resyncs(&self) {
        let resyncs = self.list().into_iter().filter_map(|v| v.resync_handle());
        futures::future::join_all(resyncs.map(|r| async move { r.stop().await })).await;
    }

    /// Waits until no access holds a stripe lock, for at most `within`; returns whether it got
    /// there. The server answers no call any more by then, but an access whose caller went away
    /// after its locks were taken still runs in its own task, and its failure marks must reach
    /// the store before the store closes.
    pub async fn drain(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let held: u64 = self
                .list()
                .iter()
                .map(|v| v.array.stripe_locks().stats().held)
                .sum();
            if held == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(held, "accesses still running at shutdown");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Clean shutdown, after [`VolumeManager::stop_resyncs`] and [`VolumeManager::drain`]:
    /// marks every assembled volume clean (counter bumped, on its labels and in the store),
    /// unless an access still holds one of its stripe locks or its resync did not finish (it
    /// then stays dirty and is resynced at the next assembly). No change is recorded for a
    /// volume after this.
    pub async fn mark_clean_all(&self) {
        let marks = self.list().into_iter().map(|v| async move {
            let held = v.array.stripe_locks().stats().held;
            if held > 0 {
                tracing::warn!(
                    volume = v.name(),
                    held,
                    "left dirty: accesses still running"
                );
                return;
            }
            if let Some(r) = v.resync().filter(|r| !r.completed()) {
                tracing::info!(
                    volume = v.name(),
                    done = r.done,
                    stripes = r.total,
                    "left dirty: its resync did not finish"
                );
                return;
            }
            match v.recorder.mark_clean().await {
                Ok(state) => tracing::info!(
                    volume = v.name(),
                    counter = state.mod_counter,
                    "volume marked clean"
                ),
                Err(error) => {
                    tracing::warn!(volume = v.name(), %error, "left dirty: could not mark it clean")
                }
            }
        });
        futures::future::join_all(marks).await;
    }

    /// Creates a volume: checks the request, picks the nodes, creates one component per column,
    /// builds the array and stores the record, in that order; any failure undoes what was done.
    pub async fn create(&self, spec: VolumeSpec) -> Result<Arc<Volume>, ServiceError> {
        check_name(&spec.name)?;
        let _one_at_a_time = self.admin.lock().await;
        if self.volumes.contains_key(&spec.name) {
            return Err(ServiceError::VolumeExists { name: spec.name });
        }
        let columns = self.columns_for(&spec)?;
        let plan = plan(&spec, columns)?;
        let nodes = self.pick_nodes(&spec, columns, plan.layout.level())?;
        let unit = plan.layout.unit_bytes();
        if let Some((node, max)) = nodes
            .iter()
            .filter_map(|n| n.health().max_io_bytes.map(|m| (n, m)))
            .find(|(_, max)| *max < unit)
        {
            return Err(ServiceError::BadGeometry {
                detail: format!(
                    "stripe unit {unit} exceeds the largest transfer of storage node {} ({max} bytes)",
                    node.id()
                ),
            });
        }

        let id = format!("v{:016x}", self.config.ids.u64());
        check_labels_fit(
            self.registry.fencing().cluster_id(),
            &spec.name,
            &id,
            &plan.layout,
            &nodes,
        )?;
        let geometry = *plan.layout.geometry();
        let block_size = u32::try_from(geometry.block_size())
            .map_err(|_| ServiceError::Internal("block size overflows 32 bits".into()))?;
        let blocks = geometry.blocks_per_column();
        tracing::info!(
            volume = %spec.name,
            %id,
            level = %plan.layout.level(),
            columns,
            capacity = plan.layout.capacity(),
            "creating volume"
        );
        // A fresh component is zero-filled by its node (storage.proto, CreateComponent), so a
        // new volume's redundancy is already consistent at every level: each data unit is zero,
        // P = XOR of zeros = 0, Q = sum of g^i * 0 = 0, and both copies of a mirror are zero.
        // No initialisation pass is needed, whatever the nodes' disks held before.
        let creations = nodes.iter().enumerate().map(|(column, node)| {
            let component = format!("{id}-c{column}");
            async move {
                let r = node
                    .client()
                    .create_component(&component, block_size, blocks, 0)
                    .await;
                (*node, component, r)
            }
        });
        let results = futures::future::join_all(creations).await;
        let mut created: Vec<(&RegisteredNode, ComponentInfo)> = Vec::new();
        let mut first_error = None;
        for (node, component, r) in results {
            match r {
                Ok(info) if info.block_size == block_size && info.block_count >= blocks => {
                    created.push((node, info));
                }
                Ok(info) => {
                    first_error.get_or_insert(ServiceError::Internal(format!(
                        "storage node {} created component {component} with {} blocks of {} bytes, not {blocks} of {block_size}",
                        node.id(),
                        info.block_count,
                        info.block_size
                    )));
                    created.push((node, info));
                }
                Err(source) => {
                    first_error.get_or_insert(ServiceError::Provision {
                        volume: spec.name.clone(),
                        node: node.id().to_owned(),
                        component,
                        source: Box::new(source),
                    });
                }
            }
        }
        if let Some(e) = first_error {
            tracing::warn!(volume = %spec.name, error = %e, "volume creation failed; removing the components created");
            // Every component asked for, not only those acknowledged: a creation that timed out
            // may still have happened.
            delete_components(
                nodes
                    .iter()
                    .enumerate()
                    .map(|(column, n)| (*n, format!("{id}-c{column}"))),
            )
            .await;
            return Err(e);
        }

        let record = VolumeRecord {
            version: VOLUME_RECORD_VERSION,
            log_period: 0,
            name: spec.name.clone(),
            id: id.clone(),
            level: plan.layout.level().into(),
            stripe_unit_blocks: geometry.stripe_unit_blocks(),
            block_size,
            blocks_per_column: blocks,
            mod_counter: 1,
            config_epoch: 1,
            // In use from now on.
            clean: false,
            components: created
                .iter()
                .enumerate()
                .map(|(column, (node, info))| ComponentRecord {
                    column: column as u32,
                    node_id: node.id().to_owned(),
                    node_address: node.address().to_owned(),
                    component_id: info.id.clone(),
                    serial: info.serial,
                    state: StateRecord::Optimal,
                    recovered: 0,
                })
                .collect(),
            lost: Default::default(),
            // The parity map from the first write on.
            parity_map: Some(MapRecord {
                counter: 1,
                region_stripes: region_stripes(
                    plan.layout.stripe_data_bytes(),
                    self.config.array.region_bytes,
                ),
                ranges: Vec::new(),
                // Nothing cleared yet: every label of the volume is at or above.
                cleared_at: Some(0),
            }),
        };
        // Labels first, then the record: a crash in between leaves orphan components, never a
        // record whose components have no label.
        let stored = match self.label_new_volume(&record, &plan.layout).await {
            Ok(labels) => match self.build(
                record.clone(),
                labels,
                record.durable(),
                Proposed {
                    states: record.states(),
                    recovered: vec![0; record.components.len()],
                    lost: Default::default(),
                    log_period: 0,
                },
                AssemblyNote::default(),
            ) {
                Ok(volume) => self
                    .store
                    .insert_volume_async(record)
                    .await
                    .map(|()| volume)
                    .map_err(|e| match e {
                        crate::store::StoreError::Exists(name) => {
                            ServiceError::VolumeExists { name }
                        }
                        other => ServiceError::Store(other),
                    }),
                Err(e) => Err(ServiceError::Internal(e)),
            },
            Err(e) => Err(e),
        };
        let volume = match stored {
            Ok(volume) => {
                let volume = Arc::new(volume);
                self.cool_parity_map(&volume);
                volume
            }
            Err(e) => {
                tracing::warn!(volume = %spec.name, error = %e, "volume creation failed; removing its components");
                delete_components(created.iter().map(|(n, info)| (*n, info.id.clone()))).await;
                return Err(e);
            }
        };
        self.volumes
            .insert(spec.name.clone(), VolumeEntry::Assembled(volume.clone()));
        tracing::info!(volume = %spec.name, %id, "volume created");
        Ok(volume)
    }

    /// Writes the first label of every component of a new volume (all of them must be written).
    async fn label_new_volume(
        &self,
        record: &VolumeRecord,
        layout: &Layout,
    ) -> Result<VolumeLabels, ServiceError> {
        let labels = self
            .labels_of(record, layout)
            .map_err(ServiceError::Internal)?;
        let failures = labels.write(&record.durable(), true, None).await;
        if let Some((column, error)) = failures.into_iter().next() {
            let c = &record.components[column];
            return Err(ServiceError::Label {
                volume: record.name.clone(),
                node: c.node_id.clone(),
                component: c.component_id.clone(),
                source: error,
            });
        }
        Ok(labels)
    }

    /// The columns a request asks for, defaults resolved.
    fn columns_for(&self, spec: &VolumeSpec) -> Result<usize, ServiceError> {
        if !spec.nodes.is_empty() {
            if spec.columns != 0 && spec.columns as usize != spec.nodes.len() {
                return Err(ServiceError::BadNodes {
                    detail: format!(
                        "{} nodes named for {} columns",
                        spec.nodes.len(),
                        spec.columns
                    ),
                });
            }
            return Ok(spec.nodes.len());
        }
        if spec.columns != 0 {
            return Ok(spec.columns as usize);
        }
        let all = self.registry.nodes().len();
        Ok(match spec.level {
            // Mirrored pairs: the largest even number of nodes.
            Some(RaidLevel::Raid1) => all & !1,
            _ => all,
        })
    }

    /// The nodes of a new volume, in column order: the ones named, or the first reachable ones
    /// in registry order.
    fn pick_nodes(
        &self,
        spec: &VolumeSpec,
        columns: usize,
        level: RaidLevel,
    ) -> Result<Vec<&RegisteredNode>, ServiceError> {
        let registry = &self.registry;
        if !spec.nodes.is_empty() {
            let mut picked: Vec<&RegisteredNode> = Vec::new();
            for id in &spec.nodes {
                let node = registry.get(id).ok_or_else(|| ServiceError::BadNodes {
                    detail: format!(
                        "unknown storage node {id:?} (known: {})",
                        registry
                            .nodes()
                            .iter()
                            .map(|n| n.id())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
                if picked.iter().any(|p| p.id() == id) {
                    return Err(ServiceError::BadNodes {
                        detail: format!(
                            "storage node {id:?} is named twice (every column needs its own node)"
                        ),
                    });
                }
                let health = node.health();
                if !health.reachable {
                    return Err(ServiceError::NotEnoughNodes {
                        detail: format!(
                            "storage node {id:?} is unreachable: {}",
                            if health.detail.is_empty() {
                                "not checked yet"
                            } else {
                                &health.detail
                            }
                        ),
                    });
                }
                picked.push(node);
            }
            return Ok(picked);
        }
        let all = registry.nodes();
        if all.len() < columns {
            return Err(ServiceError::NotEnoughNodes {
                detail: format!(
                    "{level} with {columns} columns needs {columns} storage nodes; {} are registered",
                    all.len()
                ),
            });
        }
        let reachable: Vec<&RegisteredNode> = all.iter().filter(|n| n.reachable()).collect();
        if reachable.len() < columns {
            let down: Vec<String> = all
                .iter()
                .filter(|n| !n.reachable())
                .map(|n| format!("{} ({})", n.id(), n.health().detail))
                .collect();
            return Err(ServiceError::NotEnoughNodes {
                detail: format!(
                    "{level} with {columns} columns needs {columns} reachable storage nodes; {} of {} are reachable; unreachable: {}",
                    reachable.len(),
                    all.len(),
                    down.join(", ")
                ),
            });
        }
        Ok(reachable.into_iter().take(columns).collect())
    }

    /// Deletes volume `name` (assembled or not): forgets it (new calls get NOT_FOUND), removes
    /// its record, then deletes its components on the nodes, best effort (a node that cannot be
    /// reached keeps an orphan component, logged with its id).
    pub async fn delete(&self, name: &str) -> Result<(), ServiceError> {
        let _one_at_a_time = self.admin.lock().await;
        let (_, entry) = self
            .volumes
            .remove(name)
            .ok_or_else(|| ServiceError::UnknownVolume {
                name: name.to_owned(),
            })?;
        if let Err(e) = self.store.remove_volume_async(name.to_owned()).await {
            self.volumes.insert(name.to_owned(), entry);
            return Err(ServiceError::Store(e));
        }
        if let VolumeEntry::Assembled(v) = &entry
            && let Some(r) = v.resync_handle()
        {
            r.stop().await;
        }
        let registry = &self.registry;
        delete_components(entry.components().iter().filter_map(|c| {
            let node = registry.get(&c.node_id);
            if node.is_none() {
                tracing::warn!(node = %c.node_id, component = %c.component_id, "cannot delete the component: its node is not registered");
            }
            node.map(|n| (n, c.component_id.clone()))
        }))
        .await;
        // The spares it had taken became its columns and were deleted with them.
        if let Err(error) = self.spares.volume_deleted(entry.id()).await {
            tracing::warn!(volume = %name, id = entry.id(), %error, "the spares the volume used are still in the pool's records");
        }
        tracing::info!(volume = %name, id = entry.id(), "volume deleted");
        Ok(())
    }

    /// Administrator's fail of `column` of volume `name`; returns the volume.
    pub async fn fail_component(
        &self,
        name: &str,
        column: usize,
    ) -> Result<Arc<Volume>, ServiceError> {
        let volume = self.get(name)?;
        match volume.array.fail_component(column).await {
            Ok(FailOutcome::Marked) => {
                tracing::warn!(volume = %name, column, "component failed by the administrator");
            }
            Ok(FailOutcome::AlreadyFailed) => {}
            Err(e) => return Err(volume.access_error(e)),
        }
        self.failed_by_hand
            .insert((volume.id().to_owned(), column), ());
        Ok(volume)
    }

    /// Forgets the columns failed by hand that are no longer failed (re-added or rebuilt
    /// since), so that a later failure of theirs is re-added as any other.
    fn forget_mended(&self) {
        if self.failed_by_hand.is_empty() {
            return;
        }
        let failed: std::collections::HashSet<(String, usize)> = self
            .list()
            .iter()
            .flat_map(|v| {
                let states = v.array.states();
                (0..v.components().len())
                    .filter(|&c| states.get(c).is_some_and(|s| s.is_failed()))
                    .map(|c| (v.id().to_owned(), c))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.failed_by_hand.retain(|key, ()| failed.contains(key));
    }

    /// Node `node_id` missed a health check: if a column on it is failed already (an access
    /// failed it, not the administrator), the node is away, as if it had been found gone, so
    /// that its column is re-added when it answers again. A node back before the gone rule ran
    /// out would otherwise leave that column failed until the down-out delay (found by the
    /// simulation, seed 16).
    pub fn node_silent(&self, node_id: &str) {
        if self.away.contains_key(node_id) {
            return;
        }
        self.forget_mended();
        for volume in self.list() {
            let states = volume.array.states();
            if volume
                .components()
                .iter()
                .filter(|c| c.node_id == node_id)
                .any(|c| {
                    states.get(c.column as usize).is_some_and(|s| s.is_failed())
                        && !self
                            .failed_by_hand
                            .contains_key(&(volume.id().to_owned(), c.column as usize))
                })
            {
                self.away.insert(node_id.to_owned(), ());
                return;
            }
        }
    }

    /// Clears the gone mark of every column on node `node_id` (it answers again): a volume that
    /// was failed only because of gone columns leaves the failed state by itself. When the node
    /// had been found gone, its failed columns are noted as returned, for their re-add.
    pub fn node_answers(&self, node_id: &str) {
        self.forget_mended();
        let back = self.away.remove(node_id).is_some();
        for volume in self.list() {
            if back {
                let states = volume.array.states();
                for c in volume.components().iter().filter(|c| c.node_id == node_id) {
                    let column = c.column as usize;
                    if !states.get(column).is_some_and(|s| s.is_failed()) {
                        continue;
                    }
                    if self
                        .failed_by_hand
                        .contains_key(&(volume.id().to_owned(), column))
                    {
                        tracing::info!(
                            volume = volume.name(),
                            column,
                            node = node_id,
                            "storage node answers again; its column was failed by the administrator and is re-added only by hand"
                        );
                    } else {
                        tracing::info!(
                            volume = volume.name(),
                            column,
                            node = node_id,
                            "storage node answers again; its failed column is to be re-added"
                        );
                        self.returned.insert((volume.id().to_owned(), column), 0);
                    }
                }
            }
            for c in volume.components().iter().filter(|c| c.node_id == node_id) {
                if volume.array.set_gone(c.column as usize, false) {
                    tracing::info!(
                        volume = volume.name(),
                        column = c.column,
                        node = node_id,
                        state = %volume.array.array_state(),
                        "storage node answers again; its column is back in use"
                    );
                }
            }
        }
    }

    /// Fails every column of every volume on node `node_id` (the health loop found it gone).
    /// A column that cannot be failed (beyond the tolerance) is marked gone: the volume is then
    /// failed until the node answers again. Logged as warnings when `first` (the node just
    /// went), quietly after that.
    pub async fn fail_columns_on(&self, node_id: &str, first: bool) {
        self.away.insert(node_id.to_owned(), ());
        for volume in self.list() {
            for c in volume.components().iter().filter(|c| c.node_id == node_id) {
                let column = c.column as usize;
                if volume
                    .array
                    .states()
                    .get(column)
                    .is_some_and(|s| s.is_failed())
                {
                    continue;
                }
                match volume.array.fail_component(column).await {
                    Ok(FailOutcome::Marked) => tracing::warn!(
                        volume = volume.name(),
                        column,
                        node = node_id,
                        "component marked failed: its storage node is down"
                    ),
                    Ok(FailOutcome::AlreadyFailed) => {}
                    Err(error @ AccessError::Array(ArrayError::WouldExceedTolerance { .. })) => {
                        volume.array.set_gone(column, true);
                        if first {
                            tracing::warn!(
                                volume = volume.name(),
                                column,
                                node = node_id,
                                %error,
                                state = %volume.array.array_state(),
                                "storage node gone beyond the tolerance: the column is marked gone, not failed, and the volume refuses writes until enough nodes are back"
                            );
                        } else {
                            tracing::debug!(volume = volume.name(), column, node = node_id, %error, "storage node still gone");
                        }
                    }
                    Err(error) => tracing::warn!(
                        volume = volume.name(),
                        column,
                        node = node_id,
                        %error,
                        "column failed for its gone node, but the change is not durable yet; the next access records it"
                    ),
                }
            }
        }
    }
}

/// Refuses a volume whose labels would not fit a node's label area.
fn check_labels_fit(
    cluster_id: &str,
    name: &str,
    id: &str,
    layout: &Layout,
    nodes: &[&RegisteredNode],
) -> Result<(), ServiceError> {
    let columns = nodes
        .iter()
        .enumerate()
        .map(|(column, n)| LabelColumn {
            node_id: n.id().to_owned(),
            component_id: format!("{id}-c{column}"),
            serial: u64::MAX,
            client: n.client().clone(),
        })
        .collect();
    let probe = VolumeRecord {
        log_period: 0,
        version: VOLUME_RECORD_VERSION,
        name: name.to_owned(),
        id: id.to_owned(),
        level: layout.level().into(),
        stripe_unit_blocks: layout.geometry().stripe_unit_blocks(),
        block_size: layout.geometry().block_size() as u32,
        blocks_per_column: layout.geometry().blocks_per_column(),
        mod_counter: 0,
        config_epoch: 0,
        clean: false,
        components: Vec::new(),
        lost: Default::default(),
        parity_map: None,
    };
    VolumeLabels::new(cluster_id, &probe, layout, columns, Duration::from_secs(1))
        .fit()
        .map_err(|detail| ServiceError::BadGeometry { detail })
}

/// Deletes components, concurrently and best effort: failures are logged.
async fn delete_components(components: impl Iterator<Item = (&RegisteredNode, String)>) {
    let deletions = components.map(|(node, id)| async move {
        match node.client().delete_component(&id).await {
            Ok(()) => {}
            Err(e) if e.kind() == Some(&NodeErrorKind::UnknownComponent) => {}
            Err(error) => {
                tracing::warn!(node = node.id(), component = %id, %error, "component not deleted (orphan left on the node)");
            }
        }
    });
    futures::future::join_all(deletions).await;
}

impl crate::registry::NodeHealthEvents for VolumeManager {
    fn node_gone<'a>(
        &'a self,
        node_id: &'a str,
        first: bool,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(self.fail_columns_on(node_id, first))
    }

    fn node_answers(&self, node_id: &str) {
        VolumeManager::node_answers(self, node_id);
    }

    fn node_silent(&self, node_id: &str) {
        VolumeManager::node_silent(self, node_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(level: RaidLevel, size: u64) -> VolumeSpec {
        VolumeSpec {
            name: "v".into(),
            level: Some(level),
            size_bytes: size,
            ..VolumeSpec::default()
        }
    }

    #[test]
    fn names_follow_the_rule() {
        for ok in ["a", "vol0", "A.b_c-9", &"x".repeat(64)] {
            check_name(ok).unwrap();
        }
        for bad in ["", "a b", "vol/0", "é", &"x".repeat(65)] {
            assert!(
                matches!(check_name(bad), Err(ServiceError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sizes_round_up_to_whole_stripes_with_the_defaults() {
        // RAID 5 over 5 columns: 4 data units of 64 KiB per stripe.
        let p = plan(&spec(RaidLevel::Raid5, 1), 5).unwrap();
        assert_eq!(p.layout.capacity(), 256 << 10);
        assert_eq!(p.layout.geometry().block_size(), 4096);
        assert_eq!(p.layout.unit_bytes(), 64 << 10);
        let p = plan(&spec(RaidLevel::Raid5, (256 << 10) + 1), 5).unwrap();
        assert_eq!(p.layout.capacity(), 512 << 10);
        assert_eq!(p.layout.geometry().blocks_per_column(), 32);
        let p = plan(&spec(RaidLevel::Raid1, 1 << 20), 4).unwrap();
        assert_eq!(p.layout.capacity(), 1 << 20);
        let p = plan(&spec(RaidLevel::Raid6, 5 << 30), 5).unwrap();
        assert!(p.layout.capacity() >= 5 << 30);
    }

    #[test]
    fn bad_geometry_is_refused_with_the_numbers() {
        let cases = [
            (
                VolumeSpec {
                    level: None,
                    ..spec(RaidLevel::Raid5, 1)
                },
                5,
                "level is required",
            ),
            (spec(RaidLevel::Raid5, 0), 5, "size"),
            (
                VolumeSpec {
                    block_size: 1000,
                    ..spec(RaidLevel::Raid5, 1)
                },
                5,
                "block size 1000",
            ),
            (
                VolumeSpec {
                    block_size: 256,
                    ..spec(RaidLevel::Raid5, 1)
                },
                5,
                "block size 256",
            ),
            (
                VolumeSpec {
                    stripe_unit_bytes: 6000,
                    ..spec(RaidLevel::Raid5, 1)
                },
                5,
                "not a multiple",
            ),
            (spec(RaidLevel::Raid5, 1), 2, "at least 3 columns"),
            (spec(RaidLevel::Raid1, 1), 3, "even number"),
            (spec(RaidLevel::Raid6, 1), 3, "at least"),
            (spec(RaidLevel::Raid5, u64::MAX), 5, "too large"),
        ];
        for (s, columns, expect) in cases {
            let e = plan(&s, columns).unwrap_err();
            assert!(matches!(e, ServiceError::BadGeometry { .. }), "{s:?}: {e}");
            assert!(e.to_string().contains(expect), "{s:?}: {e}");
        }
    }
}
