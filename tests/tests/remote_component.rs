//! The coordinator's `RemoteComponent` and `NodeClient` against the real `dagraid-node` binary:
//! bytes, error kinds, fencing, dead, stopped, hung and slow nodes, and the per-call deadline.
//!
//! Plaintext, said here once: these tests are about the storage API itself, on a node started
//! alone (`NodeOptions::tls` `None`: `--insecure`). The same API behind mutual TLS, and what
//! it refuses to whom, is `tests/tests/security.rs`; clusters run TLS by default.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_coordinator::error::{NodeErrorKind, classify};
use dagraid_coordinator::node_client::{
    FencingContext, NodeClient, NodeClientConfig, NodeComponentState, SlotArea,
};
use dagraid_coordinator::remote::RemoteComponent;
use dagraid_core::io::{ComponentIo, IoErrorKind};
use dagraid_node::layout::{Layout, default_log_bytes};
use dagraid_proto::storage::v1 as pb;
use dagraid_tests::node::{NodeOptions, NodeProcess};
use dagraid_tests::with_timeout;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

const CLUSTER: &str = "dagraid";

fn random(rng: &mut StdRng, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}

fn client_with(
    node: &NodeProcess,
    fencing: Arc<FencingContext>,
    config: NodeClientConfig,
) -> NodeClient {
    NodeClient::new(&node.addr().to_string(), fencing, config).unwrap()
}

fn client(node: &NodeProcess) -> NodeClient {
    client_with(
        node,
        FencingContext::new(CLUSTER, 0),
        NodeClientConfig::default(),
    )
}

/// A client whose block I/O gives up after `deadline`.
fn client_with_deadline(node: &NodeProcess, deadline: Duration) -> NodeClient {
    client_with(
        node,
        FencingContext::new(CLUSTER, 0),
        NodeClientConfig {
            io_deadline: deadline,
            ..NodeClientConfig::default()
        },
    )
}

async fn faulty_node() -> NodeProcess {
    NodeProcess::start(NodeOptions {
        fault_injection: true,
        ..NodeOptions::default()
    })
    .await
    .unwrap()
}

async fn create(node: &NodeClient, id: &str, block_size: u32, block_count: u64) -> RemoteComponent {
    let info = node
        .create_component(id, block_size, block_count, 0)
        .await
        .unwrap();
    RemoteComponent::from_info(node.clone(), &info).unwrap()
}

/// Injects a fault on component `id` through a raw client of the node.
async fn inject(
    node: &NodeProcess,
    id: &str,
    kind: pb::FaultKind,
    ops: pb::FaultOps,
    count: u32,
    delay_ms: u32,
    code: Code,
) {
    node.client()
        .await
        .unwrap()
        .inject_fault(pb::InjectFaultRequest {
            component_id: id.into(),
            kind: kind as i32,
            ops: ops as i32,
            count,
            delay_ms,
            status_code: code as i32,
            seed: 0,
        })
        .await
        .unwrap();
}

async fn clear_faults(node: &NodeProcess) {
    node.client()
        .await
        .unwrap()
        .clear_faults(pb::ClearFaultsRequest {
            component_id: String::new(),
        })
        .await
        .unwrap();
}

#[track_caller]
fn assert_unreachable(kind: &IoErrorKind) {
    assert!(
        matches!(kind, IoErrorKind::Unavailable | IoErrorKind::Timeout),
        "expected unavailable or timeout, got {kind}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_data_round_trips_including_first_and_last_block_and_1_mib() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let nc = client(&node);
        let c = create(&nc, "c1", 4096, 512).await;
        assert_eq!((c.id(), c.block_size(), c.block_count()), ("c1", 4096, 512));
        let mut rng = StdRng::seed_from_u64(17);
        let mut model = vec![0u8; 4096 * 512];
        assert_eq!(
            c.read(0, 512).await.unwrap(),
            model,
            "a new component is zeros"
        );
        // First block, last block, the first 1 MiB, a run ending at the end, a run inside.
        for (start, count) in [(0u64, 1u64), (511, 1), (0, 256), (320, 192), (100, 7)] {
            let data = random(&mut rng, (count * 4096) as usize);
            c.write(start, data.clone()).await.unwrap();
            model[(start * 4096) as usize..((start + count) * 4096) as usize]
                .copy_from_slice(&data);
            assert_eq!(c.read(start, count as u32).await.unwrap(), data);
        }
        c.flush().await.unwrap();
        assert_eq!(c.read(0, 1).await.unwrap(), model[..4096]);
        assert_eq!(c.read(511, 1).await.unwrap(), model[511 * 4096..]);
        assert_eq!(c.read(0, 512).await.unwrap(), model);
        // The node holds what the remote component says it wrote.
        let mut raw = node.client().await.unwrap();
        let on_node = raw
            .read_blocks(pb::ReadBlocksRequest {
                fencing: None,
                component_id: "c1".into(),
                start_block: 0,
                block_count: 512,
            })
            .await
            .unwrap()
            .into_inner()
            .data;
        assert_eq!(on_node, model);

        // 1 MiB blocks: one block is one 1 MiB message; sixteen of them in flight at once spread
        // over the client's connections and each lands where it was sent.
        let big = create(&nc, "big", 1 << 20, 16).await;
        let blocks: Vec<Bytes> = (0..16).map(|_| random(&mut rng, 1 << 20)).collect();
        let writes = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| big.write(i as u64, b.clone()));
        for result in futures::future::join_all(writes).await {
            result.unwrap();
        }
        let reads = (0..16u64).map(|i| big.read(i, 1));
        for (i, result) in futures::future::join_all(reads)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(result.unwrap(), blocks[i], "block {i}");
        }
        assert_eq!(big.read(15, 1).await.unwrap(), blocks[15]);
        assert_eq!(big.read(0, 16).await.unwrap(), blocks.concat());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_convert_the_nodes_answers() {
    with_timeout(async {
        let node = NodeProcess::start(NodeOptions {
            node_id: Some("node-a".into()),
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        let fencing = FencingContext::new(CLUSTER, 0);
        let nc = client_with(&node, fencing.clone(), NodeClientConfig::default());
        let info = nc.node_info().await.unwrap();
        assert_eq!(info.node_id, "node-a");
        assert_eq!(info.cluster_id, CLUSTER);
        assert_eq!(info.epoch, 0);
        assert!(info.components.is_empty());
        assert_eq!(info.max_io_bytes, 16 << 20);
        assert!(!info.fault_injection_enabled);
        assert!(!info.version.is_empty());
        assert_eq!(info.protocol_version, 3);

        let a = nc.create_component("a", 512, 8, 42).await.unwrap();
        assert_eq!(
            (
                a.id.as_str(),
                a.serial,
                a.block_size,
                a.block_count,
                &a.state
            ),
            ("a", 42, 512, 8, &NodeComponentState::Optimal)
        );
        let e = nc.create_component("a", 512, 8, 0).await.unwrap_err();
        assert_eq!(e.kind(), Some(&NodeErrorKind::ComponentExists), "{e}");
        let e = nc.create_component("bad/id", 512, 8, 0).await.unwrap_err();
        assert_eq!(e.kind(), Some(&NodeErrorKind::InvalidRequest), "{e}");
        assert!(e.to_string().contains("CreateComponent"), "{e}");
        let e = nc.create_component("b", 1000, 8, 0).await.unwrap_err();
        assert_eq!(e.kind(), Some(&NodeErrorKind::InvalidRequest), "{e}");
        assert_eq!(nc.list_components().await.unwrap(), vec![a.clone()]);
        assert_eq!(nc.node_info().await.unwrap().components, vec![a.clone()]);

        assert_eq!(nc.read_slot("a", SlotArea::Label).await.unwrap(), None);
        assert_eq!(
            nc.write_slot("a", SlotArea::Label, Bytes::from_static(b"one"))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            nc.write_slot("a", SlotArea::Label, Bytes::from_static(b"two"))
                .await
                .unwrap(),
            2
        );
        let label = nc.read_slot("a", SlotArea::Label).await.unwrap().unwrap();
        assert_eq!((label.sequence, &label.payload[..]), (2, &b"two"[..]));
        assert_eq!(nc.read_slot("a", SlotArea::Metadata).await.unwrap(), None);
        let e = nc.read_slot("nope", SlotArea::Label).await.unwrap_err();
        assert_eq!(e.kind(), Some(&NodeErrorKind::UnknownComponent), "{e}");

        // A new owner fences the node; this client's epoch is stale until it is raised.
        assert_eq!(nc.fence(5).await.unwrap(), 5);
        assert_eq!(nc.node_info().await.unwrap().epoch, 5);
        let e = nc.delete_component("a").await.unwrap_err();
        assert_eq!(e.kind(), Some(&NodeErrorKind::Fenced), "{e}");
        let e = nc
            .write_slot("a", SlotArea::Label, Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), Some(&NodeErrorKind::Fenced), "{e}");
        assert_eq!(fencing.raise_epoch(5), 5);
        nc.delete_component("a").await.unwrap();
        assert!(nc.list_components().await.unwrap().is_empty());
        let e = nc.delete_component("a").await.unwrap_err();
        assert_eq!(e.kind(), Some(&NodeErrorKind::UnknownComponent), "{e}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_data_loss_naming_exactly_that_block() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let c = create(&client(&node), "c", 4096, 64).await;
        let mut rng = StdRng::seed_from_u64(3);
        let data = random(&mut rng, 4096 * 64);
        c.write(0, data.clone()).await.unwrap();

        let layout = Layout::new(4096, 64, default_log_bytes(4096)).unwrap();
        let path = node.component_file("c");
        let mut file = std::fs::read(&path).unwrap();
        file[(layout.block_offset(37) + 99) as usize] ^= 0x01;
        std::fs::write(&path, &file).unwrap();

        let e = c.read(0, 64).await.unwrap_err();
        assert_eq!(
            e.kind,
            IoErrorKind::DataLoss {
                bad_blocks: vec![37]
            },
            "{e}"
        );
        assert_eq!(
            (e.component.as_str(), e.start_block, e.block_count),
            ("c", 0, 64)
        );
        assert!(!e.kind.implicates_component());
        let e = c.read(30, 10).await.unwrap_err();
        assert_eq!(
            e.kind,
            IoErrorKind::DataLoss {
                bad_blocks: vec![37]
            },
            "{e}"
        );
        assert_eq!(c.read(0, 37).await.unwrap(), data.slice(..37 * 4096));
        assert_eq!(c.read(38, 26).await.unwrap(), data.slice(38 * 4096..));
        // Rewriting the block from redundancy repairs it.
        c.write(37, data.slice(37 * 4096..38 * 4096)).await.unwrap();
        assert_eq!(c.read(0, 64).await.unwrap(), data);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_epoch_is_fenced_another_cluster_refused_and_nothing_changes() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let fencing = FencingContext::new(CLUSTER, 1);
        let nc = client_with(&node, fencing.clone(), NodeClientConfig::default());
        let c = create(&nc, "c", 512, 8).await;
        let old = Bytes::from(vec![1u8; 1024]);
        c.write(2, old.clone()).await.unwrap();

        // Another owner takes over with epoch 2.
        let new_owner = client_with(
            &node,
            FencingContext::new(CLUSTER, 2),
            NodeClientConfig::default(),
        );
        assert_eq!(new_owner.fence(2).await.unwrap(), 2);
        let e = c.write(2, Bytes::from(vec![2u8; 1024])).await.unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Fenced, "{e}");
        assert_eq!((e.start_block, e.block_count), (2, 2));
        assert!(!e.kind.implicates_component());
        assert_eq!(c.flush().await.unwrap_err().kind, IoErrorKind::Fenced);
        // Reads carry the epoch too (protocol 2): the old owner reads nothing more.
        let e = c.read(2, 2).await.unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Fenced, "{e}");
        // And the refused write changed nothing, as the new owner sees.
        let fresh = RemoteComponent::new(new_owner.clone(), "c", 512, 8).unwrap();
        assert_eq!(fresh.read(2, 2).await.unwrap(), old);

        // A client of another cluster is refused whatever its epoch.
        let stranger = client_with(
            &node,
            FencingContext::new("other-cluster", 99),
            NodeClientConfig::default(),
        );
        let s = RemoteComponent::new(stranger, "c", 512, 8).unwrap();
        let e = s.write(2, Bytes::from(vec![3u8; 512])).await.unwrap_err();
        assert_eq!(e.kind, IoErrorKind::WrongCluster, "{e}");
        assert_eq!(
            s.read(2, 2).await.unwrap_err().kind,
            IoErrorKind::WrongCluster
        );
        assert_eq!(fresh.read(2, 2).await.unwrap(), old);

        // Raised to the new epoch, the same component writes again.
        fencing.raise_epoch(2);
        let new = Bytes::from(vec![4u8; 1024]);
        c.write(2, new.clone()).await.unwrap();
        c.flush().await.unwrap();
        assert_eq!(c.read(2, 2).await.unwrap(), new);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_unavailable_and_the_same_component_works_after_restart() {
    with_timeout(async {
        let mut node = faulty_node().await;
        let nc = client_with_deadline(&node, Duration::from_secs(60));
        let c = create(&nc, "c", 4096, 32).await;
        let mut rng = StdRng::seed_from_u64(5);
        let data = random(&mut rng, 4096 * 32);
        c.write(0, data.clone()).await.unwrap();

        // A read in progress when the node dies fails with it, long before its deadline.
        inject(
            &node,
            "c",
            pb::FaultKind::Hang,
            pb::FaultOps::Read,
            0,
            0,
            Code::Ok,
        )
        .await;
        let hung = {
            let c = c.clone();
            tokio::spawn(async move { c.read(0, 1).await })
        };
        node.wait_for_log("action=Hang", Duration::from_secs(30))
            .await
            .unwrap();
        node.kill9().await.unwrap();
        let e = hung.await.unwrap().unwrap_err();
        assert_unreachable(&e.kind);

        let e = c.read(0, 1).await.unwrap_err();
        assert_unreachable(&e.kind);
        assert!(e.kind.implicates_component());
        let e = c.write(0, data.slice(..4096)).await.unwrap_err();
        assert_unreachable(&e.kind);
        assert_unreachable(&c.flush().await.unwrap_err().kind);
        assert_unreachable(
            &nc.node_info()
                .await
                .unwrap_err()
                .kind()
                .cloned()
                .unwrap()
                .into(),
        );

        node.restart_on_same_port().await.unwrap();
        // The first call after the restart already reconnects.
        assert_eq!(c.read(0, 32).await.unwrap(), data);
        let new = random(&mut rng, 4096 * 2);
        c.write(30, new.clone()).await.unwrap();
        assert_eq!(c.read(30, 2).await.unwrap(), new);
        c.flush().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_times_out_within_the_deadline_and_serves_again_when_resumed() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let deadline = Duration::from_secs(1);
        let nc = client_with_deadline(&node, deadline);
        let c = create(&nc, "c", 4096, 8).await;
        let old = Bytes::from(vec![1u8; 4096]);
        c.write(0, old.clone()).await.unwrap();

        node.pause().await.unwrap();
        let started = Instant::now();
        let e = c.read(0, 1).await.unwrap_err();
        let waited = started.elapsed();
        assert_eq!(e.kind, IoErrorKind::Timeout, "{e}");
        // Liveness, not a benchmark: the call gave up at its deadline instead of hanging.
        assert!(waited < deadline * 10, "gave up only after {waited:?}");
        let new = Bytes::from(vec![2u8; 4096]);
        let e = c.write(0, new.clone()).await.unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Timeout, "{e}");

        node.resume().await.unwrap();
        // The timed-out write's outcome is unknown, and it may still be waiting in the resumed
        // node (its request sat in a socket buffer of one of the client's connections) and land
        // after a later write sent on another connection. Fencing is what settles it, as the
        // coordinator does: after a Fence the old write has either landed or is refused.
        assert_eq!(nc.fence(1).await.unwrap(), 1);
        nc.fencing().raise_epoch(1);
        // The block holds the old or the new data, never anything else.
        let block = c.read(0, 1).await.unwrap();
        assert!(
            block == old || block == new,
            "torn block after a timed-out write"
        );
        let after = Bytes::from(vec![3u8; 4096]);
        c.write(0, after.clone()).await.unwrap();
        assert_eq!(c.read(0, 1).await.unwrap(), after);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_call_times_out_and_a_delay_shorter_than_the_deadline_succeeds() {
    with_timeout(async {
        let node = faulty_node().await;
        let deadline = Duration::from_secs(2);
        let c = create(&client_with_deadline(&node, deadline), "c", 512, 8).await;
        let data = Bytes::from(vec![5u8; 512]);
        c.write(1, data.clone()).await.unwrap();

        inject(
            &node,
            "c",
            pb::FaultKind::Hang,
            pb::FaultOps::Any,
            0,
            0,
            Code::Ok,
        )
        .await;
        assert_eq!(c.read(1, 1).await.unwrap_err().kind, IoErrorKind::Timeout);
        let e = c.write(1, data.clone()).await.unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Timeout);
        assert_eq!(c.flush().await.unwrap_err().kind, IoErrorKind::Timeout);
        clear_faults(&node).await;

        // A quarter of the deadline late: still an answer.
        inject(
            &node,
            "c",
            pb::FaultKind::Delay,
            pb::FaultOps::Any,
            2,
            500,
            Code::Ok,
        )
        .await;
        assert_eq!(c.read(1, 1).await.unwrap(), data);
        let new = Bytes::from(vec![6u8; 512]);
        c.write(1, new.clone()).await.unwrap();
        assert_eq!(c.read(1, 1).await.unwrap(), new);

        // A write answered DEADLINE_EXCEEDED by the node is a timeout too (outcome unknown).
        inject(
            &node,
            "c",
            pb::FaultKind::LateApply,
            pb::FaultOps::Write,
            1,
            50,
            Code::Ok,
        )
        .await;
        let e = c.write(2, data.clone()).await.unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Timeout, "{e}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_map_by_their_code() {
    with_timeout(async {
        let node = faulty_node().await;
        let c = create(&client(&node), "c", 512, 8).await;
        let cases = [
            (Code::Unavailable, IoErrorKind::Unavailable),
            (Code::NotFound, IoErrorKind::ComponentFailed),
            (Code::Internal, IoErrorKind::Other),
            (Code::InvalidArgument, IoErrorKind::InvalidRequest),
            // An unlisted data loss: every block of the request is presumed lost.
            (
                Code::DataLoss,
                IoErrorKind::DataLoss {
                    bad_blocks: vec![3, 4, 5],
                },
            ),
        ];
        for (code, want) in cases {
            inject(
                &node,
                "c",
                pb::FaultKind::Fail,
                pb::FaultOps::Read,
                1,
                0,
                code,
            )
            .await;
            let e = c.read(3, 3).await.unwrap_err();
            assert_eq!(e.kind, want, "{code:?}: {e}");
        }
        inject(
            &node,
            "c",
            pb::FaultKind::Fail,
            pb::FaultOps::Write,
            1,
            0,
            Code::DataLoss,
        )
        .await;
        let e = c.write(3, Bytes::from(vec![1u8; 512])).await.unwrap_err();
        assert_eq!(
            e.kind,
            IoErrorKind::Other,
            "a write cannot name lost blocks: {e}"
        );
        // The faults were for one call each.
        assert_eq!(c.read(3, 3).await.unwrap(), vec![0u8; 3 * 512]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_own_refusals_map_precisely() {
    with_timeout(async {
        let node = NodeProcess::start(NodeOptions {
            max_io_bytes: Some(64 << 10),
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        let nc = client(&node);
        create(&nc, "c", 512, 256).await;

        let missing = RemoteComponent::new(nc.clone(), "nope", 512, 8).unwrap();
        assert_eq!(
            missing.read(0, 1).await.unwrap_err().kind,
            IoErrorKind::ComponentFailed
        );
        assert_eq!(
            missing
                .write(0, Bytes::from(vec![0u8; 512]))
                .await
                .unwrap_err()
                .kind,
            IoErrorKind::ComponentFailed
        );
        // A description larger than the component: the node refuses the range.
        let too_long = RemoteComponent::new(nc.clone(), "c", 512, 1000).unwrap();
        assert_eq!(
            too_long.read(300, 1).await.unwrap_err().kind,
            IoErrorKind::OutOfRange
        );
        // A description with the wrong block size: the answer has the wrong length.
        let wrong_size = RemoteComponent::new(nc.clone(), "c", 1024, 128).unwrap();
        let e = wrong_size.read(0, 1).await.unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Other, "{e}");
        assert!(e.detail.contains("answered 512 bytes"), "{e}");
        // Above the node's payload limit.
        let c = RemoteComponent::new(nc, "c", 512, 256).unwrap();
        let e = c
            .write(0, Bytes::from(vec![1u8; 128 << 10]))
            .await
            .unwrap_err();
        assert_eq!(e.kind, IoErrorKind::InvalidRequest, "{e}");
        let e = c.read(0, 256).await.unwrap_err();
        assert_eq!(e.kind, IoErrorKind::InvalidRequest, "{e}");
        assert_eq!(
            c.read(0, 128).await.unwrap(),
            vec![0u8; 64 << 10],
            "nothing written"
        );
    })
    .await;
}

/// The deadline starts when a call is sent: with one call in flight allowed, a read queued
/// behind two writes slowed by the node waits longer than its deadline, and still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_queued_behind_the_local_limit_does_not_count_against_the_deadline() {
    with_timeout(async {
        let node = faulty_node().await;
        let deadline = Duration::from_secs(3);
        let nc = client_with(
            &node,
            FencingContext::new(CLUSTER, 0),
            NodeClientConfig {
                max_in_flight: 1,
                io_deadline: deadline,
                ..NodeClientConfig::default()
            },
        );
        let c = create(&nc, "c", 512, 8).await;
        let data = Bytes::from(vec![8u8; 512]);
        c.write(2, data.clone()).await.unwrap();
        inject(&node, "c", pb::FaultKind::Delay, pb::FaultOps::Write, 2, 2000, Code::Ok).await;

        let started = Instant::now();
        // join! polls in order: the first write takes the one place, the others queue (FIFO).
        let (a, b, read) = tokio::join!(
            c.write(0, data.clone()),
            c.write(1, data.clone()),
            async {
                let r = c.read(0, 3).await;
                (r, started.elapsed())
            }
        );
        a.unwrap();
        b.unwrap();
        let (read, queued_and_served) = read;
        assert!(
            queued_and_served > deadline,
            "the read did not wait behind both delayed writes ({queued_and_served:?}): the test proves nothing"
        );
        assert_eq!(read.unwrap(), [data.clone(), data.clone(), data].concat());
    })
    .await;
}

/// Issue 17, item 2: fencing one component after a write with an unknown outcome. The late
/// copy of the write is refused; a call of the same client that was already on its way under
/// the older epoch (admitted by the node only after the fence) is refused by the node and sent
/// again under the new epoch, so the client's own fence never fails its other calls; the other
/// component of the node keeps the owner epoch; and a fence that does not answer in time is a
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_fence_refuses_late_writes_and_the_clients_older_calls_are_sent_again() {
    with_timeout(async {
        let node = faulty_node().await;
        let owner = 1u64 << 32;
        // A deadline under the keepalive timeout: a stopped node is a timeout, not a lost
        // connection.
        let nc = client_with(
            &node,
            FencingContext::new(CLUSTER, owner),
            NodeClientConfig {
                io_deadline: Duration::from_secs(1),
                ..NodeClientConfig::default()
            },
        );
        let a = create(&nc, "a", 512, 8).await;
        let b = create(&nc, "b", 512, 8).await;
        let old = Bytes::from(vec![1u8; 512]);
        let new = Bytes::from(vec![2u8; 512]);
        a.write(0, old.clone()).await.unwrap();

        // The next write of "a" times out and is applied 1 s later, unless fenced off.
        inject(
            &node,
            "a",
            pb::FaultKind::LateApply,
            pb::FaultOps::Write,
            1,
            1000,
            Code::Ok,
        )
        .await;
        let e = a.write(0, Bytes::from(vec![9u8; 512])).await.unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Timeout, "{e}");
        // A write of "a" on its way under the owner epoch, admitted only in 300 ms.
        inject(
            &node,
            "a",
            pb::FaultKind::Delay,
            pb::FaultOps::Write,
            1,
            300,
            Code::Ok,
        )
        .await;
        let on_its_way = tokio::spawn({
            let a = a.clone();
            let data = random(&mut StdRng::seed_from_u64(1), 512);
            async move { (a.write(1, data.clone()).await, data) }
        });
        node.wait_for_log_count("injected fault", 2, Duration::from_secs(10))
            .await
            .unwrap();
        let epoch = nc.fence_component("a").await.unwrap();
        assert_eq!(epoch, owner + 1);
        assert_eq!(nc.component_epoch("a"), owner + 1);
        assert_eq!(
            nc.component_epoch("b"),
            owner,
            "other components keep the owner epoch"
        );
        let (answer, data) = on_its_way.await.unwrap();
        answer.expect("refused under the older epoch, then sent again under the new one");
        assert_eq!(a.read(1, 1).await.unwrap(), data);
        // The redo, then the late copy of the first write is released: refused.
        a.write(0, new.clone()).await.unwrap();
        node.wait_for_log("late-applied operation refused", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(a.read(0, 1).await.unwrap(), new);
        // The node epoch did not move: the other component is written at the owner epoch.
        b.write(0, new.clone()).await.unwrap();
        let info = nc.node_info().await.unwrap();
        assert_eq!(info.epoch, owner);

        // A second fence of the same component takes the next epoch; a hung node times out.
        assert_eq!(nc.fence_component("a").await.unwrap(), owner + 2);
        node.pause().await.unwrap();
        let e = nc.fence_component("a").await.unwrap_err();
        assert_eq!(classify(&e), NodeErrorKind::Timeout, "{e}");
        node.resume().await.unwrap();
        assert_eq!(nc.fence_component("a").await.unwrap(), owner + 3);
    })
    .await;
}
