//! Online parity check and rewrite over real storage nodes, in process: a parity unit written
//! behind the coordinator's back (a valid block with the wrong bytes) is found by `CheckParity`,
//! exactly that stripe; `RewriteParity` fixes it, the next check finds nothing, the column
//! checker agrees and every byte reads back. A check beside a write load finds no false
//! mismatch. The refusals: unknown volume, RAID 0, a job already running.

mod common;

use std::time::Duration;

use common::*;
use dagraid_coordinator::node_client::{FencingContext, NodeClientConfig};
use dagraid_coordinator::remote::RemoteComponent;
use dagraid_core::io::ComponentIo;
use dagraid_proto::volume::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

const MIB: u64 = 1 << 20;

async fn volume(client: &mut Client, name: &str) -> pb::Volume {
    client
        .get_volume(pb::GetVolumeRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Fills the volume with random bytes; returns them.
async fn fill(client: &mut Client, name: &str, size: u64, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let model = random_bytes(&mut rng, size as usize);
    for at in (0..size).step_by(256 * 1024) {
        let end = (at + 256 * 1024).min(size);
        client
            .write(pb::WriteRequest {
                volume: name.into(),
                offset: at,
                data: model[at as usize..end as usize].to_vec().into(),
            })
            .await
            .unwrap();
    }
    model
}

async fn read_all(client: &mut Client, name: &str, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size as usize);
    let mut at = 0;
    while at < size {
        let n = MIB.min(size - at);
        let r = client
            .read(pb::ReadRequest {
                volume: name.into(),
                offset: at,
                length: n,
            })
            .await
            .unwrap()
            .into_inner();
        out.extend_from_slice(&r.data);
        at += n;
    }
    out
}

/// Writes one block of garbage (with a good checksum: the node computes it) into the P unit of
/// `stripe`, through the node at the coordinator's own epoch, as a bug or a lost write would
/// leave it. Returns the column.
async fn corrupt_parity(
    cluster: &Cluster,
    client: &mut Client,
    v: &pb::Volume,
    stripe: u64,
) -> usize {
    let epoch = client
        .get_cluster_info(pb::GetClusterInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .epoch;
    let layout = layout_of(v);
    let sl = layout.stripe(stripe).unwrap();
    let column = sl.p_column().unwrap();
    let c = &v.components[column];
    let node = dagraid_coordinator::node_client::NodeClient::new(
        &cluster.node(&c.node_id).addr().to_string(),
        FencingContext::new("dagraid", epoch),
        NodeClientConfig::default(),
    )
    .unwrap();
    let remote = RemoteComponent::new(
        node,
        c.component_id.clone(),
        v.block_size,
        c.size_bytes / u64::from(v.block_size),
    )
    .unwrap();
    let garbage = vec![0xa5u8; v.block_size as usize];
    remote
        .write(sl.component_blocks().first + 1, garbage.into())
        .await
        .unwrap();
    column
}

/// Waits for the volume's parity job to end; returns it.
async fn finished(client: &mut Client, name: &str) -> pb::ParityJob {
    eventually(Duration::from_secs(60), "parity job done", || {
        let mut c = client.clone();
        async move {
            let v = volume(&mut c, name).await;
            v.parity_job.filter(|j| !j.running)
        }
    })
    .await
}

fn request(name: &str, rate: u64) -> pb::ParityRequest {
    pb::ParityRequest {
        volume: name.into(),
        rate_bytes_per_second: rate,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_the_corrupt_stripe_and_rewrite_fixes_it() {
    with_timeout(async {
        let cluster = Cluster::start(4, |_| {}).await;
        let mut client = cluster.client().await;
        let v = client
            .create_volume(create("vol", pb::RaidLevel::Raid5, 4 * MIB))
            .await
            .unwrap()
            .into_inner();
        let model = fill(&mut client, "vol", v.size_bytes, 1).await;

        let started = client
            .check_parity(request("vol", 0))
            .await
            .unwrap()
            .into_inner();
        let job = started.parity_job.unwrap();
        assert_eq!(job.kind, pb::ParityJobKind::Check as i32);
        let clean = finished(&mut client, "vol").await;
        assert!(clean.completed, "{clean:?}");
        assert_eq!(clean.mismatches, 0, "{clean:?}");
        assert_eq!(clean.stripes_done, clean.stripes_total);

        let stripe = 5;
        corrupt_parity(&cluster, &mut client, &v, stripe).await;
        client.check_parity(request("vol", 0)).await.unwrap();
        let found = finished(&mut client, "vol").await;
        assert!(found.completed, "{found:?}");
        assert_eq!(found.mismatches, 1, "{found:?}");
        assert_eq!(found.mismatched_stripes, vec![stripe]);
        let text = cluster.coordinator.as_ref().unwrap().metrics().render();
        assert!(
            text.contains("dagraid_parity_mismatches_total{volume=\"vol\"} 1"),
            "{text}"
        );

        client.rewrite_parity(request("vol", 0)).await.unwrap();
        let rewritten = finished(&mut client, "vol").await;
        assert!(rewritten.completed, "{rewritten:?}");
        assert_eq!(rewritten.kind, pb::ParityJobKind::Rewrite as i32);
        assert_eq!(rewritten.rewritten_stripes, rewritten.stripes_total);

        client.check_parity(request("vol", 0)).await.unwrap();
        let after = finished(&mut client, "vol").await;
        assert_eq!(after.mismatches, 0, "{after:?}");
        let v = volume(&mut client, "vol").await;
        check_columns(&cluster, &v, Some(&model)).await;
        assert!(read_all(&mut client, "vol", v.size_bytes).await == model);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_under_writes_finds_no_false_mismatch() {
    with_timeout(async {
        let cluster = Cluster::start(5, |_| {}).await;
        let mut client = cluster.client().await;
        for (name, level) in [("r5", pb::RaidLevel::Raid5), ("r6", pb::RaidLevel::Raid6)] {
            let v = client
                .create_volume(create(name, level, 2 * MIB))
                .await
                .unwrap()
                .into_inner();
            let size = v.size_bytes;
            fill(&mut client, name, size, 2).await;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let writers: Vec<_> = (0..3u64)
                .map(|w| {
                    let mut c = client.clone();
                    let stop = stop.clone();
                    let name = name.to_owned();
                    tokio::spawn(async move {
                        let mut rng = StdRng::seed_from_u64(10 + w);
                        let mut n = 0;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 20 {
                            let len = rng.random_range(1..64 * 1024u64);
                            let at = rng.random_range(0..size - len);
                            let data = random_bytes(&mut rng, len as usize);
                            c.write(pb::WriteRequest {
                                volume: name.clone(),
                                offset: at,
                                data: data.into(),
                            })
                            .await
                            .unwrap();
                            n += 1;
                        }
                    })
                })
                .collect();
            for _ in 0..2 {
                client.check_parity(request(name, 0)).await.unwrap();
                let job = finished(&mut client, name).await;
                assert!(job.completed, "{job:?}");
                assert_eq!(job.mismatches, 0, "{name}: {job:?}");
                assert_eq!(job.failed_stripes, 0, "{name}: {job:?}");
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for w in writers {
                w.await.unwrap();
            }
            let v = volume(&mut client, name).await;
            check_columns(&cluster, &v, None).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_unknown_volume_raid0_and_a_job_already_running() {
    with_timeout(async {
        let mut cluster = Cluster::start(3, |_| {}).await;
        let mut client = cluster.client().await;
        expect_error(
            client.check_parity(request("nope", 0)).await,
            Code::NotFound,
            "unknown-volume",
        );
        client
            .create_volume(create("r0", pb::RaidLevel::Raid0, 2 * MIB))
            .await
            .unwrap();
        let s = expect_error(
            client.check_parity(request("r0", 0)).await,
            Code::FailedPrecondition,
            "parity-refused",
        );
        assert!(s.message().contains("nothing to check"), "{s:?}");
        client
            .create_volume(create("r5", pb::RaidLevel::Raid5, 4 * MIB))
            .await
            .unwrap();
        // 1 byte per second: the job stays running.
        client.rewrite_parity(request("r5", 1)).await.unwrap();
        let s = expect_error(
            client.check_parity(request("r5", 0)).await,
            Code::FailedPrecondition,
            "parity-refused",
        );
        assert!(s.message().contains("already running"), "{s:?}");
        let v = volume(&mut client, "r5").await;
        let job = v.parity_job.unwrap();
        assert!(job.running);
        assert_eq!(job.rate_limit_bytes_per_second, 1);
        // A coordinator stop ends the job's wait at once.
        let t = std::time::Instant::now();
        cluster.stop_coordinator().await;
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    })
    .await;
}
