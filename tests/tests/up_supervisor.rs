//! `dagraid up` keeps its cluster alive (issue 21): on real processes (the `dagraid` binary,
//! whose nodes and coordinator are `dagraid node` / `dagraid coordinator`), a storage node and
//! then the coordinator are killed with -9; `up` restarts each on its address, and vol0 returns
//! to optimal by itself (the node's column re-added, or rebuilt onto the spare) with every byte
//! written before, during and after the outages read back identical.
//!
//! No fixed ports (`--listen 127.0.0.1:0`; the nodes pick theirs), a temporary data directory,
//! a short down-out delay so that whichever way the column comes back, it does so soon. Nothing
//! asserts a duration: every wait is for a state or a line, under a generous deadline.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// Deadline of one wait (a line from `up`, a state of vol0, a CLI call).
const WAIT: Duration = Duration::from_secs(180);

fn dagraid(data_dir: &Path, args: &[&str]) -> Command {
    let bin = dagraid_tests::process::binary("dagraid", "DAGRAID_BIN").unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("DAGRAID_COORDINATOR")
        .env_remove("DAGRAID_TOKEN")
        .env_remove("DAGRAID_BIN_DIR")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs one CLI call to its end.
async fn run(data_dir: &Path, args: &[&str]) -> Output {
    tokio::time::timeout(WAIT, dagraid(data_dir, args).output())
        .await
        .expect("dagraid did not exit in time")
        .unwrap()
}

/// Runs one CLI call that must succeed.
async fn ok(data_dir: &Path, args: &[&str]) -> Output {
    let out = run(data_dir, args).await;
    assert!(
        out.status.success(),
        "dagraid {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// vol0 optimal with every column optimal (no rebuild, re-add or resync left). A call that
/// fails (the coordinator restarting) is "not yet".
async fn vol0_optimal(data_dir: &Path) -> Option<serde_json::Value> {
    let out = run(data_dir, &["status", "vol0", "--json"]).await;
    if !out.status.success() {
        return None;
    }
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let vol0 = &status["volumes"][0];
    let settled = vol0["state"] == "optimal"
        && vol0["components"]
            .as_array()?
            .iter()
            .all(|c| c["state"] == "optimal")
        && vol0["rebuilds"]
            .as_array()
            .is_none_or(|r| r.iter().all(|r| r["running"] != true))
        && vol0["resync"]["running"] != true;
    settled.then_some(status)
}

async fn wait_optimal(data_dir: &Path, after: &str) -> serde_json::Value {
    dagraid_tests::eventually(&format!("vol0 optimal after {after}"), WAIT, || {
        vol0_optimal(data_dir)
    })
    .await
}

/// Writes `bytes` at `offset` through the CLI (from a file).
async fn write(data_dir: &Path, scratch: &Path, offset: u64, bytes: &[u8]) {
    let input = scratch.join(format!("in-{offset}"));
    std::fs::write(&input, bytes).unwrap();
    let offset = offset.to_string();
    ok(
        data_dir,
        &[
            "write",
            "vol0",
            "--offset",
            &offset,
            input.to_str().unwrap(),
        ],
    )
    .await;
}

/// Reads `len` bytes at `offset` through the CLI (into a file).
async fn read(data_dir: &Path, scratch: &Path, offset: u64, len: usize) -> Vec<u8> {
    let output = scratch.join(format!("out-{offset}"));
    let (offset, length) = (offset.to_string(), len.to_string());
    ok(
        data_dir,
        &[
            "read",
            "vol0",
            "--offset",
            &offset,
            "--length",
            &length,
            "-o",
            output.to_str().unwrap(),
        ],
    )
    .await;
    std::fs::read(&output).unwrap()
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(0x9e37_79b9).wrapping_add(seed) >> 13) as u8)
        .collect()
}

struct Up {
    child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
    seen: String,
}

impl Up {
    async fn read_until(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                self.seen.push_str(&line);
                self.seen.push('\n');
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no line with {needle:?} from dagraid up:\n{}", self.seen),
        }
    }

    /// The pid `up`'s table printed for `process` (PROCESS ADDRESS PID METRICS).
    fn pid_of(&self, process: &str) -> u32 {
        self.seen
            .lines()
            .find(|l| l.split_whitespace().next() == Some(process))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid of {process} in:\n{}", self.seen))
    }
}

fn kill(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_restarts_a_killed_node_and_coordinator_and_vol0_heals_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let scratch = dir.path();

    let mut child = dagraid(
        &data,
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--nbd-listen",
            "127.0.0.1:0",
            "--nodes",
            "3",
            "--down-out-delay",
            "5",
        ],
    )
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut up = Up {
        child,
        lines,
        seen: String::new(),
    };
    up.read_until("dagraid up: running").await;

    // Known bytes, read back.
    let a = pattern(3 << 20, 1);
    write(&data, scratch, 0, &a).await;
    assert!(
        read(&data, scratch, 0, a.len()).await == a,
        "first read differs"
    );

    // kill -9 node2: restarted on its address; a write while it is down goes to the others.
    let node2 = up.pid_of("node2");
    let node2_address = up
        .seen
        .lines()
        .find(|l| l.split_whitespace().next() == Some("node2"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_owned();
    kill(node2, rustix::process::Signal::KILL);
    let b = pattern(2 << 20, 2);
    write(&data, scratch, 16 << 20, &b).await;
    let restarted = up.read_until("dagraid up: node2 restarted").await;
    assert!(
        restarted.ends_with(&format!("on {node2_address}")),
        "{restarted}\n{}",
        up.seen
    );
    assert!(
        up.seen.contains(&format!(
            "dagraid up: node2 (pid {node2}) exited: killed by signal 9 (SIGKILL); restarting it in"
        )),
        "{}",
        up.seen
    );
    wait_optimal(&data, "node2's restart").await;
    assert!(
        read(&data, scratch, 0, a.len()).await == a,
        "a differs after node2"
    );
    assert!(
        read(&data, scratch, 16 << 20, b.len()).await == b,
        "b differs after node2"
    );

    // kill -9 the coordinator: restarted on its address (the cluster file still names it),
    // vol0 assembled again by itself.
    let coordinator = up.pid_of("coordinator");
    kill(coordinator, rustix::process::Signal::KILL);
    up.read_until("dagraid up: coordinator restarted").await;
    assert!(
        up.seen.contains(&format!(
            "dagraid up: coordinator (pid {coordinator}) exited: killed by signal 9 (SIGKILL); restarting it in"
        )),
        "{}",
        up.seen
    );
    let status = wait_optimal(&data, "the coordinator's restart").await;
    assert_eq!(status["volumes"][0]["name"], "vol0");
    assert!(
        read(&data, scratch, 0, a.len()).await == a,
        "a differs at the end"
    );
    assert!(
        read(&data, scratch, 16 << 20, b.len()).await == b,
        "b differs at the end"
    );
    let c = pattern(1 << 20, 3);
    write(&data, scratch, 40 << 20, &c).await;
    assert!(
        read(&data, scratch, 40 << 20, c.len()).await == c,
        "c differs"
    );

    // `dagraid status` says what the supervisor did.
    let out = ok(&data, &["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("node2 exited 1 times, restarted 1 times"),
        "{text}"
    );
    assert!(
        text.contains("coordinator exited 1 times, restarted 1 times"),
        "{text}"
    );

    // A clean stop.
    kill(up.child.id().unwrap(), rustix::process::Signal::TERM);
    up.read_until("dagraid up: stopped").await;
    let status = tokio::time::timeout(WAIT, up.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", up.seen);
}
