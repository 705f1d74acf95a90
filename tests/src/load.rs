//! Load and overload runs on a cluster of real processes (issue 18, item 4; the `load` binary).
//!
//! **Load**: `clients` clients on a RAID 5 volume, each on a region of its own, issue 4 KiB to
//! 64 KiB reads and writes (whole 4 KiB blocks) at an aggregate target rate, paced (a client that
//! falls behind does not catch up in a burst). With `--rate auto` a ramp first finds the highest
//! rate at which the p99 latency of a step stays under the target (1 s), and the long run uses
//! [`AUTO_RATE_MARGIN`] of it. The verdict: no error at all, the p99 of every minute under the
//! target, the resident memory of every process at the end within 10% of what it was after
//! warm-up, and no growth in open file descriptors.
//!
//! **Overload**: past it: more clients than the cluster serves, writing 256 KiB each with no
//! pause, against a coordinator with a tight node deadline and a small admission queue. Requests
//! wait or are shed (RESOURCE_EXHAUSTED / `overloaded`, which promises nothing was applied); the
//! verdict: no column failed, no lost range, every acknowledged write reads back, and the column
//! checker passes.
//!
//! Every block a client writes carries bytes derived from (client, sequence, block), so a read
//! names what it saw. Each client keeps, per block of its region, the writes that may be there:
//! one after an acknowledged write, more after a write whose outcome is unknown (a deadline or a
//! transport error). Every read, during the run and in the final read-back, must return one of
//! them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use dagraid_client::{
    Client, ClientError, ClientOptions, ComponentState, RaidLevel, VolumeSpec, VolumeState,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::{Cluster, ClusterOptions};

/// Bytes per block of the workload (writes and reads are whole blocks).
pub const BLOCK: u64 = 4096;
/// The latency target of the load phase (p99 of every minute under it).
pub const P99_TARGET: Duration = Duration::from_secs(1);
/// The share of the highest good ramp rate the long run uses.
pub const AUTO_RATE_MARGIN: f64 = 0.8;
/// Allowed growth of resident memory between warm-up and the end.
pub const RSS_GROWTH_LIMIT: f64 = 0.10;

/// How to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Length of the load phase (after warm-up).
    pub duration: Duration,
    /// Warm-up before the first memory and descriptor sample.
    pub warmup: Duration,
    /// Clients of the load phase.
    pub clients: usize,
    /// Aggregate operations per second; `None`: found by a ramp.
    pub rate: Option<f64>,
    /// Length of one ramp step.
    pub ramp_step: Duration,
    /// Length of the overload phase (0: skipped).
    pub overload: Duration,
    /// Clients of the overload phase.
    pub overload_clients: usize,
    /// Each client's region, in blocks.
    pub region_blocks: u64,
    /// Seed of every client's choices.
    pub seed: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            duration: Duration::from_secs(600),
            warmup: Duration::from_secs(60),
            clients: 64,
            rate: None,
            ramp_step: Duration::from_secs(20),
            overload: Duration::from_secs(120),
            overload_clients: 256,
            region_blocks: 256,
            seed: 1,
        }
    }
}

/// Latencies of one kind of operation.
#[derive(Debug, Default, Clone)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn quantile(&self, q: f64) -> Option<Duration> {
        if self.0.is_empty() {
            return None;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        Some(v[i])
    }
}

/// One answered operation.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Since the start of the phase.
    at: Duration,
    latency: Duration,
    write: bool,
}

/// How an operation ended.
#[derive(Debug, Default, Clone)]
struct Outcomes {
    ok: u64,
    /// Error name -> count.
    errors: BTreeMap<String, u64>,
    /// Reads that returned bytes no write could have left there.
    wrong_reads: Vec<String>,
}

impl Outcomes {
    fn merge(&mut self, other: Outcomes) {
        self.ok += other.ok;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.wrong_reads.extend(other.wrong_reads);
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// What may be in each block of a client's region: write ids (0: the initial zeros).
struct Region {
    client: u64,
    first_block: u64,
    possible: Vec<Vec<u64>>,
    next_seq: u64,
}

/// The bytes write `id` puts in volume block `block`.
fn block_bytes(id: u64, block: u64) -> Vec<u8> {
    if id == 0 {
        return vec![0u8; BLOCK as usize];
    }
    let mut state = id
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(block.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    let mut out = Vec::with_capacity(BLOCK as usize);
    while out.len() < BLOCK as usize {
        // SplitMix64.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

impl Region {
    fn new(client: u64, first_block: u64, blocks: u64) -> Self {
        Region {
            client,
            first_block,
            possible: vec![vec![0]; blocks as usize],
            next_seq: 1,
        }
    }

    fn new_id(&mut self) -> u64 {
        let id = (self.client << 40) | self.next_seq;
        self.next_seq += 1;
        id
    }

    /// Whether `data`, read from block `index` of the region, is one of the writes that may be
    /// there.
    fn check(&self, index: usize, data: &[u8]) -> bool {
        let block = self.first_block + index as u64;
        self.possible[index]
            .iter()
            .any(|&id| block_bytes(id, block) == data)
    }
}

/// Whether an error promises that nothing was applied (the service's own refusal before any
/// write: shed by admission, beyond the tolerance with nothing written, not assembled, a bad
/// request). Anything else may have been applied.
fn not_applied(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Overloaded { .. }
            | ClientError::VolumeFailed { .. }
            | ClientError::Unrecoverable { .. }
            | ClientError::NotAssembled { .. }
            | ClientError::InvalidArgument { .. }
            | ClientError::OutOfRange { .. }
            | ClientError::UnknownVolume { .. }
    )
}

fn error_name(e: &ClientError) -> String {
    let s = format!("{e:?}");
    s.split([' ', '{', '('])
        .next()
        .unwrap_or("error")
        .to_owned()
}

/// What a client of a phase does.
#[derive(Debug, Clone)]
struct Mix {
    /// Time between two operations (None: no pause).
    interval: Option<Duration>,
    /// Share of writes.
    write_share: f64,
    /// Blocks per write.
    write_blocks: std::ops::RangeInclusive<u64>,
}

/// One client's loop until `stop`: paced by the mix's interval, writes of the mix's size with
/// its probability, reads of up to 16 blocks otherwise.
async fn client_loop(
    client: Client,
    volume: String,
    mut region: Region,
    mix: Mix,
    seed: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> (Region, Vec<Sample>, Outcomes) {
    let Mix {
        interval,
        write_share,
        write_blocks,
    } = mix;
    let mut rng = StdRng::seed_from_u64(seed);
    let vol = client.volume(&volume);
    let mut samples = Vec::new();
    let mut outcomes = Outcomes::default();
    let mut ticker = interval.map(|i| {
        let mut t = tokio::time::interval(i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let blocks = region.possible.len() as u64;
    while !stop.load(Ordering::Relaxed) {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let write = rng.random_bool(write_share);
        let len = if write {
            rng.random_range(write_blocks.clone()).min(blocks)
        } else {
            rng.random_range(1..=16u64.min(blocks))
        };
        let index = rng.random_range(0..=blocks - len);
        let offset = (region.first_block + index) * BLOCK;
        let t0 = Instant::now();
        if write {
            let id = region.new_id();
            let mut data = Vec::with_capacity((len * BLOCK) as usize);
            for b in 0..len {
                data.extend_from_slice(&block_bytes(id, region.first_block + index + b));
            }
            let answer = vol.write_at(offset, Bytes::from(data)).await;
            let latency = t0.elapsed();
            let range = index as usize..(index + len) as usize;
            match answer {
                Ok(()) => {
                    outcomes.ok += 1;
                    samples.push(Sample {
                        at: t0 - started,
                        latency,
                        write: true,
                    });
                    for p in &mut region.possible[range] {
                        *p = vec![id];
                    }
                }
                Err(e) => {
                    *outcomes.errors.entry(error_name(&e)).or_default() += 1;
                    if !not_applied(&e) {
                        for p in &mut region.possible[range] {
                            p.push(id);
                        }
                    }
                }
            }
        } else {
            let answer = vol.read_at(offset, (len * BLOCK) as usize).await;
            let latency = t0.elapsed();
            match answer {
                Ok(data) => {
                    outcomes.ok += 1;
                    samples.push(Sample {
                        at: t0 - started,
                        latency,
                        write: false,
                    });
                    for b in 0..len as usize {
                        let bytes = &data[b * BLOCK as usize..(b + 1) * BLOCK as usize];
                        if !region.check(index as usize + b, bytes) {
                            outcomes.wrong_reads.push(format!(
                                "client {} read block {} with bytes of no write that may be there",
                                region.client,
                                region.first_block + index + b as u64
                            ));
                        }
                    }
                }
                Err(e) => *outcomes.errors.entry(error_name(&e)).or_default() += 1,
            }
        }
    }
    (region, samples, outcomes)
}

/// Resident memory (KiB) and open descriptors of process `pid`, from /proc.
fn process_usage(pid: u32) -> Result<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count();
    Ok((rss, fds))
}

/// Memory and descriptors of every process of the cluster, by name.
fn cluster_usage(cluster: &Cluster) -> Result<BTreeMap<String, (u64, usize)>> {
    let mut usage = BTreeMap::new();
    let pid = cluster
        .coordinator
        .pid()
        .context("the coordinator is not running")?;
    usage.insert("coordinator".to_owned(), process_usage(pid)?);
    for (i, n) in cluster.nodes.iter().enumerate() {
        let pid = n.pid().context("a node is not running")?;
        usage.insert(format!("node{}", i + 1), process_usage(pid)?);
    }
    Ok(usage)
}

/// The outcome of one phase.
struct Phase {
    samples: Vec<Sample>,
    outcomes: Outcomes,
    regions: Vec<Region>,
    elapsed: Duration,
}

impl Phase {
    fn p(&self, q: f64, write: Option<bool>) -> Option<Duration> {
        Latencies(
            self.samples
                .iter()
                .filter(|s| write.is_none_or(|w| s.write == w))
                .map(|s| s.latency)
                .collect(),
        )
        .quantile(q)
    }

    /// p99 of each whole minute.
    fn minute_p99s(&self) -> Vec<Duration> {
        let mut minutes: BTreeMap<u64, Vec<Duration>> = BTreeMap::new();
        for s in &self.samples {
            minutes
                .entry(s.at.as_secs() / 60)
                .or_default()
                .push(s.latency);
        }
        minutes
            .into_values()
            .filter_map(|v| Latencies(v).quantile(0.99))
            .collect()
    }

    fn rate(&self) -> f64 {
        self.samples.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` clients for `duration`, on regions taken over from `regions` (or fresh).
#[allow(clippy::too_many_arguments)]
async fn run_phase(
    client: &Client,
    volume: &str,
    regions: Vec<Region>,
    rate: Option<f64>,
    duration: Duration,
    write_share: f64,
    write_blocks: std::ops::RangeInclusive<u64>,
    seed: u64,
) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let n = regions.len();
    let interval = rate.map(|r| Duration::from_secs_f64(n as f64 / r));
    let tasks: Vec<_> = regions
        .into_iter()
        .enumerate()
        .map(|(i, region)| {
            tokio::spawn(client_loop(
                client.clone(),
                volume.to_owned(),
                region,
                Mix {
                    interval,
                    write_share,
                    write_blocks: write_blocks.clone(),
                },
                seed.wrapping_mul(1000).wrapping_add(i as u64),
                started,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut phase = Phase {
        samples: Vec::new(),
        outcomes: Outcomes::default(),
        regions: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (region, samples, outcomes) = t.await.expect("a client task panicked");
        phase.regions.push(region);
        phase.samples.extend(samples);
        phase.outcomes.merge(outcomes);
    }
    phase.regions.sort_by_key(|r| r.client);
    phase.elapsed = started.elapsed();
    phase
}

/// Reads every region back whole and checks every block against what may be there.
async fn read_back(client: &Client, volume: &str, regions: &[Region]) -> Result<Vec<String>> {
    let vol = client.volume(volume);
    let mut wrong = Vec::new();
    for r in regions {
        let len = r.possible.len() as u64 * BLOCK;
        let data = vol
            .read_at(r.first_block * BLOCK, len as usize)
            .await
            .with_context(|| format!("reading back client {}'s region", r.client))?;
        for i in 0..r.possible.len() {
            let bytes = &data[i * BLOCK as usize..(i + 1) * BLOCK as usize];
            if !r.check(i, bytes) {
                wrong.push(format!(
                    "block {}: bytes of no acknowledged (or possibly applied) write",
                    r.first_block + i as u64
                ));
            }
        }
    }
    Ok(wrong)
}

fn fmt_ms(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    })
}

/// What a run found.
#[derive(Debug, Default)]
pub struct LoadReport {
    lines: Vec<String>,
    violations: Vec<String>,
}

impl LoadReport {
    fn line(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("{s}");
        self.lines.push(s);
    }

    fn violation(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("VIOLATION: {s}");
        self.violations.push(s);
    }

    /// Whether every check held.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        if self.violations.is_empty() {
            writeln!(f, "verdict: clean")
        } else {
            writeln!(f, "verdict: {} violation(s)", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  {v}")?;
            }
            Ok(())
        }
    }
}

async fn connect(cluster: &Cluster) -> Result<Client> {
    Client::connect(
        cluster.url(),
        ClientOptions {
            request_timeout: Duration::from_secs(120),
            ..cluster.client_options()
        },
    )
    .await
    .context("connecting to the coordinator")
}

async fn create_volume(client: &Client, name: &str, clients: usize, region: u64) -> Result<()> {
    let size = clients as u64 * region * BLOCK;
    let info = client
        .create_volume(
            VolumeSpec::new(name, RaidLevel::Raid5, size)
                .columns(5)
                .stripe_unit_bytes(64 * 1024),
        )
        .await
        .context("creating the volume")?;
    if info.size_bytes < size {
        bail!("volume of {} bytes, {size} asked", info.size_bytes);
    }
    Ok(())
}

fn regions(clients: usize, blocks: u64) -> Vec<Region> {
    (0..clients as u64)
        .map(|c| Region::new(c + 1, c * blocks, blocks))
        .collect()
}

/// Checks what a volume says about itself after a phase: no column failed, nothing lost.
async fn check_volume(client: &Client, name: &str, report: &mut LoadReport) -> Result<()> {
    let status = client.volume(name).status().await?;
    let failed: Vec<u32> = status
        .components
        .iter()
        .filter(|c| c.state != ComponentState::Optimal)
        .map(|c| c.column)
        .collect();
    if !failed.is_empty() || status.state != VolumeState::Optimal {
        report.violation(format!(
            "{name}: state {:?}, columns not optimal: {failed:?}",
            status.state
        ));
    }
    let lost = client.list_lost(name).await?;
    if !lost.is_empty() {
        report.violation(format!("{name}: lost ranges {lost:?}"));
    }
    Ok(())
}

/// The load phase (ramp, warm-up, the long run, memory and descriptors).
pub async fn run_load(config: &LoadConfig) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    let cluster = Cluster::start(ClusterOptions {
        nodes: 5,
        node_deadline_ms: 5000,
        ..ClusterOptions::default()
    })
    .await?;
    let client = connect(&cluster).await?;
    let name = "load";
    create_volume(&client, name, config.clients, config.region_blocks).await?;
    let mut regs = regions(config.clients, config.region_blocks);
    let write_share = 0.7;
    let write_blocks = 1..=16u64;
    report.line(format!(
        "load: {} clients, RAID 5 over 5 nodes, 4-64 KiB ops (70% writes), regions of {} KiB",
        config.clients,
        config.region_blocks * BLOCK / 1024
    ));

    let rate = match config.rate {
        Some(r) => r,
        None => {
            let mut rate = 100.0;
            let mut best: Option<f64> = None;
            loop {
                let step = run_phase(
                    &client,
                    name,
                    regs,
                    Some(rate),
                    config.ramp_step,
                    write_share,
                    write_blocks.clone(),
                    config.seed,
                )
                .await;
                regs = step.regions;
                let p99 =
                    Latencies(step.samples.iter().map(|s| s.latency).collect()).quantile(0.99);
                let achieved = step.samples.len() as f64 / step.elapsed.as_secs_f64();
                let good = step.outcomes.error_count() == 0
                    && p99.is_some_and(|p| p < P99_TARGET)
                    && achieved >= 0.9 * rate;
                report.line(format!(
                    "  ramp: target {rate:.0} op/s, achieved {achieved:.0} op/s, p99 {}, errors {} -> {}",
                    fmt_ms(p99),
                    step.outcomes.error_count(),
                    if good { "good" } else { "past it" }
                ));
                if !good {
                    break;
                }
                best = Some(rate);
                rate *= 1.5;
            }
            let best = best.context("even 100 op/s was past the target")?;
            best * AUTO_RATE_MARGIN
        }
    };

    let warm = run_phase(
        &client,
        name,
        regs,
        Some(rate),
        config.warmup,
        write_share,
        write_blocks.clone(),
        config.seed + 1,
    )
    .await;
    regs = warm.regions;
    let before = cluster_usage(&cluster)?;
    let main = run_phase(
        &client,
        name,
        regs,
        Some(rate),
        config.duration,
        write_share,
        write_blocks.clone(),
        config.seed + 2,
    )
    .await;
    let after = cluster_usage(&cluster)?;
    report.line(format!(
        "  run: {:.0} s at target {rate:.0} op/s: {} ops ({:.0} op/s), {} errors; p50 {}, p99 {}, p99.9 {}, max {}; writes p99 {}, reads p99 {}",
        main.elapsed.as_secs_f64(),
        main.samples.len(),
        main.rate(),
        main.outcomes.error_count(),
        fmt_ms(main.p(0.5, None)),
        fmt_ms(main.p(0.99, None)),
        fmt_ms(main.p(0.999, None)),
        fmt_ms(main.p(1.0, None)),
        fmt_ms(main.p(0.99, Some(true))),
        fmt_ms(main.p(0.99, Some(false))),
    ));
    let minutes = main.minute_p99s();
    report.line(format!(
        "  p99 by minute: {}",
        minutes
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(" ")
            + " ms"
    ));
    for (i, p) in minutes.iter().enumerate() {
        if *p >= P99_TARGET {
            report.violation(format!("minute {i}: p99 {p:?} over {P99_TARGET:?}"));
        }
    }
    for errors in [&warm.outcomes.errors, &main.outcomes.errors] {
        for (kind, n) in errors {
            report.violation(format!("{n} operations failed: {kind}"));
        }
    }
    for w in warm
        .outcomes
        .wrong_reads
        .iter()
        .chain(&main.outcomes.wrong_reads)
    {
        report.violation(w.clone());
    }
    for (process, &(rss0, fd0)) in &before {
        let (rss1, fd1) = after[process];
        let growth = rss1 as f64 / rss0 as f64 - 1.0;
        report.line(format!(
            "  {process}: RSS {} MiB -> {} MiB ({:+.1}%), open fds {fd0} -> {fd1}",
            rss0 / 1024,
            rss1 / 1024,
            growth * 100.0
        ));
        if growth.abs() > RSS_GROWTH_LIMIT {
            report.violation(format!(
                "{process}: resident memory changed by {:+.1}% (limit {:.0}%)",
                growth * 100.0,
                RSS_GROWTH_LIMIT * 100.0
            ));
        }
        if fd1 > fd0 {
            report.violation(format!("{process}: open fds grew from {fd0} to {fd1}"));
        }
    }
    for w in read_back(&client, name, &main.regions).await? {
        report.violation(w);
    }
    check_volume(&client, name, &mut report).await?;
    if let Err(e) = cluster.check_columns(name, &[]).await {
        report.violation(format!("column checker: {e:#}"));
    } else {
        report.line("  read-back and column checker: clean");
    }
    Ok(report)
}

/// The overload phase: more clients than served, a tight node deadline, a small admission
/// queue.
pub async fn run_overload(config: &LoadConfig) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    let cluster = Cluster::start(ClusterOptions {
        nodes: 5,
        node_deadline_ms: 300,
        coordinator_args: vec![
            "--max-accesses".into(),
            "32".into(),
            "--max-queued-accesses".into(),
            "64".into(),
        ],
        ..ClusterOptions::default()
    })
    .await?;
    let client = connect(&cluster).await?;
    let name = "overload";
    create_volume(&client, name, config.overload_clients, 64).await?;
    let regs = regions(config.overload_clients, 64);
    let phase = run_phase(
        &client,
        name,
        regs,
        None,
        config.overload,
        0.9,
        64..=64,
        config.seed + 3,
    )
    .await;
    report.line(format!(
        "overload: {} clients writing 256 KiB with no pause, node deadline 300 ms, admission 32 running + 64 queued, {:.0} s: {} answered ({:.0} op/s), p50 {}, p99 {}; errors {:?}",
        config.overload_clients,
        phase.elapsed.as_secs_f64(),
        phase.samples.len(),
        phase.rate(),
        fmt_ms(phase.p(0.5, None)),
        fmt_ms(phase.p(0.99, None)),
        phase.outcomes.errors
    ));
    for (kind, n) in &phase.outcomes.errors {
        if kind != "Overloaded" {
            report.violation(format!("{n} operations failed other than shed: {kind}"));
        }
    }
    for w in &phase.outcomes.wrong_reads {
        report.violation(w.clone());
    }
    for w in read_back(&client, name, &phase.regions).await? {
        report.violation(w);
    }
    check_volume(&client, name, &mut report).await?;
    if let Err(e) = cluster.check_columns(name, &[]).await {
        report.violation(format!("column checker: {e:#}"));
    } else {
        report.line("  no column failed, nothing lost, read-back and column checker: clean");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_name_their_write_and_block() {
        assert_eq!(block_bytes(0, 5), vec![0u8; BLOCK as usize]);
        assert_ne!(block_bytes(1, 5), block_bytes(2, 5));
        assert_ne!(block_bytes(1, 5), block_bytes(1, 6));
        assert_eq!(block_bytes(7, 9), block_bytes(7, 9));
        let mut r = Region::new(1, 10, 4);
        let id = r.new_id();
        r.possible[2] = vec![0, id];
        assert!(r.check(2, &block_bytes(id, 12)));
        assert!(r.check(2, &block_bytes(0, 12)));
        assert!(!r.check(2, &block_bytes(id, 13)));
        assert!(!r.check(1, &block_bytes(id, 11)));
    }

    #[test]
    fn quantiles() {
        let l = Latencies((1..=100).map(Duration::from_millis).collect());
        assert_eq!(l.quantile(0.99), Some(Duration::from_millis(99)));
        assert_eq!(l.quantile(1.0), Some(Duration::from_millis(100)));
        assert_eq!(Latencies::default().quantile(0.5), None);
    }
}
