//! Starting real binaries: finding them, waiting for their "listening on" line, signalling them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a process may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of workspace binary `name`: env `env_var`, else next to the test executable
/// (`target/<profile>/<name>` for a test in `target/<profile>/deps/`, or for a binary of this
/// crate in `target/<profile>/`, like `chaos`).
pub fn binary(name: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let beside = exe.parent().map(|d| d.join(&file));
    if let Some(bin) = beside.filter(|b| b.exists()) {
        return Ok(bin);
    }
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("test executable {} has no grandparent", exe.display()))?;
    let bin = dir.join(&file);
    if !bin.exists() {
        bail!(
            "{} not found: build it first (`cargo build --workspace --bins`, or run `cargo test --workspace`), or set {env_var}",
            bin.display()
        );
    }
    Ok(bin)
}

/// Spawns `cmd` with stderr appended to `log_path` and waits until its first stdout line is
/// `<prefix><address>`; returns the child and the address. Stdout keeps being drained.
pub async fn spawn_listening(
    cmd: Command,
    what: &str,
    prefix: &str,
    log_path: &Path,
) -> Result<(Child, SocketAddr)> {
    let (child, addr, _) = spawn_listening_with(cmd, what, prefix, None, log_path).await?;
    Ok((child, addr))
}

/// [`spawn_listening`], and when `second` is given, also waits for the second stdout line,
/// `<second><rest>`, and returns its rest (the metrics URL of `--metrics-listen`).
pub async fn spawn_listening_with(
    mut cmd: Command,
    what: &str,
    prefix: &str,
    second: Option<&str>,
    log_path: &Path,
) -> Result<(Child, SocketAddr, Option<String>)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("opening the {what} log"))?;
    cmd.env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
    let addr = match line {
        Ok(Ok(Some(line))) => line
            .strip_prefix(prefix)
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .ok_or_else(|| anyhow!("unexpected first line from {what}: {line:?}")),
        Ok(Ok(None)) => {
            let status = child.wait().await?;
            Err(anyhow!("{what} exited ({status}) before listening"))
        }
        Ok(Err(err)) => Err(anyhow!("reading {what} stdout: {err}")),
        Err(_) => Err(anyhow!("{what} did not listen within {START_TIMEOUT:?}")),
    };
    let with_log = |err: anyhow::Error| {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        anyhow!("{err}; log:\n{log}")
    };
    let addr = addr.map_err(with_log)?;
    let rest = match second {
        None => None,
        Some(second) => {
            let line = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
            match line {
                Ok(Ok(Some(line))) => Some(
                    line.strip_prefix(second)
                        .map(|r| r.trim().to_owned())
                        .ok_or_else(|| anyhow!("unexpected second line from {what}: {line:?}"))
                        .map_err(with_log)?,
                ),
                _ => return Err(with_log(anyhow!("{what} printed no second line"))),
            }
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr, rest))
}

/// GETs `url` (`http://host:port/path`) over plain HTTP/1.1 and returns the body; the status
/// must be 200.
pub async fn http_get(url: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http:// URL: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut answer = String::new();
    tokio::time::timeout(START_TIMEOUT, stream.read_to_string(&mut answer))
        .await
        .context("no answer")??;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed answer from {url}: {answer:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {url}: {head}");
    }
    Ok(body.to_owned())
}

/// Sends `signal` (like `-STOP`) to the child.
pub async fn signal(child: Option<&Child>, signal: &str) -> Result<()> {
    let pid = child
        .and_then(Child::id)
        .context("process is not running")?;
    let status = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .await
        .with_context(|| format!("running kill {signal}"))?;
    if !status.success() {
        bail!("kill {signal} {pid} failed: {status}");
    }
    Ok(())
}

/// SIGTERM, then waits for the exit.
pub async fn terminate(mut child: Child) -> Result<std::process::ExitStatus> {
    signal(Some(&child), "-TERM").await?;
    tokio::time::timeout(START_TIMEOUT, child.wait())
        .await
        .context("process did not stop after SIGTERM")?
        .context("waiting for the process")
}
