//! Engine cost per node firing: a small-write DAG (Nil, Rod, Rop, Xor, Cmt, Wnd, Wnp, Trm) over
//! in-memory components, with no subscriber and with a `tracing-subscriber` registry whose layer
//! records every span (name and every field, formatted, as an exporter would).
//!
//! Run with `cargo bench -p dagraid-core --bench engine`. Prints a table; the numbers go into
//! `docs/BENCHMARKS.md` (section "DAG engine").

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_core::dag::{Dag, DagBuilder, DiskTarget, EdgeKind, Mnemonic};
use dagraid_core::engine::{Direction, Engine};
use dagraid_core::io::ComponentIo;
use dagraid_core::testing::MemComponent;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

const NODES: usize = 8;
const BATCH: usize = 1000;

fn small_write(table: &[Arc<dyn ComponentIo>], block_size: usize, blk: u64) -> Dag {
    use EdgeKind::{Control, TrueData};
    let mut b = DagBuilder::new("small_write", table.to_vec());
    let new = b.buffer(Bytes::from(vec![0x5a; block_size]));
    let h = b.nil(&[]);
    let (rod, od) = b.read(Mnemonic::Rod, DiskTarget::new(0, blk, 1), &[(h, Control)]);
    let (rop, op) = b.read(Mnemonic::Rop, DiskTarget::new(3, blk, 1), &[(h, Control)]);
    let (x, np) = b.xor(
        Mnemonic::Xor,
        vec![od.all(), new.all(), op.all()],
        &[(rod, TrueData), (rop, TrueData)],
    );
    let c = b.commit(&[(x, Control)]);
    let wd = b.write(
        Mnemonic::Wnd,
        DiskTarget::new(0, blk, 1),
        new,
        &[(c, Control)],
    );
    let wp = b.write(
        Mnemonic::Wnp,
        DiskTarget::new(3, blk, 1),
        np,
        &[(c, Control)],
    );
    b.terminate(&[(wd, Control), (wp, Control)]);
    b.build().expect("valid small write")
}

/// A layer that records every span: its name and all its fields, formatted.
#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl<S> Layer<S> for Recorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields(String::with_capacity(128));
        f.0.push_str(attrs.metadata().name());
        f.0.push(' ');
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(f);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(f) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(f);
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        black_box(f.0);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(f) = span.extensions_mut().remove::<Fields>()
        {
            self.spans.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(f.0.len() as u64, Ordering::Relaxed);
        }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Execute,
    Spawned,
}

/// Runs batches of DAGs for about `budget`; returns (DAGs run, time spent running them).
fn measure(
    rt: &tokio::runtime::Runtime,
    table: &[Arc<dyn ComponentIo>],
    block_size: usize,
    mode: Mode,
    budget: Duration,
) -> (u64, Duration) {
    let engine = Engine::default();
    let mut dags = 0u64;
    let mut spent = Duration::ZERO;
    let start = Instant::now();
    while start.elapsed() < budget {
        let batch: Vec<Dag> = (0..BATCH)
            .map(|i| small_write(table, block_size, (i % 64) as u64))
            .collect();
        let t = Instant::now();
        rt.block_on(async {
            for dag in batch {
                let res = match mode {
                    Mode::Execute => engine.execute(dag).await,
                    Mode::Spawned => engine.run(dag).await.expect("DAG result"),
                };
                assert_eq!(res.direction(), Direction::Forward);
                black_box(res);
            }
        });
        spent += t.elapsed();
        dags += BATCH as u64;
    }
    (dags, spent)
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("ENGINE_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1500),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    println!(
        "DAG engine: small-write DAG ({NODES} nodes: Nil Rod Rop Xor Cmt Wnd Wnp Trm), in-memory components, one thread"
    );
    println!(
        "{:<44} {:>10} {:>12} {:>12}",
        "mode", "block", "per DAG", "per firing"
    );
    for block_size in [512usize, 4096] {
        let table: Vec<Arc<dyn ComponentIo>> = (0..4)
            .map(|c| {
                MemComponent::new(format!("c{c}"), block_size as u32, 64) as Arc<dyn ComponentIo>
            })
            .collect();
        let row = |name: &str, dags: u64, spent: Duration| {
            let per_dag = spent.as_secs_f64() * 1e6 / dags as f64;
            println!(
                "{:<44} {:>8} B {:>9.2} us {:>9.3} us",
                name,
                block_size,
                per_dag,
                per_dag / NODES as f64
            );
        };

        // Building and validating, for reference (not part of the per-firing cost).
        let t = Instant::now();
        let mut built = 0u64;
        while t.elapsed() < budget / 3 {
            for i in 0..BATCH {
                black_box(small_write(&table, block_size, (i % 64) as u64));
            }
            built += BATCH as u64;
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / built as f64;
        println!(
            "{:<44} {:>8} B {:>9.2} us {:>12}",
            "build + validate (no run)", block_size, per, "-"
        );

        let (d, s) = measure(&rt, &table, block_size, Mode::Execute, budget);
        row("execute in caller's task, no subscriber", d, s);
        let (d, s) = measure(&rt, &table, block_size, Mode::Spawned, budget);
        row("run (own task), no subscriber", d, s);

        let recorder = Recorder::default();
        let subscriber = tracing_subscriber::registry().with(recorder.clone());
        let (d, s) = tracing::subscriber::with_default(subscriber, || {
            measure(&rt, &table, block_size, Mode::Spawned, budget)
        });
        row("run (own task), registry + recording layer", d, s);
        let spans = recorder.spans.load(Ordering::Relaxed);
        assert_eq!(
            spans,
            d * (NODES as u64 + 1),
            "every firing and every DAG recorded"
        );
        println!(
            "{:<44} {:>8} B {:>12} {:>12}",
            format!("  (spans recorded: {spans})"),
            block_size,
            "",
            ""
        );
    }
}
