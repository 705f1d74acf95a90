//! `dagraid volume rebuild`, `dagraid volume re-add` and `dagraid volume copyback`: start the
//! reconstruction of a failed column (onto a spare, or in place), the re-add of a failed
//! column's own component come back, or the copyback of a column that lives on a spare, and
//! with `--wait` follow it to its end.
//!
//! Following polls GetVolume and reads the column's entry of `Volume.rebuilds`: on a terminal
//! an indicatif bar (stripes, rate, ETA, lost blocks), otherwise a plain line every few
//! seconds, so that a log or a CI run shows the progress too. The rebuild is the one the
//! start answered with (column, kind and target component), never an older one of the column.

use std::future::Future;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{output, print_json};
use dagraid_client::size::parse_size;
use dagraid_client::{
    Client, ClientError, RebuildKind, RebuildProgress, RebuildTarget, VolumeInfo,
};

/// `dagraid volume rebuild`.
#[derive(Debug, Clone, clap::Args)]
pub struct RebuildArgs {
    /// The volume.
    pub volume: String,
    /// The failed column to reconstruct (0-based, as `dagraid status` shows).
    #[arg(long)]
    pub column: u32,
    /// Reconstruct onto a blank component at the column's own place (on its node, created
    /// there when the node lost it) instead of a spare of the pool.
    #[arg(long, conflicts_with = "spare")]
    pub in_place: bool,
    /// Reconstruct onto this spare of the pool (`dagraid spare list`) [default: the spare that
    /// fits best].
    #[arg(long, value_name = "ID")]
    pub spare: Option<String>,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// `dagraid volume re-add`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReAddArgs {
    /// The volume.
    pub volume: String,
    /// The failed column to re-add (0-based, as `dagraid status` shows).
    #[arg(long)]
    pub column: u32,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// `dagraid volume copyback`.
#[derive(Debug, Clone, clap::Args)]
pub struct CopybackArgs {
    /// The volume.
    pub volume: String,
    /// The column to copy back (it lives on a spare since its reconstruction).
    #[arg(long)]
    pub column: u32,
    /// The storage node of the replacement component (created there, blank).
    #[arg(long, value_name = "NODE")]
    pub to: String,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// The rate limit and `--wait`, shared by both verbs.
#[derive(Debug, Clone, clap::Args)]
pub struct FollowArgs {
    /// Rate limit per second, a size (64MiB, or 64MiB/s) [default: the coordinator's
    /// --rebuild-rate].
    #[arg(long, value_name = "RATE", value_parser = rate_arg)]
    pub rate: Option<u64>,
    /// Follow it to its end: a progress bar on a terminal, a line every few seconds
    /// otherwise. Exit 0 once done; exit 1 with the error if it stops before the end.
    #[arg(long)]
    pub wait: bool,
    /// Milliseconds between two looks at the progress with --wait.
    #[arg(long, hide = true, default_value_t = 500, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub poll_ms: u64,
}

/// A rate as people type it: a size, optionally per second (`64MiB`, `64MiB/s`), at least 1.
pub(crate) fn rate_arg(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let size = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("/S"))
        .unwrap_or(trimmed);
    match parse_size(size) {
        Ok(0) => Err(
            "a rate must be at least 1 byte per second (leave --rate out for the \
                      coordinator's default)"
                .to_owned(),
        ),
        Ok(rate) => Ok(rate),
        Err(e) => Err(e.to_string()),
    }
}

/// `dagraid volume rebuild VOL --column N [--in-place | --spare ID] [--rate R] [--wait]`.
pub(crate) async fn rebuild(
    json: bool,
    client: &Client,
    a: &RebuildArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let target = match (&a.spare, a.in_place) {
        (Some(_), true) => {
            // clap refuses the pair already; a caller building RebuildArgs by hand gets this.
            return Err(anyhow!("--in-place and --spare exclude each other"));
        }
        (Some(id), false) => RebuildTarget::Spare(id.clone()),
        (None, true) => RebuildTarget::InPlace,
        (None, false) => RebuildTarget::BestSpare,
    };
    let kind = target.kind();
    let started = client
        .rebuild_column(&a.volume, a.column, target, a.follow.rate)
        .await?;
    finish(
        json, client, &a.volume, a.column, kind, started, &a.follow, shutdown,
    )
    .await
}

/// `dagraid volume re-add VOL --column N [--rate R] [--wait]`: the job is a re-add, or a full
/// reconstruction onto the same component when the parity map cannot be trusted for it (the
/// answer says which).
pub(crate) async fn re_add(
    json: bool,
    client: &Client,
    a: &ReAddArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = client
        .re_add_column(&a.volume, a.column, a.follow.rate)
        .await?;
    let kind = started
        .rebuilds
        .iter()
        .find(|r| r.column == a.column && r.running)
        .map_or(RebuildKind::ReAdd, |r| r.kind);
    finish(
        json, client, &a.volume, a.column, kind, started, &a.follow, shutdown,
    )
    .await
}

/// `dagraid volume copyback VOL --column N --to NODE [--rate R] [--wait]`.
pub(crate) async fn copyback(
    json: bool,
    client: &Client,
    a: &CopybackArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = client
        .copyback(&a.volume, a.column, &a.to, a.follow.rate)
        .await?;
    finish(
        json,
        client,
        &a.volume,
        a.column,
        RebuildKind::Copyback,
        started,
        &a.follow,
        shutdown,
    )
    .await
}

/// Prints what was started, or follows it with --wait.
#[allow(clippy::too_many_arguments)]
async fn finish(
    json: bool,
    client: &Client,
    volume: &str,
    column: u32,
    kind: RebuildKind,
    started: VolumeInfo,
    follow: &FollowArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if !follow.wait {
        if json {
            print_json(&output::volume_json(&started));
        } else {
            match Tracked::new(column, kind).find(&started) {
                Some(r) => println!("{volume} column {column}: {}", output::rebuild_summary(r)),
                None => println!("{volume} column {column}: {} started", kind_noun(kind)),
            }
            print!("{}", output::volume_status(&started));
        }
        return Ok(());
    }
    let display = if json {
        Display::Quiet
    } else if std::io::stdout().is_terminal() {
        Display::Bar(None)
    } else {
        Display::Lines {
            every: 3000_u64.div_ceil(follow.poll_ms).max(1),
            polls: 0,
            last_error: None,
        }
    };
    let mut follower = Follower {
        client,
        volume,
        tracked: Tracked::new(column, kind),
        display,
        poll: Duration::from_millis(follow.poll_ms),
        last_note: None,
    };
    let outcome = follower.run(started, shutdown).await;
    match outcome {
        Ok(done) => {
            if json {
                print_json(&output::volume_json(&done));
            }
            Ok(())
        }
        Err(Ended { last, error }) => {
            if let (true, Some(v)) = (json, last) {
                print_json(&output::volume_json(&v));
            }
            Err(error)
        }
    }
}

fn kind_noun(kind: RebuildKind) -> &'static str {
    match kind {
        RebuildKind::Copyback => "copyback",
        RebuildKind::InPlace => "in-place rebuild",
        RebuildKind::ReAdd => "re-add",
        RebuildKind::Spare | RebuildKind::Unknown => "rebuild",
    }
}

/// The rebuild a `--wait` follows: its column and kind, and the component it writes once an
/// answer named it (an older rebuild of the same column, finished or stopped, is not it).
#[derive(Debug, Clone)]
struct Tracked {
    column: u32,
    kind: RebuildKind,
    component_id: Option<String>,
}

impl Tracked {
    fn new(column: u32, kind: RebuildKind) -> Self {
        Self {
            column,
            kind,
            component_id: None,
        }
    }

    /// Its entry in `v`: the one writing the tracked component, else (before one was seen)
    /// the running one of the column and kind, else any of them.
    fn find<'v>(&self, v: &'v VolumeInfo) -> Option<&'v RebuildProgress> {
        let mut candidates = v
            .rebuilds
            .iter()
            .filter(|r| r.column == self.column && r.kind == self.kind);
        match &self.component_id {
            Some(id) => candidates.find(|r| &r.component_id == id),
            None => {
                let all: Vec<_> = candidates.collect();
                all.iter()
                    .find(|r| r.running)
                    .or_else(|| all.first())
                    .copied()
            }
        }
    }

    /// Remembers the component of `r` the first time one is seen.
    fn pin(&mut self, r: &RebuildProgress) {
        if self.component_id.is_none() && !r.component_id.is_empty() {
            self.component_id = Some(r.component_id.clone());
        }
    }

    /// The column lives on the tracked component and is optimal: done, even when the
    /// coordinator no longer lists the rebuild (it restarted after the end).
    fn landed(&self, v: &VolumeInfo) -> bool {
        let Some(id) = &self.component_id else {
            return false;
        };
        v.components.iter().any(|c| {
            c.column == self.column
                && &c.component_id == id
                && c.state == dagraid_client::ComponentState::Optimal
        })
    }
}

/// How progress is shown while following.
enum Display {
    /// `--json`: nothing until the end.
    Quiet,
    /// A terminal: one bar, made at the first progress seen.
    Bar(Option<ProgressBar>),
    /// Not a terminal: a line at the first look, every `every` looks, when the error changes,
    /// and at the end.
    Lines {
        every: u64,
        polls: u64,
        last_error: Option<String>,
    },
}

/// The style of a rebuild's bar, here and in `status --watch`: stripes done of the whole, the
/// rate, ETA and notes in the message.
pub(crate) fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} [{bar:24}] {percent:>3}% ({pos}/{len} stripes){msg}")
        .expect("the template is valid")
        .progress_chars("=> ")
}

/// Sets a bar to a rebuild's progress.
pub(crate) fn update_bar(bar: &ProgressBar, r: &RebuildProgress) {
    bar.set_length(r.stripes_total);
    bar.set_position(r.stripes_done.min(r.stripes_total));
    bar.set_message(output::rebuild_details(r));
}

/// Why following ended before the rebuild completed.
struct Ended {
    /// The volume as last seen, for `--json`.
    last: Option<Box<VolumeInfo>>,
    error: anyhow::Error,
}

struct Follower<'a> {
    client: &'a Client,
    volume: &'a str,
    tracked: Tracked,
    display: Display,
    poll: Duration,
    /// The last note shown, and how many looks ago: a note is shown again only when it
    /// changes, or as often as the progress lines.
    last_note: Option<(String, u64)>,
}

/// How long GetVolume may keep failing at the transport (a coordinator restarting) before
/// `--wait` gives up.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);

impl Follower<'_> {
    async fn run(
        &mut self,
        first: VolumeInfo,
        shutdown: impl Future<Output = ()>,
    ) -> Result<VolumeInfo, Ended> {
        let mut shutdown = std::pin::pin!(shutdown);
        let handle = self.client.volume(self.volume);
        let mut current = first;
        let mut unreachable_since: Option<Instant> = None;
        loop {
            if let Some(done) = self.look(&current)? {
                return Ok(done);
            }
            let next = tokio::select! {
                _ = &mut shutdown => None,
                next = async {
                    tokio::time::sleep(self.poll).await;
                    handle.describe().await
                } => Some(next),
            };
            let Some(next) = next else {
                self.abandon();
                return Err(Ended {
                    last: Some(Box::new(current)),
                    error: anyhow!(
                        "stopped waiting (interrupted); the {} of column {} goes on: \
                         `dagraid status {} --watch` follows it",
                        kind_noun(self.tracked.kind),
                        self.tracked.column,
                        self.volume
                    ),
                });
            };
            match next {
                Ok(v) => {
                    unreachable_since = None;
                    current = v;
                }
                Err(e @ (ClientError::Transport { .. } | ClientError::Timeout { .. })) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= UNREACHABLE_GRACE {
                        self.abandon();
                        return Err(Ended {
                            last: Some(Box::new(current)),
                            error: anyhow::Error::new(e).context(format!(
                                "no answer about the rebuild for {}s",
                                UNREACHABLE_GRACE.as_secs()
                            )),
                        });
                    }
                    self.note(&format!("coordinator not answering ({e}); still waiting"));
                }
                Err(e) => {
                    self.abandon();
                    return Err(Ended {
                        last: Some(Box::new(current)),
                        error: e.into(),
                    });
                }
            }
        }
    }

    /// Shows one look at the volume. `Ok(Some(v))` once the rebuild completed; an error once
    /// it stopped before its end.
    fn look(&mut self, v: &VolumeInfo) -> Result<Option<VolumeInfo>, Ended> {
        let volume = self.volume;
        let column = self.tracked.column;
        let Some(r) = self.tracked.find(v).cloned() else {
            if self.tracked.landed(v) {
                self.finish_bar();
                self.line(&format!(
                    "{volume} column {column}: {} done",
                    kind_noun(self.tracked.kind)
                ));
                return Ok(Some(v.clone()));
            }
            let why = v
                .rebuild_waiting
                .clone()
                .unwrap_or_else(|| "the coordinator reports no progress yet".to_owned());
            self.note(&format!(
                "{volume} column {column}: waiting for the {}: {why}",
                kind_noun(self.tracked.kind)
            ));
            return Ok(None);
        };
        self.tracked.pin(&r);
        let line = format!("{volume} column {column}: {}", output::rebuild_summary(&r));
        if r.completed {
            self.finish_bar();
            self.line(&line);
            return Ok(Some(v.clone()));
        }
        if r.stopped() {
            self.abandon_at(&r);
            return Err(Ended {
                last: Some(Box::new(v.clone())),
                error: anyhow!("{line}"),
            });
        }
        match &mut self.display {
            Display::Quiet => {}
            Display::Bar(bar) => {
                let bar = bar.get_or_insert_with(|| {
                    let bar = ProgressBar::with_draw_target(
                        Some(r.stripes_total),
                        ProgressDrawTarget::stdout(),
                    );
                    bar.set_style(bar_style());
                    bar
                });
                bar.set_prefix(format!("{volume} column {column}: {}", target_text(&r)));
                update_bar(bar, &r);
            }
            Display::Lines {
                every,
                polls,
                last_error,
            } => {
                let error_changed = *last_error != r.error;
                if polls.is_multiple_of(*every) || error_changed {
                    println!("{line}");
                }
                *polls += 1;
                *last_error = r.error.clone();
            }
        }
        Ok(None)
    }

    /// A line that ends following (done), above the bar's last state.
    fn line(&self, text: &str) {
        match &self.display {
            Display::Quiet => {}
            Display::Bar(_) | Display::Lines { .. } => println!("{text}"),
        }
    }

    /// Something to say meanwhile (waiting, unreachable): above the bar, or as a line; shown
    /// when it changes, and on a pipe again every few seconds while it stays.
    fn note(&mut self, text: &str) {
        let again_every = match &self.display {
            Display::Quiet => return,
            Display::Bar(_) => u64::MAX,
            Display::Lines { every, .. } => *every,
        };
        let show = match &mut self.last_note {
            Some((last, looks)) if last == text => {
                *looks += 1;
                looks.is_multiple_of(again_every)
            }
            _ => {
                self.last_note = Some((text.to_owned(), 0));
                true
            }
        };
        if !show {
            return;
        }
        match &self.display {
            Display::Bar(Some(bar)) => bar.println(text),
            _ => println!("{text}"),
        }
    }

    fn finish_bar(&mut self) {
        if let Display::Bar(Some(bar)) = &self.display {
            bar.finish_and_clear();
        }
    }

    fn abandon_at(&mut self, r: &RebuildProgress) {
        if let Display::Bar(Some(bar)) = &self.display {
            update_bar(bar, r);
        }
        self.abandon();
    }

    fn abandon(&mut self) {
        if let Display::Bar(Some(bar)) = &self.display {
            bar.abandon();
        }
    }
}

/// What a running rebuild does, for a bar's prefix: `rebuilding onto node6/spare-3`.
pub(crate) fn target_text(r: &RebuildProgress) -> String {
    let summary = output::rebuild_summary(r);
    // The summary is "<what>: <progress>..."; the bar shows the progress itself.
    match summary.split_once(": ") {
        Some((what, _)) => what.to_owned(),
        None => summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_sizes_per_second() {
        assert_eq!(rate_arg("64MiB"), Ok(64 << 20));
        assert_eq!(rate_arg("64MiB/s"), Ok(64 << 20));
        assert_eq!(rate_arg(" 1G/s "), Ok(1 << 30));
        assert_eq!(rate_arg("4096"), Ok(4096));
        assert!(rate_arg("0").unwrap_err().contains("at least 1 byte"));
        assert!(rate_arg("64MB").unwrap_err().contains("ambiguous"));
        assert!(rate_arg("fast").is_err());
        assert!(rate_arg("/s").is_err());
    }

    fn rebuild(column: u32, kind: RebuildKind, component: &str, running: bool) -> RebuildProgress {
        RebuildProgress {
            column,
            kind,
            node_id: "node6".into(),
            component_id: component.into(),
            running,
            completed: !running,
            stripes_total: 10,
            ..RebuildProgress::default()
        }
    }

    fn volume_with(rebuilds: Vec<RebuildProgress>) -> VolumeInfo {
        VolumeInfo {
            name: "v".into(),
            id: "id".into(),
            level: dagraid_client::RaidLevel::Raid5,
            columns: 3,
            stripe_unit_bytes: 65536,
            block_size: 4096,
            size_bytes: 1 << 20,
            state: dagraid_client::VolumeState::Reconstructing,
            components: Vec::new(),
            counters: Default::default(),
            resync: None,
            parity_map: None,
            assembly: Default::default(),
            lost_bytes: 0,
            lost_ranges: 0,
            rebuilds,
            rebuild_waiting: None,
            parity_job: None,
            spares_available: 0,
        }
    }

    #[test]
    fn the_tracked_rebuild_is_the_one_started_not_an_older_one_of_the_column() {
        let v = volume_with(vec![
            rebuild(2, RebuildKind::Spare, "spare-old", false),
            rebuild(1, RebuildKind::Spare, "spare-x", true),
            rebuild(2, RebuildKind::Copyback, "c2-r", true),
            rebuild(2, RebuildKind::Spare, "spare-new", true),
        ]);
        let mut t = Tracked::new(2, RebuildKind::Spare);
        let r = t.find(&v).unwrap().clone();
        assert_eq!(r.component_id, "spare-new");
        t.pin(&r);
        // Once pinned, only that component's entry is it, even when another one runs.
        let later = volume_with(vec![rebuild(2, RebuildKind::Spare, "spare-old", true)]);
        assert!(t.find(&later).is_none());
        assert!(
            Tracked::new(2, RebuildKind::InPlace).find(&v).is_none(),
            "another kind is not it"
        );
    }

    #[test]
    fn the_prefix_is_what_the_rebuild_does() {
        let r = rebuild(2, RebuildKind::Spare, "spare-1", true);
        assert_eq!(target_text(&r), "rebuilding onto node6/spare-1");
        let r = rebuild(2, RebuildKind::Copyback, "c2", true);
        assert_eq!(target_text(&r), "copying back to node6/c2");
    }
}
