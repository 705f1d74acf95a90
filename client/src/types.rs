//! The SDK's view of volumes and the cluster, converted from `dagraid.volume.v1` at this
//! boundary so that callers never handle proto types.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use dagraid_proto::volume::v1 as pb;

use crate::ClientError;

/// RAID level of a volume.
///
/// Parsed from `raid0`, `raid1`, `raid4`, `raid5`, `raid6` (any case, also `0`..`6`), shown as
/// `raid5`.
///
/// ```
/// use dagraid_client::RaidLevel;
/// assert_eq!("RAID5".parse::<RaidLevel>().unwrap(), RaidLevel::Raid5);
/// assert_eq!(RaidLevel::Raid6.to_string(), "raid6");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaidLevel {
    /// Striping, no redundancy.
    Raid0,
    /// Mirroring.
    Raid1,
    /// Striping with a dedicated parity column.
    Raid4,
    /// Striping with rotating parity.
    Raid5,
    /// Striping with rotating P and Q parity: survives two failures.
    Raid6,
}

impl RaidLevel {
    /// Every level, in order.
    pub const ALL: [RaidLevel; 5] = [
        RaidLevel::Raid0,
        RaidLevel::Raid1,
        RaidLevel::Raid4,
        RaidLevel::Raid5,
        RaidLevel::Raid6,
    ];

    /// The lowercase name (`raid5`).
    pub fn as_str(self) -> &'static str {
        match self {
            RaidLevel::Raid0 => "raid0",
            RaidLevel::Raid1 => "raid1",
            RaidLevel::Raid4 => "raid4",
            RaidLevel::Raid5 => "raid5",
            RaidLevel::Raid6 => "raid6",
        }
    }

    pub(crate) fn to_proto(self) -> pb::RaidLevel {
        match self {
            RaidLevel::Raid0 => pb::RaidLevel::Raid0,
            RaidLevel::Raid1 => pb::RaidLevel::Raid1,
            RaidLevel::Raid4 => pb::RaidLevel::Raid4,
            RaidLevel::Raid5 => pb::RaidLevel::Raid5,
            RaidLevel::Raid6 => pb::RaidLevel::Raid6,
        }
    }

    fn from_proto(value: i32) -> Result<Self, ClientError> {
        match pb::RaidLevel::try_from(value) {
            Ok(pb::RaidLevel::Raid0) => Ok(RaidLevel::Raid0),
            Ok(pb::RaidLevel::Raid1) => Ok(RaidLevel::Raid1),
            Ok(pb::RaidLevel::Raid4) => Ok(RaidLevel::Raid4),
            Ok(pb::RaidLevel::Raid5) => Ok(RaidLevel::Raid5),
            Ok(pb::RaidLevel::Raid6) => Ok(RaidLevel::Raid6),
            _ => Err(ClientError::InvalidResponse(format!(
                "volume with RAID level {value}"
            ))),
        }
    }
}

impl fmt::Display for RaidLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a RAID level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown RAID level {0:?} (expected raid0, raid1, raid4, raid5 or raid6)")]
pub struct ParseRaidLevelError(String);

impl FromStr for RaidLevel {
    type Err = ParseRaidLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let digits = lower.strip_prefix("raid").unwrap_or(&lower);
        match digits {
            "0" => Ok(RaidLevel::Raid0),
            "1" => Ok(RaidLevel::Raid1),
            "4" => Ok(RaidLevel::Raid4),
            "5" => Ok(RaidLevel::Raid5),
            "6" => Ok(RaidLevel::Raid6),
            _ => Err(ParseRaidLevelError(s.to_owned())),
        }
    }
}

/// State of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VolumeState {
    /// No component failed.
    Optimal,
    /// Some failed within the layout's tolerance: every byte is still served.
    Degraded,
    /// A component is being rebuilt.
    Reconstructing,
    /// More failures than the layout tolerates.
    Failed,
    /// Assembled after an unclean shutdown: serving while its redundancy is rewritten
    /// ([`VolumeInfo::resync`]); optimal once that is done.
    Resyncing,
    /// Not assembled: serves no I/O ([`crate::ClientError::NotAssembled`]);
    /// [`VolumeInfo::assembly`] says why, and [`crate::Client::assemble_volume`] retries.
    NotAssembled,
    /// The coordinator did not say (a value newer than this SDK, or unset).
    Unknown,
}

impl VolumeState {
    /// The lowercase name used in tables and JSON (`optimal`, `degraded`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Optimal => "optimal",
            VolumeState::Degraded => "degraded",
            VolumeState::Reconstructing => "reconstructing",
            VolumeState::Failed => "failed",
            VolumeState::Resyncing => "resyncing",
            VolumeState::NotAssembled => "not-assembled",
            VolumeState::Unknown => "unknown",
        }
    }

    fn from_proto(value: i32) -> Self {
        match pb::VolumeState::try_from(value) {
            Ok(pb::VolumeState::Optimal) => VolumeState::Optimal,
            Ok(pb::VolumeState::Degraded) => VolumeState::Degraded,
            Ok(pb::VolumeState::Reconstructing) => VolumeState::Reconstructing,
            Ok(pb::VolumeState::Failed) => VolumeState::Failed,
            Ok(pb::VolumeState::Resyncing) => VolumeState::Resyncing,
            Ok(pb::VolumeState::NotAssembled) => VolumeState::NotAssembled,
            Ok(pb::VolumeState::Unspecified) | Err(_) => VolumeState::Unknown,
        }
    }
}

impl fmt::Display for VolumeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of one component (column) of a volume, as the coordinator keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComponentState {
    /// Serving reads and writes.
    Optimal,
    /// Failed: never read or written until rebuilt.
    Failed,
    /// Being rebuilt: current only for the stripes already rebuilt.
    Reconstructing,
    /// Replaced by a spare (reserved; no coordinator reports it).
    Spared,
    /// Back after an outage and being re-added: current only for the regions already resynced.
    Stale,
    /// Current, on its spare, while copied back to a replacement.
    Copyback,
    /// A hot spare.
    Spare,
    /// The coordinator did not say (a value newer than this SDK, or unset).
    Unknown,
}

impl ComponentState {
    /// The lowercase name used in tables and JSON (`optimal`, `failed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Optimal => "optimal",
            ComponentState::Failed => "failed",
            ComponentState::Reconstructing => "reconstructing",
            ComponentState::Spared => "spared",
            ComponentState::Stale => "stale",
            ComponentState::Copyback => "copyback",
            ComponentState::Spare => "spare",
            ComponentState::Unknown => "unknown",
        }
    }

    fn from_proto(value: i32) -> Self {
        match pb::ComponentState::try_from(value) {
            Ok(pb::ComponentState::Optimal) => ComponentState::Optimal,
            Ok(pb::ComponentState::Failed) => ComponentState::Failed,
            Ok(pb::ComponentState::Reconstructing) => ComponentState::Reconstructing,
            Ok(pb::ComponentState::Spared) => ComponentState::Spared,
            Ok(pb::ComponentState::Stale) => ComponentState::Stale,
            Ok(pb::ComponentState::Copyback) => ComponentState::Copyback,
            Ok(pb::ComponentState::Spare) => ComponentState::Spare,
            Ok(pb::ComponentState::Unspecified) | Err(_) => ComponentState::Unknown,
        }
    }
}

impl fmt::Display for ComponentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`crate::Client::create_volume`] makes.
///
/// Fields left at `None` (or an empty `nodes`) take the coordinator's defaults: every known
/// storage node as a column, a 64 KiB stripe unit, 4 KiB blocks.
///
/// ```
/// use dagraid_client::{RaidLevel, VolumeSpec};
/// let spec = VolumeSpec::new("vol0", RaidLevel::Raid5, 1 << 30).columns(5);
/// assert_eq!(spec.columns, Some(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// Volume name: 1 to 64 characters of `[A-Za-z0-9._-]`.
    pub name: String,
    /// RAID level.
    pub level: RaidLevel,
    /// Usable size in bytes; the coordinator rounds it up to whole stripes.
    pub size_bytes: u64,
    /// Number of columns (components).
    pub columns: Option<u32>,
    /// Stripe unit in bytes, a multiple of the block size.
    pub stripe_unit_bytes: Option<u64>,
    /// Block size in bytes.
    pub block_size: Option<u32>,
    /// Storage node ids for the columns, in column order.
    pub nodes: Vec<String>,
}

impl VolumeSpec {
    /// A volume of `size_bytes` at `level`, everything else at the coordinator's defaults.
    pub fn new(name: impl Into<String>, level: RaidLevel, size_bytes: u64) -> Self {
        Self {
            name: name.into(),
            level,
            size_bytes,
            columns: None,
            stripe_unit_bytes: None,
            block_size: None,
            nodes: Vec::new(),
        }
    }

    /// Sets the number of columns.
    pub fn columns(mut self, columns: u32) -> Self {
        self.columns = Some(columns);
        self
    }

    /// Sets the stripe unit in bytes.
    pub fn stripe_unit_bytes(mut self, bytes: u64) -> Self {
        self.stripe_unit_bytes = Some(bytes);
        self
    }

    /// Sets the block size in bytes.
    pub fn block_size(mut self, bytes: u32) -> Self {
        self.block_size = Some(bytes);
        self
    }

    /// Places the columns on these storage nodes, in column order.
    pub fn nodes<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nodes = nodes.into_iter().map(Into::into).collect();
        self
    }

    pub(crate) fn into_proto(self) -> pb::CreateVolumeRequest {
        pb::CreateVolumeRequest {
            name: self.name,
            level: self.level.to_proto() as i32,
            size_bytes: self.size_bytes,
            columns: self.columns.unwrap_or(0),
            stripe_unit_bytes: self.stripe_unit_bytes.unwrap_or(0),
            block_size: self.block_size.unwrap_or(0),
            nodes: self.nodes,
        }
    }
}

/// One component (column) of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Column index, from 0.
    pub column: u32,
    /// The storage node holding it.
    pub node_id: String,
    /// That node's gRPC address.
    pub node_address: String,
    /// The component's id on that node.
    pub component_id: String,
    /// State as the coordinator keeps it.
    pub state: ComponentState,
    /// Bytes of the component.
    pub size_bytes: u64,
    /// Its storage node is gone and the column could not be failed (beyond the layout's
    /// tolerance): the volume is failed until the node answers again.
    pub gone: bool,
}

/// Counters of a volume since the coordinator assembled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VolumeCounters {
    /// Read calls served.
    pub reads: u64,
    /// Write calls served.
    pub writes: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// DAGs that failed after their commit node and completed forward.
    pub dags_rolled_forward: u64,
    /// DAGs that failed before their commit node and were undone and retried.
    pub dags_rolled_backward: u64,
    /// Stripes with lost blocks (see [`VolumeInfo::lost_bytes`]).
    pub lost_stripes: u64,
}

/// One lost byte range of a volume (see [`crate::Client::list_lost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostRange {
    /// First byte.
    pub offset: u64,
    /// Bytes.
    pub length: u64,
}

/// The resync of a volume assembled after an unclean shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResyncProgress {
    /// Still running: resyncing stripes, or waiting to retry after an error.
    pub running: bool,
    /// Stripes done (rewritten, repaired, recorded lost or skipped).
    pub stripes_done: u64,
    /// Stripes of the volume.
    pub stripes_total: u64,
    /// Stripes left as they were because a data unit of theirs is on a failed column (forced
    /// assembly).
    pub stripes_skipped: u64,
    /// Stripes whose unreadable blocks were rebuilt from redundancy and rewritten.
    pub stripes_repaired: u64,
    /// Stripes with unreadable blocks that could not be rebuilt: those blocks are recorded lost.
    pub stripes_lost: u64,
    /// While running: the error that stopped the last pass, retried after a back-off; when not
    /// running: why it stopped before the end.
    pub error: Option<String>,
    /// Passes started again after an error.
    pub retries: u32,
    /// Parity-map regions to resync (dirty at the crash).
    pub regions_total: u64,
    /// Of those, regions done.
    pub regions_done: u64,
    /// Whether the whole volume is resynced (it kept no parity map).
    pub full: bool,
}

/// The parity map of a volume: the regions a crash would cost a resync of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParityMapInfo {
    /// Bytes of volume data per region.
    pub region_bytes: u64,
    /// Regions of the volume.
    pub regions: u64,
    /// Regions marked dirty now.
    pub dirty_regions: u64,
    /// Of those, regions awaiting their resync after a crash.
    pub resync_regions: u64,
    /// How long a region stays dirty after its last write.
    pub cooldown: std::time::Duration,
}

impl ResyncProgress {
    /// Whether it ran to its end: the volume's redundancy agrees with its data again.
    pub fn completed(&self) -> bool {
        !self.running && self.error.is_none() && self.stripes_done == self.stripes_total
    }
}

/// Where [`crate::Client::rebuild_column`] reconstructs a failed column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum RebuildTarget {
    /// The spare of the pool that fits the volume best (the coordinator picks).
    #[default]
    BestSpare,
    /// This spare of the pool (its id, as `dagraid spare list` shows it).
    Spare(String),
    /// A blank component at the column's own place: on its node, created there when the node
    /// lost it (a disk replaced under the same node id).
    InPlace,
}

impl RebuildTarget {
    /// The kind of rebuild this target starts.
    pub fn kind(&self) -> RebuildKind {
        match self {
            RebuildTarget::BestSpare | RebuildTarget::Spare(_) => RebuildKind::Spare,
            RebuildTarget::InPlace => RebuildKind::InPlace,
        }
    }
}

/// What a rebuild writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RebuildKind {
    /// Reconstruction onto a hot spare, which becomes the column.
    Spare,
    /// Reconstruction onto a blank component at the column's own place.
    InPlace,
    /// Copy of a column that lives on a spare back to a replacement component.
    Copyback,
    /// Re-add of the column's own component after an outage: only the regions the parity map
    /// names dirty are rebuilt onto it.
    ReAdd,
    /// The coordinator did not say (a value newer than this SDK, or unset).
    Unknown,
}

impl RebuildKind {
    /// The lowercase name used in tables and JSON (`spare`, `in-place`, `copyback`, `re-add`).
    pub fn as_str(self) -> &'static str {
        match self {
            RebuildKind::Spare => "spare",
            RebuildKind::InPlace => "in-place",
            RebuildKind::Copyback => "copyback",
            RebuildKind::ReAdd => "re-add",
            RebuildKind::Unknown => "unknown",
        }
    }

    fn from_proto(value: i32) -> Self {
        match pb::RebuildKind::try_from(value) {
            Ok(pb::RebuildKind::Spare) => RebuildKind::Spare,
            Ok(pb::RebuildKind::InPlace) => RebuildKind::InPlace,
            Ok(pb::RebuildKind::Copyback) => RebuildKind::Copyback,
            Ok(pb::RebuildKind::ReAdd) => RebuildKind::ReAdd,
            Ok(pb::RebuildKind::Unspecified) | Err(_) => RebuildKind::Unknown,
        }
    }
}

impl fmt::Display for RebuildKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reconstruction or copyback of a column ([`VolumeInfo::rebuilds`]): running, or the last
/// one of its column that finished or stopped since the coordinator started.
///
/// ```
/// use dagraid_client::{RebuildKind, RebuildProgress};
/// let r = RebuildProgress {
///     column: 2,
///     kind: RebuildKind::Spare,
///     running: true,
///     stripes_done: 1234,
///     stripes_total: 3000,
///     ..RebuildProgress::default()
/// };
/// assert_eq!(r.percent(), 41);
/// assert!(!r.stopped());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildProgress {
    /// The column rebuilt (or copied back).
    pub column: u32,
    /// What it writes to.
    pub kind: RebuildKind,
    /// The storage node of the component written: the spare's, the column's own (in place),
    /// or the copyback's replacement's.
    pub node_id: String,
    /// The component written, on that node.
    pub component_id: String,
    /// Still running (also while it waits to retry after an error: see `error`).
    pub running: bool,
    /// Finished: the column is optimal (a copyback: lives on its replacement).
    pub completed: bool,
    /// Stripes done: the column's watermark.
    pub stripes_done: u64,
    /// Stripes of the volume.
    pub stripes_total: u64,
    /// Bytes written to the target since this coordinator started (or resumed) it.
    pub bytes_done: u64,
    /// Recent rate, bytes written per second.
    pub rate_bytes_per_second: u64,
    /// The rate limit in bytes per second; `None`: no limit.
    pub rate_limit_bytes_per_second: Option<u64>,
    /// Estimated time to completion; `None` when unknown or done.
    pub eta: Option<Duration>,
    /// Volume blocks found unreadable on the surviving columns and recorded lost on the way
    /// ([`crate::Client::list_lost`] lists them).
    pub lost_blocks: u64,
    /// While running: the last error, retried; when stopped: why it stopped before the end.
    pub error: Option<String>,
    /// Stripes the checkpoint it resumed from had already done (0: it started from the first).
    pub resumed_from: u64,
    /// Stripes below the last checkpoint made durable: a coordinator restart resumes the job
    /// from there at the latest.
    pub stripes_checkpointed: u64,
    /// A re-add: dirty regions rebuilt so far.
    pub regions_resynced: u64,
    /// A re-add: regions the parity map named dirty when it started (writes meanwhile may add
    /// more).
    pub regions_total: u64,
    /// Why the job is what it is, when that needs saying (a re-add that fell back to a full
    /// reconstruction, and why).
    pub note: Option<String>,
}

impl Default for RebuildProgress {
    fn default() -> Self {
        Self {
            column: 0,
            kind: RebuildKind::Unknown,
            node_id: String::new(),
            component_id: String::new(),
            running: false,
            completed: false,
            stripes_done: 0,
            stripes_total: 0,
            bytes_done: 0,
            rate_bytes_per_second: 0,
            rate_limit_bytes_per_second: None,
            eta: None,
            lost_blocks: 0,
            error: None,
            resumed_from: 0,
            stripes_checkpointed: 0,
            regions_resynced: 0,
            regions_total: 0,
            note: None,
        }
    }
}

impl RebuildProgress {
    /// The part done, from 0.0 to 1.0 (1.0 once completed, 0.0 while the volume's stripes are
    /// not known).
    pub fn fraction(&self) -> f64 {
        if self.completed {
            1.0
        } else if self.stripes_total == 0 {
            0.0
        } else {
            (self.stripes_done.min(self.stripes_total) as f64) / (self.stripes_total as f64)
        }
    }

    /// The part done in whole percent, rounded down (100 only once completed or every stripe
    /// is done).
    pub fn percent(&self) -> u8 {
        (self.fraction() * 100.0).floor().clamp(0.0, 100.0) as u8
    }

    /// Stripes still to do.
    pub fn stripes_left(&self) -> u64 {
        if self.completed {
            0
        } else {
            self.stripes_total.saturating_sub(self.stripes_done)
        }
    }

    /// Stopped before its end (not running, not completed): [`RebuildProgress::error`] says
    /// why.
    pub fn stopped(&self) -> bool {
        !self.running && !self.completed
    }

    pub(crate) fn from_proto(r: pb::Rebuild) -> Self {
        Self {
            column: r.column,
            kind: RebuildKind::from_proto(r.kind),
            node_id: r.node_id,
            component_id: r.component_id,
            running: r.running,
            completed: r.completed,
            stripes_done: r.stripes_done,
            stripes_total: r.stripes_total,
            bytes_done: r.bytes_done,
            rate_bytes_per_second: r.rate_bytes_per_second,
            rate_limit_bytes_per_second: (r.rate_limit_bytes_per_second > 0)
                .then_some(r.rate_limit_bytes_per_second),
            eta: (r.eta_seconds > 0 && r.running).then(|| Duration::from_secs(r.eta_seconds)),
            lost_blocks: r.lost_blocks,
            error: (!r.error.is_empty()).then_some(r.error),
            resumed_from: r.resumed_from,
            stripes_checkpointed: r.stripes_checkpointed,
            regions_resynced: r.regions_resynced,
            regions_total: r.regions_total,
            note: (!r.note.is_empty()).then_some(r.note),
        }
    }
}

/// How a volume was assembled, or why it is not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssemblyInfo {
    /// Why the volume is not assembled ([`VolumeState::NotAssembled`]).
    pub problem: Option<String>,
    /// Whether a forced assembly would assemble it (not clean and degraded).
    pub needs_force: bool,
    /// Whether it was assembled by force.
    pub forced: bool,
    /// After a forced assembly: what forcing risked.
    pub at_risk: Option<String>,
}

/// A volume: layout, components, state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Name.
    pub name: String,
    /// Unique id, fixed at creation.
    pub id: String,
    /// RAID level.
    pub level: RaidLevel,
    /// Number of columns.
    pub columns: u32,
    /// Stripe unit in bytes.
    pub stripe_unit_bytes: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Usable size in bytes.
    pub size_bytes: u64,
    /// State.
    pub state: VolumeState,
    /// One per column, in column order.
    pub components: Vec<ComponentInfo>,
    /// Counters.
    pub counters: VolumeCounters,
    /// The resync run since the volume was assembled, if any.
    pub resync: Option<ResyncProgress>,
    /// The parity map (`None` for a volume that is not assembled).
    pub parity_map: Option<ParityMapInfo>,
    /// How it was assembled, or why it is not.
    pub assembly: AssemblyInfo,
    /// Bytes that answer DATA_LOSS until written again ([`crate::Client::list_lost`]).
    pub lost_bytes: u64,
    /// In how many ranges.
    pub lost_ranges: u64,
    /// Reconstructions and copybacks of its columns: the running ones, and the last one of
    /// each column that finished or stopped since the coordinator started.
    pub rebuilds: Vec<RebuildProgress>,
    /// Why a failed column is not being reconstructed (no spare fits, the down-out delay has
    /// not passed, a resync must finish first); `None` when nothing waits.
    pub rebuild_waiting: Option<String>,
    /// Free hot spares of the pool that fit the volume now (a failed column can be rebuilt
    /// onto one of them).
    pub spares_available: u32,
    /// The parity check or rewrite running, or the last one since the coordinator started.
    pub parity_job: Option<ParityJob>,
}

/// What a parity job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParityJobKind {
    /// Compares every stripe's redundancy with its data; writes nothing.
    #[default]
    Check,
    /// Rewrites every stripe's redundancy from its data.
    Rewrite,
}

impl ParityJobKind {
    /// `check` or `rewrite`.
    pub fn name(self) -> &'static str {
        match self {
            ParityJobKind::Check => "check",
            ParityJobKind::Rewrite => "rewrite",
        }
    }
}

/// An online parity check or rewrite of a volume ([`crate::Client::check_parity`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParityJob {
    /// Check or rewrite.
    pub kind: ParityJobKind,
    /// Whether it runs.
    pub running: bool,
    /// Whether it went over every stripe.
    pub completed: bool,
    /// Stripes done.
    pub stripes_done: u64,
    /// Stripes of the volume.
    pub stripes_total: u64,
    /// Stripes whose redundancy disagreed with their data (check).
    pub mismatches: u64,
    /// The first 100 of them, in increasing order.
    pub mismatched_stripes: Vec<u64>,
    /// Recent rate, bytes of stripes per second.
    pub rate_bytes_per_second: u64,
    /// The rate limit (0: none).
    pub rate_limit_bytes_per_second: u64,
    /// Estimated seconds to completion (0 when unknown or done).
    pub eta_seconds: u64,
    /// Why it stopped before the end; while running, the last stripe error met.
    pub error: Option<String>,
    /// Stripes skipped (too many columns missing, or lost blocks).
    pub skipped_stripes: u64,
    /// Stripes whose check or rewrite failed.
    pub failed_stripes: u64,
    /// Blocks that answered data loss (check).
    pub unreadable_blocks: u64,
    /// Stripes rewritten (rewrite).
    pub rewritten_stripes: u64,
    /// The stripe its checkpoint resumed it from after a coordinator restart (0: it started
    /// from the first); the counts include what it found before the restart.
    pub resumed_from: u64,
}

impl ParityJob {
    /// Whole percent of the stripes done.
    pub fn percent(&self) -> u8 {
        if self.stripes_total == 0 {
            return 100;
        }
        (self.stripes_done.min(self.stripes_total) * 100 / self.stripes_total) as u8
    }

    /// Whether it stopped before its end.
    pub fn stopped(&self) -> bool {
        !self.running && !self.completed
    }

    pub(crate) fn from_proto(p: pb::ParityJob) -> Self {
        Self {
            kind: if p.kind == pb::ParityJobKind::Rewrite as i32 {
                ParityJobKind::Rewrite
            } else {
                ParityJobKind::Check
            },
            running: p.running,
            completed: p.completed,
            stripes_done: p.stripes_done,
            stripes_total: p.stripes_total,
            mismatches: p.mismatches,
            mismatched_stripes: p.mismatched_stripes,
            rate_bytes_per_second: p.rate_bytes_per_second,
            rate_limit_bytes_per_second: p.rate_limit_bytes_per_second,
            eta_seconds: p.eta_seconds,
            error: (!p.error.is_empty()).then_some(p.error),
            skipped_stripes: p.skipped_stripes,
            failed_stripes: p.failed_stripes,
            unreadable_blocks: p.unreadable_blocks,
            rewritten_stripes: p.rewritten_stripes,
            resumed_from: p.resumed_from,
        }
    }
}

impl VolumeInfo {
    /// Bytes of user data in one full stripe (the unit of a full-stripe write), when the layout
    /// is one the SDK knows the shape of.
    pub fn stripe_data_bytes(&self) -> Option<u64> {
        let data_columns = match self.level {
            RaidLevel::Raid0 => self.columns,
            // Mirrored pairs, striped across the pairs.
            RaidLevel::Raid1 => self.columns / 2,
            RaidLevel::Raid4 | RaidLevel::Raid5 => self.columns.checked_sub(1)?,
            RaidLevel::Raid6 => self.columns.checked_sub(2)?,
        };
        u64::from(data_columns)
            .checked_mul(self.stripe_unit_bytes)
            .filter(|&b| b > 0)
    }

    /// The rebuild of `column` to show: the running one, else the last one that finished or
    /// stopped.
    pub fn rebuild_of(&self, column: u32) -> Option<&RebuildProgress> {
        let mut last = None;
        for r in self.rebuilds.iter().filter(|r| r.column == column) {
            if r.running {
                return Some(r);
            }
            last = Some(r);
        }
        last
    }

    pub(crate) fn from_proto(v: pb::Volume) -> Result<Self, ClientError> {
        let mut components: Vec<ComponentInfo> = v
            .components
            .into_iter()
            .map(|c| ComponentInfo {
                column: c.column,
                node_id: c.node_id,
                node_address: c.node_address,
                component_id: c.component_id,
                state: ComponentState::from_proto(c.state),
                size_bytes: c.size_bytes,
                gone: c.gone,
            })
            .collect();
        components.sort_by_key(|c| c.column);
        let counters = v.counters.unwrap_or_default();
        let assembly = v.assembly.unwrap_or_default();
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        Ok(Self {
            level: RaidLevel::from_proto(v.level)?,
            name: v.name,
            id: v.id,
            columns: v.columns,
            stripe_unit_bytes: v.stripe_unit_bytes,
            block_size: v.block_size,
            size_bytes: v.size_bytes,
            state: VolumeState::from_proto(v.state),
            components,
            counters: VolumeCounters {
                reads: counters.reads,
                writes: counters.writes,
                bytes_read: counters.bytes_read,
                bytes_written: counters.bytes_written,
                errors: counters.errors,
                dags_rolled_forward: counters.dags_rolled_forward,
                dags_rolled_backward: counters.dags_rolled_backward,
                lost_stripes: counters.lost_stripes,
            },
            resync: v.resync.map(|r| ResyncProgress {
                running: r.running,
                stripes_done: r.stripes_done,
                stripes_total: r.stripes_total,
                stripes_skipped: r.stripes_skipped,
                stripes_repaired: r.stripes_repaired,
                stripes_lost: r.stripes_lost,
                error: non_empty(r.error),
                retries: r.retries,
                regions_total: r.regions_total,
                regions_done: r.regions_done,
                full: r.full,
            }),
            parity_map: v.parity_map.map(|m| ParityMapInfo {
                region_bytes: m.region_bytes,
                regions: m.regions,
                dirty_regions: m.dirty_regions,
                resync_regions: m.resync_regions,
                cooldown: std::time::Duration::from_millis(m.cooldown_ms),
            }),
            assembly: AssemblyInfo {
                problem: non_empty(assembly.problem),
                needs_force: assembly.needs_force,
                forced: assembly.forced,
                at_risk: non_empty(assembly.at_risk),
            },
            lost_bytes: v.lost_bytes,
            lost_ranges: v.lost_ranges,
            rebuilds: v
                .rebuilds
                .into_iter()
                .map(RebuildProgress::from_proto)
                .collect(),
            rebuild_waiting: non_empty(v.rebuild_waiting),
            spares_available: v.spares_available,
            parity_job: v.parity_job.map(ParityJob::from_proto),
        })
    }
}

/// What [`crate::Client::assemble_volume`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembleOutcome {
    /// The volume as assembled.
    pub volume: VolumeInfo,
    /// What forcing risked; `None` when no force was needed.
    pub at_risk: Option<String>,
    /// Columns this assembly failed (no answer, missing or foreign label): column and why.
    pub newly_failed: Vec<(u32, String)>,
}

impl AssembleOutcome {
    pub(crate) fn from_proto(r: pb::AssembleVolumeResponse) -> Result<Self, ClientError> {
        let volume = r.volume.ok_or_else(|| {
            ClientError::InvalidResponse("assembly answer without a volume".into())
        })?;
        Ok(Self {
            volume: VolumeInfo::from_proto(volume)?,
            at_risk: (!r.at_risk.is_empty()).then_some(r.at_risk),
            newly_failed: r
                .newly_failed
                .into_iter()
                .map(|f| (f.column, f.reason))
                .collect(),
        })
    }
}

/// What a hot spare in use stands in for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpareUse {
    /// The volume using it.
    pub volume: String,
    /// The column it stands in for.
    pub column: u32,
}

/// A hot spare of the coordinator's pool ([`crate::Client::list_spares`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spare {
    /// Its id (its component id on its node, `spare-...`).
    pub id: String,
    /// The storage node holding it.
    pub node_id: String,
    /// That node's address.
    pub node_address: String,
    /// Bytes per block.
    pub block_size: u32,
    /// Blocks.
    pub block_count: u64,
    /// Bytes (`block_size * block_count`).
    pub size_bytes: u64,
    /// The volume and column using it; `None` while it is free.
    pub in_use: Option<SpareUse>,
    /// Whether its node answered the coordinator's last health check.
    pub reachable: bool,
}

impl Spare {
    pub(crate) fn from_proto(s: pb::Spare) -> Self {
        Self {
            in_use: (!s.volume.is_empty()).then_some(SpareUse {
                volume: s.volume,
                column: s.column,
            }),
            id: s.id,
            node_id: s.node_id,
            node_address: s.node_address,
            block_size: s.block_size,
            block_count: s.block_count,
            size_bytes: s.size_bytes,
            reachable: s.reachable,
        }
    }
}

/// A storage node the coordinator knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageNodeInfo {
    /// The node's id.
    pub node_id: String,
    /// Its gRPC address.
    pub address: String,
    /// Whether the coordinator's last health check reached it.
    pub reachable: bool,
    /// Components of dagraid volumes it hosts.
    pub components: u32,
    /// What the last health check said, when it failed.
    pub detail: String,
    /// Health checks missed in a row (0 while it answers).
    pub missed_checks: u32,
}

/// Cluster identity, limits and storage nodes, from the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The cluster id shared by the coordinator and its storage nodes.
    pub cluster_id: String,
    /// The coordinator's owner epoch.
    pub epoch: u64,
    /// Largest length of one Read call and payload of one Write call; the SDK cuts larger
    /// ranges into calls of at most this.
    pub max_io_bytes: u64,
    /// The storage nodes.
    pub nodes: Vec<StorageNodeInfo>,
}

impl ClusterInfo {
    pub(crate) fn from_proto(c: pb::ClusterInfo) -> Self {
        Self {
            cluster_id: c.cluster_id,
            epoch: c.epoch,
            max_io_bytes: c.max_io_bytes,
            nodes: c
                .nodes
                .into_iter()
                .map(|n| StorageNodeInfo {
                    node_id: n.node_id,
                    address: n.address,
                    reachable: n.reachable,
                    components: n.components,
                    detail: n.detail,
                    missed_checks: n.missed_checks,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_parse_and_show() {
        for level in RaidLevel::ALL {
            assert_eq!(level.as_str().parse::<RaidLevel>().unwrap(), level);
            assert_eq!(
                RaidLevel::from_proto(level.to_proto() as i32).unwrap(),
                level
            );
        }
        assert_eq!("5".parse::<RaidLevel>().unwrap(), RaidLevel::Raid5);
        assert_eq!(" Raid1 ".parse::<RaidLevel>().unwrap(), RaidLevel::Raid1);
        assert!("raid2".parse::<RaidLevel>().is_err());
        assert!("raid".parse::<RaidLevel>().is_err());
        assert!(RaidLevel::from_proto(0).is_err());
    }

    #[test]
    fn stripe_data_bytes_per_level() {
        let mut v = VolumeInfo::from_proto(pb::Volume {
            name: "v".into(),
            level: pb::RaidLevel::Raid5 as i32,
            columns: 5,
            stripe_unit_bytes: 65536,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v.stripe_data_bytes(), Some(4 * 65536));
        v.level = RaidLevel::Raid6;
        assert_eq!(v.stripe_data_bytes(), Some(3 * 65536));
        v.level = RaidLevel::Raid0;
        assert_eq!(v.stripe_data_bytes(), Some(5 * 65536));
        v.level = RaidLevel::Raid1;
        v.columns = 4;
        assert_eq!(v.stripe_data_bytes(), Some(2 * 65536));
        v.stripe_unit_bytes = 0;
        assert_eq!(v.stripe_data_bytes(), None);
    }

    #[test]
    fn states_from_proto() {
        assert_eq!(VolumeState::from_proto(2), VolumeState::Degraded);
        assert_eq!(VolumeState::from_proto(5), VolumeState::Resyncing);
        assert_eq!(VolumeState::from_proto(6), VolumeState::NotAssembled);
        assert_eq!(VolumeState::NotAssembled.as_str(), "not-assembled");
        assert_eq!(VolumeState::from_proto(99), VolumeState::Unknown);
        assert_eq!(ComponentState::from_proto(2), ComponentState::Failed);
        assert_eq!(ComponentState::from_proto(0), ComponentState::Unknown);
    }

    #[test]
    fn components_sorted_by_column() {
        let v = VolumeInfo::from_proto(pb::Volume {
            level: pb::RaidLevel::Raid1 as i32,
            components: vec![
                pb::Component {
                    column: 1,
                    ..Default::default()
                },
                pb::Component {
                    column: 0,
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v.components[0].column, 0);
    }

    #[test]
    fn rebuilds_from_proto() {
        let v = VolumeInfo::from_proto(pb::Volume {
            level: pb::RaidLevel::Raid5 as i32,
            rebuilds: vec![
                pb::Rebuild {
                    column: 2,
                    kind: pb::RebuildKind::Spare as i32,
                    node_id: "node6".into(),
                    component_id: "spare-1".into(),
                    running: false,
                    completed: false,
                    stripes_done: 5,
                    stripes_total: 20,
                    error: "node6: gone".into(),
                    eta_seconds: 9,
                    ..Default::default()
                },
                pb::Rebuild {
                    column: 2,
                    kind: pb::RebuildKind::InPlace as i32,
                    running: true,
                    stripes_done: 5,
                    stripes_total: 20,
                    eta_seconds: 12,
                    rate_limit_bytes_per_second: 4096,
                    resumed_from: 3,
                    ..Default::default()
                },
                pb::Rebuild {
                    column: 0,
                    kind: 42,
                    completed: true,
                    stripes_total: 20,
                    stripes_done: 20,
                    ..Default::default()
                },
            ],
            rebuild_waiting: "column 1: no spare fits".into(),
            parity_job: None,
            spares_available: 3,
            ..Default::default()
        })
        .unwrap();
        let stopped = &v.rebuilds[0];
        assert_eq!(stopped.kind, RebuildKind::Spare);
        assert!(stopped.stopped());
        assert_eq!(stopped.error.as_deref(), Some("node6: gone"));
        // An ETA of a rebuild that is not running means nothing.
        assert_eq!(stopped.eta, None);
        assert_eq!(stopped.rate_limit_bytes_per_second, None);
        // The running one of a column is the one to show.
        let shown = v.rebuild_of(2).unwrap();
        assert_eq!(shown.kind, RebuildKind::InPlace);
        assert_eq!(shown.eta, Some(Duration::from_secs(12)));
        assert_eq!(shown.rate_limit_bytes_per_second, Some(4096));
        assert_eq!((shown.percent(), shown.stripes_left()), (25, 15));
        assert_eq!(shown.fraction(), 0.25);
        assert_eq!(shown.resumed_from, 3);
        let done = v.rebuild_of(0).unwrap();
        assert_eq!(done.kind, RebuildKind::Unknown);
        assert_eq!((done.fraction(), done.percent()), (1.0, 100));
        assert!(!done.stopped());
        assert_eq!(v.rebuild_of(1), None);
        assert_eq!(
            v.rebuild_waiting.as_deref(),
            Some("column 1: no spare fits")
        );
        assert_eq!(v.spares_available, 3);
        // An older coordinator says nothing of any.
        let old = VolumeInfo::from_proto(pb::Volume {
            level: pb::RaidLevel::Raid5 as i32,
            ..Default::default()
        })
        .unwrap();
        assert!(old.rebuilds.is_empty() && old.rebuild_waiting.is_none());
        assert_eq!(RebuildTarget::default().kind(), RebuildKind::Spare);
        assert_eq!(RebuildTarget::InPlace.kind(), RebuildKind::InPlace);
    }

    #[test]
    fn resync_and_assembly_from_proto() {
        let v = VolumeInfo::from_proto(pb::Volume {
            level: pb::RaidLevel::Raid5 as i32,
            state: pb::VolumeState::NotAssembled as i32,
            resync: Some(pb::ResyncProgress {
                running: true,
                stripes_done: 3,
                stripes_total: 8,
                stripes_repaired: 1,
                stripes_lost: 2,
                error: "stripe 3: timeout".into(),
                retries: 4,
                ..Default::default()
            }),
            assembly: Some(pb::AssemblyInfo {
                problem: "dirty and degraded".into(),
                needs_force: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v.state, VolumeState::NotAssembled);
        let r = v.resync.unwrap();
        assert!(r.running && r.stripes_done == 3 && !r.completed());
        assert_eq!((r.stripes_repaired, r.stripes_lost, r.retries), (1, 2, 4));
        assert_eq!(r.error.as_deref(), Some("stripe 3: timeout"));
        assert_eq!(v.assembly.problem.as_deref(), Some("dirty and degraded"));
        assert!(v.assembly.needs_force && v.assembly.at_risk.is_none());
        // An older coordinator says nothing of either.
        let old = VolumeInfo::from_proto(pb::Volume {
            level: pb::RaidLevel::Raid5 as i32,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(old.resync, None);
        assert_eq!(old.assembly, AssemblyInfo::default());
    }
}
