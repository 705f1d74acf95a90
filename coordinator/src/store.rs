//! The coordinator's embedded store: one redb file, `<data-dir>/coordinator.redb`.
//!
//! Tables:
//! - `meta` (`&str -> u64`): `format` (the store format, [`STORE_FORMAT`]) and `epoch` (the
//!   owner epoch of the coordinator's latest life).
//! - `volumes` (`&str -> &[u8]`): one [`VolumeRecord`] per volume, keyed by name, encoded as JSON
//!   with a `version` field ([`VOLUME_RECORD_VERSION`]); older versions are migrated forward when
//!   read ([`VolumeRecord::decode`]).
//! - `spares` (`&str -> &[u8]`): one [`SpareRecord`] per hot spare of the pool
//!   (`crate::spares`), keyed by its id (the component id on its node), encoded as JSON with a
//!   `version` field ([`SPARE_RECORD_VERSION`]). A coordinator that predates the table ignores
//!   it (the format of the store as a whole is unchanged: a table was added, none changed).
//! - `parity_jobs` (`&str -> &[u8]`): one [`ParityJobRecord`] per volume with a parity check
//!   or rewrite running, keyed by the volume's id.
//! - `copybacks` (`&str -> &[u8]`): one [`CopybackRecord`] per copyback running, keyed by
//!   `<volume id>/<column>`, encoded as JSON with a `version` field
//!   ([`COPYBACK_RECORD_VERSION`]): the replacement a copyback copies to, which the volume's
//!   members name only at its end. Its checkpoint is the column's watermark in the volume's
//!   durable state. Added like `spares`: an older coordinator ignores it.
//!
//! Every change is one write transaction, durable when it returns (redb's default immediate
//! durability: the commit is fsynced). redb locks the file, so a second coordinator on the same
//! data directory is refused ([`StoreError::InUse`]).
//!
//! The deterministic simulation keeps the store in memory instead ([`Store::open_in_memory`]
//! over [`MemoryStoreMedia`], which outlives one coordinator life): no file, and every
//! operation runs inline on its task rather than on tokio's blocking pool.
//!
//! The store is one of the two copies of a volume's durable state ([`DurableState`]); the other
//! is the label on every surviving component (`crate::durable`). Neither is trusted over a newer
//! one: at assembly the copy with the highest modification counter wins
//! (`dagraid_core::meta::assembly`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use dagraid_core::array::ComponentState;
use dagraid_core::layout::{Geometry, Layout, RaidLevel};
use dagraid_core::lost::LostSet;
use dagraid_core::meta::assembly::Recorded;
use dagraid_core::parity_map::DirtyRegions;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Format of the store as a whole (tables and keys).
pub const STORE_FORMAT: u64 = 1;
/// Version of the [`VolumeRecord`] encoding this coordinator writes. Version 1 (no counters,
/// no clean flag, no serials) is read and migrated; version 2 (optimal and failed states only,
/// no recovery watermarks, no lost set), version 3 (no parity map) and version 4 (a parity map
/// not held while degraded: no `cleared_at`) and version 5 (no partial-parity log period) are
/// read as version 6 with nothing lost, no parity map, a map that no re-add trusts, and no log
/// period (a crash while degraded then needs `--force`, as before the log). A coordinator of
/// version 4 refuses a version 5 record, and one of version 5 a version 6 record (it would
/// write degraded without the log and keep the period of an earlier spell)
/// (`docs/STATE.md`: no going back after the first write of the new format; a version 4
/// coordinator would clear regions a failed column missed).
pub const VOLUME_RECORD_VERSION: u32 = 6;

/// Version of the [`SpareRecord`] encoding this coordinator writes (and the only one it reads:
/// a newer one is refused).
pub const SPARE_RECORD_VERSION: u32 = 1;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const VOLUMES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("volumes");
const SPARES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("spares");
const PARITY_JOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("parity_jobs");

/// Version of the [`ParityJobRecord`] encoding this coordinator writes (and the only one it
/// reads: a newer one is refused, and its job is not resumed).
pub const PARITY_JOB_RECORD_VERSION: u32 = 1;
const COPYBACKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("copybacks");

/// Version of the [`CopybackRecord`] encoding this coordinator writes (and the only one it
/// reads: a newer one is refused, and its copyback is not resumed).
pub const COPYBACK_RECORD_VERSION: u32 = 1;
const FORMAT_KEY: &str = "format";
const EPOCH_KEY: &str = "epoch";

/// Decodes a record of a table whose encoding has one version, `version`: refuses bytes with
/// no version, another version (written by a newer coordinator), or that do not decode. The
/// error is the detail the caller's `Bad*Record` carries.
fn decode_single_version<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    version: u32,
) -> Result<T, String> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let Versioned { version: found } =
        serde_json::from_slice(bytes).map_err(|e| format!("no version: {e}"))?;
    if found != version {
        return Err(format!(
            "record version {found}; this coordinator reads version {version} (written by a newer coordinator?)"
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// Errors of the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another coordinator in this process) has the store open.
    #[error("{path} is in use by another coordinator (the store file is locked)")]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The store cannot be opened (not a redb file, an I/O error, a newer format).
    #[error("cannot open the store {path}: {detail}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A read or a transaction failed.
    #[error("store {operation}: {detail}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// A volume record cannot be decoded (corrupt, or written by a newer coordinator).
    #[error("volume record {name:?}: {detail}")]
    BadRecord {
        /// The record's key.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A record of that name already exists.
    #[error("a volume named {0:?} is already stored")]
    Exists(String),
    /// A spare record cannot be decoded (corrupt, or written by a newer coordinator).
    #[error("spare record {id:?}: {detail}")]
    BadSpareRecord {
        /// The record's key.
        id: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A stored parity-job checkpoint cannot be decoded.
    #[error("the stored parity job of volume id {volume_id} is unusable: {detail}")]
    BadParityJobRecord {
        /// The record's key (the volume's id).
        volume_id: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A stored copyback record cannot be decoded.
    #[error("the stored copyback {key}: {detail}")]
    BadCopybackRecord {
        /// The record's key (`<volume id>/<column>`).
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A spare of that id is already stored.
    #[error("a spare {0:?} is already stored")]
    SpareExists(String),
    /// No spare of that id is stored.
    #[error("no spare {0:?} is stored")]
    SpareNotFound(String),
    /// No record of that name (and id).
    #[error("no volume {0:?} is stored")]
    NotFound(String),
    /// An update would lower the record's modification counter (a bug: counters only go up).
    #[error("volume {name:?}: counter {given} is not above the stored {stored}")]
    StaleCounter {
        /// The volume.
        name: String,
        /// The counter given.
        given: u64,
        /// The counter stored.
        stored: u64,
    },
    /// The store was closed (the coordinator is stopping).
    #[error("the store is closed")]
    Closed,
}

fn io<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Io {
        operation,
        detail: e.into().to_string(),
    }
}

/// RAID level as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LevelRecord {
    /// RAID 0.
    Raid0,
    /// RAID 1.
    Raid1,
    /// RAID 4.
    Raid4,
    /// RAID 5.
    Raid5,
    /// RAID 6.
    Raid6,
}

impl From<RaidLevel> for LevelRecord {
    fn from(level: RaidLevel) -> Self {
        match level {
            RaidLevel::Raid0 => LevelRecord::Raid0,
            RaidLevel::Raid1 => LevelRecord::Raid1,
            RaidLevel::Raid4 => LevelRecord::Raid4,
            RaidLevel::Raid5 => LevelRecord::Raid5,
            RaidLevel::Raid6 => LevelRecord::Raid6,
        }
    }
}

impl From<LevelRecord> for RaidLevel {
    fn from(level: LevelRecord) -> Self {
        match level {
            LevelRecord::Raid0 => RaidLevel::Raid0,
            LevelRecord::Raid1 => RaidLevel::Raid1,
            LevelRecord::Raid4 => RaidLevel::Raid4,
            LevelRecord::Raid5 => RaidLevel::Raid5,
            LevelRecord::Raid6 => RaidLevel::Raid6,
        }
    }
}

/// Component state as stored: the labels' spelling of every state of the state model.
pub use dagraid_core::meta::label::LabelState as StateRecord;

/// The lost set as stored: exact, whatever its size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostRecord {
    /// The modification counter of the change that last changed it.
    pub counter: u64,
    /// Half-open volume block ranges, increasing.
    pub ranges: Vec<[u64; 2]>,
}

impl LostRecord {
    /// The record of `lost` as of `counter`.
    pub fn of(lost: &LostSet, counter: u64) -> LostRecord {
        LostRecord {
            counter,
            ranges: lost.ranges().map(|r| [r.start, r.end]).collect(),
        }
    }

    /// The set.
    pub fn set(&self) -> LostSet {
        LostSet::from_ranges(self.ranges.iter().map(|[s, e]| *s..*e))
    }
}

/// The parity map as stored: exact, whatever its size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRecord {
    /// The modification counter of the change that last changed it.
    pub counter: u64,
    /// Stripes per region.
    pub region_stripes: u64,
    /// Half-open ranges of dirty region indexes, increasing.
    pub ranges: Vec<[u64; 2]>,
    /// The modification counter in effect when a region was last cleared (`None`: unknown, a
    /// version 4 record): a failed component whose label counter is below it may have missed
    /// a write into a region cleared since, so its re-add cannot trust the map.
    #[serde(default)]
    pub cleared_at: Option<u64>,
}

impl MapRecord {
    /// The record of `map` as of `counter`, last cleared at `cleared_at`.
    pub fn of(map: &DirtyRegions, counter: u64, cleared_at: Option<u64>) -> MapRecord {
        MapRecord {
            cleared_at,
            counter,
            region_stripes: map.region_stripes,
            ranges: map.regions.ranges().map(|r| [r.start, r.end]).collect(),
        }
    }

    /// The dirty regions.
    pub fn regions(&self) -> DirtyRegions {
        DirtyRegions {
            region_stripes: self.region_stripes,
            regions: LostSet::from_ranges(self.ranges.iter().map(|[s, e]| *s..*e)),
        }
    }
}

/// One column of a stored volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRecord {
    /// The column.
    pub column: u32,
    /// Id of the storage node holding the component.
    pub node_id: String,
    /// That node's address when the record was written (the configuration's address wins if
    /// they differ).
    pub node_address: String,
    /// The component's id on the node.
    pub component_id: String,
    /// The component's serial, as its node gave it at creation (0: unknown, a record migrated
    /// from version 1).
    #[serde(default)]
    pub serial: u64,
    /// Its state.
    pub state: StateRecord,
    /// While recovering: the first stripe not yet recovered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recovered: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The part of a volume's state that must survive a crash, as both the store and the labels
/// record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableState {
    /// Bumped on every update; the highest counter found is the current record.
    pub mod_counter: u64,
    /// Bumped when a component state (or the membership) changes.
    pub config_epoch: u64,
    /// Whether the volume was shut down cleanly (no write can be half done).
    pub clean: bool,
    /// Every column's state.
    pub states: Vec<ComponentState>,
    /// Every column's recovery watermark (the first stripe a recovering column has not
    /// recovered yet; 0 otherwise).
    pub recovered: Vec<u64>,
    /// The lost blocks.
    pub lost: LostSet,
    /// The counter of the change that last changed `lost` (0: never).
    pub lost_counter: u64,
    /// Every column's member (node and component), when the change names them; empty: the
    /// members stay as stored. A reconstruction onto a spare or a copyback changes a member.
    pub members: Vec<MemberRecord>,
    /// The parity map's dirty regions (`None`: the volume keeps no map yet, a record written
    /// before it existed).
    pub map: Option<DirtyRegions>,
    /// The counter of the change that last changed `map` (0: never).
    pub map_counter: u64,
    /// The modification counter in effect when the map last cleared a region (`None`:
    /// unknown; no re-add trusts the map). The map is held while a column is not current, so
    /// a failed component whose label counter is at or above it missed writes only in regions
    /// the map names (Linux md's `events_cleared`).
    pub map_cleared_at: Option<u64>,
    /// The partial-parity log's period (`dagraid_core::ppl`): drawn when the volume stopped
    /// being optimal, 0 while every column is current (and in records written before the log).
    pub log_period: u64,
}

/// Which component on which node holds a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The storage node's id.
    pub node_id: String,
    /// Its address.
    pub node_address: String,
    /// The component's id on the node.
    pub component_id: String,
    /// The component's serial.
    pub serial: u64,
}

impl DurableState {
    /// A state with `states`, nothing recovering, nothing lost.
    pub fn new(
        mod_counter: u64,
        config_epoch: u64,
        clean: bool,
        states: Vec<ComponentState>,
    ) -> Self {
        DurableState {
            mod_counter,
            config_epoch,
            clean,
            recovered: vec![0; states.len()],
            states,
            lost: LostSet::new(),
            lost_counter: 0,
            members: Vec::new(),
            map: None,
            map_counter: 0,
            map_cleared_at: None,
            log_period: 0,
        }
    }

    /// The form the reassembly decision reads.
    pub fn recorded(&self) -> Recorded {
        Recorded {
            mod_counter: self.mod_counter,
            config_epoch: self.config_epoch,
            clean: self.clean,
            states: self.states.clone(),
            recovered: self.recovered.clone(),
            lost: self.lost.clone(),
            lost_counter: self.lost_counter,
            log_period: self.log_period,
        }
    }
}

/// A stored volume: identity, layout, per column its node, component and state, and the
/// counters and clean flag of its durable state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Encoding version ([`VOLUME_RECORD_VERSION`] when written by this coordinator).
    pub version: u32,
    /// The volume's name (also the key).
    pub name: String,
    /// Its id, unique and fixed at creation; component ids derive from it.
    pub id: String,
    /// RAID level.
    pub level: LevelRecord,
    /// Blocks per stripe unit.
    pub stripe_unit_blocks: u64,
    /// Bytes per block.
    pub block_size: u32,
    /// Blocks of every component (whole stripe units).
    pub blocks_per_column: u64,
    /// Modification counter of this record (0: never labelled, a record migrated from version
    /// 1).
    pub mod_counter: u64,
    /// Config epoch of this record.
    pub config_epoch: u64,
    /// Whether the volume was shut down cleanly.
    pub clean: bool,
    /// The columns, in column order.
    pub components: Vec<ComponentRecord>,
    /// The lost set (version 2 and before: none).
    #[serde(default)]
    pub lost: LostRecord,
    /// The parity map (version 3 and before: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity_map: Option<MapRecord>,
    /// The partial-parity log's period (version 5 and before: none, 0).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub log_period: u64,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// A version 1 record: what a coordinator before labels stored.
#[derive(Debug, Clone, Deserialize)]
struct VolumeRecordV1 {
    name: String,
    id: String,
    level: LevelRecord,
    stripe_unit_blocks: u64,
    block_size: u32,
    blocks_per_column: u64,
    components: Vec<ComponentRecord>,
}

impl From<VolumeRecordV1> for VolumeRecord {
    /// Counter 0 says no label was ever written (assembly then takes a missing label for the
    /// record's own view); not clean, because a version 1 coordinator never recorded whether it
    /// stopped cleanly, so the first assembly resyncs.
    fn from(v1: VolumeRecordV1) -> Self {
        VolumeRecord {
            version: VOLUME_RECORD_VERSION,
            log_period: 0,
            name: v1.name,
            id: v1.id,
            level: v1.level,
            stripe_unit_blocks: v1.stripe_unit_blocks,
            block_size: v1.block_size,
            blocks_per_column: v1.blocks_per_column,
            mod_counter: 0,
            config_epoch: 0,
            clean: false,
            components: v1
                .components
                .into_iter()
                .map(|c| ComponentRecord {
                    column: c.column,
                    node_id: c.node_id,
                    node_address: c.node_address,
                    component_id: c.component_id,
                    serial: c.serial,
                    state: c.state,
                    recovered: 0,
                })
                .collect(),
            lost: LostRecord::default(),
            parity_map: None,
        }
    }
}

impl VolumeRecord {
    /// The layout the record describes.
    pub fn layout(&self) -> Result<Layout, String> {
        let geometry = Geometry::new(
            self.components.len(),
            self.stripe_unit_blocks,
            u64::from(self.block_size),
            self.blocks_per_column,
        )
        .map_err(|e| e.to_string())?;
        Layout::new(self.level.into(), geometry).map_err(|e| e.to_string())
    }

    /// The component states, in column order.
    pub fn states(&self) -> Vec<ComponentState> {
        self.components.iter().map(|c| c.state.into()).collect()
    }

    /// The durable state the record holds.
    pub fn durable(&self) -> DurableState {
        DurableState {
            mod_counter: self.mod_counter,
            config_epoch: self.config_epoch,
            clean: self.clean,
            states: self.states(),
            recovered: self.components.iter().map(|c| c.recovered).collect(),
            lost: self.lost.set(),
            lost_counter: self.lost.counter,
            members: self
                .components
                .iter()
                .map(|c| MemberRecord {
                    node_id: c.node_id.clone(),
                    node_address: c.node_address.clone(),
                    component_id: c.component_id.clone(),
                    serial: c.serial,
                })
                .collect(),
            map: self.parity_map.as_ref().map(MapRecord::regions),
            map_counter: self.parity_map.as_ref().map_or(0, |m| m.counter),
            map_cleared_at: self.parity_map.as_ref().and_then(|m| m.cleared_at),
            log_period: self.log_period,
        }
    }

    /// Replaces the record's durable state; refuses states this format cannot hold or a column
    /// count that differs.
    pub fn set_durable(&mut self, state: &DurableState) -> Result<(), StoreError> {
        if self.components.len() != state.states.len() {
            return Err(StoreError::BadRecord {
                name: self.name.clone(),
                detail: format!(
                    "{} columns stored, {} states given",
                    self.components.len(),
                    state.states.len()
                ),
            });
        }
        for (column, c) in self.components.iter_mut().enumerate() {
            c.state = state.states[column].into();
            c.recovered = state.recovered.get(column).copied().unwrap_or(0);
            if let Some(m) = state.members.get(column) {
                c.node_id = m.node_id.clone();
                c.node_address = m.node_address.clone();
                c.component_id = m.component_id.clone();
                c.serial = m.serial;
            }
        }
        self.mod_counter = state.mod_counter;
        self.config_epoch = state.config_epoch;
        self.clean = state.clean;
        self.lost = LostRecord::of(&state.lost, state.lost_counter);
        self.parity_map = state
            .map
            .as_ref()
            .map(|m| MapRecord::of(m, state.map_counter, state.map_cleared_at));
        self.log_period = state.log_period;
        self.version = VOLUME_RECORD_VERSION;
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        // A struct of plain fields always serialises.
        serde_json::to_vec(self).expect("volume records serialise")
    }

    /// Decodes a stored record: reads `version` first, migrates version 1 forward, refuses
    /// versions this coordinator does not know.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<VolumeRecord, StoreError> {
        let bad = |detail: String| StoreError::BadRecord {
            name: name.to_owned(),
            detail,
        };
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let Versioned { version } =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("no version: {e}")))?;
        let record: VolumeRecord = match version {
            1 => serde_json::from_slice::<VolumeRecordV1>(bytes)
                .map_err(|e| bad(e.to_string()))?
                .into(),
            // Versions 2 to 5 are version 6 without the new fields (their defaults: nothing
            // lost, no parity map, no `cleared_at`, no log period).
            2..=5 | VOLUME_RECORD_VERSION => {
                let mut r: VolumeRecord =
                    serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
                if version == 4
                    && let Some(m) = r.parity_map.as_mut()
                {
                    // Written by a coordinator that cleared regions while degraded.
                    m.cleared_at = None;
                }
                r.version = VOLUME_RECORD_VERSION;
                r
            }
            other => {
                return Err(bad(format!(
                    "record version {other}; this coordinator reads versions 1 to {VOLUME_RECORD_VERSION} (written by a newer coordinator?)"
                )));
            }
        };
        if record.name != name {
            return Err(bad(format!("the record names volume {:?}", record.name)));
        }
        if record
            .components
            .iter()
            .enumerate()
            .any(|(i, c)| c.column as usize != i)
        {
            return Err(bad("columns are not in order".into()));
        }
        record.layout().map_err(bad)?;
        Ok(record)
    }
}

/// What a spare taken by a volume is used for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpareUse {
    /// The volume's name.
    pub volume: String,
    /// The volume's id (names can be reused, ids cannot).
    pub volume_id: String,
    /// The column the spare stands in for.
    pub column: u32,
}

/// A hot spare of the pool: a component on a storage node, labelled as a spare, that a volume
/// with the same block size and at most as many blocks per column may take for a failed column
/// (`crate::spares`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpareRecord {
    /// Encoding version ([`SPARE_RECORD_VERSION`]).
    pub version: u32,
    /// Its id: the component id on its node (`spare-<16 hex digits>`), also the key.
    pub id: String,
    /// Id of the storage node holding the component.
    pub node_id: String,
    /// That node's address when the record was written.
    pub node_address: String,
    /// The component's serial, as its node gave it at creation (it seeds the block checksums).
    pub serial: u64,
    /// Bytes per block.
    pub block_size: u32,
    /// Blocks of the component.
    pub block_count: u64,
    /// The volume and column using it; `None` while it is free.
    #[serde(default)]
    pub in_use: Option<SpareUse>,
}

impl SpareRecord {
    /// Bytes of the component.
    pub fn size_bytes(&self) -> u64 {
        self.block_count.saturating_mul(u64::from(self.block_size))
    }

    fn encode(&self) -> Vec<u8> {
        // A struct of plain fields always serialises.
        serde_json::to_vec(self).expect("spare records serialise")
    }

    /// Decodes a stored record: refuses a version this coordinator does not know, and a record
    /// whose id is not its key.
    pub fn decode(id: &str, bytes: &[u8]) -> Result<SpareRecord, StoreError> {
        let bad = |detail: String| StoreError::BadSpareRecord {
            id: id.to_owned(),
            detail,
        };
        let record: SpareRecord =
            decode_single_version(bytes, SPARE_RECORD_VERSION).map_err(bad)?;
        if record.id != id {
            return Err(bad(format!("the record names spare {:?}", record.id)));
        }
        if record.block_size == 0 || record.block_count == 0 {
            return Err(bad(format!(
                "{} blocks of {} bytes",
                record.block_count, record.block_size
            )));
        }
        Ok(record)
    }
}

/// A running copyback (`crate::rebuild`), keyed by `<volume id>/<column>`: written before the
/// column becomes `copyback`, removed once the copyback ended (completed: the replacement is
/// the member and the spare back in the pool; or stopped: the replacement deleted). It names
/// the replacement, which the volume's members name only at the end; the copy's checkpoint is
/// the column's watermark in the volume's durable state. A copyback cut short by a restart
/// resumes from both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopybackRecord {
    /// Encoding version ([`COPYBACK_RECORD_VERSION`]).
    pub version: u32,
    /// The volume's id.
    pub volume_id: String,
    /// The column copied.
    pub column: u32,
    /// The spare the column lives on (returned to the pool at the end).
    pub spare_id: String,
    /// The replacement's node.
    pub node_id: String,
    /// The replacement's component id on that node.
    pub component_id: String,
    /// The replacement's serial.
    pub serial: u64,
    /// The copy's rate limit while clients are idle (bytes per second).
    pub rate: u64,
}

impl CopybackRecord {
    /// The record's key: `<volume id>/<column>`.
    pub fn key(&self) -> String {
        Self::key_of(&self.volume_id, self.column as usize)
    }

    /// The key of column `column` of volume `volume_id`.
    pub fn key_of(volume_id: &str, column: usize) -> String {
        format!("{volume_id}/{column}")
    }

    fn encode(&self) -> Vec<u8> {
        // A struct of plain fields always serialises.
        serde_json::to_vec(self).expect("copyback records serialise")
    }

    /// Decodes a stored record: refuses a version this coordinator does not know, and a record
    /// that does not match its key.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<CopybackRecord, StoreError> {
        let bad = |detail: String| StoreError::BadCopybackRecord {
            key: key.to_owned(),
            detail,
        };
        let record: CopybackRecord =
            decode_single_version(bytes, COPYBACK_RECORD_VERSION).map_err(bad)?;
        if record.key() != key {
            return Err(bad(format!("the record names {:?}", record.key())));
        }
        Ok(record)
    }
}

/// The checkpoint of a running parity check or rewrite (`crate::scrub`), keyed by the volume's
/// id: written when the job starts and about every second, removed when it completes; a job
/// cut short by a restart resumes from `next_stripe` with the counts it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParityJobRecord {
    /// Encoding version ([`PARITY_JOB_RECORD_VERSION`]).
    pub version: u32,
    /// The volume's id (the key).
    pub volume_id: String,
    /// The volume's name when the job started.
    pub volume: String,
    /// `check` or `rewrite`.
    pub kind: String,
    /// Its rate limit while clients are idle (bytes per second; 0: none).
    pub rate: u64,
    /// Every stripe below it was checked (or rewritten).
    pub next_stripe: u64,
    /// Stripes found mismatching so far.
    pub mismatches: u64,
    /// The first of them.
    pub mismatched_stripes: Vec<u64>,
    /// Stripes skipped so far.
    pub skipped: u64,
    /// Stripes whose check or rewrite failed so far.
    pub failed: u64,
    /// Blocks that answered data loss so far.
    pub unreadable_blocks: u64,
    /// Stripes rewritten so far.
    pub rewritten: u64,
}

impl ParityJobRecord {
    fn encode(&self) -> Vec<u8> {
        // A struct of plain fields always serialises.
        serde_json::to_vec(self).expect("parity job records serialise")
    }

    /// Decodes a stored record: refuses a version this coordinator does not know, and a record
    /// whose volume id is not its key.
    pub fn decode(volume_id: &str, bytes: &[u8]) -> Result<ParityJobRecord, StoreError> {
        let bad = |detail: String| StoreError::BadParityJobRecord {
            volume_id: volume_id.to_owned(),
            detail,
        };
        let record: ParityJobRecord =
            decode_single_version(bytes, PARITY_JOB_RECORD_VERSION).map_err(bad)?;
        if record.volume_id != volume_id {
            return Err(bad(format!(
                "the record names volume id {:?}",
                record.volume_id
            )));
        }
        if !matches!(record.kind.as_str(), "check" | "rewrite") {
            return Err(bad(format!("unknown kind {:?}", record.kind)));
        }
        Ok(record)
    }
}

/// The coordinator's store. Cheap to clone; [`Store::close`] releases the file for everyone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// `None` once closed.
    db: RwLock<Option<Database>>,
    /// In memory: operations never block, and run inline.
    in_memory: bool,
}

/// The bytes of a store kept in memory (redb's in-memory backend), shared by every
/// coordinator life opened on it, like a store file across restarts. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MemoryStoreMedia(Arc<redb::backends::InMemoryBackend>);

impl redb::StorageBackend for MemoryStoreMedia {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
}

impl Store {
    /// Opens (or creates) the store at `path`. Blocking: call it from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.to_owned(),
            },
            other => StoreError::Open {
                path: path.to_owned(),
                detail: other.to_string(),
            },
        })?;
        Self::init(db, path, false)
    }

    /// Opens (or creates) the store kept in `media`, named `path` in messages. Never blocks.
    pub fn open_in_memory(media: MemoryStoreMedia, path: &Path) -> Result<Store, StoreError> {
        let db = redb::Builder::new()
            .create_with_backend(media)
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        Self::init(db, path, true)
    }

    /// Checks the format of a freshly opened database and creates its tables.
    fn init(db: Database, path: &Path, in_memory: bool) -> Result<Store, StoreError> {
        let open = |detail: String| StoreError::Open {
            path: path.to_owned(),
            detail,
        };
        let txn = db.begin_write().map_err(|e| open(e.to_string()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| open(e.to_string()))?;
            let format = meta
                .get(FORMAT_KEY)
                .map_err(|e| open(e.to_string()))?
                .map(|v| v.value());
            match format {
                None => {
                    meta.insert(FORMAT_KEY, STORE_FORMAT)
                        .map_err(|e| open(e.to_string()))?;
                }
                Some(STORE_FORMAT) => {}
                Some(other) => {
                    return Err(open(format!(
                        "store format {other}; this coordinator knows format {STORE_FORMAT} only"
                    )));
                }
            }
            txn.open_table(VOLUMES).map_err(|e| open(e.to_string()))?;
            txn.open_table(SPARES).map_err(|e| open(e.to_string()))?;
            txn.open_table(PARITY_JOBS)
                .map_err(|e| open(e.to_string()))?;
            txn.open_table(COPYBACKS).map_err(|e| open(e.to_string()))?;
        }
        txn.commit().map_err(|e| open(e.to_string()))?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                db: RwLock::new(Some(db)),
                in_memory,
            }),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Closes the store: waits for operations in progress, then releases the file. Later
    /// operations fail with [`StoreError::Closed`].
    pub fn close(&self) {
        let db = self
            .inner
            .db
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(db);
    }

    /// Every record of `table`, each decoded from its key and bytes by `decode`; one that
    /// cannot be decoded is an error.
    fn records<T>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        operation: &'static str,
        decode: impl Fn(&str, &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(io(operation))?;
            let table = txn.open_table(table).map_err(io(operation))?;
            let mut records = Vec::new();
            for entry in table.iter().map_err(io(operation))? {
                let (key, value) = entry.map_err(io(operation))?;
                records.push(decode(key.value(), value.value())?);
            }
            Ok(records)
        })
    }

    /// Writes `bytes` at `key` of `table` in one transaction, only if the key is stored
    /// already (`stored`) or only if it is not (`!stored`); otherwise answers `refused()`
    /// and writes nothing.
    fn put(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: &str,
        bytes: &[u8],
        stored: bool,
        operation: &'static str,
        refused: impl FnOnce() -> StoreError,
    ) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(io(operation))?;
            {
                let mut table = txn.open_table(table).map_err(io(operation))?;
                if table.get(key).map_err(io(operation))?.is_some() != stored {
                    return Err(refused());
                }
                table.insert(key, bytes).map_err(io(operation))?;
            }
            txn.commit().map_err(io(operation))?;
            Ok(())
        })
    }

    /// Removes `key` from `table`; returns whether it was stored.
    fn remove_key(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: &str,
        operation: &'static str,
    ) -> Result<bool, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(io(operation))?;
            let removed = {
                let mut table = txn.open_table(table).map_err(io(operation))?;
                table.remove(key).map_err(io(operation))?.is_some()
            };
            txn.commit().map_err(io(operation))?;
            Ok(removed)
        })
    }

    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.inner.db.read().unwrap_or_else(|p| p.into_inner());
        let db = guard.as_ref().ok_or(StoreError::Closed)?;
        f(db)
    }

    /// Runs a blocking store operation off the async threads (inline when in memory).
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if self.inner.in_memory {
            return f(self);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Io {
                operation: "task",
                detail: e.to_string(),
            })?
    }

    /// The stored owner epoch (0 if none was ever taken).
    pub fn epoch(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(io("read"))?;
            let meta = txn.open_table(META).map_err(io("read"))?;
            Ok(meta
                .get(EPOCH_KEY)
                .map_err(io("read"))?
                .map(|v| v.value())
                .unwrap_or(0))
        })
    }

    /// Takes a new owner epoch, durably: the smallest multiple of `step` (at least 1) above the
    /// stored epoch and at least `at_least`. Returns it.
    ///
    /// The coordinator takes epochs in steps of
    /// [`crate::node_client::OWNER_EPOCH_STEP`]: the epochs in between are the component fence
    /// epochs of that owner, so the next owner's epoch is above all of them.
    pub fn take_epoch(&self, at_least: u64, step: u64) -> Result<u64, StoreError> {
        let step = step.max(1);
        self.with_db(|db| {
            let txn = db.begin_write().map_err(io("epoch"))?;
            let epoch = {
                let mut meta = txn.open_table(META).map_err(io("epoch"))?;
                let stored = meta
                    .get(EPOCH_KEY)
                    .map_err(io("epoch"))?
                    .map(|v| v.value())
                    .unwrap_or(0);
                let floor = stored.saturating_add(1).max(at_least);
                let epoch = floor.div_ceil(step).saturating_mul(step);
                meta.insert(EPOCH_KEY, epoch).map_err(io("epoch"))?;
                epoch
            };
            txn.commit().map_err(io("epoch"))?;
            Ok(epoch)
        })
    }

    /// Every stored volume, by name. A record that cannot be decoded is an error.
    pub fn volumes(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        self.records(VOLUMES, "list", VolumeRecord::decode)
    }

    /// Stores a new volume; refuses a name already stored.
    pub fn insert_volume(&self, record: &VolumeRecord) -> Result<(), StoreError> {
        self.put(
            VOLUMES,
            &record.name,
            &record.encode(),
            false,
            "insert",
            || StoreError::Exists(record.name.clone()),
        )
    }

    /// Removes volume `name`; returns whether it was stored.
    pub fn remove_volume(&self, name: &str) -> Result<bool, StoreError> {
        self.remove_key(VOLUMES, name, "remove")
    }

    /// Replaces the durable state of volume `name` (whose id must be `id`: a volume deleted and
    /// created again under the same name is another volume) in one write transaction. The
    /// counter must go up.
    pub fn update_state(
        &self,
        name: &str,
        id: &str,
        state: &DurableState,
    ) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(io("update"))?;
            {
                let mut table = txn.open_table(VOLUMES).map_err(io("update"))?;
                let mut record = match table.get(name).map_err(io("update"))? {
                    Some(bytes) => VolumeRecord::decode(name, bytes.value())?,
                    None => return Err(StoreError::NotFound(name.to_owned())),
                };
                if record.id != id {
                    return Err(StoreError::NotFound(format!("{name} (id {id})")));
                }
                // A parity-map update keeps the modification counter and bumps the map's own.
                let stored_map = record.parity_map.as_ref().map_or(0, |m| m.counter);
                let newer = state.mod_counter > record.mod_counter
                    || (state.mod_counter == record.mod_counter && state.map_counter > stored_map);
                if !newer {
                    return Err(StoreError::StaleCounter {
                        name: name.to_owned(),
                        given: state.mod_counter,
                        stored: record.mod_counter,
                    });
                }
                record.set_durable(state)?;
                let bytes = record.encode();
                table.insert(name, bytes.as_slice()).map_err(io("update"))?;
            }
            txn.commit().map_err(io("update"))?;
            Ok(())
        })
    }

    /// [`Store::take_epoch`] off the async threads.
    pub async fn take_epoch_async(&self, at_least: u64, step: u64) -> Result<u64, StoreError> {
        self.blocking(move |s| s.take_epoch(at_least, step)).await
    }

    /// [`Store::insert_volume`] off the async threads.
    pub async fn insert_volume_async(&self, record: VolumeRecord) -> Result<(), StoreError> {
        self.blocking(move |s| s.insert_volume(&record)).await
    }

    /// [`Store::remove_volume`] off the async threads.
    pub async fn remove_volume_async(&self, name: String) -> Result<bool, StoreError> {
        self.blocking(move |s| s.remove_volume(&name)).await
    }

    /// Every stored spare, by id. A record that cannot be decoded is an error.
    pub fn spares(&self) -> Result<Vec<SpareRecord>, StoreError> {
        self.records(SPARES, "list spares", SpareRecord::decode)
    }

    /// Stores a new spare; refuses an id already stored.
    pub fn insert_spare(&self, record: &SpareRecord) -> Result<(), StoreError> {
        self.put(
            SPARES,
            &record.id,
            &record.encode(),
            false,
            "insert spare",
            || StoreError::SpareExists(record.id.clone()),
        )
    }

    /// Replaces a stored spare (taken, released); refuses one that is not stored.
    pub fn update_spare(&self, record: &SpareRecord) -> Result<(), StoreError> {
        self.put(
            SPARES,
            &record.id,
            &record.encode(),
            true,
            "update spare",
            || StoreError::SpareNotFound(record.id.clone()),
        )
    }

    /// Removes spare `id`; returns whether it was stored.
    pub fn remove_spare(&self, id: &str) -> Result<bool, StoreError> {
        self.remove_key(SPARES, id, "remove spare")
    }

    /// [`Store::spares`] off the async threads.
    pub async fn spares_async(&self) -> Result<Vec<SpareRecord>, StoreError> {
        self.blocking(|s| s.spares()).await
    }

    /// [`Store::insert_spare`] off the async threads.
    pub async fn insert_spare_async(&self, record: SpareRecord) -> Result<(), StoreError> {
        self.blocking(move |s| s.insert_spare(&record)).await
    }

    /// [`Store::update_spare`] off the async threads.
    pub async fn update_spare_async(&self, record: SpareRecord) -> Result<(), StoreError> {
        self.blocking(move |s| s.update_spare(&record)).await
    }

    /// [`Store::remove_spare`] off the async threads.
    pub async fn remove_spare_async(&self, id: String) -> Result<bool, StoreError> {
        self.blocking(move |s| s.remove_spare(&id)).await
    }

    /// Every stored parity-job checkpoint. One that cannot be decoded is reported in its own
    /// entry (its job is not resumed; the others are).
    pub fn parity_jobs(&self) -> Result<Vec<Result<ParityJobRecord, StoreError>>, StoreError> {
        self.records(PARITY_JOBS, "list parity jobs", |key, bytes| {
            Ok(ParityJobRecord::decode(key, bytes))
        })
    }

    /// Stores (or replaces) the checkpoint of a parity job.
    pub fn put_parity_job(&self, record: &ParityJobRecord) -> Result<(), StoreError> {
        let bytes = record.encode();
        self.with_db(|db| {
            let op = "put parity job";
            let txn = db.begin_write().map_err(io(op))?;
            {
                let mut table = txn.open_table(PARITY_JOBS).map_err(io(op))?;
                table
                    .insert(record.volume_id.as_str(), bytes.as_slice())
                    .map_err(io(op))?;
            }
            txn.commit().map_err(io(op))?;
            Ok(())
        })
    }

    /// Removes the checkpoint of volume `volume_id`'s parity job; returns whether one was
    /// stored.
    pub fn remove_parity_job(&self, volume_id: &str) -> Result<bool, StoreError> {
        self.remove_key(PARITY_JOBS, volume_id, "remove parity job")
    }

    /// Every stored copyback record; one that cannot be decoded is reported in its own entry
    /// (its copyback is not resumed).
    pub fn copybacks(&self) -> Result<Vec<Result<CopybackRecord, StoreError>>, StoreError> {
        self.records(COPYBACKS, "list copybacks", |key, bytes| {
            Ok(CopybackRecord::decode(key, bytes))
        })
    }

    /// Stores (or replaces) a copyback record.
    pub fn put_copyback(&self, record: &CopybackRecord) -> Result<(), StoreError> {
        let bytes = record.encode();
        let key = record.key();
        self.with_db(|db| {
            let op = "put copyback";
            let txn = db.begin_write().map_err(io(op))?;
            {
                let mut table = txn.open_table(COPYBACKS).map_err(io(op))?;
                table
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(io(op))?;
            }
            txn.commit().map_err(io(op))?;
            Ok(())
        })
    }

    /// Removes the copyback record at `key`; returns whether one was stored.
    pub fn remove_copyback(&self, key: &str) -> Result<bool, StoreError> {
        self.remove_key(COPYBACKS, key, "remove copyback")
    }

    /// [`Store::copybacks`] off the async threads.
    pub async fn copybacks_async(
        &self,
    ) -> Result<Vec<Result<CopybackRecord, StoreError>>, StoreError> {
        self.blocking(|s| s.copybacks()).await
    }

    /// [`Store::put_copyback`] off the async threads.
    pub async fn put_copyback_async(&self, record: CopybackRecord) -> Result<(), StoreError> {
        self.blocking(move |s| s.put_copyback(&record)).await
    }

    /// [`Store::remove_copyback`] off the async threads.
    pub async fn remove_copyback_async(&self, key: String) -> Result<bool, StoreError> {
        self.blocking(move |s| s.remove_copyback(&key)).await
    }

    /// [`Store::parity_jobs`] off the async threads.
    pub async fn parity_jobs_async(
        &self,
    ) -> Result<Vec<Result<ParityJobRecord, StoreError>>, StoreError> {
        self.blocking(|s| s.parity_jobs()).await
    }

    /// [`Store::put_parity_job`] off the async threads.
    pub async fn put_parity_job_async(&self, record: ParityJobRecord) -> Result<(), StoreError> {
        self.blocking(move |s| s.put_parity_job(&record)).await
    }

    /// [`Store::remove_parity_job`] off the async threads.
    pub async fn remove_parity_job_async(&self, volume_id: String) -> Result<bool, StoreError> {
        self.blocking(move |s| s.remove_parity_job(&volume_id))
            .await
    }

    /// [`Store::update_state`] off the async threads.
    pub async fn update_state_async(
        &self,
        name: String,
        id: String,
        state: DurableState,
    ) -> Result<(), StoreError> {
        self.blocking(move |s| s.update_state(&name, &id, &state))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> VolumeRecord {
        VolumeRecord {
            version: VOLUME_RECORD_VERSION,
            log_period: 0,
            name: name.into(),
            id: "v0123".into(),
            level: LevelRecord::Raid5,
            stripe_unit_blocks: 16,
            block_size: 4096,
            blocks_per_column: 64,
            mod_counter: 1,
            config_epoch: 1,
            clean: false,
            components: (0..3)
                .map(|c| ComponentRecord {
                    column: c,
                    node_id: format!("n{c}"),
                    node_address: format!("127.0.0.1:{}", 7000 + c),
                    component_id: format!("v0123-c{c}"),
                    serial: 100 + u64::from(c),
                    state: StateRecord::Optimal,
                    recovered: 0,
                })
                .collect(),
            lost: Default::default(),
            parity_map: None,
        }
    }

    #[test]
    fn a_change_of_member_is_stored_with_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        store.insert_volume(&record("a")).unwrap();
        let mut next = store.volumes().unwrap()[0].durable();
        next.mod_counter += 1;
        next.states[2] = ComponentState::Reconstructing;
        next.members[2] = MemberRecord {
            node_id: "node9".into(),
            node_address: "127.0.0.1:9".into(),
            component_id: "spare-1".into(),
            serial: 77,
        };
        store.update_state("a", "v0123", &next).unwrap();
        let back = &store.volumes().unwrap()[0];
        assert_eq!(back.components[2].node_id, "node9");
        assert_eq!(back.components[2].component_id, "spare-1");
        assert_eq!(back.components[2].serial, 77);
        assert_eq!(back.durable(), next);
        // A change that names no members keeps them.
        let mut plain = next.clone();
        plain.mod_counter += 1;
        plain.members.clear();
        store.update_state("a", "v0123", &plain).unwrap();
        assert_eq!(
            store.volumes().unwrap()[0].components[2].component_id,
            "spare-1"
        );
    }

    fn state(counter: u64, clean: bool, failed: &[usize]) -> DurableState {
        DurableState::new(
            counter,
            counter,
            clean,
            (0..3)
                .map(|c| {
                    if failed.contains(&c) {
                        ComponentState::Failed
                    } else {
                        ComponentState::Optimal
                    }
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn a_store_in_memory_survives_a_reopen_on_the_same_media() {
        let media = MemoryStoreMedia::default();
        let path = Path::new("/sim/coordinator.redb");
        let store = Store::open_in_memory(media.clone(), path).unwrap();
        assert_eq!(store.take_epoch_async(0, 1 << 32).await.unwrap(), 1 << 32);
        store.insert_volume(&record("a")).unwrap();
        store.close();
        let store = Store::open_in_memory(media, path).unwrap();
        assert_eq!(store.epoch().unwrap(), 1 << 32);
        assert_eq!(store.volumes().unwrap().len(), 1);
        let fresh = Store::open_in_memory(MemoryStoreMedia::default(), path).unwrap();
        assert!(fresh.volumes().unwrap().is_empty());
    }

    #[test]
    fn records_epochs_and_states_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.epoch().unwrap(), 0);
        assert_eq!(store.take_epoch(0, 1).unwrap(), 1);
        assert_eq!(store.take_epoch(0, 1).unwrap(), 2);
        assert_eq!(store.take_epoch(10, 1).unwrap(), 10);
        // In steps: the next multiple above the stored epoch and at least `at_least`.
        assert_eq!(store.take_epoch(0, 1 << 32).unwrap(), 1 << 32);
        assert_eq!(store.take_epoch(0, 1 << 32).unwrap(), 2 << 32);
        assert_eq!(store.take_epoch((2 << 32) + 5, 1 << 32).unwrap(), 3 << 32);
        assert_eq!(store.epoch().unwrap(), 3 << 32);
        assert_eq!(store.take_epoch(10, 1).unwrap(), (3 << 32) + 1);
        store.insert_volume(&record("a")).unwrap();
        store.insert_volume(&record("b")).unwrap();
        assert_eq!(
            store.insert_volume(&record("a")),
            Err(StoreError::Exists("a".into()))
        );
        store
            .update_state("a", "v0123", &state(5, true, &[1]))
            .unwrap();
        // Counters only go up.
        assert!(matches!(
            store.update_state("a", "v0123", &state(5, false, &[])),
            Err(StoreError::StaleCounter {
                given: 5,
                stored: 5,
                ..
            })
        ));
        assert!(matches!(
            store.update_state("a", "other-id", &state(9, true, &[])),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.update_state("zz", "v0123", &state(9, true, &[])),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.update_state(
                "a",
                "v0123",
                &DurableState {
                    states: vec![ComponentState::Optimal; 2],
                    ..state(9, true, &[])
                }
            ),
            Err(StoreError::BadRecord { .. })
        ));
        assert!(store.remove_volume("b").unwrap());
        assert!(!store.remove_volume("b").unwrap());

        // A second open while the first is live is refused, precisely.
        assert!(matches!(Store::open(&path), Err(StoreError::InUse { .. })));
        store.close();
        assert_eq!(store.epoch(), Err(StoreError::Closed));

        let store = Store::open(&path).unwrap();
        assert_eq!(store.epoch().unwrap(), (3 << 32) + 1);
        let volumes = store.volumes().unwrap();
        assert_eq!(volumes.len(), 1);
        let mut durable = volumes[0].durable();
        assert_eq!(durable.members.len(), 3);
        durable.members.clear();
        assert_eq!(durable, state(5, true, &[1]));
        assert_eq!(volumes[0].components[2].serial, 102);
        assert_eq!(volumes[0].layout().unwrap().columns(), 3);
    }

    #[test]
    fn a_version_2_record_is_read_as_version_3_with_nothing_lost_and_the_lost_set_is_kept() {
        // What a version 2 coordinator wrote.
        let v2 = br#"{"version":2,"name":"a","id":"v0123","level":"raid5","stripe_unit_blocks":16,
            "block_size":4096,"blocks_per_column":64,"mod_counter":7,"config_epoch":3,"clean":true,
            "components":[
              {"column":0,"node_id":"n0","node_address":"a:1","component_id":"v0123-c0","serial":1,"state":"optimal"},
              {"column":1,"node_id":"n1","node_address":"a:2","component_id":"v0123-c1","serial":2,"state":"failed"},
              {"column":2,"node_id":"n2","node_address":"a:3","component_id":"v0123-c2","serial":3,"state":"optimal"}]}"#;
        let mut r = VolumeRecord::decode("a", v2).unwrap();
        assert_eq!(r.version, VOLUME_RECORD_VERSION);
        let d = r.durable();
        assert_eq!((d.mod_counter, d.lost_counter), (7, 0));
        assert!(d.lost.is_empty());
        assert_eq!(d.states[1], ComponentState::Failed);
        // Every state of the model and the exact lost set survive the store.
        let mut next = d.clone();
        next.mod_counter = 8;
        next.states = vec![
            ComponentState::Reconstructing,
            ComponentState::Stale,
            ComponentState::Copyback,
        ];
        next.recovered = vec![5, 6, 0];
        next.lost = LostSet::from_ranges((0..5000u64).map(|i| 3 * i..3 * i + 1));
        next.lost_counter = 8;
        r.set_durable(&next).unwrap();
        let back = VolumeRecord::decode("a", &r.encode()).unwrap();
        assert_eq!(back.durable(), next);
    }

    #[test]
    fn a_parity_map_update_keeps_the_counter_and_must_bump_the_maps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        store.insert_volume(&record("a")).unwrap();
        let mut next = record("a").durable();
        next.map = Some(dagraid_core::parity_map::DirtyRegions {
            region_stripes: 1,
            regions: LostSet::from_ranges(std::iter::once(2..3)),
        });
        next.map_counter = 1;
        // The same modification counter (1): a map update alone.
        store.update_state("a", "v0123", &next).unwrap();
        // The same map counter again: refused (never written over a newer copy).
        assert!(matches!(
            store.update_state("a", "v0123", &next),
            Err(StoreError::StaleCounter { .. })
        ));
        let back = store.volumes().unwrap().remove(0).durable();
        assert_eq!((back.map, back.map_counter), (next.map.clone(), 1));
    }

    #[test]
    fn parity_job_checkpoints_survive_a_reopen_and_a_bad_one_is_reported_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let job = ParityJobRecord {
            version: PARITY_JOB_RECORD_VERSION,
            volume_id: "v1".into(),
            volume: "a".into(),
            kind: "check".into(),
            rate: 0,
            next_stripe: 40,
            mismatches: 1,
            mismatched_stripes: vec![9],
            skipped: 0,
            failed: 0,
            unreadable_blocks: 2,
            rewritten: 0,
        };
        {
            let store = Store::open(&path).unwrap();
            assert!(store.parity_jobs().unwrap().is_empty());
            store.put_parity_job(&job).unwrap();
            let mut later = job.clone();
            later.next_stripe = 80;
            store.put_parity_job(&later).unwrap();
            let mut newer = job.clone();
            newer.volume_id = "v2".into();
            newer.version = PARITY_JOB_RECORD_VERSION + 1;
            let bytes = newer.encode();
            store
                .with_db(|db| {
                    let txn = db.begin_write().map_err(io("t"))?;
                    txn.open_table(PARITY_JOBS)
                        .map_err(io("t"))?
                        .insert("v2", bytes.as_slice())
                        .map_err(io("t"))?;
                    txn.commit().map_err(io("t"))
                })
                .unwrap();
            store.close();
        }
        let store = Store::open(&path).unwrap();
        let jobs = store.parity_jobs().unwrap();
        assert_eq!(jobs.len(), 2);
        let good: Vec<_> = jobs.iter().filter_map(|j| j.as_ref().ok()).collect();
        assert_eq!(good.len(), 1);
        assert_eq!(
            (good[0].volume_id.as_str(), good[0].next_stripe),
            ("v1", 80)
        );
        let bad = jobs.iter().find_map(|j| j.as_ref().err()).unwrap();
        assert!(bad.to_string().contains("record version 2"), "{bad}");
        assert!(store.remove_parity_job("v1").unwrap());
        assert!(!store.remove_parity_job("v1").unwrap());
    }

    #[test]
    fn copyback_records_survive_a_reopen_and_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let record = CopybackRecord {
            version: COPYBACK_RECORD_VERSION,
            volume_id: "v1".into(),
            column: 2,
            spare_id: "spare-1".into(),
            node_id: "node6".into(),
            component_id: "v1-c2-r0000abcd".into(),
            serial: 7,
            rate: 262_144,
        };
        assert_eq!(record.key(), "v1/2");
        {
            let store = Store::open(&path).unwrap();
            assert!(store.copybacks().unwrap().is_empty());
            store.put_copyback(&record).unwrap();
            store.close();
        }
        let store = Store::open(&path).unwrap();
        let got = store.copybacks().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap(), &record);
        let mut newer = record.clone();
        newer.version = COPYBACK_RECORD_VERSION + 1;
        let bad = CopybackRecord::decode("v1/2", &newer.encode()).unwrap_err();
        assert!(bad.to_string().contains("record version 2"), "{bad}");
        assert!(CopybackRecord::decode("v1/3", &record.encode()).is_err());
        assert!(store.remove_copyback("v1/2").unwrap());
        assert!(!store.remove_copyback("v1/2").unwrap());
    }

    #[test]
    fn a_version_4_map_is_not_trusted_by_a_re_add_and_cleared_at_is_kept_exactly() {
        let mut r = record("a");
        let mut d = r.durable();
        d.map = Some(dagraid_core::parity_map::DirtyRegions {
            region_stripes: 4,
            regions: LostSet::from_ranges(std::iter::once(3..5)),
        });
        d.map_counter = 2;
        d.map_cleared_at = Some(9);
        r.set_durable(&d).unwrap();
        let back = VolumeRecord::decode("a", &r.encode()).unwrap();
        assert_eq!(back.durable(), d, "version {VOLUME_RECORD_VERSION}: exact");
        // The same map written by a version 4 coordinator, which cleared regions while
        // degraded: no `cleared_at` is believed.
        let mut v4: serde_json::Value = serde_json::from_slice(&r.encode()).unwrap();
        v4["version"] = 4.into();
        let old = VolumeRecord::decode("a", &serde_json::to_vec(&v4).unwrap()).unwrap();
        assert_eq!(old.version, VOLUME_RECORD_VERSION);
        let od = old.durable();
        assert_eq!((od.map, od.map_cleared_at), (d.map.clone(), None));
    }

    #[test]
    fn a_version_3_record_has_no_parity_map_and_a_map_is_kept_exactly() {
        let mut v3 = record("a");
        v3.version = 3;
        let mut json: serde_json::Value = serde_json::from_slice(&v3.encode()).unwrap();
        json.as_object_mut().unwrap().remove("parity_map");
        let mut r = VolumeRecord::decode("a", &serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(r.version, VOLUME_RECORD_VERSION);
        let d = r.durable();
        assert_eq!((d.map.as_ref(), d.map_counter), (None, 0));
        let mut next = d.clone();
        next.mod_counter = 2;
        next.map = Some(dagraid_core::parity_map::DirtyRegions {
            region_stripes: 4,
            regions: LostSet::from_ranges((0..3000u64).map(|i| 2 * i..2 * i + 1)),
        });
        next.map_counter = 2;
        r.set_durable(&next).unwrap();
        let back = VolumeRecord::decode("a", &r.encode()).unwrap();
        assert_eq!(back.durable(), next, "exact, however many regions");
    }

    #[test]
    fn the_log_period_round_trips_and_a_version_5_record_has_none() {
        let mut r = record("a");
        let mut d = r.durable();
        d.log_period = 0xdead_beef;
        r.set_durable(&d).unwrap();
        let back = VolumeRecord::decode("a", &r.encode()).unwrap();
        assert_eq!(back.durable().log_period, 0xdead_beef);
        assert_eq!(back.durable().recorded().log_period, 0xdead_beef);
        // What a version 5 coordinator wrote: no field, read with no period.
        let mut v5: serde_json::Value = serde_json::from_slice(&r.encode()).unwrap();
        v5["version"] = 5.into();
        v5.as_object_mut().unwrap().remove("log_period");
        let old = VolumeRecord::decode("a", &serde_json::to_vec(&v5).unwrap()).unwrap();
        assert_eq!(old.durable().log_period, 0);
        assert_eq!(old.version, VOLUME_RECORD_VERSION);
    }

    #[test]
    fn records_of_an_unknown_version_are_refused() {
        let mut r = record("a");
        r.version = VOLUME_RECORD_VERSION + 1;
        let bytes = serde_json::to_vec(&r).unwrap();
        let err = VolumeRecord::decode("a", &bytes).unwrap_err();
        assert!(err.to_string().contains("record version 7"), "{err}");
        let err = VolumeRecord::decode("a", b"{}").unwrap_err();
        assert!(err.to_string().contains("no version"), "{err}");
        let ok = record("a");
        assert_eq!(VolumeRecord::decode("a", &ok.encode()).unwrap(), ok);
        assert!(VolumeRecord::decode("b", &ok.encode()).is_err());
    }

    #[test]
    fn a_version_1_record_is_migrated_to_a_dirty_unlabelled_current_version() {
        // Exactly what a version 1 coordinator wrote.
        let v1 = br#"{"version":1,"name":"vol0","id":"v3f2a9c0d1e2b4a5c","level":"raid5",
            "stripe_unit_blocks":16,"block_size":4096,"blocks_per_column":64,
            "components":[
              {"column":0,"node_id":"node1","node_address":"127.0.0.1:7001","component_id":"v3f2a9c0d1e2b4a5c-c0","state":"optimal"},
              {"column":1,"node_id":"node2","node_address":"127.0.0.1:7002","component_id":"v3f2a9c0d1e2b4a5c-c1","state":"failed"},
              {"column":2,"node_id":"node3","node_address":"127.0.0.1:7003","component_id":"v3f2a9c0d1e2b4a5c-c2","state":"optimal"}]}"#;
        let r = VolumeRecord::decode("vol0", v1).unwrap();
        assert_eq!(r.version, VOLUME_RECORD_VERSION);
        assert_eq!((r.mod_counter, r.config_epoch, r.clean), (0, 0, false));
        assert_eq!(
            r.states(),
            vec![
                ComponentState::Optimal,
                ComponentState::Failed,
                ComponentState::Optimal
            ]
        );
        assert!(r.components.iter().all(|c| c.serial == 0));
        // Written back, it is a record of the current version.
        let again = VolumeRecord::decode("vol0", &r.encode()).unwrap();
        assert_eq!(again, r);
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(
            text.contains(&format!(r#""version":{VOLUME_RECORD_VERSION}"#)),
            "{text}"
        );
        // A migrated record stored by a version 1 coordinator is read by `volumes`.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .with_db(|db| {
                let txn = db.begin_write().map_err(io("t"))?;
                txn.open_table(VOLUMES)
                    .map_err(io("t"))?
                    .insert("vol0", &v1[..])
                    .map_err(io("t"))?;
                txn.commit().map_err(io("t"))?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.volumes().unwrap(), vec![r]);
        store
            .update_state("vol0", "v3f2a9c0d1e2b4a5c", &state(1, false, &[1]))
            .unwrap();
        assert_eq!(store.volumes().unwrap()[0].mod_counter, 1);
    }

    fn spare(id: &str, in_use: Option<SpareUse>) -> SpareRecord {
        SpareRecord {
            version: SPARE_RECORD_VERSION,
            id: id.into(),
            node_id: "n6".into(),
            node_address: "127.0.0.1:7006".into(),
            serial: 77,
            block_size: 4096,
            block_count: 1024,
            in_use,
        }
    }

    #[test]
    fn spare_records_survive_a_reopen_and_are_replaced_and_removed_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.spares().unwrap(), vec![]);
        let a = spare("spare-a", None);
        store.insert_spare(&a).unwrap();
        assert_eq!(
            store.insert_spare(&a),
            Err(StoreError::SpareExists("spare-a".into()))
        );
        let b = spare(
            "spare-b",
            Some(SpareUse {
                volume: "vol0".into(),
                volume_id: "v01".into(),
                column: 3,
            }),
        );
        assert_eq!(
            store.update_spare(&b),
            Err(StoreError::SpareNotFound("spare-b".into()))
        );
        store.insert_spare(&b).unwrap();
        let mut taken = a.clone();
        taken.in_use = b.in_use.clone();
        store.update_spare(&taken).unwrap();
        // A spare table does not disturb the volumes.
        store.insert_volume(&record("vol0")).unwrap();
        store.close();

        let store = Store::open(&path).unwrap();
        assert_eq!(store.spares().unwrap(), vec![taken.clone(), b.clone()]);
        assert_eq!(store.volumes().unwrap().len(), 1);
        assert!(store.remove_spare("spare-a").unwrap());
        assert!(!store.remove_spare("spare-a").unwrap());
        assert_eq!(store.spares().unwrap(), vec![b]);
        assert_eq!(taken.size_bytes(), 4 << 20);
    }

    #[test]
    fn spare_records_of_another_version_or_key_are_refused() {
        let ok = spare("spare-a", None);
        assert_eq!(SpareRecord::decode("spare-a", &ok.encode()).unwrap(), ok);
        // `in_use` absent reads as free.
        let text = br#"{"version":1,"id":"spare-a","node_id":"n6","node_address":"a:1",
            "serial":77,"block_size":4096,"block_count":1024}"#;
        assert_eq!(SpareRecord::decode("spare-a", text).unwrap().in_use, None);
        let err = SpareRecord::decode("spare-b", &ok.encode()).unwrap_err();
        assert!(err.to_string().contains("names spare"), "{err}");
        let mut newer = ok.clone();
        newer.version = 2;
        let err = SpareRecord::decode("spare-a", &newer.encode()).unwrap_err();
        assert!(err.to_string().contains("record version 2"), "{err}");
        let mut empty = ok;
        empty.block_count = 0;
        assert!(SpareRecord::decode("spare-a", &empty.encode()).is_err());
        assert!(SpareRecord::decode("spare-a", b"{}").is_err());
    }

    #[test]
    fn a_file_that_is_not_a_store_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.redb");
        std::fs::write(&path, b"not a database at all, just some bytes").unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
    }
}
