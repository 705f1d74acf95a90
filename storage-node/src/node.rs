//! A storage node: its data directory, its components, fencing and fault injection.
//!
//! Every operation is checked fully (cluster, component, size, range) before anything touches the
//! disk, then meets the injected faults, then is admitted by fencing at the moment it is applied:
//! its epoch must be at least max(node epoch, component fence epoch). Reads that carry no
//! fencing (clients older than protocol version 2) are served unchecked.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::backend::{FileBackend, StorageBackend, preallocate};
use crate::block_store::BlockStore;
use crate::config::{DEFAULT_CLUSTER_ID, NodeConfig};
use crate::error::NodeError;
use crate::failure_marker::FailureMarker;
use crate::faults::{Fault, FaultAction, FaultRegistry, Op};
use crate::fencing::{Fencing, InFlight};
use crate::layout::{
    ComponentHeader, Layout, component_id_problem, default_log_bytes, log_bytes_problem,
    valid_block_size,
};
use crate::memory::{MemoryDisk, MemoryMedia};
use crate::node_state::{NODE_STATE_VERSION, NodeState, NodeStateFile, sync_dir};
use crate::slot::{Area, SlotRecord};
use crate::volatile_cache::{CutReport, VolatileCache};

/// Sub-directory of the data directory holding the component files.
pub const COMPONENTS_DIR: &str = "components";
/// Extension of a component file.
pub const COMPONENT_EXT: &str = "dgc";
/// Lock file that keeps two nodes out of one data directory.
pub const LOCK_FILE: &str = "node.lock";

/// The owner of a mutating call: cluster id and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Must be the node's cluster id.
    pub cluster_id: String,
    /// Must be at least the node's epoch.
    pub epoch: u64,
}

/// What the node reports about itself.
#[derive(Clone)]
pub struct NodeSummary {
    /// The node id.
    pub node_id: String,
    /// The cluster id.
    pub cluster_id: String,
    /// Highest accepted epoch.
    pub epoch: u64,
    /// Payload limit.
    pub max_io_bytes: u64,
    /// Whether fault injection is on.
    pub fault_injection: bool,
    /// The components, by id.
    pub components: Vec<Arc<BlockStore>>,
}

/// A running storage node's state (everything but the gRPC server).
pub struct Node {
    node_id: String,
    cluster_id: String,
    max_io_bytes: u64,
    components_dir: PathBuf,
    /// The components by id: every call looks its component up here, so it takes no global
    /// lock (a sharded map; listings sort by id).
    components: DashMap<String, Arc<BlockStore>>,
    /// Serialises component creation and deletion.
    admin: tokio::sync::Mutex<()>,
    fencing: Arc<Fencing>,
    faults: FaultRegistry,
    /// The volatile write cache of every component (fault-injection mode only; empty otherwise).
    caches: std::sync::Mutex<BTreeMap<String, Arc<VolatileCache>>>,
    /// Cancelled by a power cut: the process is meant to exit at once.
    power_lost: CancellationToken,
    shutdown: CancellationToken,
    serials: AtomicU64,
    /// The in-memory data directory (the simulation's); `None`: files under `components_dir`.
    media: Option<Arc<MemoryMedia>>,
    /// Held (with its advisory lock) for the node's lifetime; `None` in memory.
    _dir_lock: Option<File>,
}

fn bad_dir(path: &Path, reason: impl Into<String>) -> NodeError {
    NodeError::BadDataDir {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn time_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // SplitMix64 finaliser: spreads the clock and the pid over all bits.
    let mut z = nanos ^ (u64::from(std::process::id()) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The node state of a data directory, or a new one (written durably) at its first start;
/// refuses a `--node-id` or `--cluster-id` that differs from the stored one. Blocking.
fn load_or_init_state(
    config: &NodeConfig,
    state_file: &NodeStateFile,
) -> Result<NodeState, NodeError> {
    let dir = config.data_dir.as_path();
    let state = match state_file.load()? {
        Some(state) => {
            for (flag, given, stored) in [
                ("--node-id", &config.node_id, &state.node_id),
                ("--cluster-id", &config.cluster_id, &state.cluster_id),
            ] {
                if let Some(given) = given
                    && given != stored
                {
                    return Err(NodeError::BadNodeState {
                        path: state_file.path().to_path_buf(),
                        reason: format!(
                            "{flag} {given:?} does not match {stored:?} recorded in this data directory"
                        ),
                    });
                }
            }
            state
        }
        None => {
            let state = NodeState {
                format_version: NODE_STATE_VERSION,
                node_id: config
                    .node_id
                    .clone()
                    .unwrap_or_else(|| format!("node-{:016x}", time_seed())),
                cluster_id: config
                    .cluster_id
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CLUSTER_ID.to_owned()),
                epoch: 0,
            };
            state_file
                .store(&state)
                .map_err(|e| bad_dir(dir, e.to_string()))?;
            state
        }
    };
    Ok(state)
}

impl Node {
    /// Opens (or initialises) the data directory and every component in it. Blocking.
    ///
    /// Fails with a precise error for a directory that cannot be used, a directory in use by
    /// another node, an identity mismatch, or a component file that is not a valid component.
    pub fn open(config: &NodeConfig) -> Result<Self, NodeError> {
        config.validate()?;
        let dir = config.data_dir.as_path();
        match fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(bad_dir(dir, "exists and is not a directory"));
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)
                    .map_err(|e| bad_dir(dir, format!("cannot create it: {e}")))?;
            }
            Err(err) if err.kind() == io::ErrorKind::NotADirectory => {
                return Err(bad_dir(
                    dir,
                    "cannot create it: a parent is not a directory",
                ));
            }
            Err(err) => return Err(bad_dir(dir, format!("cannot access it: {err}"))),
        }
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| bad_dir(dir, format!("cannot open {LOCK_FILE}: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(bad_dir(dir, "in use by another dagraid-node process"));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(bad_dir(dir, format!("cannot lock {LOCK_FILE}: {e}")));
            }
        }

        let state_file = NodeStateFile::new(dir);
        let state = load_or_init_state(config, &state_file)?;
        let components_dir = dir.join(COMPONENTS_DIR);
        fs::create_dir_all(&components_dir)
            .map_err(|e| bad_dir(dir, format!("cannot create {COMPONENTS_DIR}/: {e}")))?;
        let (components, caches) = open_components(&components_dir, config.fault_injection)?;
        Ok(Self::with_state(
            config,
            state,
            state_file,
            (components, caches),
            components_dir,
            None,
            Some(lock),
        ))
    }

    /// Opens (or initialises) a node whose data directory is `media`, in memory (the
    /// deterministic simulation; see [`crate::memory`]). `config.data_dir` only names it in
    /// messages. Nothing blocks: callable on an async task.
    pub fn open_in_memory(config: &NodeConfig, media: Arc<MemoryMedia>) -> Result<Self, NodeError> {
        config.validate()?;
        let state_file = NodeStateFile::in_directory(
            media.directory(),
            config.data_dir.join(crate::node_state::NODE_STATE_FILE),
        );
        let state = load_or_init_state(config, &state_file)?;
        let opened =
            open_memory_components(&media, config.fault_injection).map_err(|(id, reason)| {
                NodeError::BadComponentFile {
                    path: config
                        .data_dir
                        .join(COMPONENTS_DIR)
                        .join(format!("{id}.{COMPONENT_EXT}")),
                    reason,
                }
            })?;
        Ok(Self::with_state(
            config,
            state,
            state_file,
            opened,
            config.data_dir.join(COMPONENTS_DIR),
            Some(media),
            None,
        ))
    }

    fn with_state(
        config: &NodeConfig,
        state: NodeState,
        state_file: NodeStateFile,
        (components, caches): OpenComponents,
        components_dir: PathBuf,
        media: Option<Arc<MemoryMedia>>,
        lock: Option<File>,
    ) -> Self {
        let fencing = Fencing::new(
            state.node_id.clone(),
            state.cluster_id.clone(),
            state.epoch,
            Some(state_file),
        );
        for (id, store) in &components {
            fencing.set_component_epoch(id, store.fence_epoch());
        }
        tracing::info!(
            node_id = %state.node_id,
            cluster_id = %state.cluster_id,
            epoch = state.epoch,
            components = components.len(),
            in_memory = media.is_some(),
            "data directory opened"
        );
        Self {
            node_id: state.node_id.clone(),
            cluster_id: state.cluster_id.clone(),
            max_io_bytes: config.max_io_bytes,
            components_dir,
            components: components.into_iter().collect(),
            admin: tokio::sync::Mutex::new(()),
            fencing,
            faults: FaultRegistry::new(config.fault_injection),
            caches: std::sync::Mutex::new(caches),
            power_lost: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            serials: AtomicU64::new(if media.is_some() { 0 } else { time_seed() }),
            media,
            _dir_lock: lock,
        }
    }

    /// Cancelled when the node stops: hung and delayed operations end with UNAVAILABLE.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Cancelled once the node lost its power ([`Node::power_cut`]): whoever runs it should
    /// end the process at once, without any graceful step (the binary exits with
    /// [`crate::POWER_CUT_EXIT_CODE`]), and start it again from its data directory.
    pub fn power_lost(&self) -> &CancellationToken {
        &self.power_lost
    }

    /// Whether InjectFault is accepted.
    pub fn fault_injection_enabled(&self) -> bool {
        self.faults.enabled()
    }

    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Payload limit of one read or write.
    pub fn max_io_bytes(&self) -> u64 {
        self.max_io_bytes
    }

    /// Identity, epoch and components.
    pub fn summary(&self) -> NodeSummary {
        NodeSummary {
            node_id: self.node_id.clone(),
            cluster_id: self.cluster_id.clone(),
            epoch: self.fencing.epoch(),
            max_io_bytes: self.max_io_bytes,
            fault_injection: self.faults.enabled(),
            components: self.components_list(),
        }
    }

    /// The components, ordered by id.
    pub fn components_list(&self) -> Vec<Arc<BlockStore>> {
        let mut list: Vec<(String, Arc<BlockStore>)> = self
            .components
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list.into_iter().map(|(_, c)| c).collect()
    }

    fn check_id(id: &str) -> Result<(), NodeError> {
        match component_id_problem(id) {
            None => Ok(()),
            Some(reason) => Err(NodeError::InvalidComponentId {
                id: id.to_owned(),
                reason,
            }),
        }
    }

    /// The component `id`.
    pub fn component(&self, id: &str) -> Result<Arc<BlockStore>, NodeError> {
        Self::check_id(id)?;
        self.components
            .get(id)
            .map(|c| c.value().clone())
            .ok_or_else(|| NodeError::UnknownComponent(id.to_owned()))
    }

    fn check_io_size(&self, what: &'static str, bytes: u64) -> Result<(), NodeError> {
        if bytes > self.max_io_bytes {
            return Err(NodeError::TooLarge {
                what,
                bytes,
                limit: self.max_io_bytes,
            });
        }
        Ok(())
    }

    /// Creates a zero-filled component with a log area of `log_bytes` (0: the default,
    /// [`default_log_bytes`]).
    pub async fn create_component(
        self: &Arc<Self>,
        owner: &Owner,
        id: &str,
        block_size: u32,
        block_count: u64,
        serial: u64,
        log_bytes: u64,
    ) -> Result<Arc<BlockStore>, NodeError> {
        self.fencing.check_cluster(&owner.cluster_id)?;
        Self::check_id(id)?;
        if !valid_block_size(block_size) {
            return Err(NodeError::InvalidArgument(format!(
                "block_size {block_size} is not a power of two from 512 to 1 MiB"
            )));
        }
        if block_count == 0 {
            return Err(NodeError::InvalidArgument(
                "block_count must be at least 1".into(),
            ));
        }
        let log_bytes = if log_bytes == 0 {
            default_log_bytes(block_size)
        } else {
            log_bytes
        };
        if let Some(reason) = log_bytes_problem(log_bytes) {
            return Err(NodeError::InvalidArgument(format!(
                "log_bytes {log_bytes}: {reason}"
            )));
        }
        let Some(layout) = Layout::new(block_size, block_count, log_bytes) else {
            return Err(NodeError::InvalidArgument(format!(
                "{block_count} blocks of {block_size} bytes overflow a 64-bit size"
            )));
        };
        let _in_flight = self
            .fencing
            .admit(&owner.cluster_id, id, owner.epoch)
            .await?;
        let _admin = self.admin.lock().await;
        if self.components.contains_key(id) {
            return Err(NodeError::ComponentExists(id.to_owned()));
        }
        let serial = if serial != 0 {
            serial
        } else if let Some(media) = &self.media {
            media.next_serial()
        } else {
            self.serials
                .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
                | 1
        };
        let header = ComponentHeader {
            id: id.to_owned(),
            serial,
            block_size,
            block_count,
            log_bytes,
        };
        let dir = self.components_dir.clone();
        let cached = self.faults.enabled();
        let (store, cache) = match &self.media {
            Some(media) => create_memory_component(media, &dir, &header, layout, cached)?,
            None => tokio::task::spawn_blocking(move || {
                create_component_file(&dir, &header, layout, cached)
            })
            .await
            .map_err(|e| NodeError::io("create task", io::Error::other(e)))??,
        };
        let store = Arc::new(store);
        if let Some(cache) = cache {
            self.lock_caches().insert(id.to_owned(), cache);
        }
        self.components.insert(id.to_owned(), store.clone());
        tracing::info!(
            component = id,
            block_size,
            block_count,
            serial,
            "component created"
        );
        Ok(store)
    }

    /// Deletes a component and its file.
    pub async fn delete_component(
        self: &Arc<Self>,
        owner: &Owner,
        id: &str,
    ) -> Result<(), NodeError> {
        self.fencing.check_cluster(&owner.cluster_id)?;
        self.component(id)?;
        let _in_flight = self
            .fencing
            .admit(&owner.cluster_id, id, owner.epoch)
            .await?;
        let _admin = self.admin.lock().await;
        self.component(id)?;
        let dir = self.components_dir.clone();
        let owned_id = id.to_owned();
        if let Some(media) = &self.media {
            media.remove(id);
            media
                .directory()
                .remove_file(&crate::failure_marker::file_name(id))
                .map_err(|e| NodeError::io("removing the failure marker", e))?;
        } else {
            tokio::task::spawn_blocking(move || {
                let path = component_path(&dir, &owned_id);
                fs::remove_file(&path)
                    .map_err(|e| NodeError::io(format!("removing {}", path.display()), e))?;
                let _ = fs::remove_file(failure_marker_path(&dir, &owned_id));
                sync_dir(&dir).map_err(|e| NodeError::io(format!("syncing {}", dir.display()), e))
            })
            .await
            .map_err(|e| NodeError::io("delete task", io::Error::other(e)))??;
        }
        self.components.remove(id);
        self.lock_caches().remove(id);
        self.fencing.forget_component(id);
        self.faults.forget(Some(id));
        tracing::info!(component = id, "component deleted");
        Ok(())
    }

    /// Applies the injected fault for `op`, if any. `Ok(Some(delay))` means: answer
    /// DEADLINE_EXCEEDED now and apply the operation after `delay`.
    async fn meet_faults(&self, id: &str, op: Op) -> Result<Option<Duration>, NodeError> {
        let generation = self.faults.generation(id);
        let Some(action) = self.faults.take(id, op) else {
            return Ok(None);
        };
        tracing::info!(component = id, ?op, ?action, "injected fault");
        match action {
            FaultAction::Fail(code) => Err(NodeError::Injected {
                component: id.to_owned(),
                code,
            }),
            FaultAction::Delay(delay) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => Ok(None),
                    () = self.shutdown.cancelled() => Err(NodeError::ShuttingDown),
                }
            }
            FaultAction::Hang => {
                self.faults.hang(id, generation, &self.shutdown).await?;
                Ok(None)
            }
            FaultAction::LateApply(delay) => Ok(Some(delay)),
        }
    }

    /// Runs `apply` after `delay` in the background (unless the node stops first) and answers
    /// DEADLINE_EXCEEDED now, like a call whose reply was lost.
    fn apply_late<F>(&self, id: &str, delay: Duration, apply: F) -> NodeError
    where
        F: Future<Output = Result<(), NodeError>> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let component = id.to_owned();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
            match apply.await {
                Ok(()) => tracing::info!(%component, "late-applied operation done"),
                Err(err) => tracing::info!(%component, %err, "late-applied operation refused"),
            }
        });
        NodeError::Injected {
            component: id.to_owned(),
            code: Code::DeadlineExceeded,
        }
    }

    /// Admits a read of `owner` (if it carries one) on component `id`; `None` when it does not.
    async fn admit_read(
        &self,
        owner: Option<&Owner>,
        id: &str,
    ) -> Result<Option<InFlight>, NodeError> {
        match owner {
            None => Ok(None),
            Some(owner) => self
                .fencing
                .admit_read(&owner.cluster_id, id, owner.epoch)
                .await
                .map(Some),
        }
    }

    /// Reads `count` blocks from `start`. With an `owner`, its epoch is checked like a write's
    /// (without raising anything); without one (an older client), the read is served unchecked.
    pub async fn read_blocks(
        &self,
        owner: Option<Owner>,
        id: &str,
        start: u64,
        count: u64,
    ) -> Result<Bytes, NodeError> {
        if let Some(owner) = &owner {
            self.fencing.check_cluster(&owner.cluster_id)?;
        }
        let store = self.component(id)?;
        store.ensure_serving().await?;
        let bytes = store.check_range(start, count)?;
        self.check_io_size("read answer", bytes)?;
        if self.meet_faults(id, Op::Read).await?.is_some() {
            return Err(NodeError::Injected {
                component: id.to_owned(),
                code: Code::DeadlineExceeded,
            });
        }
        let _in_flight = self.admit_read(owner.as_ref(), id).await?;
        store.read_blocks(start, count).await
    }

    /// Writes whole blocks from `start`; durable when it returns `Ok`.
    pub async fn write_blocks(
        self: &Arc<Self>,
        owner: Owner,
        id: &str,
        start: u64,
        data: Bytes,
    ) -> Result<(), NodeError> {
        self.fencing.check_cluster(&owner.cluster_id)?;
        let store = self.component(id)?;
        store.ensure_serving().await?;
        self.check_io_size("write payload", data.len() as u64)?;
        store.check_write(start, data.len())?;
        let fencing = self.fencing.clone();
        let component = id.to_owned();
        let apply = async move {
            let _in_flight = fencing
                .admit(&owner.cluster_id, &component, owner.epoch)
                .await?;
            store.write_blocks(start, data).await
        };
        match self.meet_faults(id, Op::BlockWrite).await? {
            None => apply.await,
            Some(delay) => Err(self.apply_late(id, delay, apply)),
        }
    }

    /// Writes `data` at byte `offset` of the component's log area; durable when it returns
    /// `Ok`. Checked, faulted (as a write) and fenced exactly like [`Node::write_blocks`].
    pub async fn write_log(
        self: &Arc<Self>,
        owner: Owner,
        id: &str,
        offset: u64,
        data: Bytes,
    ) -> Result<(), NodeError> {
        self.fencing.check_cluster(&owner.cluster_id)?;
        let store = self.component(id)?;
        store.ensure_serving().await?;
        self.check_io_size("log write payload", data.len() as u64)?;
        store.check_log(offset, data.len() as u64)?;
        let fencing = self.fencing.clone();
        let component = id.to_owned();
        let apply = async move {
            let _in_flight = fencing
                .admit(&owner.cluster_id, &component, owner.epoch)
                .await?;
            store.write_log(offset, data).await
        };
        match self.meet_faults(id, Op::Write).await? {
            None => apply.await,
            Some(delay) => Err(self.apply_late(id, delay, apply)),
        }
    }

    /// Reads `len` bytes at byte `offset` of the component's log area. `owner` is checked as
    /// for [`Node::read_blocks`]; faults meet it as a read.
    pub async fn read_log(
        &self,
        owner: Option<Owner>,
        id: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, NodeError> {
        if let Some(owner) = &owner {
            self.fencing.check_cluster(&owner.cluster_id)?;
        }
        let store = self.component(id)?;
        store.ensure_serving().await?;
        self.check_io_size("log read answer", len)?;
        store.check_log(offset, len)?;
        if self.meet_faults(id, Op::LogRead).await?.is_some() {
            return Err(NodeError::Injected {
                component: id.to_owned(),
                code: Code::DeadlineExceeded,
            });
        }
        let _in_flight = self.admit_read(owner.as_ref(), id).await?;
        store.read_log(offset, len).await
    }

    /// Makes every completed write of the component durable.
    pub async fn flush(self: &Arc<Self>, owner: Owner, id: &str) -> Result<(), NodeError> {
        self.fencing.check_cluster(&owner.cluster_id)?;
        let store = self.component(id)?;
        store.ensure_serving().await?;
        let fencing = self.fencing.clone();
        let component = id.to_owned();
        let apply = async move {
            let _in_flight = fencing
                .admit(&owner.cluster_id, &component, owner.epoch)
                .await?;
            store.flush().await
        };
        match self.meet_faults(id, Op::Flush).await? {
            None => apply.await,
            Some(delay) => Err(self.apply_late(id, delay, apply)),
        }
    }

    /// The newest complete version of a slot area. `owner` is checked as for
    /// [`Node::read_blocks`].
    pub async fn read_slot(
        &self,
        owner: Option<Owner>,
        id: &str,
        area: Area,
    ) -> Result<Option<SlotRecord>, NodeError> {
        if let Some(owner) = &owner {
            self.fencing.check_cluster(&owner.cluster_id)?;
        }
        let store = self.component(id)?;
        store.ensure_serving().await?;
        if self.meet_faults(id, Op::Read).await?.is_some() {
            return Err(NodeError::Injected {
                component: id.to_owned(),
                code: Code::DeadlineExceeded,
            });
        }
        let _in_flight = self.admit_read(owner.as_ref(), id).await?;
        store.read_slot(area).await
    }

    /// Atomically replaces a slot area; returns the new sequence.
    pub async fn write_slot(
        self: &Arc<Self>,
        owner: Owner,
        id: &str,
        area: Area,
        payload: Bytes,
    ) -> Result<u64, NodeError> {
        self.fencing.check_cluster(&owner.cluster_id)?;
        let store = self.component(id)?;
        store.ensure_serving().await?;
        store.check_slot_payload(area, payload.len())?;
        let fencing = self.fencing.clone();
        let component = id.to_owned();
        let apply = async move {
            let _in_flight = fencing
                .admit(&owner.cluster_id, &component, owner.epoch)
                .await?;
            store.write_slot(area, &payload).await
        };
        match self.meet_faults(id, Op::Write).await? {
            None => apply.await,
            Some(delay) => Err(self.apply_late(id, delay, async move { apply.await.map(drop) })),
        }
    }

    /// Raises the epoch and waits for older writes to drain; returns the node's epoch.
    pub async fn fence(&self, cluster_id: &str, epoch: u64) -> Result<u64, NodeError> {
        self.fencing.fence(cluster_id, epoch).await
    }

    /// Raises the fence epoch of component `id` to `epoch`, durably (in its file) before it
    /// counts, then waits until every call on the component admitted under an older epoch has
    /// finished. Refused when `epoch` is below max(node epoch, component epoch). Returns the
    /// component's effective epoch, max(node epoch, component epoch). The node epoch is left
    /// alone.
    pub async fn fence_component(
        &self,
        cluster_id: &str,
        id: &str,
        epoch: u64,
    ) -> Result<u64, NodeError> {
        self.fencing.check_cluster(cluster_id)?;
        {
            // Not concurrently with the deletion (or re-creation) of the component.
            let _admin = self.admin.lock().await;
            let store = self.component(id)?;
            store.ensure_serving().await?;
            self.fencing.check_component_fence(cluster_id, id, epoch)?;
            store.raise_fence_epoch(epoch).await?;
            self.fencing.set_component_epoch(id, epoch);
        }
        tracing::info!(component = id, epoch, "component fenced");
        self.fencing.drain(Some(id), epoch).await?;
        Ok(self.fencing.effective_epoch(id))
    }

    /// Injects a fault on an existing component.
    pub fn inject_fault(&self, id: &str, fault: Fault) -> Result<(), NodeError> {
        if !self.faults.enabled() {
            return Err(NodeError::FaultInjectionDisabled);
        }
        self.component(id)?;
        self.faults.inject(id, fault)
    }

    /// Clears the faults of one component, or of all, and lets their held syncs go on.
    pub fn clear_faults(&self, id: Option<&str>) -> Result<(), NodeError> {
        self.faults.clear(id)?;
        for (cache_id, cache) in self.lock_caches().iter() {
            if id.is_none_or(|id| id == cache_id) {
                cache.release_syncs();
            }
        }
        Ok(())
    }

    fn lock_caches(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<VolatileCache>>> {
        self.caches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the syncs of component `id` after they wrote their data into the file and before
    /// their fdatasync, until its faults are cleared or the power is cut: the writes they carry
    /// are never acknowledged, and a power cut tears them. Fault-injection mode only.
    pub fn hold_syncs(&self, id: &str) -> Result<(), NodeError> {
        if !self.faults.enabled() {
            return Err(NodeError::FaultInjectionDisabled);
        }
        self.component(id)?;
        let cache = self
            .lock_caches()
            .get(id)
            .cloned()
            .ok_or_else(|| NodeError::UnknownComponent(id.to_owned()))?;
        cache.hold_syncs();
        tracing::info!(
            component = id,
            "injected fault: syncs held before fdatasync"
        );
        Ok(())
    }

    /// Cuts the node's power (fault-injection mode only; see [`crate::volatile_cache`]): on
    /// every component, writes not yet synced are discarded and the writes of the sync in flight
    /// torn, drawn from `seed`; then [`Node::power_lost`] is cancelled. Afterwards the node
    /// changes nothing any more (writes and syncs block for ever, reads fail): it must be
    /// dropped and opened again from its data directory, which then holds exactly what was
    /// synced (plus the torn sectors). Blocking.
    pub fn power_cut(&self, seed: u64) -> Result<CutReport, NodeError> {
        if !self.faults.enabled() {
            return Err(NodeError::FaultInjectionDisabled);
        }
        let caches: Vec<(String, Arc<VolatileCache>)> = self
            .lock_caches()
            .iter()
            .map(|(id, cache)| (id.clone(), cache.clone()))
            .collect();
        let mut total = CutReport::default();
        let mut first_error = None;
        for (i, (id, cache)) in caches.iter().enumerate() {
            // Each component draws its own tearing from the one seed.
            let component_seed = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            match cache.power_cut(component_seed) {
                Ok(report) => {
                    tracing::warn!(
                        component = %id,
                        discarded_writes = report.discarded_writes,
                        torn_writes = report.torn_writes,
                        old_sectors = report.old_sectors,
                        new_sectors = report.new_sectors,
                        "power cut"
                    );
                    total.discarded_writes += report.discarded_writes;
                    total.torn_writes += report.torn_writes;
                    total.old_sectors += report.old_sectors;
                    total.new_sectors += report.new_sectors;
                }
                Err(err) => {
                    first_error.get_or_insert(NodeError::io(
                        format!("component {id:?}: tearing at the power cut"),
                        err,
                    ));
                }
            }
        }
        tracing::warn!(seed, components = caches.len(), "the power is off");
        self.power_lost.cancel();
        match first_error {
            Some(err) => Err(err),
            None => Ok(total),
        }
    }
}

fn component_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.{COMPONENT_EXT}"))
}

fn failure_marker_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(crate::failure_marker::file_name(id))
}

/// The components' stores and, with `cached` (fault-injection mode), their volatile caches.
type OpenComponents = (
    BTreeMap<String, Arc<BlockStore>>,
    BTreeMap<String, Arc<VolatileCache>>,
);

/// `backend` as a component sees it: behind a volatile cache when `cached`.
fn component_backend(
    backend: Arc<dyn StorageBackend>,
    id: &str,
    cached: bool,
) -> (Arc<dyn StorageBackend>, Option<Arc<VolatileCache>>) {
    if !cached {
        return (backend, None);
    }
    let cache = Arc::new(VolatileCache::new(backend, id));
    (cache.clone(), Some(cache))
}

fn open_components(dir: &Path, cached: bool) -> Result<OpenComponents, NodeError> {
    let mut components = BTreeMap::new();
    let mut caches = BTreeMap::new();
    let entries = fs::read_dir(dir).map_err(|e| bad_dir(dir, format!("cannot list: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad_dir(dir, format!("cannot list: {e}")))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(&format!(".{COMPONENT_EXT}.tmp")) {
            // A creation that never completed: the component was never acknowledged.
            tracing::warn!(path = %path.display(), "removing an unfinished component file");
            fs::remove_file(&path)
                .map_err(|e| NodeError::io(format!("removing {}", path.display()), e))?;
            continue;
        }
        let Some(id) = name.strip_suffix(&format!(".{COMPONENT_EXT}")) else {
            continue;
        };
        let bad = |reason: String| NodeError::BadComponentFile {
            path: path.clone(),
            reason,
        };
        if let Some(problem) = component_id_problem(id) {
            return Err(bad(format!(
                "the name is not a valid component id: {problem}"
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| bad(format!("cannot open: {e}")))?;
        let (backend, cache) = component_backend(Arc::new(FileBackend::new(file)), id, cached);
        let marker = FailureMarker::local(dir, id);
        let store = BlockStore::open(backend, Some(marker)).map_err(bad)?;
        if store.header().id != id {
            return Err(bad(format!(
                "its header names component {:?}",
                store.header().id
            )));
        }
        components.insert(id.to_owned(), Arc::new(store));
        if let Some(cache) = cache {
            caches.insert(id.to_owned(), cache);
        }
    }
    Ok((components, caches))
}

/// Creates the file of a new component (durably) and opens it, behind a volatile cache when
/// `cached`.
/// Opens the components of in-memory media; `Err` names the component and what is wrong.
fn open_memory_components(
    media: &Arc<MemoryMedia>,
    cached: bool,
) -> Result<OpenComponents, (String, String)> {
    let mut components = BTreeMap::new();
    let mut caches = BTreeMap::new();
    for (id, disk) in media.components() {
        let (backend, cache) = component_backend(disk, &id, cached);
        let marker = FailureMarker::new(media.directory(), crate::failure_marker::file_name(&id));
        let store = BlockStore::open(backend, Some(marker)).map_err(|e| (id.clone(), e))?;
        if store.header().id != id {
            return Err((
                id.clone(),
                format!("its header names component {:?}", store.header().id),
            ));
        }
        components.insert(id.clone(), Arc::new(store));
        if let Some(cache) = cache {
            caches.insert(id, cache);
        }
    }
    Ok((components, caches))
}

/// [`create_component_file`] in memory: the disk is listed only once initialised.
fn create_memory_component(
    media: &Arc<MemoryMedia>,
    dir: &Path,
    header: &ComponentHeader,
    layout: Layout,
    cached: bool,
) -> Result<(BlockStore, Option<Arc<VolatileCache>>), NodeError> {
    let id = &header.id;
    let name = crate::failure_marker::file_name(id);
    media
        .directory()
        .remove_file(&name)
        .map_err(|e| NodeError::io("removing the failure marker", e))?;
    let disk = Arc::new(MemoryDisk::new(layout.file_len));
    BlockStore::initialize(disk.as_ref(), header)
        .map_err(|e| NodeError::io(format!("initialising component {id:?}"), e))?;
    media.insert(id, disk.clone());
    let (backend, cache) = component_backend(disk, id, cached);
    let store = BlockStore::open(backend, Some(FailureMarker::new(media.directory(), name)))
        .map_err(|reason| NodeError::BadComponentFile {
            path: component_path(dir, id),
            reason,
        })?;
    Ok((store, cache))
}

fn create_component_file(
    dir: &Path,
    header: &ComponentHeader,
    layout: Layout,
    cached: bool,
) -> Result<(BlockStore, Option<Arc<VolatileCache>>), NodeError> {
    let id = &header.id;
    let tmp = dir.join(format!("{id}.{COMPONENT_EXT}.tmp"));
    let path = component_path(dir, id);
    let marker = failure_marker_path(dir, id);
    let result = (|| {
        let io_err =
            |what: &str, e: io::Error| NodeError::io(format!("{what} {}", tmp.display()), e);
        let _ = fs::remove_file(&marker);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io_err("creating", e))?;
        preallocate(&file, layout.file_len).map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
                NodeError::NoSpace {
                    component: id.clone(),
                    source: e,
                }
            } else {
                io_err("preallocating", e)
            }
        })?;
        let backend: Arc<dyn StorageBackend> = Arc::new(FileBackend::new(file));
        BlockStore::initialize(backend.as_ref(), header).map_err(|e| io_err("initialising", e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err("renaming", e))?;
        sync_dir(dir).map_err(|e| io_err("syncing the directory of", e))?;
        let (backend, cache) = component_backend(backend, id, cached);
        let store =
            BlockStore::open(backend, Some(FailureMarker::local(dir, id))).map_err(|reason| {
                NodeError::BadComponentFile {
                    path: path.clone(),
                    reason,
                }
            })?;
        Ok((store, cache))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(epoch: u64) -> Owner {
        Owner {
            cluster_id: DEFAULT_CLUSTER_ID.into(),
            epoch,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn components_survive_a_restart_with_their_data_and_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::new(dir.path());
        {
            let node = Arc::new(Node::open(&config).unwrap());
            node.create_component(&owner(1), "a", 512, 16, 42, 0)
                .await
                .unwrap();
            node.write_blocks(owner(2), "a", 15, Bytes::from(vec![7u8; 512]))
                .await
                .unwrap();
            node.write_slot(owner(2), "a", Area::Label, Bytes::from_static(b"lbl"))
                .await
                .unwrap();
        }
        let node = Arc::new(Node::open(&config).unwrap());
        let summary = node.summary();
        assert_eq!(summary.epoch, 2);
        assert_eq!(summary.components.len(), 1);
        assert_eq!(summary.components[0].header().serial, 42);
        assert_eq!(
            node.read_blocks(None, "a", 15, 1).await.unwrap(),
            vec![7u8; 512]
        );
        let label = node
            .read_slot(None, "a", Area::Label)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(label.payload, b"lbl");
        assert!(matches!(
            node.write_blocks(owner(1), "a", 0, Bytes::from(vec![1u8; 512]))
                .await,
            Err(NodeError::StaleEpoch { got: 1, current: 2 })
        ));
    }

    #[test]
    fn a_second_node_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::new(dir.path());
        let _first = Node::open(&config).unwrap();
        let err = Node::open(&config)
            .err()
            .expect("second open refused")
            .to_string();
        assert!(err.contains("in use by another dagraid-node"), "{err}");
    }

    #[test]
    fn identity_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::new(dir.path());
        config.node_id = Some("n1".into());
        drop(Node::open(&config).unwrap());
        config.node_id = Some("n2".into());
        let err = Node::open(&config).err().expect("refused").to_string();
        assert!(err.contains("\"n2\" does not match \"n1\""), "{err}");
    }

    #[tokio::test]
    async fn a_component_file_of_the_wrong_size_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::new(dir.path());
        {
            let node = Arc::new(Node::open(&config).unwrap());
            node.create_component(&owner(0), "a", 512, 4, 0, 4096)
                .await
                .unwrap();
        }
        let path = dir.path().join("components/a.dgc");
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let err = Node::open(&config).err().expect("refused").to_string();
        assert!(err.contains("a.dgc") && err.contains("expected"), "{err}");
    }

    /// A component recorded as failed stays failed after a restart; deleting it removes the record
    /// and the id can be used again.
    #[tokio::test]
    async fn a_recorded_failure_survives_a_restart_until_the_component_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::new(dir.path());
        {
            let node = Arc::new(Node::open(&config).unwrap());
            node.create_component(&owner(0), "a", 512, 4, 0, 4096)
                .await
                .unwrap();
        }
        let marker = dir.path().join("components/a.failed");
        fs::write(&marker, "fdatasync failed: injected EIO").unwrap();
        let node = Arc::new(Node::open(&config).unwrap());
        let err = node.read_blocks(None, "a", 0, 1).await.unwrap_err();
        assert!(
            matches!(&err, NodeError::ComponentFailed { reason, .. } if reason.contains("injected EIO")),
            "{err}"
        );
        let err = node
            .write_blocks(owner(0), "a", 0, Bytes::from(vec![1u8; 512]))
            .await
            .unwrap_err();
        assert!(matches!(err, NodeError::ComponentFailed { .. }), "{err}");

        node.delete_component(&owner(0), "a").await.unwrap();
        assert!(!marker.exists());
        node.create_component(&owner(0), "a", 512, 4, 0, 4096)
            .await
            .unwrap();
        assert_eq!(
            node.read_blocks(None, "a", 0, 4).await.unwrap(),
            vec![0u8; 2048]
        );
        drop(node);
        let node = Node::open(&config).unwrap();
        assert_eq!(
            node.component("a").unwrap().health(),
            crate::block_store::ComponentHealth::Optimal
        );
    }

    /// A format 1 file left by an older node opens with everything it held, reports its log area,
    /// and stays a format 2 file across restarts.
    #[tokio::test]
    async fn a_format_1_component_file_is_migrated_when_the_node_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::new(dir.path());
        drop(Node::open(&config).unwrap());
        let v1 = crate::testing::v1_file(11);
        let path = dir.path().join("components/legacy-1.dgc");
        fs::write(&path, &v1.image).unwrap();
        for _restart in 0..2 {
            let node = Arc::new(Node::open(&config).unwrap());
            let store = node.component("legacy-1").unwrap();
            assert_eq!(
                store.header().log_bytes,
                crate::layout::default_log_bytes(512)
            );
            assert_eq!(fs::metadata(&path).unwrap().len(), store.layout().file_len);
            let data = node.read_blocks(None, "legacy-1", 0, 10).await.unwrap();
            assert_eq!(data, v1.blocks.concat());
            let label = node.read_slot(None, "legacy-1", Area::Label).await.unwrap();
            assert_eq!(label, Some(v1.label.clone()));
            let metadata = node
                .read_slot(None, "legacy-1", Area::Metadata)
                .await
                .unwrap();
            assert_eq!(metadata, Some(v1.metadata.clone()));
            node.fence_component(DEFAULT_CLUSTER_ID, "legacy-1", 3)
                .await
                .unwrap();
        }
    }

    /// A format 1 file has no log area; migration gives it the default one, which the log calls
    /// then use like any other (zeros until written, durable across a restart).
    #[tokio::test]
    async fn a_migrated_format_1_component_has_a_usable_log_area() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::new(dir.path());
        drop(Node::open(&config).unwrap());
        let v1 = crate::testing::v1_file(12);
        assert_eq!(crate::layout::Layout::v1(512, 10).unwrap().log_bytes, 0);
        fs::write(dir.path().join("components/legacy-1.dgc"), &v1.image).unwrap();
        let log_bytes = crate::layout::default_log_bytes(512);
        {
            let node = Arc::new(Node::open(&config).unwrap());
            let store = node.component("legacy-1").unwrap();
            assert_eq!(store.layout().log_bytes, log_bytes);
            assert_eq!(
                node.read_log(None, "legacy-1", log_bytes - 4096, 4096)
                    .await
                    .unwrap(),
                vec![0u8; 4096]
            );
            node.write_log(owner(1), "legacy-1", 4096, Bytes::from(vec![6u8; 8192]))
                .await
                .unwrap();
            assert!(matches!(
                node.write_log(
                    owner(1),
                    "legacy-1",
                    log_bytes,
                    Bytes::from(vec![6u8; 4096])
                )
                .await,
                Err(NodeError::LogOutOfRange { .. })
            ));
        }
        let node = Arc::new(Node::open(&config).unwrap());
        assert_eq!(
            node.read_log(None, "legacy-1", 4096, 8192).await.unwrap(),
            vec![6u8; 8192]
        );
        // The blocks are untouched by the log.
        let data = node.read_blocks(None, "legacy-1", 0, 10).await.unwrap();
        assert_eq!(data, v1.blocks.concat());
    }

    /// A log write meets injected faults as a write: a late-applied one is refused by the
    /// component fence raised meanwhile, like a block write.
    #[tokio::test]
    async fn a_late_log_write_is_refused_after_a_component_fence() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::new(dir.path());
        config.fault_injection = true;
        let node = Arc::new(Node::open(&config).unwrap());
        node.create_component(&owner(1), "a", 512, 4, 0, 0)
            .await
            .unwrap();
        node.inject_fault(
            "a",
            Fault {
                action: FaultAction::LateApply(Duration::from_millis(300)),
                ops: crate::faults::FaultOps::Write,
                remaining: Some(1),
            },
        )
        .unwrap();
        let err = node
            .write_log(owner(1), "a", 0, Bytes::from(vec![9u8; 4096]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                NodeError::Injected {
                    code: Code::DeadlineExceeded,
                    ..
                }
            ),
            "{err}"
        );
        node.fence_component(DEFAULT_CLUSTER_ID, "a", 2)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let log = node.read_log(None, "a", 0, 4096).await.unwrap();
        assert!(
            log.iter().all(|&b| b == 0),
            "the late log write landed after the component fence"
        );
    }

    #[tokio::test]
    async fn a_component_fence_is_durable_and_refuses_older_calls_on_that_component_only() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::new(dir.path());
        let block = || Bytes::from(vec![3u8; 512]);
        {
            let node = Arc::new(Node::open(&config).unwrap());
            for id in ["a", "b"] {
                node.create_component(&owner(1), id, 512, 4, 0, 0)
                    .await
                    .unwrap();
            }
            assert_eq!(
                node.fence_component(DEFAULT_CLUSTER_ID, "a", 5)
                    .await
                    .unwrap(),
                5
            );
            assert_eq!(node.summary().epoch, 1, "the node epoch is left alone");
            assert_eq!(node.component("a").unwrap().fence_epoch(), 5);
            let stale = |r: Result<(), NodeError>| {
                assert!(
                    matches!(
                        r,
                        Err(NodeError::StaleComponentEpoch { ref component, current: 5, .. })
                            if component == "a"
                    ),
                    "{r:?}"
                );
            };
            stale(node.write_blocks(owner(4), "a", 0, block()).await);
            stale(node.flush(owner(1), "a").await);
            stale(
                node.write_slot(owner(4), "a", Area::Label, Bytes::new())
                    .await
                    .map(drop),
            );
            stale(node.read_blocks(Some(owner(4)), "a", 0, 1).await.map(drop));
            stale(
                node.read_slot(Some(owner(4)), "a", Area::Label)
                    .await
                    .map(drop),
            );
            stale(node.delete_component(&owner(4), "a").await);
            // Reads without fencing (older clients) are served as before.
            node.read_blocks(None, "a", 0, 1).await.unwrap();
            // The other component only needs the node epoch.
            node.write_blocks(owner(1), "b", 0, block()).await.unwrap();
            // A fence below the component's epoch is refused; others are checked first.
            assert!(matches!(
                node.fence_component(DEFAULT_CLUSTER_ID, "a", 4).await,
                Err(NodeError::StaleComponentEpoch { .. })
            ));
            assert!(matches!(
                node.fence_component("other", "a", 9).await,
                Err(NodeError::WrongCluster { .. })
            ));
            assert!(matches!(
                node.fence_component(DEFAULT_CLUSTER_ID, "zz", 9).await,
                Err(NodeError::UnknownComponent(_))
            ));
            assert!(matches!(
                node.fence_component(DEFAULT_CLUSTER_ID, "b", 0).await,
                Err(NodeError::StaleEpoch { got: 0, current: 1 })
            ));
        }
        // After a restart the component's epoch still holds.
        let node = Arc::new(Node::open(&config).unwrap());
        assert_eq!(node.component("a").unwrap().fence_epoch(), 5);
        assert!(matches!(
            node.write_blocks(owner(4), "a", 0, block()).await,
            Err(NodeError::StaleComponentEpoch { .. })
        ));
        node.write_blocks(owner(5), "a", 0, block()).await.unwrap();
        node.read_blocks(Some(owner(5)), "a", 0, 1).await.unwrap();
        // A read at a newer epoch is served and raises nothing; nor did the write at the
        // component's own fence epoch (the owner's calls on "b" still carry epoch 1).
        node.read_blocks(Some(owner(9)), "a", 0, 1).await.unwrap();
        assert_eq!(node.summary().epoch, 1);
        node.write_blocks(owner(1), "b", 0, block()).await.unwrap();
        // The epoch lives and dies with the component.
        node.delete_component(&owner(5), "a").await.unwrap();
        node.create_component(&owner(5), "a", 512, 4, 0, 0)
            .await
            .unwrap();
        assert_eq!(node.component("a").unwrap().fence_epoch(), 0);
    }

    /// A write applied late (after its caller gave up) meets the component fence raised in the
    /// meantime, and is refused at the moment it would apply.
    #[tokio::test]
    async fn a_late_write_is_refused_after_a_component_fence() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::new(dir.path());
        config.fault_injection = true;
        let node = Arc::new(Node::open(&config).unwrap());
        node.create_component(&owner(1), "a", 512, 4, 0, 0)
            .await
            .unwrap();
        node.inject_fault(
            "a",
            Fault {
                action: FaultAction::LateApply(Duration::from_millis(300)),
                ops: crate::faults::FaultOps::Write,
                remaining: Some(1),
            },
        )
        .unwrap();
        let err = node
            .write_blocks(owner(1), "a", 2, Bytes::from(vec![9u8; 512]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                NodeError::Injected {
                    code: Code::DeadlineExceeded,
                    ..
                }
            ),
            "{err}"
        );
        node.fence_component(DEFAULT_CLUSTER_ID, "a", 2)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let block = node.read_blocks(None, "a", 2, 1).await.unwrap();
        assert!(
            block.iter().all(|&b| b == 0),
            "the late write landed after the component fence"
        );
    }

    #[tokio::test]
    async fn unfinished_creations_are_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::new(dir.path());
        drop(Node::open(&config).unwrap());
        let tmp = dir.path().join("components/x.dgc.tmp");
        fs::write(&tmp, b"partial").unwrap();
        let node = Node::open(&config).unwrap();
        assert!(node.components_list().is_empty());
        assert!(!tmp.exists());
    }
}
