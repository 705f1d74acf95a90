//! The hot-spare pool: components on the storage nodes, labelled as spares, that a volume may
//! take for a failed column (RAIDframe's hot spares, `raidctl -a`; the reconstruction onto one is
//! the rebuild's business, not this module's).
//!
//! A spare is one component on one node (`spare-<16 hex digits>`, created zero-filled by the
//! node) carrying a **spare label** ([`SpareLabel`], `docs/STATE.md`, "Spare label") in its
//! label area, and one [`SpareRecord`] in the store's `spares` table. The pool
//! ([`SparePool`]) is loaded from the store at start and keeps the records in memory; every
//! change goes to the node first, then to the store, then to memory, one change at a time.
//!
//! A spare's life:
//!
//! ```text
//! add: create component -> write spare label -> store record (free)
//!                             \-- any failure: the component is deleted again
//! take (for a volume's column): record in use, durably      --> the caller writes the
//!                                                               volume's label over it
//! release: spare label written again -> record free, durably
//! remove (free only): delete component -> drop record
//! volume deleted: its spares became its columns and were deleted with it -> drop records
//! ```
//!
//! **Why a spare label, and not a component label in state `spare`:** a component label names a
//! volume, its geometry and every member; a spare belongs to none. The spare label has its own
//! magic (`dagraid-spare-label`), so [`dagraid_core::meta::label::ComponentLabel::decode`]
//! refuses it ("not a dagraid label") and volume assembly can never take a spare for a member:
//! a column whose component carries one is a foreign component to it.
//!
//! **A released spare may still hold the data of the column it stood in for.** That is fine:
//! a volume that takes it again reads a column only below the column's recovery watermark,
//! i.e. stripes the reconstruction has rewritten; a stripe not yet rebuilt is never read from
//! it (docs/STATE.md, component states). The data is never served as anything else.
//!
//! **Removing a spare whose node is down** removes it from the pool anyway (it could not be
//! taken while its node is down, and an administrator removing it wants it gone): the delete
//! is tried, and when it fails the component is left on its node, logged with its id, to be
//! deleted there by hand. The spare label on it says what it is.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{NodeClientError, NodeErrorKind};
use crate::node_client::{LABEL_AREA_BYTES, SlotArea};
use crate::registry::{NodeRegistry, RegisteredNode};
use crate::service_error::ServiceError;
use crate::store::{SPARE_RECORD_VERSION, Store, StoreError};

pub use crate::store::{SpareRecord, SpareUse};

/// Marks a label area's bytes as a spare label (distinct from the component label's magic).
pub const SPARE_LABEL_MAGIC: &str = "dagraid-spare-label";
/// The spare label format this code writes and reads (a newer one is refused).
pub const SPARE_LABEL_VERSION: u32 = 1;
/// Block size when AddSpare gives none (the volumes' default).
pub const DEFAULT_SPARE_BLOCK_SIZE: u32 = 4096;
/// Smallest block size a storage node accepts (as for volumes).
pub const MIN_SPARE_BLOCK_SIZE: u32 = 512;
/// Largest block size a storage node accepts (as for volumes).
pub const MAX_SPARE_BLOCK_SIZE: u32 = 1 << 20;

/// The label of a free spare, in its component's label area (JSON, like the component label,
/// so an operator can read it). `docs/STATE.md` has the format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpareLabel {
    /// [`SPARE_LABEL_MAGIC`].
    pub magic: String,
    /// [`SPARE_LABEL_VERSION`].
    pub version: u32,
    /// The cluster of the coordinator that added it.
    pub cluster_id: String,
    /// The spare's id (its component id).
    pub spare_id: String,
    /// The node holding it.
    pub node_id: String,
    /// The component's serial.
    pub serial: u64,
    /// Bytes per block.
    pub block_size: u32,
    /// Blocks of the component.
    pub block_count: u64,
}

/// Why spare label bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpareLabelError {
    /// Not JSON of a spare label (a component label, say).
    #[error("not a spare label: {0}")]
    Malformed(String),
    /// A spare label of a newer format.
    #[error(
        "spare label format version {found} is newer than this dagraid's {SPARE_LABEL_VERSION}"
    )]
    NewerVersion {
        /// The version found.
        found: u32,
    },
}

impl SpareLabel {
    /// The label of `record`'s spare in cluster `cluster_id`.
    pub fn of(cluster_id: &str, record: &SpareRecord) -> SpareLabel {
        SpareLabel {
            magic: SPARE_LABEL_MAGIC.to_owned(),
            version: SPARE_LABEL_VERSION,
            cluster_id: cluster_id.to_owned(),
            spare_id: record.id.clone(),
            node_id: record.node_id.clone(),
            serial: record.serial,
            block_size: record.block_size,
            block_count: record.block_count,
        }
    }

    /// The bytes stored in the label area.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses spare label bytes; anything else (a component label, garbage) is `Malformed`.
    pub fn decode(bytes: &[u8]) -> Result<SpareLabel, SpareLabelError> {
        #[derive(Deserialize)]
        struct Head {
            magic: String,
            version: u32,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| SpareLabelError::Malformed(e.to_string()))?;
        if head.magic != SPARE_LABEL_MAGIC {
            return Err(SpareLabelError::Malformed(format!(
                "magic {:?}",
                head.magic
            )));
        }
        if head.version > SPARE_LABEL_VERSION {
            return Err(SpareLabelError::NewerVersion {
                found: head.version,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| SpareLabelError::Malformed(e.to_string()))
    }
}

/// The hot spares of one coordinator (see the module doc).
#[derive(Debug)]
pub struct SparePool {
    store: Store,
    registry: Arc<NodeRegistry>,
    /// The records by id: a copy of the store's table, changed only after the store.
    spares: RwLock<BTreeMap<String, SpareRecord>>,
    /// Serialises add, remove, take, release and volume deletions.
    admin: tokio::sync::Mutex<()>,
    /// Where spare ids come from.
    ids: Arc<crate::ids::IdSource>,
}

impl SparePool {
    /// The pool of `records` (the store's `spares` table, read at start), over `registry`'s
    /// nodes.
    pub fn new(store: Store, registry: Arc<NodeRegistry>, records: Vec<SpareRecord>) -> Self {
        Self {
            store,
            registry,
            spares: RwLock::new(records.into_iter().map(|r| (r.id.clone(), r)).collect()),
            admin: tokio::sync::Mutex::new(()),
            ids: Arc::new(crate::ids::IdSource::os()),
        }
    }

    /// This pool drawing its spare ids from `ids` (the simulation's seeded source).
    pub fn with_ids(mut self, ids: Arc<crate::ids::IdSource>) -> Self {
        self.ids = ids;
        self
    }

    /// Reads the pool from the store.
    pub async fn load(store: Store, registry: Arc<NodeRegistry>) -> Result<Self, StoreError> {
        let records = store.spares_async().await?;
        Ok(Self::new(store, registry, records))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, SpareRecord>> {
        self.spares.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, SpareRecord>> {
        self.spares.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every spare, by id.
    pub fn list(&self) -> Vec<SpareRecord> {
        self.read().values().cloned().collect()
    }

    /// Spare `id`, if the pool has it.
    pub fn get(&self, id: &str) -> Option<SpareRecord> {
        self.read().get(id).cloned()
    }

    /// Whether the node of `record` answered its last health check.
    pub fn reachable(&self, record: &SpareRecord) -> bool {
        self.registry
            .get(&record.node_id)
            .is_some_and(|n| n.reachable())
    }

    /// Spares on node `node_id` (free or not).
    pub fn on_node(&self, node_id: &str) -> usize {
        self.read()
            .values()
            .filter(|r| r.node_id == node_id)
            .count()
    }

    /// The free spares a column of `block_size`-byte blocks, `blocks_needed` of them, could
    /// take now: same block size, at least as many blocks, on a registered node that answered
    /// its last health check and is not one of `exclude_nodes` (the nodes holding the volume's
    /// columns). Best fit first: fewest blocks, then id.
    pub fn fits(
        &self,
        block_size: u32,
        blocks_needed: u64,
        exclude_nodes: &[String],
    ) -> Vec<SpareRecord> {
        let mut fit: Vec<SpareRecord> = self
            .read()
            .values()
            .filter(|r| {
                r.in_use.is_none()
                    && r.block_size == block_size
                    && r.block_count >= blocks_needed
                    && !exclude_nodes.contains(&r.node_id)
                    && self.reachable(r)
            })
            .cloned()
            .collect();
        fit.sort_by(|a, b| a.block_count.cmp(&b.block_count).then(a.id.cmp(&b.id)));
        fit
    }

    /// The spares volume `volume` (by name) uses.
    pub fn used_by(&self, volume: &str) -> Vec<SpareRecord> {
        self.read()
            .values()
            .filter(|r| r.in_use.as_ref().is_some_and(|u| u.volume == volume))
            .cloned()
            .collect()
    }

    /// Adds a spare of at least `size_bytes` (rounded up to whole blocks of `block_size`, 0:
    /// [`DEFAULT_SPARE_BLOCK_SIZE`]) on node `node_id`: creates the component, writes its spare
    /// label, stores its record. If the label or the record cannot be written, the component is
    /// deleted again. Refused: a size of 0 (the service resolves the default size before), a
    /// bad block size, an unknown or unreachable node.
    pub async fn add(
        &self,
        node_id: &str,
        size_bytes: u64,
        block_size: u32,
    ) -> Result<SpareRecord, ServiceError> {
        let bad = |detail: String| ServiceError::BadSpare { detail };
        if size_bytes == 0 {
            return Err(bad("the size must be at least 1 byte".into()));
        }
        let block_size = match block_size {
            0 => DEFAULT_SPARE_BLOCK_SIZE,
            b => b,
        };
        if !block_size.is_power_of_two()
            || !(MIN_SPARE_BLOCK_SIZE..=MAX_SPARE_BLOCK_SIZE).contains(&block_size)
        {
            return Err(bad(format!(
                "block size {block_size} is not a power of two from {MIN_SPARE_BLOCK_SIZE} to {MAX_SPARE_BLOCK_SIZE}"
            )));
        }
        let block_count = size_bytes.div_ceil(u64::from(block_size));
        let node = self.registry.get(node_id).ok_or_else(|| {
            bad(format!(
                "unknown storage node {node_id:?} (known: {})",
                self.registry
                    .nodes()
                    .iter()
                    .map(|n| n.id())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let health = node.health();
        if !health.reachable {
            return Err(ServiceError::SpareNodeUnavailable {
                node: node_id.to_owned(),
                detail: if health.detail.is_empty() {
                    "not checked yet".to_owned()
                } else {
                    health.detail
                },
            });
        }

        let _one_at_a_time = self.admin.lock().await;
        let id = format!("spare-{:016x}", self.ids.u64());
        let node_error = |operation, source: NodeClientError| ServiceError::SpareNode {
            operation,
            node: node_id.to_owned(),
            spare: id.clone(),
            source: Box::new(source),
        };
        let info = match node
            .client()
            .create_component(&id, block_size, block_count, 0)
            .await
        {
            Ok(info) => info,
            Err(e) => {
                // A creation that timed out may still have happened.
                delete_component(node, &id).await;
                return Err(node_error("creating the component", e));
            }
        };
        if info.block_size != block_size || info.block_count < block_count {
            delete_component(node, &id).await;
            return Err(ServiceError::Internal(format!(
                "storage node {node_id} created spare {id} with {} blocks of {} bytes, not {block_count} of {block_size}",
                info.block_count, info.block_size
            )));
        }
        let record = SpareRecord {
            version: SPARE_RECORD_VERSION,
            id: id.clone(),
            node_id: node_id.to_owned(),
            node_address: node.address().to_owned(),
            serial: info.serial,
            block_size,
            block_count: info.block_count,
            in_use: None,
        };
        if let Err(e) = self.write_label(node, &record).await {
            delete_component(node, &id).await;
            return Err(node_error("writing the spare label", e));
        }
        if let Err(e) = self.store.insert_spare_async(record.clone()).await {
            delete_component(node, &id).await;
            return Err(ServiceError::Store(e));
        }
        self.write().insert(id.clone(), record.clone());
        tracing::info!(spare = %id, node = node_id, block_size, blocks = record.block_count, "spare added");
        Ok(record)
    }

    /// Gives up spare `id` after a column failed on it and another component took the
    /// column's place: returned to the pool if its spare label can be written again, else (its
    /// node does not answer) dropped from the pool, its component left on the node with the
    /// volume's old label (an assembly reads only the members its record names, so it is never
    /// taken for one). Returns whether it went back to the pool.
    pub async fn retire(&self, id: &str) -> Result<bool, ServiceError> {
        match self.release(id).await {
            Ok(()) => Ok(true),
            Err(ServiceError::UnknownSpare { .. }) => Ok(false),
            Err(e) => {
                let _one_at_a_time = self.admin.lock().await;
                tracing::warn!(spare = id, error = %e, "a spare a column failed on cannot be returned to the pool: it is dropped from it (its component stays on its node)");
                self.store.remove_spare_async(id.to_owned()).await?;
                self.write().remove(id);
                Ok(false)
            }
        }
    }

    /// Removes free spare `id`: deletes its component on its node, then its record. A spare in
    /// use is refused (`spare-in-use`). When its node is down (or not registered) the spare
    /// leaves the pool anyway and its component is left on the node, logged (module doc).
    pub async fn remove(&self, id: &str) -> Result<(), ServiceError> {
        let _one_at_a_time = self.admin.lock().await;
        let record = self
            .get(id)
            .ok_or_else(|| ServiceError::UnknownSpare { id: id.to_owned() })?;
        if let Some(u) = &record.in_use {
            return Err(ServiceError::SpareInUse {
                id: id.to_owned(),
                volume: u.volume.clone(),
                column: u.column,
            });
        }
        match self.registry.get(&record.node_id) {
            Some(node) => delete_component(node, id).await,
            None => {
                tracing::warn!(spare = id, node = %record.node_id, "spare removed from the pool; its storage node is not registered, so its component is left there (delete it by hand)")
            }
        }
        self.store.remove_spare_async(id.to_owned()).await?;
        self.write().remove(id);
        tracing::info!(spare = id, node = %record.node_id, "spare removed");
        Ok(())
    }

    /// Marks free spare `id` in use by `column` of volume `volume` (id `volume_id`), durably,
    /// and returns it. The caller then writes the volume's label over the spare label. Refused:
    /// an unknown spare, one already in use.
    pub async fn take(
        &self,
        id: &str,
        volume: &str,
        volume_id: &str,
        column: u32,
    ) -> Result<SpareRecord, ServiceError> {
        let _one_at_a_time = self.admin.lock().await;
        let mut record = self
            .get(id)
            .ok_or_else(|| ServiceError::UnknownSpare { id: id.to_owned() })?;
        if let Some(u) = &record.in_use {
            return Err(ServiceError::SpareInUse {
                id: id.to_owned(),
                volume: u.volume.clone(),
                column: u.column,
            });
        }
        record.in_use = Some(SpareUse {
            volume: volume.to_owned(),
            volume_id: volume_id.to_owned(),
            column,
        });
        self.store.update_spare_async(record.clone()).await?;
        self.write().insert(id.to_owned(), record.clone());
        tracing::info!(spare = id, volume, column, "spare taken");
        Ok(record)
    }

    /// Returns spare `id` to the pool: writes its spare label again (so an assembly or a human
    /// sees a spare, not a column), then marks it free, durably. Its old data stays (module
    /// doc). A free spare is left as it is. If the label cannot be written the spare stays in
    /// use (it would carry a volume's label) and the error says why.
    pub async fn release(&self, id: &str) -> Result<(), ServiceError> {
        let _one_at_a_time = self.admin.lock().await;
        let mut record = self
            .get(id)
            .ok_or_else(|| ServiceError::UnknownSpare { id: id.to_owned() })?;
        if record.in_use.is_none() {
            return Ok(());
        }
        let node = self.registry.get(&record.node_id).ok_or_else(|| {
            ServiceError::SpareNodeUnavailable {
                node: record.node_id.clone(),
                detail: "not registered (missing from the configuration)".into(),
            }
        })?;
        self.write_label(node, &record)
            .await
            .map_err(|source| ServiceError::SpareNode {
                operation: "writing the spare label",
                node: record.node_id.clone(),
                spare: id.to_owned(),
                source: Box::new(source),
            })?;
        let was = record.in_use.take();
        self.store.update_spare_async(record.clone()).await?;
        self.write().insert(id.to_owned(), record);
        if let Some(u) = was {
            tracing::info!(spare = id, volume = %u.volume, column = u.column, "spare released");
        }
        Ok(())
    }

    /// Volume `volume_id` was deleted: every spare it had taken became one of its columns and
    /// was deleted with it, so its record leaves the pool (it is not freed: there is no
    /// component left to use). The component is deleted again, best effort, in case the volume
    /// no longer named it (a rebuild stopped before the column switched over). Returns the
    /// spares dropped.
    pub async fn volume_deleted(&self, volume_id: &str) -> Result<Vec<SpareRecord>, ServiceError> {
        let _one_at_a_time = self.admin.lock().await;
        let used: Vec<SpareRecord> = self
            .read()
            .values()
            .filter(|r| r.in_use.as_ref().is_some_and(|u| u.volume_id == volume_id))
            .cloned()
            .collect();
        for record in &used {
            if let Some(node) = self.registry.get(&record.node_id) {
                delete_component(node, &record.id).await;
            }
            self.store.remove_spare_async(record.id.clone()).await?;
            self.write().remove(&record.id);
            tracing::info!(spare = %record.id, volume_id, "spare dropped with its volume");
        }
        Ok(used)
    }

    /// Writes the spare label of `record` on `node`.
    async fn write_label(
        &self,
        node: &RegisteredNode,
        record: &SpareRecord,
    ) -> Result<u64, NodeClientError> {
        let label = SpareLabel::of(self.registry.fencing().cluster_id(), record).encode();
        debug_assert!(label.len() <= LABEL_AREA_BYTES);
        node.client()
            .write_slot(&record.id, SlotArea::Label, Bytes::from(label))
            .await
    }
}

/// Deletes component `id` on `node`, best effort: an unknown component is already gone, any
/// other failure is logged (the component is left on the node).
async fn delete_component(node: &RegisteredNode, id: &str) {
    match node.client().delete_component(id).await {
        Ok(()) => {}
        Err(e) if e.kind() == Some(&NodeErrorKind::UnknownComponent) => {}
        Err(error) => {
            tracing::warn!(node = node.id(), component = %id, %error, "spare component not deleted (left on the node; delete it by hand)");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dagraid_core::meta::label::ComponentLabel;

    use super::*;
    use crate::config::NodeSpec;
    use crate::node_client::{FencingContext, NodeClientConfig};

    fn record(id: &str, node: &str, block_size: u32, blocks: u64) -> SpareRecord {
        SpareRecord {
            version: SPARE_RECORD_VERSION,
            id: id.into(),
            node_id: node.into(),
            node_address: "127.0.0.1:1".into(),
            serial: 5,
            block_size,
            block_count: blocks,
            in_use: None,
        }
    }

    /// A pool over `nodes` (none answers: their addresses are closed ports), and its store.
    fn pool(records: Vec<SpareRecord>) -> (tempfile::TempDir, SparePool) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        for r in &records {
            store.insert_spare(r).unwrap();
        }
        let nodes: Vec<NodeSpec> = ["n1", "n2", "n3", "n4"]
            .iter()
            .map(|id| NodeSpec {
                id: (*id).into(),
                address: "127.0.0.1:1".into(),
            })
            .collect();
        let registry = Arc::new(
            NodeRegistry::new(
                &nodes,
                &[],
                FencingContext::new("dagraid", 0),
                NodeClientConfig::default(),
                Duration::from_millis(100),
            )
            .unwrap(),
        );
        (dir, SparePool::new(store, registry, records))
    }

    /// Makes the registry believe `node` answered (the pool only reads health).
    fn mark_reachable(pool: &SparePool, node: &str) {
        let n = pool.registry.get(node).unwrap();
        n.set_health_for_test(true);
    }

    #[tokio::test]
    async fn fits_prefers_the_smallest_fit_and_skips_used_excluded_and_unreachable_nodes() {
        let (_dir, pool) = pool(vec![
            record("spare-a", "n1", 4096, 200),
            record("spare-b", "n2", 4096, 100),
            record("spare-c", "n3", 4096, 100),
            record("spare-d", "n2", 512, 1000),
            record("spare-e", "n4", 4096, 1000),
            record("spare-f", "gone", 4096, 1000),
            record("spare-g", "n1", 4096, 99),
        ]);
        // Nothing answered yet: nothing fits.
        assert!(pool.fits(4096, 1, &[]).is_empty());
        for n in ["n1", "n2", "n3"] {
            mark_reachable(&pool, n);
        }
        let ids = |v: Vec<SpareRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        // Smallest first, ties by id; too small, another block size, an unreachable (n4) or
        // unregistered node: left out.
        assert_eq!(
            ids(pool.fits(4096, 100, &[])),
            ["spare-b", "spare-c", "spare-a"]
        );
        assert_eq!(
            ids(pool.fits(4096, 100, &["n2".into()])),
            ["spare-c", "spare-a"]
        );
        assert_eq!(ids(pool.fits(512, 1000, &[])), ["spare-d"]);
        assert_eq!(ids(pool.fits(4096, 201, &[])), Vec::<String>::new());
        // A spare in use does not fit.
        pool.take("spare-b", "vol0", "v1", 2).await.unwrap();
        assert_eq!(ids(pool.fits(4096, 100, &[])), ["spare-c", "spare-a"]);
        assert_eq!(pool.on_node("n2"), 2);
    }

    #[tokio::test]
    async fn take_is_durable_and_refuses_a_spare_in_use_or_unknown() {
        let (dir, pool) = pool(vec![record("spare-a", "n1", 4096, 100)]);
        let taken = pool.take("spare-a", "vol0", "v1", 3).await.unwrap();
        assert_eq!(
            taken.in_use,
            Some(SpareUse {
                volume: "vol0".into(),
                volume_id: "v1".into(),
                column: 3
            })
        );
        let e = pool.take("spare-a", "vol1", "v2", 0).await.unwrap_err();
        assert!(
            matches!(&e, ServiceError::SpareInUse { volume, column: 3, .. } if volume == "vol0"),
            "{e}"
        );
        let e = pool.take("spare-x", "vol1", "v2", 0).await.unwrap_err();
        assert!(matches!(e, ServiceError::UnknownSpare { .. }), "{e}");
        // Removing a spare in use is refused, and it stays.
        let e = pool.remove("spare-a").await.unwrap_err();
        assert!(matches!(e, ServiceError::SpareInUse { .. }), "{e}");
        assert_eq!(pool.used_by("vol0").len(), 1);
        assert!(pool.used_by("vol1").is_empty());
        // Durable: the store says the same.
        pool.store.close();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(store.spares().unwrap(), vec![taken]);
    }

    #[tokio::test]
    async fn release_needs_the_label_written_and_a_free_spare_is_left_alone() {
        let (_dir, pool) = pool(vec![record("spare-a", "n1", 4096, 100)]);
        // Free: nothing to do, no node call.
        pool.release("spare-a").await.unwrap();
        let e = pool.release("spare-x").await.unwrap_err();
        assert!(matches!(e, ServiceError::UnknownSpare { .. }), "{e}");
        pool.take("spare-a", "vol0", "v1", 1).await.unwrap();
        // Its node does not answer: the label cannot be written, so it stays in use.
        let e = pool.release("spare-a").await.unwrap_err();
        assert!(
            matches!(
                &e,
                ServiceError::SpareNode {
                    operation: "writing the spare label",
                    ..
                }
            ),
            "{e}"
        );
        assert!(pool.get("spare-a").unwrap().in_use.is_some());
    }

    #[tokio::test]
    async fn a_deleted_volume_drops_the_spares_it_took() {
        let (_dir, pool) = pool(vec![
            record("spare-a", "n1", 4096, 100),
            record("spare-b", "n2", 4096, 100),
            record("spare-c", "n3", 4096, 100),
        ]);
        pool.take("spare-a", "vol0", "v1", 1).await.unwrap();
        pool.take("spare-b", "vol1", "v2", 0).await.unwrap();
        let dropped = pool.volume_deleted("v1").await.unwrap();
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].id, "spare-a");
        let left: Vec<String> = pool.list().into_iter().map(|r| r.id).collect();
        assert_eq!(left, ["spare-b", "spare-c"]);
        assert_eq!(pool.store.spares().unwrap().len(), 2);
        assert!(pool.volume_deleted("v9").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn add_refuses_bad_requests_before_any_node_call() {
        let (_dir, pool) = pool(vec![]);
        let e = pool.add("n1", 0, 4096).await.unwrap_err();
        assert!(
            matches!(&e, ServiceError::BadSpare { detail } if detail.contains("at least 1 byte")),
            "{e}"
        );
        let e = pool.add("n1", 1 << 20, 1000).await.unwrap_err();
        assert!(e.to_string().contains("block size 1000"), "{e}");
        let e = pool.add("n9", 1 << 20, 0).await.unwrap_err();
        assert!(
            matches!(&e, ServiceError::BadSpare { detail } if detail.contains("unknown storage node \"n9\"") && detail.contains("n1, n2")),
            "{e}"
        );
        let e = pool.add("n1", 1 << 20, 0).await.unwrap_err();
        assert!(
            matches!(e, ServiceError::SpareNodeUnavailable { .. }),
            "{e}"
        );
        assert!(pool.list().is_empty());
        assert!(pool.store.spares().unwrap().is_empty());
    }

    #[test]
    fn a_spare_label_is_never_read_as_a_component_label() {
        let label = SpareLabel::of("dagraid", &record("spare-a", "n1", 4096, 100));
        let bytes = label.encode();
        assert!(bytes.len() <= LABEL_AREA_BYTES);
        assert_eq!(SpareLabel::decode(&bytes).unwrap(), label);
        let e = ComponentLabel::decode(&bytes).unwrap_err();
        assert!(e.to_string().contains("not a dagraid label"), "{e}");
        // And the other way round.
        assert!(matches!(
            SpareLabel::decode(br#"{"magic":"dagraid-component-label","version":2}"#),
            Err(SpareLabelError::Malformed(_))
        ));
        let mut newer = label;
        newer.version = SPARE_LABEL_VERSION + 1;
        assert_eq!(
            SpareLabel::decode(&newer.encode()),
            Err(SpareLabelError::NewerVersion {
                found: SPARE_LABEL_VERSION + 1
            })
        );
        let text =
            String::from_utf8(SpareLabel::of("c", &record("spare-a", "n1", 512, 8)).encode())
                .unwrap();
        assert!(text.contains(r#""magic": "dagraid-spare-label""#), "{text}");
    }
}
