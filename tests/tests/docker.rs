//! The docker-compose cluster (`deploy/docker-compose.yml`) in real containers: the images built
//! by `deploy/build-images.sh`, a coordinator and 6 storage nodes brought up with Docker Compose,
//! a RAID 5 volume that survives `docker kill` of a node (reads and writes while degraded), and a
//! RAID 6 volume that survives one node cut off the network plus another killed.
//!
//! Runs only when `DAGRAID_DOCKER_TEST=1` (`.ci/run` sets it when `docker info` succeeds); without
//! it the test says it skipped and passes, so `cargo test --workspace` needs no Docker. With it,
//! a missing Docker fails the test.
//!
//! Every run has its own compose project, `dagraidtest-<pid>-<unix seconds>-<random>`, and its
//! API port is ephemeral (`DAGRAID_API_PORT=0`, read back with `docker compose port`), so runs in
//! parallel never collide. A drop guard removes the project's containers, networks and volumes
//! whatever happens; at start, projects of this prefix left by a dead run are removed.
//! Readiness is polled (container health, then the coordinator's status), never slept for.
//!
//! Environment: `DAGRAID_IMAGE_TAG` (default `test-<hash of this checkout's path>`),
//! `DAGRAID_DOCKER_TARGET_DIR` (default `<repo>/target/docker`), both passed to the build script.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail, ensure};
use rand::RngCore as _;
use serde_json::Value;

/// Set to 1 to run this test.
const ENABLE: &str = "DAGRAID_DOCKER_TEST";
/// Prefix of every compose project this test makes.
const PREFIX: &str = "dagraidtest-";
/// A leftover project older than this is removed even if its pid is alive (pid reuse).
const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);
const MIB: usize = 1 << 20;
/// The compose project label Docker Compose (v1 and v2) puts on everything it makes.
const PROJECT_LABEL: &str = "com.docker.compose.project";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// What a finished command left: exit status and its output.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to its end, killing it after `deadline`; stdout and stderr go to files (no pipe
/// can fill up), unless `inherit` lets them through to the terminal.
fn run_for(cmd: &mut Command, deadline: Duration, inherit: bool) -> anyhow::Result<Finished> {
    let what = format!("{cmd:?}");
    let out = tempfile::tempfile()?;
    let err = tempfile::tempfile()?;
    if inherit {
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    } else {
        cmd.stdout(out.try_clone()?).stderr(err.try_clone()?);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |mut f: fs::File| -> anyhow::Result<String> {
        use std::io::{Read as _, Seek as _};
        f.rewind()?;
        let mut s = String::new();
        f.read_to_string(&mut s)?;
        Ok(s)
    };
    Ok(Finished {
        status,
        stdout: read(out)?,
        stderr: read(err)?,
    })
}

/// Runs `cmd` and returns its stdout; an exit code other than 0 is an error with its stderr.
fn run_ok(cmd: &mut Command, deadline: Duration) -> anyhow::Result<String> {
    let what = format!("{cmd:?}");
    let done = run_for(cmd, deadline, false)?;
    ensure!(
        done.status.success(),
        "{what} failed ({}):\n{}{}",
        done.status,
        done.stdout,
        done.stderr
    );
    Ok(done.stdout)
}

fn docker(args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    cmd
}

/// Polls `probe` until it gives a value, for at most `deadline`.
fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let mut last = String::from("no answer yet");
    loop {
        match probe() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if started.elapsed() > deadline {
            bail!("{what}: not within {deadline:?} (last error: {last})");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `docker compose` when the plugin works, else `docker-compose` (1.29 has no plugin).
fn compose_program() -> anyhow::Result<Vec<String>> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if matches!(plugin, Ok(s) if s.success()) {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    let standalone = Command::new("docker-compose")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if matches!(standalone, Ok(s) if s.success()) {
        return Ok(vec!["docker-compose".into()]);
    }
    bail!("neither `docker compose` nor `docker-compose` works here")
}

/// Removes every container, network and volume labelled with compose project `project`.
fn remove_project(project: &str) {
    let filter = format!("label={PROJECT_LABEL}={project}");
    let list = |args: &[&str]| -> Vec<String> {
        run_ok(&mut docker(args), Duration::from_secs(60))
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let containers = list(&["ps", "-aq", "--filter", &filter]);
    if !containers.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(containers.iter().map(String::as_str));
        let _ = run_ok(&mut docker(&args), Duration::from_secs(120));
    }
    for network in list(&["network", "ls", "-q", "--filter", &filter]) {
        let _ = run_ok(
            &mut docker(&["network", "rm", &network]),
            Duration::from_secs(60),
        );
    }
    let volumes = list(&["volume", "ls", "-q", "--filter", &filter]);
    if !volumes.is_empty() {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(volumes.iter().map(String::as_str));
        let _ = run_ok(&mut docker(&args), Duration::from_secs(60));
    }
}

/// What is left of `project`: containers, networks, volumes.
fn leftovers(project: &str) -> anyhow::Result<Vec<String>> {
    let filter = format!("label={PROJECT_LABEL}={project}");
    let mut left = Vec::new();
    for (kind, args) in [
        ("container", vec!["ps", "-aq", "--filter", &filter]),
        ("network", vec!["network", "ls", "-q", "--filter", &filter]),
        ("volume", vec!["volume", "ls", "-q", "--filter", &filter]),
    ] {
        let out = run_ok(&mut docker(&args), Duration::from_secs(60))?;
        left.extend(out.split_whitespace().map(|id| format!("{kind} {id}")));
    }
    Ok(left)
}

/// Removes the projects of this prefix whose run is over: its pid is gone, or it is old.
fn remove_stale_projects() {
    let mut projects = BTreeSet::new();
    let format = format!("{{{{.Label \"{PROJECT_LABEL}\"}}}}");
    for args in [
        vec!["ps", "-a"],
        vec!["network", "ls"],
        vec!["volume", "ls"],
    ] {
        let mut args = args;
        args.extend(["--filter", "label=com.docker.compose.project", "--format"]);
        args.push(&format);
        if let Ok(out) = run_ok(&mut docker(&args), Duration::from_secs(60)) {
            projects.extend(
                out.lines()
                    .map(str::trim)
                    .filter(|p| p.starts_with(PREFIX))
                    .map(str::to_owned),
            );
        }
    }
    for project in projects {
        let mut parts = project[PREFIX.len()..].split('-');
        let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
        let secs = parts.next().and_then(|s| s.parse::<u64>().ok());
        let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        let old = secs.is_none_or(|s| now_secs().saturating_sub(s) > STALE_AFTER.as_secs());
        if !alive || old {
            eprintln!("docker test: removing leftover compose project {project}");
            remove_project(&project);
        }
    }
}

/// One compose project of `deploy/docker-compose.yml`. Dropping it removes everything it made.
struct Project {
    program: Vec<String>,
    name: String,
    deploy: PathBuf,
    /// An env file of the test's own, so the user's `deploy/.env` is never read.
    env_file: PathBuf,
    tag: String,
    token: String,
    /// Set once `down -v` succeeded and nothing is left.
    removed: bool,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..])
            .arg("--project-directory")
            .arg(&self.deploy)
            .arg("-f")
            .arg(self.deploy.join("docker-compose.yml"))
            .arg("-p")
            .arg(&self.name)
            .arg("--env-file")
            .arg(&self.env_file)
            .args(args)
            // The process environment wins over env files: make it say exactly this.
            .env("DAGRAID_TOKEN", &self.token)
            .env("DAGRAID_IMAGE_TAG", &self.tag)
            .env("DAGRAID_API_PORT", "0")
            .env("DAGRAID_METRICS_PORT", "0")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "")
            .env("RUST_LOG", "info")
            .env_remove("COMPOSE_PROFILES")
            .env_remove("COMPOSE_FILE")
            .env_remove("COMPOSE_PROJECT_NAME");
        cmd
    }

    fn run(&self, args: &[&str], deadline: Duration) -> anyhow::Result<String> {
        run_ok(&mut self.compose(args), deadline)
    }

    /// The container of `service`.
    fn container(&self, service: &str) -> anyhow::Result<String> {
        let id = self.run(&["ps", "-a", "-q", service], Duration::from_secs(60))?;
        let id = id.trim();
        ensure!(!id.is_empty(), "no container for service {service}");
        Ok(id.to_owned())
    }

    /// The `dagraid` CLI image on the compose network (the `cli` service), never starting
    /// anything else.
    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["--profile", "cli", "run", "--rm", "--no-deps", "-T", "cli"];
        full.extend(args);
        self.run(&full, Duration::from_secs(300))
    }

    /// Waits until every container of the project runs and its health check passes.
    fn wait_healthy(&self, deadline: Duration) -> anyhow::Result<()> {
        wait_until("every container healthy", deadline, || {
            let ids = self.run(&["ps", "-a", "-q"], Duration::from_secs(60))?;
            let ids: Vec<&str> = ids.split_whitespace().collect();
            ensure!(
                ids.len() == 8,
                "{} containers, want 8 (the certs step and 7 servers)",
                ids.len()
            );
            let mut args = vec![
                "inspect",
                "--format",
                "{{index .Config.Labels \"com.docker.compose.service\"}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
            ];
            args.extend(&ids);
            let states = run_ok(&mut docker(&args), Duration::from_secs(60))?;
            let mut ready = true;
            for line in states.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [service, status, code, health] = fields[..] else {
                    bail!("unexpected docker inspect line {line:?}");
                };
                match (service, status) {
                    // The one-shot certificate step: done when it exited with 0.
                    ("certs", "exited") if code == "0" => {}
                    // Not worth waiting for: fail now, the guard prints the logs.
                    (_, "exited" | "dead") => bail!("a container exited: {line}"),
                    (server, "running") if server != "certs" && health == "healthy" => {}
                    _ => ready = false,
                }
            }
            Ok(ready.then_some(()))
        })
    }

    /// `docker compose down -v`, then checks that nothing of the project is left.
    fn down(&mut self) -> anyhow::Result<()> {
        self.run(
            &["down", "-v", "--remove-orphans", "-t", "10"],
            Duration::from_secs(300),
        )?;
        let left = leftovers(&self.name)?;
        ensure!(left.is_empty(), "left after down -v: {left:?}");
        self.removed = true;
        Ok(())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // Not removed by `down`: the test failed (an error or a panic). Show what the
        // containers said.
        if let Ok(done) = run_for(
            &mut self.compose(&["logs", "--no-color", "--tail", "60"]),
            Duration::from_secs(60),
            false,
        ) {
            eprintln!("docker test: logs of {}:\n{}", self.name, done.stdout);
        }
        eprintln!("docker test: removing compose project {}", self.name);
        let _ = run_for(
            &mut self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]),
            Duration::from_secs(300),
            false,
        );
        // Whatever down missed (or if it failed).
        remove_project(&self.name);
    }
}

/// The `dagraid` CLI on the host, through the published API port.
struct Cli {
    bin: PathBuf,
    url: String,
    token: String,
    dir: PathBuf,
    /// The client's ca.pem, cert.pem and key.pem from the certs step.
    tls: PathBuf,
}

impl Cli {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.dir)
            .arg("--data-dir")
            .arg(self.dir.join("no-cluster-file"))
            .args(["--timeout", "60"])
            .args(args)
            .env("DAGRAID_COORDINATOR", &self.url)
            // In the environment, not on the command line (ps shows argv).
            .env("DAGRAID_TOKEN", &self.token)
            .env("DAGRAID_TLS_CA", self.tls.join("ca.pem"))
            .env("DAGRAID_TLS_CERT", self.tls.join("cert.pem"))
            .env("DAGRAID_TLS_KEY", self.tls.join("key.pem"));
        cmd
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        run_ok(&mut self.cmd(args), Duration::from_secs(600))
    }

    fn status(&self) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&self.run(&["--json", "status"])?)?)
    }

    fn write(&self, volume: &str, offset: usize, data: &[u8]) -> anyhow::Result<()> {
        let file = self.dir.join("write.bin");
        fs::write(&file, data)?;
        let started = Instant::now();
        self.run(&[
            "write",
            volume,
            "--offset",
            &offset.to_string(),
            file.to_str().expect("utf-8 path"),
        ])?;
        report_rate("wrote", volume, offset, data.len(), started);
        fs::remove_file(&file)?;
        Ok(())
    }

    fn read(&self, volume: &str, offset: usize, len: usize) -> anyhow::Result<Vec<u8>> {
        let file = self.dir.join("read.bin");
        let started = Instant::now();
        self.run(&[
            "read",
            volume,
            "--offset",
            &offset.to_string(),
            "--length",
            &len.to_string(),
            "-o",
            file.to_str().expect("utf-8 path"),
        ])?;
        report_rate("read", volume, offset, len, started);
        let data = fs::read(&file)?;
        fs::remove_file(&file)?;
        Ok(data)
    }

    /// Reads `model.len()` bytes from offset 0 and compares them with `model`.
    fn check(&self, volume: &str, model: &[u8], when: &str) -> anyhow::Result<()> {
        let back = self.read(volume, 0, model.len())?;
        ensure!(
            back.len() == model.len(),
            "{volume} {when}: read {} bytes, want {}",
            back.len(),
            model.len()
        );
        if back != model {
            let first = back.iter().zip(model).position(|(a, b)| a != b);
            let bad_blocks = back
                .chunks(4096)
                .zip(model.chunks(4096))
                .filter(|(a, b)| a != b)
                .count();
            bail!(
                "{volume} {when}: the bytes read back differ from those written: first at \
                 offset {first:?}, {bad_blocks} 4 KiB blocks differ"
            );
        }
        eprintln!(
            "docker test: {volume} {when}: all {} MiB read back identical",
            model.len() / MIB
        );
        Ok(())
    }

    /// Waits until `volume` is in `state` with exactly the columns `failed` failed.
    fn wait_volume(
        &self,
        volume: &str,
        state: &str,
        failed: &[u64],
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("{volume} {state} with columns {failed:?} failed");
        wait_until(&what, deadline, || {
            let status = self.status()?;
            let v = status["volumes"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| v["name"] == volume))
                .ok_or_else(|| anyhow!("no volume {volume} in {status}"))?;
            let now_failed: Vec<u64> = v["components"]
                .as_array()
                .ok_or_else(|| anyhow!("no components in {v}"))?
                .iter()
                .filter(|c| c["state"] == "failed")
                .filter_map(|c| c["column"].as_u64())
                .collect();
            Ok((v["state"] == state && now_failed == failed).then_some(()))
        })
    }

    /// Waits until the coordinator's health checks reach every one of the 6 nodes.
    fn wait_nodes_reachable(&self, deadline: Duration) -> anyhow::Result<()> {
        wait_until("all 6 storage nodes reachable", deadline, || {
            let status = self.status()?;
            let nodes = status["cluster"]["nodes"]
                .as_array()
                .ok_or_else(|| anyhow!("no nodes in {status}"))?;
            Ok((nodes.len() == 6 && nodes.iter().all(|n| n["reachable"] == true)).then_some(()))
        })
    }
}

/// `GET path` over HTTP/1.0 from `addr`; the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer from {addr}: {answer:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "GET {path} from {addr}: {status}"
    );
    Ok(body.to_owned())
}

fn report_rate(verb: &str, volume: &str, offset: usize, len: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "docker test: {verb} {} MiB of {volume} at offset {offset} in {secs:.1} s ({:.0} MiB/s)",
        len / MIB,
        len as f64 / MIB as f64 / secs.max(1e-3)
    );
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}

/// Prints how long the last step took.
struct Steps {
    started: Instant,
    last: Instant,
}

impl Steps {
    fn done(&mut self, what: &str) {
        eprintln!(
            "docker test: [{:6.1} s, total {:6.1} s] {what}",
            self.last.elapsed().as_secs_f64(),
            self.started.elapsed().as_secs_f64()
        );
        self.last = Instant::now();
    }
}

#[test]
fn compose_cluster_survives_node_loss() {
    if std::env::var(ENABLE).as_deref() != Ok("1") {
        eprintln!(
            "docker test: skipped: set {ENABLE}=1 to run it (needs a Docker Engine with Docker \
             Compose; .ci/run sets it when `docker info` succeeds)"
        );
        return;
    }
    if let Err(err) = scenario() {
        panic!("docker test failed: {err:#}");
    }
}

fn scenario() -> anyhow::Result<()> {
    let mut steps = Steps {
        started: Instant::now(),
        last: Instant::now(),
    };
    run_ok(&mut docker(&["info"]), Duration::from_secs(60))
        .context("docker info failed: no Docker Engine here, but DAGRAID_DOCKER_TEST=1")?;
    let program = compose_program()?;
    eprintln!("docker test: compose is `{}`", program.join(" "));
    remove_stale_projects();
    steps.done("leftovers of earlier runs removed");

    let root = repo_root();
    let deploy = root.join("deploy");
    let tag = std::env::var("DAGRAID_IMAGE_TAG").unwrap_or_else(|_| {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        root.hash(&mut h);
        format!("test-{:08x}", h.finish() as u32)
    });
    let target_dir = std::env::var_os("DAGRAID_DOCKER_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("docker"));

    // 1. The images: one static release build, three FROM-scratch images.
    let built = run_for(
        Command::new(deploy.join("build-images.sh"))
            .env("DAGRAID_IMAGE_TAG", &tag)
            .env("DAGRAID_DOCKER_TARGET_DIR", &target_dir),
        Duration::from_secs(3600),
        true,
    )?;
    ensure!(built.status.success(), "deploy/build-images.sh failed");
    steps.done(&format!("images built (tag {tag})"));

    // 2. docker compose up, a project of this run's own.
    let work = tempfile::tempdir()?;
    let env_file = work.path().join("compose.env");
    fs::write(
        &env_file,
        "# the docker test's own; deploy/.env is not read\n",
    )?;
    let mut token = [0u8; 32];
    rand::rng().fill_bytes(&mut token);
    let name = format!(
        "{PREFIX}{}-{}-{:04x}",
        std::process::id(),
        now_secs(),
        rand::rng().next_u32() as u16
    );
    let mut project = Project {
        program,
        name,
        deploy,
        env_file,
        tag,
        token: token.iter().map(|b| format!("{b:02x}")).collect(),
        removed: false,
    };
    eprintln!("docker test: compose project {}", project.name);
    project.run(&["up", "-d"], Duration::from_secs(600))?;
    project.wait_healthy(Duration::from_secs(300))?;
    steps.done("docker compose up: coordinator and 6 storage nodes healthy");

    // Only the coordinator publishes, and only on 127.0.0.1; the nodes publish nothing.
    let port_of =
        |service: &str, port: &str| project.run(&["port", service, port], Duration::from_secs(60));
    let api = port_of("coordinator", "7070")?.trim().to_owned();
    ensure!(api.starts_with("127.0.0.1:"), "API published on {api}");
    let metrics = port_of("coordinator", "9464")?.trim().to_owned();
    ensure!(
        metrics.starts_with("127.0.0.1:"),
        "metrics published on {metrics}"
    );
    let nodes: Vec<String> = (1..=6)
        .map(|i| project.container(&format!("node{i}")))
        .collect::<anyhow::Result<_>>()?;
    let mut args = vec![
        "inspect",
        "--format",
        "{{.Name}}:{{range $p, $b := .NetworkSettings.Ports}}{{if $b}} {{$p}}{{end}}{{end}}",
    ];
    args.extend(nodes.iter().map(String::as_str));
    let published = run_ok(&mut docker(&args), Duration::from_secs(60))?;
    for line in published.lines() {
        ensure!(
            line.trim_end().ends_with(':'),
            "a storage node publishes a port: {line}"
        );
    }
    // The coordinator's metrics, through the published port (Prometheus text).
    let page = wait_until(
        "the coordinator's /metrics",
        Duration::from_secs(60),
        || http_get(&metrics, "/metrics").map(Some),
    )?;
    ensure!(
        page.contains("# TYPE") && page.contains("dagraid"),
        "not Prometheus metrics of dagraid: {}",
        &page[..page.len().min(500)]
    );
    // The client's certificate, from the certs step's volume (docker cp works on the
    // container it left behind).
    let client_tls = work.path().join("client-tls");
    let certs = project.container("certs")?;
    run_ok(
        &mut docker(&[
            "cp",
            &format!("{certs}:/out/client"),
            client_tls.to_str().expect("utf-8 path"),
        ]),
        Duration::from_secs(60),
    )?;
    let cli = Cli {
        bin: target_dir.join("image-context").join("dagraid"),
        url: format!("https://{api}"),
        token: project.token.clone(),
        dir: work.path().to_path_buf(),
        tls: client_tls,
    };
    // TLS by default: the same port refuses plaintext.
    let plaintext = run_for(
        cli.cmd(&["status"])
            .env("DAGRAID_COORDINATOR", format!("http://{api}")),
        Duration::from_secs(120),
        false,
    )?;
    ensure!(
        !plaintext.status.success(),
        "plaintext gRPC to the compose coordinator was answered"
    );
    cli.wait_nodes_reachable(Duration::from_secs(120))?;
    steps.done(&format!(
        "coordinator serving on {api} (metrics {metrics}), 6 nodes reachable"
    ));

    // 3. RAID 5 over 5 nodes: 256 MiB, then node3 killed.
    project.cli(&[
        "volume",
        "create",
        "r5",
        "--level",
        "raid5",
        "--size",
        "512MiB",
        "--columns",
        "5",
        "--nodes",
        "node1,node2,node3,node4,node5",
    ])?;
    let mut r5 = random(256 * MIB);
    cli.write("r5", 0, &r5)?;
    cli.check("r5", &r5, "optimal")?;
    steps.done("RAID 5 over node1..node5 created by the CLI image, 256 MiB written and read");

    let node3 = project.container("node3")?;
    run_ok(&mut docker(&["kill", &node3]), Duration::from_secs(60))?;
    cli.check("r5", &r5, "after docker kill of node3")?;
    // Column 2 is node3's; the read above failed it (or the health loop did).
    cli.wait_volume("r5", "degraded", &[2], Duration::from_secs(60))?;
    steps.done("node3 killed: r5 degraded, everything read back identical");

    // Writes while degraded: a new region, and a partial-stripe overwrite of the old one.
    let more = random(64 * MIB);
    cli.write("r5", r5.len(), &more)?;
    r5.extend_from_slice(&more);
    let (at, len) = (7 * MIB + 3 * 4096 + 100, 5 * MIB + 777);
    let patch = random(len);
    cli.write("r5", at, &patch)?;
    r5[at..at + len].copy_from_slice(&patch);
    cli.check("r5", &r5, "after writes while degraded")?;
    cli.wait_volume("r5", "degraded", &[2], Duration::from_secs(60))?;
    steps.done(
        "written while degraded (64 MiB more and an unaligned overwrite), read back identical",
    );

    // 4. RAID 6 over all 6 nodes: node3 back first, then one node cut off and another killed.
    run_ok(&mut docker(&["start", &node3]), Duration::from_secs(60))?;
    project.wait_healthy(Duration::from_secs(300))?;
    cli.wait_nodes_reachable(Duration::from_secs(120))?;
    project.cli(&[
        "volume",
        "create",
        "r6",
        "--level",
        "raid6",
        "--size",
        "256MiB",
        "--columns",
        "6",
    ])?;
    let r6 = random(256 * MIB);
    cli.write("r6", 0, &r6)?;
    cli.check("r6", &r6, "optimal")?;
    steps.done("node3 back; RAID 6 over all 6 nodes created, 256 MiB written and read");

    let node2 = project.container("node2")?;
    let networks = run_ok(
        &mut docker(&[
            "inspect",
            "--format",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
            &node2,
        ]),
        Duration::from_secs(60),
    )?;
    let network = networks
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("node2 is on no network"))?
        .to_owned();
    run_ok(
        &mut docker(&["network", "disconnect", &network, &node2]),
        Duration::from_secs(60),
    )?;
    let node5 = project.container("node5")?;
    run_ok(&mut docker(&["kill", &node5]), Duration::from_secs(60))?;
    cli.check("r6", &r6, "with node2 cut off and node5 killed")?;
    cli.wait_volume("r6", "degraded", &[1, 4], Duration::from_secs(60))?;
    steps.done(&format!(
        "node2 disconnected from {network}, node5 killed: r6 degraded, everything read back identical"
    ));

    // 5. docker compose down -v, and nothing of the project is left.
    project.down()?;
    steps.done("docker compose down -v: no container, network or volume left");
    Ok(())
}
