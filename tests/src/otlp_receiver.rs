//! A real OTLP/gRPC trace receiver for the tests and benches, in process on
//! 127.0.0.1: [`OtlpReceiver::start`] serves the collector service of `opentelemetry-proto` and
//! keeps every span it is sent; [`OtlpReceiver::counting`] serves the same gRPC method but only
//! counts the spans, walking the protobuf wire format without decoding it ([`count_spans`]), so
//! that a bench's receiver, which stands for a collector on another machine, costs the cores
//! it shares with the system under test as little as it can.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

/// One span as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// `service.name` of its resource.
    pub service: String,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex id of the parent span; empty for a root.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// OTLP span kind (1 internal, 2 server, 3 client).
    pub kind: i32,
    /// Attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// Events: name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
    /// Whether its status is an error.
    pub error: bool,
    /// Start time, ns since the Unix epoch.
    pub start_ns: u64,
    /// End time, ns since the Unix epoch.
    pub end_ns: u64,
}

impl ReceivedSpan {
    /// Attribute `key` as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn value_text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value_text(&kv.value)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The largest export request either receiver takes.
const MAX_MESSAGE: usize = 64 << 20;

#[derive(Debug, Default)]
struct Shared {
    spans: Mutex<Vec<ReceivedSpan>>,
    /// The metadata of the last request (the keeping receiver only), lower-case keys.
    headers: Mutex<BTreeMap<String, String>>,
    count: AtomicU64,
    arrived: Notify,
    /// How long the keeping receiver waits before it answers.
    delay: Option<Duration>,
}

impl Shared {
    /// Counts `n` more spans received and wakes the waiters.
    fn arrived(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
        self.arrived.notify_waiters();
    }
}

struct Service(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let headers = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.to_string(), v.to_str().ok()?.to_owned()))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        *self.0.headers.lock().unwrap_or_else(|p| p.into_inner()) = headers;
        if let Some(delay) = self.0.delay {
            tokio::time::sleep(delay).await;
        }
        let request = request.into_inner();
        let mut n = 0u64;
        let mut kept = Vec::new();
        for rs in &request.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .map(|kv| value_text(&kv.value))
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                n += ss.spans.len() as u64;
                for s in &ss.spans {
                    kept.push(ReceivedSpan {
                        service: service.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        name: s.name.clone(),
                        kind: s.kind,
                        attributes: attributes(&s.attributes),
                        events: s
                            .events
                            .iter()
                            .map(|e| (e.name.clone(), attributes(&e.attributes)))
                            .collect(),
                        error: s.status.as_ref().is_some_and(|st| st.code == 2),
                        start_ns: s.start_time_unix_nano,
                        end_ns: s.end_time_unix_nano,
                    });
                }
            }
        }
        self.0
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(kept);
        self.0.arrived(n);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// A receiver on 127.0.0.1 (a free port) keeping every span.
    pub async fn start() -> std::io::Result<OtlpReceiver> {
        Self::start_with(true, None).await
    }

    /// A keeping receiver that answers each export only after `delay`: a collector that
    /// cannot keep up.
    pub async fn slow(delay: Duration) -> std::io::Result<OtlpReceiver> {
        Self::start_with(true, Some(delay)).await
    }

    /// A receiver that only counts spans (for benches: no per-span work).
    pub async fn counting() -> std::io::Result<OtlpReceiver> {
        Self::start_with(false, None).await
    }

    async fn start_with(keep: bool, delay: Option<Duration>) -> std::io::Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            delay,
            ..Shared::default()
        });
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let router = if keep {
            tonic::transport::Server::builder().add_service(
                TraceServiceServer::new(Service(shared.clone()))
                    .max_decoding_message_size(MAX_MESSAGE),
            )
        } else {
            tonic::transport::Server::builder()
                .add_service(counting::CountingServer(shared.clone()))
        };
        let task = tokio::spawn(async move {
            let _ = router.serve_with_incoming(incoming).await;
        });
        Ok(OtlpReceiver { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>`: the value of `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans received so far.
    pub fn count(&self) -> u64 {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// A copy of the spans kept so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The ASCII metadata of the last export request (the keeping receiver only).
    pub fn last_headers(&self) -> BTreeMap<String, String> {
        self.shared
            .headers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forgets the spans kept so far (the count stays).
    pub fn clear(&self) {
        self.shared
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Waits until `done` holds for the spans kept, for at most `timeout`; returns them either
    /// way (`Err` when the deadline passed first).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>, Vec<ReceivedSpan>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            // Woken by the next export, or checked again every 50 ms (an export can land
            // between the copy above and the registration of the wait).
            let next = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
            if tokio::time::timeout_at(next, arrived).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                let spans = self.spans();
                return if done(&spans) { Ok(spans) } else { Err(spans) };
            }
        }
    }

    /// Waits until at least `n` spans were received (counted), for at most `timeout`.
    pub async fn wait_for_count(&self, n: u64, timeout: Duration) -> Result<u64, u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            if self.count() >= n {
                return Ok(self.count());
            }
            let next = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
            if tokio::time::timeout_at(next, arrived).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return if self.count() >= n {
                    Ok(self.count())
                } else {
                    Err(self.count())
                };
            }
        }
    }
}

/// The counting receiver's gRPC service: `TraceService/Export` decoding only the nesting of
/// the request (resource spans, scope spans, each span as an undecoded byte string).
mod counting {
    use std::convert::Infallible;
    use std::sync::Arc;

    use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
    use tonic::server::{NamedService, UnaryService};
    use tonic::{Request, Response, Status};
    use tonic_prost::ProstCodec;

    use super::{MAX_MESSAGE, Shared};

    const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

    /// `ExportTraceServiceRequest` with only the fields that hold spans.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct CountedRequest {
        #[prost(message, repeated, tag = "1")]
        resource_spans: Vec<CountedResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct CountedResourceSpans {
        #[prost(message, repeated, tag = "2")]
        scope_spans: Vec<CountedScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct CountedScopeSpans {
        #[prost(bytes = "bytes", repeated, tag = "2")]
        spans: Vec<bytes::Bytes>,
    }

    impl CountedRequest {
        pub(super) fn spans(&self) -> u64 {
            self.resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum()
        }
    }

    /// The empty `ExportTraceServiceResponse` (no partial success).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Answer {}

    /// The service, for `tonic::transport::Server::add_service`.
    #[derive(Clone)]
    pub(super) struct CountingServer(pub(super) Arc<Shared>);

    impl NamedService for CountingServer {
        const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    }

    struct Export(Arc<Shared>);

    impl UnaryService<CountedRequest> for Export {
        type Response = Answer;
        type Future = std::future::Ready<Result<Response<Answer>, Status>>;

        fn call(&mut self, request: Request<CountedRequest>) -> Self::Future {
            self.0.arrived(request.get_ref().spans());
            std::future::ready(Ok(Response::new(Answer {})))
        }
    }

    impl<B> Service<http::Request<B>> for CountingServer
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            if request.uri().path() != EXPORT {
                let path = request.uri().path().to_owned();
                return Box::pin(async move {
                    Ok(Status::unimplemented(format!("no method {path}")).into_http())
                });
            }
            let shared = self.0.clone();
            Box::pin(async move {
                let mut grpc =
                    tonic::server::Grpc::new(ProstCodec::<Answer, CountedRequest>::default())
                        .apply_max_message_size_config(Some(MAX_MESSAGE), None);
                Ok(grpc.unary(Export(shared), request).await)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// The counting receiver counts what the SDK's exporter sends; the keeping receiver keeps
    /// the same spans whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_receivers_get_what_the_exporter_sends() {
        for keep in [false, true] {
            let receiver = OtlpReceiver::start_with(keep, None).await.unwrap();
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(receiver.endpoint())
                .build()
                .unwrap();
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .build();
            let tracer = provider.tracer("test");
            for i in 0..1234u64 {
                tracer.in_span(format!("s{i}"), |_| {});
            }
            tokio::task::spawn_blocking(move || provider.shutdown().unwrap())
                .await
                .unwrap();
            assert_eq!(receiver.count(), 1234);
            assert_eq!(receiver.spans().len(), if keep { 1234 } else { 0 });
        }
    }
}
