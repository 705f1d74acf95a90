//! dagraid's telemetry plumbing, shared by the coordinator, the storage node and the client:
//! trace export over OTLP/gRPC, W3C trace context in gRPC metadata, the gRPC server span and
//! call metrics, and the Prometheus `/metrics` endpoint.
//!
//! Code map:
//! - [`config`]: the standard `OTEL_*` variables and their flags ([`TelemetryArgs`]), resolved
//!   into [`TraceSettings`]; export is off unless an endpoint is set. The sampler's decision.
//! - [`context`]: a span's W3C identity ([`SpanContext`]), `traceparent`, the id generator.
//! - [`layer`]: the export layer, which records each span `tracing` opens into a
//!   [`record::SpanRecord`] in the span's extensions and queues it when the span closes.
//! - [`export`]: the bounded queue and the export thread, which batches, encodes and sends,
//!   so ending a span never waits for the network; it counts what it drops.
//! - [`otlp`]: the OTLP protobuf encoding of each span, written straight from its record, and
//!   of a request made of encoded spans.
//! - [`propagation`]: inject the current span's context into a call's metadata.
//! - [`grpc`]: the tower layer of the servers: one span per call (a child of the context the
//!   call carries), the call metrics.
//! - [`metrics`]: the `/metrics` HTTP endpoint over a prometheus-client registry, the latency
//!   buckets, the trace export counters as metrics.
//! - `receiver` (feature `receiver`): an in-process OTLP receiver for tests and benches.
//!
//! [`init`] installs the process's `tracing` subscriber: the log on stderr (`RUST_LOG`,
//! default `info`), plus, when an endpoint is set, the export layer, which sees only dagraid's
//! own spans and events at INFO and above (never those of tonic, h2 or hyper, and not limited
//! by `RUST_LOG`).
//!
//! Why not `tracing-opentelemetry` and the OpenTelemetry SDK: with them, exporting every span
//! of a 4 KiB write cost 18-25% of the write throughput on the benchmark machine (span
//! builders, SDK spans, the conversion to OTLP types, allocation per attribute); the layer
//! and encoder here keep one compact record per span and write the protobuf from it
//! (`docs/BENCHMARKS.md`, "Tracing overhead").

pub mod config;
pub mod context;
pub mod export;
pub mod grpc;
pub mod layer;
pub mod metrics;
pub mod otlp;
pub mod propagation;
#[cfg(feature = "receiver")]
pub mod receiver;
pub mod record;

use tracing::{Dispatch, Level};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use config::{BatchSettings, SamplerChoice, TelemetryArgs, TraceSettings};
pub use context::SpanContext;
pub use grpc::{GrpcServerLayer, GrpcServerMetrics};
pub use metrics::MetricsServer;

use crate::export::Exporter;
use crate::layer::ExportLayer;
use crate::otlp::RequestEncoder;
use crate::record::Value;

/// The telemetry of a process; [`Telemetry::shutdown`] sends the spans still queued.
#[derive(Debug)]
pub struct Telemetry {
    exporter: Option<Exporter>,
    settings: TraceSettings,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.exporter.is_some()
    }

    /// The settings in force.
    pub fn settings(&self) -> &TraceSettings {
        &self.settings
    }

    /// Sends every span that ended so far and waits for the receiver's answer (blocking: in
    /// async code call it from `spawn_blocking`). The export runs on the export thread's own
    /// runtime, so any thread may call this.
    pub fn flush_blocking(&self) -> Result<(), String> {
        match &self.exporter {
            Some(e) => e.flush(),
            None => Ok(()),
        }
    }

    /// Sends the spans still queued and stops the export thread (without blocking the
    /// caller's runtime).
    pub async fn shutdown(self) {
        if let Some(exporter) = self.exporter {
            let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
        }
    }
}

/// The export layer's filter: dagraid's own spans and events, INFO and above.
fn dagraid_only(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("dagraid") && *meta.level() <= Level::INFO
}

/// [`dagraid_only`] as a per-layer filter whose answer is cached per callsite and which tells
/// its level: a callsite it refuses (every `trace!` of h2, hyper or tonic) stays disabled
/// for good instead of being asked again on every hit, and `debug!`/`trace!` callsites are
/// skipped by the level check alone. (A `filter_fn` would make every callsite in the process
/// "sometimes", evaluated on every hit: measurably slower on the data path.)
#[derive(Debug, Clone, Copy)]
struct DagraidOnly;

impl<S> tracing_subscriber::layer::Filter<S> for DagraidOnly {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        dagraid_only(meta)
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if dagraid_only(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
}

/// The resource of the process's spans: `service.name`, the SDK's name, language and
/// version, then the `OTEL_RESOURCE_ATTRIBUTES` (which cannot override `service.name`: its
/// flag and `OTEL_SERVICE_NAME` do).
fn resource(settings: &TraceSettings) -> Vec<(String, Value)> {
    let mut attributes = vec![
        (
            "service.name".to_owned(),
            Value::Str(settings.service_name.clone()),
        ),
        (
            "telemetry.sdk.name".to_owned(),
            Value::Str("dagraid-telemetry".into()),
        ),
        (
            "telemetry.sdk.language".to_owned(),
            Value::Str("rust".into()),
        ),
        (
            "telemetry.sdk.version".to_owned(),
            Value::Str(env!("CARGO_PKG_VERSION").into()),
        ),
    ];
    for (k, v) in &settings.resource_attributes {
        if !attributes.iter().any(|(have, _)| have == k) {
            attributes.push((k.clone(), Value::Str(v.clone())));
        }
    }
    attributes
}

/// Builds (without installing) a subscriber per `settings`: the log to `log` filtered by
/// `log_filter`, and the export layer when `settings` has an endpoint. The exporter and its
/// connection live on the export thread, in a runtime of their own ([`export`]), never on the
/// caller's runtime.
pub fn build<W>(
    settings: &TraceSettings,
    log_filter: EnvFilter,
    log: W,
    ansi: bool,
) -> Result<(Dispatch, Telemetry), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(log)
        .with_ansi(ansi)
        .with_filter(log_filter);
    let (layer, exporter) = match &settings.endpoint {
        None => (None, None),
        Some(endpoint) => {
            let encoder =
                RequestEncoder::new(&resource(settings), "dagraid", env!("CARGO_PKG_VERSION"));
            let (queue, exporter) =
                Exporter::start(endpoint, &settings.headers, encoder, settings.batch)?;
            let layer = ExportLayer::new(settings.sampler, queue).with_filter(DagraidOnly);
            (Some(layer), Some(exporter))
        }
    };
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(fmt).with(layer));
    Ok((
        dispatch,
        Telemetry {
            exporter,
            settings: settings.clone(),
        },
    ))
}

/// Installs the process's subscriber: the log on stderr (`RUST_LOG`, default `info`) and, when
/// `args` (or the `OTEL_*` variables) name an endpoint, trace export as `default_service`
/// unless `OTEL_SERVICE_NAME` says otherwise.
pub fn init(args: &TelemetryArgs, default_service: &str) -> Result<Telemetry, String> {
    let settings = TraceSettings::resolve(args, default_service)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (dispatch, telemetry) = build(&settings, filter, std::io::stderr, ansi)?;
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|e| format!("installing the tracing subscriber: {e}"))?;
    if let Some(endpoint) = &settings.endpoint {
        tracing::info!(
            endpoint = %endpoint,
            service = %settings.service_name,
            sampler = ?settings.sampler,
            "exporting traces over OTLP/gRPC"
        );
    }
    Ok(telemetry)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::Filter;
    use tracing_subscriber::registry::Registry;

    use super::*;

    /// The callsites of this test, as seen by the filter.
    fn metadata_of(span: &tracing::Span) -> &'static tracing::Metadata<'static> {
        span.metadata().expect("an enabled span has metadata")
    }

    #[test]
    fn the_export_filter_decides_once_per_callsite_and_tells_its_level() {
        // A subscriber that enables everything, so that the spans below have metadata.
        let all = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
        tracing::subscriber::with_default(all, || {
            let ours = tracing::info_span!(target: "dagraid_core::engine", "Rod");
            let ours_debug = tracing::debug_span!(target: "dagraid_core::engine", "detail");
            let foreign = tracing::info_span!(target: "h2::proto", "poll");
            let filter = DagraidOnly;
            let interest = |s: &tracing::Span| {
                <DagraidOnly as Filter<Registry>>::callsite_enabled(&filter, metadata_of(s))
            };
            assert!(interest(&ours).is_always());
            assert!(interest(&ours_debug).is_never());
            assert!(interest(&foreign).is_never());
            assert_eq!(
                <DagraidOnly as Filter<Registry>>::max_level_hint(&filter),
                Some(tracing::level_filters::LevelFilter::INFO)
            );
        });
    }
}
