//! A real OTLP/gRPC trace receiver for tests and benches (feature `receiver`), in process on
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
        Self::start_with(true).await
    }

    /// A receiver that only counts spans (for benches: no per-span work).
    pub async fn counting() -> std::io::Result<OtlpReceiver> {
        Self::start_with(false).await
    }

    async fn start_with(keep: bool) -> std::io::Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
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

pub use crate::otlp::count_spans;

/// The counting receiver's gRPC service: `TraceService/Export` with a codec that only counts.
mod counting {
    use std::convert::Infallible;
    use std::sync::Arc;

    use bytes::Buf;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
    use tonic::server::{NamedService, UnaryService};
    use tonic::{Request, Response, Status};

    use super::{MAX_MESSAGE, Shared};
    use crate::otlp::count_spans;

    const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

    /// A request, counted: how many spans it held.
    pub(super) struct Counted(u64);

    /// Decodes a request into its span count; encodes the empty `ExportTraceServiceResponse`.
    #[derive(Debug, Clone, Copy, Default)]
    pub(super) struct CountCodec;

    impl Codec for CountCodec {
        type Encode = ();
        type Decode = Counted;
        type Encoder = CountCodec;
        type Decoder = CountCodec;

        fn encoder(&mut self) -> Self::Encoder {
            CountCodec
        }

        fn decoder(&mut self) -> Self::Decoder {
            CountCodec
        }
    }

    impl Encoder for CountCodec {
        type Item = ();
        type Error = Status;

        /// An empty message (no partial success) is zero bytes.
        fn encode(&mut self, (): (), _dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            Ok(())
        }
    }

    impl Decoder for CountCodec {
        type Item = Counted;
        type Error = Status;

        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Counted>, Status> {
            let len = src.remaining();
            // The buffer of one message is contiguous.
            let n = count_spans(&src.chunk()[..len]).map_err(Status::invalid_argument)?;
            src.advance(len);
            Ok(Some(Counted(n)))
        }
    }

    /// The service, for `tonic::transport::Server::add_service`.
    #[derive(Clone)]
    pub(super) struct CountingServer(pub(super) Arc<Shared>);

    impl NamedService for CountingServer {
        const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    }

    struct Export(Arc<Shared>);

    impl UnaryService<Counted> for Export {
        type Response = ();
        type Future = std::future::Ready<Result<Response<()>, Status>>;

        fn call(&mut self, request: Request<Counted>) -> Self::Future {
            let Counted(n) = request.into_inner();
            self.0.arrived(n);
            std::future::ready(Ok(Response::new(())))
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
                let mut grpc = tonic::server::Grpc::new(CountCodec)
                    .apply_max_message_size_config(Some(MAX_MESSAGE), None);
                Ok(grpc.unary(Export(shared), request).await)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
    use prost::Message;

    use super::*;

    fn span(i: u64) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: i.to_be_bytes().to_vec(),
            name: format!("span {i}"),
            kind: 1,
            start_time_unix_nano: i,
            end_time_unix_nano: i + 1,
            attributes: vec![KeyValue {
                key: "k".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::DoubleValue(1.5)),
                }),
                ..KeyValue::default()
            }],
            events: vec![span::Event {
                name: "e".into(),
                ..span::Event::default()
            }],
            ..Span::default()
        }
    }

    #[test]
    fn count_spans_counts_what_a_full_decode_finds() {
        let mut next = 0;
        let mut spans = |n: usize| {
            (0..n)
                .map(|_| {
                    next += 1;
                    span(next)
                })
                .collect::<Vec<_>>()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue("s".into())),
                            }),
                            ..KeyValue::default()
                        }],
                        ..Resource::default()
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "dagraid".into(),
                                ..InstrumentationScope::default()
                            }),
                            spans: spans(3),
                            schema_url: "x".into(),
                        },
                        ScopeSpans {
                            spans: spans(0),
                            ..ScopeSpans::default()
                        },
                    ],
                    schema_url: "y".into(),
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: spans(200),
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                },
            ],
        };
        let bytes = request.encode_to_vec();
        assert_eq!(count_spans(&bytes), Ok(203));
        assert_eq!(count_spans(&[]), Ok(0));
        // Every cut inside the message is malformed, never a wrong count that looks right.
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(count_spans(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(count_spans(&[0x0b]), Err("unsupported wire type"));
    }

    #[tokio::test]
    async fn the_counting_receiver_counts_what_the_exporter_sends() {
        use crate::export::{ExportStats, Exporter};
        use crate::otlp::RequestEncoder;
        use tracing_subscriber::layer::SubscriberExt;

        let receiver = OtlpReceiver::counting().await.unwrap();
        let stats: &'static ExportStats = Box::leak(Box::default());
        let endpoint = receiver.endpoint();
        let (queue, exporter) = Exporter::start_with(
            move || crate::export::GrpcTransport::new(&endpoint, Duration::from_secs(10), &[]),
            RequestEncoder::new(&[], "test", "0"),
            crate::BatchSettings::default(),
            stats,
        )
        .unwrap();
        let layer = crate::layer::ExportLayer::new(crate::SamplerChoice::AlwaysOn, queue);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1234u64 {
                let _span = tracing::info_span!("s", i).entered();
            }
        });
        tokio::task::spawn_blocking(move || {
            exporter.flush().unwrap();
            exporter.shutdown().unwrap();
        })
        .await
        .unwrap();
        assert_eq!(receiver.count(), 1234);
        assert_eq!(stats.snapshot(), (1234, 0, 1234, 0));
    }
}
