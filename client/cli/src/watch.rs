//! `dagraid status --watch`: the status again every interval until Ctrl-C.
//!
//! On a terminal the status is redrawn in place (indicatif), each running rebuild as a bar
//! under its volume; otherwise each look is printed as a block after a timestamp line (with
//! `--json`, one JSON object per line), so that a log or a pipe keeps every one. A look that
//! fails after the first (a coordinator restarting) is shown and the watch goes on; a first
//! one that fails (no such volume, no coordinator) ends it with the error.

use std::future::Future;
use std::io::IsTerminal as _;
use std::time::{Duration, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::rebuild::{bar_style, target_text, update_bar};
use super::{fetch_status, output};
use dagraid_client::{Client, ClusterInfo, VolumeInfo};

/// `--watch`'s settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch {
    /// Between two looks.
    pub interval: Duration,
    /// Stop after this many looks (tests); `None`: until interrupted.
    pub count: Option<u64>,
}

/// Runs the watch until `shutdown` (Ctrl-C, SIGTERM: exit 0) or `count` looks.
pub(crate) async fn watch(
    json: bool,
    client: &Client,
    volume: Option<&str>,
    settings: Watch,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut view = if !json && std::io::stdout().is_terminal() {
        View::Terminal(Screen::new())
    } else {
        View::Blocks { json, shown: 0 }
    };
    let mut looks: u64 = 0;
    loop {
        let fetched = tokio::select! {
            _ = &mut shutdown => break,
            fetched = fetch_status(client, volume) => fetched,
        };
        match fetched {
            Ok((cluster, volumes)) => view.show(volume.is_none().then_some(&cluster), &volumes),
            // The first look decides whether there is anything to watch at all.
            Err(e) if looks == 0 => return Err(e),
            Err(e) => view.show_error(&format!("{e:#}")),
        }
        looks += 1;
        if settings.count.is_some_and(|n| looks >= n) {
            break;
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(settings.interval) => {}
        }
    }
    view.leave();
    Ok(())
}

enum View {
    /// Printed blocks, one per look.
    Blocks { json: bool, shown: u64 },
    /// Redrawn in place.
    Terminal(Screen),
}

impl View {
    fn show(&mut self, cluster: Option<&ClusterInfo>, volumes: &[VolumeInfo]) {
        let at = utc_timestamp(SystemTime::now());
        match self {
            View::Blocks { json: true, .. } => {
                let mut doc = match cluster {
                    Some(c) => output::status_json(c, volumes),
                    None => serde_json::json!({
                        "volumes": volumes.iter().map(output::volume_json).collect::<Vec<_>>(),
                    }),
                };
                doc["at"] = serde_json::Value::String(at);
                println!("{doc}");
            }
            View::Blocks { json: false, shown } => {
                if *shown > 0 {
                    println!();
                }
                *shown += 1;
                println!("--- {at} ---");
                print!("{}", output::status_text(cluster, volumes));
            }
            View::Terminal(screen) => screen.draw(&at, cluster, volumes),
        }
    }

    fn show_error(&mut self, error: &str) {
        let at = utc_timestamp(SystemTime::now());
        match self {
            View::Blocks { json: true, .. } => {
                println!("{}", serde_json::json!({ "at": at, "error": error }));
            }
            View::Blocks { json: false, shown } => {
                if *shown > 0 {
                    println!();
                }
                *shown += 1;
                println!("--- {at} ---");
                println!("error: {error}");
            }
            View::Terminal(screen) => screen.draw_error(&at, error),
        }
    }

    fn leave(self) {
        if let View::Terminal(screen) = self {
            screen.leave();
        }
    }
}

/// What one item of the screen is, to tell whether the next look has the same shape.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Text(usize),
    Rebuild {
        volume: String,
        column: u32,
        kind: &'static str,
        component: String,
    },
}

/// The terminal view: text blocks and rebuild bars in a [`MultiProgress`], updated in place
/// while the shape stays the same, laid anew when it changes.
struct Screen {
    multi: MultiProgress,
    items: Vec<(Key, ProgressBar)>,
}

impl Screen {
    fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            items: Vec::new(),
        }
    }

    fn text_bar(&self) -> ProgressBar {
        let bar = ProgressBar::new(1);
        bar.set_style(ProgressStyle::with_template("{msg}").expect("the template is valid"));
        bar
    }

    fn draw(&mut self, at: &str, cluster: Option<&ClusterInfo>, volumes: &[VolumeInfo]) {
        // The blocks, each running rebuild as a bar after its volume's block.
        enum Item<'a> {
            Text(String),
            Bar(&'a dagraid_client::RebuildProgress),
        }
        let mut items: Vec<(Key, Item<'_>)> = Vec::new();
        let mut header = format!("dagraid status at {at} (Ctrl-C ends)\n");
        if let Some(c) = cluster {
            header.push_str(&output::cluster_status(c));
            if volumes.is_empty() {
                header.push_str("\nno volumes\n");
            }
        }
        let mut text = header;
        for v in volumes {
            let (head, tail) = output::volume_status_parts(v, true);
            text.push('\n');
            text.push_str(&head);
            items.push((
                Key::Text(items.len()),
                Item::Text(std::mem::take(&mut text)),
            ));
            for r in v.rebuilds.iter().filter(|r| r.running) {
                items.push((
                    Key::Rebuild {
                        volume: v.name.clone(),
                        column: r.column,
                        kind: r.kind.as_str(),
                        component: r.component_id.clone(),
                    },
                    Item::Bar(r),
                ));
            }
            // The notes after the rebuilds (waiting, spares, assembly) come after the bars.
            text = tail;
        }
        if !text.is_empty() {
            items.push((Key::Text(items.len()), Item::Text(text)));
        }
        let same_shape = items.len() == self.items.len()
            && items.iter().zip(&self.items).all(|((a, _), (b, _))| a == b);
        if !same_shape {
            for (_, bar) in self.items.drain(..) {
                self.multi.remove(&bar);
            }
            for (key, item) in &items {
                let bar = match item {
                    Item::Text(_) => self.text_bar(),
                    Item::Bar(_) => {
                        let bar = ProgressBar::new(0);
                        bar.set_style(bar_style());
                        bar
                    }
                };
                let bar = self.multi.add(bar);
                self.items.push((key.clone(), bar));
            }
        }
        for ((_, item), (_, bar)) in items.iter().zip(&self.items) {
            match item {
                Item::Text(text) => bar.set_message(text.trim_end().to_owned()),
                Item::Bar(r) => {
                    bar.set_prefix(format!("  column {}: {}", r.column, target_text(r)));
                    update_bar(bar, r);
                }
            }
        }
    }

    fn draw_error(&mut self, at: &str, error: &str) {
        for (_, bar) in self.items.drain(..) {
            self.multi.remove(&bar);
        }
        let bar = self.multi.add(self.text_bar());
        bar.set_message(format!(
            "dagraid status at {at} (Ctrl-C ends)\nerror: {error}"
        ));
        self.items.push((Key::Text(usize::MAX), bar));
    }

    /// Leaves the last look on the screen.
    fn leave(self) {
        for (_, bar) in &self.items {
            bar.abandon();
        }
    }
}

/// `2026-12-06 21:40:05 UTC`, from the system clock (days to a civil date: Howard Hinnant's
/// `civil_from_days`).
pub(crate) fn utc_timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_utc() {
        let at = |s: u64| utc_timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_796_594_405), "2026-12-06 22:00:05 UTC");
        assert_eq!(at(4_107_542_399), "2100-02-28 23:59:59 UTC");
    }
}
