//! A tower layer for tonic servers: one span per call (the caller's trace context as its
//! parent) and the call metrics `dagraid_grpc_server_handled_total` and
//! `dagraid_grpc_server_handling_seconds`.
//!
//! The span is named after the method (`dagraid.storage.v1.StorageNode/WriteBlocks` in an
//! exported trace, through the `otel.name` field), is a child of the caller's span when the call
//! carries a W3C `traceparent` ([`crate::propagation::extract`]), and records
//! `rpc.grpc.status_code`. Calls
//! that arrive without a trace context and are listed as background ([`GrpcServerLayer::quiet`]:
//! health checks, node info polled every second) get no span, so a health loop does not fill
//! the tracing backend with one-span traces.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::codegen::http::{Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::latency_histogram;

/// gRPC status code names, by number.
pub const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of gRPC status code `code` (`UNKNOWN` for a number outside the standard ones).
pub fn code_name(code: i32) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|c| CODE_NAMES.get(c))
        .copied()
        .unwrap_or("UNKNOWN")
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    method: String,
    code: &'static str,
}

/// The server-side call metrics of one process.
#[derive(Debug, Clone)]
pub struct GrpcServerMetrics {
    handled: Family<HandledLabels, Counter>,
    seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Resolved per method once, so a call costs no allocation and no label hashing.
    by_method: Arc<RwLock<HashMap<String, Arc<MethodMetrics>>>>,
}

#[derive(Debug)]
struct MethodMetrics {
    seconds: Histogram,
    handled: [Counter; 17],
}

impl GrpcServerMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> GrpcServerMetrics {
        let m = GrpcServerMetrics {
            handled: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
            by_method: Arc::default(),
        };
        registry.register(
            "dagraid_grpc_server_handled",
            "gRPC calls this process served, by method and status code",
            m.handled.clone(),
        );
        registry.register(
            "dagraid_grpc_server_handling_seconds",
            "Time from a call's arrival to its answer's headers, by method",
            m.seconds.clone(),
        );
        m
    }

    fn method(&self, method: &str) -> Arc<MethodMetrics> {
        if let Some(m) = self
            .by_method
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(method)
        {
            return m.clone();
        }
        let mut map = self.by_method.write().unwrap_or_else(|p| p.into_inner());
        map.entry(method.to_owned())
            .or_insert_with(|| {
                let labels = MethodLabels {
                    method: method.to_owned(),
                };
                Arc::new(MethodMetrics {
                    seconds: self.seconds.get_or_create(&labels).clone(),
                    handled: std::array::from_fn(|c| {
                        self.handled
                            .get_or_create(&HandledLabels {
                                method: method.to_owned(),
                                code: CODE_NAMES[c],
                            })
                            .clone()
                    }),
                })
            })
            .clone()
    }

    /// Counts one call of `method` answered with `code` after `seconds`.
    pub fn observe(&self, method: &str, code: i32, seconds: f64) {
        self.method(method).observe(code, seconds);
    }
}

impl MethodMetrics {
    fn observe(&self, code: i32, seconds: f64) {
        self.seconds.observe(seconds);
        let c = usize::try_from(code).ok().filter(|c| *c < 17).unwrap_or(2);
        self.handled[c].inc();
    }
}

/// The layer: wraps every service of a tonic server.
#[derive(Debug, Clone, Default)]
pub struct GrpcServerLayer {
    metrics: Option<GrpcServerMetrics>,
    quiet: Arc<[&'static str]>,
}

impl GrpcServerLayer {
    /// Spans for every call, metrics into `metrics` (if any).
    pub fn new(metrics: Option<GrpcServerMetrics>) -> Self {
        GrpcServerLayer {
            metrics,
            quiet: Arc::from(Vec::new()),
        }
    }

    /// Calls of these full methods (`package.Service/Method`, e.g.
    /// `grpc.health.v1.Health/Check`) get a span only when they carry a trace context.
    pub fn quiet(mut self, methods: &[&'static str]) -> Self {
        self.quiet = Arc::from(methods.to_vec());
        self
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`GrpcServerLayer`] makes.
#[derive(Debug, Clone)]
pub struct GrpcServerService<S> {
    inner: S,
    layer: GrpcServerLayer,
}

/// The answer's gRPC status: a trailers-only answer (every error of a unary call) carries it in
/// its headers; an answer without it there is a success, whose status comes in the trailers.
fn status_of<B>(response: &Response<B>) -> i32 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcServerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone is ready only after poll_ready; call the one that was polled.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let method = request.uri().path().trim_start_matches('/');
        // Resolved once per method: the call allocates nothing for its metrics.
        let metrics = self.layer.metrics.as_ref().map(|m| m.method(method));
        // The caller's trace context becomes the span's parent (an invalid one is ignored:
        // the call starts a trace of its own).
        let headers = request.headers();
        let traced = headers.contains_key("traceparent");
        let span = if traced || !self.layer.quiet.contains(&method) {
            let (service, name) = method.split_once('/').unwrap_or(("", method));
            // `&str` fields, not `%` ones: recorded without the formatting machinery.
            let span = tracing::info_span!(
                "grpc",
                otel.name = method,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = name,
                rpc.grpc.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            if traced {
                // Fails only when no OpenTelemetry layer records the span (export off).
                let _ = span.set_parent(crate::propagation::extract(headers));
            }
            span
        } else {
            tracing::Span::none()
        };
        let start = Instant::now();
        let record = span.clone();
        let future = inner.call(request);
        Box::pin(
            async move {
                let result = future.await;
                let code = match &result {
                    Ok(response) => status_of(response),
                    Err(_) => 14, // UNAVAILABLE: the transport gave up on the call.
                };
                record.record("rpc.grpc.status_code", code);
                if code != 0 {
                    record.record("otel.status_code", "error");
                }
                if let Some(m) = metrics {
                    m.observe(code, start.elapsed().as_secs_f64());
                }
                result
            }
            .instrument(span),
        )
    }
}
