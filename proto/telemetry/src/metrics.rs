//! The `/metrics` endpoint: a few lines of HTTP/1.1 over a Tokio listener (no web framework),
//! serving a prometheus-client [`Registry`].
//!
//! prometheus-client writes the OpenMetrics text format. Prometheus asks for it (its `Accept`
//! names `application/openmetrics-text`) and gets it; anything else (curl, `promtool check
//! metrics`, older scrapers) gets the classic text format 0.0.4, where a counter's family is
//! named with its `_total` suffix and there is no `# EOF` or `# UNIT` line.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bounds (seconds) of the latency histograms: 50 us to 10 s.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// A histogram with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    Prometheus,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// `registry` as text in `format`.
pub fn render(registry: &Registry, format: Format) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return String::new();
    }
    match format {
        Format::OpenMetrics => text,
        Format::Prometheus => openmetrics_to_prometheus(&text),
    }
}

/// Rewrites prometheus-client's OpenMetrics text as the classic format: counter families take
/// their samples' `_total` name, `# UNIT` and `# EOF` go.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut help: Option<(&str, &str)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, doc));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let renamed = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some((h, doc)) = help.take()
                && h == name
            {
                out.push_str(&format!("# HELP {renamed} {doc}\n"));
            }
            out.push_str(&format!("# TYPE {renamed} {kind}\n"));
            continue;
        }
        if let Some((h, doc)) = help.take() {
            out.push_str(&format!("# HELP {h} {doc}\n"));
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A running `/metrics` endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MetricsServer {
    /// Binds `listen` (port 0 picks one) and serves `registry` at `/metrics`.
    pub async fn start(
        listen: SocketAddr,
        registry: Arc<Registry>,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let registry = registry.clone();
                tokio::spawn(async move {
                    let _ = answer(stream, &registry).await;
                });
            }
        });
        Ok(MetricsServer { addr, task })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/metrics`.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

/// Reads one request (headers only) and answers it; the connection is closed after.
async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head = loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("request timed out"))??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break String::from_utf8_lossy(&buf[..end]).into_owned();
        }
        if buf.len() > 16 * 1024 {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
    };
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        )
        .await;
    }
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "text/plain", "see /metrics\n").await;
    }
    let format = if accept.contains("application/openmetrics-text") {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    let body = render(registry, format);
    let body = if method == "HEAD" {
        String::new()
    } else {
        body
    };
    respond(&mut stream, "200 OK", format.content_type(), &body).await
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The process's trace export counters as metrics: `dagraid_trace_spans_{ended,dropped,
/// exported,export_failed}_total`.
#[derive(Debug, Default)]
pub struct TraceExportCollector;

impl Collector for TraceExportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = crate::counting::stats().snapshot();
        for (name, help, value) in [
            (
                "dagraid_trace_spans_ended",
                "Sampled spans that ended while trace export was on",
                s.ended,
            ),
            (
                "dagraid_trace_spans_dropped",
                "Spans dropped because the export queue was full",
                s.dropped,
            ),
            (
                "dagraid_trace_spans_exported",
                "Spans in export calls the OTLP receiver acknowledged",
                s.exported,
            ),
            (
                "dagraid_trace_spans_export_failed",
                "Spans lost in failed export calls (receiver down, slow or refusing)",
                s.failed,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    use super::*;

    fn sample_registry() -> Registry {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        c.inc_by(3);
        r.register("dagraid_things", "Things done", c);
        let g: Gauge = Gauge::default();
        g.set(2);
        r.register("dagraid_level", "A level", g);
        let h = latency_histogram();
        h.observe(0.003);
        r.register("dagraid_wait_seconds", "Waits", h);
        r.register_collector(Box::new(TraceExportCollector));
        r
    }

    #[test]
    fn the_classic_format_names_counters_with_total_and_has_no_eof() {
        let text = render(&sample_registry(), Format::Prometheus);
        assert!(
            text.contains("# TYPE dagraid_things_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP dagraid_things_total Things done.\n"),
            "{text}"
        );
        assert!(text.contains("dagraid_things_total 3\n"), "{text}");
        assert!(text.contains("# TYPE dagraid_level gauge\n"), "{text}");
        assert!(text.contains("dagraid_wait_seconds_count 1\n"), "{text}");
        assert!(
            text.contains("# TYPE dagraid_trace_spans_dropped_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        let om = render(&sample_registry(), Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    #[tokio::test]
    async fn the_endpoint_serves_metrics_and_refuses_the_rest() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(sample_registry()))
                .await
                .unwrap();
        let get = |path: &'static str, accept: &'static str| {
            let addr = server.local_addr();
            async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        let ok = get("/metrics", "*/*").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("dagraid_things_total 3"), "{ok}");
        let om = get("/metrics", "application/openmetrics-text;version=1.0.0").await;
        assert!(om.contains("application/openmetrics-text"), "{om}");
        assert!(om.trim_end().ends_with("# EOF"), "{om}");
        let missing = get("/nothing", "*/*").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }
}
