//! Latency and errors of the coordinator's calls to the storage nodes, owned by the node client
//! that records them ([`crate::node_client::NodeClientConfig::metrics`]) and registered in
//! `/metrics` by [`crate::metrics`]. One histogram per node and RPC, resolved when the node
//! client is made, so a call costs no label lookup. Imports nothing of the coordinator: the node
//! client below it knows no volumes and no metrics registry of its own.

use dagraid_telemetry::grpc::code_name;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The storage RPCs whose latency is kept, by name.
const RPCS: [&str; 12] = [
    "ReadBlocks",
    "WriteBlocks",
    "ReadLog",
    "WriteLog",
    "Flush",
    "Fence",
    "GetNodeInfo",
    "CreateComponent",
    "DeleteComponent",
    "ListComponents",
    "ReadSlot",
    "WriteSlot",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    node: String,
    rpc: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcErrorLabels {
    node: String,
    rpc: &'static str,
    code: &'static str,
}

/// Latency and errors of the coordinator's calls to the storage nodes.
#[derive(Debug, Clone)]
pub struct StorageRpcMetrics {
    seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
    errors: Family<RpcErrorLabels, Counter>,
}

impl StorageRpcMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> StorageRpcMetrics {
        let m = StorageRpcMetrics {
            seconds: Family::new_with_constructor(dagraid_telemetry::metrics::latency_histogram),
            errors: Family::default(),
        };
        registry.register(
            "dagraid_storage_rpc_seconds",
            "Time of the coordinator's calls to the storage nodes, by node address and RPC",
            m.seconds.clone(),
        );
        registry.register(
            "dagraid_storage_rpc_errors",
            "Failed calls to the storage nodes, by node address, RPC and gRPC code",
            m.errors.clone(),
        );
        m
    }

    /// The histograms of one node, resolved once (a call then costs no label lookup).
    pub fn for_node(&self, node: &str) -> NodeRpcMetrics {
        NodeRpcMetrics {
            node: node.to_owned(),
            seconds: RPCS.map(|rpc| {
                self.seconds
                    .get_or_create(&RpcLabels {
                        node: node.to_owned(),
                        rpc,
                    })
                    .clone()
            }),
            errors: self.errors.clone(),
        }
    }
}

/// [`StorageRpcMetrics`] of one node.
#[derive(Debug, Clone)]
pub struct NodeRpcMetrics {
    node: String,
    seconds: [Histogram; RPCS.len()],
    errors: Family<RpcErrorLabels, Counter>,
}

impl NodeRpcMetrics {
    /// Counts one call of `rpc` that took `seconds` and failed with gRPC code `error` (if it
    /// did).
    pub fn observe(&self, rpc: &'static str, seconds: f64, error: Option<i32>) {
        if let Some(i) = RPCS.iter().position(|r| *r == rpc) {
            self.seconds[i].observe(seconds);
        }
        if let Some(code) = error {
            self.errors
                .get_or_create(&RpcErrorLabels {
                    node: self.node.clone(),
                    rpc,
                    code: code_name(code),
                })
                .inc();
        }
    }
}
