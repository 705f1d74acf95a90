//! Overload is not failure, in process: a RAID 5 array over real storage nodes (served in this
//! process), each behind a node client that lets one block call in flight at a time, each node
//! slow (every block write delayed) but far within the node deadline. Many concurrent writes
//! queue in the coordinator for several node deadlines: the deadline measures the node, not the
//! queue, so every write succeeds, no column is failed and every byte reads back.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Node, with_timeout};
use dagraid_coordinator::node_client::{FencingContext, NodeClient, NodeClientConfig};
use dagraid_coordinator::remote::RemoteComponent;
use dagraid_core::access::{Array, ArrayConfig, InMemoryStates};
use dagraid_core::array::{ComponentState, ComponentStates};
use dagraid_core::dag::ComponentTable;
use dagraid_core::engine::EngineConfig;
use dagraid_core::io::ComponentIo;
use dagraid_core::layout::{Geometry, Layout, RaidLevel};
use dagraid_proto::storage::v1 as spb;
use rand::{Rng, SeedableRng};

const BLOCK: u32 = 4096;
/// Stripe unit: 16 blocks (64 KiB); a stripe holds 3 units of data on 4 columns.
const UNIT_BLOCKS: u64 = 16;
/// Concurrent full-stripe writes, one per stripe.
const WRITES: u64 = 64;
/// What every node adds to each block write.
const WRITE_DELAY_MS: u32 = 40;
/// The node deadline: some 25 times one slow write, far below the queue (64 x 40 ms per node).
const DEADLINE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_calls_behind_one_in_flight_per_node_fail_no_column() {
    with_timeout(async {
        let fencing = FencingContext::new("dagraid", 1);
        let config = NodeClientConfig {
            max_in_flight: 1,
            io_deadline: DEADLINE,
            ..NodeClientConfig::default()
        };
        let blocks = UNIT_BLOCKS * WRITES;
        let mut nodes = Vec::new();
        let mut components: Vec<Arc<dyn ComponentIo>> = Vec::new();
        for i in 0..4 {
            let node = Node::start(&format!("n{i}")).await;
            let client =
                NodeClient::new(&node.addr().to_string(), fencing.clone(), config.clone()).unwrap();
            let info = client
                .create_component(&format!("c{i}"), BLOCK, blocks, 0)
                .await
                .unwrap();
            let mut raw = spb::storage_node_client::StorageNodeClient::connect(format!(
                "http://{}",
                node.addr()
            ))
            .await
            .unwrap();
            raw.inject_fault(spb::InjectFaultRequest {
                component_id: info.id.clone(),
                kind: spb::FaultKind::Delay as i32,
                ops: spb::FaultOps::Write as i32,
                count: 0,
                delay_ms: WRITE_DELAY_MS,
                status_code: 0,
                seed: 0,
            })
            .await
            .unwrap();
            components.push(Arc::new(RemoteComponent::from_info(client, &info).unwrap()));
            nodes.push(node);
        }
        let layout = Layout::new(
            RaidLevel::Raid5,
            Geometry::new(4, UNIT_BLOCKS, u64::from(BLOCK), blocks).unwrap(),
        )
        .unwrap();
        let table: ComponentTable = components.into();
        let array = Array::new(
            layout,
            table,
            ComponentStates::all_optimal(4),
            ArrayConfig {
                engine: EngineConfig {
                    node_deadline: DEADLINE,
                },
                ..ArrayConfig::default()
            },
            Arc::new(InMemoryStates),
        )
        .unwrap();

        let stripe = layout.stripe_data_bytes();
        let content = |s: u64| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(s);
            let mut v = vec![0u8; stripe as usize];
            rng.fill(&mut v[..]);
            v
        };
        let writes: Vec<_> = (0..WRITES)
            .map(|s| {
                let array = array.clone();
                let data = Bytes::from(content(s));
                tokio::spawn(async move { array.write(s * stripe, data).await })
            })
            .collect();
        for (s, w) in writes.into_iter().enumerate() {
            let report = w
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("write of stripe {s}: {e}"));
            assert!(
                report.marked_failed.is_empty(),
                "write of stripe {s} failed columns {:?}",
                report.marked_failed
            );
        }
        assert_eq!(
            array.states().states(),
            &[ComponentState::Optimal; 4],
            "no column failed"
        );
        for s in 0..WRITES {
            let (data, _) = array.read(s * stripe, stripe).await.unwrap();
            assert!(
                data.into_bytes()[..] == content(s)[..],
                "stripe {s} reads back"
            );
        }
        assert!(array.lost_stripes().is_empty());
        drop(array);
        for mut n in nodes {
            n.stop().await;
        }
    })
    .await;
}
