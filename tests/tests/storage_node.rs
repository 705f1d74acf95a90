//! The real `dagraid-node` binary over real gRPC on 127.0.0.1.
//!
//! Plaintext, said here once: these tests are about the storage API itself, on a node started
//! alone (`NodeOptions::tls` `None`: `--insecure`). The same API behind mutual TLS, and what
//! it refuses to whom, is `tests/tests/security.rs`; clusters run TLS by default.

use std::time::Duration;

use bytes::Bytes;
use dagraid_node::layout::{Layout, default_log_bytes};
use dagraid_proto::error_kind;
use dagraid_proto::storage::v1 as pb;
use dagraid_tests::node::{NodeOptions, NodeProcess, connect};
use dagraid_tests::with_timeout;
use pb::storage_node_client::StorageNodeClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = StorageNodeClient<Channel>;

const CLUSTER: &str = "dagraid";

fn fencing(epoch: u64) -> Option<pb::Fencing> {
    Some(pb::Fencing {
        cluster_id: CLUSTER.into(),
        epoch,
    })
}

fn random(rng: &mut StdRng, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}

fn kind(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(error_kind::HEADER)
        .and_then(|v| v.to_str().ok())
}

/// Asserts a status's code and `dagraid-error-kind`, and that its message mentions `needle`.
#[track_caller]
fn assert_status(status: Status, code: Code, kind_value: &str, needle: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(kind(&status), Some(kind_value), "{status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} does not mention {needle:?}",
        status.message()
    );
}

async fn create(
    client: &mut Client,
    id: &str,
    block_size: u32,
    block_count: u64,
) -> pb::ComponentInfo {
    client
        .create_component(pb::CreateComponentRequest {
            log_bytes: 0,
            fencing: fencing(0),
            component_id: id.into(),
            block_size,
            block_count,
            serial: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .component
        .unwrap()
}

async fn write(
    client: &mut Client,
    id: &str,
    epoch: u64,
    start: u64,
    data: Bytes,
) -> Result<(), Status> {
    client
        .write_blocks(pb::WriteBlocksRequest {
            fencing: fencing(epoch),
            component_id: id.into(),
            start_block: start,
            data,
        })
        .await
        .map(drop)
}

async fn read(client: &mut Client, id: &str, start: u64, count: u32) -> Result<Bytes, Status> {
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

async fn node_info(client: &mut Client) -> pb::NodeInfo {
    client
        .get_node_info(pb::GetNodeInfoRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_data_round_trips_including_first_and_last_block() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let mut client = node.client().await.unwrap();
        let info = create(&mut client, "c1", 4096, 512).await;
        assert_eq!(info.size_bytes, 4096 * 512);
        assert_eq!(info.state, pb::ComponentState::Optimal as i32);
        let mut rng = StdRng::seed_from_u64(7);
        let mut model = vec![0u8; 4096 * 512];
        assert_eq!(
            read(&mut client, "c1", 0, 512).await.unwrap(),
            model,
            "new component is zeros"
        );
        // First block alone, the first 1 MiB, the last block, a 3 MiB run ending at the end.
        for (start, count) in [(0u64, 1u64), (0, 256), (511, 1), (320, 192), (100, 7)] {
            let data = random(&mut rng, (count * 4096) as usize);
            write(&mut client, "c1", 0, start, data.clone())
                .await
                .unwrap();
            model[(start * 4096) as usize..((start + count) * 4096) as usize]
                .copy_from_slice(&data);
            assert_eq!(
                read(&mut client, "c1", start, count as u32).await.unwrap(),
                data
            );
        }
        assert_eq!(read(&mut client, "c1", 0, 1).await.unwrap(), model[..4096]);
        assert_eq!(
            read(&mut client, "c1", 511, 1).await.unwrap(),
            model[511 * 4096..]
        );
        assert_eq!(read(&mut client, "c1", 0, 512).await.unwrap(), model);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_precise_error_and_changes_nothing() {
    with_timeout(async {
        let node = NodeProcess::start(NodeOptions {
            max_io_bytes: Some(64 * 1024),
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 512, 1024).await;
        let mut rng = StdRng::seed_from_u64(1);
        let original = random(&mut rng, 64 * 1024);
        for chunk in 0..8u64 {
            write(&mut c, "c", 0, chunk * 128, original.clone())
                .await
                .unwrap();
        }
        let block = Bytes::from(vec![0xeeu8; 512]);

        // Ranges.
        let e = write(&mut c, "c", 0, 1024, block.clone())
            .await
            .unwrap_err();
        assert_status(e, Code::OutOfRange, error_kind::OUT_OF_RANGE, "1024");
        let e = write(&mut c, "c", 0, 1023, Bytes::from(vec![1u8; 1024]))
            .await
            .unwrap_err();
        assert_status(e, Code::OutOfRange, error_kind::OUT_OF_RANGE, "1024 blocks");
        let e = write(&mut c, "c", 0, u64::MAX, block.clone())
            .await
            .unwrap_err();
        assert_status(e, Code::OutOfRange, error_kind::OUT_OF_RANGE, "outside");
        let e = read(&mut c, "c", 1000, 25).await.unwrap_err();
        assert_status(e, Code::OutOfRange, error_kind::OUT_OF_RANGE, "outside");
        // Lengths and alignment.
        let e = write(&mut c, "c", 0, 0, Bytes::from(vec![1u8; 700]))
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::InvalidArgument,
            error_kind::INVALID_REQUEST,
            "700 bytes",
        );
        let e = write(&mut c, "c", 0, 0, Bytes::new()).await.unwrap_err();
        assert_status(
            e,
            Code::InvalidArgument,
            error_kind::INVALID_REQUEST,
            "0 bytes",
        );
        let e = read(&mut c, "c", 0, 0).await.unwrap_err();
        assert_status(
            e,
            Code::InvalidArgument,
            error_kind::INVALID_REQUEST,
            "block_count",
        );
        // Unknown or malformed component ids.
        let e = write(&mut c, "nope", 0, 0, block.clone())
            .await
            .unwrap_err();
        assert_status(e, Code::NotFound, error_kind::UNKNOWN_COMPONENT, "nope");
        let e = read(&mut c, "nope", 0, 1).await.unwrap_err();
        assert_status(e, Code::NotFound, error_kind::UNKNOWN_COMPONENT, "nope");
        let e = read(&mut c, "../etc", 0, 1).await.unwrap_err();
        assert_status(
            e,
            Code::InvalidArgument,
            error_kind::INVALID_REQUEST,
            "../etc",
        );
        // Over the configured limit: a write payload, and a read whose answer would be.
        let e = write(&mut c, "c", 0, 0, Bytes::from(vec![1u8; 64 * 1024 + 512]))
            .await
            .unwrap_err();
        assert_status(e, Code::ResourceExhausted, error_kind::TOO_LARGE, "65536");
        let e = read(&mut c, "c", 0, 129).await.unwrap_err();
        assert_status(
            e,
            Code::ResourceExhausted,
            error_kind::TOO_LARGE,
            "read answer",
        );
        // Fencing: wrong cluster, missing fencing.
        let e = c
            .write_blocks(pb::WriteBlocksRequest {
                fencing: Some(pb::Fencing {
                    cluster_id: "other".into(),
                    epoch: 0,
                }),
                component_id: "c".into(),
                start_block: 0,
                data: block.clone(),
            })
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::FailedPrecondition,
            error_kind::WRONG_CLUSTER,
            "other",
        );
        // Every other mutating call checks the cluster too (and changes nothing: checked below).
        let other = || {
            Some(pb::Fencing {
                cluster_id: "other".into(),
                epoch: 9,
            })
        };
        let refusals = [
            c.fence(pb::FenceRequest {
                component_id: String::new(),
                cluster_id: "other".into(),
                epoch: 9,
            })
            .await
            .map(drop),
            c.flush(pb::FlushRequest {
                fencing: other(),
                component_id: "c".into(),
            })
            .await
            .map(drop),
            c.write_slot(pb::WriteSlotRequest {
                fencing: other(),
                component_id: "c".into(),
                area: pb::SlotArea::Label as i32,
                payload: Bytes::from_static(b"foreign"),
            })
            .await
            .map(drop),
            c.create_component(pb::CreateComponentRequest {
                log_bytes: 0,
                fencing: other(),
                component_id: "foreign".into(),
                block_size: 512,
                block_count: 1,
                serial: 0,
            })
            .await
            .map(drop),
            c.delete_component(pb::DeleteComponentRequest {
                fencing: other(),
                component_id: "c".into(),
            })
            .await
            .map(drop),
        ];
        for result in refusals {
            assert_status(
                result.unwrap_err(),
                Code::FailedPrecondition,
                error_kind::WRONG_CLUSTER,
                "other",
            );
        }
        let e = c
            .write_blocks(pb::WriteBlocksRequest {
                fencing: None,
                component_id: "c".into(),
                start_block: 0,
                data: block.clone(),
            })
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::InvalidArgument,
            error_kind::INVALID_REQUEST,
            "fencing",
        );
        // Component creation.
        for (id, bs, count, needle) in [
            ("bad id", 512, 1, "bad id"),
            ("x", 1000, 1, "1000"),
            ("x", 256, 1, "256"),
            ("x", 512, 0, "block_count"),
            ("x", 1 << 20, u64::MAX, "overflow"),
        ] {
            let e = c
                .create_component(pb::CreateComponentRequest {
                    log_bytes: 0,
                    fencing: fencing(0),
                    component_id: id.into(),
                    block_size: bs,
                    block_count: count,
                    serial: 0,
                })
                .await
                .unwrap_err();
            assert_status(
                e,
                Code::InvalidArgument,
                error_kind::INVALID_REQUEST,
                needle,
            );
        }
        let e = c
            .create_component(pb::CreateComponentRequest {
                log_bytes: 0,
                fencing: fencing(0),
                component_id: "c".into(),
                block_size: 512,
                block_count: 8,
                serial: 0,
            })
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::AlreadyExists,
            error_kind::COMPONENT_EXISTS,
            "\"c\"",
        );
        // Slots.
        let e = c
            .write_slot(pb::WriteSlotRequest {
                fencing: fencing(0),
                component_id: "c".into(),
                area: pb::SlotArea::Label as i32,
                payload: Bytes::from(vec![1u8; 4097]),
            })
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::ResourceExhausted,
            error_kind::TOO_LARGE,
            "label payload",
        );
        let e = c
            .read_slot(pb::ReadSlotRequest {
                fencing: None,
                component_id: "c".into(),
                area: 0,
            })
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::InvalidArgument,
            error_kind::INVALID_REQUEST,
            "area",
        );

        // Nothing changed: same content, same single component, no label.
        for chunk in 0..8u64 {
            assert_eq!(read(&mut c, "c", chunk * 128, 128).await.unwrap(), original);
        }
        let info = node_info(&mut c).await;
        assert_eq!(info.components.len(), 1);
        assert_eq!(info.epoch, 0);
        let label = c
            .read_slot(pb::ReadSlotRequest {
                fencing: None,
                component_id: "c".into(),
                area: pb::SlotArea::Label as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!label.present);
    })
    .await;
}

/// Beyond tonic's own decode limit (max_io_bytes + 1 MiB) the message never reaches the node:
/// tonic answers OUT_OF_RANGE itself, without a `dagraid-error-kind`. Documented in
/// docs/STORAGE-NODE.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_beyond_the_transport_limit_gets_tonics_answer() {
    with_timeout(async {
        let node = NodeProcess::start(NodeOptions {
            max_io_bytes: Some(64 * 1024),
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 4096, 1024).await;
        let e = write(&mut c, "c", 0, 0, Bytes::from(vec![1u8; 2 << 20]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
        assert_eq!(kind(&e), None);
        assert!(
            e.message().contains("decoded message length too large"),
            "{e:?}"
        );
        assert_eq!(
            read(&mut c, "c", 0, 16).await.unwrap(),
            vec![0u8; 65536],
            "nothing written"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_file_makes_exactly_that_block_data_loss() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 4096, 64).await;
        let mut rng = StdRng::seed_from_u64(3);
        let data = random(&mut rng, 4096 * 64);
        write(&mut c, "c", 0, 0, data.clone()).await.unwrap();

        // Flip one byte of block 37 behind the node's back (same page cache as the node).
        let layout = Layout::new(4096, 64, default_log_bytes(4096)).unwrap();
        let offset = layout.block_offset(37) + 1234;
        let path = node.component_file("c");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();

        let e = read(&mut c, "c", 0, 64).await.unwrap_err();
        assert_status(
            e.clone(),
            Code::DataLoss,
            error_kind::CHECKSUM_MISMATCH,
            "blocks 37",
        );
        assert_eq!(
            e.metadata().get(error_kind::BAD_BLOCKS_HEADER).unwrap(),
            "37"
        );
        assert!(e.details().is_empty(), "no bytes travel with a DATA_LOSS");
        let e = read(&mut c, "c", 37, 1).await.unwrap_err();
        assert_eq!(e.code(), Code::DataLoss);
        // Every other block still reads, byte for byte.
        assert_eq!(
            read(&mut c, "c", 0, 37).await.unwrap(),
            data.slice(..37 * 4096)
        );
        assert_eq!(
            read(&mut c, "c", 38, 26).await.unwrap(),
            data.slice(38 * 4096..)
        );
        // Rewriting the block repairs it.
        write(&mut c, "c", 0, 37, data.slice(37 * 4096..38 * 4096))
            .await
            .unwrap();
        assert_eq!(read(&mut c, "c", 0, 64).await.unwrap(), data);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_clients_each_read_back_their_own_writes() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let mut admin = node.client().await.unwrap();
        create(&mut admin, "shared", 4096, 64 * 16).await;
        let addr = node.addr();
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                tokio::spawn(async move {
                    let mut c = connect(addr).await.unwrap();
                    let mut rng = StdRng::seed_from_u64(1000 + i);
                    let base = i * 16;
                    let mut model = vec![0u8; 16 * 4096];
                    for _ in 0..8 {
                        let start = rng.random_range(0..16u64);
                        let count = rng.random_range(1..=16 - start);
                        let data = random(&mut rng, (count * 4096) as usize);
                        write(&mut c, "shared", 0, base + start, data.clone())
                            .await
                            .unwrap();
                        model[(start * 4096) as usize..((start + count) * 4096) as usize]
                            .copy_from_slice(&data);
                        assert_eq!(read(&mut c, "shared", base, 16).await.unwrap(), model);
                    }
                    model
                })
            })
            .collect();
        let mut expected = Vec::new();
        for t in tasks {
            expected.extend(t.await.unwrap());
        }
        assert_eq!(read(&mut admin, "shared", 0, 1024).await.unwrap(), expected);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_epochs_are_rejected_for_every_mutating_call() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 512, 16).await;
        let v5 = Bytes::from(vec![5u8; 512]);
        write(&mut c, "c", 5, 0, v5.clone()).await.unwrap();
        assert_eq!(node_info(&mut c).await.epoch, 5, "a newer epoch is adopted");

        let e = write(&mut c, "c", 4, 0, Bytes::from(vec![4u8; 512]))
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::FailedPrecondition,
            error_kind::STALE_EPOCH,
            "epoch 4 is stale",
        );
        let fenced = c
            .fence(pb::FenceRequest {
                component_id: String::new(),
                cluster_id: CLUSTER.into(),
                epoch: 7,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fenced.epoch, 7);
        let e = write(&mut c, "c", 6, 0, Bytes::from(vec![6u8; 512]))
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::FailedPrecondition,
            error_kind::STALE_EPOCH,
            "accepted epoch 7",
        );
        let e = c
            .flush(pb::FlushRequest {
                fencing: fencing(6),
                component_id: "c".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(kind(&e), Some(error_kind::STALE_EPOCH));
        let e = c
            .write_slot(pb::WriteSlotRequest {
                fencing: fencing(6),
                component_id: "c".into(),
                area: pb::SlotArea::Label as i32,
                payload: Bytes::from_static(b"old owner"),
            })
            .await
            .unwrap_err();
        assert_eq!(kind(&e), Some(error_kind::STALE_EPOCH));
        let e = c
            .create_component(pb::CreateComponentRequest {
                log_bytes: 0,
                fencing: fencing(6),
                component_id: "d".into(),
                block_size: 512,
                block_count: 1,
                serial: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(kind(&e), Some(error_kind::STALE_EPOCH));
        let e = c
            .delete_component(pb::DeleteComponentRequest {
                fencing: fencing(6),
                component_id: "c".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(kind(&e), Some(error_kind::STALE_EPOCH));
        let e = c
            .fence(pb::FenceRequest {
                component_id: String::new(),
                cluster_id: CLUSTER.into(),
                epoch: 6,
            })
            .await
            .unwrap_err();
        assert_eq!(kind(&e), Some(error_kind::STALE_EPOCH));

        assert_eq!(
            read(&mut c, "c", 0, 1).await.unwrap(),
            v5,
            "stale writes changed nothing"
        );
        let info = node_info(&mut c).await;
        assert_eq!((info.epoch, info.components.len()), (7, 1));
        write(&mut c, "c", 7, 0, Bytes::from(vec![7u8; 512]))
            .await
            .unwrap();
    })
    .await;
}

async fn inject(
    c: &mut Client,
    kind: pb::FaultKind,
    ops: pb::FaultOps,
    count: u32,
    delay_ms: u32,
    code: i32,
) {
    c.inject_fault(pb::InjectFaultRequest {
        component_id: "c".into(),
        kind: kind as i32,
        ops: ops as i32,
        count,
        delay_ms,
        status_code: code,
        seed: 0,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_applied_write_is_refused_after_a_fence() {
    with_timeout(async {
        let node = NodeProcess::start(NodeOptions {
            fault_injection: true,
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 512, 16).await;
        let old = Bytes::from(vec![1u8; 512]);
        write(&mut c, "c", 1, 0, old.clone()).await.unwrap();

        inject(
            &mut c,
            pb::FaultKind::LateApply,
            pb::FaultOps::Write,
            1,
            300,
            0,
        )
        .await;
        let e = write(&mut c, "c", 1, 0, Bytes::from(vec![2u8; 512]))
            .await
            .unwrap_err();
        assert_status(e, Code::DeadlineExceeded, error_kind::INJECTED, "injected");
        // The new owner fences before the late write applies.
        c.fence(pb::FenceRequest {
            component_id: String::new(),
            cluster_id: CLUSTER.into(),
            epoch: 2,
        })
        .await
        .unwrap();
        let log = node
            .wait_for_log("late-applied operation refused", Duration::from_secs(30))
            .await
            .unwrap();
        assert!(log.contains("epoch 1 is stale"), "{log}");
        assert_eq!(read(&mut c, "c", 0, 1).await.unwrap(), old);
    })
    .await;
}

/// The control for the test above: without a fence the late write does land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_applied_write_lands_when_nobody_fences() {
    with_timeout(async {
        let node = NodeProcess::start(NodeOptions {
            fault_injection: true,
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 512, 16).await;
        inject(
            &mut c,
            pb::FaultKind::LateApply,
            pb::FaultOps::Write,
            1,
            100,
            0,
        )
        .await;
        let late = Bytes::from(vec![9u8; 512]);
        let e = write(&mut c, "c", 1, 3, late.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded);
        node.wait_for_log("late-applied operation done", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(read(&mut c, "c", 3, 1).await.unwrap(), late);
    })
    .await;
}

fn component_fence(component: &str, epoch: u64) -> pb::FenceRequest {
    pb::FenceRequest {
        cluster_id: CLUSTER.into(),
        epoch,
        component_id: component.into(),
    }
}

async fn fenced_read(
    client: &mut Client,
    id: &str,
    epoch: u64,
    start: u64,
    count: u32,
) -> Result<Bytes, Status> {
    client
        .read_blocks(pb::ReadBlocksRequest {
            fencing: fencing(epoch),
            component_id: id.into(),
            start_block: start,
            block_count: count,
        })
        .await
        .map(|r| r.into_inner().data)
}

/// A write applied late, after a component fence at a higher epoch, is refused at the moment it
/// would apply: the node epoch never moved, only the component's did. (With the component-epoch
/// check disabled in `Fencing`, this test fails: the late write lands.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_applied_write_is_refused_after_a_component_fence() {
    with_timeout(async {
        let node = NodeProcess::start(NodeOptions {
            fault_injection: true,
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 512, 16).await;
        let old = Bytes::from(vec![1u8; 512]);
        write(&mut c, "c", 1, 0, old.clone()).await.unwrap();
        inject(
            &mut c,
            pb::FaultKind::LateApply,
            pb::FaultOps::Write,
            1,
            300,
            0,
        )
        .await;
        let e = write(&mut c, "c", 1, 0, Bytes::from(vec![2u8; 512]))
            .await
            .unwrap_err();
        assert_status(e, Code::DeadlineExceeded, error_kind::INJECTED, "injected");
        let answer = c.fence(component_fence("c", 2)).await.unwrap().into_inner();
        assert_eq!(answer.epoch, 2);
        let log = node
            .wait_for_log("late-applied operation refused", Duration::from_secs(30))
            .await
            .unwrap();
        assert!(log.contains("was fenced at epoch 2"), "{log}");
        assert_eq!(read(&mut c, "c", 0, 1).await.unwrap(), old);
        assert_eq!(node_info(&mut c).await.epoch, 1, "the node epoch moved");
    })
    .await;
}

/// Component fences: per component, durable across kill -9, checked on every call that carries
/// fencing (reads too), reported in ComponentInfo; reads without fencing are served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_fences_hold_per_component_across_a_restart_and_cover_reads() {
    with_timeout(async {
        let mut node = NodeProcess::start_default().await.unwrap();
        let mut c = node.client().await.unwrap();
        let info = create(&mut c, "a", 512, 8).await;
        assert_eq!((info.log_bytes, info.fence_epoch), (1 << 20, 0));
        create(&mut c, "b", 512, 8).await;
        let block = Bytes::from(vec![4u8; 512]);
        write(&mut c, "a", 1, 0, block.clone()).await.unwrap();
        assert_eq!(
            c.fence(component_fence("a", 5))
                .await
                .unwrap()
                .into_inner()
                .epoch,
            5
        );
        for restart in [false, true] {
            if restart {
                node.kill9().await.unwrap();
                node.restart().await.unwrap();
                c = node.client().await.unwrap();
            }
            let info = node_info(&mut c).await;
            assert_eq!(info.protocol_version, 3);
            assert_eq!(info.epoch, 1, "restart {restart}");
            let a = info
                .components
                .iter()
                .find(|i| i.component_id == "a")
                .unwrap();
            assert_eq!(a.fence_epoch, 5, "restart {restart}");
            let e = write(&mut c, "a", 4, 0, block.clone()).await.unwrap_err();
            assert_status(
                e,
                Code::FailedPrecondition,
                error_kind::STALE_EPOCH,
                "component \"a\" was fenced at epoch 5",
            );
            let e = fenced_read(&mut c, "a", 4, 0, 1).await.unwrap_err();
            assert_status(
                e,
                Code::FailedPrecondition,
                error_kind::STALE_EPOCH,
                "epoch 5",
            );
            let e = c
                .read_slot(pb::ReadSlotRequest {
                    fencing: fencing(4),
                    component_id: "a".into(),
                    area: pb::SlotArea::Label as i32,
                })
                .await
                .unwrap_err();
            assert_status(
                e,
                Code::FailedPrecondition,
                error_kind::STALE_EPOCH,
                "epoch 5",
            );
            let e = c
                .flush(pb::FlushRequest {
                    fencing: fencing(4),
                    component_id: "a".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(kind(&e), Some(error_kind::STALE_EPOCH));
            // An older client's read (no fencing) is served as before.
            assert_eq!(read(&mut c, "a", 0, 1).await.unwrap(), block);
            // The other component needs only the node epoch.
            write(&mut c, "b", 1, 0, block.clone()).await.unwrap();
            assert_eq!(fenced_read(&mut c, "b", 1, 0, 1).await.unwrap(), block);
        }
        // Reads check the cluster and the node epoch too, and raise nothing.
        let e = c
            .read_blocks(pb::ReadBlocksRequest {
                fencing: Some(pb::Fencing {
                    cluster_id: "other".into(),
                    epoch: 9,
                }),
                component_id: "b".into(),
                start_block: 0,
                block_count: 1,
            })
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::FailedPrecondition,
            error_kind::WRONG_CLUSTER,
            "other",
        );
        let e = fenced_read(&mut c, "b", 0, 0, 1).await.unwrap_err();
        assert_status(
            e,
            Code::FailedPrecondition,
            error_kind::STALE_EPOCH,
            "epoch 0",
        );
        fenced_read(&mut c, "b", 7, 0, 1).await.unwrap();
        assert_eq!(node_info(&mut c).await.epoch, 1, "a read raised the epoch");
        // A component fence below the component's epoch, or of an unknown component: refused.
        let e = c.fence(component_fence("a", 4)).await.unwrap_err();
        assert_status(
            e,
            Code::FailedPrecondition,
            error_kind::STALE_EPOCH,
            "epoch 5",
        );
        let e = c.fence(component_fence("zz", 9)).await.unwrap_err();
        assert_status(e, Code::NotFound, error_kind::UNKNOWN_COMPONENT, "zz");
        // At its epoch the component serves again; a node-wide fence still works as before.
        write(&mut c, "a", 5, 1, block.clone()).await.unwrap();
        let answer = c
            .fence(pb::FenceRequest {
                component_id: String::new(),
                cluster_id: CLUSTER.into(),
                epoch: 6,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.epoch, 6);
        let e = write(&mut c, "b", 5, 0, block.clone()).await.unwrap_err();
        assert_eq!(kind(&e), Some(error_kind::STALE_EPOCH));
    })
    .await;
}

/// Writes the bytes of a format 1 component file, as a node of protocol 1 left it: header,
/// blocks with their checksums, a label and a metadata record.
fn format_1_file(id: &str, serial: u64, blocks: &[Vec<u8>], label: &[u8], meta: &[u8]) -> Vec<u8> {
    use dagraid_node::checksum::block_checksum;
    use dagraid_node::layout::ComponentHeader;
    use dagraid_node::slot::{self, Area};
    let header = ComponentHeader {
        id: id.into(),
        serial,
        block_size: 512,
        block_count: blocks.len() as u64,
        log_bytes: 0,
    };
    let layout = Layout::v1(512, blocks.len() as u64).unwrap();
    let mut file = vec![0u8; layout.file_len as usize];
    let mut put = |at: u64, bytes: &[u8]| {
        file[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    };
    put(0, &header.encode_v1());
    for (i, block) in blocks.iter().enumerate() {
        put(layout.block_offset(i as u64), block);
        let crc = block_checksum(serial, i as u64, block);
        put(layout.checksum_entry_offset(i as u64), &crc.to_le_bytes());
    }
    put(layout.label_offset, &slot::encode(Area::Label, 1, label));
    put(
        layout.metadata_offset,
        &slot::encode(Area::Metadata, 1, meta),
    );
    file
}

/// A data directory of a protocol 1 node: its format 1 component file is migrated at start,
/// with its data, checksums, label and metadata, and serves as a format 2 component.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_component_file_is_migrated_at_start() {
    with_timeout(async {
        let mut node = NodeProcess::start_default().await.unwrap();
        node.kill9().await.unwrap();
        let mut rng = StdRng::seed_from_u64(21);
        let blocks: Vec<Vec<u8>> = (0..8).map(|_| random(&mut rng, 512).to_vec()).collect();
        let file = format_1_file("old", 77, &blocks, b"label v1", b"meta v1");
        let v1_len = file.len() as u64;
        std::fs::write(node.component_file("old"), file).unwrap();
        node.restart().await.unwrap();
        let mut c = node.client().await.unwrap();
        let info = node_info(&mut c).await;
        let old = &info.components[0];
        assert_eq!(
            (
                old.component_id.as_str(),
                old.serial,
                old.block_count,
                old.log_bytes
            ),
            ("old", 77, 8, 1 << 20)
        );
        let len = std::fs::metadata(node.component_file("old")).unwrap().len();
        assert_eq!(len, v1_len + 8192 + (1 << 20), "format 2 length");
        assert_eq!(read(&mut c, "old", 0, 8).await.unwrap(), blocks.concat());
        for (area, payload) in [
            (pb::SlotArea::Label, &b"label v1"[..]),
            (pb::SlotArea::Metadata, &b"meta v1"[..]),
        ] {
            let slot = c
                .read_slot(pb::ReadSlotRequest {
                    fencing: fencing(0),
                    component_id: "old".into(),
                    area: area as i32,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!((slot.present, slot.sequence), (true, 1));
            assert_eq!(slot.payload, payload);
        }
        c.fence(component_fence("old", 3)).await.unwrap();
        write(&mut c, "old", 3, 7, Bytes::from(vec![6u8; 512]))
            .await
            .unwrap();
        node.kill9().await.unwrap();
        node.restart().await.unwrap();
        let mut c = node.client().await.unwrap();
        assert_eq!(node_info(&mut c).await.components[0].fence_epoch, 3);
        assert_eq!(read(&mut c, "old", 7, 1).await.unwrap(), vec![6u8; 512]);
        assert_eq!(
            read(&mut c, "old", 0, 7).await.unwrap(),
            blocks[..7].concat()
        );
    })
    .await;
}

/// A component file of a newer format stops the start with a message saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_file_of_a_newer_format_stops_the_start_clearly() {
    with_timeout(async {
        let mut node = NodeProcess::start_default().await.unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 512, 4).await;
        node.kill9().await.unwrap();
        let path = node.component_file("c");
        let mut file = std::fs::read(&path).unwrap();
        file[8..12].copy_from_slice(&3u32.to_le_bytes());
        std::fs::write(&path, file).unwrap();
        let err = node.restart().await.unwrap_err();
        let text = format!("{err:#}\n{}", node.log());
        assert!(
            text.contains("written by a newer dagraid")
                && text.contains("downgrade after the first version 3 write is not supported"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_delays_and_hangs_behave_and_clear() {
    with_timeout(async {
        let node = NodeProcess::start(NodeOptions {
            fault_injection: true,
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 512, 16).await;
        let data = Bytes::from(vec![3u8; 512]);

        // FAIL with a chosen code, for the next two writes only; reads are not matched.
        inject(
            &mut c,
            pb::FaultKind::Fail,
            pb::FaultOps::Write,
            2,
            0,
            Code::Unavailable as i32,
        )
        .await;
        for _ in 0..2 {
            let e = write(&mut c, "c", 0, 0, data.clone()).await.unwrap_err();
            assert_status(e, Code::Unavailable, error_kind::INJECTED, "injected");
        }
        assert_eq!(
            read(&mut c, "c", 0, 1).await.unwrap(),
            vec![0u8; 512],
            "failed writes changed nothing"
        );
        write(&mut c, "c", 0, 0, data.clone()).await.unwrap();

        // DELAY still performs the operation.
        inject(&mut c, pb::FaultKind::Delay, pb::FaultOps::Read, 1, 50, 0).await;
        assert_eq!(read(&mut c, "c", 0, 1).await.unwrap(), data);

        // HANG: the client's deadline expires; clearing the faults releases the operation.
        inject(&mut c, pb::FaultKind::Hang, pb::FaultOps::Any, 0, 0, 0).await;
        let mut req = tonic::Request::new(pb::ReadBlocksRequest {
            fencing: None,
            component_id: "c".into(),
            start_block: 0,
            block_count: 1,
        });
        req.set_timeout(Duration::from_millis(200));
        let e = c.read_blocks(req).await.unwrap_err();
        // tonic answers an expired grpc-timeout with CANCELLED ("Timeout expired").
        assert!(
            matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{e:?}"
        );
        let mut hung = c.clone();
        let pending = tokio::spawn(async move { read(&mut hung, "c", 0, 1).await });
        node.wait_for_log_count("action=Hang", 2, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            !pending.is_finished(),
            "a hung read answered before the faults were cleared"
        );
        c.clear_faults(pb::ClearFaultsRequest {
            component_id: "c".into(),
        })
        .await
        .unwrap();
        assert_eq!(pending.await.unwrap().unwrap(), data);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_is_refused_unless_enabled() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 512, 4).await;
        assert!(!node_info(&mut c).await.fault_injection_enabled);
        let e = c
            .inject_fault(pb::InjectFaultRequest {
                component_id: "c".into(),
                kind: pb::FaultKind::Fail as i32,
                ops: pb::FaultOps::Any as i32,
                count: 0,
                delay_ms: 0,
                status_code: 0,
                seed: 0,
            })
            .await
            .unwrap_err();
        assert_status(
            e,
            Code::FailedPrecondition,
            error_kind::FAULT_INJECTION_DISABLED,
            "--fault-injection",
        );
        write(&mut c, "c", 0, 0, Bytes::from(vec![1u8; 512]))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_keeps_data_epoch_labels_and_identity() {
    with_timeout(async {
        let mut node = NodeProcess::start(NodeOptions {
            node_id: Some("node-a".into()),
            ..NodeOptions::default()
        })
        .await
        .unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 4096, 32).await;
        let mut rng = StdRng::seed_from_u64(9);
        let data = random(&mut rng, 32 * 4096);
        write(&mut c, "c", 2, 0, data.clone()).await.unwrap();
        c.write_slot(pb::WriteSlotRequest {
            fencing: fencing(2),
            component_id: "c".into(),
            area: pb::SlotArea::Metadata as i32,
            payload: Bytes::from_static(b"parity map v1"),
        })
        .await
        .unwrap();
        c.fence(pb::FenceRequest {
            component_id: String::new(),
            cluster_id: CLUSTER.into(),
            epoch: 3,
        })
        .await
        .unwrap();
        let serial = node_info(&mut c).await.components[0].serial;

        node.kill9().await.unwrap();
        node.restart().await.unwrap();
        let mut c = node.client().await.unwrap();
        let info = node_info(&mut c).await;
        assert_eq!(info.node_id, "node-a");
        assert_eq!(info.epoch, 3);
        assert_eq!(info.components.len(), 1);
        assert_eq!(info.components[0].serial, serial);
        assert_eq!(read(&mut c, "c", 0, 32).await.unwrap(), data);
        let meta = c
            .read_slot(pb::ReadSlotRequest {
                fencing: None,
                component_id: "c".into(),
                area: pb::SlotArea::Metadata as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((meta.present, meta.sequence), (true, 1));
        assert_eq!(meta.payload, &b"parity map v1"[..]);
        let e = write(&mut c, "c", 2, 0, data.slice(..4096))
            .await
            .unwrap_err();
        assert_eq!(kind(&e), Some(error_kind::STALE_EPOCH));

        // A graceful stop exits 0 and the next start sees the same state.
        let status = node.terminate().await.unwrap();
        assert!(status.success(), "SIGTERM exit: {status}");
        node.restart().await.unwrap();
        let mut c = node.client().await.unwrap();
        assert_eq!(node_info(&mut c).await.epoch, 3);
        assert_eq!(
            read(&mut c, "c", 31, 1).await.unwrap(),
            data.slice(31 * 4096..)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_are_created_listed_and_deleted_at_run_time() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let mut c = node.client().await.unwrap();
        let a = create(&mut c, "vol1.col0", 512, 100).await;
        let b = c
            .create_component(pb::CreateComponentRequest {
                log_bytes: 0,
                fencing: fencing(0),
                component_id: "vol2.col3".into(),
                block_size: 65536,
                block_count: 10,
                serial: 77,
            })
            .await
            .unwrap()
            .into_inner()
            .component
            .unwrap();
        assert_eq!(b.serial, 77);
        assert_ne!(a.serial, 0, "the node picks a serial");
        let list = c
            .list_components(pb::ListComponentsRequest {})
            .await
            .unwrap()
            .into_inner()
            .components;
        let ids: Vec<_> = list
            .iter()
            .map(|x| (x.component_id.as_str(), x.block_size, x.block_count))
            .collect();
        assert_eq!(ids, vec![("vol1.col0", 512, 100), ("vol2.col3", 65536, 10)]);
        assert!(node.component_file("vol2.col3").exists());

        c.delete_component(pb::DeleteComponentRequest {
            fencing: fencing(0),
            component_id: "vol2.col3".into(),
        })
        .await
        .unwrap();
        assert!(!node.component_file("vol2.col3").exists());
        let e = read(&mut c, "vol2.col3", 0, 1).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = c
            .delete_component(pb::DeleteComponentRequest {
                fencing: fencing(0),
                component_id: "vol2.col3".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        // Re-created with the same id: a fresh, zeroed component.
        create(&mut c, "vol2.col3", 512, 4).await;
        assert_eq!(
            read(&mut c, "vol2.col3", 0, 4).await.unwrap(),
            vec![0u8; 2048]
        );
        let info = node_info(&mut c).await;
        assert_eq!(info.components.len(), 2);
        assert_eq!(info.cluster_id, CLUSTER);
        assert_eq!(info.max_io_bytes, 16 << 20);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_metadata_slots_round_trip_with_sequences() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "c", 512, 4).await;
        for (area, max) in [
            (pb::SlotArea::Label, 4096usize),
            (pb::SlotArea::Metadata, 65536),
        ] {
            for seq in 1..=3u64 {
                let payload = Bytes::from(vec![seq as u8; max / seq as usize]);
                let written = c
                    .write_slot(pb::WriteSlotRequest {
                        fencing: fencing(0),
                        component_id: "c".into(),
                        area: area as i32,
                        payload: payload.clone(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(written.sequence, seq);
                let got = c
                    .read_slot(pb::ReadSlotRequest {
                        fencing: None,
                        component_id: "c".into(),
                        area: area as i32,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(
                    (got.present, got.sequence, got.payload),
                    (true, seq, payload)
                );
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_storage_service_serving() {
    with_timeout(async {
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
        let node = NodeProcess::start_default().await.unwrap();
        let mut health = HealthClient::new(node.channel().await.unwrap());
        let status = health
            .check(HealthCheckRequest {
                service: "dagraid.storage.v1.StorageNode".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_succeeds_and_large_blocks_transfer_whole() {
    with_timeout(async {
        let node = NodeProcess::start_default().await.unwrap();
        let mut c = node.client().await.unwrap();
        create(&mut c, "big", 1 << 20, 16).await;
        let mut rng = StdRng::seed_from_u64(11);
        let data = random(&mut rng, 8 << 20);
        write(&mut c, "big", 0, 8, data.clone()).await.unwrap();
        c.flush(pb::FlushRequest {
            fencing: fencing(0),
            component_id: "big".into(),
        })
        .await
        .unwrap();
        assert_eq!(read(&mut c, "big", 8, 8).await.unwrap(), data);
        assert_eq!(
            read(&mut c, "big", 15, 1).await.unwrap(),
            data.slice(7 << 20..)
        );
    })
    .await;
}
