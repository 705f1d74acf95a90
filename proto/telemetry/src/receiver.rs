//! A real OTLP/gRPC trace receiver for tests and benches (feature `receiver`): the collector
//! service of `opentelemetry-proto`, in process on 127.0.0.1, keeping what it is sent.

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

#[derive(Debug, Default)]
struct Shared {
    keep: bool,
    spans: Mutex<Vec<ReceivedSpan>>,
    count: AtomicU64,
    arrived: Notify,
}

struct Service(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
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
                if !self.0.keep {
                    continue;
                }
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
        if self.0.keep {
            self.0
                .spans
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(kept);
        }
        self.0.count.fetch_add(n, Ordering::Relaxed);
        self.0.arrived.notify_waiters();
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
        let shared = Arc::new(Shared {
            keep,
            ..Shared::default()
        });
        let service =
            TraceServiceServer::new(Service(shared.clone())).max_decoding_message_size(64 << 20);
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
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
