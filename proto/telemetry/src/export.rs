//! The batch span processor: a bounded queue in front of the OTLP exporter, drained by one
//! thread of its own, so that ending a span never waits for the network. The thread sleeps on
//! a control queue and wakes only when a batch is full, on its timer, or for a flush, never
//! once per span. The exporter is built on that thread, in a current-thread runtime of its
//! own, so its gRPC connection (encoding, socket I/O) never runs on the data path's runtime.
//!
//! The SDK's own batch processor counts the spans it drops but keeps that count private; this
//! one counts every span that ends ([`ExportStats`]): queued, dropped because the queue was
//! full, exported, or lost in a failed export. The counts are process-wide (one tracer provider
//! per process) and feed the `dagraid_trace_spans_*_total` metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use crate::config::BatchSettings;

/// What became of the spans that ended in this process.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans that ended while export was on (sampled ones only).
    pub ended: AtomicU64,
    /// Of those, dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Sent and acknowledged by the receiver.
    pub exported: AtomicU64,
    /// Lost in an export that failed.
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

/// What the export thread is asked to do; spans travel in a queue of their own, which the
/// thread drains without ever sleeping on it (a wake-up per span would cost a context switch per
/// span on the data path's cores).
enum Control {
    /// A batch is full: send it now.
    Export,
    Flush(SyncSender<OTelSdkResult>),
    Shutdown(SyncSender<OTelSdkResult>),
    Resource(Resource),
}

/// Queues ended spans and exports them in batches from its own thread.
pub struct QueueingProcessor {
    spans: SyncSender<SpanData>,
    control: SyncSender<Control>,
    /// Spans in the queue (approximately: the thread subtracts what it drained).
    queued: Arc<AtomicUsize>,
    /// Whether an [`Control::Export`] is on its way (at most one at a time).
    export_asked: Arc<AtomicBool>,
    max_batch: usize,
    worker: Mutex<Option<JoinHandle<()>>>,
    stats: &'static ExportStats,
    /// Bounds the wait of a flush or a shutdown.
    control_timeout: Duration,
}

impl std::fmt::Debug for QueueingProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueingProcessor").finish_non_exhaustive()
    }
}

impl QueueingProcessor {
    /// A processor sending to the exporter `make` builds, with `settings`, counting into the
    /// process's [`stats`].
    ///
    /// `make` runs on the export thread, inside the thread's own current-thread Tokio runtime,
    /// so the exporter's connection (its gRPC channel, the encoding of every batch, the
    /// socket I/O) lives on that thread and never on the data path's runtime. An error of
    /// `make` is returned here.
    pub fn new<E, F>(make: F, settings: BatchSettings) -> Result<Self, String>
    where
        E: SpanExporter + 'static,
        F: FnOnce() -> Result<E, String> + Send + 'static,
    {
        Self::with_stats(make, settings, &STATS)
    }

    fn with_stats<E, F>(
        make: F,
        settings: BatchSettings,
        stats: &'static ExportStats,
    ) -> Result<Self, String>
    where
        E: SpanExporter + 'static,
        F: FnOnce() -> Result<E, String> + Send + 'static,
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
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("the span export runtime: {e}")));
                        return;
                    }
                };
                let exporter = {
                    let _entered = runtime.enter();
                    make()
                };
                let exporter = match exporter {
                    Ok(exporter) => {
                        let _ = ready_tx.send(Ok(()));
                        exporter
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                Worker {
                    exporter,
                    runtime,
                    settings,
                    stats,
                    spans: span_rx,
                    queued: thread_queued,
                    export_asked: thread_asked,
                    last_error_logged: None,
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
        Ok(QueueingProcessor {
            spans,
            control,
            queued,
            export_asked,
            max_batch: settings.max_batch.max(1),
            worker: Mutex::new(Some(worker)),
            stats,
            control_timeout: settings.export_timeout * 2 + Duration::from_secs(1),
        })
    }

    fn ask(&self, make: impl FnOnce(SyncSender<OTelSdkResult>) -> Control) -> OTelSdkResult {
        let (tx, rx) = sync_channel(1);
        self.control
            .send(make(tx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        rx.recv_timeout(self.control_timeout)
            .map_err(|_| OTelSdkError::Timeout(self.control_timeout))?
    }
}

impl SpanProcessor for QueueingProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.stats.ended.fetch_add(1, Ordering::Relaxed);
        match self.spans.try_send(span) {
            Ok(()) => {
                let queued = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
                if queued >= self.max_batch && !self.export_asked.swap(true, Ordering::AcqRel) {
                    // Never blocks: if the control queue is full a request is already pending.
                    if self.control.try_send(Control::Export).is_err() {
                        self.export_asked.store(false, Ordering::Release);
                    }
                }
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        let result = self.ask(Control::Shutdown);
        if let Some(worker) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = worker.join();
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.control.send(Control::Resource(resource.clone()));
    }
}

struct Worker<E> {
    exporter: E,
    /// Drives the exporter's connection, on this thread only.
    runtime: tokio::runtime::Runtime,
    settings: BatchSettings,
    stats: &'static ExportStats,
    spans: Receiver<SpanData>,
    queued: Arc<AtomicUsize>,
    export_asked: Arc<AtomicBool>,
    last_error_logged: Option<Instant>,
}

impl<E: SpanExporter> Worker<E> {
    fn run(mut self, control: Receiver<Control>) {
        // The exporter's shutdown and resource calls may need the runtime too.
        let handle = self.runtime.handle().clone();
        let _entered = handle.enter();
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
                    let _ = self.exporter.shutdown();
                    let _ = reply.send(result);
                    return;
                }
                Ok(Control::Resource(resource)) => self.exporter.set_resource(&resource),
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.drain();
                    let _ = self.exporter.shutdown();
                    return;
                }
            }
        }
    }

    /// Exports everything queued now, in batches of at most `max_batch`.
    fn drain(&mut self) -> OTelSdkResult {
        self.export_asked.store(false, Ordering::Release);
        let mut result = Ok(());
        loop {
            let batch: Vec<SpanData> = self
                .spans
                .try_iter()
                .take(self.settings.max_batch.max(1))
                .collect();
            if batch.is_empty() {
                return result;
            }
            self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
            if let Err(e) = self.export(batch) {
                result = Err(e);
            }
        }
    }

    fn export(&mut self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.runtime.block_on(self.exporter.export(batch));
        match &result {
            Ok(()) => {
                self.stats.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(err) => {
                self.stats.failed.fetch_add(n, Ordering::Relaxed);
                // Said at most every 10 s: a receiver that is down must not flood the log.
                let now = Instant::now();
                if self
                    .last_error_logged
                    .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
                {
                    self.last_error_logged = Some(now);
                    eprintln!("trace export failed ({n} spans lost): {err}");
                }
            }
        }
        result
    }
}

/// A test exporter: keeps what it is sent, and can be made slow.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub(crate) struct KeepingExporter {
    pub(crate) spans: Arc<Mutex<Vec<SpanData>>>,
    pub(crate) delay: Duration,
}

#[cfg(test)]
impl SpanExporter for KeepingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        std::thread::sleep(self.delay);
        self.spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(batch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    fn leak_stats() -> &'static ExportStats {
        Box::leak(Box::new(ExportStats::default()))
    }

    #[test]
    fn every_span_is_exported_or_counted_as_dropped() {
        for (queue, delay) in [(8192, Duration::ZERO), (4, Duration::from_millis(20))] {
            let exporter = KeepingExporter {
                delay,
                ..KeepingExporter::default()
            };
            let stats = leak_stats();
            let settings = BatchSettings {
                max_queue: queue,
                max_batch: 4.min(queue),
                delay: Duration::from_millis(10),
                export_timeout: Duration::from_secs(5),
            };
            let keeping = exporter.clone();
            let processor =
                QueueingProcessor::with_stats(move || Ok(keeping), settings, stats).unwrap();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .build();
            let tracer = provider.tracer("test");
            for i in 0..500 {
                tracer.in_span(format!("s{i}"), |_| {});
            }
            provider.force_flush().unwrap();
            let (ended, dropped, exported, failed) = stats.snapshot();
            assert_eq!(ended, 500);
            assert_eq!(failed, 0);
            assert_eq!(dropped + exported, 500);
            assert_eq!(exporter.spans.lock().unwrap().len() as u64, exported);
            if queue == 8192 {
                assert_eq!(dropped, 0, "a large queue never drops");
            } else {
                assert!(dropped > 0, "a tiny queue behind a slow exporter drops");
            }
            provider.shutdown().unwrap();
        }
    }
}
