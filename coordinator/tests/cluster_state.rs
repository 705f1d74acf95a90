//! Labels, the durable state, fencing and assembly, in process over real storage nodes: the
//! labels each change leaves on the nodes, a component whose label cannot be written, the fence
//! before the first write of an epoch, and a store written by a coordinator before labels.

mod common;

use std::time::Duration;

use common::*;
use dagraid_coordinator::node_client::{FencingContext, NodeClient, NodeClientConfig, SlotArea};
use dagraid_coordinator::store::{STORE_FORMAT, VOLUME_RECORD_VERSION};
use dagraid_core::layout::ParityKind;
use dagraid_core::meta::label::{ComponentLabel, LabelState};
use dagraid_proto::volume::v1 as pb;
use rand::SeedableRng;
use tonic::Code;

const KIB: u64 = 1024;

/// The label of every column of `v` as its node has it (`None`: no label or no answer).
async fn labels(cluster: &Cluster, v: &pb::Volume) -> Vec<Option<ComponentLabel>> {
    let mut out = Vec::new();
    for c in &v.components {
        let slot = cluster
            .node(&c.node_id)
            .client()
            .read_slot(&c.component_id, SlotArea::Label)
            .await;
        out.push(match slot {
            Ok(Some(s)) => Some(ComponentLabel::decode(&s.payload).unwrap()),
            _ => None,
        });
    }
    out
}

async fn get(client: &mut Client, name: &str) -> pb::Volume {
    client
        .get_volume(pb::GetVolumeRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_change_is_on_the_surviving_labels_and_a_clean_stop_marks_them_clean() {
    with_timeout(async {
        let mut cluster = Cluster::start(5, |_| {}).await;
        let mut client = cluster.client().await;
        let v = client
            .create_volume(pb::CreateVolumeRequest {
                stripe_unit_bytes: 16 * KIB,
                ..create("v", pb::RaidLevel::Raid5, 256 * KIB)
            })
            .await
            .unwrap()
            .into_inner();
        // Creation labels every component: counter 1, in use (not clean), all optimal.
        let l = labels(&cluster, &v).await;
        for (column, label) in l.iter().enumerate() {
            let label = label.as_ref().expect("every component is labelled");
            assert_eq!(label.volume_id, v.id);
            assert_eq!(label.volume_name, "v");
            assert_eq!(label.column as usize, column);
            assert_eq!(label.cluster_id, "dagraid");
            assert_eq!((label.mod_counter, label.clean), (1, false));
            assert!(label.members.iter().all(|m| m.state == LabelState::Optimal));
            assert_eq!(
                label.members[column].component_id,
                v.components[column].component_id
            );
        }

        // A failure is on the four surviving labels; the failed one keeps its old label.
        client
            .fail_component(pb::FailComponentRequest {
                volume: "v".into(),
                column: 2,
            })
            .await
            .unwrap();
        let l = labels(&cluster, &v).await;
        assert_eq!(l[2].as_ref().unwrap().mod_counter, 1);
        for c in [0, 1, 3, 4] {
            let label = l[c].as_ref().unwrap();
            assert_eq!(label.mod_counter, 2, "column {c}");
            assert_eq!(label.config_epoch, 2);
            assert_eq!(label.members[2].state, LabelState::Failed);
        }

        // A clean stop marks the survivors clean under a new counter; the next assembly marks
        // them dirty again before serving.
        cluster.stop_coordinator().await;
        let l = labels(&cluster, &v).await;
        for c in [0, 1, 3, 4] {
            let label = l[c].as_ref().unwrap();
            assert_eq!((label.mod_counter, label.clean), (3, true), "column {c}");
            assert_eq!(label.config_epoch, 2, "no state changed");
        }
        cluster.start_coordinator().await;
        let mut client = cluster.client().await;
        let after = get(&mut client, "v").await;
        assert_eq!(after.state, pb::VolumeState::Degraded as i32);
        assert!(after.resync.is_none(), "a clean volume is not resynced");
        let l = labels(&cluster, &v).await;
        for c in [0, 1, 3, 4] {
            let label = l[c].as_ref().unwrap();
            assert_eq!((label.mod_counter, label.clean), (4, false), "column {c}");
        }
        assert_eq!(l[2].as_ref().unwrap().mod_counter, 1);
        check_columns(&cluster, &after, None).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_component_whose_label_cannot_be_written_is_failed_and_the_access_is_served() {
    with_timeout(async {
        // No health checks after start: only accesses and label writes see the nodes go.
        let mut cluster =
            Cluster::start(5, |c| c.health_interval = Duration::from_secs(3600)).await;
        let mut client = cluster.client().await;
        let v = client
            .create_volume(pb::CreateVolumeRequest {
                stripe_unit_bytes: 16 * KIB,
                ..create("r6", pb::RaidLevel::Raid6, 256 * KIB)
            })
            .await
            .unwrap()
            .into_inner();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let data = random_bytes(&mut rng, v.size_bytes as usize);
        client
            .write(pb::WriteRequest {
                volume: "r6".into(),
                offset: 0,
                data: data.clone().into(),
            })
            .await
            .unwrap();
        // The first 4 KiB are on column `a`; a degraded read of them reads the stripe's other
        // data units and P, never Q (column `b`).
        let layout = layout_of(&v);
        let stripe = &layout.map(0, 4096).unwrap().stripes[0];
        let a = stripe.units[0].column;
        let b = stripe
            .parity
            .iter()
            .find(|p| p.kind == ParityKind::Q)
            .unwrap()
            .column;
        let id = |c: usize| v.components[c].node_id.clone();
        let (node_a, node_b) = (id(a), id(b));
        cluster.node_mut(&node_a).stop().await;
        cluster.node_mut(&node_b).stop().await;

        // The read fails column a; its label change cannot reach column b, so b is failed too,
        // and the read is answered.
        let got = client
            .read(pb::ReadRequest {
                volume: "r6".into(),
                offset: 0,
                length: 4096,
            })
            .await
            .unwrap()
            .into_inner()
            .data;
        assert_eq!(got[..], data[..4096]);
        let after = eventually(Duration::from_secs(10), "column b failed", || {
            let mut client = client.clone();
            async move {
                let v = get(&mut client, "r6").await;
                (v.components[b].state == pb::ComponentState::Failed as i32).then_some(v)
            }
        })
        .await;
        assert_eq!(after.components[a].state, pb::ComponentState::Failed as i32);
        let l = labels(&cluster, &v).await;
        for (c, label) in l.iter().enumerate().filter(|(c, _)| *c != a && *c != b) {
            let label = label.as_ref().unwrap();
            assert_eq!(label.members[a].state, LabelState::Failed, "column {c}");
            assert_eq!(label.members[b].state, LabelState::Failed, "column {c}");
        }
        // Durable: after a restart with both nodes back, both stay failed.
        cluster.stop_coordinator().await;
        cluster.node_mut(&node_a).restart().await;
        cluster.node_mut(&node_b).restart().await;
        cluster.start_coordinator().await;
        let mut client = cluster.client().await;
        let after = get(&mut client, "r6").await;
        assert_eq!(after.components[a].state, pb::ComponentState::Failed as i32);
        assert_eq!(after.components[b].state, pb::ComponentState::Failed as i32);
        let all = client
            .read(pb::ReadRequest {
                volume: "r6".into(),
                offset: 0,
                length: v.size_bytes,
            })
            .await
            .unwrap()
            .into_inner()
            .data;
        assert!(all[..] == data[..]);
        check_columns(&cluster, &after, None).await;
    })
    .await;
}

/// Issue 16, item 3: a failure the array marked whose recording failed (the access was not
/// answered OK) is still a failure at a clean shutdown. Before, the shutdown wrote the
/// recorder's last stored states (every column optimal) at a higher counter, and the failed
/// column came back optimal at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_whose_recording_failed_survives_a_clean_shutdown() {
    with_timeout(async {
        let mut cluster =
            Cluster::start(5, |c| c.health_interval = Duration::from_secs(3600)).await;
        let mut client = cluster.client().await;
        let v = client
            .create_volume(pb::CreateVolumeRequest {
                stripe_unit_bytes: 16 * KIB,
                ..create("r5", pb::RaidLevel::Raid5, 256 * KIB)
            })
            .await
            .unwrap()
            .into_inner();
        let layout = layout_of(&v);
        let stripe = &layout.map(0, 4096).unwrap().stripes[0];
        let a = stripe.units[0].column;
        let parity = stripe.parity[0].column;
        let b = (0..5).find(|&c| c != a && c != parity).unwrap();
        let id = |c: usize| v.components[c].node_id.clone();
        let (node_a, node_b) = (id(a), id(b));
        cluster.node_mut(&node_a).stop().await;
        cluster.node_mut(&node_b).stop().await;
        // Column a fails the write; the degraded retry needs column b: beyond the tolerance.
        // The failure of a cannot be recorded (b's label cannot be written either).
        let status = client
            .write(pb::WriteRequest {
                volume: "r5".into(),
                offset: 0,
                data: vec![5u8; 4096].into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        // Both nodes come back; a clean shutdown records the states the array has.
        cluster.node_mut(&node_a).restart().await;
        cluster.node_mut(&node_b).restart().await;
        cluster.stop_coordinator().await;
        cluster.start_coordinator().await;
        let mut client = cluster.client().await;
        let after = get(&mut client, "r5").await;
        assert_eq!(
            after.components[a].state,
            pb::ComponentState::Failed as i32,
            "the column marked failed stays failed across a clean restart"
        );
        assert_eq!(
            after.components[b].state,
            pb::ComponentState::Optimal as i32
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_write_of_an_epoch_is_preceded_by_a_fence() {
    with_timeout(async {
        let node = Node::start("n1").await;
        let addr = node.addr().to_string();
        let at = |epoch| {
            NodeClient::new(
                &addr,
                FencingContext::new("dagraid", epoch),
                NodeClientConfig::default(),
            )
            .unwrap()
        };
        let c3 = at(3);
        assert_eq!(c3.fenced_epoch(), 0);
        c3.create_component("c-1", 4096, 16, 0).await.unwrap();
        assert_eq!(c3.fenced_epoch(), 3, "fenced before the first write");
        assert_eq!(node.client().node_info().await.unwrap().epoch, 3);
        // A newer owner: the old client's next write is refused by its own Fence.
        let c5 = at(5);
        c5.write_slot("c-1", SlotArea::Metadata, "x".into())
            .await
            .unwrap();
        assert_eq!(c5.fenced_epoch(), 5);
        let old = at(3);
        let e = old
            .write_slot("c-1", SlotArea::Metadata, "y".into())
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            Some(&dagraid_coordinator::error::NodeErrorKind::Fenced),
            "{e}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_down_at_start_is_fenced_when_it_comes_back() {
    with_timeout(async {
        let mut cluster = Cluster::start(5, |c| c.assembly_wait = Duration::from_millis(500)).await;
        cluster.stop_coordinator().await;
        cluster.node_mut("n5").stop().await;
        cluster.start_coordinator().await;
        let epoch = cluster.coordinator.as_ref().unwrap().epoch();
        // The second life: owner epochs are taken in steps of 2^32.
        assert_eq!(
            epoch,
            2 * dagraid_coordinator::node_client::OWNER_EPOCH_STEP
        );
        cluster.node_mut("n5").restart().await;
        eventually(
            Duration::from_secs(10),
            "n5 fenced at the new epoch",
            || {
                let client = cluster.node("n5").client();
                async move { (client.node_info().await.ok()?.epoch == epoch).then_some(()) }
            },
        )
        .await;
        // And it takes writes of this epoch.
        let mut client = cluster.client().await;
        client
            .create_volume(create("v", pb::RaidLevel::Raid5, 64 * KIB))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_of_a_coordinator_before_labels_is_migrated_and_labelled() {
    with_timeout(async {
        let mut cluster = Cluster::start(3, |_| {}).await;
        cluster.stop_coordinator().await;
        // What a version 1 coordinator left: components without labels, a version 1 record.
        let id = "v00000000000000aa";
        let mut components = Vec::new();
        for (column, n) in cluster.nodes.iter().enumerate() {
            let client = NodeClient::new(
                &n.addr().to_string(),
                // A client of the stopped coordinator's life (the nodes were fenced at it).
                FencingContext::new(
                    "dagraid",
                    dagraid_coordinator::node_client::OWNER_EPOCH_STEP,
                ),
                NodeClientConfig::default(),
            )
            .unwrap();
            let cid = format!("{id}-c{column}");
            client.create_component(&cid, 4096, 16, 0).await.unwrap();
            components.push(serde_json::json!({
                "column": column, "node_id": n.id, "node_address": n.addr().to_string(),
                "component_id": cid, "state": "optimal",
            }));
        }
        let v1 = serde_json::json!({
            "version": 1, "name": "old", "id": id, "level": "raid5",
            "stripe_unit_blocks": 16, "block_size": 4096, "blocks_per_column": 16,
            "components": components,
        });
        {
            let db = redb::Database::create(cluster.config.store_path()).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let volumes: redb::TableDefinition<'_, &str, &[u8]> =
                    redb::TableDefinition::new("volumes");
                let mut t = txn.open_table(volumes).unwrap();
                let bytes = serde_json::to_vec(&v1).unwrap();
                t.insert("old", bytes.as_slice()).unwrap();
                let meta: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("meta");
                txn.open_table(meta)
                    .unwrap()
                    .insert("format", STORE_FORMAT)
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        cluster.start_coordinator().await;
        let mut client = cluster.client().await;
        // Not known to be clean: resynced, then optimal; and labelled.
        let v = eventually(Duration::from_secs(30), "old resynced", || {
            let mut client = client.clone();
            async move {
                let v = get(&mut client, "old").await;
                (v.state == pb::VolumeState::Optimal as i32).then_some(v)
            }
        })
        .await;
        assert!(v.resync.is_some(), "{v:?}");
        for label in labels(&cluster, &v).await {
            let label = label.expect("labelled at the first assembly");
            assert_eq!(label.volume_id, id);
            assert_eq!((label.mod_counter, label.clean), (1, false));
        }
        let data: Vec<u8> = (0..v.size_bytes).map(|i| i as u8).collect();
        client
            .write(pb::WriteRequest {
                volume: "old".into(),
                offset: 0,
                data: data.clone().into(),
            })
            .await
            .unwrap();
        check_columns(&cluster, &get(&mut client, "old").await, Some(&data)).await;
        cluster.stop_coordinator().await;
        let store = dagraid_coordinator::store::Store::open(&cluster.config.store_path()).unwrap();
        let records = store.volumes().unwrap();
        assert_eq!(records[0].version, VOLUME_RECORD_VERSION);
        assert!(records[0].clean);
        store.close();
    })
    .await;
}

/// Issue 16, item 6: a node restarted with a smaller per-call limit than the volume's stripe
/// unit is refused at assembly with a clear reason (before, the volume was assembled and every
/// access that reached that node failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_a_smaller_limit_than_the_stripe_unit_is_refused_at_assembly() {
    with_timeout(async {
        let mut cluster = Cluster::start(3, |_| {}).await;
        let mut client = cluster.client().await;
        client
            .create_volume(pb::CreateVolumeRequest {
                stripe_unit_bytes: 64 * KIB,
                ..create("big", pb::RaidLevel::Raid5, 1024 * KIB)
            })
            .await
            .unwrap();
        cluster.stop_coordinator().await;
        cluster.node_mut("n2").restart_with_max_io(16 * KIB).await;
        cluster.start_coordinator().await;
        let mut client = cluster.client().await;
        let v = get(&mut client, "big").await;
        assert_eq!(v.state, pb::VolumeState::NotAssembled as i32, "{v:?}");
        let problem = v.assembly.unwrap().problem;
        assert!(
            problem.contains("n2") && problem.contains("16384") && problem.contains("65536"),
            "{problem}"
        );
    })
    .await;
}

/// A volume not assembled because nodes of its columns did not answer is assembled by itself
/// once one of them answers again: here a RAID 5 volume with two of its four nodes down at
/// start (beyond its tolerance), then one back (degraded), then the other (re-added). Before,
/// nothing assembled a volume again but a coordinator restart or `dagraid volume assemble`
/// (found by the simulation, seed 42: a column missing at a coordinator crash, whose refusal
/// says the volume assembles by itself when the node is back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_volume_not_assembled_for_nodes_that_did_not_answer_is_assembled_when_they_do() {
    with_timeout(async {
        let mut cluster = Cluster::start(4, |c| c.assembly_wait = Duration::from_millis(500)).await;
        let mut client = cluster.client().await;
        let v = client
            .create_volume(pb::CreateVolumeRequest {
                stripe_unit_bytes: 16 * KIB,
                ..create("back", pb::RaidLevel::Raid5, 192 * KIB)
            })
            .await
            .unwrap()
            .into_inner();
        let data = random_bytes(
            &mut rand::rngs::StdRng::seed_from_u64(42),
            v.size_bytes as usize,
        );
        client
            .write(pb::WriteRequest {
                volume: "back".into(),
                offset: 0,
                data: data.clone().into(),
            })
            .await
            .unwrap();
        cluster.stop_coordinator().await;
        cluster.node_mut("n2").stop().await;
        cluster.node_mut("n3").stop().await;
        cluster.start_coordinator().await;
        let mut client = cluster.client().await;
        let v = get(&mut client, "back").await;
        assert_eq!(v.state, pb::VolumeState::NotAssembled as i32, "{v:?}");

        // n2 answers again: assembled, degraded (n3 still down), without being asked.
        cluster.node_mut("n2").restart().await;
        let v = eventually(Duration::from_secs(60), "assembled with n2 back", || {
            let mut client = client.clone();
            async move {
                let v = get(&mut client, "back").await;
                (v.state != pb::VolumeState::NotAssembled as i32).then_some(v)
            }
        })
        .await;
        assert_eq!(v.state, pb::VolumeState::Degraded as i32, "{v:?}");
        let read = client
            .read(pb::ReadRequest {
                volume: "back".into(),
                offset: 0,
                length: v.size_bytes,
            })
            .await
            .unwrap()
            .into_inner()
            .data;
        assert!(
            read == data,
            "the degraded volume reads back what was written"
        );

        // n3 answers again: its column is re-added.
        cluster.node_mut("n3").restart().await;
        let v = eventually(Duration::from_secs(60), "optimal with n3 back", || {
            let mut client = client.clone();
            async move {
                let v = get(&mut client, "back").await;
                (v.state == pb::VolumeState::Optimal as i32).then_some(v)
            }
        })
        .await;
        check_columns(&cluster, &v, Some(&data)).await;
    })
    .await;
}
