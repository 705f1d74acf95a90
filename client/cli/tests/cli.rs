//! The built `dagraid` binary: help, argument errors, every verb against a fake coordinator,
//! the cluster file, and `dagraid up` supervising stand-in node and coordinator scripts (start
//! order, listening lines, a child killed with -9 restarted on its address, one that keeps
//! crashing given up on and named by `dagraid status`, stop order, start-up failures).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use dagraid_cli::cluster_file::ClusterFile;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dagraid");
const TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "cli-token";

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("DAGRAID_COORDINATOR")
        .env_remove("DAGRAID_TOKEN")
        .env_remove("DAGRAID_BIN_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run_cmd(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn dagraid");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).await.unwrap();
        drop(pipe);
    }
    tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("dagraid did not exit in time")
        .unwrap()
}

async fn run(args: &[&str]) -> Output {
    run_cmd(command(args), None).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit 1 and exactly one line on stderr, `dagraid: error: ...` naming `needle`.
#[track_caller]
fn assert_one_line_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("dagraid: error: "), "{err}");
    assert!(err.contains(needle), "{err:?} does not mention {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[track_caller]
fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// `dagraid node` and `dagraid coordinator` take exactly their binaries' flags, before the
/// tool's global options are parsed (they share names like --data-dir).
#[tokio::test]
async fn node_and_coordinator_subcommands_take_the_servers_flags() {
    let out = run(&["node", "--help"]).await;
    assert_success(&out);
    let help = stdout(&out);
    for flag in [
        "--listen",
        "--data-dir",
        "--node-id",
        "--cluster-id",
        "--fault-injection",
        "--metrics-listen",
    ] {
        assert!(help.contains(flag), "{help}");
    }
    assert!(help.contains("dagraid node"), "{help}");
    let out = run(&["coordinator", "--help"]).await;
    assert_success(&out);
    let help = stdout(&out);
    for flag in [
        "--listen",
        "--data-dir",
        "--node <ID=ADDR>",
        "--down-out-delay-ms",
        "--gone-after-ms",
    ] {
        assert!(help.contains(flag), "{help}");
    }
    // Bad input: the server's own one-line errors, never a panic.
    let out = run(&["node", "--listen", "127.0.0.1:0"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dagraid-node: error: configuration: --data-dir is required")
            || stderr(&out).contains("--data-dir is required"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let out = run(&["node", "--no-such-flag"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(&[
        "coordinator",
        "--data-dir",
        "/nonexistent/x",
        "--node",
        "bad",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("ID=HOST:PORT"), "{}", stderr(&out));
    // Not first: a clear error saying how.
    let out = run(&["--json", "node"]).await;
    assert_one_line_error(&out, "must come first");
}

#[tokio::test]
async fn help_explains_every_verb() {
    let out = run(&["--help"]).await;
    assert_success(&out);
    let help = stdout(&out);
    for word in [
        "up",
        "node",
        "coordinator",
        "volume",
        "status",
        "write",
        "read",
        "fail",
        "--coordinator",
        "--token",
        "--data-dir",
        "--json",
        "KiB",
        "GiB",
    ] {
        assert!(
            help.contains(word),
            "--help does not mention {word}:\n{help}"
        );
    }
    let verbs: &[(&[&str], &[&str])] = &[
        (
            &["up"],
            &[
                "--nodes",
                "--listen",
                "--down-out-delay",
                "Ctrl-C",
                "cluster.toml",
                "DAGRAID_BIN_DIR",
                "The spare node",
                "The supervisor",
                "given up on",
                "The data directory",
                "up-state.json",
                "logs/NAME.log",
            ],
        ),
        (
            &["volume", "create"],
            &[
                "--level",
                "--size",
                "--columns",
                "--stripe-unit",
                "--block-size",
                "--nodes",
            ],
        ),
        (&["volume", "list"], &["List"]),
        (&["volume", "delete"], &["Delete"]),
        (
            &["status"],
            &["raidctl -s", "degraded", "--watch", "--interval", "Ctrl-C"],
        ),
        (
            &["volume", "rebuild"],
            &[
                "--column",
                "--in-place",
                "--spare",
                "--rate",
                "--wait",
                "64MiB",
            ],
        ),
        (
            &["volume", "copyback"],
            &["--column", "--to", "--rate", "--wait"],
        ),
        (&["write"], &["--offset", "stdin", "-"]),
        (&["read"], &["--offset", "--length", "--output"]),
        (&["fail"], &["COLUMN", "raidctl -f"]),
    ];
    for (verb, words) in verbs {
        let mut argv = verb.to_vec();
        argv.push("--help");
        let out = run(&argv).await;
        assert_success(&out);
        let help = stdout(&out);
        for word in *words {
            assert!(help.contains(word), "{verb:?} --help lacks {word}:\n{help}");
        }
    }
}

#[tokio::test]
async fn argument_errors_exit_2_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["volume", "create", "v", "--size", "1GB"], "ambiguous"),
        (&["volume", "create", "v", "--size", "1.5GiB"], "fraction"),
        (
            &[
                "volume", "create", "v", "--size", "1GiB", "--level", "raid3",
            ],
            "raid3",
        ),
        (&["read", "vol0", "--offset", "0"], "--length"),
        (
            &["read", "vol0", "--offset", "x", "--length", "1"],
            "invalid size",
        ),
        (&["fail", "vol0", "one"], "COLUMN"),
        (&["up", "--nodes", "2"], "--nodes"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (argv, needle) in cases {
        let out = run(argv).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {err}");
        assert!(err.contains(needle), "{argv:?}: {err}");
    }
}

#[tokio::test]
async fn without_a_coordinator_the_error_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let out = run(&["--data-dir", data_dir, "status"]).await;
    assert_one_line_error(&out, "no coordinator");
    let err = stderr(&out);
    assert!(
        err.contains("--coordinator") && err.contains("dagraid up"),
        "{err}"
    );

    // A cluster file naming a coordinator that is not running.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    ClusterFile::new(format!("http://127.0.0.1:{port}"), "x")
        .save(&ClusterFile::path_in(dir.path()))
        .unwrap();
    let out = run(&["--data-dir", data_dir, "volume", "list"]).await;
    assert_one_line_error(&out, "is `dagraid up` running?");

    let out = run(&["--coordinator", "ftp://h:1", "volume", "list"]).await;
    assert_one_line_error(&out, "invalid endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_against_a_coordinator() {
    let server = common::start(Some(TOKEN), 256 << 10).await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let g = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "--coordinator".to_owned(),
            url.clone(),
            "--token".into(),
            TOKEN.into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    async fn go(argv: Vec<String>) -> Output {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        run(&argv).await
    }

    let out = go(g(&["volume", "list"])).await;
    assert_success(&out);
    assert_eq!(stdout(&out), "no volumes\n");

    let out = go(g(&[
        "volume",
        "create",
        "vol0",
        "--level",
        "raid5",
        "--size",
        "8MiB",
        "--columns",
        "4",
        "--stripe-unit",
        "64KiB",
        "--block-size",
        "4KiB",
    ]))
    .await;
    assert_success(&out);
    assert!(
        stdout(&out).contains("created volume vol0: raid5, 8 MiB, 4 columns"),
        "{}",
        stdout(&out)
    );

    let out = go(g(&["volume", "create", "vol0", "--size", "1MiB"])).await;
    assert_one_line_error(&out, "exists");

    // Write a file of 3 MiB + 5 bytes at an odd offset (many calls), read it back to a file.
    let input: Vec<u8> = (0..(3usize << 20) + 5)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let in_path = dir.path().join("in.bin");
    std::fs::write(&in_path, &input).unwrap();
    let out = go(g(&[
        "write",
        "vol0",
        "--offset",
        "4097",
        in_path.to_str().unwrap(),
    ]))
    .await;
    assert_success(&out);
    assert!(
        stdout(&out).starts_with(&format!("wrote {} bytes", input.len())),
        "{}",
        stdout(&out)
    );
    let out_path = dir.path().join("out.bin");
    let out = go(g(&[
        "read",
        "vol0",
        "--offset",
        "4097",
        "--length",
        &input.len().to_string(),
        "-o",
        out_path.to_str().unwrap(),
    ]))
    .await;
    assert_success(&out);
    assert!(
        std::fs::read(&out_path).unwrap() == input,
        "read back differs"
    );

    // stdin in, stdout out (raw bytes, nothing else).
    let mut cmd = command(&[]);
    cmd.args(g(&["write", "vol0", "--offset", "1MiB", "-"]));
    let out = run_cmd(cmd, Some(b"hello from stdin")).await;
    assert_success(&out);
    let out = go(g(&["read", "vol0", "--offset", "1MiB", "--length", "16"])).await;
    assert_success(&out);
    assert_eq!(out.stdout, b"hello from stdin");
    let mut cmd = command(&[]);
    cmd.args(g(&["write", "vol0", "--offset", "0"]));
    let out = run_cmd(cmd, Some(b"")).await;
    assert_one_line_error(&out, "nothing to write");

    // Status, human and JSON.
    let out = go(g(&["status"])).await;
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.contains("cluster fake: epoch 7, 5 storage nodes (4 reachable)"),
        "{text}"
    );
    assert!(
        text.contains("volume vol0: raid5, 8 MiB, 4 columns, stripe unit 64 KiB"),
        "{text}"
    );
    assert!(text.contains("COLUMN  NODE"), "{text}");
    let out = go(g(&["fail", "vol0", "2"])).await;
    assert_success(&out);
    assert!(stdout(&out).contains("degraded"), "{}", stdout(&out));
    let out = go(g(&["status", "vol0", "--json"])).await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &json["volumes"][0];
    assert_eq!(v["name"], "vol0");
    assert_eq!(v["state"], "degraded");
    assert_eq!(v["components"].as_array().unwrap().len(), 4);
    assert_eq!(v["components"][2]["column"], 2);
    assert_eq!(v["components"][2]["node"], "node3");
    assert_eq!(v["components"][2]["state"], "failed");
    assert_eq!(v["components"][0]["state"], "optimal");
    assert_eq!(json["cluster"]["nodes"][4]["reachable"], false);
    assert_eq!(json["cluster"]["nodes"][4]["missed_checks"], 3);
    assert_eq!(json["cluster"]["nodes"][0]["missed_checks"], 0);
    let out = go(g(&["fail", "vol0", "1"])).await;
    assert_one_line_error(&out, "would exceed");

    let out = go(g(&["volume", "list", "--json"])).await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["volumes"][0]["level"], "raid5");
    assert_eq!(json["volumes"][0]["size_bytes"], 8 << 20);

    // Spares: sized after the largest column by default, listed, refused while in use.
    let out = go(g(&["spare", "list"])).await;
    assert_success(&out);
    assert_eq!(stdout(&out), "no spares\n");
    let out = go(g(&["spare", "add", "--node", "node5"])).await;
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        "added spare spare-0000000000000001 on node5: 2 MiB (512 blocks of 4 KiB)\n"
    );
    server
        .knobs
        .spares_taken
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let out = go(g(&[
        "spare",
        "add",
        "--node",
        "node4",
        "--size",
        "1000",
        "--block-size",
        "512",
        "--json",
    ]))
    .await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["id"], "spare-0000000000000002");
    assert_eq!(
        (json["size_bytes"].as_u64(), json["block_count"].as_u64()),
        (Some(1024), Some(2))
    );
    let out = go(g(&["spare", "list"])).await;
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("ID  ") && lines[0].ends_with("USED BY        REACHABLE"),
        "{text}"
    );
    assert!(
        lines[1].contains("node5  2 MiB") && lines[1].contains("free") && lines[1].ends_with("yes"),
        "{text}"
    );
    assert!(lines[2].contains("vol0 column 1"), "{text}");
    let out = go(g(&["spare", "list", "--json"])).await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["spares"][0]["node"], "node5");
    assert_eq!(json["spares"][0]["volume"], serde_json::Value::Null);
    assert_eq!(json["spares"][1]["volume"], "vol0");
    assert_eq!(json["spares"][1]["column"], 1);
    let out = go(g(&["spare", "remove", "spare-0000000000000002"])).await;
    assert_one_line_error(&out, "is in use");
    assert!(
        stderr(&out).contains("column 1 of volume \"vol0\""),
        "{}",
        stderr(&out)
    );
    let out = go(g(&["spare", "remove", "spare-0000000000000001"])).await;
    assert_success(&out);
    assert_eq!(stdout(&out), "removed spare spare-0000000000000001\n");
    let out = go(g(&["spare", "remove", "spare-0000000000000001"])).await;
    assert_one_line_error(&out, "unknown spare");
    let out = go(g(&[
        "spare",
        "add",
        "--node",
        "elsewhere",
        "--size",
        "1MiB",
    ]))
    .await;
    assert_one_line_error(&out, "unknown storage node");

    // Errors are one line with the coordinator's message.
    let out = go(g(&["read", "nope", "--offset", "0", "--length", "1"])).await;
    assert_one_line_error(&out, "unknown volume");
    assert!(stderr(&out).contains("\"nope\""), "{}", stderr(&out));
    let out = go(g(&["read", "vol0", "--offset", "8MiB", "--length", "1"])).await;
    assert_one_line_error(&out, "out of range");
    let out = run(&["--coordinator", &url, "volume", "list"]).await;
    assert_one_line_error(&out, "unauthenticated");
    assert!(stderr(&out).contains("--token"), "{}", stderr(&out));
    let out = run(&["--coordinator", &url, "--token", "wrong", "volume", "list"]).await;
    assert_one_line_error(&out, "unauthenticated");

    let out = go(g(&["volume", "delete", "vol0"])).await;
    assert_success(&out);
    assert_eq!(stdout(&out), "deleted volume vol0\n");
    let out = go(g(&["volume", "delete", "vol0"])).await;
    assert_one_line_error(&out, "unknown volume");
    // Without a volume, a spare needs its size.
    let out = go(g(&["spare", "add", "--node", "node5"])).await;
    assert_one_line_error(&out, "give --size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_find_the_cluster_through_the_cluster_file_or_the_environment() {
    let server = common::start(Some(TOKEN), 1 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    ClusterFile::new(server.url(), TOKEN)
        .save(&ClusterFile::path_in(dir.path()))
        .unwrap();
    let out = run(&[
        "--data-dir",
        data_dir,
        "volume",
        "create",
        "v",
        "--size",
        "1MiB",
    ])
    .await;
    assert_success(&out);
    let out = run(&["volume", "list", "--data-dir", data_dir]).await;
    assert_success(&out);
    assert!(stdout(&out).contains("\nv "), "{}", stdout(&out));

    // The environment, with no cluster file around.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = command(&[
        "--data-dir",
        elsewhere.path().to_str().unwrap(),
        "status",
        "v",
    ]);
    cmd.env("DAGRAID_COORDINATOR", server.url())
        .env("DAGRAID_TOKEN", TOKEN);
    let out = run_cmd(cmd, None).await;
    assert_success(&out);
    assert!(
        stdout(&out).starts_with("volume v: raid5, 1 MiB"),
        "{}",
        stdout(&out)
    );
}

// --- dagraid up, with stand-in scripts for the node and coordinator binaries ---

const NODE_SCRIPT: &str = r#"#!/bin/sh
echo "$@" >> "$FAKE_RECORD/args-node"
trap 'echo "node $$" >> "$FAKE_RECORD/stops"; exit 0' TERM
echo "starting up" >&2
echo "dagraid-node listening on 127.0.0.1:$$"
echo "dagraid-node metrics on http://127.0.0.1:$$/metrics"
while :; do sleep 1 & wait $!; done
"#;

const COORDINATOR_SCRIPT: &str = r#"#!/bin/sh
echo "$@" > "$FAKE_RECORD/args-coordinator"
env > "$FAKE_RECORD/env-coordinator"
trap 'echo coordinator-term >> "$FAKE_RECORD/stops"; sleep 0.3; echo coordinator-exit >> "$FAKE_RECORD/stops"; exit 0' TERM
echo "dagraid-coordinator listening on $FAKE_COORDINATOR_ADDR"
echo "dagraid-coordinator metrics on http://127.0.0.1:9/metrics"
while :; do sleep 1 & wait $!; done
"#;

struct UpFixture {
    _dir: tempfile::TempDir,
    bin_dir: PathBuf,
    record: PathBuf,
    data_dir: PathBuf,
}

impl UpFixture {
    fn new(node_script: &str, coordinator_script: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin_dir = dir.path().join("bin");
        let record = dir.path().join("record");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&bin_dir).unwrap();
        std::fs::create_dir_all(&record).unwrap();
        for (name, text) in [
            ("dagraid-node", node_script),
            ("dagraid-coordinator", coordinator_script),
        ] {
            let path = bin_dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self {
            _dir: dir,
            bin_dir,
            record,
            data_dir,
        }
    }

    fn command(&self, coordinator_addr: &str, extra: &[&str]) -> Command {
        let mut cmd = command(&["--data-dir", self.data_dir.to_str().unwrap(), "up"]);
        // The stand-in coordinator below serves plaintext gRPC.
        cmd.args(extra)
            .arg("--insecure")
            .env("DAGRAID_BIN_DIR", &self.bin_dir)
            .env("FAKE_RECORD", &self.record)
            .env("FAKE_COORDINATOR_ADDR", coordinator_addr)
            .env("OTEL_SERVICE_NAME", "from-the-parent");
        cmd
    }

    fn recorded(&self, name: &str) -> String {
        std::fs::read_to_string(self.record.join(name)).unwrap_or_default()
    }
}

fn sig(pid: u32, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), signal)
        .unwrap();
}

/// Reads `up`'s stdout until a line contains `needle`; returns everything read.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: &mut String,
    needle: &str,
) {
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "no line with {needle:?}; output so far:\n{seen}"
    );
}

fn pid_of(output: &str, process: &str) -> u32 {
    output
        .lines()
        .find(|l| l.split_whitespace().next() == Some(process))
        // PROCESS ADDRESS PID METRICS
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid of {process} in:\n{output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_supervises_and_stops_in_order() {
    let server = common::start(None, 1 << 20).await;
    let fx = UpFixture::new(NODE_SCRIPT, COORDINATOR_SCRIPT);
    let addr = server.addr.to_string();
    let mut child = fx
        .command(
            &addr,
            &[
                "--nodes",
                "3",
                "--listen",
                "127.0.0.1:0",
                "--restart-delay-ms",
                "50",
            ],
        )
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    read_until(&mut lines, &mut seen, "dagraid up: running").await;
    // What to try, with this executable and this data directory.
    assert!(seen.contains("Try it, in another terminal"), "{seen}");
    assert!(
        seen.contains(&format!(
            "alias dagraid='{BIN} --data-dir {}'",
            fx.data_dir.display()
        )),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("kill -9 {}", pid_of(&seen, "node3"))),
        "{seen}"
    );
    assert!(
        seen.contains("created volume vol0 (raid5, 1 GiB)"),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("coordinator  http://{addr}")),
        "{seen}"
    );
    assert!(
        seen.contains("volume vol0: raid5, 1 GiB, 3 columns"),
        "{seen}"
    );
    for i in 1..=4 {
        assert!(seen.contains(&format!("node{i} ")), "{seen}");
    }
    // A fourth node holds vol0's hot spare, sized for its columns; vol0 is on the other three.
    assert!(
        seen.contains("dagraid up: added spare spare-0000000000000001 on node4"),
        "{seen}"
    );
    assert!(
        seen.contains("node4 holds a hot spare for vol0: a failed column is rebuilt onto it 30 s after it fails"),
        "{seen}"
    );
    // Every process's metrics URL, from its second line.
    assert!(seen.contains("METRICS"), "{seen}");
    assert!(seen.contains("http://127.0.0.1:9/metrics"), "{seen}");

    // The nodes got their flags, the coordinator every node's address and the token.
    let node_args = fx.recorded("args-node");
    let d = fx.data_dir.display();
    for i in 1..=4 {
        let want = format!(
            "--listen 127.0.0.1:0 --data-dir {d}/node{i} --node-id node{i} --cluster-id dagraid --metrics-listen 127.0.0.1:0 --insecure"
        );
        assert!(node_args.lines().any(|l| l == want), "{node_args}");
    }
    let file = ClusterFile::load(&ClusterFile::path_in(&fx.data_dir))
        .unwrap()
        .unwrap();
    assert_eq!(file.coordinator, format!("http://{addr}"));
    assert_eq!(file.token.len(), 64);
    let mode = std::fs::metadata(ClusterFile::path_in(&fx.data_dir))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let coordinator_args = fx.recorded("args-coordinator");
    let node1_pid = pid_of(&seen, "node1");
    assert!(
        coordinator_args.starts_with(&format!(
            "--listen 127.0.0.1:0 --data-dir {d}/coordinator --cluster-id dagraid --node node1=127.0.0.1:{node1_pid} "
        )),
        "{coordinator_args}"
    );
    assert!(
        coordinator_args.contains(&format!(
            "--node node4=127.0.0.1:{}",
            pid_of(&seen, "node4")
        )) && coordinator_args
            .ends_with("--down-out-delay-ms 30000 --nbd-listen 127.0.0.1:10809 --insecure\n"),
        "{coordinator_args}"
    );
    // The token reaches the coordinator through its environment, never its command line.
    assert!(
        !coordinator_args.contains(&file.token),
        "{coordinator_args}"
    );
    assert!(
        fx.recorded("env-coordinator")
            .contains(&format!("DAGRAID_TOKEN={}", file.token))
    );
    assert!(
        fx.recorded("env-coordinator")
            .contains("OTEL_SERVICE_NAME=from-the-parent")
    );
    // The children's stderr is in their logs, the token is not.
    let log = std::fs::read_to_string(fx.data_dir.join("logs/node2.log")).unwrap();
    assert!(log.contains("starting up"), "{log}");
    let log = std::fs::read_to_string(fx.data_dir.join("logs/coordinator.log")).unwrap();
    assert!(!log.contains(&file.token), "{log}");

    // The verbs find this cluster through the data directory alone.
    let out = run(&[
        "--data-dir",
        fx.data_dir.to_str().unwrap(),
        "status",
        "--json",
    ])
    .await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["volumes"][0]["name"], "vol0");

    // A second `up` on the same data directory is refused.
    let out = run_cmd(fx.command(&addr, &["--listen", "127.0.0.1:0"]), None).await;
    assert_one_line_error(&out, "another `dagraid up` is running");

    // A node killed with -9 is restarted, on the address (and metrics address) it had.
    let node2 = pid_of(&seen, "node2");
    sig(node2, rustix::process::Signal::KILL);
    read_until(&mut lines, &mut seen, "dagraid up: node2 restarted").await;
    assert!(
        seen.contains(&format!(
            "dagraid up: node2 (pid {node2}) exited: killed by signal 9 (SIGKILL); restarting it in 50 ms on 127.0.0.1:{node2} (exit 1 of 5 within 10 min before giving up)"
        )),
        "{seen}"
    );
    let node_args = fx.recorded("args-node");
    let want = format!(
        "--listen 127.0.0.1:{node2} --data-dir {d}/node2 --node-id node2 --cluster-id dagraid --metrics-listen 127.0.0.1:{node2} --insecure"
    );
    assert!(node_args.lines().any(|l| l == want), "{node_args}");
    // `dagraid status` says what the supervisor did.
    let out = run(&["--data-dir", fx.data_dir.to_str().unwrap(), "status"]).await;
    assert_success(&out);
    assert!(
        stdout(&out).contains("node2 exited 1 times, restarted 1 times, running"),
        "{}",
        stdout(&out)
    );

    // SIGTERM: the coordinator has exited before any node is stopped.
    sig(child.id().unwrap(), rustix::process::Signal::TERM);
    read_until(&mut lines, &mut seen, "dagraid up: stopped").await;
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}\n{seen}");
    let stops = fx.recorded("stops");
    let stops: Vec<&str> = stops.lines().collect();
    // Two lines of the coordinator, one per node: nodes 1, 2 (restarted), 3 and the spare's
    // node4.
    assert_eq!(stops.len(), 6, "{stops:?}");
    assert_eq!(&stops[..2], ["coordinator-term", "coordinator-exit"]);
    assert!(
        stops[2..].iter().all(|l| l.starts_with("node ")),
        "{stops:?}"
    );

    // Run again: the token is reused, vol0 is not created twice.
    let mut child = fx
        .command(&addr, &["--nodes", "3", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    read_until(&mut lines, &mut seen, "dagraid up: running").await;
    assert!(!seen.contains("created volume"), "{seen}");
    assert!(!seen.contains("added spare"), "{seen}");
    assert!(seen.contains("node4 holds a hot spare"), "{seen}");
    let again = ClusterFile::load(&ClusterFile::path_in(&fx.data_dir))
        .unwrap()
        .unwrap();
    assert_eq!(again.token, file.token);
    sig(child.id().unwrap(), rustix::process::Signal::INT);
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// node2 crashes every time, a moment after it is ready; the other nodes run.
const CRASHING_NODE2_SCRIPT: &str = r#"#!/bin/sh
echo "$@" >> "$FAKE_RECORD/args-node"
trap 'echo "node $$" >> "$FAKE_RECORD/stops"; exit 0' TERM
echo "dagraid-node listening on 127.0.0.1:$$"
echo "dagraid-node metrics on http://127.0.0.1:$$/metrics"
case "$*" in
    *"--node-id node2 "*) sleep 0.2; echo "node2: crashing" >&2; exit 7 ;;
esac
while :; do sleep 1 & wait $!; done
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_gives_up_on_a_child_that_keeps_crashing_and_status_says_so() {
    let server = common::start(None, 1 << 20).await;
    let fx = UpFixture::new(CRASHING_NODE2_SCRIPT, COORDINATOR_SCRIPT);
    let addr = server.addr.to_string();
    let mut child = fx
        .command(
            &addr,
            &[
                "--nodes",
                "3",
                "--listen",
                "127.0.0.1:0",
                "--restart-delay-ms",
                "10",
            ],
        )
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    read_until(&mut lines, &mut seen, "giving up on it").await;
    assert!(
        seen.contains("dagraid up: node2 (pid")
            && seen.contains(
                "exited: exit status 7; giving up on it: 5 exits within 10 min; it stays down"
            ),
        "{seen}"
    );
    for exit in 1..=4 {
        assert!(
            seen.contains(&format!(
                "(exit {exit} of 5 within 10 min before giving up)"
            )),
            "{seen}"
        );
    }

    let data = fx.data_dir.to_str().unwrap();
    let out = run(&["--data-dir", data, "status"]).await;
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.contains("gave up on node2: it exited 5 times (5 within 10 min)"),
        "{text}"
    );
    assert!(text.contains("logs/node2.log"), "{text}");
    let out = run(&["--data-dir", data, "status", "--json"]).await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let children = json["local_cluster"]["children"].as_array().unwrap();
    let node2 = children.iter().find(|c| c["name"] == "node2").unwrap();
    assert_eq!(node2["state"], "given-up", "{json}");
    assert_eq!(node2["exits"], 5, "{json}");
    let node1 = children.iter().find(|c| c["name"] == "node1").unwrap();
    assert_eq!(node1["state"], "running", "{json}");

    // The others still stop in order; the state file goes with a clean stop.
    sig(child.id().unwrap(), rustix::process::Signal::TERM);
    read_until(&mut lines, &mut seen, "dagraid up: stopped").await;
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}\n{seen}");
    assert!(!fx.data_dir.join("up-state.json").exists());
    let out = run(&["--data-dir", data, "status"]).await;
    assert!(!stdout(&out).contains("gave up"), "{}", stdout(&out));
}

#[tokio::test]
async fn up_reports_a_child_that_fails_to_start_with_its_stderr() {
    const FAILING_NODE: &str =
        "#!/bin/sh\necho 'boom: cannot open the data directory' >&2\nexit 3\n";
    let fx = UpFixture::new(FAILING_NODE, COORDINATOR_SCRIPT);
    let out = run_cmd(
        fx.command("127.0.0.1:1", &["--listen", "127.0.0.1:0"]),
        None,
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("dagraid: error: node"), "{err}");
    assert!(
        err.contains("exited before it was ready: exit status 3"),
        "{err}"
    );
    assert!(
        err.contains("boom: cannot open the data directory"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn up_stops_the_nodes_when_the_coordinator_fails_to_start() {
    const FAILING_COORDINATOR: &str =
        "#!/bin/sh\necho 'error: address 127.0.0.1:7070 already in use' >&2\nexit 1\n";
    let fx = UpFixture::new(NODE_SCRIPT, FAILING_COORDINATOR);
    let out = run_cmd(fx.command("127.0.0.1:1", &["--nodes", "3"]), None).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("dagraid: error: coordinator"), "{err}");
    assert!(err.contains("already in use"), "{err}");
    // Every node (the three of --nodes and the spare's) was stopped with SIGTERM (the scripts
    // record it), none left behind.
    let stops = fx.recorded("stops");
    assert_eq!(
        stops.lines().filter(|l| l.starts_with("node ")).count(),
        4,
        "{stops}"
    );
}

#[tokio::test]
async fn up_gives_up_on_a_child_that_never_gets_ready() {
    const SILENT_NODE: &str = "#!/bin/sh\necho 'still thinking' >&2\nexec sleep 30\n";
    let fx = UpFixture::new(SILENT_NODE, COORDINATOR_SCRIPT);
    let out = run_cmd(
        fx.command("127.0.0.1:1", &["--nodes", "3", "--start-timeout", "1"]),
        None,
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("did not print its listening line within 1s"),
        "{err}"
    );
    assert!(err.contains("still thinking"), "{err}");
}

#[tokio::test]
async fn up_without_the_binaries_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = command(&[
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "up",
    ]);
    cmd.env("DAGRAID_BIN_DIR", &empty);
    let out = run_cmd(cmd, None).await;
    assert_one_line_error(&out, "cannot find dagraid-node in $DAGRAID_BIN_DIR");
    assert!(stderr(&out).contains("cargo build --workspace"));
}

// --- reconstruction and copyback: the fake's rebuilds advance one step per GetVolume ---

/// The global flags that reach the fake coordinator, then `extra`.
fn against(server: &common::FakeServer, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--coordinator".to_owned(),
        server.url(),
        "--token".into(),
        TOKEN.into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

async fn go(argv: Vec<String>) -> Output {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    run(&argv).await
}

/// A fake with vol0 (RAID 5, 4 columns) whose column 2 is failed.
async fn degraded_volume() -> common::FakeServer {
    let server = common::start(Some(TOKEN), 1 << 20).await;
    let out = go(against(
        &server,
        &[
            "volume",
            "create",
            "vol0",
            "--size",
            "8MiB",
            "--columns",
            "4",
        ],
    ))
    .await;
    assert_success(&out);
    let out = go(against(&server, &["fail", "vol0", "2"])).await;
    assert_success(&out);
    server
}

fn lines(out: &Output) -> Vec<String> {
    stdout(out).lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_wait_follows_the_rebuild_to_its_end_with_plain_lines() {
    let server = degraded_volume().await;
    server
        .knobs
        .spares_available
        .store(1, std::sync::atomic::Ordering::SeqCst);

    // Before: the failed column waits, and says why.
    let out = go(against(&server, &["status", "vol0"])).await;
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.contains("\n  rebuild waiting: column 2: the down-out delay has not passed\n"),
        "{text}"
    );
    assert!(text.contains("\n  spares available: 1\n"), "{text}");

    let calls_before = server
        .knobs
        .get_volume_calls
        .load(std::sync::atomic::Ordering::SeqCst);
    let out = go(against(
        &server,
        &[
            "volume",
            "rebuild",
            "vol0",
            "--column",
            "2",
            "--rate",
            "32MiB/s",
            "--wait",
            "--poll-ms",
            "10",
        ],
    ))
    .await;
    assert_success(&out);
    let lines = lines(&out);
    // Not a terminal: plain lines, the first at once, the last when it is done.
    assert_eq!(
        lines.first().map(String::as_str),
        Some(
            "vol0 column 2: rebuilding onto node6/spare-1: 0% (0/20 stripes), 0 B/s (limit 32 MiB/s)"
        ),
        "{lines:#?}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("vol0 column 2: rebuilt onto node6/spare-1: done (20 stripes, "),
        "{lines:#?}"
    );
    assert!(last.ends_with(", 1 block lost"), "{lines:#?}");
    assert!(
        !stdout(&out).contains('\x1b'),
        "no terminal codes in plain output"
    );
    // It looked until the end: 20 stripes in steps of 5.
    let looks = server
        .knobs
        .get_volume_calls
        .load(std::sync::atomic::Ordering::SeqCst)
        - calls_before;
    assert_eq!(looks, 4, "{lines:#?}");

    // The column now lives on the spare, optimal; the rebuild is listed as completed.
    let out = go(against(&server, &["status", "vol0", "--json"])).await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &json["volumes"][0];
    assert_eq!(v["state"], "optimal");
    assert_eq!(v["components"][2]["node"], "node6");
    assert_eq!(v["components"][2]["component_id"], "spare-1");
    assert_eq!(v["components"][2]["state"], "optimal");
    let r = &v["rebuilds"][0];
    assert_eq!(
        (&r["kind"], &r["completed"], &r["running"]),
        (&"spare".into(), &true.into(), &false.into())
    );
    assert_eq!(r["fraction"], 1.0);
    assert_eq!(r["rate_limit_bytes_per_second"], 32 << 20);
    assert_eq!(v["rebuild_waiting"], serde_json::Value::Null);

    // Copy it back to node3 the same way.
    let out = go(against(
        &server,
        &[
            "volume",
            "copyback",
            "vol0",
            "--column",
            "2",
            "--to",
            "node3",
            "--wait",
            "--poll-ms",
            "10",
        ],
    ))
    .await;
    assert_success(&out);
    let lines = self::lines(&out);
    assert!(
        lines[0].starts_with("vol0 column 2: copying back to node3/vol0-c2-cb: 0% (0/20 stripes)"),
        "{lines:#?}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("vol0 column 2: copied back to node3/vol0-c2-cb: done (20 stripes"),
        "{lines:#?}"
    );
    let out = go(against(&server, &["status", "vol0"])).await;
    assert_success(&out);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.contains("node3") && l.contains("vol0-c2-cb") && l.ends_with("optimal")),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_wait_that_stops_with_an_error_exits_non_zero_naming_it() {
    let server = degraded_volume().await;
    server
        .knobs
        .rebuild_fail_at
        .store(10, std::sync::atomic::Ordering::SeqCst);
    let out = go(against(
        &server,
        &[
            "volume",
            "rebuild",
            "vol0",
            "--column",
            "2",
            "--in-place",
            "--wait",
            "--poll-ms",
            "10",
        ],
    ))
    .await;
    assert_one_line_error(
        &out,
        "vol0 column 2: in-place rebuild on node3/vol0-c2-r stopped at 50% (10/20 stripes), 1 block lost: node3: connection refused",
    );
    // The progress before it was shown.
    assert!(
        stdout(&out).starts_with("vol0 column 2: rebuilding in place on node3/vol0-c2-r: 0%"),
        "{}",
        stdout(&out)
    );

    // --json: the volume as last seen on stdout, the error on stderr.
    server
        .knobs
        .rebuild_fail_at
        .store(5, std::sync::atomic::Ordering::SeqCst);
    let out = go(against(
        &server,
        &[
            "volume",
            "rebuild",
            "vol0",
            "--column",
            "2",
            "--wait",
            "--poll-ms",
            "10",
            "--json",
        ],
    ))
    .await;
    assert_one_line_error(&out, "node6: connection refused");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stopped = json["rebuilds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "spare")
        .unwrap();
    assert_eq!(stopped["running"], false);
    assert_eq!(stopped["completed"], false);
    assert_eq!(stopped["error"], "node6: connection refused");
    assert_eq!(json["components"][2]["state"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_wait_rides_out_looks_that_do_not_list_the_rebuild() {
    let server = degraded_volume().await;
    let hide = |n: usize| {
        server
            .knobs
            .hide_rebuilds
            .store(n, std::sync::atomic::Ordering::SeqCst)
    };
    // Three looks without it, then the end: one note, not three.
    hide(3);
    let wait = |column: &str| {
        against(
            &server,
            &[
                "volume",
                "rebuild",
                "vol0",
                "--column",
                column,
                "--wait",
                "--poll-ms",
                "10",
            ],
        )
    };
    let out = go(wait("2")).await;
    assert_success(&out);
    let lines = lines(&out);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(
        lines[1],
        "vol0 column 2: waiting for the rebuild: the coordinator reports no progress yet"
    );
    assert!(
        lines[2].starts_with("vol0 column 2: rebuilt onto node6/spare-1: done"),
        "{lines:#?}"
    );

    // Never listed again, but the column lives on the target, optimal: done.
    let out = go(against(&server, &["fail", "vol0", "1"])).await;
    assert_success(&out);
    hide(4);
    let out = go(wait("1")).await;
    assert_success(&out);
    let lines = self::lines(&out);
    assert_eq!(
        lines.last().map(String::as_str),
        Some("vol0 column 1: rebuild done"),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_carries_every_rebuild_field() {
    let server = degraded_volume().await;
    server
        .knobs
        .spares_available
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let out = go(against(
        &server,
        &[
            "--json", "spare", "add", "--node", "node5", "--size", "2MiB",
        ],
    ))
    .await;
    assert_success(&out);
    let spare: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let spare = spare["id"].as_str().unwrap().to_owned();
    let rebuild = || {
        against(
            &server,
            &[
                "volume", "rebuild", "vol0", "--column", "2", "--spare", &spare,
            ],
        )
    };
    let out = go(rebuild()).await;
    assert_success(&out);
    assert!(
        stdout(&out).starts_with(&format!(
            "vol0 column 2: rebuilding onto node5/{spare}: 0% (0/20 stripes)"
        )),
        "{}",
        stdout(&out)
    );
    // One GetVolume: one step of 5 stripes.
    let out = go(against(&server, &["status", "vol0", "--json"])).await;
    assert_success(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &json["volumes"][0];
    assert_eq!(v["state"], "reconstructing");
    assert_eq!(v["components"][2]["state"], "reconstructing");
    assert_eq!(v["spares_available"], 2);
    assert_eq!(v["rebuild_waiting"], serde_json::Value::Null);
    let r = &v["rebuilds"][0];
    let want = serde_json::json!({
        "column": 2,
        "kind": "spare",
        "node": "node5",
        "component_id": spare,
        "running": true,
        "completed": false,
        "stripes_done": 5,
        "stripes_total": 20,
        "fraction": 0.25,
        "bytes_done": 5 * 4 * 65536,
        "rate_bytes_per_second": 50 << 20,
        "rate_limit_bytes_per_second": 64 << 20,
        "eta_seconds": 30,
        "lost_blocks": 0,
        "error": null,
        "resumed_from": 0,
        "stripes_checkpointed": 4,
        "regions_resynced": 0,
        "regions_total": 0,
        "note": null,
    });
    assert_eq!(r, &want);

    // The table says the same.
    let out = go(against(&server, &["status", "vol0"])).await;
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.contains("node3") && l.ends_with("reconstructing 50%")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\n  column 2: rebuilding onto node5/{spare}: 50% (10/20 stripes), 50 MiB/s (limit 64 MiB/s), ETA 20s, 1 block lost\n"
        )),
        "{text}"
    );
    assert!(text.contains("\n  spares available: 2\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_prints_a_block_per_look_and_ends_cleanly_on_ctrl_c() {
    let server = degraded_volume().await;
    let out = go(against(
        &server,
        &["volume", "rebuild", "vol0", "--column", "2"],
    ))
    .await;
    assert_success(&out);

    // Three looks of one volume: the rebuild moves on in each.
    let out = go(against(
        &server,
        &[
            "status",
            "vol0",
            "--watch",
            "--interval",
            "20",
            "--count",
            "3",
        ],
    ))
    .await;
    assert_success(&out);
    let text = stdout(&out);
    let blocks: Vec<&str> = text.split("--- ").skip(1).collect();
    assert_eq!(blocks.len(), 3, "{text}");
    for (block, want) in blocks.iter().zip(["25% (5/20", "50% (10/20", "75% (15/20"]) {
        assert!(block.contains(" UTC ---\nvolume vol0: "), "{block}");
        assert!(
            block.contains(&format!("column 2: rebuilding onto node6/spare-1: {want}")),
            "{block}"
        );
    }

    // --json: one object per line.
    let out = go(against(
        &server,
        &[
            "status",
            "--watch",
            "--interval",
            "10",
            "--count",
            "2",
            "--json",
        ],
    ))
    .await;
    assert_success(&out);
    let docs: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    for d in &docs {
        assert!(d["at"].as_str().unwrap().ends_with(" UTC"), "{d}");
        assert_eq!(d["volumes"][0]["rebuilds"][0]["kind"], "spare");
        assert_eq!(d["cluster"]["cluster_id"], "fake");
    }

    // Until interrupted: Ctrl-C (SIGINT) ends it with exit 0.
    let mut cmd = command(&[]);
    cmd.args(against(&server, &["status", "--watch", "--interval", "20"]));
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    read_until(&mut lines, &mut seen, "--- ").await;
    read_until(&mut lines, &mut seen, "--- ").await;
    assert!(seen.contains("cluster fake: epoch 7"), "{seen}");
    sig(child.id().unwrap(), rustix::process::Signal::INT);
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("status --watch did not end on SIGINT")
        .unwrap();
    assert!(status.success(), "{status:?}\n{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_and_copyback_refuse_bad_input_clearly() {
    let server = degraded_volume().await;
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "volume",
                "rebuild",
                "vol0",
                "--column",
                "2",
                "--in-place",
                "--spare",
                "spare-1",
            ],
            "cannot be used with",
        ),
        (&["volume", "rebuild", "vol0"], "--column"),
        (
            &["volume", "rebuild", "vol0", "--column", "2", "--rate", "0"],
            "at least 1 byte",
        ),
        (
            &[
                "volume", "rebuild", "vol0", "--column", "2", "--rate", "1GB",
            ],
            "ambiguous",
        ),
        (&["volume", "copyback", "vol0", "--column", "2"], "--to"),
        (&["status", "--interval", "100"], "--watch"),
    ];
    for (argv, needle) in cases {
        let out = go(against(&server, argv)).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {err}");
        assert!(err.contains(needle), "{argv:?}: {err}");
    }
    let cases: &[(&[&str], &str)] = &[
        (
            &["volume", "rebuild", "nope", "--column", "2", "--wait"],
            "unknown volume: no volume named \"nope\"",
        ),
        (
            &["volume", "rebuild", "vol0", "--column", "9"],
            "invalid argument: volume \"vol0\" has no column 9",
        ),
        (
            &["volume", "rebuild", "vol0", "--column", "1"],
            "rebuild refused: column 1 is not failed",
        ),
        // A spare the pool does not hold is not an unknown volume.
        (
            &[
                "volume", "rebuild", "vol0", "--column", "2", "--spare", "bogus",
            ],
            "unknown spare: no spare \"bogus\" in the pool",
        ),
        (
            &[
                "volume", "copyback", "vol0", "--column", "1", "--to", "node5",
            ],
            "rebuild refused: column 1 does not live on a spare",
        ),
        (
            &["volume", "copyback", "vol0", "--column", "2", "--to", " "],
            "copyback needs the storage node of the replacement",
        ),
        (
            &["status", "nope", "--watch", "--count", "2"],
            "unknown volume",
        ),
    ];
    for (argv, needle) in cases {
        let out = go(against(&server, argv)).await;
        assert_one_line_error(&out, needle);
        assert!(stdout(&out).is_empty(), "{argv:?}: {}", stdout(&out));
    }
    // A spare another column took already.
    server
        .knobs
        .spares_taken
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let out = go(against(
        &server,
        &[
            "--json", "spare", "add", "--node", "node5", "--size", "2MiB",
        ],
    ))
    .await;
    assert_success(&out);
    let spare: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let spare = spare["id"].as_str().unwrap();
    let out = go(against(
        &server,
        &[
            "volume", "rebuild", "vol0", "--column", "2", "--spare", spare,
        ],
    ))
    .await;
    assert_one_line_error(&out, "is in use by column 1 of volume \"vol0\"");
}
