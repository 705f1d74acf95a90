//! The export queue and its thread. A span that ends is encoded at once into a buffer of the
//! thread it ended on (`SpanQueue::push`): an uncontended lock and a copy, never a wait,
//! never a cache line shared with the other threads of the data path. One thread of its own
//! takes the buffers' bytes in turn, puts them into OTLP `ExportTraceServiceRequest`s
//! ([`crate::otlp`]) of at most `max_batch` spans and sends them over gRPC. It sleeps on a
//! control queue and wakes on its timer, when a thread's buffer holds a full batch, or for a
//! flush, never once per span. Its gRPC connection lives in a current-thread runtime of the
//! thread's own, so the socket I/O never runs on the data path's runtime.
//!
//! The queue is bounded: at most `max_queue` spans wait in all the buffers together (threads
//! take the right to queue in chunks from a shared budget, which the export thread refills as
//! it takes spans); a span that ends beyond it is dropped and counted.
//!
//! Every span that ends is counted ([`ExportStats`]): dropped because the queue was full,
//! exported, or lost in a failed export (or rejected by the receiver). The counts are
//! process-wide and feed the `dagraid_trace_spans_*_total` metrics.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::config::{BatchSettings, MetadataPair};
use crate::otlp::{self, RequestEncoder, take_spans};
use crate::record::SpanRecord;

/// What became of the spans that ended in this process.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans that ended while export was on (sampled ones only), counted when the export
    /// thread takes them from their thread's buffer, or when they are dropped.
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

/// The largest request sent (a batch whose encoding would be larger goes in several): within
/// HTTP/2's default initial stream window (64 KiB), so a request never waits for the
/// receiver's window update, and below the allocator's threshold for mapping fresh pages,
/// so the buffers of a request cost no page faults.
const MAX_REQUEST_BYTES: usize = 60 << 10;

/// The codec's buffer: a whole request and its gRPC frame header, so it never grows.
const CODEC_BUFFER_BYTES: usize = MAX_REQUEST_BYTES + (4 << 10);

/// The collector's method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What the export thread is asked to do.
enum Control {
    /// A thread's buffer holds a full batch: send now.
    Export,
    Flush(SyncSender<Result<(), String>>),
    Shutdown(SyncSender<Result<(), String>>),
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

/// The spans that ended on one thread and wait for the export thread, encoded.
#[derive(Debug, Default)]
struct ThreadBuffer {
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Whole `ScopeSpans.spans` fields.
    bytes: Vec<u8>,
    /// How many spans `bytes` holds.
    spans: usize,
    /// Spans this thread may still queue before it takes more of the shared budget.
    credits: usize,
}

impl ThreadBuffer {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the threads that end spans and the export thread share.
#[derive(Debug)]
struct Shared {
    /// Every thread's buffer; the export thread forgets those of threads that ended.
    buffers: Mutex<Vec<Arc<ThreadBuffer>>>,
    /// Spans that may still be queued, all threads together (`max_queue` at the start).
    budget: AtomicI64,
    /// How much of the budget a thread takes at a time.
    chunk: usize,
    max_batch: usize,
    control: SyncSender<Control>,
    /// Whether an [`Control::Export`] is on its way (at most one at a time).
    export_asked: AtomicBool,
    /// Set once the export thread stopped: spans that end later are dropped.
    closed: AtomicBool,
    stats: &'static ExportStats,
}

impl Shared {
    /// Takes a chunk of the budget; `false` when the queue is full.
    fn take_credits(&self) -> bool {
        let chunk = self.chunk as i64;
        if self.budget.fetch_sub(chunk, Ordering::AcqRel) >= chunk {
            true
        } else {
            self.budget.fetch_add(chunk, Ordering::AcqRel);
            false
        }
    }
}

thread_local! {
    /// This thread's buffer for each live queue (in practice one), by the queue's address.
    static BUFFERS: RefCell<Vec<(Weak<Shared>, Arc<ThreadBuffer>)>> = const { RefCell::new(Vec::new()) };
}

/// Where the export layer puts the spans that end.
#[derive(Debug)]
pub struct SpanQueue {
    sink: Sink,
}

#[derive(Debug)]
enum Sink {
    /// The export thread's buffers.
    Thread(Arc<Shared>),
    /// Unit tests of the layer: keep every span.
    #[cfg(test)]
    Collect(Arc<Mutex<Vec<SpanRecord>>>),
}

impl Sink {
    fn shared(&self) -> Option<&Arc<Shared>> {
        match self {
            Sink::Thread(shared) => Some(shared),
            #[cfg(test)]
            Sink::Collect(_) => None,
        }
    }
}

impl SpanQueue {
    /// Queues a span that ended (encoding it into this thread's buffer); drops and counts it
    /// when the queue is full. Never blocks on anything but this thread's own buffer, which
    /// the export thread holds only to swap its bytes out.
    pub(crate) fn push(&self, span: &SpanRecord) {
        #[cfg(test)]
        if let Sink::Collect(spans) = &self.sink {
            spans
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(span.clone());
            return;
        }
        let Some(shared) = self.sink.shared() else {
            return;
        };
        let dropped = || {
            shared.stats.ended.fetch_add(1, Ordering::Relaxed);
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
        };
        if shared.closed.load(Ordering::Acquire) {
            return dropped();
        }
        let buffer = Self::buffer_of_this_thread(shared);
        let mut pending = buffer.lock();
        if pending.credits == 0 {
            if !shared.take_credits() {
                drop(pending);
                return dropped();
            }
            pending.credits = shared.chunk;
        }
        pending.credits -= 1;
        otlp::encode_span(&mut pending.bytes, span);
        pending.spans += 1;
        let full = pending.spans >= shared.max_batch;
        drop(pending);
        if full && !shared.export_asked.swap(true, Ordering::AcqRel) {
            // Never blocks: if the control queue is full a request is pending.
            if shared.control.try_send(Control::Export).is_err() {
                shared.export_asked.store(false, Ordering::Release);
            }
        }
    }

    /// This thread's buffer for `shared`, made and registered on the thread's first span.
    fn buffer_of_this_thread(shared: &Arc<Shared>) -> Arc<ThreadBuffer> {
        BUFFERS.with(|buffers| {
            let mut buffers = buffers.borrow_mut();
            let ptr = Arc::as_ptr(shared);
            if let Some((_, b)) = buffers.iter().find(|(s, _)| s.as_ptr() == ptr) {
                return b.clone();
            }
            // Forget the buffers of queues that are gone (an address can be reused).
            buffers.retain(|(s, _)| s.strong_count() > 0);
            let b = Arc::new(ThreadBuffer::default());
            shared
                .buffers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(b.clone());
            buffers.push((Arc::downgrade(shared), b.clone()));
            b
        })
    }

    /// A queue that keeps what it is given (for unit tests of the layer).
    #[cfg(test)]
    pub(crate) fn collecting() -> (Arc<SpanQueue>, Arc<Mutex<Vec<SpanRecord>>>) {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let queue = SpanQueue {
            sink: Sink::Collect(spans.clone()),
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
    /// Metadata of every call (`OTEL_EXPORTER_OTLP_HEADERS`).
    headers: Vec<MetadataPair>,
}

impl GrpcTransport {
    /// A lazy connection to `endpoint` (the first export connects; a collector that is down
    /// at start-up costs the spans of the exports that fail, not the process); every call
    /// carries `headers`.
    pub(crate) fn new(
        endpoint: &str,
        timeout: Duration,
        headers: &[(String, String)],
    ) -> Result<GrpcTransport, String> {
        let headers = crate::config::metadata("OTEL_EXPORTER_OTLP_HEADERS", headers)?;
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
            headers,
        })
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, request: Bytes) -> Result<u64, String> {
        let mut client = self.client.clone();
        let timeout = self.timeout;
        let mut request = tonic::Request::new(request);
        for (k, v) in &self.headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        let answer = self.runtime.block_on(async move {
            tokio::time::timeout(timeout, async move {
                client
                    .ready()
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                client
                    .unary(request, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
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

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(CODEC_BUFFER_BYTES, CODEC_BUFFER_BYTES)
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
    /// Starts the export thread sending to the OTLP/gRPC `endpoint` with `headers` on every
    /// call, counting into the process's [`stats`].
    pub(crate) fn start(
        endpoint: &str,
        headers: &[(String, String)],
        encoder: RequestEncoder,
        settings: BatchSettings,
    ) -> Result<(Arc<SpanQueue>, Exporter), String> {
        let endpoint = endpoint.to_owned();
        let headers = headers.to_vec();
        let timeout = settings.export_timeout;
        Self::start_with(
            move || GrpcTransport::new(&endpoint, timeout, &headers),
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
        let (control, control_rx) = sync_channel(16);
        let max_queue = settings.max_queue.max(1);
        let shared = Arc::new(Shared {
            buffers: Mutex::new(Vec::new()),
            budget: AtomicI64::new(max_queue as i64),
            chunk: (max_queue / 128).clamp(1, 64),
            max_batch: settings.max_batch.max(1),
            control: control.clone(),
            export_asked: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            stats,
        });
        let (ready_tx, ready_rx) = sync_channel(1);
        let thread_shared = shared.clone();
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
                    shared: thread_shared,
                    taken: Vec::new(),
                    spare: Vec::new(),
                    request: Vec::new(),
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
            sink: Sink::Thread(shared),
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
    shared: Arc<Shared>,
    /// The bytes taken from the threads' buffers.
    taken: Vec<Vec<u8>>,
    /// Emptied buffers, swapped into the threads' buffers as they are taken (so neither side
    /// allocates in the steady state).
    spare: Vec<Vec<u8>>,
    /// The request being sent.
    request: Vec<u8>,
}

impl<T: Transport> Worker<T> {
    fn run(mut self, control: Receiver<Control>) {
        loop {
            match control.recv_timeout(self.settings.delay) {
                Ok(Control::Export) | Err(RecvTimeoutError::Timeout) => {
                    let _ = self.drain();
                }
                // Every span that ended before the flush was asked for is in a buffer.
                Ok(Control::Flush(reply)) => {
                    let result = self.drain();
                    let _ = reply.send(result);
                }
                Ok(Control::Shutdown(reply)) => {
                    self.shared.closed.store(true, Ordering::Release);
                    let result = self.drain();
                    let _ = reply.send(result);
                    return;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.shared.closed.store(true, Ordering::Release);
                    let _ = self.drain();
                    return;
                }
            }
        }
    }

    /// Takes every thread's spans and sends them.
    fn drain(&mut self) -> Result<(), String> {
        self.shared.export_asked.store(false, Ordering::Release);
        let buffers: Vec<Arc<ThreadBuffer>> = {
            let mut all = self
                .shared
                .buffers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // A buffer only this list holds belongs to a thread that ended; once empty it goes.
            all.retain(|b| Arc::strong_count(b) > 1 || b.lock().spans > 0);
            all.clone()
        };
        let mut spans = 0;
        for b in &buffers {
            let mut pending = b.lock();
            if pending.spans == 0 {
                continue;
            }
            let bytes = std::mem::replace(&mut pending.bytes, self.spare.pop().unwrap_or_default());
            let n = std::mem::take(&mut pending.spans);
            drop(pending);
            spans += n;
            self.taken.push(bytes);
        }
        let stats = self.shared.stats;
        stats.ended.fetch_add(spans as u64, Ordering::Relaxed);
        self.shared.budget.fetch_add(spans as i64, Ordering::AcqRel);
        let result = self.send_taken();
        for mut bytes in self.taken.drain(..) {
            bytes.clear();
            self.spare.push(bytes);
        }
        result
    }

    /// Sends the taken spans in requests of at most `max_batch` spans and
    /// [`MAX_REQUEST_BYTES`] bytes.
    fn send_taken(&mut self) -> Result<(), String> {
        let max_batch = self.settings.max_batch.max(1);
        let room = MAX_REQUEST_BYTES.saturating_sub(self.encoder.head_len());
        let (encoder, request, transport) = (&self.encoder, &mut self.request, &mut self.transport);
        let stats = self.shared.stats;
        // Sends the request made of `pieces` (which holds `n` spans) and empties `pieces`.
        let mut send_request = |pieces: &mut Vec<&[u8]>, n: usize| {
            encoder.request(pieces, request);
            pieces.clear();
            send(transport, request, n, stats)
        };
        let mut result = Ok(());
        let mut pieces: Vec<&[u8]> = Vec::new();
        let (mut in_request, mut bytes) = (0, 0);
        for taken in &self.taken {
            let mut rest = taken.as_slice();
            while !rest.is_empty() {
                let (mut k, mut cut) = take_spans(rest, max_batch - in_request, room - bytes);
                // A single span larger than a request goes alone; the receiver decides.
                let alone = k == 0 && in_request == 0;
                if alone {
                    (k, cut) = take_spans(rest, 1, usize::MAX);
                }
                pieces.push(&rest[..cut]);
                rest = &rest[cut..];
                in_request += k;
                bytes += cut;
                if alone || !rest.is_empty() || in_request == max_batch {
                    if let Err(e) = send_request(&mut pieces, in_request) {
                        result = Err(e);
                    }
                    (in_request, bytes) = (0, 0);
                }
            }
        }
        if in_request > 0
            && let Err(e) = send_request(&mut pieces, in_request)
        {
            result = Err(e);
        }
        result
    }
}

/// Sends `request`, which holds `n` spans, and counts them.
fn send<T: Transport>(
    transport: &mut T,
    request: &[u8],
    n: usize,
    stats: &ExportStats,
) -> Result<(), String> {
    let n = n as u64;
    match transport.send(Bytes::copy_from_slice(request)) {
        Ok(rejected) => {
            let rejected = rejected.min(n);
            stats.exported.fetch_add(n - rejected, Ordering::Relaxed);
            stats.failed.fetch_add(rejected, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            let e = format!("trace export failed ({n} spans lost): {e}");
            log_rate_limited(&e);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::context::SpanContext;

    fn leak_stats() -> &'static ExportStats {
        Box::leak(Box::new(ExportStats::default()))
    }

    /// Counts the spans of each request; can be made slow, or to fail.
    #[derive(Clone, Default)]
    struct Counting {
        spans: Arc<AtomicU64>,
        requests: Arc<AtomicU64>,
        largest: Arc<AtomicU64>,
        largest_bytes: Arc<AtomicU64>,
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
            self.largest.fetch_max(n, Ordering::Relaxed);
            self.largest_bytes
                .fetch_max(request.len() as u64, Ordering::Relaxed);
            Ok(self.reject)
        }
    }

    fn span(i: u64) -> SpanRecord {
        let mut r = SpanRecord::new(
            SpanContext {
                trace_id: 1,
                span_id: i + 1,
                sampled: true,
                state: None,
            },
            std::borrow::Cow::Borrowed("s"),
        );
        (r.start_ns, r.end_ns) = (1, 2);
        r
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
                q.push(&span(i));
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
                    transport.largest.load(Ordering::Relaxed),
                    4,
                    "batches of 4 at most"
                );
                assert!(transport.requests.load(Ordering::Relaxed) >= 125);
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
            q.push(&span(i));
        }
        // The flush sends them itself, so it sees the failure.
        let e = exporter.flush().unwrap_err();
        assert!(e.contains("refused") && e.contains("5 spans lost"), "{e}");
        for i in 5..25 {
            q.push(&span(i));
        }
        let _ = exporter.flush();
        assert_eq!(stats.snapshot(), (25, 0, 0, 25));
        exporter.shutdown().unwrap();

        let stats = leak_stats();
        let rejecting = Counting {
            reject: 2,
            ..Counting::default()
        };
        let (q, exporter) = start(rejecting.clone(), settings, stats);
        for i in 0..25 {
            q.push(&span(i));
        }
        exporter.flush().unwrap();
        // Two spans rejected of each request (of at most 10 spans: 3 requests or more).
        let requests = rejecting.requests.load(Ordering::Relaxed);
        assert!(requests >= 3);
        assert_eq!(rejecting.largest.load(Ordering::Relaxed), 10);
        assert_eq!(stats.snapshot(), (25, 0, 25 - 2 * requests, 2 * requests));
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
            move || GrpcTransport::new(&endpoint, Duration::from_secs(5), &[]),
            RequestEncoder::new(&[], "test", "0"),
            settings,
            stats,
        )
        .unwrap();
        q.push(&span(0));
        let e = exporter.flush().unwrap_err();
        assert!(e.contains("1 spans lost"), "{e}");
        assert_eq!(stats.snapshot(), (1, 0, 0, 1));
        exporter.shutdown().unwrap();
    }

    #[test]
    fn spans_of_many_threads_are_all_sent_and_ended_threads_are_forgotten() {
        let transport = Counting::default();
        let stats = leak_stats();
        let settings = BatchSettings {
            max_batch: 100,
            ..BatchSettings::default()
        };
        let (q, exporter) = start(transport.clone(), settings, stats);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        q.push(&span(t * 1000 + i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        exporter.flush().unwrap();
        assert_eq!(stats.snapshot(), (8000, 0, 8000, 0));
        assert_eq!(transport.spans.load(Ordering::Relaxed), 8000);
        assert_eq!(transport.largest.load(Ordering::Relaxed), 100);
        // The threads ended: their buffers go once they are empty.
        let shared = q.sink.shared().unwrap();
        exporter.flush().unwrap();
        assert_eq!(shared.buffers.lock().unwrap().len(), 0);
        // This thread's buffer stays while the thread lives.
        q.push(&span(0));
        exporter.flush().unwrap();
        exporter.flush().unwrap();
        assert_eq!(shared.buffers.lock().unwrap().len(), 1);
        assert_eq!(stats.snapshot(), (8001, 0, 8001, 0));
        exporter.shutdown().unwrap();
        q.push(&span(1));
        assert_eq!(
            stats.snapshot(),
            (8002, 1, 8001, 0),
            "dropped after the shutdown"
        );
    }

    #[test]
    fn a_batch_larger_than_a_request_goes_in_several() {
        let transport = Counting::default();
        let stats = leak_stats();
        let settings = BatchSettings {
            delay: Duration::from_secs(3600),
            ..BatchSettings::default()
        };
        let (q, exporter) = start(transport.clone(), settings, stats);
        let big = "x".repeat(1000);
        for i in 0..300 {
            let mut s = span(i);
            s.set_attribute("big", crate::record::ValueRef::Str(&big));
            q.push(&s);
        }
        exporter.flush().unwrap();
        assert_eq!(stats.snapshot(), (300, 0, 300, 0));
        assert_eq!(transport.spans.load(Ordering::Relaxed), 300);
        let largest = transport.largest_bytes.load(Ordering::Relaxed) as usize;
        assert!(largest <= MAX_REQUEST_BYTES, "{largest}");
        assert!(
            largest > MAX_REQUEST_BYTES - 2000,
            "requests are filled: {largest}"
        );
        assert!(transport.requests.load(Ordering::Relaxed) >= 5);
        exporter.shutdown().unwrap();
    }

    #[test]
    fn a_span_larger_than_a_request_goes_alone() {
        let transport = Counting::default();
        let stats = leak_stats();
        let settings = BatchSettings {
            delay: Duration::from_secs(3600),
            ..BatchSettings::default()
        };
        let (q, exporter) = start(transport.clone(), settings, stats);
        // The big span ends on a thread of its own: it is the last span of its buffer, and the
        // next buffer's spans must not join its request.
        let pushing = q.clone();
        std::thread::spawn(move || {
            let huge = "x".repeat(MAX_REQUEST_BYTES + 1000);
            let mut big = span(0);
            big.set_attribute("huge", crate::record::ValueRef::Str(&huge));
            pushing.push(&big);
        })
        .join()
        .unwrap();
        for i in 1..=10 {
            q.push(&span(i));
        }
        exporter.flush().unwrap();
        assert_eq!(stats.snapshot(), (11, 0, 11, 0));
        // The big span alone, then the ten small ones together.
        assert_eq!(transport.requests.load(Ordering::Relaxed), 2);
        assert_eq!(transport.largest.load(Ordering::Relaxed), 10);
        exporter.shutdown().unwrap();
    }

    #[test]
    fn take_spans_stops_at_either_limit_on_a_span_boundary() {
        let mut encoded = Vec::new();
        let mut ends = Vec::new();
        for i in 0..10 {
            otlp::encode_span(&mut encoded, &span(i));
            ends.push(encoded.len());
        }
        assert_eq!(take_spans(&encoded, 3, usize::MAX), (3, ends[2]));
        assert_eq!(take_spans(&encoded, 100, usize::MAX), (10, ends[9]));
        assert_eq!(take_spans(&encoded, 100, ends[4] + 1), (5, ends[4]));
        assert_eq!(take_spans(&encoded, 100, ends[0] - 1), (0, 0));
        assert_eq!(take_spans(&[], 100, 100), (0, 0));
    }
}
