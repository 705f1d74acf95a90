//! The log-area calls (`WriteLog`, `ReadLog`, storage protocol version 3) through the gRPC
//! service of a node on a temporary data directory: what they store, what survives a restart,
//! fencing, and the precise answer to every request the node refuses (having changed nothing).

use std::sync::Arc;

use bytes::Bytes;
use dagraid_node::{Node, NodeConfig, StorageService};
use dagraid_proto::error_kind;
use dagraid_proto::storage::v1 as pb;
use pb::storage_node_server::StorageNode;
use tonic::{Code, Request, Status};

const CLUSTER: &str = "dagraid";
/// The node's payload limit in these tests: below the default log area (1 MiB).
const MAX_IO: u64 = 64 * 1024;
const LOG: u64 = 1 << 20;

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig::new(dir);
    config.cluster_id = Some(CLUSTER.into());
    config.max_io_bytes = MAX_IO;
    config
}

fn fencing(epoch: u64) -> Option<pb::Fencing> {
    Some(pb::Fencing {
        cluster_id: CLUSTER.into(),
        epoch,
    })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29) ^ seed)
        .collect()
}

/// A node on `dir` with component "c" (512-byte blocks, the default log area) at epoch 1.
async fn node_with_component(dir: &std::path::Path) -> (Arc<Node>, StorageService) {
    let node = Arc::new(Node::open(&config(dir)).unwrap());
    let service = StorageService::new(node.clone());
    let created = service
        .create_component(Request::new(pb::CreateComponentRequest {
            fencing: fencing(1),
            component_id: "c".into(),
            block_size: 512,
            block_count: 16,
            serial: 0,
            log_bytes: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.component.unwrap().log_bytes, LOG);
    (node, service)
}

fn open(dir: &std::path::Path) -> StorageService {
    StorageService::new(Arc::new(Node::open(&config(dir)).unwrap()))
}

async fn write_log(
    service: &StorageService,
    epoch: Option<u64>,
    id: &str,
    offset: u64,
    data: Vec<u8>,
) -> Result<(), Status> {
    service
        .write_log(Request::new(pb::WriteLogRequest {
            fencing: epoch.and_then(fencing),
            component_id: id.into(),
            offset,
            data: Bytes::from(data),
        }))
        .await
        .map(drop)
}

async fn read_log(
    service: &StorageService,
    epoch: Option<u64>,
    id: &str,
    offset: u64,
    length: u32,
) -> Result<Vec<u8>, Status> {
    service
        .read_log(Request::new(pb::ReadLogRequest {
            component_id: id.into(),
            offset,
            length,
            fencing: epoch.and_then(fencing),
        }))
        .await
        .map(|r| r.into_inner().data.to_vec())
}

/// Asserts the status's code and `dagraid-error-kind`, and that its message names `needle`.
fn assert_refused<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, Status>,
    code: Code,
    kind: &str,
    needle: &str,
) {
    let status = r.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert_eq!(
        status
            .metadata()
            .get(error_kind::HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(kind),
        "{what}: {status:?}"
    );
    assert!(
        status.message().contains(needle),
        "{what}: {needle:?} not in {:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_writes_read_back_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = pattern(8192, 1);
    let last = pattern(4096, 2);
    {
        let (_node, service) = node_with_component(dir.path()).await;
        // A fresh log area reads as zeros.
        assert_eq!(
            read_log(&service, None, "c", 0, 8192).await.unwrap(),
            vec![0u8; 8192]
        );
        write_log(&service, Some(1), "c", 0, first.clone())
            .await
            .unwrap();
        write_log(&service, Some(1), "c", LOG - 4096, last.clone())
            .await
            .unwrap();
        // Overwrites in place, the rest untouched.
        write_log(&service, Some(1), "c", 4096, vec![7u8; 4096])
            .await
            .unwrap();
        let mut expected = first.clone();
        expected[4096..].fill(7);
        assert_eq!(
            read_log(&service, Some(1), "c", 0, 8192).await.unwrap(),
            expected
        );
        assert_eq!(
            read_log(&service, None, "c", LOG - 4096, 4096)
                .await
                .unwrap(),
            last
        );
        // The log area is not the blocks: they still read as zeros.
        let blocks = service
            .read_blocks(Request::new(pb::ReadBlocksRequest {
                component_id: "c".into(),
                start_block: 0,
                block_count: 16,
                fencing: None,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(blocks.data.iter().all(|&b| b == 0));
    }
    // Acknowledged means durable: a new node on the directory reads the same bytes.
    let service = open(dir.path());
    let mut expected = first;
    expected[4096..].fill(7);
    assert_eq!(
        read_log(&service, None, "c", 0, 8192).await.unwrap(),
        expected
    );
    assert_eq!(
        read_log(&service, Some(1), "c", LOG - 4096, 4096)
            .await
            .unwrap(),
        last
    );
    assert_eq!(
        read_log(&service, None, "c", 8192, 4096).await.unwrap(),
        vec![0u8; 4096]
    );
}

/// A log write is fenced exactly like a block write: refused below max(node epoch, component
/// epoch) with the same status and kind, and a read that carries fencing too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_epoch_is_refused_like_a_block_write() {
    let dir = tempfile::tempdir().unwrap();
    let (node, service) = node_with_component(dir.path()).await;
    write_log(&service, Some(1), "c", 0, vec![1u8; 4096])
        .await
        .unwrap();
    node.fence(CLUSTER, 5).await.unwrap();
    let block_write = service
        .write_blocks(Request::new(pb::WriteBlocksRequest {
            fencing: fencing(4),
            component_id: "c".into(),
            start_block: 0,
            data: Bytes::from(vec![2u8; 512]),
        }))
        .await
        .unwrap_err();
    assert_eq!(block_write.code(), Code::FailedPrecondition);
    assert_refused(
        "write at 4 under node epoch 5",
        write_log(&service, Some(4), "c", 0, vec![2u8; 4096]).await,
        Code::FailedPrecondition,
        error_kind::STALE_EPOCH,
        "epoch 4 is stale",
    );
    // A component fence above the node epoch.
    node.fence_component(CLUSTER, "c", 7).await.unwrap();
    for epoch in [5, 6] {
        assert_refused(
            "write under the component fence",
            write_log(&service, Some(epoch), "c", 0, vec![2u8; 4096]).await,
            Code::FailedPrecondition,
            error_kind::STALE_EPOCH,
            "fenced at epoch 7",
        );
        assert_refused(
            "fenced read under the component fence",
            read_log(&service, Some(epoch), "c", 0, 4096).await,
            Code::FailedPrecondition,
            error_kind::STALE_EPOCH,
            "fenced at epoch 7",
        );
    }
    // Nothing was written; an unfenced read (older clients) is served.
    assert_eq!(
        read_log(&service, None, "c", 0, 4096).await.unwrap(),
        vec![1u8; 4096]
    );
    // At the component's epoch, or above it, the write goes through.
    write_log(&service, Some(7), "c", 0, vec![3u8; 4096])
        .await
        .unwrap();
    assert_eq!(
        read_log(&service, Some(7), "c", 0, 4096).await.unwrap(),
        vec![3u8; 4096]
    );
    assert_refused(
        "wrong cluster",
        service
            .write_log(Request::new(pb::WriteLogRequest {
                fencing: Some(pb::Fencing {
                    cluster_id: "other".into(),
                    epoch: 9,
                }),
                component_id: "c".into(),
                offset: 0,
                data: Bytes::from(vec![4u8; 4096]),
            }))
            .await,
        Code::FailedPrecondition,
        error_kind::WRONG_CLUSTER,
        "\"other\"",
    );
    assert_refused(
        "write without fencing",
        write_log(&service, None, "c", 0, vec![4u8; 4096]).await,
        Code::InvalidArgument,
        error_kind::INVALID_REQUEST,
        "fencing",
    );
    assert_eq!(
        read_log(&service, None, "c", 0, 4096).await.unwrap(),
        vec![3u8; 4096]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_log_request_is_answered_precisely_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, service) = node_with_component(dir.path()).await;
    let kept = pattern(8192, 9);
    write_log(&service, Some(1), "c", 0, kept.clone())
        .await
        .unwrap();
    let (inv, range) = (Code::InvalidArgument, Code::OutOfRange);
    let (invalid, out_of_range) = (error_kind::INVALID_REQUEST, error_kind::OUT_OF_RANGE);
    // Writes.
    for (what, id, offset, len, code, kind, needle) in [
        (
            "unknown component",
            "nope",
            0,
            4096,
            Code::NotFound,
            error_kind::UNKNOWN_COMPONENT,
            "\"nope\" does not exist",
        ),
        ("invalid id", "../c", 0, 4096, inv, invalid, "component id"),
        (
            "misaligned offset",
            "c",
            512,
            4096,
            inv,
            invalid,
            "log offset 512",
        ),
        (
            "misaligned length",
            "c",
            0,
            4608,
            inv,
            invalid,
            "4608 bytes",
        ),
        ("partial page", "c", 0, 100, inv, invalid, "100 bytes"),
        ("empty data", "c", 0, 0, inv, invalid, "0 bytes"),
        (
            "at the end",
            "c",
            LOG,
            4096,
            range,
            out_of_range,
            "log area of 1048576 bytes",
        ),
        (
            "across the end",
            "c",
            LOG - 4096,
            8192,
            range,
            out_of_range,
            "log area of 1048576 bytes",
        ),
        (
            "offset overflow",
            "c",
            u64::MAX - 4095,
            4096,
            range,
            out_of_range,
            "outside its log area",
        ),
        (
            "above max_io_bytes",
            "c",
            0,
            MAX_IO as usize + 4096,
            Code::ResourceExhausted,
            error_kind::TOO_LARGE,
            "limit of 65536",
        ),
    ] {
        assert_refused(
            &format!("write: {what}"),
            write_log(&service, Some(1), id, offset, vec![0xee; len]).await,
            code,
            kind,
            needle,
        );
    }
    // Reads.
    for (what, id, offset, len, code, kind, needle) in [
        (
            "unknown component",
            "nope",
            0,
            4096,
            Code::NotFound,
            error_kind::UNKNOWN_COMPONENT,
            "\"nope\" does not exist",
        ),
        (
            "misaligned offset",
            "c",
            100,
            4096,
            inv,
            invalid,
            "log offset 100",
        ),
        (
            "misaligned length",
            "c",
            0,
            1000,
            inv,
            invalid,
            "1000 bytes",
        ),
        ("zero length", "c", 0, 0, inv, invalid, "0 bytes"),
        (
            "beyond the end",
            "c",
            LOG - 4096,
            8192,
            range,
            out_of_range,
            "outside its log area",
        ),
        (
            "offset overflow",
            "c",
            u64::MAX - 4095,
            4096,
            range,
            out_of_range,
            "outside its log area",
        ),
        (
            "above max_io_bytes",
            "c",
            0,
            MAX_IO as u32 + 4096,
            Code::ResourceExhausted,
            error_kind::TOO_LARGE,
            "limit of 65536",
        ),
    ] {
        assert_refused(
            &format!("read: {what}"),
            read_log(&service, Some(1), id, offset, len).await,
            code,
            kind,
            needle,
        );
    }
    // Nothing the refusals carried reached the log area.
    assert_eq!(read_log(&service, None, "c", 0, 8192).await.unwrap(), kept);
    let rest = read_log(&service, None, "c", 8192, MAX_IO as u32)
        .await
        .unwrap();
    assert!(rest.iter().all(|&b| b == 0));
    let end = read_log(&service, None, "c", LOG - MAX_IO, MAX_IO as u32)
        .await
        .unwrap();
    assert!(end.iter().all(|&b| b == 0));
    // Exactly max_io_bytes is accepted.
    write_log(
        &service,
        Some(1),
        "c",
        LOG - MAX_IO,
        vec![5u8; MAX_IO as usize],
    )
    .await
    .unwrap();
}
