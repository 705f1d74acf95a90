//! The cost of one span on the thread that opens it: `cargo bench -p dagraid-telemetry --bench
//! spans`.
//!
//! A span shaped like a DAG node's firing (ten fields, two of them recorded at the end, one
//! enter and exit) under a DAG span, opened and closed in a loop on this thread, under the
//! production subscriber: the log layer at `info` into a sink, with and without the export
//! layer (100% sampling, OTLP/gRPC to a counting receiver in this process, whose export thread
//! runs on the other core). Rounds alternate; the table gives ns per span on this thread, and
//! the CPU time per span of the export thread and of the receiver (`/proc` schedstat).

use std::time::{Duration, Instant};

use dagraid_telemetry::receiver::OtlpReceiver;
use dagraid_telemetry::{BatchSettings, SamplerChoice, TraceSettings};

const SPANS_PER_ROUND: u64 = 200_000;
const ROUNDS: usize = 5;

fn firing(dag: &tracing::Span, i: u64) {
    let span = tracing::info_span!(
        target: "dagraid_core::engine",
        parent: dag,
        "Rod",
        dag_id = i,
        dag_kind = "small_write",
        node = 3u64,
        component = "vol0-c2",
        column = Some(2u64),
        offset = Some(i * 4096),
        length = Some(4096u64),
        direction = "do",
        outcome = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    let _entered = span.enter();
    span.record("outcome", "good");
}

/// ns per span of one round under `dispatch`.
fn round(dispatch: &tracing::Dispatch) -> f64 {
    tracing::dispatcher::with_default(dispatch, || {
        let started = Instant::now();
        let mut i = 0;
        while i < SPANS_PER_ROUND {
            let dag = tracing::info_span!(target: "dagraid_core::engine", "dag", dag_id = i);
            for _ in 0..9 {
                firing(&dag, i);
                i += 1;
            }
            i += 1;
        }
        started.elapsed().as_nanos() as f64 / SPANS_PER_ROUND as f64
    })
}

/// CPU time (ns) used so far by this process's threads whose name starts with `prefix`.
fn cpu_ns(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim().starts_with(prefix))
        })
        .filter_map(|t| {
            std::fs::read_to_string(t.path().join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("receiver")
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(OtlpReceiver::counting()).unwrap();
    let settings = TraceSettings {
        endpoint: Some(receiver.endpoint()),
        service_name: "bench".into(),
        sampler: SamplerChoice::AlwaysOn,
        batch: BatchSettings {
            max_queue: 1 << 20,
            ..BatchSettings::default()
        },
        ..TraceSettings::default()
    };
    let info = || tracing_subscriber::EnvFilter::new("info");
    let (on, telemetry) =
        dagraid_telemetry::build(&settings, info(), std::io::sink, false).unwrap();
    let off_settings = TraceSettings {
        endpoint: None,
        ..settings.clone()
    };
    let (off, _) = dagraid_telemetry::build(&off_settings, info(), std::io::sink, false).unwrap();
    let (mut t_on, mut t_off) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        t_on += round(&on);
        t_off += round(&off);
        // Let the export thread catch up between rounds.
        telemetry.flush_blocking().unwrap();
    }
    let (t_on, t_off) = (t_on / ROUNDS as f64, t_off / ROUNDS as f64);
    let (ended, dropped, _, failed) = dagraid_telemetry::export::stats().snapshot();
    let deadline = Duration::from_secs(30);
    let received = runtime
        .block_on(receiver.wait_for_count(ended, deadline))
        .unwrap_or_else(|n| n);
    let per_span = |ns: u64| ns as f64 / ended.max(1) as f64;
    let (export, receiving) = (cpu_ns("dagraid-otlp"), cpu_ns("receiver"));
    println!("span cost on the opening thread (a firing span: 10 fields, 2 recorded, 1 enter)");
    println!("| subscriber | ns per span |");
    println!("|---|---|");
    println!("| log layer only (export off) | {t_off:.0} |");
    println!("| log layer + export layer | {t_on:.0} |");
    println!("| difference | {:.0} |", t_on - t_off);
    println!(
        "| export thread (batching, encoding, sending), CPU | {:.0} |",
        per_span(export)
    );
    println!("| receiver (counting), CPU | {:.0} |", per_span(receiving));
    println!("spans: {ended} ended, {received} received, {dropped} dropped, {failed} failed");
    assert_eq!(dropped, 0);
    assert_eq!(received, ended);
}
