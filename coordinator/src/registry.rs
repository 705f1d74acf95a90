//! The storage nodes the coordinator uses: one [`NodeClient`] each, all sharing one
//! [`FencingContext`], and what the last health check said about each.
//!
//! The health loop ([`health_loop`]) checks every node each health interval with `GetNodeInfo`
//! under a short deadline (the node deadline, at most [`MAX_HEALTH_DEADLINE`]). A node is
//! **gone** when it has missed at least [`MISSED_CHECKS_TO_FAIL`] checks in a row *and* not
//! answered for the `gone-after` time (`CoordinatorConfig::gone_after`): only then is every
//! volume column on it failed (the loop reports its verdicts through [`NodeHealthEvents`], which
//! the volume manager above implements: the registry knows no volumes), through
//! [`dagraid_core::access::Array::fail_component`], which
//! refuses a failure beyond the layout's tolerance. Such a column is marked *gone* instead
//! ([`dagraid_core::access::Array::set_gone`]): not persisted, treated as missing, and the
//! volume is failed (writes refused) until the node answers again, when the mark is cleared and
//! the volume leaves the failed state by itself. A node that answers, however slowly, is never
//! gone: on a loaded machine a check can be late, and a failed column stays failed until it is
//! rebuilt.
//!
//! A node that was not fenced at the current owner epoch (it was unreachable at start) is fenced
//! as soon as a health check reaches it again, before anything else writes to it; the node
//! client also fences it before its first mutating call of the epoch, whichever comes first.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::NodeSpec;
use crate::error::NodeClientError;
use crate::node_client::{FencingContext, NodeClient, NodeClientConfig};

/// What the health loop reports, to whoever owns the volumes on the nodes (the volume manager).
pub trait NodeHealthEvents: Send + Sync {
    /// Node `node_id` is gone: fail every column on it (`first`: it just went; log loudly).
    fn node_gone<'a>(&'a self, node_id: &'a str, first: bool)
    -> futures::future::BoxFuture<'a, ()>;
    /// Node `node_id` answered a health check.
    fn node_answers(&self, node_id: &str);
    /// Node `node_id` missed a health check but is not gone (yet).
    fn node_silent(&self, node_id: &str) {
        let _ = node_id;
    }
}

/// Consecutive failed health checks after which a node's columns are failed.
pub const MISSED_CHECKS_TO_FAIL: u32 = 2;
/// Longest deadline of one health check.
pub const MAX_HEALTH_DEADLINE: Duration = Duration::from_secs(2);

/// What the health checks know about a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHealth {
    /// Whether a check has completed yet.
    pub checked: bool,
    /// Whether the last check reached the node (and found it in our cluster).
    pub reachable: bool,
    /// Why the last check failed; empty when it succeeded.
    pub detail: String,
    /// Failed checks in a row.
    pub missed: u32,
    /// The node's epoch at the last successful check.
    pub epoch: Option<u64>,
    /// The node's largest read or write payload, from the last successful check.
    pub max_io_bytes: Option<u64>,
    /// When the current run of missed checks began (`None` while it answers).
    pub silent_since: Option<tokio::time::Instant>,
    /// Whether the node is gone (see the module doc).
    pub gone: bool,
}

/// What one round of health checks says of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeVerdict {
    /// It answered.
    Answers,
    /// It missed checks, not yet for long enough to be gone.
    Silent,
    /// It is gone; `just` the first round it is.
    Gone {
        /// Whether it became gone in this round.
        just: bool,
    },
}

/// One storage node.
#[derive(Debug)]
pub struct RegisteredNode {
    id: String,
    address: String,
    configured: bool,
    client: NodeClient,
    health: Mutex<NodeHealth>,
}

impl RegisteredNode {
    /// The node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether it comes from the configuration (otherwise only a stored volume names it).
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// The connections to it.
    pub fn client(&self) -> &NodeClient {
        &self.client
    }

    /// What the health checks know.
    pub fn health(&self) -> NodeHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the last health check reached it.
    pub fn reachable(&self) -> bool {
        self.health().reachable
    }

    /// Test only: sets what the last health check said (reached or not), as a check would.
    #[cfg(test)]
    pub(crate) fn set_health_for_test(&self, reachable: bool) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.checked = true;
        h.reachable = reachable;
    }
}

/// The storage nodes, in configuration order (nodes only stored volumes name come last).
#[derive(Debug)]
pub struct NodeRegistry {
    fencing: Arc<FencingContext>,
    nodes: Vec<RegisteredNode>,
    health_deadline: Duration,
}

impl NodeRegistry {
    /// Clients for `configured` nodes, then for `extra` nodes (named by stored volumes but
    /// missing from the configuration), all carrying `fencing`. Must run inside a runtime.
    pub fn new(
        configured: &[NodeSpec],
        extra: &[NodeSpec],
        fencing: Arc<FencingContext>,
        client_config: NodeClientConfig,
        health_deadline: Duration,
    ) -> Result<Self, NodeClientError> {
        let specs = configured
            .iter()
            .map(|s| (s, true))
            .chain(extra.iter().map(|s| (s, false)));
        let nodes = specs
            .map(|(spec, configured)| {
                Ok(RegisteredNode {
                    id: spec.id.clone(),
                    address: spec.address.clone(),
                    configured,
                    client: NodeClient::for_node(
                        &spec.id,
                        &spec.address,
                        fencing.clone(),
                        client_config.clone(),
                    )?,
                    health: Mutex::new(NodeHealth::default()),
                })
            })
            .collect::<Result<_, NodeClientError>>()?;
        Ok(Self {
            fencing,
            nodes,
            health_deadline: health_deadline.min(MAX_HEALTH_DEADLINE),
        })
    }

    /// The fencing every node client carries.
    pub fn fencing(&self) -> &Arc<FencingContext> {
        &self.fencing
    }

    /// Every node, in order.
    pub fn nodes(&self) -> &[RegisteredNode] {
        &self.nodes
    }

    /// The node of id `id`.
    pub fn get(&self, id: &str) -> Option<&RegisteredNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Checks every node once, concurrently; says of each whether it answers, is silent, or is
    /// gone (see the module doc) after `gone_after` without an answer.
    pub async fn check_all(&self, gone_after: Duration) -> Vec<(&RegisteredNode, NodeVerdict)> {
        let checks = self.nodes.iter().map(|n| async move {
            self.check(n).await;
            (n, Self::verdict(n, gone_after))
        });
        futures::future::join_all(checks).await
    }

    fn verdict(node: &RegisteredNode, gone_after: Duration) -> NodeVerdict {
        let mut h = node.health.lock().unwrap_or_else(|p| p.into_inner());
        if h.reachable {
            h.gone = false;
            return NodeVerdict::Answers;
        }
        let silent_for = h.silent_since.map(|t| t.elapsed()).unwrap_or_default();
        if h.missed >= MISSED_CHECKS_TO_FAIL && silent_for >= gone_after {
            let just = !h.gone;
            if just {
                tracing::warn!(node = %node.id, address = %node.address, silent_ms = silent_for.as_millis() as u64, "storage node gone");
            }
            h.gone = true;
            NodeVerdict::Gone { just }
        } else {
            NodeVerdict::Silent
        }
    }

    /// Checks one node; returns its failed checks in a row.
    async fn check(&self, node: &RegisteredNode) -> u32 {
        let answer = tokio::time::timeout(self.health_deadline, node.client.node_info()).await;
        let outcome = match answer {
            Ok(Ok(info)) if info.cluster_id == self.fencing.cluster_id() => Ok(info),
            Ok(Ok(info)) => Err(format!(
                "the node is in cluster {:?}, not {:?}",
                info.cluster_id,
                self.fencing.cluster_id()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.health_deadline)),
        };
        let reached = outcome.is_ok();
        let missed = self.record_check(node, outcome);
        if reached
            && node.client.fenced_epoch() < self.fencing.epoch()
            && let Err(status) = node.client.ensure_fenced().await
        {
            tracing::warn!(node = %node.id, error = %status.message(), "storage node back, but not fenced");
        }
        missed
    }

    fn record_check(
        &self,
        node: &RegisteredNode,
        outcome: Result<crate::node_client::NodeInfo, String>,
    ) -> u32 {
        let mut h = node.health.lock().unwrap_or_else(|p| p.into_inner());
        let was_reachable = h.reachable || !h.checked;
        h.checked = true;
        match outcome {
            Ok(info) => {
                if !h.reachable {
                    tracing::info!(node = %node.id, address = %node.address, "storage node reachable");
                }
                h.reachable = true;
                h.detail.clear();
                h.missed = 0;
                h.silent_since = None;
                h.epoch = Some(info.epoch);
                h.max_io_bytes = Some(info.max_io_bytes);
            }
            Err(detail) => {
                if was_reachable {
                    tracing::warn!(node = %node.id, address = %node.address, %detail, "storage node unreachable");
                }
                h.reachable = false;
                h.detail = detail;
                h.missed = h.missed.saturating_add(1);
                h.silent_since.get_or_insert_with(tokio::time::Instant::now);
            }
        }
        h.missed
    }

    /// Sends `Fence(epoch)` to every reachable node, concurrently, best effort: a node that
    /// refuses or cannot be reached is logged. Returns how many accepted.
    pub async fn fence_all(&self, epoch: u64) -> usize {
        for n in self.nodes.iter().filter(|n| !n.reachable()) {
            tracing::warn!(node = %n.id, detail = %n.health().detail, "storage node not fenced: unreachable");
        }
        let fences = self
            .nodes
            .iter()
            .filter(|n| n.reachable())
            .map(|n| async move {
                match n.client.fence(epoch).await {
                    Ok(now) => {
                        tracing::info!(node = %n.id, epoch = now, "storage node fenced");
                        true
                    }
                    Err(error) => {
                        tracing::warn!(node = %n.id, %error, "storage node not fenced");
                        false
                    }
                }
            });
        futures::future::join_all(fences)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }
}

/// Checks the nodes every `interval` until `cancel`, failing the columns of nodes that are down
/// (see the module doc).
pub async fn health_loop(
    registry: Arc<NodeRegistry>,
    events: Arc<dyn NodeHealthEvents>,
    interval: Duration,
    gone_after: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let round = async {
            for (node, verdict) in registry.check_all(gone_after).await {
                match verdict {
                    NodeVerdict::Gone { just } => events.node_gone(node.id(), just).await,
                    NodeVerdict::Answers => events.node_answers(node.id()),
                    NodeVerdict::Silent => events.node_silent(node.id()),
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = round => {}
        }
    }
}
