//! Owner fencing: the node-level epoch and the writes in flight under each epoch.
//!
//! A mutating call is *admitted* by checking its epoch and registering it as in flight in one step
//! under one lock, at the moment it is applied (not when it arrived), so a write delayed past a
//! [`Fencing::fence`] is refused. A higher epoch is written to the node state file before anything
//! is accepted under it. `fence` returns once every admitted call of an older epoch has finished.

use std::collections::BTreeMap;
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
    /// Admitted, unfinished calls per epoch.
    in_flight: BTreeMap<u64, usize>,
}

/// An admitted mutating call; dropping it marks the call finished.
pub struct InFlight {
    fencing: Arc<Fencing>,
    epoch: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut state = self.fencing.state();
            if let Some(n) = state.in_flight.get_mut(&self.epoch) {
                *n -= 1;
                if *n == 0 {
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

    /// Admits a mutating call of `epoch`: refuses stale epochs, durably raises the node's epoch to
    /// a newer one, and registers the call as in flight until the returned guard drops.
    pub async fn admit(
        self: &Arc<Self>,
        cluster_id: &str,
        epoch: u64,
    ) -> Result<InFlight, NodeError> {
        self.check_cluster(cluster_id)?;
        loop {
            {
                let mut state = self.state();
                if epoch < state.epoch {
                    return Err(NodeError::StaleEpoch {
                        got: epoch,
                        current: state.epoch,
                    });
                }
                if epoch == state.epoch {
                    *state.in_flight.entry(epoch).or_default() += 1;
                    return Ok(InFlight {
                        fencing: self.clone(),
                        epoch,
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
            tokio::task::spawn_blocking(move || store.store(&record))
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
        let mut finished = self.finished.subscribe();
        loop {
            {
                let state = self.state();
                if state.in_flight.range(..epoch).next().is_none() {
                    return Ok(state.epoch);
                }
            }
            if finished.changed().await.is_err() {
                return Err(NodeError::ShuttingDown);
            }
        }
    }

    /// Calls in flight per epoch (tests).
    #[cfg(test)]
    fn in_flight(&self) -> BTreeMap<u64, usize> {
        self.state().in_flight.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_and_foreign_calls_are_refused() {
        let fencing = Fencing::new("n".into(), "c".into(), 5, None);
        assert!(matches!(
            fencing.admit("c", 4).await,
            Err(NodeError::StaleEpoch { got: 4, current: 5 })
        ));
        assert!(matches!(
            fencing.admit("other", 5).await,
            Err(NodeError::WrongCluster { .. })
        ));
        let guard = fencing.admit("c", 7).await.unwrap();
        assert_eq!(
            fencing.epoch(),
            7,
            "a newer epoch is accepted and becomes current"
        );
        assert!(fencing.admit("c", 5).await.is_err());
        drop(guard);
        assert!(fencing.in_flight().is_empty());
    }

    #[tokio::test]
    async fn fence_waits_for_older_calls_only() {
        let fencing = Fencing::new("n".into(), "c".into(), 1, None);
        let old = fencing.admit("c", 1).await.unwrap();
        let fence = tokio::spawn({
            let fencing = fencing.clone();
            async move { fencing.fence("c", 2).await }
        });
        // The fence raised the epoch at once, but cannot return while `old` is in flight.
        while fencing.epoch() != 2 {
            tokio::task::yield_now().await;
        }
        let new = fencing.admit("c", 2).await.unwrap();
        assert!(
            fencing.admit("c", 1).await.is_err(),
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
        drop(fencing.admit("c", 3).await.unwrap());
        assert_eq!(store.load().unwrap().unwrap().epoch, 3);
        fencing.fence("c", 8).await.unwrap();
        assert_eq!(store.load().unwrap().unwrap().epoch, 8);
    }
}
