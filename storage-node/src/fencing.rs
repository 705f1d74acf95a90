//! Owner fencing: the node-level epoch, each component's own fence epoch, and the calls in flight
//! under each epoch.
//!
//! A call on a component is *admitted* by checking its epoch against max(node epoch, component
//! epoch) and registering it as in flight in one step under one lock, at the moment it is applied
//! (not when it arrived), so a write delayed past a [`Fencing::fence`] or a component fence is
//! refused. A higher node epoch is written to the node state file before anything is accepted
//! under it; a component's epoch is written to its file (by the node) before
//! [`Fencing::set_component_epoch`] makes it count. A mutating call at exactly a component's
//! fence epoch (the coordinator that fenced one component after a write with an unknown
//! outcome) is admitted on that component without raising the node epoch; a call above both
//! raises it (a newer owner). [`Fencing::fence`] returns once every
//! admitted call of an older epoch has finished, [`Fencing::drain`] once every such call on one
//! component has.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::error::NodeError;
use crate::node_state::{NODE_STATE_VERSION, NodeState, NodeStateFile};

/// The fencing state of a node.
pub struct Fencing {
    node_id: String,
    cluster_id: String,
    store: Option<NodeStateFile>,
    state: Mutex<EpochState>,
    /// Serialises epoch raises (each one persists the state file).
    raising: tokio::sync::Mutex<()>,
    /// Bumped whenever an in-flight call finishes.
    finished: watch::Sender<u64>,
}

struct EpochState {
    epoch: u64,
    /// Fence epochs of the components a component fence raised (absent: 0).
    component_epochs: HashMap<String, u64>,
    /// Admitted, unfinished calls per epoch, per component.
    in_flight: BTreeMap<u64, HashMap<String, usize>>,
}

impl EpochState {
    fn component_epoch(&self, component: &str) -> u64 {
        self.component_epochs.get(component).copied().unwrap_or(0)
    }

    /// Refuses `epoch` on `component` if it is below max(node epoch, component epoch).
    fn check(&self, component: &str, epoch: u64) -> Result<(), NodeError> {
        let component_epoch = self.component_epoch(component);
        if epoch < component_epoch && component_epoch > self.epoch {
            return Err(NodeError::StaleComponentEpoch {
                component: component.to_owned(),
                got: epoch,
                current: component_epoch,
            });
        }
        if epoch < self.epoch {
            return Err(NodeError::StaleEpoch {
                got: epoch,
                current: self.epoch,
            });
        }
        Ok(())
    }
}

/// Whether an admitted call may raise the node's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A mutating call: a newer epoch is persisted and adopted first.
    Mutating,
    /// A read: checked the same way, but a newer epoch raises nothing (a read changes nothing).
    Read,
}

/// An admitted call on a component; dropping it marks the call finished.
pub struct InFlight {
    fencing: Arc<Fencing>,
    epoch: u64,
    component: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut state = self.fencing.state();
            if let Some(calls) = state.in_flight.get_mut(&self.epoch) {
                if let Some(n) = calls.get_mut(&self.component) {
                    *n -= 1;
                    if *n == 0 {
                        calls.remove(&self.component);
                    }
                }
                if calls.is_empty() {
                    state.in_flight.remove(&self.epoch);
                }
            }
        }
        self.fencing.finished.send_modify(|v| *v += 1);
    }
}

impl Fencing {
    /// Fencing starting at `epoch`; raises are persisted to `store` (if any).
    pub fn new(
        node_id: String,
        cluster_id: String,
        epoch: u64,
        store: Option<NodeStateFile>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            cluster_id,
            store,
            state: Mutex::new(EpochState {
                epoch,
                component_epochs: HashMap::new(),
                in_flight: BTreeMap::new(),
            }),
            raising: tokio::sync::Mutex::new(()),
            finished: watch::channel(0).0,
        })
    }

    fn state(&self) -> MutexGuard<'_, EpochState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The node's cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The highest epoch accepted.
    pub fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// Refuses a call addressed to another cluster.
    pub fn check_cluster(&self, cluster_id: &str) -> Result<(), NodeError> {
        if cluster_id == self.cluster_id {
            Ok(())
        } else {
            Err(NodeError::WrongCluster {
                got: cluster_id.to_owned(),
                expected: self.cluster_id.clone(),
            })
        }
    }

    /// The fence epoch of `component` (0 when no component fence raised it).
    pub fn component_epoch(&self, component: &str) -> u64 {
        self.state().component_epoch(component)
    }

    /// The epoch a call on `component` needs at least: max(node epoch, component epoch).
    pub fn effective_epoch(&self, component: &str) -> u64 {
        let state = self.state();
        state.epoch.max(state.component_epoch(component))
    }

    /// Makes `epoch` the fence epoch of `component` (if higher). The caller has made it durable.
    pub fn set_component_epoch(&self, component: &str, epoch: u64) {
        let mut state = self.state();
        let entry = state
            .component_epochs
            .entry(component.to_owned())
            .or_default();
        *entry = (*entry).max(epoch);
    }

    /// Forgets the fence epoch of a deleted component.
    pub fn forget_component(&self, component: &str) {
        self.state().component_epochs.remove(component);
    }

    /// Refuses a component fence at `epoch` below max(node epoch, component epoch), or in
    /// another cluster.
    pub fn check_component_fence(
        &self,
        cluster_id: &str,
        component: &str,
        epoch: u64,
    ) -> Result<(), NodeError> {
        self.check_cluster(cluster_id)?;
        self.state().check(component, epoch)
    }

    /// Admits a mutating call of `epoch` on `component`: refuses an epoch below max(node epoch,
    /// component epoch), durably raises the node's epoch to a newer one (unless `epoch` is the
    /// component's own fence epoch), and registers the call as in flight until the returned
    /// guard drops.
    pub async fn admit(
        self: &Arc<Self>,
        cluster_id: &str,
        component: &str,
        epoch: u64,
    ) -> Result<InFlight, NodeError> {
        self.admit_as(cluster_id, component, epoch, Kind::Mutating)
            .await
    }

    /// Admits a read of `epoch` on `component`: checked like [`Fencing::admit`], but an epoch
    /// newer than the node's is admitted without raising it.
    pub async fn admit_read(
        self: &Arc<Self>,
        cluster_id: &str,
        component: &str,
        epoch: u64,
    ) -> Result<InFlight, NodeError> {
        self.admit_as(cluster_id, component, epoch, Kind::Read)
            .await
    }

    async fn admit_as(
        self: &Arc<Self>,
        cluster_id: &str,
        component: &str,
        epoch: u64,
        kind: Kind,
    ) -> Result<InFlight, NodeError> {
        self.check_cluster(cluster_id)?;
        loop {
            {
                let mut state = self.state();
                state.check(component, epoch)?;
                // A call at the component's own fence epoch (above the node's) is the fencing
                // owner's call on that component only: it raises nothing, or every other
                // component's calls at the owner epoch would be refused.
                let at_component_fence = epoch == state.component_epoch(component);
                if epoch == state.epoch || at_component_fence || kind == Kind::Read {
                    *state
                        .in_flight
                        .entry(epoch)
                        .or_default()
                        .entry(component.to_owned())
                        .or_default() += 1;
                    return Ok(InFlight {
                        fencing: self.clone(),
                        epoch,
                        component: component.to_owned(),
                    });
                }
            }
            self.raise(epoch).await?;
        }
    }

    /// Persists `epoch` and then makes it the node's epoch (no-op if not newer).
    async fn raise(&self, epoch: u64) -> Result<(), NodeError> {
        let _raising = self.raising.lock().await;
        if epoch <= self.epoch() {
            return Ok(());
        }
        if let Some(store) = &self.store {
            let store = store.clone();
            let record = NodeState {
                format_version: NODE_STATE_VERSION,
                node_id: self.node_id.clone(),
                cluster_id: self.cluster_id.clone(),
                epoch,
            };
            crate::backend::off_async(store.blocks(), move || store.store(&record))
                .await
                .map_err(|join| {
                    NodeError::io("persisting the epoch", std::io::Error::other(join))
                })??;
        }
        let mut state = self.state();
        state.epoch = state.epoch.max(epoch);
        Ok(())
    }

    /// Raises the epoch to `epoch` durably and waits until every call admitted under an older
    /// epoch has finished. Returns the node's epoch.
    pub async fn fence(&self, cluster_id: &str, epoch: u64) -> Result<u64, NodeError> {
        self.check_cluster(cluster_id)?;
        let current = self.epoch();
        if epoch < current {
            return Err(NodeError::StaleEpoch {
                got: epoch,
                current,
            });
        }
        self.raise(epoch).await?;
        self.drain(None, epoch).await?;
        Ok(self.epoch())
    }

    /// Waits until no call admitted under an epoch older than `epoch` is in flight: on
    /// `component`, or on any component when `None`.
    pub async fn drain(&self, component: Option<&str>, epoch: u64) -> Result<(), NodeError> {
        let mut finished = self.finished.subscribe();
        loop {
            {
                let state = self.state();
                let mut older = state.in_flight.range(..epoch);
                let busy = match component {
                    None => older.next().is_some(),
                    Some(id) => older.any(|(_, calls)| calls.contains_key(id)),
                };
                if !busy {
                    return Ok(());
                }
            }
            if finished.changed().await.is_err() {
                return Err(NodeError::ShuttingDown);
            }
        }
    }

    /// Calls in flight per epoch, all components together (tests).
    #[cfg(test)]
    fn in_flight(&self) -> BTreeMap<u64, usize> {
        self.state()
            .in_flight
            .iter()
            .map(|(epoch, calls)| (*epoch, calls.values().sum()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_and_foreign_calls_are_refused() {
        let fencing = Fencing::new("n".into(), "c".into(), 5, None);
        assert!(matches!(
            fencing.admit("c", "x", 4).await,
            Err(NodeError::StaleEpoch { got: 4, current: 5 })
        ));
        assert!(matches!(
            fencing.admit("other", "x", 5).await,
            Err(NodeError::WrongCluster { .. })
        ));
        let guard = fencing.admit("c", "x", 7).await.unwrap();
        assert_eq!(
            fencing.epoch(),
            7,
            "a newer epoch is accepted and becomes current"
        );
        assert!(fencing.admit("c", "x", 5).await.is_err());
        drop(guard);
        assert!(fencing.in_flight().is_empty());
    }

    #[tokio::test]
    async fn fence_waits_for_older_calls_only() {
        let fencing = Fencing::new("n".into(), "c".into(), 1, None);
        let old = fencing.admit("c", "x", 1).await.unwrap();
        let fence = tokio::spawn({
            let fencing = fencing.clone();
            async move { fencing.fence("c", 2).await }
        });
        // The fence raised the epoch at once, but cannot return while `old` is in flight.
        while fencing.epoch() != 2 {
            tokio::task::yield_now().await;
        }
        let new = fencing.admit("c", "x", 2).await.unwrap();
        assert!(
            fencing.admit("c", "x", 1).await.is_err(),
            "refused after the fence"
        );
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !fence.is_finished(),
            "fence returned with an older call in flight"
        );
        drop(old);
        assert_eq!(fence.await.unwrap().unwrap(), 2);
        drop(new);
    }

    #[tokio::test]
    async fn a_raise_is_persisted_before_it_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStateFile::new(dir.path());
        let fencing = Fencing::new("n".into(), "c".into(), 0, Some(store.clone()));
        drop(fencing.admit("c", "x", 3).await.unwrap());
        assert_eq!(store.load().unwrap().unwrap().epoch, 3);
        fencing.fence("c", 8).await.unwrap();
        assert_eq!(store.load().unwrap().unwrap().epoch, 8);
    }

    #[tokio::test]
    async fn a_component_epoch_refuses_older_calls_on_that_component_only() {
        let fencing = Fencing::new("n".into(), "c".into(), 3, None);
        fencing.set_component_epoch("a", 5);
        assert_eq!(fencing.effective_epoch("a"), 5);
        assert_eq!(fencing.effective_epoch("b"), 3);
        for epoch in [3, 4] {
            assert!(matches!(
                fencing.admit("c", "a", epoch).await,
                Err(NodeError::StaleComponentEpoch { ref component, got, current: 5 })
                    if component == "a" && got == epoch
            ));
            assert!(matches!(
                fencing.admit_read("c", "a", epoch).await,
                Err(NodeError::StaleComponentEpoch { .. })
            ));
        }
        // Another component only needs the node epoch.
        drop(fencing.admit("c", "b", 3).await.unwrap());
        // At the component's epoch: admitted, and the node epoch stays (the owner's calls on
        // the other components carry it).
        drop(fencing.admit("c", "a", 5).await.unwrap());
        assert_eq!(fencing.epoch(), 3);
        drop(fencing.admit("c", "b", 3).await.unwrap());
        // Above the component's epoch: a newer owner, the node epoch follows.
        drop(fencing.admit("c", "a", 6).await.unwrap());
        assert_eq!(fencing.epoch(), 6);
        // A node epoch above the component's takes over.
        drop(fencing.admit("c", "b", 7).await.unwrap());
        assert!(matches!(
            fencing.admit("c", "a", 5).await,
            Err(NodeError::StaleEpoch { got: 5, current: 7 })
        ));
        // A lower component epoch never lowers anything.
        fencing.set_component_epoch("a", 2);
        assert_eq!(fencing.component_epoch("a"), 5);
        fencing.forget_component("a");
        assert_eq!(fencing.component_epoch("a"), 0);
        assert!(fencing.in_flight().is_empty());
    }

    #[tokio::test]
    async fn reads_are_checked_but_raise_nothing() {
        let fencing = Fencing::new("n".into(), "c".into(), 3, None);
        assert!(matches!(
            fencing.admit_read("c", "a", 2).await,
            Err(NodeError::StaleEpoch { got: 2, current: 3 })
        ));
        assert!(matches!(
            fencing.admit_read("other", "a", 3).await,
            Err(NodeError::WrongCluster { .. })
        ));
        let read = fencing.admit_read("c", "a", 9).await.unwrap();
        assert_eq!(fencing.epoch(), 3, "a read raised the node epoch");
        assert_eq!(fencing.in_flight(), BTreeMap::from([(9, 1)]));
        drop(read);
        assert!(fencing.in_flight().is_empty());
    }

    #[tokio::test]
    async fn draining_a_component_waits_for_its_older_calls_only() {
        let fencing = Fencing::new("n".into(), "c".into(), 1, None);
        let on_a = fencing.admit("c", "a", 1).await.unwrap();
        let on_b = fencing.admit("c", "b", 1).await.unwrap();
        fencing.set_component_epoch("a", 2);
        let drain_a = tokio::spawn({
            let fencing = fencing.clone();
            async move { fencing.drain(Some("a"), 2).await }
        });
        let drain_b_newer = tokio::spawn({
            let fencing = fencing.clone();
            async move { fencing.drain(Some("c-none"), 2).await }
        });
        drain_b_newer.await.unwrap().unwrap();
        let new_on_a = fencing.admit("c", "a", 2).await.unwrap();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !drain_a.is_finished(),
            "drained with an older call in flight"
        );
        drop(on_b);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !drain_a.is_finished(),
            "another component's call ended the drain"
        );
        drop(on_a);
        drain_a.await.unwrap().unwrap();
        drop(new_on_a);
    }
}
