//! The `dagraid-coordinator` binary: its listening line, clean stop on SIGTERM, and one-line
//! errors for what an operator gets wrong.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_dagraid-coordinator");
const PREFIX: &str = "dagraid-coordinator listening on ";

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("DAGRAID_NODES")
        .env_remove("DAGRAID_TOKEN")
        // Plaintext said explicitly: these tests are about everything but TLS.
        .env("DAGRAID_INSECURE", "true")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Starts the binary and waits for its listening line.
async fn start(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = command(args).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("listening line within 30 s")
        .unwrap()
        .expect("a line");
    let addr = line
        .strip_prefix(PREFIX)
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

/// Runs the binary to its end; returns (success, stderr).
async fn fails(args: &[&str]) -> String {
    let out = tokio::time::timeout(Duration::from_secs(30), command(args).output())
        .await
        .expect("exits within 30 s")
        .unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(out.stdout.is_empty(), "no listening line");
    String::from_utf8(out.stderr).unwrap()
}

async fn terminate(child: &mut Child) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops within 30 s after SIGTERM")
        .unwrap();
    assert!(status.success(), "clean exit: {status}");
}

#[tokio::test]
async fn it_prints_its_address_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    let data = data.to_str().unwrap();
    let (mut child, addr) = start(&["--listen", "127.0.0.1:0", "--data-dir", data]).await;
    assert_ne!(addr.port(), 0);
    // It serves gRPC (the health service answers).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(answer.into_inner().status, 1);

    // A second coordinator on the same data directory is refused, in one line.
    let err = fails(&["--listen", "127.0.0.1:0", "--data-dir", data]).await;
    assert!(err.contains("in use"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // So is one on the same port.
    let other = dir.path().join("other");
    let err = fails(&[
        "--listen",
        &addr.to_string(),
        "--data-dir",
        other.to_str().unwrap(),
    ])
    .await;
    assert!(err.contains("cannot listen on"), "{err}");

    terminate(&mut child).await;
    let mut rest = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .await
        .unwrap();
    assert!(!rest.contains("error"), "{rest}");
    // The store was released: the same directory serves again.
    let (mut again, _) = start(&["--listen", "127.0.0.1:0", "--data-dir", data]).await;
    terminate(&mut again).await;
}

#[tokio::test]
async fn bad_configuration_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "data-dir = 3\n").unwrap();
    for (args, expect) in [
        (vec!["--listen", "127.0.0.1:0"], "--data-dir is required"),
        (vec!["--data-dir", file.to_str().unwrap()], "data directory"),
        (vec!["--data-dir", data, "--node", "n1"], "ID=HOST:PORT"),
        (
            vec!["--data-dir", data, "--max-io-bytes", "1"],
            "max-io-bytes",
        ),
        (vec!["--config", config.to_str().unwrap()], "c.toml"),
        (
            vec![
                "--config",
                dir.path().join("missing.toml").to_str().unwrap(),
            ],
            "cannot read",
        ),
    ] {
        let err = fails(&args).await;
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(
            err.starts_with("dagraid-coordinator: error: ") || err.starts_with("error:"),
            "{err}"
        );
    }
}

/// Plaintext is served only when asked for: without TLS files and without --insecure the
/// coordinator refuses to start, and says what to give it.
#[tokio::test]
async fn no_tls_and_no_insecure_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        command(&[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env_remove("DAGRAID_INSECURE")
        .output(),
    )
    .await
    .expect("exits within 30 s")
    .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no listening line");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no TLS material"), "{err}");
    assert!(
        err.contains("--tls-ca") && err.contains("--insecure"),
        "{err}"
    );
}

#[tokio::test]
async fn help_names_every_flag() {
    let out = command(&["--help"]).output().await.unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config",
        "--listen",
        "--data-dir",
        "--cluster-id",
        "--node",
        "--token",
        "--node-deadline-ms",
        "--health-interval-ms",
        "--max-io-bytes",
        "DAGRAID_NODES",
        "DAGRAID_TOKEN",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}
