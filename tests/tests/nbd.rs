//! The NBD export (issue 23) against real clients and a raw protocol client, on real
//! processes: a coordinator started with `--nbd-listen 127.0.0.1:0` over five storage nodes.
//! The TLS tests (issue 24) start a TLS cluster and reach the export over `nbds://` URIs
//! (`--nbd-tls`), and by hand through `NBD_OPT_STARTTLS`.
//!
//! The client tools come from Debian's `qemu-utils`, `libnbd-bin`, `fio` and `nbdkit`
//! (`.ci/run` installs them). Where one is missing the test says so and skips it, except under
//! CI (`CI` set), where a missing tool fails the test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dagraid_client::TlsFiles;
use dagraid_client::{Client, RaidLevel, VolumeSpec, VolumeState};
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::harness::client;
use dagraid_tests::{eventually, with_timeout};
use dagraid_tls::{ClientTls, Role};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1 << 20;
const VOLUME: &str = "nbdvol";

/// A plaintext cluster, said here: these tests are about the export itself (`--nbd-tls off`,
/// the plaintext default); the TLS tests below use [`start_with`].
async fn start(extra: &[&str], size: u64) -> (Cluster, Client, SocketAddr) {
    start_with(false, extra, size).await
}

/// [`start`], with `tls` a TLS cluster (the coordinator gets `--tls-*`).
async fn start_with(tls: bool, extra: &[&str], size: u64) -> (Cluster, Client, SocketAddr) {
    let mut coordinator_args = vec![
        "--nbd-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--gone-after-ms".to_owned(),
        "1000".to_owned(),
    ];
    coordinator_args.extend(extra.iter().map(|s| (*s).to_owned()));
    let cluster = Cluster::start(ClusterOptions {
        nodes: 5,
        health_interval_ms: 200,
        coordinator_args,
        tls,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let c = client(&cluster).await;
    c.create_volume(VolumeSpec::new(VOLUME, RaidLevel::Raid5, size).columns(5))
        .await
        .unwrap();
    let addr = nbd_addr(&cluster).await;
    (cluster, c, addr)
}

/// The export's address, from the coordinator's log line `nbd export listening addr=...`.
async fn nbd_addr(cluster: &Cluster) -> SocketAddr {
    eventually(
        "the nbd export listening",
        Duration::from_secs(30),
        || async {
            cluster
                .coordinator
                .log()
                .lines()
                .find(|l| l.contains("nbd export listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        },
    )
    .await
}

fn uri(addr: SocketAddr) -> String {
    format!("nbd://{addr}/{VOLUME}")
}

/// Whether `tool` is installed; under CI a missing tool fails the test.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed (.ci/run installs it)"
        );
        eprintln!("{tool} is not installed: skipping what needs it");
    }
    found
}

/// Runs a command to completion off the runtime's threads; panics with its output if it fails.
async fn run(program: &str, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within 300 s"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    std::fs::write(path, &data).unwrap();
    data
}

/// `qemu-img convert` of a 64 MiB random image into the export and `nbdcopy` back, byte for
/// byte; again with a node killed (degraded reads and writes); the node back, re-added, and the
/// column checker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_img_in_and_nbdcopy_out_healthy_and_with_a_node_killed() {
    if !have("qemu-img") || !have("nbdcopy") {
        return;
    }
    with_timeout(async {
        let (mut cluster, c, addr) = start(&[], 64 * MIB).await;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let out = dir.path().join("out.img");
        let data = random_file(&src, 64 * MIB as usize, 1);
        let (src_s, out_s, uri) = (
            src.to_str().unwrap().to_owned(),
            out.to_str().unwrap().to_owned(),
            uri(addr),
        );
        run(
            "qemu-img",
            &["convert", "-n", "-f", "raw", "-O", "raw", &src_s, &uri],
        )
        .await;
        run("nbdcopy", &[&uri, &out_s]).await;
        assert!(std::fs::read(&out).unwrap() == data, "healthy read-back");
        // The SDK reads what NBD wrote.
        let got = c.volume(VOLUME).read_at(0, MIB as usize).await.unwrap();
        assert_eq!(&got[..], &data[..MIB as usize]);

        cluster.nodes[2].kill9().await.unwrap();
        eprintln!("node3 killed");
        run("nbdcopy", &[&uri, &out_s]).await;
        assert!(std::fs::read(&out).unwrap() == data, "degraded read-back");
        let second = random_file(&src, 64 * MIB as usize, 2);
        run(
            "qemu-img",
            &["convert", "-n", "-f", "raw", "-O", "raw", &src_s, &uri],
        )
        .await;
        let s = c.volume(VOLUME).status().await.unwrap();
        assert_eq!(s.state, VolumeState::Degraded, "{s:?}");
        run("nbdcopy", &[&uri, &out_s]).await;
        assert!(
            std::fs::read(&out).unwrap() == second,
            "degraded write read back"
        );

        cluster.nodes[2].restart_on_same_port().await.unwrap();
        eventually("re-added, optimal", Duration::from_secs(120), || async {
            let s = c.volume(VOLUME).status().await.ok()?;
            (s.state == VolumeState::Optimal).then_some(())
        })
        .await;
        run("nbdcopy", &[&uri, &out_s]).await;
        assert!(std::fs::read(&out).unwrap() == second, "after the re-add");
        cluster.check_columns(VOLUME, &[]).await.unwrap();
    })
    .await;
}

/// `qemu-io` patterns over WRITE, WRITE_ZEROES and TRIM; `nbdinfo` shows the size and the
/// block sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_io_patterns_and_nbdinfo() {
    if !have("qemu-io") || !have("nbdinfo") {
        return;
    }
    with_timeout(async {
        let (cluster, _c, addr) = start(&[], 16 * MIB).await;
        let uri = uri(addr);
        let out = run(
            "qemu-io",
            &[
                "-f",
                "raw",
                &uri,
                "-c",
                "write -P 0xab 0 1M",
                "-c",
                "read -P 0xab 0 1M",
                "-c",
                "write -P 0x5c 4k 8k",
                "-c",
                "read -P 0x5c 4k 8k",
                "-c",
                "write -z 256k 64k",
                "-c",
                "read -P 0 256k 64k",
                "-c",
                "discard 512k 128k",
                "-c",
                "read -P 0 512k 128k",
                "-c",
                "read -P 0xab 640k 384k",
                "-c",
                "flush",
            ],
        )
        .await;
        assert!(!out.contains("Pattern verification failed"), "{out}");
        assert!(!out.contains("error"), "{out}");

        let info = run("nbdinfo", &["--json", &uri]).await;
        let json: serde_json::Value = serde_json::from_str(&info).unwrap();
        let export = &json["exports"][0];
        assert_eq!(export["export-size"], 16 * MIB, "{info}");
        assert_eq!(export["block_size_minimum"], 4096, "{info}");
        // RAID 5 over 5 columns of 64 KiB units: 256 KiB stripes.
        assert_eq!(export["block_size_preferred"], 256 * 1024, "{info}");
        assert_eq!(export["block_size_maximum"], 16 * MIB, "{info}");
        assert_eq!(export["can_multi_conn"], true, "{info}");
        assert_eq!(export["is_read_only"], false, "{info}");
        cluster.check_columns(VOLUME, &[]).await.unwrap();
    })
    .await;
}

/// fio through its NBD engine, verified with crc32c: random 4 KiB writes at QD 16 and
/// sequential 1 MiB writes, then the column checker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fio_random_and_sequential_writes_verify() {
    if !have("fio") {
        return;
    }
    with_timeout(async {
        let (cluster, _c, addr) = start(&[], 32 * MIB).await;
        let uri = uri(addr);
        for (name, rw, bs) in [("rand4k", "randwrite", "4k"), ("seq1m", "write", "1M")] {
            run(
                "fio",
                &[
                    &format!("--name={name}"),
                    "--ioengine=nbd",
                    &format!("--uri={uri}"),
                    &format!("--rw={rw}"),
                    &format!("--bs={bs}"),
                    "--iodepth=16",
                    "--size=16M",
                    "--verify=crc32c",
                    "--do_verify=1",
                    "--verify_fatal=1",
                    "--randrepeat=1",
                    // No verify-state files in the working directory.
                    "--verify_state_save=0",
                ],
            )
            .await;
        }
        cluster.check_columns(VOLUME, &[]).await.unwrap();
    })
    .await;
}

/// A file system made and checked on the export: `nbdfuse` shows it as a file, a loop device
/// with 4 KiB sectors over that file gives `mkfs.ext4` and `e2fsck` a block device whose I/O
/// is in whole blocks of the volume (nbdfuse passes a 512-byte write on as it is, which the
/// export refuses: its minimum block size is 4 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkfs_ext4_and_e2fsck_through_nbdfuse_and_a_loop_device() {
    if !have("nbdfuse") || !have("mkfs.ext4") || !have("e2fsck") || !have("losetup") {
        return;
    }
    if !Path::new("/dev/fuse").exists() || !Path::new("/dev/loop-control").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no /dev/fuse or /dev/loop-control"
        );
        eprintln!("no /dev/fuse or /dev/loop-control: skipping");
        return;
    }
    with_timeout(async {
        let (cluster, _c, addr) = start(&[], 64 * MIB).await;
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let mount_s = mount.to_str().unwrap().to_owned();
        let mut fuse = tokio::process::Command::new("nbdfuse")
            .args([&mount_s, &uri(addr)])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let file = mount.join("nbd");
        eventually("nbdfuse mounted", Duration::from_secs(30), || async {
            std::fs::metadata(&file)
                .ok()
                .filter(|m| m.len() == 64 * MIB)
                .map(|_| ())
        })
        .await;
        let file_s = file.to_str().unwrap().to_owned();
        let loop_dev = run(
            "losetup",
            &["--find", "--show", "--sector-size", "4096", &file_s],
        )
        .await
        .trim()
        .to_owned();
        let made = tokio::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", &loop_dev])
            .output()
            .await
            .unwrap();
        let checked = tokio::process::Command::new("e2fsck")
            .args(["-f", "-n", &loop_dev])
            .output()
            .await
            .unwrap();
        let _ = tokio::process::Command::new("losetup")
            .args(["-d", &loop_dev])
            .status()
            .await;
        let _ = tokio::process::Command::new("fusermount3")
            .args(["-u", &mount_s])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), fuse.wait())
            .await
            .is_err()
        {
            let _ = fuse.kill().await;
        }
        assert!(
            made.status.success(),
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        assert!(
            checked.status.success(),
            "e2fsck: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        cluster.check_columns(VOLUME, &[]).await.unwrap();
    })
    .await;
}

/// A raw protocol client: the handshake up to transmission, by hand, over plain TCP or (after
/// [`Raw::starttls`]) TLS.
struct Raw<S = TcpStream> {
    stream: S,
}

const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const OPT_STARTTLS: u32 = 5;
const REP_ERR_INVALID: u32 = (1 << 31) | 3;
const REP_ERR_TLS_REQD: u32 = (1 << 31) | 5;

impl Raw<TcpStream> {
    async fn connect(addr: SocketAddr) -> Raw {
        // Fixed newstyle and no zeroes.
        Raw::connect_with_flags(addr, 3).await
    }

    async fn connect_with_flags(addr: SocketAddr, flags: u32) -> Raw {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut greeting = [0u8; 18];
        stream.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        assert_eq!(&greeting[8..16], b"IHAVEOPT");
        assert_eq!(
            &greeting[16..],
            &3u16.to_be_bytes(),
            "fixed newstyle, no zeroes"
        );
        stream.write_all(&flags.to_be_bytes()).await.unwrap();
        Raw { stream }
    }

    /// `NBD_OPT_STARTTLS`, acknowledged, then the TLS handshake with `files` (verifying the
    /// coordinator's name).
    async fn starttls(
        mut self,
        files: &TlsFiles,
    ) -> std::io::Result<Raw<tokio_rustls::client::TlsStream<TcpStream>>> {
        self.option(OPT_STARTTLS, &[]).await;
        assert_eq!(
            self.option_replies().await,
            vec![1],
            "STARTTLS acknowledged"
        );
        let config = ClientTls::load(files.clone()).unwrap().config();
        let name = rustls_pki_types::ServerName::try_from(Role::Coordinator.dns_name()).unwrap();
        let mut stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, self.stream)
            .await?;
        // TLS 1.3: the server judges the client's certificate after the client's side is
        // done; a refusal shows as the connection closing.
        stream.flush().await?;
        Ok(Raw { stream })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    async fn option(&mut self, code: u32, data: &[u8]) {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&code.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.stream.write_all(&b).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// One option reply: (type, payload); `None` when the server closed the connection.
    async fn option_reply(&mut self) -> Option<(u32, Vec<u8>)> {
        let mut h = [0u8; 20];
        self.stream.read_exact(&mut h).await.ok()?;
        assert_eq!(
            u64::from_be_bytes(h[0..8].try_into().unwrap()),
            OPT_REPLY_MAGIC
        );
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        self.stream.read_exact(&mut data).await.ok()?;
        Some((kind, data))
    }

    /// Replies up to the final one (ACK or an error): their types.
    async fn option_replies(&mut self) -> Vec<u32> {
        let mut kinds = Vec::new();
        loop {
            let (kind, _) = self.option_reply().await.expect("a reply");
            kinds.push(kind);
            if kind == 1 || kind & (1 << 31) != 0 {
                return kinds;
            }
        }
    }

    async fn go(&mut self, name: &str) {
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&3u16.to_be_bytes());
        self.option(7, &data).await;
        assert_eq!(self.option_replies().await, vec![3, 3, 1]);
    }

    async fn request(&mut self, kind: u16, handle: u64, offset: u64, data: &[u8], len: u32) {
        let mut b = 0x2560_9513u32.to_be_bytes().to_vec();
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&handle.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(data);
        self.stream.write_all(&b).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// A simple reply: (error, handle), then `read` bytes of data when it succeeded.
    async fn reply(&mut self, read: usize) -> Option<(u32, u64, Vec<u8>)> {
        let mut h = [0u8; 16];
        self.stream.read_exact(&mut h).await.ok()?;
        assert_eq!(&h[0..4], &0x6744_6698u32.to_be_bytes());
        let error = u32::from_be_bytes(h[4..8].try_into().unwrap());
        let handle = u64::from_be_bytes(h[8..16].try_into().unwrap());
        let mut data = vec![0u8; if error == 0 { read } else { 0 }];
        self.stream.read_exact(&mut data).await.ok()?;
        Some((error, handle, data))
    }

    /// Whether the server closed the connection (EOF within a few seconds).
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// Malformed and invalid input: the right reply, or a clean disconnect; never a write half
/// done, and the connection goes on after a request it could answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_invalid_input_is_refused() {
    with_timeout(async {
        let (cluster, c, addr) = start(&[], 16 * MIB).await;

        // Unknown option: ERR_UNSUP; unknown export: ERR_UNKNOWN; INFO without block sizes:
        // the infos, then ERR_BLOCK_SIZE_REQD; LIST names the volume.
        let mut raw = Raw::connect(addr).await;
        raw.option(42, &[]).await;
        assert_eq!(raw.option_replies().await, vec![(1 << 31) | 1]);
        let mut go = 4u32.to_be_bytes().to_vec();
        go.extend_from_slice(b"nope");
        go.extend_from_slice(&0u16.to_be_bytes());
        raw.option(7, &go).await;
        assert_eq!(raw.option_replies().await, vec![(1 << 31) | 6]);
        let mut info = (VOLUME.len() as u32).to_be_bytes().to_vec();
        info.extend_from_slice(VOLUME.as_bytes());
        info.extend_from_slice(&0u16.to_be_bytes());
        raw.option(6, &info).await;
        assert_eq!(raw.option_replies().await, vec![3, 3, (1 << 31) | 8]);
        raw.option(6, &go[..3]).await;
        assert_eq!(raw.option_replies().await, vec![(1 << 31) | 3], "malformed");
        raw.option(3, &[]).await;
        let (kind, entry) = raw.option_reply().await.unwrap();
        assert_eq!(kind, 2);
        assert_eq!(&entry[4..], VOLUME.as_bytes());
        assert_eq!(raw.option_replies().await, vec![1]);
        // ABORT: ACK, then closed.
        raw.option(2, &[]).await;
        assert_eq!(raw.option_replies().await, vec![1]);
        assert!(raw.closed().await);

        // Bad option magic: disconnect.
        let mut raw = Raw::connect(addr).await;
        raw.stream.write_all(&[0u8; 16]).await.unwrap();
        assert!(raw.closed().await, "bad option magic");
        // An option payload over 64 KiB: disconnect, without reading it.
        let mut raw = Raw::connect(addr).await;
        let mut h = IHAVEOPT.to_be_bytes().to_vec();
        h.extend_from_slice(&7u32.to_be_bytes());
        h.extend_from_slice(&(1u32 << 30).to_be_bytes());
        raw.stream.write_all(&h).await.unwrap();
        assert!(raw.closed().await, "oversized option");
        // More than 32 options before GO: disconnect.
        let mut raw = Raw::connect(addr).await;
        for _ in 0..32 {
            raw.option(42, &[]).await;
            assert_eq!(raw.option_replies().await, vec![(1 << 31) | 1]);
        }
        raw.option(42, &[]).await;
        assert!(raw.closed().await, "33rd option");
        // Unknown client flags: disconnect.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).await.unwrap();
        s.write_all(&0x80u32.to_be_bytes()).await.unwrap();
        let mut raw = Raw { stream: s };
        assert!(raw.closed().await, "unknown client flags");

        // Transmission: a write, then invalid requests, each answered, the connection alive.
        let mut raw = Raw::connect(addr).await;
        raw.go(VOLUME).await;
        let block = vec![0x77u8; 4096];
        raw.request(1, 1, 8192, &block, 4096).await;
        assert_eq!(raw.reply(0).await.unwrap(), (0, 1, vec![]));
        // Unaligned write (its payload is read and dropped): EINVAL, nothing written.
        raw.request(1, 2, 8192 + 512, &[0x11; 512], 512).await;
        assert_eq!(raw.reply(0).await.unwrap().0, 22);
        // Beyond the end: ENOSPC for a write, EINVAL for a read.
        raw.request(1, 3, 16 * MIB, &block, 4096).await;
        assert_eq!(raw.reply(0).await.unwrap().0, 28);
        raw.request(0, 4, 16 * MIB - 4096, &[], 8192).await;
        assert_eq!(raw.reply(0).await.unwrap().0, 22);
        // Zero length, an unknown command, a read over the maximum: EINVAL.
        raw.request(0, 5, 0, &[], 0).await;
        assert_eq!(raw.reply(0).await.unwrap().0, 22);
        raw.request(99, 6, 0, &[], 4096).await;
        assert_eq!(raw.reply(0).await.unwrap().0, 22);
        raw.request(0, 7, 0, &[], 32 << 20).await;
        assert_eq!(raw.reply(0).await.unwrap().0, 22);
        // Still serving: the first write reads back, the unaligned one left no trace.
        raw.request(0, 8, 8192, &[], 4096).await;
        assert_eq!(raw.reply(4096).await.unwrap(), (0, 8, block.clone()));
        // A write payload over the maximum: disconnect, without reading it.
        raw.request(1, 9, 0, &[], 64 << 20).await;
        assert!(raw.closed().await, "oversized write");
        // Bad request magic: disconnect.
        let mut raw = Raw::connect(addr).await;
        raw.go(VOLUME).await;
        raw.stream.write_all(&[0u8; 28]).await.unwrap();
        assert!(raw.closed().await, "bad request magic");

        // Many requests in flight on one connection, answered by handle.
        let mut raw = Raw::connect(addr).await;
        raw.go(VOLUME).await;
        for i in 0..32u64 {
            raw.request(1, 100 + i, i * 65536, &vec![i as u8; 65536], 65536)
                .await;
        }
        let mut handles: Vec<u64> = Vec::new();
        for _ in 0..32 {
            let (error, handle, _) = raw.reply(0).await.unwrap();
            assert_eq!(error, 0);
            handles.push(handle);
        }
        handles.sort_unstable();
        assert_eq!(handles, (100..132).collect::<Vec<_>>());
        raw.request(3, 200, 0, &[], 0).await;
        assert_eq!(raw.reply(0).await.unwrap(), (0, 200, vec![]), "flush");
        raw.request(2, 201, 0, &[], 0).await;
        assert!(raw.closed().await, "DISC");
        let got = c.volume(VOLUME).read_at(31 * 65536, 65536).await.unwrap();
        assert!(got.iter().all(|&b| b == 31));
        cluster.check_columns(VOLUME, &[]).await.unwrap();
    })
    .await;
}

/// `--nbd-read-only`: the export says so and writes answer EPERM; a non-loopback address is
/// refused at start without `--nbd-insecure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_exports_and_the_loopback_rule() {
    with_timeout(async {
        let (_cluster, _c, addr) = start(&["--nbd-read-only"], 16 * MIB).await;
        let mut raw = Raw::connect(addr).await;
        let mut data = (VOLUME.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(VOLUME.as_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&3u16.to_be_bytes());
        raw.option(7, &data).await;
        let (kind, export) = raw.option_reply().await.unwrap();
        assert_eq!(kind, 3);
        let flags = u16::from_be_bytes(export[10..12].try_into().unwrap());
        assert_ne!(flags & 2, 0, "NBD_FLAG_READ_ONLY");
        assert_eq!(raw.option_replies().await, vec![3, 1]);
        raw.request(1, 1, 0, &[1; 4096], 4096).await;
        assert_eq!(raw.reply(0).await.unwrap().0, 1, "EPERM");
        raw.request(0, 2, 0, &[], 4096).await;
        assert_eq!(raw.reply(4096).await.unwrap().0, 0, "reads are served");

        let dir = tempfile::tempdir().unwrap();
        let out =
            tokio::process::Command::new(dagraid_tests::cluster::coordinator_binary().unwrap())
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    dir.path().to_str().unwrap(),
                    "--nbd-listen",
                    "0.0.0.0:0",
                    // Plaintext: the rule is about an export without TLS.
                    "--insecure",
                ])
                .output()
                .await
                .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--nbd-insecure"), "{stderr}");
    })
    .await;
}

/// A client silent in the handshake, and one that sent half of a write's payload, do not hold
/// up a clean stop (SIGTERM: exit 0); the half-sent write was never started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_do_not_hold_up_a_clean_stop() {
    with_timeout(async {
        let (mut cluster, _c, addr) = start(&[], 16 * MIB).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut raw = Raw::connect(addr).await;
        raw.go(VOLUME).await;
        // 8 KiB announced, 4 KiB sent.
        raw.request(1, 1, 65536, &[0xee; 4096], 8192).await;
        let status = cluster.coordinator.terminate().await.unwrap();
        assert!(status.success(), "{status}");
        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        dagraid_tests::harness::settled(&c, VOLUME).await;
        let got = c.volume(VOLUME).read_at(65536, 8192).await.unwrap();
        assert!(
            got.iter().all(|&b| b == 0),
            "the half-sent write was not applied"
        );
    })
    .await;
}

// ---- TLS (issue 24): `--nbd-tls`, `nbds://` URIs, NBD_OPT_STARTTLS by hand ----

/// A directory as libnbd's `tls-certificates=` wants it: `ca-cert.pem`, and `client-cert.pem`
/// with `client-key.pem` when `client` is given.
fn libnbd_certs(dir: &Path, ca: &Path, client: Option<&TlsFiles>) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(ca, dir.join("ca-cert.pem")).unwrap();
    if let Some(TlsFiles {
        cert: Some(cert),
        key: Some(key),
        ..
    }) = client
    {
        std::fs::copy(cert, dir.join("client-cert.pem")).unwrap();
        std::fs::copy(key, dir.join("client-key.pem")).unwrap();
    }
    dir.to_str().unwrap().to_owned()
}

fn nbds_uri(addr: SocketAddr, certs: &str) -> String {
    format!("nbds://{addr}/{VOLUME}?tls-certificates={certs}")
}

/// libnbd 1.14 checks the URI's host against the server's certificate and has no way to name
/// another: a new coordinator certificate that also names 127.0.0.1 (test only), picked up by
/// SIGHUP, once the API serves it (the NBD config is rebuilt in the same reload).
async fn name_the_coordinator_127_0_0_1(cluster: &Cluster) {
    let pki = cluster.pki.as_ref().expect("a TLS cluster");
    let files = pki.files(&Role::Coordinator).unwrap();
    let (cert, key) = (files.cert.clone().unwrap(), files.key.clone().unwrap());
    pki.pki()
        .issue_naming(
            &Role::Coordinator,
            &["127.0.0.1".parse().unwrap()],
            &cert,
            &key,
        )
        .unwrap();
    cluster.coordinator.hangup().await.unwrap();
    let new_der = dagraid_tests::tls::first_certificate(&std::fs::read(&cert).unwrap());
    let client = cluster.client_tls().unwrap().unwrap();
    let addr = cluster.coordinator.addr();
    eventually(
        "the coordinator serves its new certificate",
        Duration::from_secs(20),
        || {
            let (client, new_der) = (client.clone(), new_der.clone());
            async move {
                let served =
                    dagraid_tests::tls::served_certificate(addr, &client, &Role::Coordinator)
                        .await
                        .ok()?;
                (served == new_der).then_some(())
            }
        },
    )
    .await;
}

/// Runs a command to completion: whether it succeeded, and its stderr.
async fn attempt(program: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(program).args(args).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within 120 s"))
    .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--nbd-tls require`: `nbdinfo` and `nbdcopy` over `nbds://` with the cluster's client
/// certificate, the write read back byte for byte through the SDK; a plaintext `nbd://` client,
/// a TLS client without a certificate, with one from another CA, or with a node's certificate,
/// are all refused, and nothing they sent is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_and_nbdcopy_over_required_tls() {
    if !have("nbdinfo") || !have("nbdcopy") {
        return;
    }
    with_timeout(async {
        let (cluster, c, addr) = start_with(true, &["--nbd-tls", "require"], 16 * MIB).await;
        let pki = cluster.pki.as_ref().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = pki.pki().ca();
        let client_files = pki.files(&Role::Client).unwrap();
        let good = libnbd_certs(&dir.path().join("good"), &ca, Some(&client_files));
        let src = dir.path().join("src.img");
        let data = random_file(&src, 16 * MIB as usize, 7);
        let src_s = src.to_str().unwrap().to_owned();

        // The certificate names coordinator.dagraid only; libnbd checks 127.0.0.1.
        let (ok, stderr) = attempt("nbdinfo", &[&nbds_uri(addr, &good)]).await;
        assert!(!ok, "nbdinfo accepted a certificate not naming 127.0.0.1");
        eprintln!("nbdinfo before the certificate names 127.0.0.1: {stderr}");
        name_the_coordinator_127_0_0_1(&cluster).await;

        // Plaintext is refused, and a plaintext copy writes nothing.
        let (ok, stderr) = attempt("nbdinfo", &[&uri(addr)]).await;
        assert!(!ok, "plaintext nbdinfo succeeded under --nbd-tls require");
        eprintln!("plaintext nbdinfo: {stderr}");
        let (ok, _) = attempt("nbdcopy", &[&src_s, &uri(addr)]).await;
        assert!(!ok, "plaintext nbdcopy succeeded under --nbd-tls require");
        let got = c.volume(VOLUME).read_at(0, MIB as usize).await.unwrap();
        assert!(got.iter().all(|&b| b == 0), "a plaintext client wrote");

        // Strangers: no client certificate, one from another CA, a node's.
        let other = dagraid_tests::tls::TestPki::new().unwrap();
        let strangers = [
            ("none", None),
            ("other-ca", Some(other.files(&Role::Client).unwrap())),
            (
                "node",
                Some(pki.files(&Role::Node("node1".into())).unwrap()),
            ),
        ];
        for (name, files) in &strangers {
            let certs = libnbd_certs(&dir.path().join(name), &ca, files.as_ref());
            let (ok, stderr) = attempt("nbdcopy", &[&src_s, &nbds_uri(addr, &certs)]).await;
            assert!(!ok, "a TLS client with certificate {name:?} was let in");
            eprintln!("nbdcopy with certificate {name:?}: {stderr}");
        }
        let got = c.volume(VOLUME).read_at(0, MIB as usize).await.unwrap();
        assert!(got.iter().all(|&b| b == 0), "a refused TLS client wrote");

        // The cluster's client certificate: served over TLS.
        let info = run("nbdinfo", &[&nbds_uri(addr, &good)]).await;
        assert!(info.contains("with TLS"), "{info}");
        run("nbdcopy", &[&src_s, &nbds_uri(addr, &good)]).await;
        let got = c.volume(VOLUME).read_at(0, data.len()).await.unwrap();
        assert!(
            got[..] == data[..],
            "the SDK reads what nbdcopy wrote over TLS"
        );
        let out = dir.path().join("out.img");
        run("nbdcopy", &[&nbds_uri(addr, &good), out.to_str().unwrap()]).await;
        assert!(
            std::fs::read(&out).unwrap() == data,
            "nbdcopy reads it back"
        );
        cluster.check_columns(VOLUME, &[]).await.unwrap();
    })
    .await;
}

/// A TLS cluster's default (`--nbd-tls on`): plaintext still served, and `nbds://` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offered_tls_serves_both() {
    if !have("nbdinfo") {
        return;
    }
    with_timeout(async {
        let (cluster, _c, addr) = start_with(true, &[], 16 * MIB).await;
        name_the_coordinator_127_0_0_1(&cluster).await;
        let pki = cluster.pki.as_ref().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let certs = libnbd_certs(
            dir.path(),
            &pki.pki().ca(),
            Some(&pki.files(&Role::Client).unwrap()),
        );
        let plain = run("nbdinfo", &[&uri(addr)]).await;
        assert!(plain.contains("without TLS"), "{plain}");
        let tls = run("nbdinfo", &[&nbds_uri(addr, &certs)]).await;
        assert!(tls.contains("with TLS"), "{tls}");
    })
    .await;
}

/// The negotiation under `--nbd-tls require`, by hand: NBD_REP_ERR_TLS_REQD before TLS, the
/// export after NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID for a second one; NBD_OPT_EXPORT_NAME
/// before TLS, or a client without fixed newstyle, is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_negotiation_by_hand() {
    with_timeout(async {
        let (cluster, c, addr) = start_with(true, &["--nbd-tls", "require"], 16 * MIB).await;
        let pki = cluster.pki.as_ref().unwrap();

        let mut raw = Raw::connect(addr).await;
        for code in [3, 6, 7, 42] {
            raw.option(code, &[]).await;
            assert_eq!(
                raw.option_replies().await,
                vec![REP_ERR_TLS_REQD],
                "option {code}"
            );
        }
        raw.option(OPT_STARTTLS, &[1]).await;
        assert_eq!(
            raw.option_replies().await,
            vec![REP_ERR_INVALID],
            "STARTTLS with data"
        );
        let mut tls = raw
            .starttls(&pki.files(&Role::Client).unwrap())
            .await
            .unwrap();
        tls.option(3, &[]).await;
        assert_eq!(tls.option_replies().await, vec![2, 1], "LIST over TLS");
        tls.option(OPT_STARTTLS, &[]).await;
        assert_eq!(
            tls.option_replies().await,
            vec![REP_ERR_INVALID],
            "a second STARTTLS"
        );
        tls.go(VOLUME).await;
        tls.request(1, 1, 65536, &[0x7e; 4096], 4096).await;
        assert_eq!(tls.reply(0).await.unwrap(), (0, 1, vec![]));
        tls.request(0, 2, 65536, &[], 4096).await;
        assert_eq!(tls.reply(4096).await.unwrap(), (0, 2, vec![0x7e; 4096]));
        let got = c.volume(VOLUME).read_at(65536, 4096).await.unwrap();
        assert!(
            got.iter().all(|&b| b == 0x7e),
            "the SDK reads the TLS write"
        );

        let mut raw = Raw::connect(addr).await;
        raw.option(1, VOLUME.as_bytes()).await;
        assert!(raw.closed().await, "EXPORT_NAME before TLS");
        let mut raw = Raw::connect_with_flags(addr, 0).await;
        assert!(raw.closed().await, "no fixed newstyle: no TLS possible");
        // A node's certificate chains to the CA but is no client's (serverAuth only): refused.
        let raw = Raw::connect(addr).await;
        let node = pki.files(&Role::Node("node2".into())).unwrap();
        if let Ok(mut tls) = raw.starttls(&node).await {
            assert!(tls.closed().await, "a node's certificate let in");
        }
    })
    .await;
}

/// `--nbd-tls require` lifts the loopback rule; `on` or `require` without TLS material is a
/// start-up error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbd_tls_flags_at_start() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_str().unwrap();
        let coordinator = dagraid_tests::cluster::coordinator_binary().unwrap();
        for mode in ["on", "require"] {
            let out = tokio::process::Command::new(&coordinator)
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    data_dir,
                    "--insecure",
                ])
                .args(["--nbd-listen", "127.0.0.1:0", "--nbd-tls", mode])
                .output()
                .await
                .unwrap();
            assert!(
                !out.status.success(),
                "--nbd-tls {mode} without TLS started"
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("--tls-cert"), "{stderr}");
        }
        let pki = dagraid_tests::tls::TestPki::new().unwrap();
        let mut args = pki.server_args(&Role::Coordinator).unwrap();
        args.extend(["--nbd-listen", "0.0.0.0:0", "--nbd-tls", "require"].map(String::from));
        let mut coordinator = dagraid_tests::cluster::CoordinatorProcess::start(args)
            .await
            .expect("a non-loopback export with TLS required starts");
        let addr = eventually(
            "the nbd export listening",
            Duration::from_secs(30),
            || async {
                coordinator
                    .log()
                    .lines()
                    .find(|l| l.contains("nbd export listening"))
                    .and_then(|l| l.split("addr=").nth(1))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<SocketAddr>().ok())
            },
        )
        .await;
        let mut raw = Raw::connect(SocketAddr::from(([127, 0, 0, 1], addr.port()))).await;
        raw.option(3, &[]).await;
        assert_eq!(raw.option_replies().await, vec![REP_ERR_TLS_REQD]);
        coordinator.terminate().await.unwrap();
    })
    .await;
}
