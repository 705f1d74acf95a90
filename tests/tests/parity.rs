//! Online parity check and rewrite (issue 20, item 1) on real processes, through the `dagraid`
//! CLI: a parity unit written behind the coordinator's back (a valid block with the wrong bytes,
//! as a lost or misdirected write leaves it) is reported by `volume parity check --wait`, that
//! stripe and only that one, with exit code 3; `volume parity rewrite --wait` fixes it; the
//! next check exits 0, the column checker agrees and every byte written reads back. A block
//! corrupted in the component file (its checksum no longer matching) is reported unreadable,
//! not as a mismatch, and the rewrite makes it readable again. A check while a write load runs
//! finds no false mismatch. Refusals: an unknown volume, a job already running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dagraid_client::{Client, ClientError, ClientOptions, RaidLevel, RetryPolicy, VolumeSpec};
use dagraid_coordinator::node_client::{FencingContext, NodeClient, NodeClientConfig};
use dagraid_coordinator::remote::RemoteComponent;
use dagraid_core::io::ComponentIo;
use dagraid_proto::volume::v1 as vpb;
use dagraid_tests::cluster::{Cluster, ClusterOptions, layout_of};
use dagraid_tests::{eventually, with_timeout};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const MIB: u64 = 1024 * 1024;

async fn client(cluster: &Cluster) -> Client {
    Client::connect(
        cluster.url(),
        ClientOptions {
            request_timeout: Duration::from_secs(20),
            retry: RetryPolicy::none(),
            ..cluster.client_options()
        },
    )
    .await
    .expect("connect to the coordinator")
}

async fn start() -> Cluster {
    Cluster::start(ClusterOptions {
        nodes: 4,
        metrics: true,
        coordinator_args: vec!["--scrub-rate".into(), "0".into()],
        ..ClusterOptions::default()
    })
    .await
    .expect("start the cluster")
}

async fn raw_volume(cluster: &Cluster, name: &str) -> vpb::Volume {
    cluster
        .volume_client()
        .await
        .unwrap()
        .get_volume(name)
        .await
        .unwrap()
}

/// `dagraid volume parity <verb> <volume> --wait`: exit code and stdout.
async fn cli(cluster: &Cluster, verb: &str, volume: &str) -> (i32, String) {
    let bin = dagraid_tests::process::binary("dagraid", "DAGRAID_BIN").unwrap();
    let out = tokio::process::Command::new(&bin)
        .args(cluster.cli_args())
        .args(["volume", "parity", verb, volume, "--wait"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// Writes a valid block of garbage into the P unit of `stripe` through its node, at the
/// coordinator's own epoch (the node computes its checksum, so it reads back fine).
async fn overwrite_parity_block(cluster: &Cluster, c: &Client, v: &vpb::Volume, stripe: u64) {
    let epoch = c.cluster_info().await.unwrap().epoch;
    let layout = layout_of(v).unwrap();
    let sl = layout.stripe(stripe).unwrap();
    let comp = &v.components[sl.p_column().unwrap()];
    let node = cluster.node_by_id(&comp.node_id).unwrap();
    // As the coordinator calls it: over TLS with the coordinator's certificate.
    let tls = cluster.pki.as_ref().map(|pki| {
        dagraid_tls::ClientTls::load(pki.files(&dagraid_tls::Role::Coordinator).unwrap()).unwrap()
    });
    let client = NodeClient::for_node(
        &comp.node_id,
        &node.addr().to_string(),
        FencingContext::new("dagraid", epoch),
        NodeClientConfig {
            tls,
            ..NodeClientConfig::default()
        },
    )
    .unwrap();
    let bs = u64::from(v.block_size);
    let remote = RemoteComponent::new(
        client,
        comp.component_id.clone(),
        v.block_size,
        comp.size_bytes / bs,
    )
    .unwrap();
    remote
        .write(
            sl.component_blocks().first,
            Bytes::from(vec![0x3c; bs as usize]),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_corrupt_stripe_and_rewrite_fixes_it() {
    with_timeout(async {
        let cluster = start().await;
        let c = client(&cluster).await;
        let info = c
            .create_volume(VolumeSpec::new("vol", RaidLevel::Raid5, 4 * MIB))
            .await
            .unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut model = vec![0u8; info.size_bytes as usize];
        rng.fill_bytes(&mut model);
        let vol = c.volume("vol");
        vol.write_at(0, Bytes::from(model.clone())).await.unwrap();

        let (code, out) = cli(&cluster, "check", "vol").await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("0 mismatching stripes"), "{out}");

        let v = raw_volume(&cluster, "vol").await;
        let stripe = 9;
        overwrite_parity_block(&cluster, &c, &v, stripe).await;
        let (code, out) = cli(&cluster, "check", "vol").await;
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("1 mismatching stripes"), "{out}");
        assert!(
            out.contains(&format!("mismatching stripes: {stripe}\n")),
            "{out}"
        );
        let job = c
            .volume("vol")
            .describe()
            .await
            .unwrap()
            .parity_job
            .unwrap();
        assert_eq!(job.mismatched_stripes, vec![stripe]);
        assert!(
            cluster.coordinator.log().contains("parity mismatch"),
            "the mismatch is logged"
        );
        let metrics = cluster.coordinator.scrape().await.unwrap();
        assert!(
            metrics.contains("dagraid_parity_mismatches_total{volume=\"vol\"} 1"),
            "{metrics}"
        );

        // A block whose checksum no longer matches: unreadable, not a mismatch.
        let layout = layout_of(&v).unwrap();
        let sl = layout.stripe(3).unwrap();
        let p = &v.components[sl.p_column().unwrap()];
        cluster
            .node_by_id(&p.node_id)
            .unwrap()
            .corrupt_block(
                &p.component_id,
                u64::from(v.block_size),
                sl.component_blocks().first,
            )
            .unwrap();
        let (code, out) = cli(&cluster, "check", "vol").await;
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("1 unreadable blocks"), "{out}");
        assert!(
            out.contains(&format!("mismatching stripes: {stripe}\n")),
            "{out}"
        );

        let (code, out) = cli(&cluster, "rewrite", "vol").await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("parity rewrite done"), "{out}");
        let (code, out) = cli(&cluster, "check", "vol").await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("0 mismatching stripes"), "{out}");
        assert!(!out.contains("unreadable"), "{out}");
        cluster.check_columns("vol", &[]).await.unwrap();
        assert!(vol.read_at(0, info.size_bytes as usize).await.unwrap()[..] == model[..]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_under_a_write_load_finds_no_false_mismatch_and_refusals() {
    with_timeout(async {
        let cluster = start().await;
        let c = client(&cluster).await;
        let info = c
            .create_volume(VolumeSpec::new("vol", RaidLevel::Raid6, 4 * MIB))
            .await
            .unwrap();
        let size = info.size_bytes;
        let model = Arc::new(std::sync::Mutex::new(vec![0u8; size as usize]));
        let stop = Arc::new(AtomicBool::new(false));
        // Writers on disjoint ranges, so the model is exact.
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let vol = c.volume("vol");
                let model = model.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(100 + w);
                    let half = size / 2;
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) || n < 10 {
                        let len = rng.random_range(1..48 * 1024u64);
                        let at = w * half + rng.random_range(0..half - len);
                        let mut data = vec![0u8; len as usize];
                        rng.fill_bytes(&mut data);
                        vol.write_at(at, Bytes::from(data.clone())).await.unwrap();
                        model.lock().unwrap()[at as usize..(at + len) as usize]
                            .copy_from_slice(&data);
                        n += 1;
                    }
                })
            })
            .collect();
        for _ in 0..2 {
            let (code, out) = cli(&cluster, "check", "vol").await;
            assert_eq!(code, 0, "{out}");
            assert!(out.contains("0 mismatching stripes"), "{out}");
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }

        // Refusals.
        assert!(matches!(
            c.check_parity("nope", None).await,
            Err(ClientError::UnknownVolume { .. })
        ));
        c.rewrite_parity("vol", Some(1)).await.unwrap();
        let refused = c.check_parity("vol", None).await;
        assert!(
            matches!(&refused, Err(ClientError::ParityRefused { message }) if message.contains("already running")),
            "{refused:?}"
        );
        let job = eventually("the job shows in status", Duration::from_secs(10), || async {
            c.volume("vol").describe().await.unwrap().parity_job.filter(|j| j.running)
        })
        .await;
        assert_eq!(job.rate_limit_bytes_per_second, 1);

        cluster.check_columns("vol", &[]).await.unwrap();
        let model = model.lock().unwrap().clone();
        assert!(c.volume("vol").read_at(0, size as usize).await.unwrap()[..] == model[..]);
    })
    .await;
}

/// A parity check cut short by a kill -9 of the coordinator resumes from its checkpoint once the
/// volume is assembled again, with the counts it had: the mismatch found before the crash is
/// still counted, the one after it is found, and no stripe is checked from the first again.
/// Once complete, its checkpoint is gone: a clean restart resumes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_cut_by_a_coordinator_kill9_resumes_from_its_checkpoint() {
    with_timeout(async {
        let mut cluster = Cluster::start(ClusterOptions {
            nodes: 4,
            coordinator_args: vec!["--parity-map-cooldown-ms".into(), "200".into()],
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(VolumeSpec::new("vol", RaidLevel::Raid5, 16 * MIB))
            .await
            .unwrap();
        let mut rng = StdRng::seed_from_u64(17);
        let mut model = vec![0u8; info.size_bytes as usize];
        rng.fill_bytes(&mut model);
        c.volume("vol")
            .write_at(0, Bytes::from(model.clone()))
            .await
            .unwrap();
        // Nothing dirty: the restart's resync rewrites no stripe (it would fix the corruption).
        eventually("the regions cooled down", Duration::from_secs(30), || async {
            let m = c.volume("vol").status().await.ok()?.parity_map?;
            (m.dirty_regions == 0).then_some(())
        })
        .await;
        let v = raw_volume(&cluster, "vol").await;
        let total = layout_of(&v).unwrap().stripes();
        let (early, late) = (2, total - 2);
        overwrite_parity_block(&cluster, &c, &v, early).await;
        overwrite_parity_block(&cluster, &c, &v, late).await;
        // About 4 stripes a second (256 KiB of units per stripe).
        c.check_parity("vol", Some(MIB)).await.unwrap();
        let before = eventually(
            "the check passed the early mismatch and a checkpoint",
            Duration::from_secs(60),
            || async {
                let j = c.volume("vol").describe().await.ok()?.parity_job?;
                (j.running && j.mismatches == 1 && j.stripes_done >= 12).then_some(j)
            },
        )
        .await;
        assert!(before.stripes_done < late, "{before:?}");
        cluster.coordinator.kill9().await.unwrap();
        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        let done = eventually(
            "the check resumed and completed",
            Duration::from_secs(90),
            || async {
                let j = c.volume("vol").describe().await.ok()?.parity_job?;
                j.completed.then_some(j)
            },
        )
        .await;
        assert!(
            done.resumed_from > 0 && done.resumed_from <= before.stripes_done,
            "resumed from the checkpoint, not from the first stripe: {done:?} (at the kill: {before:?})"
        );
        assert_eq!(done.mismatches, 2, "{done:?}");
        assert_eq!(done.mismatched_stripes, vec![early, late], "{done:?}");
        let log = cluster.coordinator.log();
        assert!(
            log.contains("parity job resumes from its checkpoint"),
            "{log}"
        );

        // Fix the parity, then a clean restart resumes nothing (the checkpoint is gone).
        c.rewrite_parity("vol", None).await.unwrap();
        eventually("the rewrite completed", Duration::from_secs(60), || async {
            let j = c.volume("vol").describe().await.ok()?.parity_job?;
            (j.completed && j.kind == dagraid_client::ParityJobKind::Rewrite).then_some(())
        })
        .await;
        cluster.coordinator.terminate().await.unwrap();
        cluster.coordinator.restart().await.unwrap();
        let c = client(&cluster).await;
        eventually("assembled", Duration::from_secs(30), || async {
            let v = c.volume("vol").status().await.ok()?;
            (v.state == dagraid_client::VolumeState::Optimal).then_some(())
        })
        .await;
        assert!(
            c.volume("vol").describe().await.unwrap().parity_job.is_none(),
            "a completed job leaves no checkpoint"
        );
        cluster.check_columns("vol", &[]).await.unwrap();
        assert!(c.volume("vol").read_at(0, model.len()).await.unwrap()[..] == model[..]);
    })
    .await;
}
