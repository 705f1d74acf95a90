//! The hot-spare pool over real storage nodes, in process: AddSpare, ListSpares, RemoveSpare,
//! their refusals, the spare label on the node, `Volume.spares_available`, a spare taken and
//! dropped with its volume, and the pool across a coordinator restart.

mod common;

use std::time::Duration;

use common::*;
use dagraid_coordinator::node_client::SlotArea;
use dagraid_coordinator::spares::{SPARE_LABEL_MAGIC, SpareLabel};
use dagraid_core::meta::label::ComponentLabel;
use dagraid_proto::volume::v1 as pb;
use tonic::Code;

async fn spares(client: &mut Client) -> Vec<pb::Spare> {
    client
        .list_spares(pb::ListSparesRequest {})
        .await
        .unwrap()
        .into_inner()
        .spares
}

async fn available(client: &mut Client, volume: &str) -> u32 {
    client
        .get_volume(pb::GetVolumeRequest {
            name: volume.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .spares_available
}

fn add(node: &str, size: u64, block_size: u32) -> pb::AddSpareRequest {
    pb::AddSpareRequest {
        node_id: node.into(),
        size_bytes: size,
        block_size,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spares_are_added_listed_fitted_refused_kept_across_a_restart_and_removed() {
    with_timeout(async {
        let mut cluster = Cluster::start(7, |_| {}).await;
        let mut client = cluster.client().await;
        assert!(spares(&mut client).await.is_empty());

        // No size and no volume to size it after.
        let e = expect_error(
            client.add_spare(add("n6", 0, 0)).await,
            Code::InvalidArgument,
            "invalid-request",
        );
        assert!(e.message().contains("no volume"), "{e:?}");

        let v = client
            .create_volume(pb::CreateVolumeRequest {
                nodes: ["n1", "n2", "n3", "n4", "n5"].map(String::from).to_vec(),
                ..create("vol0", pb::RaidLevel::Raid5, 1 << 20)
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(v.spares_available, 0);
        let column_bytes = v.components[0].size_bytes;

        // Size 0: the largest column of any volume.
        let s = client
            .add_spare(add("n6", 0, 0))
            .await
            .unwrap()
            .into_inner();
        assert!(
            s.id.starts_with("spare-") && s.id.len() == "spare-".len() + 16,
            "{s:?}"
        );
        assert_eq!(
            (s.node_id.as_str(), s.block_size, s.size_bytes),
            ("n6", 4096, column_bytes)
        );
        assert_eq!(s.block_count, column_bytes / 4096);
        assert_eq!(s.node_address, cluster.node("n6").addr().to_string());
        assert!(s.reachable && s.volume.is_empty());
        assert_eq!(available(&mut client, "vol0").await, 1);

        // The component on the node carries a spare label, which is no component label.
        let node = cluster.node("n6").client();
        let components = node.list_components().await.unwrap();
        let c = components.iter().find(|c| c.id == s.id).expect("created");
        assert_eq!((c.block_size, c.block_count), (4096, s.block_count));
        let slot = node
            .read_slot(&s.id, SlotArea::Label)
            .await
            .unwrap()
            .expect("labelled");
        let label = SpareLabel::decode(&slot.payload).unwrap();
        assert_eq!(label.magic, SPARE_LABEL_MAGIC);
        assert_eq!(
            (
                label.spare_id.as_str(),
                label.node_id.as_str(),
                label.serial
            ),
            (s.id.as_str(), "n6", c.serial)
        );
        assert_eq!(label.cluster_id, "dagraid");
        assert!(ComponentLabel::decode(&slot.payload).is_err());

        // Sizes round up to whole blocks; a spare too small, of another block size or on a
        // node of the volume does not fit it.
        let small = client
            .add_spare(add("n7", 5000, 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((small.block_count, small.size_bytes), (2, 8192));
        let other = client
            .add_spare(add("n7", column_bytes, 512))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(other.block_count, column_bytes / 512);
        let on_column = client
            .add_spare(add("n1", column_bytes, 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(available(&mut client, "vol0").await, 1);
        let big = client
            .add_spare(add("n7", 2 * column_bytes, 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(available(&mut client, "vol0").await, 2);
        let listed: Vec<String> = spares(&mut client)
            .await
            .into_iter()
            .map(|s| s.id)
            .collect();
        let mut all = vec![
            s.id.clone(),
            small.id.clone(),
            other.id.clone(),
            on_column.id.clone(),
            big.id.clone(),
        ];
        all.sort();
        assert_eq!(listed, all);
        // Best fit first.
        let fits = cluster.coordinator.as_ref().unwrap().spares().fits(
            4096,
            column_bytes / 4096,
            &["n1".into()],
        );
        let fit_ids: Vec<&str> = fits.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(fit_ids, [s.id.as_str(), big.id.as_str()]);

        // Refusals, precise.
        let e = expect_error(
            client.add_spare(add("n9", 4096, 0)).await,
            Code::InvalidArgument,
            "invalid-request",
        );
        assert!(e.message().contains("unknown storage node \"n9\""), "{e:?}");
        let e = expect_error(
            client.add_spare(add("n6", 4096, 1000)).await,
            Code::InvalidArgument,
            "invalid-request",
        );
        assert!(e.message().contains("block size 1000"), "{e:?}");
        let e = expect_error(
            client
                .remove_spare(pb::RemoveSpareRequest {
                    id: "spare-nope".into(),
                })
                .await,
            Code::NotFound,
            "unknown-spare",
        );
        assert!(e.message().contains("spare-nope"), "{e:?}");

        // Taken for a column (as the reconstruction will): in use, it cannot be removed.
        cluster
            .coordinator
            .as_ref()
            .unwrap()
            .spares()
            .take(&big.id, "vol0", &v.id, 2)
            .await
            .unwrap();
        let e = expect_error(
            client
                .remove_spare(pb::RemoveSpareRequest { id: big.id.clone() })
                .await,
            Code::FailedPrecondition,
            "spare-in-use",
        );
        assert!(e.message().contains("column 2 of volume \"vol0\""), "{e:?}");
        assert_eq!(available(&mut client, "vol0").await, 1);

        // A node that does not answer cannot take a new spare.
        cluster.node_mut("n7").stop().await;
        eventually(Duration::from_secs(10), "n7 unreachable", || {
            let mut client = client.clone();
            async move { (!storage_node(&mut client, "n7").await.reachable).then_some(()) }
        })
        .await;
        let e = expect_error(
            client.add_spare(add("n7", 4096, 0)).await,
            Code::Unavailable,
            "node-unavailable",
        );
        assert!(e.message().contains("n7"), "{e:?}");
        let listed = spares(&mut client).await;
        assert!(
            listed.iter().all(|x| x.reachable == (x.node_id != "n7")),
            "{listed:?}"
        );
        cluster.node_mut("n7").restart().await;

        // The pool survives a restart of the coordinator, in use or not.
        let all_reachable = |client: &Client| {
            let client = client.clone();
            eventually(Duration::from_secs(10), "every node reachable", move || {
                let mut client = client.clone();
                async move {
                    let s = spares(&mut client).await;
                    s.iter().all(|x| x.reachable).then_some(s)
                }
            })
        };
        let before = all_reachable(&client).await;
        cluster.stop_coordinator().await;
        cluster.start_coordinator().await;
        let mut client = cluster.client().await;
        let after = all_reachable(&client).await;
        assert_eq!(after, before);
        let taken = after.iter().find(|x| x.id == big.id).unwrap();
        assert_eq!((taken.volume.as_str(), taken.column), ("vol0", 2));
        assert_eq!(available(&mut client, "vol0").await, 1);

        // Remove: the component goes from its node, the spare from the pool.
        client
            .remove_spare(pb::RemoveSpareRequest { id: s.id.clone() })
            .await
            .unwrap();
        assert!(
            !node
                .list_components()
                .await
                .unwrap()
                .iter()
                .any(|c| c.id == s.id)
        );
        assert_eq!(available(&mut client, "vol0").await, 0);
        expect_error(
            client
                .remove_spare(pb::RemoveSpareRequest { id: s.id.clone() })
                .await,
            Code::NotFound,
            "unknown-spare",
        );

        // Deleting the volume drops the spare it had taken (it was one of its columns).
        client
            .delete_volume(pb::DeleteVolumeRequest {
                name: "vol0".into(),
            })
            .await
            .unwrap();
        let left: Vec<String> = spares(&mut client)
            .await
            .into_iter()
            .map(|s| s.id)
            .collect();
        let mut want = vec![small.id, other.id, on_column.id];
        want.sort();
        assert_eq!(left, want);
        assert!(
            !cluster
                .node("n7")
                .client()
                .list_components()
                .await
                .unwrap()
                .iter()
                .any(|c| c.id == big.id)
        );
    })
    .await;
}
