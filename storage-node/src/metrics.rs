//! The node's `/metrics`: the gRPC call metrics of [`dagraid_telemetry::grpc`], and, read at
//! scrape time from the node itself (nothing on the data path), per component its state, the
//! bytes read and written and the fdatasyncs; the owner epoch; the trace export counters.

use std::sync::Arc;

use dagraid_telemetry::GrpcServerMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::block_store::ComponentHealth;
use crate::node::Node;

/// The node's metrics registry and the call metrics the gRPC layer records into.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Arc<Registry>,
    grpc: GrpcServerMetrics,
}

impl NodeMetrics {
    /// The metrics of `node`.
    pub fn new(node: Arc<Node>) -> NodeMetrics {
        let mut registry = Registry::default();
        let grpc = GrpcServerMetrics::register(&mut registry);
        registry.register_collector(Box::new(NodeCollector { node }));
        registry.register_collector(Box::new(dagraid_telemetry::metrics::TraceExportCollector));
        NodeMetrics {
            registry: Arc::new(registry),
            grpc,
        }
    }

    /// The registry, for the `/metrics` endpoint.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The gRPC call metrics.
    pub fn grpc(&self) -> &GrpcServerMetrics {
        &self.grpc
    }

    /// The metrics as Prometheus text (what a scrape without `Accept` gets).
    pub fn render(&self) -> String {
        dagraid_telemetry::metrics::render(
            &self.registry,
            dagraid_telemetry::metrics::Format::Prometheus,
        )
    }
}

struct NodeCollector {
    node: Arc<Node>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCollector").finish_non_exhaustive()
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let summary = self.node.summary();
        let node = summary.node_id.as_str();
        {
            let g = ConstGauge::new(summary.epoch as i64);
            let mut m = encoder.encode_descriptor(
                "dagraid_node_epoch",
                "Highest owner epoch this node has accepted",
                None,
                MetricType::Gauge,
            )?;
            g.encode(m.encode_family(&[("node", node)])?)?;
        }
        let mut m = encoder.encode_descriptor(
            "dagraid_node_component_state",
            "1 for each component's current state (optimal or failed), 0 for the other",
            None,
            MetricType::Gauge,
        )?;
        for c in &summary.components {
            let failed = matches!(c.health(), ComponentHealth::Failed(_));
            for (state, on) in [("optimal", !failed), ("failed", failed)] {
                let g = ConstGauge::new(i64::from(on));
                g.encode(m.encode_family(&[
                    ("node", node),
                    ("component", c.header().id.as_str()),
                    ("state", state),
                ])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "dagraid_node_component_bytes",
            "Block bytes read (verified) and written (durable), by component and operation",
            None,
            MetricType::Counter,
        )?;
        for c in &summary.components {
            for (op, v) in [("read", c.bytes_read()), ("write", c.bytes_written())] {
                ConstCounter::new(v).encode(m.encode_family(&[
                    ("node", node),
                    ("component", c.header().id.as_str()),
                    ("op", op),
                ])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "dagraid_node_component_log_bytes",
            "Log-area bytes read and written (durable), by component and operation",
            None,
            MetricType::Counter,
        )?;
        for c in &summary.components {
            for (op, v) in [
                ("read", c.log_bytes_read()),
                ("write", c.log_bytes_written()),
            ] {
                ConstCounter::new(v).encode(m.encode_family(&[
                    ("node", node),
                    ("component", c.header().id.as_str()),
                    ("op", op),
                ])?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "dagraid_node_component_syncs",
            "fdatasyncs completed (one group commit serves many writes), by component",
            None,
            MetricType::Counter,
        )?;
        for c in &summary.components {
            ConstCounter::new(c.syncs_completed()).encode(
                m.encode_family(&[("node", node), ("component", c.header().id.as_str())])?,
            )?;
        }
        Ok(())
    }
}
