//! The coordinator's embedded store: one redb file, `<data-dir>/coordinator.redb`.
//!
//! Tables:
//! - `meta` (`&str -> u64`): `format` (the store format, [`STORE_FORMAT`]) and `epoch` (the
//!   owner epoch of the coordinator's latest life).
//! - `volumes` (`&str -> &[u8]`): one [`VolumeRecord`] per volume, keyed by name, encoded as JSON
//!   with a `version` field ([`VOLUME_RECORD_VERSION`]) so that a later format can migrate it.
//!
//! Every change is one write transaction, durable when it returns (redb's default immediate
//! durability: the commit is fsynced). redb locks the file, so a second coordinator on the same
//! data directory is refused ([`StoreError::InUse`]).
//!
//! [`VolumeStates`] is the [`StateRecorder`] of one volume: the access pipeline calls it before
//! acknowledging an access that marked a column failed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use dagraid_core::access::StateRecorder;
use dagraid_core::array::{ComponentState, ComponentStates};
use dagraid_core::layout::{Geometry, Layout, RaidLevel};
use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Format of the store as a whole (tables and keys).
pub const STORE_FORMAT: u64 = 1;
/// Version of the [`VolumeRecord`] encoding this coordinator writes.
pub const VOLUME_RECORD_VERSION: u32 = 1;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const VOLUMES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("volumes");
const FORMAT_KEY: &str = "format";
const EPOCH_KEY: &str = "epoch";

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
    /// No record of that name (and id).
    #[error("no volume {0:?} is stored")]
    NotFound(String),
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

/// Component state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateRecord {
    /// In use.
    Optimal,
    /// Out of use until rebuilt.
    Failed,
}

impl StateRecord {
    /// The stored form of `state`; `None` for a state this format cannot hold (states that come
    /// with rebuild need a new record version).
    pub fn of(state: ComponentState) -> Option<StateRecord> {
        match state {
            ComponentState::Optimal => Some(StateRecord::Optimal),
            ComponentState::Failed => Some(StateRecord::Failed),
            _ => None,
        }
    }
}

impl From<StateRecord> for ComponentState {
    fn from(state: StateRecord) -> Self {
        match state {
            StateRecord::Optimal => ComponentState::Optimal,
            StateRecord::Failed => ComponentState::Failed,
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
    /// Its state.
    pub state: StateRecord,
}

/// A stored volume: identity, layout, and per column its node, component and state.
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
    /// The columns, in column order.
    pub components: Vec<ComponentRecord>,
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

    fn encode(&self) -> Vec<u8> {
        // A struct of plain fields always serialises.
        serde_json::to_vec(self).expect("volume records serialise")
    }

    /// Decodes a stored record, refusing versions this coordinator does not know (issue 7's
    /// migrations hook in here: read `version`, convert older versions forward).
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
        if version != VOLUME_RECORD_VERSION {
            return Err(bad(format!(
                "record version {version}; this coordinator reads version {VOLUME_RECORD_VERSION} only (written by a newer coordinator?)"
            )));
        }
        let record: VolumeRecord = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
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
}

impl Store {
    /// Opens (or creates) the store at `path`. Blocking: call it from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open = |detail: String| StoreError::Open {
            path: path.to_owned(),
            detail,
        };
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.to_owned(),
            },
            other => open(other.to_string()),
        })?;
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
        }
        txn.commit().map_err(|e| open(e.to_string()))?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                db: RwLock::new(Some(db)),
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

    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.inner.db.read().unwrap_or_else(|p| p.into_inner());
        let db = guard.as_ref().ok_or(StoreError::Closed)?;
        f(db)
    }

    /// Runs a blocking store operation off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
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

    /// Takes a new owner epoch, durably: the stored epoch plus one, or `at_least` if that is
    /// higher. Returns it.
    pub fn take_epoch(&self, at_least: u64) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(io("epoch"))?;
            let epoch = {
                let mut meta = txn.open_table(META).map_err(io("epoch"))?;
                let stored = meta
                    .get(EPOCH_KEY)
                    .map_err(io("epoch"))?
                    .map(|v| v.value())
                    .unwrap_or(0);
                let epoch = stored.saturating_add(1).max(at_least);
                meta.insert(EPOCH_KEY, epoch).map_err(io("epoch"))?;
                epoch
            };
            txn.commit().map_err(io("epoch"))?;
            Ok(epoch)
        })
    }

    /// Every stored volume, by name. A record that cannot be decoded is an error.
    pub fn volumes(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(io("list"))?;
            let table = txn.open_table(VOLUMES).map_err(io("list"))?;
            let mut records = Vec::new();
            for entry in table.iter().map_err(io("list"))? {
                let (key, value) = entry.map_err(io("list"))?;
                records.push(VolumeRecord::decode(key.value(), value.value())?);
            }
            Ok(records)
        })
    }

    /// Stores a new volume; refuses a name already stored.
    pub fn insert_volume(&self, record: &VolumeRecord) -> Result<(), StoreError> {
        let bytes = record.encode();
        self.with_db(|db| {
            let txn = db.begin_write().map_err(io("insert"))?;
            {
                let mut table = txn.open_table(VOLUMES).map_err(io("insert"))?;
                if table
                    .get(record.name.as_str())
                    .map_err(io("insert"))?
                    .is_some()
                {
                    return Err(StoreError::Exists(record.name.clone()));
                }
                table
                    .insert(record.name.as_str(), bytes.as_slice())
                    .map_err(io("insert"))?;
            }
            txn.commit().map_err(io("insert"))?;
            Ok(())
        })
    }

    /// Removes volume `name`; returns whether it was stored.
    pub fn remove_volume(&self, name: &str) -> Result<bool, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(io("remove"))?;
            let removed = {
                let mut table = txn.open_table(VOLUMES).map_err(io("remove"))?;
                table.remove(name).map_err(io("remove"))?.is_some()
            };
            txn.commit().map_err(io("remove"))?;
            Ok(removed)
        })
    }

    /// Replaces the component states of volume `name` (whose id must be `id`: a volume deleted
    /// and created again under the same name is another volume) in one write transaction.
    pub fn update_states(
        &self,
        name: &str,
        id: &str,
        states: &[ComponentState],
    ) -> Result<(), StoreError> {
        let stored: Vec<StateRecord> = states
            .iter()
            .map(|s| {
                StateRecord::of(*s).ok_or_else(|| StoreError::Io {
                    operation: "update",
                    detail: format!("component state {s} cannot be stored by this version"),
                })
            })
            .collect::<Result<_, _>>()?;
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
                if record.components.len() != stored.len() {
                    return Err(StoreError::BadRecord {
                        name: name.to_owned(),
                        detail: format!(
                            "{} columns stored, {} states given",
                            record.components.len(),
                            stored.len()
                        ),
                    });
                }
                for (c, s) in record.components.iter_mut().zip(stored) {
                    c.state = s;
                }
                let bytes = record.encode();
                table.insert(name, bytes.as_slice()).map_err(io("update"))?;
            }
            txn.commit().map_err(io("update"))?;
            Ok(())
        })
    }

    /// [`Store::take_epoch`] off the async threads.
    pub async fn take_epoch_async(&self, at_least: u64) -> Result<u64, StoreError> {
        self.blocking(move |s| s.take_epoch(at_least)).await
    }

    /// [`Store::insert_volume`] off the async threads.
    pub async fn insert_volume_async(&self, record: VolumeRecord) -> Result<(), StoreError> {
        self.blocking(move |s| s.insert_volume(&record)).await
    }

    /// [`Store::remove_volume`] off the async threads.
    pub async fn remove_volume_async(&self, name: String) -> Result<bool, StoreError> {
        self.blocking(move |s| s.remove_volume(&name)).await
    }

    /// [`Store::update_states`] off the async threads.
    pub async fn update_states_async(
        &self,
        name: String,
        id: String,
        states: Vec<ComponentState>,
    ) -> Result<(), StoreError> {
        self.blocking(move |s| s.update_states(&name, &id, &states))
            .await
    }
}

/// The [`StateRecorder`] of one volume: writes its component states to the store.
#[derive(Debug, Clone)]
pub struct VolumeStates {
    store: Store,
    name: String,
    id: String,
}

impl VolumeStates {
    /// The recorder of volume `name` with id `id`.
    pub fn new(store: Store, name: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            store,
            name: name.into(),
            id: id.into(),
        }
    }
}

impl StateRecorder for VolumeStates {
    fn record<'a>(&'a self, states: &'a ComponentStates) -> BoxFuture<'a, Result<(), String>> {
        let states = states.states().to_vec();
        Box::pin(async move {
            self.store
                .update_states_async(self.name.clone(), self.id.clone(), states)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> VolumeRecord {
        VolumeRecord {
            version: VOLUME_RECORD_VERSION,
            name: name.into(),
            id: "v0123".into(),
            level: LevelRecord::Raid5,
            stripe_unit_blocks: 16,
            block_size: 4096,
            blocks_per_column: 64,
            components: (0..3)
                .map(|c| ComponentRecord {
                    column: c,
                    node_id: format!("n{c}"),
                    node_address: format!("127.0.0.1:{}", 7000 + c),
                    component_id: format!("v0123-c{c}"),
                    state: StateRecord::Optimal,
                })
                .collect(),
        }
    }

    #[test]
    fn records_epochs_and_states_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.epoch().unwrap(), 0);
        assert_eq!(store.take_epoch(0).unwrap(), 1);
        assert_eq!(store.take_epoch(0).unwrap(), 2);
        assert_eq!(store.take_epoch(10).unwrap(), 10);
        store.insert_volume(&record("a")).unwrap();
        store.insert_volume(&record("b")).unwrap();
        assert_eq!(
            store.insert_volume(&record("a")),
            Err(StoreError::Exists("a".into()))
        );
        store
            .update_states(
                "a",
                "v0123",
                &[
                    ComponentState::Optimal,
                    ComponentState::Failed,
                    ComponentState::Optimal,
                ],
            )
            .unwrap();
        assert!(matches!(
            store.update_states("a", "other-id", &[ComponentState::Optimal; 3]),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.update_states("zz", "v0123", &[ComponentState::Optimal; 3]),
            Err(StoreError::NotFound(_))
        ));
        assert!(store.remove_volume("b").unwrap());
        assert!(!store.remove_volume("b").unwrap());

        // A second open while the first is live is refused, precisely.
        assert!(matches!(Store::open(&path), Err(StoreError::InUse { .. })));
        store.close();
        assert_eq!(store.epoch(), Err(StoreError::Closed));

        let store = Store::open(&path).unwrap();
        assert_eq!(store.epoch().unwrap(), 10);
        let volumes = store.volumes().unwrap();
        assert_eq!(volumes.len(), 1);
        assert_eq!(
            volumes[0].states(),
            vec![
                ComponentState::Optimal,
                ComponentState::Failed,
                ComponentState::Optimal
            ]
        );
        assert_eq!(volumes[0].layout().unwrap().columns(), 3);
    }

    #[test]
    fn records_of_an_unknown_version_are_refused() {
        let mut r = record("a");
        r.version = 2;
        let bytes = serde_json::to_vec(&r).unwrap();
        let err = VolumeRecord::decode("a", &bytes).unwrap_err();
        assert!(err.to_string().contains("record version 2"), "{err}");
        let err = VolumeRecord::decode("a", b"{}").unwrap_err();
        assert!(err.to_string().contains("no version"), "{err}");
        let ok = record("a");
        assert_eq!(VolumeRecord::decode("a", &ok.encode()).unwrap(), ok);
        assert!(VolumeRecord::decode("b", &ok.encode()).is_err());
    }

    #[test]
    fn a_file_that_is_not_a_store_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.redb");
        std::fs::write(&path, b"not a database at all, just some bytes").unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
    }

    #[tokio::test]
    async fn the_recorder_updates_the_volume_states() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.insert_volume(&record("a")).unwrap();
        let layout = record("a").layout().unwrap();
        let mut states = ComponentStates::all_optimal(3);
        states.mark_failed(&layout, 2).unwrap();
        let recorder = VolumeStates::new(store.clone(), "a", "v0123");
        recorder.record(&states).await.unwrap();
        assert_eq!(
            store.volumes().unwrap()[0].states()[2],
            ComponentState::Failed
        );
        let gone = VolumeStates::new(store.clone(), "nope", "v0123");
        assert!(gone.record(&states).await.is_err());
    }
}
