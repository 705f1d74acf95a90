//! Power cuts of real `dagraid-node` processes (InjectFault `POWER_CUT`, fault-injection mode):
//! what was not synced is lost, the sync in flight is torn, every acknowledged write survives,
//! and RAID 5 and RAID 6 clusters ride through power cuts of nodes with every acknowledged byte.
//! The nodes started alone (the first tests) are plaintext, said here: they test the node's
//! fault injection itself; the clusters run mutual TLS, the builder's default.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dagraid_client::{Client, ClientOptions, RaidLevel, RetryPolicy, VolumeSpec, VolumeState};
use dagraid_proto::error_kind;
use dagraid_proto::storage::v1 as pb;
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::node::{NodeOptions, NodeProcess};
use dagraid_tests::with_timeout;
use pb::storage_node_client::StorageNodeClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::{Code, Status};

type NodeClient = StorageNodeClient<Channel>;

const CLUSTER: &str = "dagraid";
const BS: usize = 4096;
/// The log line of a sync held before its fdatasync (InjectFault `HOLD_SYNCS`).
const HELD: &str = "sync held before its fdatasync";

fn fencing() -> Option<pb::Fencing> {
    Some(pb::Fencing {
        cluster_id: CLUSTER.into(),
        epoch: 1,
    })
}

async fn fault_node() -> NodeProcess {
    NodeProcess::start(NodeOptions {
        cluster_id: Some(CLUSTER.into()),
        fault_injection: true,
        ..NodeOptions::default()
    })
    .await
    .unwrap()
}

async fn create(client: &mut NodeClient, id: &str, blocks: u64) {
    client
        .create_component(pb::CreateComponentRequest {
            fencing: fencing(),
            component_id: id.into(),
            block_size: BS as u32,
            block_count: blocks,
            serial: 0,
            log_bytes: 0,
        })
        .await
        .unwrap();
}

async fn write(client: &mut NodeClient, id: &str, start: u64, data: Vec<u8>) -> Result<(), Status> {
    client
        .write_blocks(pb::WriteBlocksRequest {
            fencing: fencing(),
            component_id: id.into(),
            start_block: start,
            data: Bytes::from(data),
        })
        .await
        .map(drop)
}

async fn read(client: &mut NodeClient, id: &str, start: u64, count: u32) -> Result<Bytes, Status> {
    client
        .read_blocks(pb::ReadBlocksRequest {
            fencing: None,
            component_id: id.into(),
            start_block: start,
            block_count: count,
        })
        .await
        .map(|r| r.into_inner().data)
}

async fn write_label(client: &mut NodeClient, id: &str, payload: Vec<u8>) -> Result<(), Status> {
    client
        .write_slot(pb::WriteSlotRequest {
            fencing: fencing(),
            component_id: id.into(),
            area: pb::SlotArea::Label as i32,
            payload: Bytes::from(payload),
        })
        .await
        .map(drop)
}

async fn read_label(client: &mut NodeClient, id: &str) -> Option<Vec<u8>> {
    let slot = client
        .read_slot(pb::ReadSlotRequest {
            fencing: None,
            component_id: id.into(),
            area: pb::SlotArea::Label as i32,
        })
        .await
        .unwrap()
        .into_inner();
    slot.present.then(|| slot.payload.to_vec())
}

/// What one block holds after a restart: its bytes, or DATA_LOSS naming it (and only it).
async fn read_block(client: &mut NodeClient, id: &str, block: u64) -> Option<Bytes> {
    match read(client, id, block, 1).await {
        Ok(data) => Some(data),
        Err(status) => {
            assert_eq!(status.code(), Code::DataLoss, "block {block}: {status:?}");
            let bad = status
                .metadata()
                .get(error_kind::BAD_BLOCKS_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert_eq!(bad, block.to_string(), "DATA_LOSS names block {block}");
            None
        }
    }
}

/// Polls `probe` every 20 ms until it answers `Some`, for at most 30 s.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// Test (c): a write held in a sync at the cut is torn (old, new or DATA_LOSS per block, at
/// least one block torn), a write no sync took is gone although reads saw it before the cut,
/// and acknowledged writes (blocks and label) survive. With the cache bypassed (writes straight
/// into the file, which survives the process), the unsynced write would survive and nothing
/// would tear: this test would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_discards_unsynced_writes_and_tears_the_sync_in_flight() {
    with_timeout(async {
        let mut node = fault_node().await;
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 256).await;
        let (a, b, d) = (
            pattern(64 * BS, 1),
            pattern(64 * BS, 2),
            pattern(64 * BS, 3),
        );
        write(&mut c, "c", 0, a.clone()).await.unwrap();
        write_label(&mut c, "c", b"label 1".to_vec()).await.unwrap();

        node.hold_syncs("c").await.unwrap();
        let held = tokio::spawn({
            let mut c = node.client().await.unwrap();
            let b = b.clone();
            async move { write(&mut c, "c", 0, b).await }
        });
        node.wait_for_log(HELD, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(read(&mut c, "c", 0, 64).await.unwrap(), b, "reads see B");
        // Taken by no sync: the one sync at a time is held.
        let unsynced = tokio::spawn({
            let mut c = node.client().await.unwrap();
            let d = d.clone();
            async move { write(&mut c, "c", 100, d).await }
        });
        eventually("the unsynced write visible to reads", || {
            let mut c = c.clone();
            let d = d.clone();
            async move { (read(&mut c, "c", 100, 64).await.ok()? == d).then_some(()) }
        })
        .await;
        assert_eq!(node.log().matches(HELD).count(), 1, "one sync held");

        node.power_off(7).await.unwrap();
        assert!(
            held.await.unwrap().is_err(),
            "the held write was acknowledged"
        );
        assert!(
            unsynced.await.unwrap().is_err(),
            "the unsynced write was acknowledged"
        );
        node.restart_on_same_port().await.unwrap();
        let mut c = node.client().await.unwrap();

        assert_eq!(
            read(&mut c, "c", 100, 64).await.unwrap(),
            vec![0u8; 64 * BS],
            "the write no sync took survived the power cut"
        );
        let (mut old, mut new, mut torn) = (0, 0, 0);
        for block in 0..64u64 {
            let at = block as usize * BS;
            match read_block(&mut c, "c", block).await {
                None => torn += 1,
                Some(data) if data == a[at..at + BS] => old += 1,
                Some(data) if data == b[at..at + BS] => new += 1,
                Some(_) => panic!("block {block} holds bytes never written to it"),
            }
        }
        eprintln!("held write after the cut: {old} blocks old, {new} new, {torn} torn");
        assert!(torn > 0, "nothing was torn");
        assert!(old + new > 0, "every block was torn");
        assert_eq!(
            read_label(&mut c, "c").await.as_deref(),
            Some(&b"label 1"[..])
        );

        // With nothing in flight, a cut loses nothing acknowledged.
        write(&mut c, "c", 100, d.clone()).await.unwrap();
        node.power_cut(8).await.unwrap();
        let mut c = node.client().await.unwrap();
        assert_eq!(read(&mut c, "c", 100, 64).await.unwrap(), d);
    })
    .await;
}

/// One block's history: its last acknowledged contents, and the write in flight on it.
#[derive(Default, Clone)]
struct BlockHistory {
    acked: Option<Vec<u8>>,
    in_flight: Option<Vec<u8>>,
}

type Histories = Arc<Mutex<HashMap<u64, BlockHistory>>>;

/// Test (a): 16 writers (each on its own blocks) and a label writer hammer a real node; its
/// power is cut mid-load, three times or more (every other time with a sync held) until a cut
/// tore a block; after
/// each restart every acknowledged block reads back exactly, and every block whose write was in
/// flight reads back old, new or DATA_LOSS naming it, never other bytes; the label is the
/// acknowledged version or the one in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_power_cuts_of_a_real_node_under_load() {
    with_timeout(async {
        const WRITERS: u64 = 16;
        const PER_WRITER: u64 = 32;
        const BLOCKS: u64 = WRITERS * PER_WRITER;
        let mut node = fault_node().await;
        create(&mut node.client().await.unwrap(), "c", BLOCKS).await;
        let histories: Histories = Arc::default();
        let mut label_acked: Option<Vec<u8>> = None;
        let (mut total_acked, mut total_torn, mut total_lost) = (0u64, 0u64, 0u64);
        // At least three rounds; more (up to ten, every other one with a sync held) until a cut
        // tore a block: whether one does depends on what was in flight at the cut.
        for round in 0..10u64 {
            if round >= 3 && total_torn > 0 {
                break;
            }
            let acks = Arc::new(AtomicU64::new(0));
            let mut writers = Vec::new();
            for w in 0..WRITERS {
                let (histories, acks) = (histories.clone(), acks.clone());
                let mut c = node.client().await.unwrap();
                let mut rng = StdRng::seed_from_u64(round * 100 + w);
                writers.push(tokio::spawn(async move {
                    loop {
                        let count = rng.random_range(1..=4u64);
                        let start = w * PER_WRITER + rng.random_range(0..=PER_WRITER - count);
                        let mut data = vec![0u8; count as usize * BS];
                        rng.fill(&mut data[..]);
                        let record = |acked: bool| {
                            let mut h = histories.lock().unwrap();
                            for (i, block) in data.chunks(BS).enumerate() {
                                let e = h.entry(start + i as u64).or_default();
                                if acked {
                                    *e = BlockHistory {
                                        acked: Some(block.to_vec()),
                                        in_flight: None,
                                    };
                                } else {
                                    e.in_flight = Some(block.to_vec());
                                }
                            }
                        };
                        record(false);
                        if write(&mut c, "c", start, data.clone()).await.is_err() {
                            return;
                        }
                        record(true);
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            let labels = tokio::spawn({
                let mut c = node.client().await.unwrap();
                let mut acked = label_acked.clone();
                async move {
                    for i in 0u64.. {
                        let payload = format!("round {round} label {i}").into_bytes();
                        if write_label(&mut c, "c", payload.clone()).await.is_err() {
                            return (acked, Some(payload));
                        }
                        acked = Some(payload);
                    }
                    unreachable!()
                }
            });
            let target = 100 + round * 50;
            eventually("writes acknowledged", || {
                let acks = acks.clone();
                async move { (acks.load(Ordering::Relaxed) >= target).then_some(()) }
            })
            .await;
            if round % 2 == 1 {
                let before = node.log().matches(HELD).count();
                node.hold_syncs("c").await.unwrap();
                node.wait_for_log_count(HELD, before + 1, Duration::from_secs(30))
                    .await
                    .unwrap();
            }
            node.power_off(round).await.unwrap();
            for w in writers {
                w.await.unwrap();
            }
            let (acked_label, pending_label) = labels.await.unwrap();
            node.restart_on_same_port().await.unwrap();

            let mut c = node.client().await.unwrap();
            let mut h = histories.lock().unwrap().clone();
            for block in 0..BLOCKS {
                let e = h.entry(block).or_default();
                let old = e.acked.clone().unwrap_or_else(|| vec![0; BS]);
                total_acked += u64::from(e.acked.is_some());
                let got = read_block(&mut c, "c", block).await;
                match got {
                    Some(data) if data == old => {
                        total_lost += u64::from(e.in_flight.is_some());
                    }
                    Some(data) if e.in_flight.as_deref() == Some(&data[..]) => {
                        e.acked = Some(data.to_vec());
                    }
                    Some(_) => panic!(
                        "round {round}: block {block} holds bytes never written to it \
                         (acknowledged write lost: {})",
                        e.in_flight.is_none()
                    ),
                    None => {
                        assert!(
                            e.in_flight.is_some(),
                            "round {round}: block {block} torn with no write in flight"
                        );
                        total_torn += 1;
                        // Rewritten, so the next round starts from known contents.
                        let fresh = pattern(BS, block as u8);
                        write(&mut c, "c", block, fresh.clone()).await.unwrap();
                        e.acked = Some(fresh);
                    }
                }
                e.in_flight = None;
            }
            *histories.lock().unwrap() = h;
            let label = read_label(&mut c, "c").await;
            assert!(
                label == acked_label || (label.is_some() && label == pending_label),
                "round {round}: the label is neither the acknowledged nor the pending version"
            );
            label_acked = label;
        }
        eprintln!(
            "{total_acked} acknowledged blocks checked; in flight at the cuts: {total_lost} \
             read old, {total_torn} torn"
        );
        assert!(total_torn > 0, "no cut tore a block");
    })
    .await;
}

/// A power cut is refused without `--fault-injection`, and for a single component (it takes
/// the whole node); holding the syncs of an unknown component is refused. Nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_are_refused_without_fault_injection_or_for_one_component() {
    with_timeout(async {
        let mut plain = NodeProcess::start(NodeOptions {
            cluster_id: Some(CLUSTER.into()),
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        let err = plain.power_off(1).await.unwrap_err().to_string();
        assert!(err.contains("FailedPrecondition"), "{err}");
        assert!(plain.hold_syncs("c").await.is_err());
        let mut c = plain.client().await.unwrap();
        create(&mut c, "c", 8).await;
        write(&mut c, "c", 0, pattern(BS, 4)).await.unwrap();

        let node = fault_node().await;
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 8).await;
        let status = c
            .inject_fault(pb::InjectFaultRequest {
                component_id: "c".into(),
                kind: pb::FaultKind::PowerCut as i32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("whole node"), "{status:?}");
        let status = node.hold_syncs("nope").await.unwrap_err();
        assert!(format!("{status:#}").contains("nope"), "{status:#}");
        write(&mut c, "c", 0, pattern(BS, 5)).await.unwrap();
        assert_eq!(read(&mut c, "c", 0, 1).await.unwrap(), pattern(BS, 5));
    })
    .await;
}

/// Test (b): a volume on 5 nodes, first an idle cut (below), then under writes from 8 clients
/// the power of each node of `cuts` (indices) is cut in turn mid-load and it comes back on what
/// it had synced. The coordinator handles it like any node fault: no write fails; afterwards
/// every acknowledged byte reads back and the column checker passes (a cut node's column, failed
/// by the coordinator, is skipped; if it was not failed, it is checked like any other), and the
/// cut nodes' components came back healthy.
async fn power_cuts_under_load(level: RaidLevel, cuts: &[usize]) {
    with_timeout(async {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        const CLIENTS: u64 = 8;
        let mut cluster = Cluster::start(ClusterOptions {
            fault_injection: true,
            coordinator_args: vec!["--assembly-wait-ms".into(), "3000".into()],
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let client = Client::connect(
            cluster.url(),
            ClientOptions {
                request_timeout: Duration::from_secs(20),
                retry: RetryPolicy::none(),
                ..cluster.client_options()
            },
        )
        .await
        .unwrap();
        let info = client
            .create_volume(
                VolumeSpec::new(VOLUME, level, 4 * MIB)
                    .columns(5)
                    .stripe_unit_bytes(16 * KIB),
            )
            .await
            .unwrap();
        let size = info.size_bytes as usize;
        let region = size / CLIENTS as usize;

        // An idle cut first: every byte written and acknowledged, then node2 loses its power
        // with nothing in flight and comes back before anyone notices. Its column stays
        // optimal, and the column checker, which reads it straight from the node, finds it
        // consistent with the four others: nothing acknowledged was lost on it.
        let mut rng = StdRng::seed_from_u64(99);
        let mut first = vec![0u8; size];
        rng.fill(&mut first[..]);
        client
            .volume(VOLUME)
            .write_at(0, Bytes::from(first.clone()))
            .await
            .unwrap();
        cluster.power_cut(1, 10).await.unwrap();
        let status = client.volume(VOLUME).status().await.unwrap();
        assert_eq!(status.state, VolumeState::Optimal, "{status:?}");
        cluster.check_columns(VOLUME, &[]).await.unwrap();

        let reference = Arc::new(Mutex::new(first));
        let failed = Arc::new(Mutex::new(Vec::<(u64, Vec<u8>, String)>::new()));
        let acks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicU64::new(0));
        let mut writers = Vec::new();
        for w in 0..CLIENTS {
            let vol = client.volume(VOLUME);
            let (reference, failed, acks, stop) = (
                reference.clone(),
                failed.clone(),
                acks.clone(),
                stop.clone(),
            );
            writers.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(1000 + w);
                while stop.load(Ordering::Relaxed) == 0 {
                    let len = rng.random_range(1..=16usize) * 4096;
                    let offset =
                        w as usize * region + rng.random_range(0..=(region - len) / 4096) * 4096;
                    let mut data = vec![0u8; len];
                    rng.fill(&mut data[..]);
                    match vol.write_at(offset as u64, Bytes::from(data.clone())).await {
                        Ok(()) => {
                            reference.lock().unwrap()[offset..offset + len].copy_from_slice(&data);
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            failed
                                .lock()
                                .unwrap()
                                .push((offset as u64, data, err.to_string()));
                        }
                    }
                }
            }));
        }
        let wait_acks = |n: u64| {
            let acks = acks.clone();
            eventually("writes acknowledged", move || {
                let acks = acks.clone();
                async move { (acks.load(Ordering::Relaxed) >= n).then_some(()) }
            })
        };
        wait_acks(200).await;
        for &index in cuts {
            let cut_at = acks.load(Ordering::Relaxed);
            cluster.power_cut(index, 11 + index as u64).await.unwrap();
            wait_acks(cut_at + 300).await;
        }
        stop.store(1, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }

        let status = client.volume(VOLUME).status().await.unwrap();
        let states: Vec<_> = status
            .components
            .iter()
            .map(|c| (c.node_id.clone(), c.state))
            .collect();
        eprintln!(
            "{level:?} after the power cuts of nodes {cuts:?} (0-based): {:?}, columns {states:?}",
            status.state
        );
        let failed = failed.lock().unwrap().clone();
        assert!(
            failed.is_empty(),
            "{} writes failed, first: {:?}",
            failed.len(),
            failed.first().map(|f| (f.0, f.2.clone()))
        );
        assert!(
            matches!(status.state, VolumeState::Optimal | VolumeState::Degraded),
            "{:?}",
            status.state
        );
        // The cut node reopened its component from the file as a healthy component: a power
        // cut records no failure (the coordinator's own verdict on the column stands apart).
        for &index in cuts {
            let info = cluster.nodes[index]
                .client()
                .await
                .unwrap()
                .get_node_info(pb::GetNodeInfoRequest {})
                .await
                .unwrap()
                .into_inner();
            assert!(!info.components.is_empty());
            for c in &info.components {
                assert_eq!(c.state, pb::ComponentState::Optimal as i32, "{c:?}");
            }
        }
        let got = client.volume(VOLUME).read_at(0, size).await.unwrap();
        let reference = reference.lock().unwrap().clone();
        let first_bad = got.iter().zip(&reference).position(|(g, r)| g != r);
        assert_eq!(first_bad, None, "an acknowledged byte differs");
        cluster.check_columns(VOLUME, &[]).await.unwrap();
    })
    .await;
}

const VOLUME: &str = "v";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raid5_volume_keeps_every_acknowledged_byte_across_a_node_power_cut() {
    power_cuts_under_load(RaidLevel::Raid5, &[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raid6_volume_keeps_every_acknowledged_byte_across_two_node_power_cuts() {
    power_cuts_under_load(RaidLevel::Raid6, &[2, 4]).await;
}
