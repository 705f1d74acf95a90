//! A remote component's log area over a real storage node served in this process: its size as
//! the node reports it, and `write_log` / `read_log` round trips, fenced like block writes and
//! durable across a node restart.

mod common;

use bytes::Bytes;
use common::{Node, with_timeout};
use dagraid_coordinator::node_client::{FencingContext, NodeClient, NodeClientConfig};
use dagraid_coordinator::remote::RemoteComponent;
use dagraid_core::io::{ComponentIo, IoErrorKind, LOG_ALIGN};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37) ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_component_writes_and_reads_its_log_area() {
    with_timeout(async {
        let mut node = Node::start("n0").await;
        let client = NodeClient::new(
            &node.addr().to_string(),
            FencingContext::new("dagraid", 1 << 32),
            NodeClientConfig::default(),
        )
        .unwrap();
        let info = client.create_component("c0", 4096, 64, 0).await.unwrap();
        // The node's default: max(1 MiB, 8 blocks).
        assert_eq!(info.log_bytes, 1 << 20);
        let c = RemoteComponent::from_info(client.clone(), &info).unwrap();
        assert_eq!(c.log_bytes(), info.log_bytes);
        // Built from the volume's geometry alone, it takes the size the node reported.
        let by_geometry = RemoteComponent::new(client.clone(), "c0", 4096, 64).unwrap();
        assert_eq!(by_geometry.log_bytes(), info.log_bytes);
        let listed = client.node_info().await.unwrap();
        assert_eq!(listed.components[0].log_bytes, c.log_bytes());

        let first = pattern(3 * LOG_ALIGN as usize, 1);
        let last = pattern(LOG_ALIGN as usize, 2);
        let end = c.log_bytes() - LOG_ALIGN;
        c.write_log(0, Bytes::from(first.clone())).await.unwrap();
        by_geometry
            .write_log(end, Bytes::from(last.clone()))
            .await
            .unwrap();
        assert_eq!(c.read_log(0, first.len() as u32).await.unwrap(), first);
        assert_eq!(c.read_log(end, LOG_ALIGN as u32).await.unwrap(), last);
        assert_eq!(
            c.read_log(4 * LOG_ALIGN, LOG_ALIGN as u32).await.unwrap(),
            vec![0u8; LOG_ALIGN as usize]
        );
        // Beyond the area: refused before any call.
        let e = c.read_log(end, 2 * LOG_ALIGN as u32).await.unwrap_err();
        assert_eq!(e.kind, IoErrorKind::OutOfRange, "{e}");

        // After a component fence the log write carries the component's new epoch.
        c.fence().await.unwrap();
        assert!(client.component_epoch("c0") > 1 << 32);
        c.write_log(LOG_ALIGN, Bytes::from(vec![9u8; LOG_ALIGN as usize]))
            .await
            .unwrap();

        // Acknowledged log writes are durable: the node restarted on its directory serves them.
        node.restart().await;
        let mut expected = first.clone();
        expected[LOG_ALIGN as usize..2 * LOG_ALIGN as usize].fill(9);
        assert_eq!(
            c.read_log(0, expected.len() as u32).await.unwrap(),
            expected
        );
        assert_eq!(c.read_log(end, LOG_ALIGN as u32).await.unwrap(), last);

        // A client of an older owner is refused like a block write: fenced.
        let old = NodeClient::new(
            &node.addr().to_string(),
            FencingContext::new("dagraid", 1),
            NodeClientConfig::default(),
        )
        .unwrap();
        let stale = RemoteComponent::from_info(old, &info).unwrap();
        let e = stale
            .write_log(0, Bytes::from(vec![1u8; LOG_ALIGN as usize]))
            .await
            .unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Fenced, "{e}");
        assert_eq!(
            c.read_log(0, expected.len() as u32).await.unwrap(),
            expected
        );
        node.stop().await;
    })
    .await;
}
