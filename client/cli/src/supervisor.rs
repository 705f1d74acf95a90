//! The supervisor of `dagraid up`: when a child that died is started again, when it is given up
//! on, and the state file (`<data-dir>/up-state.json`) that `dagraid status` reads.
//!
//! Policy ([`RestartPolicy`], the constants below): a child that exits is started again after a
//! back-off that doubles from its first delay up to [`MAX_BACKOFF`]; a child that ran
//! [`STABLE_AFTER`] before it exited starts over from the first delay. A child that exited
//! [`GIVE_UP_EXITS`] times within [`GIVE_UP_WINDOW`] is given up on: it stays down, `up` says so
//! and keeps the others running, and `dagraid status` names it. A restart that fails (the child
//! exits before it is ready) counts as an exit.
//!
//! The first delay of a storage node, [`NODE_FIRST_BACKOFF`], is longer than the coordinator's
//! rule for a node gone (`--gone-after-ms`, 3 s, plus a health check): a node that died is found
//! gone before it comes back, so its failed column is re-added from the regions written while it
//! was away (docs/REBUILD.md, "Re-add") rather than waiting for the down-out delay and a full
//! rebuild onto the spare. The coordinator's is short ([`COORDINATOR_FIRST_BACKOFF`]): while it
//! is down, no volume is served.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// First restart delay of the coordinator.
pub const COORDINATOR_FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// First restart delay of a storage node (longer than the coordinator's gone rule, see the
/// module doc).
pub const NODE_FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest delay between two restarts; the delay doubles up to it.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long before it exited was healthy: its delay starts over.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Exits within [`GIVE_UP_WINDOW`] after which a child is given up on.
pub const GIVE_UP_EXITS: usize = 5;
/// See [`GIVE_UP_EXITS`].
pub const GIVE_UP_WINDOW: Duration = Duration::from_secs(600);
/// Name of the state file in the data directory.
pub const STATE_FILE: &str = "up-state.json";

/// When a child that exited is started again, and when it is given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart (and after a stable run).
    pub first_backoff: Duration,
    /// The longest delay.
    pub max_backoff: Duration,
    /// A run at least this long resets the delay.
    pub stable_after: Duration,
    /// Exits within `give_up_window` that make the supervisor give up.
    pub give_up_exits: usize,
    /// See `give_up_exits`.
    pub give_up_window: Duration,
}

impl RestartPolicy {
    /// The policy of a child whose first restart waits `first_backoff`; the rest is the
    /// documented constants.
    pub fn with_first_backoff(first_backoff: Duration) -> Self {
        Self {
            first_backoff,
            max_backoff: MAX_BACKOFF.max(first_backoff),
            stable_after: STABLE_AFTER,
            give_up_exits: GIVE_UP_EXITS,
            give_up_window: GIVE_UP_WINDOW,
        }
    }
}

/// What to do about a child that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    Restart {
        /// The back-off.
        after: Duration,
    },
    /// Leave it down: it exited too often.
    GiveUp,
}

/// The restart history of one child under a [`RestartPolicy`]. Time is passed in, so the
/// policy is tested without waiting.
#[derive(Debug, Clone)]
pub struct Restarts {
    policy: RestartPolicy,
    /// When it exited, within the give-up window.
    recent: VecDeque<Instant>,
    next_backoff: Duration,
    exits: u64,
}

impl Restarts {
    /// No exit yet.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            recent: VecDeque::new(),
            next_backoff: policy.first_backoff,
            exits: 0,
        }
    }

    /// The child, started at `started`, exited (or failed to start) at `now`.
    pub fn on_exit(&mut self, started: Instant, now: Instant) -> Decision {
        self.exits += 1;
        if now.saturating_duration_since(started) >= self.policy.stable_after {
            self.next_backoff = self.policy.first_backoff;
        }
        self.recent.push_back(now);
        while let Some(&first) = self.recent.front() {
            if now.saturating_duration_since(first) >= self.policy.give_up_window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.policy.give_up_exits {
            return Decision::GiveUp;
        }
        let after = self.next_backoff;
        self.next_backoff = (after * 2).min(self.policy.max_backoff);
        Decision::Restart { after }
    }

    /// Exits within the give-up window.
    pub fn recent_exits(&self) -> usize {
        self.recent.len()
    }

    /// Every exit so far.
    pub fn exits(&self) -> u64 {
        self.exits
    }

    /// The policy.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }
}

/// Where a supervised child stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChildState {
    /// Running (started, or restarted and ready).
    Running,
    /// Exited; waiting for its back-off, or starting again.
    Restarting,
    /// Exited too often: left down until `dagraid up` is started again.
    GivenUp,
}

impl ChildState {
    /// As `dagraid status` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildState::Running => "running",
            ChildState::Restarting => "restarting",
            ChildState::GivenUp => "given up",
        }
    }
}

/// One child in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRecord {
    /// `coordinator`, `node1`, ...
    pub name: String,
    /// Its current (or last) process id.
    pub pid: u32,
    /// The address it serves on (the same across restarts).
    pub address: String,
    /// Where it stands.
    pub state: ChildState,
    /// Times it exited (or failed to restart) since `dagraid up` started.
    pub exits: u64,
    /// Times it was started again and got ready.
    pub restarts: u64,
    /// Its log file.
    pub log: PathBuf,
}

/// `<data-dir>/up-state.json`: what `dagraid up` supervises, rewritten on every change and
/// removed at a clean stop. Version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// Format version (1).
    pub version: u32,
    /// The `dagraid up` process; a file whose process is gone is stale.
    pub pid: u32,
    /// The coordinator URL of this cluster (as in cluster.toml).
    pub coordinator: String,
    /// Exits within this many seconds count towards giving up.
    pub give_up_window_secs: u64,
    /// The coordinator first, then the nodes.
    pub children: Vec<ChildRecord>,
}

impl StateFile {
    /// Its path in `data_dir`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(STATE_FILE)
    }

    /// Writes it whole (a temporary file renamed over it: a reader never sees half of it).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("the state serialises");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The state of the `dagraid up` running on this data directory: `None` when there is no
    /// file, it cannot be read, or its `dagraid up` is no longer running.
    pub fn load_live(data_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(Self::path_in(data_dir)).ok()?;
        let state: Self = serde_json::from_str(&text).ok()?;
        if state.version != 1 || !process_alive(state.pid) {
            return None;
        }
        Some(state)
    }

    /// What `dagraid status` adds about the local cluster: a line per child that exited or was
    /// given up on; nothing when every child runs as it was started.
    pub fn status_lines(&self, data_dir: &Path) -> Vec<String> {
        let mut lines = Vec::new();
        for c in &self.children {
            match c.state {
                ChildState::GivenUp => lines.push(format!(
                    "dagraid up (pid {}): gave up on {}: it exited {} times ({} within {} min); it stays down until `dagraid up` starts again; its log: {}",
                    self.pid,
                    c.name,
                    c.exits,
                    GIVE_UP_EXITS,
                    self.give_up_window_secs / 60,
                    c.log.display()
                )),
                ChildState::Restarting => lines.push(format!(
                    "dagraid up (pid {}): {} exited {} times, restarting (its log: {})",
                    self.pid,
                    c.name,
                    c.exits,
                    c.log.display()
                )),
                ChildState::Running if c.exits > 0 => lines.push(format!(
                    "dagraid up (pid {}): {} exited {} times, restarted {} times, running (pid {}, {})",
                    self.pid, c.name, c.exits, c.restarts, c.pid, c.address
                )),
                ChildState::Running => {}
            }
        }
        if !lines.is_empty() {
            lines.insert(
                0,
                format!("local cluster in {} (dagraid up):", data_dir.display()),
            );
        }
        lines
    }
}

fn process_alive(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy::with_first_backoff(Duration::from_secs(1))
    }

    #[test]
    fn the_back_off_doubles_up_to_its_limit() {
        let mut r = Restarts::new(RestartPolicy {
            give_up_exits: 100,
            ..policy()
        });
        let t0 = Instant::now();
        let delays: Vec<_> = (0..7)
            .map(|i| {
                let at = t0 + Duration::from_secs(i);
                match r.on_exit(at, at) {
                    Decision::Restart { after } => after.as_secs(),
                    Decision::GiveUp => panic!("gave up"),
                }
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(r.exits(), 7);
    }

    #[test]
    fn a_stable_run_resets_the_back_off() {
        let mut r = Restarts::new(policy());
        let t0 = Instant::now();
        assert_eq!(
            r.on_exit(t0, t0),
            Decision::Restart {
                after: Duration::from_secs(1)
            }
        );
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            r.on_exit(t1, t1),
            Decision::Restart {
                after: Duration::from_secs(2)
            }
        );
        // Ran a minute: healthy again.
        let t2 = t1 + Duration::from_secs(10);
        let t3 = t2 + STABLE_AFTER;
        assert_eq!(
            r.on_exit(t2, t3),
            Decision::Restart {
                after: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn five_exits_within_ten_minutes_give_up() {
        let mut r = Restarts::new(policy());
        let t0 = Instant::now();
        for i in 0..GIVE_UP_EXITS as u64 - 1 {
            let at = t0 + Duration::from_secs(i * 60);
            assert!(matches!(r.on_exit(at, at), Decision::Restart { .. }));
        }
        let last = t0 + Duration::from_secs(4 * 60);
        assert_eq!(r.on_exit(last, last), Decision::GiveUp);
        assert_eq!(r.recent_exits(), GIVE_UP_EXITS);
    }

    #[test]
    fn exits_spread_over_more_than_the_window_never_give_up() {
        let mut r = Restarts::new(policy());
        let t0 = Instant::now();
        // One exit every 3 minutes: never five within 10 minutes.
        for i in 0..20u64 {
            let at = t0 + Duration::from_secs(i * 180);
            assert!(
                matches!(r.on_exit(at, at), Decision::Restart { .. }),
                "exit {i}"
            );
            assert!(r.recent_exits() < GIVE_UP_EXITS);
        }
        assert_eq!(r.exits(), 20);
    }

    #[test]
    fn the_state_file_round_trips_and_a_dead_up_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = StateFile {
            version: 1,
            pid: std::process::id(),
            coordinator: "http://127.0.0.1:7070".into(),
            give_up_window_secs: GIVE_UP_WINDOW.as_secs(),
            children: vec![ChildRecord {
                name: "node3".into(),
                pid: 42,
                address: "127.0.0.1:4000".into(),
                state: ChildState::GivenUp,
                exits: 5,
                restarts: 4,
                log: dir.path().join("logs/node3.log"),
            }],
        };
        let path = StateFile::path_in(dir.path());
        state.save(&path).unwrap();
        let back = StateFile::load_live(dir.path()).unwrap();
        assert_eq!(back, state);
        let lines = back.status_lines(dir.path()).join("\n");
        assert!(
            lines.contains("gave up on node3: it exited 5 times (5 within 10 min)"),
            "{lines}"
        );
        assert!(lines.contains("node3.log"), "{lines}");

        // A pid no process has: the file is stale.
        state.pid = i32::MAX as u32;
        state.save(&path).unwrap();
        assert!(StateFile::load_live(dir.path()).is_none());
        std::fs::write(&path, "not json").unwrap();
        assert!(StateFile::load_live(dir.path()).is_none());
    }
}
