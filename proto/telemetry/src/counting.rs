//! Every span counted: the SDK's batch processor keeps no public counter of what it drops, so
//! [`CountingProcessor`] wraps it and bounds its queue itself (a span that would not fit is
//! dropped here, counted, and never reaches the SDK's channel), and [`CountingExporter`] wraps
//! the OTLP exporter and counts what each export call sent or lost.
//!
//! The counters are process-wide ([`stats`]) and read at scrape time
//! (`dagraid_trace_spans_{ended,dropped,exported,export_failed}_total`). Ended = dropped +
//! exported + failed + still queued, so after a flush ended = dropped + exported + failed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfig, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};

/// The process's span counters.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans in the queue or the batch being formed (the bound of the queue).
    queued: AtomicUsize,
    dropped: AtomicU64,
    exported: AtomicU64,
    failed: AtomicU64,
}

static STATS: ExportStats = ExportStats {
    queued: AtomicUsize::new(0),
    dropped: AtomicU64::new(0),
    exported: AtomicU64::new(0),
    failed: AtomicU64::new(0),
};

/// The process's counters.
pub fn stats() -> &'static ExportStats {
    &STATS
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Sampled spans that ended while export was on.
    pub ended: u64,
    /// Spans dropped because the queue was full (the exporter could not keep up).
    pub dropped: u64,
    /// Spans in export calls that succeeded.
    pub exported: u64,
    /// Spans in export calls that failed (receiver down, timed out, refused).
    pub failed: u64,
}

impl Snapshot {
    /// Spans that ended but will never reach the receiver: dropped or lost in a failed export.
    pub fn not_sent(&self) -> u64 {
        self.dropped + self.failed
    }
}

impl ExportStats {
    /// The counters now (`ended` includes the spans still queued).
    pub fn snapshot(&self) -> Snapshot {
        let dropped = self.dropped.load(Ordering::Relaxed);
        let exported = self.exported.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let queued = self.queued.load(Ordering::Relaxed) as u64;
        Snapshot {
            ended: dropped + exported + failed + queued,
            dropped,
            exported,
            failed,
        }
    }
}

/// The SDK's [`BatchSpanProcessor`] over a [`CountingExporter`], with its queue bounded and
/// counted here.
#[derive(Debug)]
pub struct CountingProcessor {
    inner: BatchSpanProcessor,
    max_queue: usize,
}

impl CountingProcessor {
    /// A batch processor exporting through `exporter` with `config`, whose queue holds
    /// `max_queue` spans (the same bound as `config`'s, which then never fills).
    pub fn new<E>(exporter: E, config: BatchConfig, max_queue: usize) -> CountingProcessor
    where
        E: SpanExporter + Send + Sync + 'static,
    {
        CountingProcessor {
            inner: BatchSpanProcessor::new(CountingExporter { inner: exporter }, config),
            max_queue,
        }
    }
}

impl SpanProcessor for CountingProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // One atomic add: the span takes a place in the queue, or is dropped and counted.
        if STATS.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queue {
            STATS.queued.fetch_sub(1, Ordering::Relaxed);
            STATS.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter that counts the spans of each call it passes on, sent or lost.
#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        STATS.queued.fetch_sub(n, Ordering::Relaxed);
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => STATS.exported.fetch_add(n as u64, Ordering::Relaxed),
            Err(_) => STATS.failed.fetch_add(n as u64, Ordering::Relaxed),
        };
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
