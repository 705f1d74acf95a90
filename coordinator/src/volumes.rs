//! The coordinator's volumes: creation (provisioning one component per column on distinct
//! storage nodes), deletion, lookup, and reassembly from the store at start.
//!
//! A [`Volume`] is its stored record (identity, layout, the node and component of every column)
//! and the core's [`Array`] over [`RemoteComponent`]s; the component states live in the array
//! and are made durable through the volume's [`VolumeStates`] recorder.
//!
//! Creation and deletion are serialised (one at a time); accesses never wait for them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dagraid_core::access::{AccessError, Array, ArrayConfig};
use dagraid_core::array::{ComponentStates, FailOutcome};
use dagraid_core::dag::ComponentTable;
use dagraid_core::io::ComponentIo;
use dagraid_core::layout::{Geometry, Layout, RaidLevel};

use crate::error::{NodeErrorKind, ServiceError};
use crate::node_client::ComponentInfo;
use crate::registry::{NodeRegistry, RegisteredNode};
use crate::remote::RemoteComponent;
use crate::store::{
    ComponentRecord, StateRecord, Store, VOLUME_RECORD_VERSION, VolumeRecord, VolumeStates,
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

/// One volume: its record and its array.
#[derive(Debug)]
pub struct Volume {
    record: VolumeRecord,
    array: Arc<Array>,
}

impl Volume {
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

    /// The columns as created (their states are in [`Volume::array`]).
    pub fn components(&self) -> &[ComponentRecord] {
        &self.record.components
    }

    /// The array serving the volume.
    pub fn array(&self) -> &Arc<Array> {
        &self.array
    }

    fn access_error(&self, source: AccessError) -> ServiceError {
        ServiceError::Access {
            volume: self.record.name.clone(),
            source,
        }
    }
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

/// The volumes of one coordinator.
#[derive(Debug)]
pub struct VolumeManager {
    store: Store,
    registry: Arc<NodeRegistry>,
    array_config: ArrayConfig,
    volumes: RwLock<BTreeMap<String, Arc<Volume>>>,
    /// Serialises creations and deletions.
    admin: tokio::sync::Mutex<()>,
}

impl VolumeManager {
    /// No volumes yet.
    pub fn new(store: Store, registry: Arc<NodeRegistry>, array_config: ArrayConfig) -> Self {
        Self {
            store,
            registry,
            array_config,
            volumes: RwLock::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
        }
    }

    /// The node registry.
    pub fn registry(&self) -> &Arc<NodeRegistry> {
        &self.registry
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Volume>>> {
        self.volumes.read().unwrap_or_else(|p| p.into_inner())
    }

    fn map_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Volume>>> {
        self.volumes.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Reassembles the stored volumes (states as stored; labels and resync come with the
    /// crash-proof cluster state). Every node a record names must be in the registry.
    pub fn assemble(&self, records: Vec<VolumeRecord>) -> Result<(), String> {
        for record in records {
            let name = record.name.clone();
            let volume = self
                .build(record)
                .map_err(|e| format!("volume {name:?}: {e}"))?;
            tracing::info!(
                volume = %name,
                id = volume.id(),
                state = %volume.array.array_state(),
                "volume assembled"
            );
            self.map_mut().insert(name, Arc::new(volume));
        }
        Ok(())
    }

    /// The array of a record, over remote components.
    /// The address of each column becomes the one in use (the configuration's, if it changed).
    fn build(&self, mut record: VolumeRecord) -> Result<Volume, String> {
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
        let states =
            ComponentStates::from_states(&layout, record.states()).map_err(|e| e.to_string())?;
        let recorder = Arc::new(VolumeStates::new(
            self.store.clone(),
            record.name.clone(),
            record.id.clone(),
        ));
        let table: ComponentTable = components.into();
        let array = Array::new(layout, table, states, self.array_config.clone(), recorder)
            .map_err(|e| e.to_string())?;
        Ok(Volume { record, array })
    }

    /// Volume `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Volume>, ServiceError> {
        self.map()
            .get(name)
            .cloned()
            .ok_or_else(|| ServiceError::UnknownVolume {
                name: name.to_owned(),
            })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Vec<Arc<Volume>> {
        self.map().values().cloned().collect()
    }

    /// Columns of all volumes on node `node_id`.
    pub fn components_on(&self, node_id: &str) -> usize {
        self.map()
            .values()
            .map(|v| {
                v.components()
                    .iter()
                    .filter(|c| c.node_id == node_id)
                    .count()
            })
            .sum()
    }

    /// Forgets every volume (the coordinator is stopping).
    pub fn clear(&self) {
        self.map_mut().clear();
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

    /// Creates a volume: checks the request, picks the nodes, creates one component per column,
    /// builds the array and stores the record, in that order; any failure undoes what was done.
    pub async fn create(&self, spec: VolumeSpec) -> Result<Arc<Volume>, ServiceError> {
        check_name(&spec.name)?;
        let _one_at_a_time = self.admin.lock().await;
        if self.map().contains_key(&spec.name) {
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

        let id = format!("v{:016x}", rand::random::<u64>());
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
            name: spec.name.clone(),
            id: id.clone(),
            level: plan.layout.level().into(),
            stripe_unit_blocks: geometry.stripe_unit_blocks(),
            block_size,
            blocks_per_column: blocks,
            components: created
                .iter()
                .enumerate()
                .map(|(column, (node, info))| ComponentRecord {
                    column: column as u32,
                    node_id: node.id().to_owned(),
                    node_address: node.address().to_owned(),
                    component_id: info.id.clone(),
                    state: StateRecord::Optimal,
                })
                .collect(),
        };
        let stored = match self.build(record.clone()) {
            Ok(volume) => self
                .store
                .insert_volume_async(record)
                .await
                .map(|()| volume)
                .map_err(|e| match e {
                    crate::store::StoreError::Exists(name) => ServiceError::VolumeExists { name },
                    other => ServiceError::Store(other),
                }),
            Err(e) => Err(ServiceError::Internal(e)),
        };
        let volume = match stored {
            Ok(volume) => Arc::new(volume),
            Err(e) => {
                tracing::warn!(volume = %spec.name, error = %e, "volume creation failed; removing its components");
                delete_components(created.iter().map(|(n, info)| (*n, info.id.clone()))).await;
                return Err(e);
            }
        };
        self.map_mut().insert(spec.name.clone(), volume.clone());
        tracing::info!(volume = %spec.name, %id, "volume created");
        Ok(volume)
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

    /// Deletes volume `name`: forgets it (new calls get NOT_FOUND), removes its record, then
    /// deletes its components on the nodes, best effort (a node that cannot be reached keeps an
    /// orphan component, logged with its id).
    pub async fn delete(&self, name: &str) -> Result<(), ServiceError> {
        let _one_at_a_time = self.admin.lock().await;
        let volume = self
            .map_mut()
            .remove(name)
            .ok_or_else(|| ServiceError::UnknownVolume {
                name: name.to_owned(),
            })?;
        if let Err(e) = self.store.remove_volume_async(name.to_owned()).await {
            self.map_mut().insert(name.to_owned(), volume);
            return Err(ServiceError::Store(e));
        }
        let registry = &self.registry;
        delete_components(volume.components().iter().filter_map(|c| {
            let node = registry.get(&c.node_id);
            if node.is_none() {
                tracing::warn!(node = %c.node_id, component = %c.component_id, "cannot delete the component: its node is not registered");
            }
            node.map(|n| (n, c.component_id.clone()))
        }))
        .await;
        tracing::info!(volume = %name, id = volume.id(), "volume deleted");
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
        Ok(volume)
    }

    /// Fails every column of every volume on node `node_id` (the health loop found it down).
    /// Refusals beyond the tolerance are logged as warnings when `first` (the node just went
    /// down), quietly after that.
    pub async fn fail_columns_on(&self, node_id: &str, first: bool) {
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
                    Err(error) if first => tracing::warn!(
                        volume = volume.name(),
                        column,
                        node = node_id,
                        %error,
                        "storage node down, but its component stays in use"
                    ),
                    Err(error) => tracing::debug!(
                        volume = volume.name(),
                        column,
                        node = node_id,
                        %error,
                        "storage node still down"
                    ),
                }
            }
        }
    }
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
