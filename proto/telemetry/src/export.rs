//! The export queue and its thread: a span that closes goes into a bounded queue
//! ([`SpanQueue::push`], never blocking); one thread of its own drains the queue in batches,
//! encodes each batch as an OTLP `ExportTraceServiceRequest` ([`crate::otlp`]) and sends it over
//! gRPC. The thread sleeps on a control queue and wakes only when a batch is full, on its timer,
//! or for a flush, never once per span. Its gRPC connection lives in a current-thread runtime
//! of the thread's own, so the encoding and the socket I/O never run on the data path's
//! runtime.
//!
//! Every span that ends is counted ([`ExportStats`]): queued, dropped because the queue was
//! full, exported, or lost in a failed export (or rejected by the receiver). The counts are
//! process-wide and feed the `dagraid_trace_spans_*_total` metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::config::BatchSettings;
use crate::otlp::{self, RequestEncoder};
use crate::record::SpanRecord;

/// What became of the spans that ended in this process.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans that ended while export was on (sampled ones only).
    pub ended: AtomicU64,
    /// Of those, dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Sent and acknowledged by the receiver.
    pub exported: AtomicU64,
    /// Lost in an export that failed, or rejected by the receiver.
    pub failed: AtomicU64,
}

impl ExportStats {
    /// A consistent-enough copy: `(ended, dropped, exported, failed)`.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.ended.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.exported.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

static STATS: ExportStats = ExportStats {
    ended: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    exported: AtomicU64::new(0),
    failed: AtomicU64::new(0),
};

/// The process's span counters.
pub fn stats() -> &'static ExportStats {
    &STATS
}

/// The largest request sent: the gRPC default limit of a receiver (4 MiB) with room to spare.
/// A batch whose encoding would be larger goes in several requests.
const MAX_REQUEST_BYTES: usize = (4 << 20) - (64 << 10);

/// The collector's method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What the export thread is asked to do; spans travel in a queue of their own, which the
/// thread drains without ever sleeping on it (a wake-up per span would cost a context switch per
/// span on the data path's cores).
enum Control {
    /// A batch is full: send it now.
    Export,
    Flush(SyncSender<Result<(), String>>),
    Shutdown(SyncSender<Result<(), String>>),
}

/// Where the export layer puts the spans that end.
#[derive(Debug)]
pub struct SpanQueue {
    sink: Sink,
    stats: &'static ExportStats,
}

#[derive(Debug)]
enum Sink {
    /// The export thread's queue.
    Thread {
        spans: SyncSender<SpanRecord>,
        control: SyncSender<Control>,
        /// Spans in the queue (approximately: the thread subtracts what it drained).
        queued: Arc<AtomicUsize>,
        /// Whether an [`Control::Export`] is on its way (at most one at a time).
        export_asked: Arc<AtomicBool>,
        max_batch: usize,
    },
    /// Unit tests of the layer: keep every span.
    #[cfg(test)]
    Collect(Arc<Mutex<Vec<SpanRecord>>>),
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Export => "Export",
            Control::Flush(_) => "Flush",
            Control::Shutdown(_) => "Shutdown",
        })
    }
}

impl SpanQueue {
    /// Queues a span that ended; drops and counts it when the queue is full. Never blocks.
    pub(crate) fn push(&self, span: SpanRecord) {
        self.stats.ended.fetch_add(1, Ordering::Relaxed);
        match &self.sink {
            Sink::Thread {
                spans,
                control,
                queued,
                export_asked,
                max_batch,
            } => match spans.try_send(span) {
                Ok(()) => {
                    let n = queued.fetch_add(1, Ordering::AcqRel) + 1;
                    if n >= *max_batch && !export_asked.swap(true, Ordering::AcqRel) {
                        // Never blocks: if the control queue is full a request is pending.
                        if control.try_send(Control::Export).is_err() {
                            export_asked.store(false, Ordering::Release);
                        }
                    }
                }
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
            #[cfg(test)]
            Sink::Collect(spans) => spans.lock().unwrap_or_else(|p| p.into_inner()).push(span),
        }
    }

    /// A queue that keeps what it is given (for unit tests of the layer).
    #[cfg(test)]
    pub(crate) fn collecting() -> (Arc<SpanQueue>, Arc<Mutex<Vec<SpanRecord>>>) {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let queue = SpanQueue {
            sink: Sink::Collect(spans.clone()),
            stats: Box::leak(Box::default()),
        };
        (Arc::new(queue), spans)
    }
}

/// Sends one encoded request; the number of spans the receiver rejected, or why it failed.
pub(crate) trait Transport {
    fn send(&mut self, request: Bytes) -> Result<u64, String>;
}

/// OTLP/gRPC to a collector, driven by the export thread's own runtime.
pub(crate) struct GrpcTransport {
    runtime: tokio::runtime::Runtime,
    client: tonic::client::Grpc<Channel>,
    timeout: Duration,
}

impl GrpcTransport {
    /// A lazy connection to `endpoint` (the first export connects; a collector that is down
    /// at start-up costs the spans of the exports that fail, not the process).
    pub(crate) fn new(endpoint: &str, timeout: Duration) -> Result<GrpcTransport, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("the span export runtime: {e}"))?;
        let endpoint = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| format!("the OTLP endpoint {endpoint:?}: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = {
            let _entered = runtime.enter();
            endpoint.connect_lazy()
        };
        Ok(GrpcTransport {
            runtime,
            client: tonic::client::Grpc::new(channel),
            timeout,
        })
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, request: Bytes) -> Result<u64, String> {
        let mut client = self.client.clone();
        let timeout = self.timeout;
        let answer = self.runtime.block_on(async move {
            tokio::time::timeout(timeout, async move {
                client
                    .ready()
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                client
                    .unary(
                        tonic::Request::new(request),
                        PathAndQuery::from_static(EXPORT_PATH),
                        RawCodec,
                    )
                    .await
            })
            .await
        });
        match answer {
            Err(_) => Err(format!("no answer within {timeout:?}")),
            Ok(Err(status)) if status.code() == Code::Unavailable => {
                Err(format!("the receiver is unavailable: {}", status.message()))
            }
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
            Ok(Ok(response)) => match otlp::partial_success(response.get_ref()) {
                Ok((rejected, message)) => {
                    if rejected > 0 {
                        log_rate_limited(&format!(
                            "the trace receiver rejected {rejected} spans: {message}"
                        ));
                    }
                    Ok(rejected)
                }
                Err(e) => Err(format!("an unreadable answer: {e}")),
            },
        }
    }
}

/// Bytes in, bytes out: the request is encoded already, the answer is read by
/// [`otlp::partial_success`].
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

static LAST_LOGGED: Mutex<Option<Instant>> = Mutex::new(None);

/// Says `message` on stderr, at most every 10 s: a receiver that is down must not flood the
/// log.
fn log_rate_limited(message: &str) {
    let mut last = LAST_LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if last.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10)) {
        *last = Some(now);
        eprintln!("dagraid-telemetry: {message}");
    }
}

/// The export thread's handle: flush and shutdown.
#[derive(Debug)]
pub(crate) struct Exporter {
    control: SyncSender<Control>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Bounds the wait of a flush or a shutdown.
    control_timeout: Duration,
}

impl Exporter {
    /// Starts the export thread sending to the OTLP/gRPC `endpoint`, counting into the
    /// process's [`stats`].
    pub(crate) fn start(
        endpoint: &str,
        encoder: RequestEncoder,
        settings: BatchSettings,
    ) -> Result<(Arc<SpanQueue>, Exporter), String> {
        let endpoint = endpoint.to_owned();
        let timeout = settings.export_timeout;
        Self::start_with(
            move || GrpcTransport::new(&endpoint, timeout),
            encoder,
            settings,
            &STATS,
        )
    }

    /// Starts the thread with the transport `make` builds on it.
    pub(crate) fn start_with<T, F>(
        make: F,
        encoder: RequestEncoder,
        settings: BatchSettings,
        stats: &'static ExportStats,
    ) -> Result<(Arc<SpanQueue>, Exporter), String>
    where
        T: Transport,
        F: FnOnce() -> Result<T, String> + Send + 'static,
    {
        let (spans, span_rx) = sync_channel(settings.max_queue.max(1));
        let (control, control_rx) = sync_channel(16);
        let queued = Arc::new(AtomicUsize::new(0));
        let export_asked = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = sync_channel(1);
        let (thread_queued, thread_asked) = (queued.clone(), export_asked.clone());
        let worker = std::thread::Builder::new()
            .name("dagraid-otlp-export".into())
            .spawn(move || {
                let transport = match make() {
                    Ok(t) => {
                        let _ = ready_tx.send(Ok(()));
                        t
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                Worker {
                    transport,
                    encoder,
                    settings,
                    stats,
                    spans: span_rx,
                    queued: thread_queued,
                    export_asked: thread_asked,
                    batch: Vec::with_capacity(settings.max_batch.max(1)),
                    buffer: Vec::new(),
                }
                .run(control_rx)
            })
            .map_err(|e| format!("spawning the span export thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = worker.join();
                return Err(e);
            }
            Err(_) => {
                let _ = worker.join();
                return Err("the span export thread ended while starting".into());
            }
        }
        let queue = SpanQueue {
            sink: Sink::Thread {
                spans,
                control: control.clone(),
                queued,
                export_asked,
                max_batch: settings.max_batch.max(1),
            },
            stats,
        };
        let exporter = Exporter {
            control,
            worker: Mutex::new(Some(worker)),
            control_timeout: settings.export_timeout * 2 + Duration::from_secs(1),
        };
        Ok((Arc::new(queue), exporter))
    }

    fn ask(
        &self,
        make: impl FnOnce(SyncSender<Result<(), String>>) -> Control,
    ) -> Result<(), String> {
        let (tx, rx) = sync_channel(1);
        self.control
            .send(make(tx))
            .map_err(|_| "the span exporter is shut down".to_owned())?;
        rx.recv_timeout(self.control_timeout).map_err(|_| {
            format!(
                "the span exporter did not answer within {:?}",
                self.control_timeout
            )
        })?
    }

    /// Sends every span that ended before this call and waits for the receiver's answers.
    pub(crate) fn flush(&self) -> Result<(), String> {
        self.ask(Control::Flush)
    }

    /// Sends the spans still queued and stops the thread.
    pub(crate) fn shutdown(&self) -> Result<(), String> {
        let result = self.ask(Control::Shutdown);
        if let Some(worker) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = worker.join();
        }
        result
    }
}

struct Worker<T> {
    transport: T,
    encoder: RequestEncoder,
    settings: BatchSettings,
    stats: &'static ExportStats,
    spans: Receiver<SpanRecord>,
    queued: Arc<AtomicUsize>,
    export_asked: Arc<AtomicBool>,
    /// The batch being sent, and the request it is encoded into; both keep their capacity.
    batch: Vec<SpanRecord>,
    buffer: Vec<u8>,
}

impl<T: Transport> Worker<T> {
    fn run(mut self, control: Receiver<Control>) {
        loop {
            match control.recv_timeout(self.settings.delay) {
                Ok(Control::Export) | Err(RecvTimeoutError::Timeout) => {
                    let _ = self.drain();
                }
                // Every span that ended before the flush was asked for is in the queue.
                Ok(Control::Flush(reply)) => {
                    let result = self.drain();
                    let _ = reply.send(result);
                }
                Ok(Control::Shutdown(reply)) => {
                    let result = self.drain();
                    let _ = reply.send(result);
                    return;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.drain();
                    return;
                }
            }
        }
    }

    /// Exports everything queued now, in batches of at most `max_batch`.
    fn drain(&mut self) -> Result<(), String> {
        self.export_asked.store(false, Ordering::Release);
        let mut result = Ok(());
        loop {
            self.batch.clear();
            self.batch
                .extend(self.spans.try_iter().take(self.settings.max_batch.max(1)));
            if self.batch.is_empty() {
                return result;
            }
            self.queued.fetch_sub(self.batch.len(), Ordering::AcqRel);
            let mut sent = 0;
            while sent < self.batch.len() {
                let n =
                    self.encoder
                        .encode(&self.batch[sent..], MAX_REQUEST_BYTES, &mut self.buffer);
                sent += n;
                if let Err(e) = self.send(n as u64) {
                    result = Err(e);
                }
            }
        }
    }

    /// Sends the request in the buffer, which holds `n` spans, and counts them.
    fn send(&mut self, n: u64) -> Result<(), String> {
        let request = Bytes::copy_from_slice(&self.buffer);
        match self.transport.send(request) {
            Ok(rejected) => {
                let rejected = rejected.min(n);
                self.stats
                    .exported
                    .fetch_add(n - rejected, Ordering::Relaxed);
                self.stats.failed.fetch_add(rejected, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.stats.failed.fetch_add(n, Ordering::Relaxed);
                let e = format!("trace export failed ({n} spans lost): {e}");
                log_rate_limited(&e);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::context::SpanContext;
    use crate::record::{SpanKind, Status};

    fn leak_stats() -> &'static ExportStats {
        Box::leak(Box::new(ExportStats::default()))
    }

    /// Counts the spans of each request; can be made slow, or to fail.
    #[derive(Clone, Default)]
    struct Counting {
        spans: Arc<AtomicU64>,
        requests: Arc<AtomicU64>,
        delay: Duration,
        fail: bool,
        reject: u64,
    }

    impl Transport for Counting {
        fn send(&mut self, request: Bytes) -> Result<u64, String> {
            std::thread::sleep(self.delay);
            if self.fail {
                return Err("refused".into());
            }
            let n = crate::otlp::count_spans(&request).map_err(str::to_owned)?;
            self.spans.fetch_add(n, Ordering::Relaxed);
            self.requests.fetch_add(1, Ordering::Relaxed);
            Ok(self.reject)
        }
    }

    fn span(i: u64) -> SpanRecord {
        SpanRecord {
            context: SpanContext {
                trace_id: 1,
                span_id: i + 1,
                sampled: true,
                state: None,
            },
            parent_span_id: 0,
            parent_remote: false,
            name: Cow::Borrowed("s"),
            kind: SpanKind::Internal,
            start_ns: 1,
            end_ns: 2,
            attributes: Vec::new(),
            events: Vec::new(),
            status: Status::Unset,
        }
    }

    fn start(
        transport: Counting,
        settings: BatchSettings,
        stats: &'static ExportStats,
    ) -> (Arc<SpanQueue>, Exporter) {
        Exporter::start_with(
            move || Ok(transport),
            RequestEncoder::new(&[], "test", "0"),
            settings,
            stats,
        )
        .unwrap()
    }

    #[test]
    fn every_span_is_exported_or_counted_as_dropped() {
        for (queue, delay) in [(8192, Duration::ZERO), (4, Duration::from_millis(20))] {
            let transport = Counting {
                delay,
                ..Counting::default()
            };
            let stats = leak_stats();
            let settings = BatchSettings {
                max_queue: queue,
                max_batch: 4.min(queue),
                delay: Duration::from_millis(10),
                export_timeout: Duration::from_secs(5),
            };
            let (q, exporter) = start(transport.clone(), settings, stats);
            for i in 0..500 {
                q.push(span(i));
            }
            exporter.flush().unwrap();
            let (ended, dropped, exported, failed) = stats.snapshot();
            assert_eq!(ended, 500);
            assert_eq!(failed, 0);
            assert_eq!(dropped + exported, 500);
            assert_eq!(transport.spans.load(Ordering::Relaxed), exported);
            if queue == 8192 {
                assert_eq!(dropped, 0, "a large queue never drops");
                assert_eq!(
                    transport.requests.load(Ordering::Relaxed),
                    125,
                    "batches of 4"
                );
            } else {
                assert!(dropped > 0, "a tiny queue behind a slow exporter drops");
            }
            exporter.shutdown().unwrap();
            assert!(
                exporter.flush().is_err(),
                "nothing answers after a shutdown"
            );
        }
    }

    #[test]
    fn failed_and_rejected_spans_are_counted_as_lost() {
        // No timer fires during the test: only full batches and the flush send.
        let settings = BatchSettings {
            max_batch: 10,
            delay: Duration::from_secs(3600),
            ..BatchSettings::default()
        };
        let stats = leak_stats();
        let failing = Counting {
            fail: true,
            ..Counting::default()
        };
        let (q, exporter) = start(failing, settings, stats);
        for i in 0..5 {
            q.push(span(i));
        }
        // The flush sends them itself, so it sees the failure.
        let e = exporter.flush().unwrap_err();
        assert!(e.contains("refused") && e.contains("5 spans lost"), "{e}");
        for i in 5..25 {
            q.push(span(i));
        }
        let _ = exporter.flush();
        assert_eq!(stats.snapshot(), (25, 0, 0, 25));
        exporter.shutdown().unwrap();

        let stats = leak_stats();
        let rejecting = Counting {
            reject: 2,
            ..Counting::default()
        };
        let (q, exporter) = start(rejecting, settings, stats);
        for i in 0..25 {
            q.push(span(i));
        }
        exporter.flush().unwrap();
        // Three requests (10, 10, 5), two spans rejected of each.
        assert_eq!(stats.snapshot(), (25, 0, 19, 6));
        exporter.shutdown().unwrap();
    }

    #[test]
    fn a_collector_that_is_down_loses_spans_and_says_so() {
        // A port nobody listens on: bind, take the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let stats = leak_stats();
        let settings = BatchSettings {
            export_timeout: Duration::from_secs(5),
            ..BatchSettings::default()
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let (q, exporter) = Exporter::start_with(
            move || GrpcTransport::new(&endpoint, Duration::from_secs(5)),
            RequestEncoder::new(&[], "test", "0"),
            settings,
            stats,
        )
        .unwrap();
        q.push(span(0));
        let e = exporter.flush().unwrap_err();
        assert!(e.contains("1 spans lost"), "{e}");
        assert_eq!(stats.snapshot(), (1, 0, 0, 1));
        exporter.shutdown().unwrap();
    }
}
