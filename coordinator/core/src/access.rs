//! The access pipeline (RAIDframe's `rf_states.c`): map, lock, create, execute, process,
//! cleanup, for every read and write of a volume.
//!
//! - **Map**: the byte range becomes per-stripe accesses ([`Layout::map`]); a bad range is
//!   refused before anything else ([`AccessError::Layout`]).
//! - **Lock**: every stripe's lock is taken, in increasing stripe order ([`StripeLockTable`]).
//!   Until the locks are held, dropping the caller's future cancels the access cleanly; from then
//!   on the access runs in its own task and completes whatever happens to the caller, so no
//!   cancellation can tear a stripe.
//! - **Create**: each stripe's DAG is selected and built from the component states read *under
//!   the stripe lock*, so a failure marked by another access or an administrator cannot race it.
//! - **Execute**: stripes of one access run concurrently (up to [`ArrayConfig::stripes_in_flight`]),
//!   DAGs of one stripe in order, each in the engine's own task.
//! - **Process**: every failed disk node is looked at, in either direction. A component fault
//!   (timeout, unreachable, failed) marks its column failed while the layout tolerates it; a data
//!   loss answer marks the column unreadable *for that stripe only* and the blocks are rebuilt from
//!   redundancy (and rewritten); fencing stops the access. A DAG that rolled backward retries with
//!   a DAG built for the new state, keeping its locks, at most [`ArrayConfig::max_tries`] times. A
//!   DAG that rolled forward is done: the write completed degraded.
//! - **Cleanup**: before an access that marked (or relied on) a failure is acknowledged, the new
//!   component states are made durable through the [`StateRecorder`]; if that fails, the access
//!   fails. Then the locks are released.
//!
//! More failures than the layout tolerates give [`AccessError::Unrecoverable`], naming the byte
//! range. When that happens after a write's commit (some of its writes may have landed, others
//! not), the stripe's data blocks are marked lost ([`crate::lost`]), durably before the answer:
//! reads of them answer [`AccessError::Unreadable`] rather than serve bytes that may be wrong,
//! until a write covers them whole. A write into a stripe with lost blocks never reads its parity
//! (which may be torn): its redundancy is computed from the data columns.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::Instrument;

use crate::admission::{Admission, Admitted, Overloaded};
use crate::array::{ArrayError, ArrayState, ComponentState, ComponentStates, FailOutcome};
use crate::dag::ComponentTable;
use crate::dag::builders::{self, BuildError, ColumnFaults, DagFamily, StripeRequest};
use crate::dag::select::{AccessKind, select};
use crate::engine::{DagOrigin, Direction, Engine, EngineConfig, EngineStats};
use crate::io::IoErrorKind;
use crate::layout::{ColumnSet, Layout, LayoutError, StripeAccess};
use crate::parity_map::{MapSnapshot, ParityMap};
use crate::resync::{StripeOutcome, StripeResync};
use crate::stats::LatencyHistogram;
use crate::stripe_lock::{LockMode, StripeLockRequest, StripeLockTable};

/// Settings of an array's access pipeline.
#[derive(Debug, Clone)]
pub struct ArrayConfig {
    /// The engine's settings (the deadline of every disk node).
    pub engine: EngineConfig,
    /// DAGs tried per stripe before the access gives up (RAIDframe: 5).
    pub max_tries: u32,
    /// Stripes of one access in flight at once.
    pub stripes_in_flight: usize,
    /// The admission every read, write and flush passes before it takes a stripe lock, shared
    /// by the arrays of one coordinator; `None`: no limit (tests, tools).
    pub admission: Option<Arc<Admission>>,
    /// Bytes of volume data per parity-map region ([`crate::parity_map`]).
    pub region_bytes: u64,
    /// The first half of the partial-parity log's sequence numbers ([`crate::ppl`]): the
    /// coordinator's owner epoch, so a later coordinator's entries rank above an earlier one's.
    pub log_epoch: u64,
    /// Whether writes while degraded are logged first ([`crate::ppl`]). Off, nothing is
    /// logged and no log period is recorded, so a crash while degraded needs a forced
    /// assembly (the write hole is open).
    pub partial_parity_log: bool,
}

impl Default for ArrayConfig {
    fn default() -> Self {
        ArrayConfig {
            engine: EngineConfig::default(),
            max_tries: 5,
            stripes_in_flight: 64,
            admission: None,
            region_bytes: crate::parity_map::DEFAULT_REGION_BYTES,
            log_epoch: 0,
            partial_parity_log: true,
        }
    }
}

/// Makes component states durable: the hook the cluster-state layer fills (labels on the
/// surviving components, the coordinator's store). [`Array`] calls it, serialised, after a
/// column was marked failed and before any access that depends on that mark is acknowledged.
pub trait StateRecorder: Send + Sync + fmt::Debug {
    /// Persists `states` (whose [`ComponentStates::generation`] is newer than any persisted
    /// before); an error fails the access that needed it.
    fn record<'a>(&'a self, states: &'a ComponentStates) -> BoxFuture<'a, Result<(), String>>;

    /// Persists a copy of the parity map ([`crate::parity_map`]); copies come in increasing
    /// versions, and one older than a copy already persisted must not be written over it. An
    /// error fails the write that waited for the copy (nothing of it was issued). The default
    /// keeps nothing.
    fn record_map<'a>(&'a self, map: &'a MapSnapshot) -> BoxFuture<'a, Result<(), String>> {
        let _ = map;
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A recorder that keeps nothing: component states live only in memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct InMemoryStates;

impl StateRecorder for InMemoryStates {
    fn record<'a>(&'a self, _: &'a ComponentStates) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Why an access failed. The service layer maps each kind to one gRPC status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// A zero-length or out-of-range access; nothing was done.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// More of the array is lost than its redundancy covers for these bytes.
    #[error("bytes {offset}..{} cannot be served: {detail}", offset + len)]
    Unrecoverable {
        /// First byte affected.
        offset: u64,
        /// Bytes affected.
        len: u64,
        /// Failed or unreadable columns.
        lost: Vec<usize>,
        /// What happened.
        detail: String,
        /// Whether a write may have partly landed: the bytes are then marked lost.
        torn: bool,
    },
    /// Bytes asked for are marked lost (a write that could not complete on enough columns, or
    /// a resync that could not repair them); nothing is served.
    #[error(
        "bytes {offset}..{} are lost: an earlier write could not complete on enough columns (or a resync could not repair them); writing them again makes them readable",
        offset + len
    )]
    Unreadable {
        /// First lost byte within the access.
        offset: u64,
        /// Bytes from there to the end of the last lost byte within the access.
        len: u64,
    },
    /// Too many accesses were waiting to run: refused before anything was done (back-pressure;
    /// retrying later is safe).
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// A storage node refused this coordinator's epoch: a newer owner exists.
    #[error("fenced: {detail}")]
    Fenced {
        /// What the node said.
        detail: String,
    },
    /// A storage node belongs to another cluster: the coordinator's configuration names the
    /// wrong node (or the node was re-initialised). Not a component fault: nothing is failed.
    #[error("column {column}: the storage node belongs to another cluster: {detail}")]
    WrongCluster {
        /// The column whose node answered so.
        column: usize,
        /// What the node said.
        detail: String,
    },
    /// A storage node refused a request this coordinator built (too large for the node's
    /// limits, or outside the component): a mismatch between the volume and the node, never a
    /// component fault, so nothing is failed for it.
    #[error(
        "stripe {stripe}, column {column}: the storage node refused the request ({kind}): {detail}"
    )]
    StorageRefused {
        /// The stripe.
        stripe: u64,
        /// The column whose node refused.
        column: usize,
        /// `invalid_request` or `out_of_range`.
        kind: &'static str,
        /// What the node said.
        detail: String,
    },
    /// A DAG node that touches no component failed (a parity computation given buffers of
    /// different sizes, a disk node whose error carries no component): a bug in a builder or
    /// an operation, reported with the node.
    #[error("stripe {stripe}: a {mnemonic} node failed: {detail}")]
    NodeFailed {
        /// The stripe.
        stripe: u64,
        /// The node's mnemonic.
        mnemonic: String,
        /// The error.
        detail: String,
    },
    /// More columns are failed or gone than the layout tolerates: the volume is failed, and
    /// writes are refused (nothing was written) until enough of the gone columns' nodes answer
    /// again. Reads the surviving columns can serve are still served.
    #[error(
        "the volume is failed: columns {columns:?} are failed or their storage nodes are gone, more than {level} tolerates ({tolerance}); writes are refused until enough of them are back"
    )]
    VolumeFailed {
        /// The failed or gone columns.
        columns: Vec<usize>,
        /// The level.
        level: crate::layout::RaidLevel,
        /// Failures it tolerates.
        tolerance: usize,
    },
    /// A column was marked failed but the new states could not be made durable, so the access
    /// is not acknowledged.
    #[error("the new component states could not be made durable: {detail}")]
    StateNotRecorded {
        /// What the recorder said.
        detail: String,
    },
    /// A stripe rolled backward on every try.
    #[error("stripe {stripe}: gave up after {tries} tries; last failure: {last}")]
    RetriesExhausted {
        /// The stripe.
        stripe: u64,
        /// DAGs tried.
        tries: u32,
        /// The last failure seen.
        last: String,
    },
    /// An administrative state change was refused.
    #[error(transparent)]
    Array(#[from] ArrayError),
    /// A reconstruction or copyback of `column` could not go on (its target failed, the
    /// column is not in the state it needs, a component does not fit).
    #[error("column {column}: {detail}")]
    Rebuild {
        /// The column.
        column: usize,
        /// Why.
        detail: String,
    },
    /// A bug: an invalid DAG, a lost engine task, a malformed component request.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The bytes of a read, as the DAGs produced them: chunks in order, shared, not copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadData {
    chunks: Vec<Bytes>,
    len: usize,
}

impl ReadData {
    /// Total length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order (a response can stream them without joining).
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// One contiguous buffer; copies only when there is more than one chunk.
    pub fn into_bytes(self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut out = BytesMut::with_capacity(self.len);
                for c in &self.chunks {
                    out.extend_from_slice(c);
                }
                out.freeze()
            }
        }
    }
}

/// One DAG an access ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagRecord {
    /// The stripe.
    pub stripe: u64,
    /// The family.
    pub family: DagFamily,
    /// How it ended.
    pub direction: Direction,
}

/// What an access did: its DAGs, and the columns it marked failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessReport {
    /// Every DAG run, per stripe in order of running.
    pub dags: Vec<DagRecord>,
    /// Columns this access marked failed.
    pub marked_failed: Vec<usize>,
    /// Blocks that answered data loss to this access's reads (repaired after a read, see
    /// [`Array::read`]).
    pub bad_blocks: Vec<BadBlocks>,
}

/// Blocks of one column that answered data loss in one stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBlocks {
    /// The stripe.
    pub stripe: u64,
    /// The column.
    pub column: usize,
    /// Absolute block indices within the column's component.
    pub blocks: Vec<u64>,
}

impl AccessReport {
    /// DAGs that rolled backward and were retried.
    pub fn retries(&self) -> usize {
        self.dags
            .iter()
            .filter(|d| d.direction == Direction::RolledBackward)
            .count()
    }
}

/// Counters of one array since it was assembled.
#[derive(Debug, Default)]
pub struct AccessStats {
    /// Reads served.
    pub reads: AtomicU64,
    /// Writes acknowledged.
    pub writes: AtomicU64,
    /// Bytes read.
    pub bytes_read: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// Accesses that failed.
    pub errors: AtomicU64,
    /// DAGs run, by family ([`DagFamily::ALL`] order).
    pub dags: [AtomicU64; 9],
    /// DAGs that rolled forward past a failure.
    pub rolled_forward: AtomicU64,
    /// DAGs that rolled backward.
    pub rolled_backward: AtomicU64,
    /// DAGs by family ([`DagFamily::ALL`] order) and how they ended ([`Direction::ALL`] order).
    pub dag_outcomes: [[AtomicU64; 3]; 9],
    /// Reads that failed.
    pub read_errors: AtomicU64,
    /// Writes that failed.
    pub write_errors: AtomicU64,
    /// Flushes that succeeded.
    pub flushes: AtomicU64,
    /// Flushes that failed.
    pub flush_errors: AtomicU64,
    /// Disk writes whose outcome was unknown (a timeout, a lost connection), redone after a
    /// fence of their component instead of failing its column.
    pub redone_writes: AtomicU64,
    /// Partial-parity log entries written (one per stripe of a write while degraded, on each
    /// surviving parity column: [`crate::ppl`]).
    pub log_entries: AtomicU64,
    /// Bytes of those entries.
    pub log_bytes: AtomicU64,
    /// Time of every read (served or failed), from the call to its answer.
    pub read_latency: LatencyHistogram,
    /// Time of every write.
    pub write_latency: LatencyHistogram,
    /// Time of every flush.
    pub flush_latency: LatencyHistogram,
}

impl AccessStats {
    fn count_dag(&self, family: DagFamily, direction: Direction) {
        let i = DagFamily::ALL
            .iter()
            .position(|f| *f == family)
            .unwrap_or(0);
        self.dags[i].fetch_add(1, Ordering::Relaxed);
        let d = Direction::ALL
            .iter()
            .position(|x| *x == direction)
            .unwrap_or(0);
        self.dag_outcomes[i][d].fetch_add(1, Ordering::Relaxed);
        match direction {
            Direction::Forward => {}
            Direction::RolledForward => {
                self.rolled_forward.fetch_add(1, Ordering::Relaxed);
            }
            Direction::RolledBackward => {
                self.rolled_backward.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One RAID array: its layout, components and states, with the pipeline that serves accesses.
pub struct Array {
    layout: Layout,
    /// The component of every column. A column's component changes only while the column is
    /// failed (a spare or a blank component takes its place) or at a copyback's start and end
    /// (`access::rebuild`); every stripe takes its copy after its stripe lock.
    components: std::sync::RwLock<ComponentTable>,
    states: Mutex<ComponentStates>,
    /// Highest state generation known durable.
    durable: watch::Sender<u64>,
    /// Serialises calls of the recorder, so generations land in order.
    recording: tokio::sync::Mutex<()>,
    recorder: Arc<dyn StateRecorder>,
    locks: StripeLockTable,
    engine: Engine,
    config: ArrayConfig,
    /// Reads in flight per column (RAID 1 reads the less loaded copy).
    load: Vec<AtomicU64>,
    /// The dirty regions; the regions awaiting their resync.
    parity_map: ParityMap,
    /// Serialises the persisting of parity-map copies, so versions land in order.
    map_writing: tokio::sync::Mutex<()>,
    stats: AccessStats,
    /// The partial-parity log's slots, per component.
    log_rings: crate::ppl::Rings,
    /// The second half of the log's sequence numbers.
    log_seq: AtomicU64,
    /// Held shared by every attempt of a user write, from before it looks at the states until
    /// its DAG (and any redo) is done; recording a state that takes a column out of use takes
    /// it exclusively first ([`Array::make_durable`]).
    write_gate: tokio::sync::RwLock<()>,
    /// Which columns were current in the state last recorded.
    recorded_current: Mutex<Vec<bool>>,
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("layout", &self.layout)
            .field("states", &self.states())
            .finish_non_exhaustive()
    }
}

/// What a stripe's DAGs are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StripeOp {
    /// A client's read or write.
    Access(AccessKind),
    /// Resync: recompute the stripe's redundancy from its data.
    RewriteParity,
    /// Repair: read the access's blocks with `column` unreadable (it answered data loss for
    /// them) and write what was rebuilt back to it, under the stripe's write lock.
    Repair {
        /// The column whose blocks are bad.
        column: usize,
    },
}

/// What a resync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResyncReport {
    /// Stripes done: rewritten, repaired or recorded lost.
    pub stripes: u64,
    /// Of those, stripes whose unreadable blocks were rebuilt from redundancy.
    pub repaired: u64,
    /// Of those, stripes with unreadable blocks that could not be rebuilt: recorded lost.
    pub lost: u64,
    /// Columns marked failed on the way.
    pub marked_failed: Vec<usize>,
}

/// What one stripe produced.
struct StripeDone {
    chunks: Vec<Bytes>,
    dags: Vec<DagRecord>,
    marked: Vec<usize>,
    generation: u64,
    /// Columns whose reads answered data loss in this stripe.
    unreadable: ColumnSet,
    /// The blocks they named.
    bad: Vec<BadBlocks>,
}

impl Array {
    /// An array over `components` (one per column, in column order) in `states`, whose
    /// generation is taken as durable. Every component must have the layout's block size and at
    /// least its blocks per column.
    pub fn new(
        layout: Layout,
        components: ComponentTable,
        states: ComponentStates,
        config: ArrayConfig,
        recorder: Arc<dyn StateRecorder>,
    ) -> Result<Arc<Array>, AccessError> {
        if components.len() != layout.columns() || states.columns() != layout.columns() {
            return Err(AccessError::Array(ArrayError::ColumnCountMismatch {
                states: components.len(),
                columns: layout.columns(),
            }));
        }
        for (column, c) in components.iter().enumerate() {
            if let Some(problem) = misfit(&layout, c.as_ref()) {
                return Err(AccessError::Internal(format!("column {column}: {problem}")));
            }
        }
        let generation = states.generation();
        let recorded_current = Mutex::new(states.states().iter().map(|s| s.is_current()).collect());
        Ok(Arc::new(Array {
            load: (0..layout.columns()).map(|_| AtomicU64::new(0)).collect(),
            parity_map: ParityMap::new(
                layout.stripes(),
                layout.stripe_data_bytes(),
                config.region_bytes,
            ),
            map_writing: tokio::sync::Mutex::new(()),
            layout,
            components: std::sync::RwLock::new(components),
            states: Mutex::new(states),
            durable: watch::channel(generation).0,
            recording: tokio::sync::Mutex::new(()),
            recorder,
            locks: StripeLockTable::new(),
            engine: Engine::new(config.engine.clone()),
            config,
            stats: AccessStats::default(),
            log_rings: crate::ppl::Rings::default(),
            log_seq: AtomicU64::new(0),
            write_gate: tokio::sync::RwLock::new(()),
            recorded_current,
        }))
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The components, by column, as they are now.
    pub fn components(&self) -> ComponentTable {
        self.components
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A copy of the component states.
    pub fn states(&self) -> ComponentStates {
        self.lock_states().clone()
    }

    /// The array's state.
    pub fn array_state(&self) -> ArrayState {
        self.lock_states().array_state(&self.layout)
    }

    /// The lost blocks (see [`AccessError::Unreadable`]).
    pub fn lost(&self) -> crate::lost::LostSet {
        self.lock_states().lost().clone()
    }

    /// The stripes with lost blocks, in increasing order.
    pub fn lost_stripes(&self) -> Vec<u64> {
        let per_stripe =
            (self.layout.stripe_data_bytes() / self.layout.geometry().block_size()).max(1);
        let mut out: Vec<u64> = Vec::new();
        for r in self.lock_states().lost().ranges() {
            let first = r.start / per_stripe;
            let last = (r.end - 1) / per_stripe;
            let from = out.last().map_or(first, |&l| first.max(l + 1));
            out.extend(from..=last);
        }
        out
    }

    /// The counters.
    pub fn stats(&self) -> &AccessStats {
        &self.stats
    }

    /// The stripe locks (rebuild and scrub take them too).
    pub fn stripe_locks(&self) -> &StripeLockTable {
        &self.locks
    }

    /// The engine's counters: DAGs in flight, firings by mnemonic.
    pub fn engine_stats(&self) -> &EngineStats {
        self.engine.stats()
    }

    fn lock_states(&self) -> std::sync::MutexGuard<'_, ComponentStates> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The volume blocks of the bytes `range`: those it touches, and those it covers whole.
    fn blocks_of(
        &self,
        range: &std::ops::Range<u64>,
    ) -> (std::ops::Range<u64>, std::ops::Range<u64>) {
        let bs = self.layout.geometry().block_size();
        let touched = range.start / bs..range.end.div_ceil(bs);
        let first_whole = range.start.div_ceil(bs);
        let end_whole = (range.end / bs).max(first_whole);
        (touched, first_whole..end_whole)
    }

    /// The data blocks of `stripe`.
    fn stripe_blocks(&self, stripe: u64) -> std::ops::Range<u64> {
        let sb = self.layout.stripe_data_bytes();
        self.blocks_of(&(stripe * sb..(stripe + 1) * sb)).0
    }

    /// Marks the data blocks of `stripe` lost; returns the generation to make durable.
    fn mark_stripe_lost(&self, stripe: u64) -> u64 {
        let blocks = self.stripe_blocks(stripe);
        let mut st = self.lock_states();
        if st.mark_lost(blocks.clone()) {
            tracing::warn!(stripe, blocks = ?blocks, "stripe marked lost");
        }
        st.generation()
    }

    /// Reads `len` bytes at volume offset `offset`.
    pub async fn read(
        self: &Arc<Self>,
        offset: u64,
        len: u64,
    ) -> Result<(ReadData, AccessReport), AccessError> {
        let start = std::time::Instant::now();
        let r = self.access(AccessKind::Read, offset, len, None).await;
        self.count(&r, AccessKind::Read, len, start);
        r
    }

    /// Writes `data` at volume offset `offset`; acknowledged (`Ok`) once durable on every live
    /// column it touches.
    pub async fn write(
        self: &Arc<Self>,
        offset: u64,
        data: Bytes,
    ) -> Result<AccessReport, AccessError> {
        let len = data.len() as u64;
        let start = std::time::Instant::now();
        let r = self
            .access(AccessKind::Write, offset, len, Some(data))
            .await
            .map(|(_, report)| report);
        self.count(&r, AccessKind::Write, len, start);
        r
    }

    fn count<T>(
        &self,
        r: &Result<T, AccessError>,
        kind: AccessKind,
        len: u64,
        start: std::time::Instant,
    ) {
        let s = &self.stats;
        match kind {
            AccessKind::Read => s.read_latency.observe(start.elapsed()),
            AccessKind::Write => s.write_latency.observe(start.elapsed()),
        }
        match (r, kind) {
            (Err(_), kind) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                match kind {
                    AccessKind::Read => s.read_errors.fetch_add(1, Ordering::Relaxed),
                    AccessKind::Write => s.write_errors.fetch_add(1, Ordering::Relaxed),
                };
            }
            (Ok(_), AccessKind::Read) => {
                s.reads.fetch_add(1, Ordering::Relaxed);
                s.bytes_read.fetch_add(len, Ordering::Relaxed);
            }
            (Ok(_), AccessKind::Write) => {
                s.writes.fetch_add(1, Ordering::Relaxed);
                s.bytes_written.fetch_add(len, Ordering::Relaxed);
            }
        }
    }

    async fn access(
        self: &Arc<Self>,
        kind: AccessKind,
        offset: u64,
        len: u64,
        data: Option<Bytes>,
    ) -> Result<(ReadData, AccessReport), AccessError> {
        let map = self.layout.map(offset, len)?;
        let mode = match kind {
            AccessKind::Read => LockMode::Read,
            AccessKind::Write => LockMode::Write,
        };
        let span = tracing::info_span!(
            "access",
            kind = match kind {
                AccessKind::Read => "read",
                AccessKind::Write => "write",
            },
            offset,
            len,
            stripes = map.stripes.len() as u64,
        );
        // Admitted before any lock is taken: a full queue refuses here, having done nothing.
        let admitted = self.admit().instrument(span.clone()).await?;
        let locks = self
            .locks
            .lock(StripeLockRequest::for_map(&map, mode))
            .instrument(span.clone())
            .await
            .map_err(|e| AccessError::Internal(e.to_string()))?;
        // From here on the access cannot be cancelled: it runs in its own task.
        let this = self.clone();
        let task = tokio::spawn(
            async move {
                let r = this.run_locked(kind, &map.stripes, data.as_ref()).await;
                drop(locks);
                // Blocks that answered data loss to a read are repaired now, each stripe under
                // its write lock, before the read is answered (so whatever the repair marks is
                // durable first).
                let r = match r {
                    Ok((read, report)) if !report.bad_blocks.is_empty() => this
                        .repair(&report.bad_blocks)
                        .await
                        .map(|()| (read, report)),
                    other => other,
                };
                drop(admitted);
                r
            }
            // Not made (below an unsampled span): the task runs in the caller's span instead,
            // keeping the trace for the DAGs and calls below.
            .instrument(span.or_current()),
        );
        task.await
            .map_err(|e| AccessError::Internal(format!("access task lost: {e}")))?
    }

    async fn run_locked(
        self: &Arc<Self>,
        kind: AccessKind,
        stripes: &[StripeAccess],
        data: Option<&Bytes>,
    ) -> Result<(ReadData, AccessReport), AccessError> {
        if kind == AccessKind::Write {
            let st = self.lock_states();
            if st.array_state(&self.layout) == ArrayState::Failed {
                return Err(AccessError::VolumeFailed {
                    columns: st.unavailable_columns().iter().collect(),
                    level: self.layout.level(),
                    tolerance: self.layout.fault_tolerance(),
                });
            }
        }
        if kind == AccessKind::Read
            && let (Some(first), Some(last)) = (stripes.first(), stripes.last())
        {
            let range = first.volume_range.start..last.volume_range.end;
            let (blocks, _) = self.blocks_of(&range);
            let lost = self.lock_states().lost().overlapping(blocks);
            if let (Some(a), Some(b)) = (lost.first(), lost.last()) {
                let bs = self.layout.geometry().block_size();
                let start = (a.start * bs).max(range.start);
                let end = (b.end * bs).min(range.end);
                return Err(AccessError::Unreadable {
                    offset: start,
                    len: end - start,
                });
            }
        }
        // A write's regions are marked dirty, durably, before any of it is issued.
        let begun = match (kind, stripes.first(), stripes.last()) {
            (AccessKind::Write, Some(first), Some(last)) => {
                let begun = self.parity_map.begin(first.stripe..last.stripe + 1);
                if let Some(version) = begun.wait_for
                    && let Err(e) = self.persist_map(Some(version)).await
                {
                    self.parity_map.end(begun);
                    return Err(e);
                }
                Some(begun)
            }
            _ => None,
        };
        let runs: Vec<_> = stripes
            .iter()
            .enumerate()
            .map(|(i, s)| self.run_stripe_at(i, kind, s, data))
            .collect();
        let mut results: Vec<(usize, StripeDone, Result<(), AccessError>)> =
            futures::stream::iter(runs)
                .buffer_unordered(self.config.stripes_in_flight.max(1))
                .collect()
                .await;
        results.sort_by_key(|(i, _, _)| *i);
        if let Some(begun) = begun {
            self.parity_map.end(begun);
        }
        let mut report = AccessReport::default();
        let mut chunks = Vec::new();
        let mut generation = 0;
        let mut first_error = None;
        for (_, done, r) in results {
            // The marks of a stripe that failed count as much as those of one that succeeded.
            report.dags.extend(done.dags);
            report.marked_failed.extend(done.marked);
            report.bad_blocks.extend(done.bad);
            generation = generation.max(done.generation);
            match r {
                Ok(()) => chunks.extend(done.chunks),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Whatever happened, failures this access saw are made durable before it answers.
        let durable = self.make_durable(generation).await;
        if let Some(e) = first_error {
            return Err(e);
        }
        durable?;
        let len = chunks.iter().map(Bytes::len).sum();
        Ok((ReadData { chunks, len }, report))
    }

    async fn run_stripe_at(
        &self,
        index: usize,
        kind: AccessKind,
        s: &StripeAccess,
        data: Option<&Bytes>,
    ) -> (usize, StripeDone, Result<(), AccessError>) {
        let (done, r) = self.run_stripe(StripeOp::Access(kind), s, data).await;
        (index, done, r)
    }

    /// Runs one stripe's DAGs until one completes, retrying after a roll-backward. Whatever
    /// the result, the returned [`StripeDone`] says which columns were marked failed and the
    /// state generation that must be durable before anything is answered: an access that fails
    /// still records every failure it observed.
    async fn run_stripe(
        &self,
        op: StripeOp,
        s: &StripeAccess,
        data: Option<&Bytes>,
    ) -> (StripeDone, Result<(), AccessError>) {
        let mut done = StripeDone {
            chunks: Vec::new(),
            dags: Vec::new(),
            marked: Vec::new(),
            generation: 0,
            unreadable: ColumnSet::new(),
            bad: Vec::new(),
        };
        let r = self.run_stripe_dags(op, s, data, &mut done).await;
        (done, r)
    }

    async fn run_stripe_dags(
        &self,
        op: StripeOp,
        s: &StripeAccess,
        data: Option<&Bytes>,
        done: &mut StripeDone,
    ) -> Result<(), AccessError> {
        let mut unreadable = ColumnSet::new();
        if let StripeOp::Repair { column } = op {
            unreadable.insert(column);
        }
        let mut last = String::new();
        // The log entries of this stripe's write while degraded: the columns they log and their
        // slots, held until the write is done (`crate::ppl`).
        let mut logged: Option<(Vec<usize>, Vec<crate::ppl::SlotGuard>)> = None;
        for attempt in 1..=self.config.max_tries.max(1) {
            // A user write's attempt runs under the write gate, from before it reads the states
            // until its DAG is done: a failure is not recorded while a write that treated the
            // column as current (and so logged nothing for it) is still in flight.
            let _gate = match op {
                StripeOp::Access(AccessKind::Write) => Some(self.write_gate.read().await),
                _ => None,
            };
            let (failed, lost_here, generation, table, not_current, log_period) = {
                let st = self.lock_states();
                (
                    st.missing_for(s.stripe),
                    st.lost().intersects(self.stripe_blocks(s.stripe)),
                    st.generation(),
                    self.components(),
                    st.states()
                        .iter()
                        .enumerate()
                        .filter(|(_, state)| !state.is_current())
                        .map(|(c, _)| c)
                        .collect::<ColumnSet>(),
                    st.log_period(),
                )
            };
            done.generation = done.generation.max(generation);
            let mut faults = ColumnFaults {
                failed,
                unreadable: unreadable.clone(),
            };
            let data_missing = s
                .layout
                .data_columns()
                .any(|(_, c)| faults.failed.contains(c));
            if lost_here && !data_missing && matches!(op, StripeOp::Access(AccessKind::Write)) {
                // The parity of a stripe with lost blocks may be torn: never read it; the write
                // computes the redundancy from the data columns. (With a data column missing,
                // the degraded write reconstructs that column's units, which are lost anyway,
                // and computes the new redundancy from the data: consistent either way.)
                for p in &s.parity {
                    faults.unreadable.insert(p.column);
                }
            }
            // While any column is not current, a write first logs what the stripe's not-current
            // data units hold after it, durably, on the stripe's surviving parity columns: a
            // crash in the middle of the write cannot then damage them (`crate::ppl`).
            if matches!(op, StripeOp::Access(AccessKind::Write))
                && self.config.partial_parity_log
                && crate::ppl::level_logs(self.layout.level())
                && log_period != 0
            {
                let to_log: Vec<usize> = s
                    .layout
                    .data_columns()
                    .map(|(_, c)| c)
                    .filter(|&c| not_current.contains(c))
                    .collect();
                if !to_log.is_empty() && logged.as_ref().map(|(c, _)| c) != Some(&to_log) {
                    // The earlier attempt's entry is not needed any more (it wrote nothing, or
                    // its reads failed): its slots go back before new ones are waited for.
                    logged = None;
                    let before = done.generation;
                    match self
                        .log_stripe(s, data, &to_log, &faults.failed, &table, log_period, done)
                        .await?
                    {
                        Some(guards) => logged = Some((to_log, guards)),
                        None => continue,
                    }
                    if done.generation != before {
                        // The reads for the entry marked a column failed: build on that.
                        continue;
                    }
                }
            }
            let load: Vec<u64> = if self.layout.level() == crate::layout::RaidLevel::Raid1 {
                self.load
                    .iter()
                    .map(|l| l.load(Ordering::Relaxed))
                    .collect()
            } else {
                Vec::new()
            };
            let req = StripeRequest {
                layout: &self.layout,
                access: s,
                components: &table,
                faults: &faults,
                data,
                load: &load,
                in_sync: !lost_here && self.parity_map.in_sync(s.stripe),
                repair: matches!(op, StripeOp::Repair { .. }),
            };
            let built = match op {
                StripeOp::Access(kind) => select(&self.layout, s, kind, &faults),
                StripeOp::Repair { .. } => select(&self.layout, s, AccessKind::Read, &faults),
                StripeOp::RewriteParity => Ok(DagFamily::ParityRewrite),
            }
            .and_then(|family| builders::build(family, &req))
            .map_err(|e| self.build_error(s, e))?;
            let family = built.family;
            for &c in &built.columns_read {
                self.load[c].fetch_add(1, Ordering::Relaxed);
            }
            let origin = DagOrigin {
                stripe: s.stripe,
                attempt,
            };
            let result = self.engine.run_for(built.dag, Some(origin)).await;
            for &c in &built.columns_read {
                self.load[c].fetch_sub(1, Ordering::Relaxed);
            }
            let result = result.map_err(|e| AccessError::Internal(e.to_string()))?;
            let direction = result.direction();
            self.stats.count_dag(family, direction);
            done.dags.push(DagRecord {
                stripe: s.stripe,
                family,
                direction,
            });

            // Process every failure, in either direction. Every component fault is marked
            // first; an error that stops the access (fencing, a refused request, a failed
            // computation) is kept and answered after the loop, never before the other
            // columns' failures are marked.
            let failures = self.redo_unknown_writes(s.stripe, &result).await;
            let mut beyond_tolerance: Vec<(usize, String)> = Vec::new();
            let mut stop: Option<AccessError> = None;
            for (report, err) in &failures {
                let (report, err) = (*report, err);
                last = err.to_string();
                let (Some(column), Some(io)) = (report.target.map(|t| t.component), err.io())
                else {
                    stop.get_or_insert(AccessError::NodeFailed {
                        stripe: s.stripe,
                        mnemonic: report.mnemonic.to_string(),
                        detail: err.to_string(),
                    });
                    continue;
                };
                match &io.kind {
                    IoErrorKind::DataLoss { bad_blocks } if !report.is_write => {
                        unreadable.insert(column);
                        done.unreadable.insert(column);
                        done.bad.push(BadBlocks {
                            stripe: s.stripe,
                            column,
                            blocks: bad_blocks.clone(),
                        });
                    }
                    IoErrorKind::Fenced => {
                        // Fencing outranks every other reason: a newer owner exists.
                        if !matches!(stop, Some(AccessError::Fenced { .. })) {
                            stop = Some(AccessError::Fenced {
                                detail: io.to_string(),
                            });
                        }
                    }
                    IoErrorKind::WrongCluster => {
                        stop.get_or_insert(AccessError::WrongCluster {
                            column,
                            detail: io.to_string(),
                        });
                    }
                    IoErrorKind::InvalidRequest | IoErrorKind::OutOfRange => {
                        stop.get_or_insert(AccessError::StorageRefused {
                            stripe: s.stripe,
                            column,
                            kind: io.kind.as_str(),
                            detail: io.to_string(),
                        });
                    }
                    // Timeouts, unreachable or failed components, local errors, and a write
                    // whose outcome is unknown: the column is failed, never retried blindly.
                    _ => match self.mark_failed(column) {
                        Ok((FailOutcome::Marked, generation)) => {
                            tracing::warn!(column, error = %io, "component marked failed");
                            done.marked.push(column);
                            done.generation = done.generation.max(generation);
                        }
                        Ok((FailOutcome::AlreadyFailed, generation)) => {
                            done.generation = done.generation.max(generation);
                        }
                        Err(_) => beyond_tolerance.push((column, io.to_string())),
                    },
                }
            }
            if let Some(stop) = stop {
                if direction == Direction::RolledForward && family.is_write() {
                    // Some writes may have landed: the stripe cannot be trusted.
                    let g = self.mark_stripe_lost(s.stripe);
                    done.generation = done.generation.max(g);
                }
                return Err(stop);
            }
            let range = s.volume_range.clone();
            let unrecoverable = |torn: bool, what: &str| AccessError::Unrecoverable {
                offset: range.start,
                len: range.end - range.start,
                lost: beyond_tolerance.iter().map(|(c, _)| *c).collect(),
                detail: format!(
                    "{what}; more columns failed than {} tolerates: {}",
                    self.layout.level(),
                    beyond_tolerance
                        .iter()
                        .map(|(c, e)| format!("column {c}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                torn,
            };
            match direction {
                Direction::RolledBackward if beyond_tolerance.is_empty() => continue,
                Direction::RolledBackward => {
                    return Err(unrecoverable(false, "nothing was written"));
                }
                Direction::RolledForward if !beyond_tolerance.is_empty() && family.is_write() => {
                    let g = self.mark_stripe_lost(s.stripe);
                    done.generation = done.generation.max(g);
                    return Err(unrecoverable(
                        true,
                        "the write may have landed on some columns only, so the stripe is marked lost",
                    ));
                }
                Direction::Forward | Direction::RolledForward => {
                    // A user write makes the blocks it covers whole again (its redundancy was
                    // computed from the data columns, see above); a parity rewrite does not (a
                    // stale data unit may be what tore the stripe).
                    if family.is_write() && family != DagFamily::ParityRewrite {
                        let (_, whole) = self.blocks_of(&s.volume_range);
                        let mut st = self.lock_states();
                        if st.clear_lost(whole) {
                            done.generation = done.generation.max(st.generation());
                        }
                    }
                    for p in &built.pieces {
                        let Some(buf) = result.buffer(p.slot) else {
                            return Err(AccessError::Internal(format!(
                                "stripe {}: slot {} of a {family} DAG is empty",
                                s.stripe, p.slot
                            )));
                        };
                        done.chunks.push(buf.slice(p.range.clone()));
                    }
                    return Ok(());
                }
            }
        }
        Err(AccessError::RetriesExhausted {
            stripe: s.stripe,
            tries: self.config.max_tries.max(1),
            last,
        })
    }

    /// Writes the partial-parity log entry of a write to stripe `s` ([`crate::ppl`]): the
    /// bytes the not-current data columns `to_log` hold after the write, over the stripe's
    /// touched unit range (read by a degraded read where the write does not cover them), on
    /// every parity column of the stripe not in `failed`, durable before this returns. Answers
    /// the slots (held until the write is done), or `None` when a log write failed and its
    /// column was marked failed (the caller builds again on that).
    #[allow(clippy::too_many_arguments)]
    async fn log_stripe(
        &self,
        s: &StripeAccess,
        data: Option<&Bytes>,
        to_log: &[usize],
        failed: &ColumnSet,
        table: &ComponentTable,
        period: u64,
        done: &mut StripeDone,
    ) -> Result<Option<Vec<crate::ppl::SlotGuard>>, AccessError> {
        let bs = self.layout.geometry().block_size();
        let range = s.unit_blocks.start * bs..s.unit_blocks.end * bs;
        let len = (range.end - range.start) as usize;
        let mut payload = bytes::BytesMut::with_capacity(len * to_log.len());
        for &column in to_log {
            let Some((index, _)) = s.layout.data_columns().find(|&(_, c)| c == column) else {
                continue;
            };
            let written = s.unit(index);
            let covered = written.is_some_and(|u| u.unit_bytes() == range);
            let mut buf = if covered {
                vec![0u8; len]
            } else {
                // What the unit holds now, over the range: a degraded read, under the write's
                // stripe lock (which covers the range).
                let offset = s.stripe * self.layout.stripe_data_bytes()
                    + index as u64 * self.layout.unit_bytes()
                    + range.start;
                let map = self.layout.map(offset, len as u64)?;
                let mut old = Vec::with_capacity(len);
                for piece in &map.stripes {
                    let mut sub = StripeDone {
                        chunks: Vec::new(),
                        dags: Vec::new(),
                        marked: Vec::new(),
                        generation: 0,
                        unreadable: ColumnSet::new(),
                        bad: Vec::new(),
                    };
                    let r = Box::pin(self.run_stripe_dags(
                        StripeOp::Access(AccessKind::Read),
                        piece,
                        None,
                        &mut sub,
                    ))
                    .await;
                    done.dags.extend(sub.dags);
                    done.marked.extend(sub.marked);
                    done.bad.extend(sub.bad);
                    done.generation = done.generation.max(sub.generation);
                    r.map_err(|e| match e {
                        AccessError::Unrecoverable { lost, detail, .. } => {
                            AccessError::Unrecoverable {
                                offset: s.volume_range.start,
                                len: s.volume_range.end - s.volume_range.start,
                                lost,
                                detail: format!(
                                    "nothing was written; reading what the partial-parity log needs: {detail}"
                                ),
                                torn: false,
                            }
                        }
                        other => other,
                    })?;
                    for chunk in sub.chunks {
                        old.extend_from_slice(&chunk);
                    }
                }
                old.resize(len, 0);
                old
            };
            if let (Some(u), Some(data)) = (written, data) {
                let at = (u.unit_offset - range.start) as usize;
                let src = u.buffer_bytes();
                buf[at..at + u.len as usize]
                    .copy_from_slice(&data[src.start as usize..src.end as usize]);
            }
            payload.extend_from_slice(&buf);
        }
        let entry = crate::ppl::Entry {
            period,
            seq: (
                self.config.log_epoch,
                self.log_seq.fetch_add(1, Ordering::Relaxed) + 1,
            ),
            stripe: s.stripe,
            unit_blocks: s.unit_blocks.clone(),
            columns: to_log.to_vec(),
            payload: payload.freeze(),
        };
        let encoded = entry.encode();
        let slot = crate::ppl::slot_bytes(&self.layout);
        let mut guards = Vec::new();
        let mut writes = Vec::new();
        // Slots are taken in the order of the components' ids, the same for every writer: a
        // writer waiting for a slot holds slots of earlier components only, so no wait can
        // close a circle (RAID 6 logs on two components).
        let mut targets: Vec<&crate::layout::ParityUnit> = s
            .parity
            .iter()
            .filter(|p| !failed.contains(p.column))
            .collect();
        targets.sort_by(|a, b| table[a.column].id().cmp(table[b.column].id()));
        for p in targets {
            let component = table[p.column].clone();
            let Some(ring) = self
                .log_rings
                .of(component.id(), component.log_bytes(), slot)
            else {
                return Err(AccessError::StorageRefused {
                    stripe: s.stripe,
                    column: p.column,
                    kind: "no_log_area",
                    detail: format!(
                        "component {} has a log area of {} bytes, less than one partial-parity log slot of {slot} bytes: a write while the volume is degraded must be logged first (recreate the component with a larger --log-bytes, or rebuild the failed column first)",
                        component.id(),
                        component.log_bytes()
                    ),
                });
            };
            let guard = ring.acquire().await;
            let offset = guard.offset();
            guards.push(guard);
            let bytes = encoded.clone();
            writes.push(async move { (p.column, component.write_log(offset, bytes).await) });
        }
        let results = futures::future::join_all(writes).await;
        let mut retry = false;
        for (column, r) in results {
            let Err(io) = r else {
                self.stats.log_entries.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .log_bytes
                    .fetch_add(encoded.len() as u64, Ordering::Relaxed);
                continue;
            };
            match io.kind {
                IoErrorKind::Fenced => {
                    return Err(AccessError::Fenced {
                        detail: io.to_string(),
                    });
                }
                IoErrorKind::InvalidRequest
                | IoErrorKind::OutOfRange
                | IoErrorKind::WrongCluster => {
                    return Err(AccessError::StorageRefused {
                        stripe: s.stripe,
                        column,
                        kind: io.kind.as_str(),
                        detail: format!("partial-parity log write: {io}"),
                    });
                }
                _ => match self.mark_failed(column) {
                    Ok((outcome, generation)) => {
                        if outcome == FailOutcome::Marked {
                            tracing::warn!(column, error = %io, "component marked failed: its partial-parity log write failed");
                            done.marked.push(column);
                        }
                        done.generation = done.generation.max(generation);
                        retry = true;
                    }
                    Err(_) => {
                        return Err(AccessError::Unrecoverable {
                            offset: s.volume_range.start,
                            len: s.volume_range.end - s.volume_range.start,
                            lost: vec![column],
                            detail: format!(
                                "nothing was written; the partial-parity log write on column {column} failed ({io}) and more columns would be failed than {} tolerates",
                                self.layout.level()
                            ),
                            torn: false,
                        });
                    }
                },
            }
        }
        Ok((!retry).then_some(guards))
    }

    /// The failures of a finished DAG that the access must process, after redoing its writes
    /// whose outcome is unknown.
    ///
    /// A write that timed out (or lost its connection) may still land, late. It is redone, not
    /// counted as a failure: its component is fenced first ([`ComponentIo::fence`]: no write
    /// sent before can land after it), then the same bytes are written again. Those bytes were
    /// computed by the DAG under the stripe lock, which the access still holds, so the redo is
    /// idempotent and completes the DAG's roll forward: the stripe ends as if the write had
    /// answered. A fence that does not answer in time is tried again, up to
    /// [`ArrayConfig::max_tries`] rounds, while the column is still current (the health loop
    /// fails or marks gone a column whose node stopped answering); only then, or when the
    /// fence or the redo fails for another reason, is the failure processed like any other
    /// (the column is failed, and beyond the layout's tolerance the stripe is lost).
    ///
    /// [`ComponentIo::fence`]: crate::io::ComponentIo::fence
    async fn redo_unknown_writes<'r>(
        &self,
        stripe: u64,
        result: &'r crate::engine::DagResult,
    ) -> Vec<(&'r crate::engine::NodeReport, crate::dag::NodeError)> {
        let mut remaining = Vec::new();
        for (_, report, err) in result.failures() {
            let redo = match (report.target, err.io(), &report.unwritten) {
                (Some(t), Some(io), Some(data)) if report.is_write && io.kind.outcome_unknown() => {
                    Some((t, io.clone(), data.clone()))
                }
                _ => None,
            };
            let Some((target, first, data)) = redo else {
                remaining.push((report, err.clone()));
                continue;
            };
            match self.redo_write(stripe, target, data, first).await {
                Ok(()) => {}
                Err(e) => remaining.push((report, crate::dag::NodeError::Io(e))),
            }
        }
        remaining
    }

    /// Fences `target`'s component and writes `data` to it again (see
    /// [`Array::redo_unknown_writes`]).
    async fn redo_write(
        &self,
        stripe: u64,
        target: crate::dag::DiskTarget,
        data: Bytes,
        first: crate::io::IoError,
    ) -> Result<(), crate::io::IoError> {
        let column = target.component;
        let io = self.components()[column].clone();
        let deadline = self.config.engine.node_deadline;
        let mut last = first;
        for round in 1..=self.config.max_tries.max(1) {
            if !self.lock_states().current_for(column, stripe) {
                // Failed or gone meanwhile (the health loop): nothing to redo on it.
                break;
            }
            if let Err(e) = bounded(io.as_ref(), &target, deadline, "fence", io.fence()).await {
                let again = e.kind == IoErrorKind::Timeout;
                last = e;
                if again {
                    continue;
                }
                break;
            }
            let redo = io.write(target.start_block, data.clone());
            match bounded(io.as_ref(), &target, deadline, "redo", redo).await {
                Ok(()) => {
                    tracing::info!(
                        column,
                        stripe,
                        round,
                        first_error = %last,
                        "write with an unknown outcome redone after fencing its component"
                    );
                    self.stats.redone_writes.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => {
                    let again = e.kind.outcome_unknown();
                    last = e;
                    if !again {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn build_error(&self, s: &StripeAccess, e: BuildError) -> AccessError {
        match e {
            BuildError::Unrecoverable { lost, detail, .. } => AccessError::Unrecoverable {
                offset: s.volume_range.start,
                len: s.volume_range.end - s.volume_range.start,
                lost,
                detail,
                torn: false,
            },
            other => AccessError::Internal(format!("stripe {}: {other}", s.stripe)),
        }
    }

    /// Marks `column` failed in memory; returns the outcome and the generation to make durable.
    fn mark_failed(&self, column: usize) -> Result<(FailOutcome, u64), ArrayError> {
        let mut st = self.lock_states();
        let outcome = st.mark_failed(&self.layout, column)?;
        Ok((outcome, st.generation()))
    }

    /// Waits until the states of `generation` (or newer) are durable, recording them if no one
    /// else is.
    async fn make_durable(&self, generation: u64) -> Result<(), AccessError> {
        if *self.durable.borrow() >= generation {
            return Ok(());
        }
        let _one_at_a_time = self.recording.lock().await;
        if *self.durable.borrow() >= generation {
            return Ok(());
        }
        let mut snapshot = self.states();
        let takes_out = {
            let current = self
                .recorded_current
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            snapshot
                .states()
                .iter()
                .zip(current.iter())
                .any(|(s, was)| *was && !s.is_current())
        };
        if takes_out && self.config.partial_parity_log {
            // Writes issued while the column was current logged nothing for it: once its
            // failure is durable, a crash before they end would leave their stripes torn with
            // no log entry (docs/STATE.md, "Partial-parity log"). They end first; every write
            // after this sees the column out and logs.
            drop(self.write_gate.write().await);
            snapshot = self.states();
        }
        if !self.config.partial_parity_log {
            // Nothing is logged: no record may claim a log period (assembly would trust it).
            snapshot = snapshot.without_log_period();
        }
        self.recorder
            .record(&snapshot)
            .await
            .map_err(|detail| AccessError::StateNotRecorded { detail })?;
        *self
            .recorded_current
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            snapshot.states().iter().map(|s| s.is_current()).collect();
        self.durable.send_if_modified(|d| {
            let newer = *d < snapshot.generation();
            if newer {
                *d = snapshot.generation();
            }
            newer
        });
        Ok(())
    }

    /// Resync: rewrites the redundancy of every stripe from its data (parity and Q recomputed,
    /// RAID 1 primaries copied to their secondaries), `stripes_in_flight` stripes at a time, each
    /// under its whole-stripe write lock while user I/O goes on. Used after an unclean shutdown,
    /// when a write may have landed on some columns of a stripe and not on others. Unreadable
    /// blocks are repaired or recorded lost ([`Array::resync_stripe`]) and the resync goes on;
    /// the first error is answered once every stripe was tried. `progress` is told the number
    /// of stripes tried after each one.
    pub async fn resync(
        self: &Arc<Self>,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<ResyncReport, AccessError> {
        let this = self.clone();
        // Own task: a dropped caller cannot stop a resync halfway through a stripe.
        tokio::spawn(async move {
            let total = this.layout.stripes();
            let mut report = ResyncReport::default();
            let done = AtomicU64::new(0);
            let progress = &progress;
            let done_ref = &done;
            let this_ref = &this;
            let runs = (0..total).map(|stripe| async move {
                let r = this_ref.resync_stripe(stripe, false).await;
                progress(done_ref.fetch_add(1, Ordering::Relaxed) + 1);
                r
            });
            let mut results =
                futures::stream::iter(runs).buffer_unordered(this.config.stripes_in_flight.max(1));
            let mut first_error = None;
            while let Some(r) = results.next().await {
                match r {
                    Ok(done) => {
                        report.stripes += 1;
                        match done.outcome {
                            StripeOutcome::Repaired => report.repaired += 1,
                            StripeOutcome::Lost => report.lost += 1,
                            StripeOutcome::Rewritten | StripeOutcome::Skipped => {}
                        }
                        report.marked_failed.extend(done.marked_failed);
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            drop(results);
            match first_error {
                Some(e) => Err(e),
                None => Ok(report),
            }
        })
        .await
        .map_err(|e| AccessError::Internal(format!("resync task lost: {e}")))?
    }

    /// Resyncs one stripe under its whole-stripe write lock: its redundancy rewritten from its
    /// data by the parity rewrite DAG. When a data unit (RAID 1: a primary copy) answers data
    /// loss, the stripe is repaired where its redundancy allows and its unrepairable blocks are
    /// recorded lost, durably before anything is written ([`crate::resync`]). With
    /// `skip_failed_data`, a RAID 4/5/6 stripe with a data unit on a failed column is left as
    /// it was ([`StripeOutcome::Skipped`]); without it, that stripe is an error.
    pub async fn resync_stripe(
        self: &Arc<Self>,
        stripe: u64,
        skip_failed_data: bool,
    ) -> Result<StripeResync, AccessError> {
        let sb = self.layout.stripe_data_bytes();
        let map = self.layout.map(stripe * sb, sb)?;
        let lock = StripeLockRequest::whole_stripe(&self.layout, stripe, LockMode::Write);
        let locks = self
            .locks
            .lock([lock])
            .await
            .map_err(|e| AccessError::Internal(e.to_string()))?;
        let this = self.clone();
        tokio::spawn(async move {
            let mut result = StripeResync {
                outcome: StripeOutcome::Rewritten,
                marked_failed: Vec::new(),
                lost_blocks: Vec::new(),
            };
            let mut generation = 0;
            let r = this
                .resync_locked(
                    &map.stripes[0],
                    skip_failed_data,
                    &mut result,
                    &mut generation,
                )
                .await;
            // Failures the resync observed are durable before it goes on, whatever happened.
            let durable = this.make_durable(generation).await;
            drop(locks);
            r?;
            durable.map(|_| result)
        })
        .await
        .map_err(|e| AccessError::Internal(format!("resync task lost: {e}")))?
    }

    async fn resync_locked(
        &self,
        s: &StripeAccess,
        skip_failed_data: bool,
        result: &mut StripeResync,
        generation: &mut u64,
    ) -> Result<(), AccessError> {
        let sl = s.layout;
        let parity_level = self.layout.fault_tolerance() > 0
            && self.layout.level() != crate::layout::RaidLevel::Raid1;
        let data_missing = |missing: &ColumnSet| {
            parity_level && sl.data_columns().any(|(_, c)| missing.contains(c))
        };
        let mut last = String::new();
        for _ in 0..self.config.max_tries.max(1) {
            let missing = self.lock_states().missing_for(s.stripe);
            if skip_failed_data && data_missing(&missing) {
                result.outcome = result.outcome.max(StripeOutcome::Skipped);
                return Ok(());
            }
            let (done, r) = self.run_stripe(StripeOp::RewriteParity, s, None).await;
            *generation = (*generation).max(done.generation);
            result.marked_failed.extend(done.marked);
            let refused = match r {
                Ok(()) => return Ok(()),
                Err(e @ AccessError::Unrecoverable { torn: false, .. })
                    if !done.unreadable.is_empty() =>
                {
                    e
                }
                Err(e) => return Err(e),
            };
            // A data unit answered data loss: repair what the redundancy allows.
            let missing = self.lock_states().missing_for(s.stripe);
            if data_missing(&missing) {
                return Err(refused);
            }
            let deadline = self.config.engine.node_deadline;
            let table = self.components();
            let image =
                match crate::resync::read_stripe(&self.layout, &table, &sl, &missing, deadline)
                    .await
                {
                    Ok(image) => image,
                    Err(e) => {
                        last = e.error.to_string();
                        self.resync_io_error(s, e, result, generation)?;
                        continue;
                    }
                };
            let plan = crate::resync::plan(&self.layout, &sl, &image).map_err(|detail| {
                self.build_error(
                    s,
                    BuildError::Unrecoverable {
                        stripe: s.stripe,
                        lost: Vec::new(),
                        detail,
                    },
                )
            })?;
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
                    stripe = s.stripe,
                    blocks = ?plan.lost,
                    "resync: unreadable blocks cannot be rebuilt; recorded lost"
                );
                result.lost_blocks.extend(plan.lost.iter().cloned());
                // The lost set is durable before the bad blocks are overwritten.
                self.make_durable(g).await?;
            }
            if plan.repaired_blocks > 0 {
                tracing::info!(
                    stripe = s.stripe,
                    blocks = plan.repaired_blocks,
                    "resync: unreadable blocks rebuilt from redundancy"
                );
            }
            result.outcome = result.outcome.max(plan.outcome());
            let errors = crate::resync::apply(&table, &plan.writes, deadline).await;
            if errors.is_empty() {
                return Ok(());
            }
            for e in errors {
                last = e.error.to_string();
                self.resync_io_error(s, e, result, generation)?;
            }
            // A column failed on the way: the next try sees it.
        }
        Err(AccessError::RetriesExhausted {
            stripe: s.stripe,
            tries: self.config.max_tries.max(1),
            last,
        })
    }

    /// A component call of the resync's repair failed: a component fault marks the column
    /// failed (while tolerated, then the stripe is tried again); anything else is the error.
    fn resync_io_error(
        &self,
        s: &StripeAccess,
        e: crate::resync::ColumnError,
        result: &mut StripeResync,
        generation: &mut u64,
    ) -> Result<(), AccessError> {
        let crate::resync::ColumnError { column, error } = e;
        match &error.kind {
            IoErrorKind::Fenced => Err(AccessError::Fenced {
                detail: error.to_string(),
            }),
            IoErrorKind::WrongCluster => Err(AccessError::WrongCluster {
                column,
                detail: error.to_string(),
            }),
            IoErrorKind::InvalidRequest | IoErrorKind::OutOfRange => {
                Err(AccessError::StorageRefused {
                    stripe: s.stripe,
                    column,
                    kind: error.kind.as_str(),
                    detail: error.to_string(),
                })
            }
            _ => match self.mark_failed(column) {
                Ok((outcome, g)) => {
                    if outcome == FailOutcome::Marked {
                        tracing::warn!(column, %error, "component marked failed");
                        result.marked_failed.push(column);
                    }
                    *generation = (*generation).max(g);
                    Ok(())
                }
                Err(_) => Err(AccessError::Unrecoverable {
                    offset: s.volume_range.start,
                    len: s.volume_range.end - s.volume_range.start,
                    lost: vec![column],
                    detail: format!(
                        "resync: column {column}: {error}; more columns failed than {} tolerates",
                        self.layout.level()
                    ),
                    torn: false,
                }),
            },
        }
    }

    /// Administrator's fail (raidctl -f): marks `column` failed if the layout survives it, and
    /// returns once the new states are durable.
    pub async fn fail_component(&self, column: usize) -> Result<FailOutcome, AccessError> {
        let (outcome, generation) = self.mark_failed(column)?;
        self.make_durable(generation).await?;
        Ok(outcome)
    }

    /// Repairs `bad` blocks: for each run of consecutive bad blocks, under the stripe's write
    /// lock, the blocks are read again with their column unreadable (rebuilt from redundancy,
    /// or RAID 1's other copy) and written back to that column, exactly those blocks, only when
    /// the stripe is in sync (no resync pending, no lost blocks) and the column still current.
    /// A repair that fails is logged (the read already has its bytes); a failure it marks is
    /// made durable before this returns, and that failing fails the caller.
    async fn repair(&self, bad: &[BadBlocks]) -> Result<(), AccessError> {
        for b in bad {
            let mut blocks = b.blocks.clone();
            blocks.sort_unstable();
            blocks.dedup();
            let mut runs: Vec<std::ops::Range<u64>> = Vec::new();
            for blk in blocks {
                crate::resync::push_block(&mut runs, blk);
            }
            for run in runs {
                let Some(range) = self.volume_range_of(b.stripe, b.column, run.clone()) else {
                    continue;
                };
                let map = self.layout.map(range.start, range.end - range.start)?;
                let Some(s) = map.stripes.first() else {
                    continue;
                };
                let lock = StripeLockRequest::whole_stripe(&self.layout, b.stripe, LockMode::Write);
                let locks = self
                    .locks
                    .lock([lock])
                    .await
                    .map_err(|e| AccessError::Internal(e.to_string()))?;
                let (done, r) = self
                    .run_stripe(StripeOp::Repair { column: b.column }, s, None)
                    .await;
                let durable = self.make_durable(done.generation).await;
                drop(locks);
                durable?;
                match r {
                    Ok(()) => {
                        tracing::info!(stripe = b.stripe, column = b.column, blocks = ?run, "blocks that answered data loss repaired")
                    }
                    Err(error) => {
                        tracing::warn!(stripe = b.stripe, column = b.column, blocks = ?run, %error, "blocks that answered data loss not repaired")
                    }
                }
            }
        }
        Ok(())
    }

    /// The volume bytes of component blocks `blocks` of `column` in `stripe` (a data unit, or
    /// its RAID 1 copy), through [`Layout::resolve`]; `None` for blocks that hold no data of
    /// that stripe or do not map to one run of volume bytes.
    fn volume_range_of(
        &self,
        stripe: u64,
        column: usize,
        blocks: std::ops::Range<u64>,
    ) -> Option<std::ops::Range<u64>> {
        use crate::layout::ComponentContent;
        let bs = self.layout.geometry().block_size();
        let volume_offset = |block: u64| match self.layout.resolve(column, block * bs).ok()? {
            ComponentContent::Data { volume_offset }
            | ComponentContent::Mirror { volume_offset } => Some(volume_offset),
            _ => None,
        };
        let start = volume_offset(blocks.start)?;
        let last = volume_offset(blocks.end.checked_sub(1)?)?;
        let len = (blocks.end - blocks.start) * bs;
        (self.layout.locate(start).ok()?.stripe == stripe && last + bs - start == len)
            .then_some(start..start + len)
    }

    /// Replays the partial-parity log after a crash while degraded ([`crate::ppl`]): reads the
    /// log areas of the columns not failed, applies the newest entry of the current log period
    /// to each stripe, and marks lost (never serves wrong bytes) the stripes whose newest entry
    /// could not be applied. Run at assembly, before any access; the caller makes the lost set
    /// durable.
    ///
    /// A log area that cannot be read fails the replay before anything is applied
    /// ([`crate::ppl::UnreadableLog`]), unless `force`: then the entries of the other columns
    /// are applied and the report names the columns not read ([`ReplayReport::unread`]).
    ///
    /// [`ReplayReport::unread`]: crate::ppl::ReplayReport::unread
    pub async fn replay_log(
        &self,
        force: bool,
    ) -> Result<crate::ppl::ReplayReport, crate::ppl::UnreadableLog> {
        if !crate::ppl::level_logs(self.layout.level()) {
            // RAID 1 logs nothing (no write hole): no log area to read.
            return Ok(crate::ppl::ReplayReport::default());
        }
        let states = self.states();
        let table = self.components();
        let read_from: Vec<usize> = (0..self.layout.columns())
            .filter(|&c| states.get(c).is_some_and(|s| !s.is_failed()))
            .collect();
        let (entries, found, errors) =
            crate::ppl::newest_entries(&self.layout, &table, &read_from, states.log_period()).await;
        let unread: Vec<(usize, String)> = errors
            .into_iter()
            .map(|(column, e)| (column, e.to_string()))
            .collect();
        for (column, error) in &unread {
            tracing::warn!(column, %error, force, "partial-parity log not readable on this column");
        }
        if !unread.is_empty() && !force {
            return Err(crate::ppl::UnreadableLog(unread));
        }
        let mut report = crate::ppl::replay(&self.layout, &table, &states, entries).await;
        report.entries = found;
        report.unread = unread;
        for (stripe, why) in &report.unapplied {
            tracing::warn!(stripe, reason = %why, "partial-parity log entry not applied: stripe marked lost");
            self.mark_stripe_lost(*stripe);
        }
        Ok(report)
    }

    /// The parity map: dirty regions, and the regions awaiting their resync. A stripe in a
    /// region awaiting its resync is served without ever making its bytes look more certain
    /// than they are: a RAID 1 read takes the resync's source copy, and a degraded read does not
    /// write rebuilt blocks back.
    pub fn parity_map(&self) -> &ParityMap {
        &self.parity_map
    }

    /// Whether the parity map is held (no region cleared): a column is not current, so the
    /// map is the written-while-failed bitmap its re-add resyncs from (`docs/STATE.md`); or a
    /// column is in copyback, so the map names every region written since the copy started,
    /// which a copyback resumed after a restart copies again below its checkpoint (a write
    /// there may have reached the spare only: cut by the crash, or made before the copy
    /// resumed).
    pub fn map_held(&self) -> bool {
        let st = self.lock_states();
        (0..self.layout.columns()).any(|c| {
            st.get(c)
                .is_some_and(|s| !s.is_current() || s == ComponentState::Copyback)
        })
    }

    /// Makes a copy of the parity map durable, at least of `version` (`None`: the map as it is
    /// now), through the recorder; serialised, so a copy never lands over a newer one.
    pub async fn persist_map(&self, version: Option<u64>) -> Result<(), AccessError> {
        if version.is_some_and(|v| self.parity_map.is_durable(v)) {
            return Ok(());
        }
        let _one_at_a_time = self.map_writing.lock().await;
        if version.is_some_and(|v| self.parity_map.is_durable(v)) {
            return Ok(());
        }
        let snapshot = self.parity_map.snapshot();
        self.recorder
            .record_map(&snapshot)
            .await
            .map_err(|detail| AccessError::StateNotRecorded { detail })?;
        self.parity_map.persisted(snapshot.version);
        Ok(())
    }

    /// Clears the regions quiet for `cooldown` and persists the map if any was; answers
    /// whether one was. Nothing is cleared while a column is not current
    /// ([`Array::map_held`]).
    pub async fn cool_parity_map(
        &self,
        cooldown: std::time::Duration,
    ) -> Result<bool, AccessError> {
        if !self.parity_map.cool(cooldown, self.map_held()) {
            return Ok(false);
        }
        self.persist_map(None).await?;
        Ok(true)
    }

    /// Records that `column`'s storage node is gone (`true`, for a column that could not be
    /// failed) or answers again (`false`). Not persisted: see [`ComponentStates::set_gone`].
    pub fn set_gone(&self, column: usize, gone: bool) -> bool {
        let mut st = self.lock_states();
        let changed = st.set_gone(column, gone);
        if changed {
            tracing::warn!(column, gone, state = %st.array_state(&self.layout), "column gone state changed");
        }
        changed
    }

    /// Sets a column's state (rebuild completion, an administrator's override) and makes it
    /// durable.
    pub async fn set_component_state(
        &self,
        column: usize,
        state: ComponentState,
    ) -> Result<ComponentState, AccessError> {
        let (previous, generation) = {
            let mut st = self.lock_states();
            let previous = st.transition(&self.layout, column, state)?;
            (previous, st.generation())
        };
        self.make_durable(generation).await?;
        Ok(previous)
    }

    /// Makes every acknowledged write of every live component durable. A component whose flush
    /// fails is marked failed (while tolerated); more failures than that fail the flush. Every
    /// state change made before the flush is durable when it returns.
    pub async fn flush(&self) -> Result<(), AccessError> {
        let start = std::time::Instant::now();
        let r = self.flush_components().await;
        let s = &self.stats;
        s.flush_latency.observe(start.elapsed());
        match &r {
            Ok(()) => s.flushes.fetch_add(1, Ordering::Relaxed),
            Err(_) => s.flush_errors.fetch_add(1, Ordering::Relaxed),
        };
        r
    }

    /// A place among the accesses running ([`ArrayConfig::admission`]), waited for in its
    /// queue; refused at once when the queue is full.
    async fn admit(&self) -> Result<Option<Admitted>, AccessError> {
        match &self.config.admission {
            Some(admission) => Ok(Some(admission.admit().await?)),
            None => Ok(None),
        }
    }

    async fn flush_components(&self) -> Result<(), AccessError> {
        let _admitted = self.admit().await?;
        // A flush is also a barrier for the state: every change made before it (a column
        // failed by another access) is durable when it returns.
        let (failed, before) = {
            let st = self.lock_states();
            (st.degraded_columns(), st.generation())
        };
        let table = self.components();
        let flushes = table
            .iter()
            .enumerate()
            .filter(|(c, _)| !failed.contains(*c))
            .map(|(c, io)| async move { (c, io.flush().await) });
        let results = futures::future::join_all(flushes).await;
        let mut generation = before;
        let mut errors = Vec::new();
        for (column, r) in results {
            if let Err(e) = r {
                match self.mark_failed(column) {
                    Ok((_, g)) => generation = generation.max(g),
                    Err(_) => errors.push((column, e.to_string())),
                }
            }
        }
        self.make_durable(generation).await?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(AccessError::Unrecoverable {
                offset: 0,
                len: self.layout.capacity(),
                lost: errors.iter().map(|(c, _)| *c).collect(),
                detail: format!("flush failed beyond the fault tolerance: {errors:?}"),
                torn: false,
            })
        }
    }
}

/// `call` on `io`, bounded by the engine's `deadline` unless `io` bounds its calls itself.
/// Why component `c` cannot hold a column of `layout` (another block size, too few blocks);
/// `None` when it can.
fn misfit(layout: &Layout, c: &dyn crate::io::ComponentIo) -> Option<String> {
    let g = layout.geometry();
    (u64::from(c.block_size()) != g.block_size() || c.block_count() < g.used_blocks_per_column())
        .then(|| {
            format!(
                "component {} has {} blocks of {} bytes; the layout needs {} blocks of {}",
                c.id(),
                c.block_count(),
                c.block_size(),
                g.used_blocks_per_column(),
                g.block_size()
            )
        })
}

async fn bounded(
    io: &dyn crate::io::ComponentIo,
    target: &crate::dag::DiskTarget,
    deadline: std::time::Duration,
    what: &'static str,
    call: BoxFuture<'_, Result<(), crate::io::IoError>>,
) -> Result<(), crate::io::IoError> {
    if io.own_deadline().is_some() {
        return call.await;
    }
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| {
            Err(crate::io::IoError::new(
                IoErrorKind::Timeout,
                io.id(),
                target.start_block,
                u64::from(target.block_count),
                format!("{what}: no answer within the node deadline of {deadline:?}"),
            ))
        })
}

mod rebuild;
pub use rebuild::{ReconstructBatch, StripeRebuild};
mod scrub;
pub use scrub::{CheckOutcome, StripeCheck, UnitBlocks};

#[cfg(test)]
mod tests;
