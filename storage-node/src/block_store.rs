//! The block store of one component: checksummed block reads and writes, flush, and the two-slot
//! label and metadata areas, over a [`StorageBackend`].
//!
//! Invariants:
//! - A block's data and its checksum are written under the write lock of the block's region, and
//!   read under its read lock, so a reader never pairs new data with an old checksum. Region locks
//!   are taken in increasing order, so overlapping accesses never deadlock.
//! - A write is acknowledged only after a sync that started after its pwrite (group commit).
//! - After a failed write or sync the component is failed for good; every later operation answers
//!   [`NodeError::ComponentFailed`], and only once the failure marker is durable (written, file
//!   and directory fsynced), so a component that answered "failed" never reopens as healthy.
//! - Reads verify every block and answer [`NodeError::ChecksumMismatch`] naming the bad blocks;
//!   bad bytes are never returned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use tracing::Instrument;

use crate::backend::{StorageBackend, off_async};
use crate::checksum::block_checksum;
use crate::error::NodeError;
use crate::failure_marker::FailureMarker;
use crate::group_commit::GroupCommit;
use crate::layout::{ComponentHeader, Layout};
use crate::migrate;
use crate::slot::{self, Area, SlotRecord};

/// Region locks per component (a region is [`REGION_BYTES`] of blocks; regions share locks
/// modulo this number).
const LOCK_STRIPES: usize = 256;
/// Bytes of blocks covered by one region lock.
const REGION_BYTES: u64 = 64 * 1024;
/// Largest read served on the async worker when its bytes are cached (copy + CRC-32C of 1 MiB
/// take tens of microseconds; larger reads go to the blocking pool).
const INLINE_READ_MAX: usize = 1 << 20;
/// Largest write whose pwrites run on the async worker: a buffered pwrite of up to 64 KiB into
/// the page cache takes microseconds, less than handing it to the blocking pool and back.
const INLINE_WRITE_MAX: usize = 64 * 1024;
/// Checksum entries computed and written per chunk when a component is created.
const INIT_CHUNK_BLOCKS: u64 = 16 * 1024;

/// Health of a component as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentHealth {
    /// Serving.
    Optimal,
    /// Failed for good, with the reason.
    Failed(String),
}

/// One component's blocks, checksums and slot areas.
pub struct BlockStore {
    header: ComponentHeader,
    layout: Layout,
    backend: Arc<dyn StorageBackend>,
    region_blocks: u64,
    locks: Vec<Arc<RwLock<()>>>,
    commit: GroupCommit,
    label_lock: tokio::sync::Mutex<()>,
    metadata_lock: tokio::sync::Mutex<()>,
    epoch_lock: tokio::sync::Mutex<()>,
    /// The log area: written under the write lock (the pwrite only, not the wait for its sync),
    /// read under the read lock, so a read never returns half of a concurrent log write.
    log_lock: RwLock<()>,
    /// The durable fence epoch of the component (its epoch slots; 0 if never fenced).
    fence_epoch: AtomicU64,
    /// Where the failure is recorded for the next start; `None` in unit tests.
    failure_marker: Option<FailureMarker>,
    /// Set once the failure is recorded (or the attempt failed, with why): the failure is
    /// answered only then. Set at open for a component that opens failed.
    failure_recorded: tokio::sync::OnceCell<Result<(), String>>,
    /// Bytes of blocks read and checked, and written durably (the `/metrics` counters).
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    /// Bytes of the log area read, and written durably.
    log_bytes_read: AtomicU64,
    log_bytes_written: AtomicU64,
}

/// Alignment of log-area offsets and lengths (the coordinator's `LOG_ALIGN`).
pub const LOG_ALIGN: u64 = 4096;

enum Guards {
    // Held only for their Drop.
    #[allow(dead_code)]
    Read(Vec<OwnedRwLockReadGuard<()>>),
    #[allow(dead_code)]
    Write(Vec<OwnedRwLockWriteGuard<()>>),
}

fn join_error(context: &str, err: tokio::task::JoinError) -> NodeError {
    NodeError::io(context.to_owned(), std::io::Error::other(err))
}

impl BlockStore {
    /// Writes the header and the checksums of the all-zero blocks of a new component, whose
    /// backend is already [`Layout::file_len`] bytes of zeros, and syncs. Blocking.
    pub fn initialize(
        backend: &dyn StorageBackend,
        header: &ComponentHeader,
    ) -> std::io::Result<()> {
        let layout = header
            .layout()
            .ok_or_else(|| std::io::Error::other("component size overflows"))?;
        let zeros = vec![0u8; header.block_size as usize];
        let mut first = 0;
        while first < header.block_count {
            let n = INIT_CHUNK_BLOCKS.min(header.block_count - first);
            let mut crcs = Vec::with_capacity(n as usize * 4);
            for index in first..first + n {
                crcs.extend_from_slice(&block_checksum(header.serial, index, &zeros).to_le_bytes());
            }
            backend.write_at(&crcs, layout.checksum_entry_offset(first))?;
            first += n;
        }
        // The header goes last: a file with a valid header is a fully initialised component.
        backend.sync()?;
        backend.write_at(&header.encode(), 0)?;
        backend.sync()
    }

    /// Opens an initialised component, migrating a format 1 file to format 2 first (see
    /// [`crate::migrate`]); a component whose `failure_marker` records a failure opens failed.
    /// Blocking. `Err` says what is wrong with the file.
    pub fn open(
        backend: Arc<dyn StorageBackend>,
        failure_marker: Option<FailureMarker>,
    ) -> Result<Self, String> {
        let failure = failure_marker.as_ref().and_then(FailureMarker::load);
        let migrate::OpenedHeader { header, layout, .. } = migrate::open_header(backend.as_ref())?;
        let mut epoch_slots = vec![0u8; 2 * Area::Epoch.slot_bytes()];
        backend
            .read_at(&mut epoch_slots, layout.epoch_offset)
            .map_err(|e| format!("cannot read the fence epoch: {e}"))?;
        let (a, b) = epoch_slots.split_at(Area::Epoch.slot_bytes());
        let fence_epoch = match slot::newest(Area::Epoch, [a, b]).0 {
            None => 0,
            Some(record) => decode_epoch(&record.payload)
                .ok_or_else(|| "the fence epoch record is not 8 bytes".to_owned())?,
        };
        let region_blocks = (REGION_BYTES / u64::from(header.block_size)).max(1);
        let regions = header.block_count.div_ceil(region_blocks);
        let stripes = (regions.min(LOCK_STRIPES as u64)) as usize;
        let commit = GroupCommit::new(backend.clone());
        let recorded = failure.is_some();
        if let Some(reason) = failure {
            commit.fail(reason);
        }
        Ok(Self {
            header,
            layout,
            backend,
            region_blocks,
            locks: (0..stripes).map(|_| Arc::new(RwLock::new(()))).collect(),
            commit,
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            log_bytes_read: AtomicU64::new(0),
            log_bytes_written: AtomicU64::new(0),
            log_lock: RwLock::new(()),
            label_lock: tokio::sync::Mutex::new(()),
            metadata_lock: tokio::sync::Mutex::new(()),
            epoch_lock: tokio::sync::Mutex::new(()),
            fence_epoch: AtomicU64::new(fence_epoch),
            failure_marker,
            failure_recorded: if recorded {
                tokio::sync::OnceCell::new_with(Some(Ok(())))
            } else {
                tokio::sync::OnceCell::new()
            },
        })
    }

    /// The component's fixed properties.
    pub fn header(&self) -> &ComponentHeader {
        &self.header
    }

    /// Where its regions lie.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The component's durable fence epoch (0 if it was never fenced on its own).
    pub fn fence_epoch(&self) -> u64 {
        self.fence_epoch.load(Ordering::Acquire)
    }

    /// Makes `epoch` the component's fence epoch, durably, if it is higher; returns the fence
    /// epoch now in force. Updates of the epoch are serialised.
    pub async fn raise_fence_epoch(&self, epoch: u64) -> Result<u64, NodeError> {
        let _one_at_a_time = self.epoch_lock.lock().await;
        let current = self.fence_epoch();
        if epoch <= current {
            return Ok(current);
        }
        self.write_area(Area::Epoch, &epoch.to_le_bytes()).await?;
        self.fence_epoch.store(epoch, Ordering::Release);
        Ok(epoch)
    }

    /// Serving or failed.
    pub fn health(&self) -> ComponentHealth {
        match self.commit.failure() {
            None => ComponentHealth::Optimal,
            Some(reason) => ComponentHealth::Failed(reason),
        }
    }

    /// Syncs completed so far.
    pub fn syncs_completed(&self) -> u64 {
        self.commit.syncs_completed()
    }

    /// Bytes of blocks read (and verified) so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes of blocks written and made durable so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Bytes of the log area read so far.
    pub fn log_bytes_read(&self) -> u64 {
        self.log_bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes of the log area written and made durable so far.
    pub fn log_bytes_written(&self) -> u64 {
        self.log_bytes_written.load(Ordering::Relaxed)
    }

    fn failed_error(&self, reason: String) -> NodeError {
        NodeError::ComponentFailed {
            component: self.header.id.clone(),
            reason,
        }
    }

    /// Refuses every operation once the component failed, answering only once the failure is
    /// recorded.
    pub async fn ensure_serving(&self) -> Result<(), NodeError> {
        match self.commit.failure() {
            None => Ok(()),
            Some(_) => Err(self.failed_answer().await),
        }
    }

    /// Fails the component for good: from now on nothing not yet durable is acknowledged. Returns
    /// the answer once the failure is recorded.
    async fn fail(&self, reason: String) -> NodeError {
        self.commit.fail(reason);
        self.failed_answer().await
    }

    /// The answer of a failed component, once its failure is recorded for the next start (every
    /// caller waits for the same, single recording).
    async fn failed_answer(&self) -> NodeError {
        let reason = self.commit.failure().unwrap_or_default();
        let recorded = self
            .failure_recorded
            .get_or_init(|| self.record_failure(reason.clone()))
            .await;
        match recorded {
            Ok(()) => self.failed_error(reason),
            Err(why) => self.failed_error(format!("{reason} ({why})")),
        }
    }

    /// Records the failure durably in the failure marker.
    async fn record_failure(&self, reason: String) -> Result<(), String> {
        tracing::error!(component = self.header.id.as_str(), %reason, "component failed");
        let Some(marker) = self.failure_marker.clone() else {
            return Ok(());
        };
        let written =
            crate::backend::off_async(marker.blocks(), move || marker.record(&reason)).await;
        let why = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => format!("the failure could not be recorded: {err}"),
            Err(join) => format!("the failure could not be recorded: {join}"),
        };
        tracing::error!(component = self.header.id.as_str(), %why, "component failure not recorded");
        Err(why)
    }

    /// Checks a block range: at least one block, inside the component. Returns the byte length.
    pub fn check_range(&self, start: u64, count: u64) -> Result<u64, NodeError> {
        if count == 0 {
            return Err(NodeError::InvalidArgument(format!(
                "component {:?}: block_count must be at least 1",
                self.header.id
            )));
        }
        match start.checked_add(count) {
            Some(end) if end <= self.header.block_count => {}
            _ => {
                return Err(NodeError::OutOfRange {
                    component: self.header.id.clone(),
                    start,
                    count,
                    block_count: self.header.block_count,
                });
            }
        }
        Ok(count * u64::from(self.header.block_size))
    }

    /// Checks a write of `len` bytes at `start`: a whole, non-zero number of blocks, in range.
    /// Returns the number of blocks.
    pub fn check_write(&self, start: u64, len: usize) -> Result<u64, NodeError> {
        let block_size = u64::from(self.header.block_size);
        let len = len as u64;
        if len == 0 || !len.is_multiple_of(block_size) {
            return Err(NodeError::InvalidArgument(format!(
                "component {:?}: data of {len} bytes is not a whole, non-zero number of {block_size}-byte blocks",
                self.header.id
            )));
        }
        let count = len / block_size;
        self.check_range(start, count)?;
        Ok(count)
    }

    /// Lock stripe indices covering blocks `start..start + count`, ascending and distinct.
    fn stripes(&self, start: u64, count: u64) -> Vec<usize> {
        let first = start / self.region_blocks;
        let last = (start + count - 1) / self.region_blocks;
        let n = self.locks.len() as u64;
        if last - first + 1 >= n {
            return (0..self.locks.len()).collect();
        }
        let mut stripes: Vec<usize> = (first..=last).map(|r| (r % n) as usize).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
    }

    async fn lock(&self, start: u64, count: u64, write: bool) -> Guards {
        let stripes = self.stripes(start, count);
        if write {
            let mut guards = Vec::with_capacity(stripes.len());
            for s in stripes {
                guards.push(self.locks[s].clone().write_owned().await);
            }
            Guards::Write(guards)
        } else {
            let mut guards = Vec::with_capacity(stripes.len());
            for s in stripes {
                guards.push(self.locks[s].clone().read_owned().await);
            }
            Guards::Read(guards)
        }
    }

    /// Reads `count` blocks from `start`, verifying every checksum. Traced as `disk.read`.
    pub async fn read_blocks(&self, start: u64, count: u64) -> Result<Bytes, NodeError> {
        let span = tracing::info_span!(
            "disk.read",
            component = self.header.id.as_str(),
            start_block = start,
            blocks = count,
            bytes = count * u64::from(self.header.block_size),
        );
        let r = self
            .read_blocks_untraced(start, count)
            .instrument(span)
            .await;
        if let Ok(data) = &r {
            self.bytes_read
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        r
    }

    async fn read_blocks_untraced(&self, start: u64, count: u64) -> Result<Bytes, NodeError> {
        self.ensure_serving().await?;
        let len = self.check_range(start, count)? as usize;
        let guards = self.lock(start, count, false).await;
        let layout = self.layout;
        let serial = self.header.serial;
        let verify = move |data: &[u8], crcs: &[u8]| -> Vec<u64> {
            data.chunks_exact(layout.block_size as usize)
                .zip(crcs.chunks_exact(4))
                .enumerate()
                .filter(|(i, (block, stored))| {
                    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
                    block_checksum(serial, start + *i as u64, block) != stored
                })
                .map(|(i, _)| start + i as u64)
                .collect()
        };
        // Fast path: a cached read of at most 1 MiB is copied and verified right here.
        let cached = if len <= INLINE_READ_MAX {
            let mut data = vec![0u8; len];
            let mut crcs = vec![0u8; count as usize * 4];
            match self
                .backend
                .read_cached(&mut data, layout.block_offset(start))
                .and_then(|hit| {
                    Ok(hit
                        && self
                            .backend
                            .read_cached(&mut crcs, layout.checksum_entry_offset(start))?)
                }) {
                Ok(true) => {
                    let bad = verify(&data, &crcs);
                    Some(Ok(Ok((data, bad))))
                }
                Ok(false) => None,
                Err(err) => Some(Ok(Err(err))),
            }
        } else {
            None
        };
        let result = match cached {
            Some(result) => result,
            None => {
                let backend = self.backend.clone();
                off_async(self.backend.blocks(), move || {
                    let mut data = vec![0u8; len];
                    backend.read_at(&mut data, layout.block_offset(start))?;
                    let mut crcs = vec![0u8; count as usize * 4];
                    backend.read_at(&mut crcs, layout.checksum_entry_offset(start))?;
                    let bad = verify(&data, &crcs);
                    Ok::<_, std::io::Error>((data, bad))
                })
                .await
            }
        };
        drop(guards);
        let (data, bad) = match result {
            Ok(Ok(read)) => read,
            Ok(Err(err)) => {
                return Err(NodeError::io(
                    format!(
                        "component {:?}: reading blocks {start}..+{count}",
                        self.header.id
                    ),
                    err,
                ));
            }
            Err(join) => return Err(join_error("read task", join)),
        };
        if !bad.is_empty() {
            tracing::warn!(
                component = self.header.id.as_str(),
                ?bad,
                "checksum mismatch"
            );
            return Err(NodeError::ChecksumMismatch {
                component: self.header.id.clone(),
                blocks: bad,
            });
        }
        Ok(Bytes::from(data))
    }

    /// Writes whole blocks from `start`; returns once they are durable. Traced as
    /// `disk.write` (the pwrites and the wait for the group commit's fdatasync).
    pub async fn write_blocks(&self, start: u64, data: Bytes) -> Result<(), NodeError> {
        let len = data.len() as u64;
        let span = tracing::info_span!(
            "disk.write",
            component = self.header.id.as_str(),
            start_block = start,
            blocks = len / u64::from(self.header.block_size),
            bytes = len,
        );
        let r = self
            .write_blocks_untraced(start, data)
            .instrument(span)
            .await;
        if r.is_ok() {
            self.bytes_written.fetch_add(len, Ordering::Relaxed);
        }
        r
    }

    async fn write_blocks_untraced(&self, start: u64, data: Bytes) -> Result<(), NodeError> {
        self.ensure_serving().await?;
        let count = self.check_write(start, data.len())?;
        let data_len = data.len();
        let guards = self.lock(start, count, true).await;
        let backend = self.backend.clone();
        let layout = self.layout;
        let serial = self.header.serial;
        let apply = move || {
            let mut crcs = Vec::with_capacity(count as usize * 4);
            for (i, block) in data.chunks_exact(layout.block_size as usize).enumerate() {
                crcs.extend_from_slice(
                    &block_checksum(serial, start + i as u64, block).to_le_bytes(),
                );
            }
            backend.write_at(&data, layout.block_offset(start))?;
            backend.write_at(&crcs, layout.checksum_entry_offset(start))
        };
        let result = if data_len <= INLINE_WRITE_MAX {
            Ok(apply())
        } else {
            off_async(self.backend.blocks(), apply).await
        };
        let ticket = self.commit.ticket();
        drop(guards);
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(self.fail(format!("write failed: {err}")).await),
            Err(join) => return Err(self.fail(format!("write task failed: {join}")).await),
        }
        self.wait_durable(ticket).await
    }

    async fn wait_durable(&self, ticket: u64) -> Result<(), NodeError> {
        match self.commit.wait_durable(ticket).await {
            Ok(()) => Ok(()),
            Err(reason) => Err(self.fail(reason).await),
        }
    }

    /// Makes every write that completed before this call durable. Traced as `disk.flush`.
    pub async fn flush(&self) -> Result<(), NodeError> {
        self.ensure_serving().await?;
        let span = tracing::info_span!("disk.flush", component = self.header.id.as_str());
        let ticket = self.commit.ticket();
        self.wait_durable(ticket).instrument(span).await
    }

    /// Checks a log-area access of `len` bytes at byte `offset` of the log area: the component
    /// has a log area, offset and length are multiples of [`LOG_ALIGN`], the length is not zero
    /// and the range lies inside the area.
    pub fn check_log(&self, offset: u64, len: u64) -> Result<(), NodeError> {
        let id = &self.header.id;
        let log_bytes = self.layout.log_bytes;
        if log_bytes == 0 {
            return Err(NodeError::InvalidArgument(format!(
                "component {id:?} has no log area (a format 1 component file)"
            )));
        }
        if !offset.is_multiple_of(LOG_ALIGN) {
            return Err(NodeError::InvalidArgument(format!(
                "component {id:?}: log offset {offset} is not a multiple of {LOG_ALIGN}"
            )));
        }
        if len == 0 || !len.is_multiple_of(LOG_ALIGN) {
            return Err(NodeError::InvalidArgument(format!(
                "component {id:?}: a log access of {len} bytes is not a non-zero multiple of {LOG_ALIGN}"
            )));
        }
        if offset.checked_add(len).is_none_or(|end| end > log_bytes) {
            return Err(NodeError::LogOutOfRange {
                component: id.clone(),
                offset,
                len,
                log_bytes,
            });
        }
        Ok(())
    }

    /// Reads `len` bytes at byte `offset` of the log area (opaque bytes: the coordinator checks
    /// its own records). Traced as `disk.read_log`.
    pub async fn read_log(&self, offset: u64, len: u64) -> Result<Bytes, NodeError> {
        let span = tracing::info_span!(
            "disk.read_log",
            component = self.header.id.as_str(),
            offset,
            bytes = len,
        );
        let r = self.read_log_untraced(offset, len).instrument(span).await;
        if let Ok(data) = &r {
            self.log_bytes_read
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        r
    }

    async fn read_log_untraced(&self, offset: u64, len: u64) -> Result<Bytes, NodeError> {
        self.ensure_serving().await?;
        self.check_log(offset, len)?;
        let at = self.layout.log_offset + offset;
        let _guard = self.log_lock.read().await;
        let backend = self.backend.clone();
        let result = off_async(self.backend.blocks(), move || {
            let mut data = vec![0u8; len as usize];
            backend.read_at(&mut data, at)?;
            Ok::<_, std::io::Error>(data)
        })
        .await;
        match result {
            Ok(Ok(data)) => Ok(Bytes::from(data)),
            Ok(Err(err)) => Err(NodeError::io(
                format!(
                    "component {:?}: reading log bytes {offset}..+{len}",
                    self.header.id
                ),
                err,
            )),
            Err(join) => Err(join_error("log read task", join)),
        }
    }

    /// Writes `data` at byte `offset` of the log area; returns once it is durable, through the
    /// same group commit (and, in fault-injection mode, the same volatile cache) as block
    /// writes. Traced as `disk.write_log`.
    pub async fn write_log(&self, offset: u64, data: Bytes) -> Result<(), NodeError> {
        let len = data.len() as u64;
        let span = tracing::info_span!(
            "disk.write_log",
            component = self.header.id.as_str(),
            offset,
            bytes = len,
        );
        let r = self.write_log_untraced(offset, data).instrument(span).await;
        if r.is_ok() {
            self.log_bytes_written.fetch_add(len, Ordering::Relaxed);
        }
        r
    }

    async fn write_log_untraced(&self, offset: u64, data: Bytes) -> Result<(), NodeError> {
        self.ensure_serving().await?;
        self.check_log(offset, data.len() as u64)?;
        let at = self.layout.log_offset + offset;
        let guard = self.log_lock.write().await;
        let backend = self.backend.clone();
        let inline = data.len() <= INLINE_WRITE_MAX;
        let apply = move || backend.write_at(&data, at);
        let result = if inline {
            Ok(apply())
        } else {
            off_async(self.backend.blocks(), apply).await
        };
        // Taken after the pwrite: only a sync that starts after it acknowledges it.
        let ticket = self.commit.ticket();
        drop(guard);
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(self.fail(format!("log write failed: {err}")).await),
            Err(join) => return Err(self.fail(format!("log write task failed: {join}")).await),
        }
        self.wait_durable(ticket).await
    }

    fn area_offset(&self, area: Area) -> u64 {
        match area {
            Area::Label => self.layout.label_offset,
            Area::Metadata => self.layout.metadata_offset,
            Area::Epoch => self.layout.epoch_offset,
        }
    }

    fn area_lock(&self, area: Area) -> &tokio::sync::Mutex<()> {
        match area {
            Area::Label => &self.label_lock,
            Area::Metadata => &self.metadata_lock,
            // Serialised by `raise_fence_epoch`'s own lock.
            Area::Epoch => &self.epoch_lock,
        }
    }

    async fn read_area(&self, area: Area) -> Result<(Option<SlotRecord>, usize), NodeError> {
        let backend = self.backend.clone();
        let offset = self.area_offset(area);
        let result = tokio::task::spawn_blocking(move || {
            let mut both = vec![0u8; 2 * area.slot_bytes()];
            backend.read_at(&mut both, offset)?;
            let (a, b) = both.split_at(area.slot_bytes());
            Ok::<_, std::io::Error>(slot::newest(area, [a, b]))
        })
        .await;
        match result {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(err)) => Err(NodeError::io(
                format!(
                    "component {:?}: reading the {}",
                    self.header.id,
                    area.name()
                ),
                err,
            )),
            Err(join) => Err(join_error("slot read task", join)),
        }
    }

    /// The newest complete version of `area`, if it was ever written.
    pub async fn read_slot(&self, area: Area) -> Result<Option<SlotRecord>, NodeError> {
        self.ensure_serving().await?;
        let _area = self.area_lock(area).lock().await;
        Ok(self.read_area(area).await?.0)
    }

    /// Checks a slot payload's size.
    pub fn check_slot_payload(&self, area: Area, len: usize) -> Result<(), NodeError> {
        if len > area.max_payload() {
            return Err(NodeError::TooLarge {
                what: match area {
                    Area::Label => "label payload",
                    Area::Metadata => "metadata payload",
                    Area::Epoch => "fence epoch payload",
                },
                bytes: len as u64,
                limit: area.max_payload() as u64,
            });
        }
        Ok(())
    }

    /// Atomically replaces `area` with `payload`; returns the new sequence once durable.
    pub async fn write_slot(&self, area: Area, payload: &[u8]) -> Result<u64, NodeError> {
        // Held until durable: a second update must not overwrite the slot holding the last
        // durable version while the first update is still volatile.
        let _area = self.area_lock(area).lock().await;
        self.write_area(area, payload).await
    }

    /// [`BlockStore::write_slot`] under the area's lock, which the caller holds.
    async fn write_area(&self, area: Area, payload: &[u8]) -> Result<u64, NodeError> {
        self.ensure_serving().await?;
        self.check_slot_payload(area, payload.len())?;
        let (current, target) = self.read_area(area).await?;
        let sequence = current.map_or(1, |r| r.sequence + 1);
        let record = slot::encode(area, sequence, payload);
        let offset = self.area_offset(area) + (target * area.slot_bytes()) as u64;
        let backend = self.backend.clone();
        let result = off_async(self.backend.blocks(), move || {
            backend.write_at(&record, offset)
        })
        .await;
        let ticket = self.commit.ticket();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                return Err(self
                    .fail(format!("{} write failed: {err}", area.name()))
                    .await);
            }
            Err(join) => return Err(self.fail(format!("slot write task failed: {join}")).await),
        }
        self.wait_durable(ticket).await?;
        Ok(sequence)
    }
}

fn decode_epoch(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.try_into().ok()?))
}

#[cfg(test)]
mod tests;
