//! Volumes through the SDK against a real cluster: every layout round trips random data; a storage
//! node killed (kill -9) or stopped (SIGSTOP) in the middle of a write load fails its column and
//! the load goes on degraded with nothing acknowledged lost; more failures than tolerated give
//! clear errors and never wrong bytes; bad input is refused precisely. Every test ends with the
//! column checker reading the columns straight from the nodes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dagraid_client::{Client, ClientError, ClientOptions, RaidLevel, VolumeSpec, VolumeState};
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::with_timeout;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

async fn client(cluster: &Cluster) -> Client {
    Client::connect(
        cluster.url(),
        ClientOptions {
            request_timeout: Duration::from_secs(30),
            ..cluster.client_options()
        },
    )
    .await
    .expect("connect to the coordinator")
}

fn random(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layout_round_trips_random_data() {
    with_timeout(async {
        let cluster = Cluster::start(ClusterOptions {
            nodes: 6,
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let c = client(&cluster).await;
        let mut rng = StdRng::seed_from_u64(1);
        for (level, columns) in [
            (RaidLevel::Raid0, 3),
            (RaidLevel::Raid1, 4),
            (RaidLevel::Raid4, 4),
            (RaidLevel::Raid5, 5),
            (RaidLevel::Raid6, 6),
        ] {
            let name = format!("v-{}", level.as_str());
            let info = c
                .create_volume(
                    VolumeSpec::new(&name, level, 4 * MIB)
                        .columns(columns)
                        .stripe_unit_bytes(16 * KIB),
                )
                .await
                .unwrap();
            assert_eq!(info.state, VolumeState::Optimal, "{name}");
            // A new volume is consistent before anything is written.
            cluster.check_columns(&name, &[]).await.unwrap();
            let vol = c.volume(&name);
            let size = info.size_bytes;
            let mut reference = vec![0u8; size as usize];
            // One large write across many stripes, then unaligned pieces.
            let big = random(&mut rng, (size / 2) as usize + 777);
            vol.write_at(1000, Bytes::from(big.clone())).await.unwrap();
            reference[1000..1000 + big.len()].copy_from_slice(&big);
            for _ in 0..60 {
                let off = rng.random_range(0..size - 1);
                let len = rng.random_range(1..=(size - off).min(40 * KIB));
                let data = random(&mut rng, len as usize);
                vol.write_at(off, Bytes::from(data.clone())).await.unwrap();
                reference[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            for _ in 0..20 {
                let off = rng.random_range(0..size - 1);
                let len = rng.random_range(1..=(size - off).min(100 * KIB));
                let got = vol.read_at(off, len as usize).await.unwrap();
                assert_eq!(
                    &got[..],
                    &reference[off as usize..(off + len) as usize],
                    "{name}"
                );
            }
            let all = vol.read_at(0, size as usize).await.unwrap();
            assert!(all[..] == reference[..], "{name}: whole volume");
            vol.flush().await.unwrap();
            let cols = cluster.check_columns(&name, &[]).await.unwrap();
            assert_eq!(cols.len(), columns as usize);
        }
        let names: Vec<String> = c
            .list_volumes()
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names.len(), 5);
        c.delete_volume("v-raid0").await.unwrap();
        assert!(matches!(
            c.volume("v-raid0").read_at(0, 1).await,
            Err(ClientError::UnknownVolume { .. })
        ));
    })
    .await;
}

/// Writers on disjoint regions record every acknowledged write; `fail` runs once the load is
/// under way, and a second load follows it. Then everything acknowledged must read back.
async fn load_with_failure<F, Fut>(c: &Client, volume: &str, size: u64, fail: F) -> Vec<u8>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let reference = Arc::new(Mutex::new(
        c.volume(volume)
            .read_at(0, size as usize)
            .await
            .unwrap()
            .to_vec(),
    ));
    let writers = 4u64;
    let region = size / writers;
    let phase = |n: u64| {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let vol = c.volume(volume);
            let reference = reference.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w * 1000 + n);
                for _ in 0..25 {
                    let off = w * region + rng.random_range(0..region - 1);
                    let len = rng.random_range(1..=(w * region + region - off).min(64 * KIB));
                    let data = random(&mut rng, len as usize);
                    vol.write_at(off, Bytes::from(data.clone()))
                        .await
                        .unwrap_or_else(|e| panic!("write {off}+{len}: {e}"));
                    reference.lock().unwrap()[off as usize..(off + len) as usize]
                        .copy_from_slice(&data);
                }
            }))
        }
        tasks
    };
    let first = phase(1);
    fail().await;
    let second = phase(2);
    for t in first.into_iter().chain(second) {
        t.await.unwrap();
    }
    let all = c.volume(volume).read_at(0, size as usize).await.unwrap();
    let reference = reference.lock().unwrap().clone();
    assert!(
        all[..] == reference[..],
        "{volume}: acknowledged writes read back"
    );
    reference
}

/// The cluster index of the node holding `column` of `volume`.
async fn node_of(c: &Client, volume: &str, column: usize) -> usize {
    let info = c.volume(volume).describe().await.unwrap();
    let id = &info.components[column].node_id;
    id.trim_start_matches("node").parse::<usize>().unwrap() - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_node_during_writes_degrades_raid5_and_loses_nothing() {
    with_timeout(async {
        let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(VolumeSpec::new("r5", RaidLevel::Raid5, 8 * MIB).columns(5))
            .await
            .unwrap();
        let victim = node_of(&c, "r5", 2).await;
        load_with_failure(&c, "r5", info.size_bytes, || async {
            cluster.nodes[victim].kill9().await.unwrap();
        })
        .await;
        let status = c.volume("r5").status().await.unwrap();
        assert_eq!(status.state, VolumeState::Degraded);
        assert_eq!(status.components[2].state.as_str(), "failed");
        cluster.check_columns("r5", &[2]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_two_nodes_during_writes_degrades_raid6_and_loses_nothing() {
    with_timeout(async {
        let mut cluster = Cluster::start(ClusterOptions {
            nodes: 6,
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(VolumeSpec::new("r6", RaidLevel::Raid6, 8 * MIB).columns(6))
            .await
            .unwrap();
        let (a, b) = (node_of(&c, "r6", 1).await, node_of(&c, "r6", 4).await);
        load_with_failure(&c, "r6", info.size_bytes, || async {
            cluster.nodes[a].kill9().await.unwrap();
            cluster.nodes[b].kill9().await.unwrap();
        })
        .await;
        let status = c.volume("r6").status().await.unwrap();
        assert_eq!(status.state, VolumeState::Degraded);
        let failed: Vec<u32> = status
            .components
            .iter()
            .filter(|x| x.state.as_str() == "failed")
            .map(|x| x.column)
            .collect();
        assert_eq!(failed, vec![1, 4]);
        cluster.check_columns("r6", &[1, 4]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_failed_by_its_deadline_and_the_load_goes_on() {
    with_timeout(async {
        let cluster = Cluster::start(ClusterOptions {
            node_deadline_ms: 1000,
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(VolumeSpec::new("r5", RaidLevel::Raid5, 4 * MIB).columns(5))
            .await
            .unwrap();
        let victim = node_of(&c, "r5", 0).await;
        load_with_failure(&c, "r5", info.size_bytes, || async {
            cluster.nodes[victim].pause().await.unwrap();
        })
        .await;
        let status = c.volume("r5").status().await.unwrap();
        assert_eq!(status.components[0].state.as_str(), "failed");
        assert_eq!(status.state, VolumeState::Degraded);
        cluster.check_columns("r5", &[0]).await.unwrap();
        cluster.nodes[victim].resume().await.unwrap();
        // Back, it still serves nothing of this volume: once the health loop reaches it again,
        // its column is still failed, and reads stay degraded and correct.
        let before = c.volume("r5").read_at(0, 4096).await.unwrap();
        let node_id = format!("node{}", victim + 1);
        loop {
            let info = c.cluster_info().await.unwrap();
            if info
                .nodes
                .iter()
                .any(|n| n.node_id == node_id && n.reachable)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = c.volume("r5").status().await.unwrap();
        assert_eq!(status.components[0].state.as_str(), "failed");
        assert_eq!(c.volume("r5").read_at(0, 4096).await.unwrap(), before);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_failures_than_tolerated_are_clear_errors_never_wrong_bytes() {
    with_timeout(async {
        let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(VolumeSpec::new("r5", RaidLevel::Raid5, 2 * MIB).columns(5))
            .await
            .unwrap();
        let vol = c.volume("r5");
        let mut rng = StdRng::seed_from_u64(9);
        let data = random(&mut rng, info.size_bytes as usize);
        vol.write_at(0, Bytes::from(data.clone())).await.unwrap();
        let (a, b) = (node_of(&c, "r5", 1).await, node_of(&c, "r5", 3).await);
        cluster.nodes[a].kill9().await.unwrap();
        // One failure: still served.
        assert_eq!(
            vol.read_at(0, 300 * KIB as usize).await.unwrap()[..],
            data[..300 * KIB as usize]
        );
        cluster.nodes[b].kill9().await.unwrap();
        let mut errors = 0;
        for i in 0..20u64 {
            let off = i * 100 * KIB;
            match vol.read_at(off, 4096).await {
                Ok(got) => assert_eq!(
                    got[..],
                    data[off as usize..off as usize + 4096],
                    "never wrong bytes"
                ),
                Err(ClientError::Unrecoverable { message, .. }) => {
                    assert!(message.contains("cannot be served"), "{message}");
                    errors += 1;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert!(errors > 0, "two of five columns gone must fail some reads");
        // A write that touches every column (a whole stripe) cannot complete: an error, and the
        // stripe is then unreadable rather than served half old, half new.
        let stripe = info.stripe_data_bytes().unwrap();
        let w = vol
            .write_at(0, Bytes::from(vec![7u8; stripe as usize]))
            .await;
        assert!(matches!(w, Err(ClientError::TornWrite { .. })), "{w:?}");
        let r = vol.read_at(0, 4096).await;
        assert!(
            matches!(
                r,
                Err(ClientError::Unreadable { .. } | ClientError::Unrecoverable { .. })
            ),
            "{r:?}"
        );
        let status = vol.status().await.unwrap();
        assert!(matches!(
            status.state,
            VolumeState::Degraded | VolumeState::Failed
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_precisely() {
    with_timeout(async {
        let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
        let c = client(&cluster).await;
        let info = c
            .create_volume(VolumeSpec::new("v", RaidLevel::Raid5, MIB).columns(5))
            .await
            .unwrap();
        let size = info.size_bytes;
        let vol = c.volume("v");
        assert!(matches!(
            c.volume("nope").read_at(0, 1).await,
            Err(ClientError::UnknownVolume { .. })
        ));
        assert!(matches!(
            vol.read_at(size - 1, 2).await,
            Err(ClientError::OutOfRange { .. })
        ));
        assert!(matches!(
            vol.write_at(size, Bytes::from_static(b"x")).await,
            Err(ClientError::OutOfRange { .. })
        ));
        assert!(matches!(
            c.create_volume(VolumeSpec::new("v", RaidLevel::Raid5, MIB))
                .await,
            Err(ClientError::VolumeExists { .. })
        ));
        assert!(matches!(
            c.create_volume(VolumeSpec::new("bad name!", RaidLevel::Raid5, MIB))
                .await,
            Err(ClientError::InvalidArgument { .. } | ClientError::BadGeometry { .. })
        ));
        assert!(matches!(
            c.create_volume(VolumeSpec::new("w", RaidLevel::Raid6, MIB).columns(9))
                .await,
            Err(ClientError::NotEnoughNodes { .. } | ClientError::BadGeometry { .. })
        ));
        // Raw calls the SDK would never send: zero length, oversized, no or wrong token.
        let mut raw = cluster.volume_client().await.unwrap();
        let zero = raw.request(dagraid_proto::volume::v1::ReadRequest {
            volume: "v".into(),
            offset: 0,
            length: 0,
        });
        assert_eq!(
            raw.inner.read(zero).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let huge = raw.request(dagraid_proto::volume::v1::ReadRequest {
            volume: "v".into(),
            offset: 0,
            length: 1 << 40,
        });
        let code = raw.inner.read(huge).await.unwrap_err().code();
        assert!(
            matches!(code, tonic::Code::InvalidArgument | tonic::Code::OutOfRange),
            "{code:?}"
        );
        let empty_write = raw.request(dagraid_proto::volume::v1::WriteRequest {
            volume: "v".into(),
            offset: 0,
            data: Bytes::new(),
        });
        assert_eq!(
            raw.inner.write(empty_write).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let oversized = raw.request(dagraid_proto::volume::v1::WriteRequest {
            volume: "v".into(),
            offset: 0,
            data: Bytes::from(vec![0u8; 17 << 20]),
        });
        let code = raw.inner.write(oversized).await.unwrap_err().code();
        assert!(
            matches!(
                code,
                tonic::Code::InvalidArgument
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::OutOfRange
            ),
            "{code:?}"
        );
        // Without a client certificate, so that the token alone decides.
        let mut raw = cluster.volume_client_without_certificate().await.unwrap();
        raw.token = None;
        let anon = raw.request(dagraid_proto::volume::v1::ListVolumesRequest {});
        assert_eq!(
            raw.inner.list_volumes(anon).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        raw.token = Some("wrong".into());
        let wrong = raw.request(dagraid_proto::volume::v1::GetVolumeRequest { name: "v".into() });
        assert_eq!(
            raw.inner.get_volume(wrong).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let bad = Client::connect(
            cluster.url(),
            ClientOptions {
                token: Some("wrong".into()),
                tls: cluster.pki.as_ref().map(|pki| pki.ca_only()),
                ..ClientOptions::default()
            },
        )
        .await;
        match bad {
            Ok(bad) => assert!(matches!(
                bad.list_volumes().await,
                Err(ClientError::Unauthenticated { .. })
            )),
            Err(e) => assert!(matches!(e, ClientError::Unauthenticated { .. }), "{e}"),
        }
        // Nothing was changed by any of it.
        cluster.check_columns("v", &[]).await.unwrap();
    })
    .await;
}
