//! `dagraid volume parity check|rewrite VOL`: start an online parity check or rewrite, and with
//! `--wait` follow it to its end (a progress bar on a terminal, a line every few seconds
//! otherwise). `check --wait` that found mismatching stripes prints them and exits with
//! [`MISMATCH_EXIT_CODE`].

use std::future::Future;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::rebuild::rate_arg;
use super::{output, print_json};
use dagraid_client::{Client, ClientError, ParityJob, ParityJobKind, VolumeInfo};

/// The exit code of `dagraid volume parity check --wait` when the check found stripes whose
/// redundancy disagrees with their data (1 stays "the command failed").
pub const MISMATCH_EXIT_CODE: u8 = 3;

/// `dagraid volume parity ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ParityCommand {
    /// Compare every stripe's redundancy (parity P and Q, RAID 1 copies) with its data,
    /// online, under each stripe's lock; nothing is written. Mismatching stripes are reported
    /// (`dagraid status`, the coordinator's log and metrics), never fixed: `parity rewrite`
    /// does that. With --wait: exit 0 when every stripe agreed, 3 (with the stripes listed)
    /// when some did not, 1 if the check stopped before the end.
    Check(ParityArgs),
    /// Rewrite every stripe's redundancy from its data, online, under each stripe's write
    /// lock. With --wait: exit 0 once done, 1 if it stopped before the end.
    Rewrite(ParityArgs),
}

/// The volume, the rate limit and `--wait`.
#[derive(Debug, Clone, clap::Args)]
pub struct ParityArgs {
    /// The volume.
    pub volume: String,
    /// Rate limit per second while clients are idle, a size of stripes (64MiB, or 64MiB/s)
    /// [default: the coordinator's --scrub-rate].
    #[arg(long, value_name = "RATE", value_parser = rate_arg)]
    pub rate: Option<u64>,
    /// Follow it to its end: a progress bar on a terminal, a line every few seconds otherwise.
    #[arg(long)]
    pub wait: bool,
    /// Milliseconds between two looks at the progress with --wait.
    #[arg(long, hide = true, default_value_t = 500, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub poll_ms: u64,
}

/// `parity check --wait` found mismatching stripes: the CLI exits with
/// [`MISMATCH_EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("volume {volume:?}: the parity check found {mismatches} mismatching stripes")]
pub struct ParityMismatches {
    /// The volume.
    pub volume: String,
    /// Stripes found.
    pub mismatches: u64,
}

/// Runs `dagraid volume parity check|rewrite`.
pub(crate) async fn run(
    json: bool,
    client: &Client,
    command: &ParityCommand,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (kind, a) = match command {
        ParityCommand::Check(a) => (ParityJobKind::Check, a),
        ParityCommand::Rewrite(a) => (ParityJobKind::Rewrite, a),
    };
    let started = match kind {
        ParityJobKind::Check => client.check_parity(&a.volume, a.rate).await?,
        ParityJobKind::Rewrite => client.rewrite_parity(&a.volume, a.rate).await?,
    };
    if !a.wait {
        if json {
            print_json(&output::volume_json(&started));
        } else {
            match &started.parity_job {
                Some(p) => println!("{}: {}", a.volume, output::parity_summary(p)),
                None => println!("{}: parity {} started", a.volume, kind.name()),
            }
        }
        return Ok(());
    }
    let last = follow(json, client, a, started, shutdown).await?;
    let job = last.parity_job.clone().unwrap_or_default();
    if json {
        print_json(&output::volume_json(&last));
    } else {
        println!("{}: {}", a.volume, output::parity_summary(&job));
        if !job.mismatched_stripes.is_empty() {
            let list: Vec<String> = job.mismatched_stripes.iter().map(u64::to_string).collect();
            println!(
                "mismatching stripes{}: {}",
                if job.mismatches > job.mismatched_stripes.len() as u64 {
                    format!(" (the first {})", job.mismatched_stripes.len())
                } else {
                    String::new()
                },
                list.join(" ")
            );
        }
    }
    if job.stopped() {
        return Err(anyhow!(
            "the parity {} stopped before the end: {}",
            kind.name(),
            job.error.as_deref().unwrap_or("no reason given")
        ));
    }
    if kind == ParityJobKind::Check && job.mismatches > 0 {
        return Err(ParityMismatches {
            volume: a.volume.clone(),
            mismatches: job.mismatches,
        }
        .into());
    }
    Ok(())
}

/// How long GetVolume may keep failing at the transport before `--wait` gives up.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);

/// Polls the volume until its parity job is no longer running; shows the progress meanwhile.
async fn follow(
    json: bool,
    client: &Client,
    a: &ParityArgs,
    first: VolumeInfo,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<VolumeInfo> {
    let mut shutdown = std::pin::pin!(shutdown);
    let handle = client.volume(&a.volume);
    let bar = (!json && std::io::stdout().is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:24}] {percent:>3}% ({pos}/{len} stripes){msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar
    });
    let every = 3000_u64.div_ceil(a.poll_ms).max(1);
    let mut looks = 0u64;
    let mut current = first;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let Some(job) = current.parity_job.clone() else {
            return Err(anyhow!(
                "the coordinator reports no parity job for {}",
                a.volume
            ));
        };
        if !job.running {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            return Ok(current);
        }
        show(&bar, json, &a.volume, &job, looks, every);
        looks += 1;
        let next = tokio::select! {
            _ = &mut shutdown => None,
            next = async {
                tokio::time::sleep(Duration::from_millis(a.poll_ms)).await;
                handle.describe().await
            } => Some(next),
        };
        let Some(next) = next else {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            return Err(anyhow!(
                "stopped waiting (interrupted); the parity {} goes on: `dagraid status {} --watch` follows it",
                job.kind.name(),
                a.volume
            ));
        };
        match next {
            Ok(v) => {
                unreachable_since = None;
                current = v;
            }
            Err(e @ (ClientError::Transport { .. } | ClientError::Timeout { .. })) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNREACHABLE_GRACE {
                    return Err(anyhow::Error::new(e).context(format!(
                        "no answer about the parity job for {}s",
                        UNREACHABLE_GRACE.as_secs()
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn show(
    bar: &Option<ProgressBar>,
    json: bool,
    volume: &str,
    job: &ParityJob,
    looks: u64,
    every: u64,
) {
    match bar {
        Some(bar) => {
            bar.set_prefix(format!("{volume}: parity {}", job.kind.name()));
            bar.set_length(job.stripes_total);
            bar.set_position(job.stripes_done.min(job.stripes_total));
            bar.set_message(output::parity_details(job));
        }
        None if !json && looks.is_multiple_of(every) => {
            println!("{volume}: {}", output::parity_summary(job));
        }
        None => {}
    }
}
