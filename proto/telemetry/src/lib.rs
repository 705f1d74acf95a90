//! dagraid's telemetry set-up, shared by the coordinator, the storage node and the CLI: trace
//! export through `tracing-opentelemetry`, the OpenTelemetry SDK's batch span processor and
//! `opentelemetry-otlp` (OTLP/gRPC); W3C trace context in gRPC metadata; the gRPC server span
//! and call metrics; the Prometheus `/metrics` endpoint.
//!
//! Code map:
//! - this file: [`TelemetryArgs`] (the flags), [`TraceSettings`], [`build`] and [`init`], which
//!   put the log layer and, when an endpoint is set, the export layer into one subscriber;
//! - [`counting`]: wrappers around the SDK's batch processor and the OTLP exporter that count
//!   every span ended, dropped, exported or lost (the SDK keeps no public counter);
//! - [`propagation`]: inject the current context into a call's metadata, extract it from a
//!   served call's headers (the SDK's `TraceContextPropagator`);
//! - [`grpc`]: the tower layer of the servers: one span per call, a child of the caller's
//!   context, and the call metrics;
//! - [`metrics`]: the `/metrics` HTTP endpoint over a prometheus-client registry.
//!
//! The standard variables are read by the SDK and the exporter themselves
//! (`OTEL_EXPORTER_OTLP_*`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`); a flag, when given, is handed to the builder and wins. This
//! crate only looks at the endpoint variables to know whether to export at all, and checks
//! the sampler's name so that a typo is an error at start rather than a silent default.

pub mod counting;
pub mod grpc;
pub mod metrics;
pub mod propagation;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};
use tracing::dispatcher::WeakDispatch;
use tracing::level_filters::LevelFilter;
use tracing::{Dispatch, Level};
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

pub use grpc::{GrpcServerLayer, GrpcServerMetrics};
pub use metrics::MetricsServer;

/// The trace flags every dagraid server accepts (flattened into its command line). Each has a
/// standard OpenTelemetry variable, read by the SDK when the flag is not given.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct TelemetryArgs {
    /// OTLP/gRPC endpoint to export traces to, e.g. http://127.0.0.1:4317 (Jaeger, an
    /// OpenTelemetry collector) [env: OTEL_EXPORTER_OTLP_ENDPOINT]. None: no export.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans [env: OTEL_SERVICE_NAME; default: the
    /// binary's name].
    #[arg(long, value_name = "NAME")]
    pub service_name: Option<String>,
    /// Sampler: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off or parentbased_traceidratio [env: OTEL_TRACES_SAMPLER;
    /// default: parentbased_always_on].
    #[arg(long, value_name = "SAMPLER")]
    pub trace_sampler: Option<String>,
    /// The ratio of traces the traceidratio samplers keep, 0 to 1 [env:
    /// OTEL_TRACES_SAMPLER_ARG; default: 1].
    #[arg(long, value_name = "RATIO")]
    pub trace_sampler_arg: Option<String>,
}

/// Spans waiting for export at most unless `OTEL_BSP_MAX_QUEUE_SIZE` says otherwise: with 16
/// writes in flight and 19 spans a write, nothing is dropped while a batch is being sent
/// (the SDK's 2048 dropped spans in the benchmark).
pub const DEFAULT_MAX_QUEUE: usize = 8192;

/// Options of the export layer (`tracing-opentelemetry`'s own), all off by default: none of
/// them is read by dagraid's dashboards or tests, and each costs work on every span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerOptions {
    /// `code.*` attributes (file, module, line).
    pub location: bool,
    /// `thread.id` and `thread.name` attributes.
    pub threads: bool,
    /// `busy_ns` / `idle_ns` attributes (a clock read on every enter and exit).
    pub tracked_inactivity: bool,
    /// A `target` attribute.
    pub target: bool,
    /// Attach the span's OpenTelemetry context on every enter (each poll of an instrumented
    /// future); without it, a span's OpenTelemetry span is built when it ends or when its
    /// context is asked for (a call's injection).
    pub context_activation: bool,
}

/// The resolved trace settings of one process.
#[derive(Debug, Clone)]
pub struct TraceSettings {
    /// Where spans go; `None`: export is off.
    pub endpoint: Option<String>,
    /// `service.name`, when the flag gave one; otherwise `OTEL_SERVICE_NAME` (or
    /// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`), else [`TraceSettings::default_service`].
    pub service_name: Option<String>,
    /// The name used when neither a flag nor a variable names the service.
    pub default_service: String,
    /// The sampler the flags chose; `None`: the SDK's (`OTEL_TRACES_SAMPLER`, default
    /// `parentbased_always_on`).
    pub sampler: Option<Sampler>,
    /// Spans queued at most; `None`: `OTEL_BSP_MAX_QUEUE_SIZE`, else [`DEFAULT_MAX_QUEUE`].
    pub max_queue: Option<usize>,
    /// Spans per export request at most; `None`: `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, else the
    /// SDK's 512 (measured: the export path's CPU per write a third lower than with 128, and
    /// no span dropped where 128 dropped some; docs/BENCHMARKS.md).
    pub max_batch: Option<usize>,
    /// Longest a span waits before its batch is sent; `None`: `OTEL_BSP_SCHEDULE_DELAY`
    /// (SDK default 5 s).
    pub delay: Option<Duration>,
    /// Deadline of one export call; `None`: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` /
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (exporter default 10 s).
    pub export_timeout: Option<Duration>,
    /// The export layer's options.
    pub layer: LayerOptions,
    /// Whether the log layer sees spans (the context of its lines). Off, it formats no
    /// span's fields: a process that logs at `info` prints almost no line inside a span,
    /// and formatting every span's fields for lines never printed is most of what the log
    /// layer costs on the data path. On when `RUST_LOG` asks for `debug` or more.
    pub log_spans: bool,
}

impl Default for TraceSettings {
    fn default() -> Self {
        TraceSettings {
            endpoint: None,
            service_name: None,
            default_service: "dagraid".into(),
            sampler: None,
            max_queue: None,
            max_batch: None,
            delay: None,
            export_timeout: None,
            layer: LayerOptions::default(),
            log_spans: false,
        }
    }
}

/// The samplers' names, as `OTEL_TRACES_SAMPLER` spells them.
const SAMPLERS: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// The sampler named `name` with argument `arg` (the ratio, default 1).
pub fn sampler(name: &str, arg: Option<&str>) -> Result<Sampler, String> {
    let ratio = || match arg.map(str::trim).filter(|a| !a.is_empty()) {
        None => Ok(1.0),
        Some(a) => match a.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(format!(
                "the trace sampler argument must be a ratio from 0 to 1, got {a:?}"
            )),
        },
    };
    let parent_based = |root| Sampler::ParentBased(Box::new(root));
    Ok(match name.trim() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => parent_based(Sampler::AlwaysOn),
        "parentbased_always_off" => parent_based(Sampler::AlwaysOff),
        "parentbased_traceidratio" => parent_based(Sampler::TraceIdRatioBased(ratio()?)),
        other => {
            return Err(format!(
                "unknown trace sampler {other:?}: expected one of {}",
                SAMPLERS.join(", ")
            ));
        }
    })
}

/// A set, non-empty variable.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Refuses an endpoint the exporter cannot use: dagraid's exporter has no TLS.
fn check_endpoint(endpoint: &str, from: &str) -> Result<(), String> {
    let uri: tonic::codegen::http::Uri = endpoint
        .parse()
        .map_err(|e| format!("{from}: {endpoint:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(()),
        Some("https") => Err(format!(
            "{from}: {endpoint:?}: dagraid exports without TLS, use an http:// endpoint (a local collector)"
        )),
        _ => Err(format!("{from}: {endpoint:?}: expected http://HOST:PORT")),
    }
}

impl TraceSettings {
    /// The settings of a process from its flags and the variables that decide whether and
    /// where to export; `default_service` names the service when nothing else does. Errors
    /// name the flag or variable at fault.
    pub fn resolve(args: &TelemetryArgs, default_service: &str) -> Result<TraceSettings, String> {
        let endpoint = match args.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
            Some(e) => Some((e.to_owned(), "--otlp-endpoint")),
            None => var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .map(|e| (e, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
                .or_else(|| {
                    var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| (e, "OTEL_EXPORTER_OTLP_ENDPOINT"))
                }),
        };
        if let Some((e, from)) = &endpoint {
            check_endpoint(e, from)?;
        }
        let sampler = match &args.trace_sampler {
            Some(name) => Some(
                sampler(name, args.trace_sampler_arg.as_deref())
                    .map_err(|e| format!("--trace-sampler: {e}"))?,
            ),
            None => {
                if let Some(name) = var("OTEL_TRACES_SAMPLER") {
                    // The SDK reads it; refuse here what it would silently replace.
                    sampler(&name, var("OTEL_TRACES_SAMPLER_ARG").as_deref())
                        .map_err(|e| format!("OTEL_TRACES_SAMPLER: {e}"))?;
                }
                if let Some(arg) = &args.trace_sampler_arg {
                    // A ratio without a sampler name: the default sampler, parent based.
                    Some(sampler("parentbased_traceidratio", Some(arg))?)
                } else {
                    None
                }
            }
        };
        Ok(TraceSettings {
            endpoint: endpoint.map(|(e, _)| e),
            service_name: args.service_name.clone().filter(|s| !s.is_empty()),
            default_service: default_service.to_owned(),
            sampler,
            ..TraceSettings::default()
        })
    }

    /// The process's resource: what the SDK's detectors find (`OTEL_SERVICE_NAME`,
    /// `OTEL_RESOURCE_ATTRIBUTES`, the SDK's name and version), with the flag's service name
    /// over them, or the binary's name when none was found.
    fn resource(&self) -> Resource {
        let detected = Resource::builder().build();
        let name = opentelemetry::Key::from_static_str("service.name");
        let unnamed = detected
            .get(&name)
            .is_none_or(|v| v.as_str().starts_with("unknown_service"));
        match &self.service_name {
            Some(s) => Resource::builder().with_service_name(s.clone()).build(),
            None if unnamed => Resource::builder()
                .with_service_name(self.default_service.clone())
                .build(),
            None => detected,
        }
    }
}

/// The telemetry of a process; [`Telemetry::shutdown`] sends the spans still queued.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// The exporter's gRPC connection lives here, never on the runtime that serves volumes
    /// or storage calls.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends every span that ended so far and waits for the receiver's answer (blocking: in
    /// async code call it from `spawn_blocking`).
    pub fn flush_blocking(&self) -> Result<(), String> {
        match &self.provider {
            Some(p) => p.force_flush().map_err(|e| format!("flushing spans: {e}")),
            None => Ok(()),
        }
    }

    /// Sends the spans still queued and stops the export (without blocking the caller's
    /// runtime).
    pub async fn shutdown(mut self) {
        let provider = self.provider.take();
        let runtime = self.runtime.take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(p) = provider {
                let _ = p.shutdown();
            }
            if let Some(rt) = runtime {
                rt.shutdown_background();
            }
        })
        .await;
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether the export layer may see `meta` at all: dagraid's own spans and events, INFO and
/// above.
fn dagraid_only(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("dagraid") && *meta.level() <= Level::INFO
}

/// Whether the trace of the current span is sampled: that of the nearest span an OpenTelemetry
/// layer records, from the current one up its parents (a task runs in a span of its own, not on
/// the stack of the one that spawned it); true without one (a root in this process).
fn in_sampled_trace<S>(
    dispatch: &OnceLock<WeakDispatch>,
    cx: &tracing_subscriber::layer::Context<'_, S>,
) -> bool
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(current) = cx.current_span().id().cloned() else {
        return true;
    };
    let Some(dispatch) = dispatch.get().and_then(WeakDispatch::upgrade) else {
        return true;
    };
    // Builds that span's SDK span if it is not built yet: the layer does so anyway for its
    // first child (the child's parent context).
    propagation::recorded_context(&dispatch, Some(current))
        .is_none_or(|otel| otel.span().span_context().is_sampled())
}

/// The export layer's filter. Per callsite, [`dagraid_only`], decided once: a callsite it
/// refuses (every `trace!` of h2, hyper or tonic) stays disabled for good instead of being asked
/// again on every hit, and its level (INFO) is its hint. Per span or event of dagraid's own
/// callsites: only inside a sampled trace, that of the nearest span the layer records above it.
/// Below a span that is not sampled the layer sees nothing (no span builder, no fields, no SDK
/// span), so at a ratio of 0.01 an unsampled access costs the layer its root spans only (a
/// client call, a served call: the sampler needs them to decide). A span with nothing recorded
/// above it is a root in this process and always recorded: the SDK's sampler decides it, with
/// the remote parent a served call's span is given just after it is made (`traceparent`), so
/// the parent-based samplers still follow the caller. When the [`UnsampledGate`] is in the
/// subscriber, it has made that decision for spans already (a span it refused is never made),
/// and this filter asks again for events only.
struct ExportFilter {
    /// The subscriber this filter is part of, to ask the export layer for a span's context;
    /// set once the subscriber is built.
    dispatch: Arc<OnceLock<WeakDispatch>>,
    /// Whether the [`UnsampledGate`] decides spans.
    gated: bool,
}

impl<S> Filter<S> for ExportFilter
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        dagraid_only(meta)
            && ((self.gated && meta.is_span()) || in_sampled_trace(&self.dispatch, cx))
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if dagraid_only(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }
}

/// Refuses, for every layer at once, a span of dagraid's below a span that is not sampled:
/// the span is never made (no registry slot, no extensions, no enter and exit on every poll),
/// as with tracing off. A per-layer filter cannot do that: `tracing-subscriber`'s registry
/// makes a span whenever some layer has a per-layer filter, whatever each filter answered.
/// In the subscriber only when the log layer takes no spans (it would lose their context).
/// A task handed such a span runs in the caller's instead (`Span::or_current` where the
/// access and the DAG are spawned), so calls made below carry the trace and its decision.
/// Innermost in the subscriber (next to the registry): the per-layer filters' interest in a
/// callsite stands for every callsite but dagraid's spans.
struct UnsampledGate {
    /// As [`ExportFilter::dispatch`].
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<S> Layer<S> for UnsampledGate
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if meta.is_span() && dagraid_only(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    }

    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        !(meta.is_span() && dagraid_only(meta)) || in_sampled_trace(&self.dispatch, &cx)
    }

    /// The gate enables nothing by itself (it only refuses): the other layers' hints stand.
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::OFF)
    }
}

/// `filter`, and spans only when `spans`: the log layer then formats no span's fields unless
/// it prints span context. (A `filter_fn` of the metadata alone is decided once per callsite.)
fn log_filter_with_spans<S>(filter: EnvFilter, spans: bool) -> impl Filter<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let spans =
        filter_fn(move |meta| spans || !meta.is_span()).with_max_level_hint(LevelFilter::TRACE);
    filter.and(spans)
}

/// The log layer: lines to `log`, filtered by `filter`, spans only when `spans`.
fn log_layer<S, W>(log: W, ansi: bool, filter: EnvFilter, spans: bool) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(log)
        .with_ansi(ansi)
        .with_filter(log_filter_with_spans(filter, spans))
}

/// Builds (without installing) a subscriber per `settings`: the log to `log` filtered by
/// `log_filter`, and the export layer when `settings` has an endpoint. The exporter's
/// connection lives in a runtime of its own (thread `dagraid-otlp`); the batch processor
/// sends from its own thread; ending a span never waits for either.
pub fn build<W>(
    settings: &TraceSettings,
    log_filter: EnvFilter,
    log: W,
    ansi: bool,
) -> Result<(Dispatch, Telemetry), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let Some(endpoint) = &settings.endpoint else {
        let fmt = log_layer(log, ansi, log_filter, settings.log_spans);
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(fmt));
        return Ok((dispatch, Telemetry::default()));
    };
    check_endpoint(endpoint, "the OTLP endpoint")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("dagraid-otlp")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the trace export runtime: {e}"))?;
    let exporter = {
        // The channel's tasks are spawned on the export runtime.
        let _entered = runtime.enter();
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone());
        if let Some(t) = settings.export_timeout {
            builder = builder.with_timeout(t);
        }
        builder
            .build()
            .map_err(|e| format!("the OTLP exporter: {e}"))?
    };
    let env_usize = |name: &str| var(name).and_then(|v| v.trim().parse::<usize>().ok());
    let max_queue = settings
        .max_queue
        .or_else(|| env_usize("OTEL_BSP_MAX_QUEUE_SIZE"))
        .unwrap_or(DEFAULT_MAX_QUEUE)
        .max(1);
    let mut batch = BatchConfigBuilder::default().with_max_queue_size(max_queue);
    if let Some(n) = settings.max_batch {
        batch = batch.with_max_export_batch_size(n.max(1));
    }
    if let Some(d) = settings.delay {
        batch = batch.with_scheduled_delay(d);
    }
    let processor = counting::CountingProcessor::new(exporter, batch.build(), max_queue);
    let mut provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(settings.resource());
    if let Some(s) = &settings.sampler {
        provider = provider.with_sampler(s.clone());
    }
    let provider = provider.build();
    let o = settings.layer;
    let dispatch = Arc::new(OnceLock::new());
    let export = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("dagraid"))
        .with_location(o.location)
        .with_threads(o.threads)
        .with_tracked_inactivity(o.tracked_inactivity)
        .with_target(o.target)
        .with_context_activation(o.context_activation)
        .with_filter(ExportFilter {
            dispatch: dispatch.clone(),
            gated: !settings.log_spans,
        });
    let gate = (!settings.log_spans).then(|| UnsampledGate {
        dispatch: dispatch.clone(),
    });
    let subscriber = Dispatch::new(
        tracing_subscriber::registry()
            .with(gate)
            .with(log_layer(log, ansi, log_filter, settings.log_spans))
            .with(export),
    );
    let _ = dispatch.set(subscriber.downgrade());
    let dispatch = subscriber;
    Ok((
        dispatch,
        Telemetry {
            provider: Some(provider),
            runtime: Some(runtime),
        },
    ))
}

/// Installs the process's subscriber: the log on stderr (`RUST_LOG`, default `info`) and,
/// when `args` or the `OTEL_*` variables name an endpoint, trace export as `default_service`
/// unless `--service-name` or `OTEL_SERVICE_NAME` says otherwise.
pub fn init(args: &TelemetryArgs, default_service: &str) -> Result<Telemetry, String> {
    let mut settings = TraceSettings::resolve(args, default_service)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    settings.log_spans = filter
        .max_level_hint()
        .is_some_and(|l| l >= LevelFilter::DEBUG);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (dispatch, telemetry) = build(&settings, filter, std::io::stderr, ansi)?;
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|e| format!("installing the tracing subscriber: {e}"))?;
    if let Some(endpoint) = &settings.endpoint {
        tracing::info!(
            endpoint = %endpoint,
            sampler = ?settings.sampler,
            "exporting traces over OTLP/gRPC"
        );
    }
    Ok(telemetry)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::registry::Registry;

    use super::*;

    #[test]
    fn the_export_filter_refuses_foreign_callsites_for_good_and_tells_its_level() {
        let all = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
        tracing::subscriber::with_default(all, || {
            let ours = tracing::info_span!(target: "dagraid_core::engine", "Rod");
            let ours_debug = tracing::debug_span!(target: "dagraid_core::engine", "detail");
            let foreign = tracing::info_span!(target: "h2::proto", "poll");
            let filter = ExportFilter {
                dispatch: Arc::default(),
                gated: true,
            };
            let interest = |s: &tracing::Span| {
                <ExportFilter as Filter<Registry>>::callsite_enabled(
                    &filter,
                    s.metadata().expect("enabled"),
                )
            };
            // Ours are asked per span (sampled trace or not); the rest never.
            assert!(interest(&ours).is_sometimes());
            assert!(interest(&ours_debug).is_never());
            assert!(interest(&foreign).is_never());
            assert_eq!(
                <ExportFilter as Filter<Registry>>::max_level_hint(&filter),
                Some(LevelFilter::INFO)
            );
        });
    }

    /// A subscriber exporting to a port nothing listens on (nothing is flushed here).
    fn exporting(sampler: Sampler, log_spans: bool) -> (Dispatch, Telemetry) {
        let settings = TraceSettings {
            endpoint: Some("http://127.0.0.1:9".into()),
            sampler: Some(sampler),
            log_spans,
            ..TraceSettings::default()
        };
        build(&settings, EnvFilter::new("info"), std::io::sink, false).unwrap()
    }

    #[test]
    fn below_an_unsampled_span_no_layer_gets_a_span_and_the_log_keeps_its_events() {
        let (dispatch, _telemetry) = exporting(Sampler::AlwaysOff, false);
        tracing::dispatcher::with_default(&dispatch, || {
            let root = tracing::info_span!(target: "dagraid_test", "root");
            assert!(
                !root.is_disabled(),
                "a root is made: the sampler decides it"
            );
            root.in_scope(|| {
                let child = tracing::info_span!(target: "dagraid_test", "child");
                assert!(child.is_disabled(), "never made, for any layer");
                // What the access and the DAG tasks run in when handed such a span.
                assert_eq!(child.or_current().id(), root.id());
                assert!(tracing::enabled!(target: "dagraid_test", Level::INFO));
                assert!(!tracing::enabled!(target: "h2::proto", Level::TRACE));
            });
        });
        // The gate changes no level: the fast path of every disabled macro stays.
        let gated = tracing_subscriber::registry()
            .with(UnsampledGate {
                dispatch: Arc::default(),
            })
            .with(log_layer(
                std::io::sink,
                false,
                EnvFilter::new("info"),
                false,
            ));
        assert_eq!(
            tracing::Subscriber::max_level_hint(&gated),
            Some(LevelFilter::INFO)
        );

        let (dispatch, _telemetry) = exporting(Sampler::AlwaysOn, false);
        tracing::dispatcher::with_default(&dispatch, || {
            let root = tracing::info_span!(target: "dagraid_test", "root");
            let child = root.in_scope(|| tracing::info_span!(target: "dagraid_test", "child"));
            assert!(!child.is_disabled(), "a sampled trace has its spans");
        });

        // A log that prints span context keeps every span.
        let (dispatch, _telemetry) = exporting(Sampler::AlwaysOff, true);
        tracing::dispatcher::with_default(&dispatch, || {
            let root = tracing::info_span!(target: "dagraid_test", "root");
            let child = root.in_scope(|| tracing::info_span!(target: "dagraid_test", "child"));
            assert!(!child.is_disabled());
        });
    }

    #[test]
    fn samplers_parse_and_bad_input_is_a_clear_error() {
        assert_eq!(
            format!(
                "{:?}",
                sampler("parentbased_traceidratio", Some("0.01")).unwrap()
            ),
            format!(
                "{:?}",
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.01)))
            )
        );
        assert!(matches!(sampler("always_on", None), Ok(Sampler::AlwaysOn)));
        let e = sampler("sometimes", None).unwrap_err();
        assert!(e.contains("unknown trace sampler \"sometimes\""), "{e}");
        let e = sampler("traceidratio", Some("2")).unwrap_err();
        assert!(e.contains("ratio from 0 to 1"), "{e}");
        let args = TelemetryArgs {
            trace_sampler: Some("nope".into()),
            ..TelemetryArgs::default()
        };
        let e = TraceSettings::resolve(&args, "x").unwrap_err();
        assert!(e.starts_with("--trace-sampler: "), "{e}");
    }

    #[test]
    fn endpoints_are_checked_at_start() {
        let resolve = |e: &str| {
            TraceSettings::resolve(
                &TelemetryArgs {
                    otlp_endpoint: Some(e.into()),
                    ..TelemetryArgs::default()
                },
                "x",
            )
        };
        assert_eq!(
            resolve("http://127.0.0.1:4317")
                .unwrap()
                .endpoint
                .as_deref(),
            Some("http://127.0.0.1:4317")
        );
        let e = resolve("https://collector:4317").unwrap_err();
        assert!(e.contains("without TLS"), "{e}");
        let e = resolve("not a url").unwrap_err();
        assert!(e.contains("--otlp-endpoint"), "{e}");
        let e = resolve("127.0.0.1:4317").unwrap_err();
        assert!(e.contains("expected http://HOST:PORT"), "{e}");
    }
}
