//! The coordinator's `/metrics`.
//!
//! Almost everything is read at scrape time from counters the core keeps anyway (per volume:
//! `AccessStats`, the engine's `EngineStats`, the stripe-lock table), so the data path pays a
//! few relaxed atomic increments and nothing here touches it. Recorded as they happen: the
//! volume API's call metrics (the gRPC layer of `dagraid_telemetry`) and the storage RPCs
//! ([`StorageRpcMetrics`], owned by the node clients that record them, registered here).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use dagraid_core::access::AccessStats;
use dagraid_core::array::{ArrayState, ComponentState};
use dagraid_core::dag::Mnemonic;
use dagraid_core::dag::builders::DagFamily;
use dagraid_core::engine::Direction;
use dagraid_core::stats::{HistogramSnapshot, LATENCY_BOUNDS_NS};
use dagraid_telemetry::GrpcServerMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::rebuild::{RebuildStatus, Rebuilds};
use crate::rpc_metrics::StorageRpcMetrics;
use crate::scrub::Scrubs;
use crate::volumes::{Volume, VolumeEntry, VolumeManager};

/// The coordinator's metrics: the registry `/metrics` serves and the parts recorded live.
#[derive(Debug)]
pub struct CoordinatorMetrics {
    registry: Arc<Registry>,
    grpc: GrpcServerMetrics,
    storage: StorageRpcMetrics,
    volumes: Arc<OnceLock<Weak<VolumeManager>>>,
    rebuilds: Arc<OnceLock<Weak<Rebuilds>>>,
    scrubs: Arc<OnceLock<Weak<Scrubs>>>,
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CoordinatorMetrics {
    /// Every metric registered; the volume metrics appear once [`CoordinatorMetrics::watch`]
    /// names the volumes.
    pub fn new() -> CoordinatorMetrics {
        let mut registry = Registry::default();
        let grpc = GrpcServerMetrics::register(&mut registry);
        let storage = StorageRpcMetrics::register(&mut registry);
        let volumes: Arc<OnceLock<Weak<VolumeManager>>> = Arc::default();
        registry.register_collector(Box::new(VolumeCollector {
            volumes: volumes.clone(),
        }));
        let rebuilds: Arc<OnceLock<Weak<Rebuilds>>> = Arc::default();
        registry.register_collector(Box::new(RebuildCollector {
            rebuilds: rebuilds.clone(),
        }));
        let scrubs: Arc<OnceLock<Weak<Scrubs>>> = Arc::default();
        registry.register_collector(Box::new(ScrubCollector {
            scrubs: scrubs.clone(),
        }));
        registry.register_collector(Box::new(dagraid_telemetry::metrics::TraceExportCollector));
        CoordinatorMetrics {
            registry: Arc::new(registry),
            grpc,
            storage,
            volumes,
            rebuilds,
            scrubs,
        }
    }

    /// Reports the parity checks and rewrites of `scrubs` from now on.
    pub fn watch_scrubs(&self, scrubs: &Arc<Scrubs>) {
        let _ = self.scrubs.set(Arc::downgrade(scrubs));
    }

    /// Reports the reconstructions and copybacks of `rebuilds` from now on.
    pub fn watch_rebuilds(&self, rebuilds: &Arc<Rebuilds>) {
        let _ = self.rebuilds.set(Arc::downgrade(rebuilds));
    }

    /// Reports the volumes (and storage nodes) of `volumes` from now on.
    pub fn watch(&self, volumes: &Arc<VolumeManager>) {
        let _ = self.volumes.set(Arc::downgrade(volumes));
    }

    /// The registry, for the `/metrics` endpoint.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The volume API's call metrics.
    pub fn grpc(&self) -> &GrpcServerMetrics {
        &self.grpc
    }

    /// The storage RPC metrics.
    pub fn storage(&self) -> &StorageRpcMetrics {
        &self.storage
    }

    /// The metrics as Prometheus text (what a scrape without `Accept` gets).
    pub fn render(&self) -> String {
        dagraid_telemetry::metrics::render(
            &self.registry,
            dagraid_telemetry::metrics::Format::Prometheus,
        )
    }
}

#[derive(Debug)]
struct VolumeCollector {
    volumes: Arc<OnceLock<Weak<VolumeManager>>>,
}

/// Histogram buckets as the encoder wants them: (upper bound in seconds, count in the bucket).
fn buckets(h: &HistogramSnapshot) -> Vec<(f64, u64)> {
    LATENCY_BOUNDS_NS
        .iter()
        .map(|&b| b as f64 / 1e9)
        .chain([f64::INFINITY])
        .zip(h.buckets)
        .collect()
}

fn encode_histogram(
    m: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &[(&str, &str)],
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    m.encode_family(&labels)?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum_ns as f64 / 1e9,
            h.count(),
            &buckets(h),
            None,
        )
}

fn counter(
    m: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &[(&str, &str)],
    v: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(m.encode_family(&labels)?)
}

/// One counter family with a `volume` label: `field` of each assembled volume's access stats.
fn volume_counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    assembled: &[Arc<Volume>],
    field: impl Fn(&AccessStats) -> &AtomicU64,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for v in assembled {
        counter(
            &mut m,
            &[("volume", v.name())],
            field(v.array().stats()).load(Ordering::Relaxed),
        )?;
    }
    Ok(())
}

fn gauge(
    m: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &[(&str, &str)],
    v: i64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v).encode(m.encode_family(&labels)?)
}

const COMPONENT_STATES: [&str; 6] = [
    "optimal",
    "failed",
    "spare",
    "reconstructing",
    "stale",
    "copyback",
];
const VOLUME_STATES: [&str; 5] = [
    "optimal",
    "degraded",
    "failed",
    "resyncing",
    "not_assembled",
];

fn component_state_name(s: ComponentState) -> &'static str {
    s.name()
}

/// Reads the reconstruction jobs at scrape time.
#[derive(Debug)]
struct RebuildCollector {
    rebuilds: Arc<OnceLock<Weak<Rebuilds>>>,
}

impl Collector for RebuildCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(rebuilds) = self.rebuilds.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let jobs = rebuilds.all();
        let label =
            |v: &str, s: &RebuildStatus| (v.to_owned(), s.column.to_string(), s.kind.name());
        type Read = fn(&RebuildStatus) -> u64;
        let families: [(&str, &str, MetricType, Read); 7] = [
            (
                "dagraid_rebuild_bytes",
                "Bytes a reconstruction or copyback wrote to its target (since it started or resumed)",
                MetricType::Counter,
                |s| s.bytes_done,
            ),
            (
                "dagraid_rebuild_rate_bytes_per_second",
                "Recent rate of a reconstruction or copyback, bytes written per second",
                MetricType::Gauge,
                |s| if s.running { s.rate } else { 0 },
            ),
            (
                "dagraid_rebuild_rate_limit_bytes_per_second",
                "Rate limit of a reconstruction or copyback (0: none)",
                MetricType::Gauge,
                |s| s.rate_limit,
            ),
            (
                "dagraid_rebuild_stripes_left",
                "Stripes a reconstruction or copyback has left",
                MetricType::Gauge,
                |s| s.stripes_total.saturating_sub(s.stripes_done),
            ),
            (
                "dagraid_rebuild_running",
                "1 while a reconstruction or copyback runs",
                MetricType::Gauge,
                |s| u64::from(s.running),
            ),
            (
                "dagraid_rebuild_lost_blocks",
                "Volume blocks a reconstruction found unreadable beyond the redundancy and recorded lost",
                MetricType::Counter,
                |s| s.lost_blocks,
            ),
            (
                "dagraid_rebuild_regions_resynced",
                "Dirty parity-map regions a re-add rebuilt (kind re_add; the regions written while the column was away)",
                MetricType::Counter,
                |s| s.regions_resynced,
            ),
        ];
        for (name, help, kind, read) in families {
            let mut m = enc.encode_descriptor(name, help, None, kind)?;
            for (v, s) in &jobs {
                let (volume, column, kind_name) = label(v, s);
                let labels = [
                    ("volume", volume.as_str()),
                    ("column", column.as_str()),
                    ("kind", kind_name),
                ];
                match kind {
                    MetricType::Counter => counter(&mut m, &labels, read(s))?,
                    _ => gauge(&mut m, &labels, read(s) as i64)?,
                }
            }
        }
        Ok(())
    }
}

/// Reads the parity jobs' counters at scrape time.
#[derive(Debug)]
struct ScrubCollector {
    scrubs: Arc<OnceLock<Weak<Scrubs>>>,
}

impl Collector for ScrubCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(scrubs) = self.scrubs.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let counters = scrubs.counters();
        type Read = fn(&crate::scrub::ScrubCounters) -> u64;
        let families: [(&str, &str, Read); 3] = [
            (
                "dagraid_parity_check_stripes",
                "Stripes a parity check compared with their data",
                |c| c.checked.load(Ordering::Relaxed),
            ),
            (
                "dagraid_parity_mismatches",
                "Stripes a parity check found whose redundancy disagrees with their data",
                |c| c.mismatches.load(Ordering::Relaxed),
            ),
            (
                "dagraid_parity_rewrite_stripes",
                "Stripes a parity rewrite rewrote",
                |c| c.rewritten.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, read) in families {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (volume, c) in &counters {
                counter(&mut m, &[("volume", volume.as_str())], read(c))?;
            }
        }
        let mut m = enc.encode_descriptor(
            "dagraid_parity_job_running",
            "1 while a parity check or rewrite of the volume runs",
            None,
            MetricType::Gauge,
        )?;
        for (volume, s) in scrubs.all() {
            gauge(
                &mut m,
                &[("volume", volume.as_str()), ("kind", s.kind.name())],
                i64::from(s.running),
            )?;
        }
        Ok(())
    }
}

impl Collector for VolumeCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(volumes) = self.volumes.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let entries = volumes.entries();
        let assembled: Vec<_> = entries
            .iter()
            .filter_map(|e| match e {
                VolumeEntry::Assembled(v) => Some(v.clone()),
                VolumeEntry::Unassembled(_) => None,
            })
            .collect();
        let registry = volumes.registry();

        {
            let mut m = enc.encode_descriptor(
                "dagraid_build_info",
                "Always 1; the coordinator's version",
                None,
                MetricType::Gauge,
            )?;
            gauge(&mut m, &[("version", env!("CARGO_PKG_VERSION"))], 1)?;
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_storage_node_up",
                "1 while the health loop reaches the storage node, 0 when it does not",
                None,
                MetricType::Gauge,
            )?;
            for n in registry.nodes() {
                let up = n.health().reachable;
                gauge(
                    &mut m,
                    &[("node", n.id()), ("address", n.address())],
                    i64::from(up),
                )?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_volume_state",
                "1 for each volume's current state, 0 for the others (optimal, degraded, failed, resyncing, not_assembled)",
                None,
                MetricType::Gauge,
            )?;
            for e in &entries {
                let now = match e {
                    VolumeEntry::Unassembled(_) => "not_assembled",
                    VolumeEntry::Assembled(v) => match v.array().array_state() {
                        ArrayState::Failed => "failed",
                        _ if v.resyncing() => "resyncing",
                        ArrayState::Optimal => "optimal",
                        ArrayState::Degraded => "degraded",
                    },
                };
                for s in VOLUME_STATES {
                    gauge(
                        &mut m,
                        &[("volume", e.name()), ("state", s)],
                        i64::from(s == now),
                    )?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_component_state",
                "1 for each component's current state, 0 for the others (optimal, failed, spare, reconstructing, stale, copyback)",
                None,
                MetricType::Gauge,
            )?;
            for e in &entries {
                let (records, states): (Vec<crate::store::ComponentRecord>, Vec<ComponentState>) =
                    match e {
                        VolumeEntry::Assembled(v) => {
                            (v.components(), v.array().states().states().to_vec())
                        }
                        VolumeEntry::Unassembled(u) => {
                            (u.record().components.clone(), u.states().to_vec())
                        }
                    };
                for c in &records {
                    let now = states
                        .get(c.column as usize)
                        .copied()
                        .map(component_state_name)
                        .unwrap_or("failed");
                    let column = c.column.to_string();
                    for s in COMPONENT_STATES {
                        gauge(
                            &mut m,
                            &[
                                ("volume", e.name()),
                                ("column", &column),
                                ("node", &c.node_id),
                                ("component", &c.component_id),
                                ("state", s),
                            ],
                            i64::from(s == now),
                        )?;
                    }
                }
            }
        }
        {
            // The free spares of the pool a failed column of the volume could be rebuilt onto
            // (the same count as `Volume.spares_available`).
            let mut m = enc.encode_descriptor(
                "dagraid_volume_spare_nodes",
                "Free hot spares of the pool that fit the volume (same block size, at least as many blocks per column, on a reachable node holding none of its columns): where a failed column can be rebuilt",
                None,
                MetricType::Gauge,
            )?;
            for v in &assembled {
                let fit = volumes
                    .spares_fitting(&VolumeEntry::Assembled(v.clone()))
                    .len();
                gauge(&mut m, &[("volume", v.name())], fit as i64)?;
            }
        }
        if let Some(admission) = volumes.admission() {
            {
                let mut m = enc.encode_descriptor(
                    "dagraid_accesses",
                    "Volume reads, writes and flushes admitted and running, or waiting for a place (the admission queue; full answers RESOURCE_EXHAUSTED overloaded)",
                    None,
                    MetricType::Gauge,
                )?;
                gauge(&mut m, &[("state", "running")], admission.running() as i64)?;
                gauge(&mut m, &[("state", "waiting")], admission.waiting() as i64)?;
            }
            let limits = admission.limits();
            let mut m = enc.encode_descriptor(
                "dagraid_accesses_limit",
                "The admission queue's limits: accesses running at once (--max-accesses) and waiting (--max-queued-accesses)",
                None,
                MetricType::Gauge,
            )?;
            gauge(&mut m, &[("state", "running")], limits.in_progress as i64)?;
            gauge(&mut m, &[("state", "waiting")], limits.queued as i64)?;
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_component_gone",
                "1 while the column's storage node is gone and the column could not be failed (beyond the layout's tolerance: the volume is failed until the node answers again)",
                None,
                MetricType::Gauge,
            )?;
            for v in &assembled {
                let gone = v.array().states().gone_columns().clone();
                for c in v.components() {
                    gauge(
                        &mut m,
                        &[
                            ("volume", v.name()),
                            ("column", &c.column.to_string()),
                            ("node", &c.node_id),
                        ],
                        i64::from(gone.contains(c.column as usize)),
                    )?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_volume_lost_bytes",
                "Bytes marked lost: they answer DATA_LOSS until written again (dagraid volume lost VOL lists them)",
                None,
                MetricType::Gauge,
            )?;
            for v in &assembled {
                let bytes = v.array().lost().blocks() * v.layout().geometry().block_size();
                gauge(&mut m, &[("volume", v.name())], bytes as i64)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_volume_dirty_regions",
                "Parity-map regions marked dirty (written within the cooldown, or awaiting their resync): what a crash now would cost a resync of",
                None,
                MetricType::Gauge,
            )?;
            for v in &assembled {
                let dirty = v.array().parity_map().counts().dirty;
                gauge(&mut m, &[("volume", v.name())], dirty as i64)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_volume_resync_regions",
                "Parity-map regions awaiting their resync after a crash",
                None,
                MetricType::Gauge,
            )?;
            for v in &assembled {
                let pending = v.array().parity_map().counts().needs_sync;
                gauge(&mut m, &[("volume", v.name())], pending as i64)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_volume_lost_stripes",
                "Stripes marked lost after a torn write (unreadable until rewritten whole)",
                None,
                MetricType::Gauge,
            )?;
            for v in &assembled {
                gauge(
                    &mut m,
                    &[("volume", v.name())],
                    v.array().lost_stripes().len() as i64,
                )?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_volume_operations",
                "Volume reads, writes and flushes answered, by outcome",
                None,
                MetricType::Counter,
            )?;
            for v in &assembled {
                let s = v.array().stats();
                let l = |x: &std::sync::atomic::AtomicU64| x.load(Ordering::Relaxed);
                for (op, ok, err) in [
                    ("read", l(&s.reads), l(&s.read_errors)),
                    ("write", l(&s.writes), l(&s.write_errors)),
                    ("flush", l(&s.flushes), l(&s.flush_errors)),
                ] {
                    counter(
                        &mut m,
                        &[("volume", v.name()), ("op", op), ("outcome", "ok")],
                        ok,
                    )?;
                    counter(
                        &mut m,
                        &[("volume", v.name()), ("op", op), ("outcome", "error")],
                        err,
                    )?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_volume_bytes",
                "Bytes of the reads served and the writes acknowledged",
                None,
                MetricType::Counter,
            )?;
            for v in &assembled {
                let s = v.array().stats();
                counter(
                    &mut m,
                    &[("volume", v.name()), ("op", "read")],
                    s.bytes_read.load(Ordering::Relaxed),
                )?;
                counter(
                    &mut m,
                    &[("volume", v.name()), ("op", "write")],
                    s.bytes_written.load(Ordering::Relaxed),
                )?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_volume_operation_seconds",
                "Time of volume reads, writes and flushes in the coordinator, from the call to the answer",
                None,
                MetricType::Histogram,
            )?;
            for v in &assembled {
                let s = v.array().stats();
                for (op, h) in [
                    ("read", &s.read_latency),
                    ("write", &s.write_latency),
                    ("flush", &s.flush_latency),
                ] {
                    encode_histogram(&mut m, &[("volume", v.name()), ("op", op)], &h.snapshot())?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_dags",
                "DAGs run, by kind and outcome (forward, rolled_forward, rolled_backward)",
                None,
                MetricType::Counter,
            )?;
            for v in &assembled {
                let s = v.array().stats();
                for (i, family) in DagFamily::ALL.iter().enumerate() {
                    for (d, direction) in Direction::ALL.iter().enumerate() {
                        let n = s.dag_outcomes[i][d].load(Ordering::Relaxed);
                        // Kinds a level never runs stay out, except the plain forward count.
                        if n > 0 || *direction == Direction::Forward {
                            counter(
                                &mut m,
                                &[
                                    ("volume", v.name()),
                                    ("kind", family.name()),
                                    ("outcome", direction.as_str()),
                                ],
                                n,
                            )?;
                        }
                    }
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_recoveries",
                "DAGs that met a failure and recovered, by direction (forward: completed past the commit; backward: undone, then retried)",
                None,
                MetricType::Counter,
            )?;
            for v in &assembled {
                let s = v.array().stats();
                counter(
                    &mut m,
                    &[("volume", v.name()), ("direction", "forward")],
                    s.rolled_forward.load(Ordering::Relaxed),
                )?;
                counter(
                    &mut m,
                    &[("volume", v.name()), ("direction", "backward")],
                    s.rolled_backward.load(Ordering::Relaxed),
                )?;
            }
        }
        volume_counter(
            &mut enc,
            "dagraid_redone_writes",
            "Disk writes whose outcome was unknown (a timeout, a lost connection), redone after a fence of their component instead of failing its column",
            &assembled,
            |s| &s.redone_writes,
        )?;
        volume_counter(
            &mut enc,
            "dagraid_ppl_entries",
            "Partial-parity log entries written (one per stripe of a write while degraded, on each surviving parity column)",
            &assembled,
            |s| &s.log_entries,
        )?;
        volume_counter(
            &mut enc,
            "dagraid_ppl_bytes",
            "Bytes of partial-parity log entries written",
            &assembled,
            |s| &s.log_bytes,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "dagraid_dags_in_flight",
                "DAGs running now",
                None,
                MetricType::Gauge,
            )?;
            for v in &assembled {
                gauge(
                    &mut m,
                    &[("volume", v.name())],
                    v.array().engine_stats().dags_in_flight() as i64,
                )?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_node_firings",
                "DAG node firings, by mnemonic, phase (do, undo) and outcome (ok, failed); mnemonics never fired are left out",
                None,
                MetricType::Counter,
            )?;
            for v in &assembled {
                let e = v.array().engine_stats();
                for mn in Mnemonic::ALL {
                    let counts = [(false, false), (false, true), (true, false), (true, true)]
                        .map(|(undo, failed)| (undo, failed, e.firings(mn, undo, failed)));
                    if counts.iter().all(|c| c.2 == 0) {
                        continue;
                    }
                    for (undo, failed, n) in counts {
                        counter(
                            &mut m,
                            &[
                                ("volume", v.name()),
                                ("mnemonic", mn.as_str()),
                                ("phase", if undo { "undo" } else { "do" }),
                                ("outcome", if failed { "failed" } else { "ok" }),
                            ],
                            n,
                        )?;
                    }
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_node_skips",
                "DAG nodes skipped behind a failed (or skipped) antecedent, by mnemonic",
                None,
                MetricType::Counter,
            )?;
            for v in &assembled {
                let e = v.array().engine_stats();
                for mn in Mnemonic::ALL {
                    let n = e.skipped(mn);
                    if n > 0 {
                        counter(
                            &mut m,
                            &[("volume", v.name()), ("mnemonic", mn.as_str())],
                            n,
                        )?;
                    }
                }
            }
        }
        let locks: HashMap<&str, _> = assembled
            .iter()
            .map(|v| (v.name(), v.array().stripe_locks().stats()))
            .collect();
        {
            let mut m = enc.encode_descriptor(
                "dagraid_stripe_lock_acquired",
                "Stripe locks granted",
                None,
                MetricType::Counter,
            )?;
            for (name, s) in &locks {
                counter(&mut m, &[("volume", name)], s.acquired)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_stripe_lock_contended",
                "Stripe locks granted only after a wait",
                None,
                MetricType::Counter,
            )?;
            for (name, s) in &locks {
                counter(&mut m, &[("volume", name)], s.contended)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_stripe_lock_wait_seconds",
                "How long the stripe-lock requests that had to wait waited",
                None,
                MetricType::Histogram,
            )?;
            for v in &assembled {
                encode_histogram(
                    &mut m,
                    &[("volume", v.name())],
                    &v.array().stripe_locks().wait_histogram(),
                )?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_stripe_locks_held",
                "Stripe locks held now",
                None,
                MetricType::Gauge,
            )?;
            for (name, s) in &locks {
                gauge(&mut m, &[("volume", name)], s.held as i64)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "dagraid_stripe_lock_waiting",
                "Stripe-lock requests waiting now",
                None,
                MetricType::Gauge,
            )?;
            for (name, s) in &locks {
                gauge(&mut m, &[("volume", name)], s.waiting as i64)?;
            }
        }
        Ok(())
    }
}
