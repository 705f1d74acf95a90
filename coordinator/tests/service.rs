//! The coordinator over real storage nodes, in process, through the generated volume client.

mod common;

use dagraid_coordinator::node_client::OWNER_EPOCH_STEP;
use std::time::Duration;

use common::*;
use dagraid_proto::volume::v1 as pb;
use rand::{Rng, SeedableRng};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const KIB: u64 = 1024;

/// Writes `data` at `offset` through the API and into `model`.
async fn write(client: &mut Client, volume: &str, offset: u64, data: Vec<u8>, model: &mut [u8]) {
    model[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
    client
        .write(pb::WriteRequest {
            volume: volume.into(),
            offset,
            data: data.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("write of {volume} at {offset}: {e:?}"));
}

async fn read(client: &mut Client, volume: &str, offset: u64, length: u64) -> Vec<u8> {
    client
        .read(pb::ReadRequest {
            volume: volume.into(),
            offset,
            length,
        })
        .await
        .unwrap_or_else(|e| panic!("read of {volume} at {offset}+{length}: {e:?}"))
        .into_inner()
        .data
        .to_vec()
}

async fn get(client: &mut Client, name: &str) -> pb::Volume {
    client
        .get_volume(pb::GetVolumeRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Random writes (unaligned, some crossing stripes), each followed by random reads, all checked
/// against `model`; then the whole volume.
async fn random_workload(client: &mut Client, v: &pb::Volume, model: &mut [u8], seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let size = v.size_bytes;
    let stripe = v.stripe_unit_bytes * 4;
    for _ in 0..12 {
        let len = rng.random_range(1..=stripe.min(size) + 7).min(size);
        let offset = rng.random_range(0..=size - len);
        let data = random_bytes(&mut rng, len as usize);
        write(client, &v.name, offset, data, model).await;
        let len = rng.random_range(1..=stripe.min(size));
        let offset = rng.random_range(0..=size - len);
        let got = read(client, &v.name, offset, len).await;
        assert!(
            got == model[offset as usize..(offset + len) as usize],
            "{}: read at {offset}+{len} differs from what was written",
            v.name
        );
    }
    let all = read(client, &v.name, 0, size).await;
    assert!(all == model, "{}: the whole volume differs", v.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_level_serves_random_data_byte_for_byte_with_consistent_redundancy() {
    with_timeout(async {
        let cluster = Cluster::start(5, |_| {}).await;
        let mut client = cluster.client().await;
        let levels = [
            (pb::RaidLevel::Raid0, 0),
            (pb::RaidLevel::Raid1, 4),
            (pb::RaidLevel::Raid4, 0),
            (pb::RaidLevel::Raid5, 0),
            (pb::RaidLevel::Raid6, 0),
        ];
        for (i, (level, columns)) in levels.into_iter().enumerate() {
            let name = format!("vol-{}", level.as_str_name().to_lowercase());
            let v = client
                .create_volume(pb::CreateVolumeRequest {
                    columns,
                    stripe_unit_bytes: 16 * KIB,
                    ..create(&name, level, 700 * KIB)
                })
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:?}"))
                .into_inner();
            assert_eq!(v.state, pb::VolumeState::Optimal as i32);
            assert_eq!(v.columns as usize, v.components.len());
            assert!(v.size_bytes >= 700 * KIB, "rounded up, never down");
            let stripe_bytes = layout_of(&v).stripe_data_bytes();
            assert_eq!(v.size_bytes % stripe_bytes, 0, "whole stripes");
            assert!(v.size_bytes - 700 * KIB < stripe_bytes);
            // A fresh volume's redundancy is consistent before anything is written (the nodes
            // zero-fill new components).
            check_columns(&cluster, &v, Some(&vec![0; v.size_bytes as usize])).await;

            let mut model = vec![0u8; v.size_bytes as usize];
            random_workload(&mut client, &v, &mut model, i as u64).await;
            check_columns(&cluster, &v, Some(&model)).await;
            let after = get(&mut client, &name).await;
            let counters = after.counters.unwrap();
            assert!(
                counters.writes >= 12 && counters.reads >= 13,
                "{counters:?}"
            );
            assert_eq!(counters.errors, 0);
            client
                .flush(pb::FlushRequest {
                    volume: name.clone(),
                })
                .await
                .unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_are_listed_deleted_and_reassembled_after_a_restart() {
    with_timeout(async {
        let mut cluster = Cluster::start(5, |_| {}).await;
        let mut client = cluster.client().await;
        let info = client
            .get_cluster_info(pb::GetClusterInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.cluster_id, "dagraid");
        // The first life's owner epoch (owner epochs go in steps of 2^32).
        assert_eq!(info.epoch, OWNER_EPOCH_STEP);
        assert_eq!(info.max_io_bytes, 16 << 20);
        assert_eq!(info.nodes.len(), 5);
        assert!(info.nodes.iter().all(|n| n.reachable && n.components == 0));

        let a = client
            .create_volume(create("a", pb::RaidLevel::Raid5, 1 << 20))
            .await
            .unwrap()
            .into_inner();
        // Defaults: every node, 64 KiB units, 4 KiB blocks.
        assert_eq!(a.columns, 5);
        assert_eq!(a.stripe_unit_bytes, 64 * KIB);
        assert_eq!(a.block_size, 4096);
        assert_eq!(a.size_bytes, 1 << 20);
        let nodes: Vec<&str> = a.components.iter().map(|c| c.node_id.as_str()).collect();
        assert_eq!(nodes, ["n1", "n2", "n3", "n4", "n5"]);
        for (i, c) in a.components.iter().enumerate() {
            assert_eq!(c.column as usize, i);
            assert_eq!(c.component_id, format!("{}-c{i}", a.id));
            assert_eq!(c.node_address, cluster.node(&c.node_id).addr().to_string());
            assert_eq!(c.state, pb::ComponentState::Optimal as i32);
        }
        let b = client
            .create_volume(pb::CreateVolumeRequest {
                nodes: vec!["n5".into(), "n3".into(), "n1".into(), "n2".into()],
                ..create("b", pb::RaidLevel::Raid6, 300 * KIB)
            })
            .await
            .unwrap()
            .into_inner();
        let nodes: Vec<&str> = b.components.iter().map(|c| c.node_id.as_str()).collect();
        assert_eq!(nodes, ["n5", "n3", "n1", "n2"]);
        assert_ne!(a.id, b.id);

        let listed = client
            .list_volumes(pb::ListVolumesRequest {})
            .await
            .unwrap()
            .into_inner()
            .volumes;
        assert_eq!(
            listed.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let info = client
            .get_cluster_info(pb::GetClusterInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        let count = |id: &str| {
            info.nodes
                .iter()
                .find(|n| n.node_id == id)
                .unwrap()
                .components
        };
        assert_eq!((count("n1"), count("n4")), (2, 1));

        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut model_a = vec![0u8; a.size_bytes as usize];
        let mut model_b = vec![0u8; b.size_bytes as usize];
        write(
            &mut client,
            "a",
            12345,
            random_bytes(&mut rng, 200_000),
            &mut model_a,
        )
        .await;
        write(
            &mut client,
            "b",
            1,
            random_bytes(&mut rng, 100_000),
            &mut model_b,
        )
        .await;

        // Restart on the same data directory: the volumes come back with their data, under a
        // new epoch that every node has accepted.
        cluster.stop_coordinator().await;
        cluster.start_coordinator().await;
        assert_eq!(
            cluster.coordinator.as_ref().unwrap().epoch(),
            2 * OWNER_EPOCH_STEP
        );
        let mut client = cluster.client().await;
        assert_eq!(read(&mut client, "a", 0, a.size_bytes).await, model_a);
        assert_eq!(read(&mut client, "b", 0, b.size_bytes).await, model_b);
        assert_eq!(get(&mut client, "b").await.id, b.id);
        for n in &cluster.nodes {
            assert_eq!(
                n.client().node_info().await.unwrap().epoch,
                2 * OWNER_EPOCH_STEP,
                "{}",
                n.id
            );
        }
        check_columns(&cluster, &get(&mut client, "a").await, Some(&model_a)).await;
        check_columns(&cluster, &get(&mut client, "b").await, Some(&model_b)).await;

        // Delete: the record and the components go.
        client
            .delete_volume(pb::DeleteVolumeRequest { name: "a".into() })
            .await
            .unwrap();
        expect_error(
            client
                .get_volume(pb::GetVolumeRequest { name: "a".into() })
                .await,
            Code::NotFound,
            "unknown-volume",
        );
        for n in &cluster.nodes {
            let ids: Vec<String> = n
                .client()
                .list_components()
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect();
            assert!(
                !ids.iter().any(|id| id.starts_with(&a.id)),
                "{}: {ids:?}",
                n.id
            );
        }
        // The name is free again; a restart does not bring the deleted volume back.
        let a2 = client
            .create_volume(create("a", pb::RaidLevel::Raid0, 64 * KIB))
            .await
            .unwrap()
            .into_inner();
        assert_ne!(a2.id, a.id);
        cluster.stop_coordinator().await;
        cluster.start_coordinator().await;
        let mut client = cluster.client().await;
        assert_eq!(get(&mut client, "a").await.id, a2.id);
        assert_eq!(
            read(&mut client, "a", 0, 64 * KIB).await,
            vec![0; 64 * KIB as usize]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_precise_errors() {
    with_timeout(async {
        let cluster = Cluster::start(5, |c| c.max_io_bytes = 64 * KIB).await;
        let mut client = cluster.client().await;
        let v = client
            .create_volume(pb::CreateVolumeRequest {
                stripe_unit_bytes: 16 * KIB,
                ..create("v", pb::RaidLevel::Raid5, 256 * KIB)
            })
            .await
            .unwrap()
            .into_inner();
        let size = v.size_bytes;
        let read_req = |volume: &str, offset, length| pb::ReadRequest {
            volume: volume.into(),
            offset,
            length,
        };
        let write_req = |volume: &str, offset, len: usize| pb::WriteRequest {
            volume: volume.into(),
            offset,
            data: vec![7u8; len].into(),
        };

        // Unknown volume, on every call that names one.
        for r in [
            client.read(read_req("nope", 0, 1)).await.map(drop),
            client.write(write_req("nope", 0, 1)).await.map(drop),
            client
                .get_volume(pb::GetVolumeRequest {
                    name: "nope".into(),
                })
                .await
                .map(drop),
            client
                .delete_volume(pb::DeleteVolumeRequest {
                    name: "nope".into(),
                })
                .await
                .map(drop),
            client
                .flush(pb::FlushRequest {
                    volume: "nope".into(),
                })
                .await
                .map(drop),
            client
                .fail_component(pb::FailComponentRequest {
                    volume: "nope".into(),
                    column: 0,
                })
                .await
                .map(drop),
        ] {
            let s = expect_error(r, Code::NotFound, "unknown-volume");
            assert!(s.message().contains("nope"), "{s:?}");
        }

        // Ranges.
        let s = expect_error(
            client.read(read_req("v", size, 1)).await,
            Code::OutOfRange,
            "out-of-range",
        );
        assert!(s.message().contains(&size.to_string()), "{s:?}");
        expect_error(
            client.read(read_req("v", size - 10, 11)).await,
            Code::OutOfRange,
            "out-of-range",
        );
        expect_error(
            client.write(write_req("v", size - 1, 2)).await,
            Code::OutOfRange,
            "out-of-range",
        );
        expect_error(
            client.read(read_req("v", u64::MAX, 1)).await,
            Code::OutOfRange,
            "out-of-range",
        );
        // Zero length.
        expect_error(
            client.read(read_req("v", 0, 0)).await,
            Code::InvalidArgument,
            "invalid-request",
        );
        expect_error(
            client.write(write_req("v", 5, 0)).await,
            Code::InvalidArgument,
            "invalid-request",
        );
        // Larger than max_io_bytes.
        let s = expect_error(
            client.read(read_req("v", 0, 64 * KIB + 1)).await,
            Code::InvalidArgument,
            "too-large",
        );
        assert!(
            s.message().contains("65537") && s.message().contains("65536"),
            "{s:?}"
        );
        expect_error(
            client.write(write_req("v", 0, 64 * KIB as usize + 1)).await,
            Code::InvalidArgument,
            "too-large",
        );
        // Nothing was written by any of that.
        assert_eq!(
            read(&mut client, "v", 0, 64 * KIB).await,
            vec![0; 64 * KIB as usize]
        );

        // Creation.
        let bad_creates: Vec<(pb::CreateVolumeRequest, Code, &str)> = vec![
            (
                create("v", pb::RaidLevel::Raid5, 1),
                Code::AlreadyExists,
                "volume-exists",
            ),
            (
                create("a b", pb::RaidLevel::Raid5, 1),
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                create("", pb::RaidLevel::Raid5, 1),
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                create("x", pb::RaidLevel::Unspecified, 1),
                Code::InvalidArgument,
                "bad-geometry",
            ),
            (
                pb::CreateVolumeRequest {
                    level: 42,
                    ..create("x", pb::RaidLevel::Raid5, 1)
                },
                Code::InvalidArgument,
                "bad-geometry",
            ),
            (
                create("x", pb::RaidLevel::Raid5, 0),
                Code::InvalidArgument,
                "bad-geometry",
            ),
            (
                pb::CreateVolumeRequest {
                    stripe_unit_bytes: 6000,
                    ..create("x", pb::RaidLevel::Raid5, 1)
                },
                Code::InvalidArgument,
                "bad-geometry",
            ),
            (
                pb::CreateVolumeRequest {
                    block_size: 3000,
                    ..create("x", pb::RaidLevel::Raid5, 1)
                },
                Code::InvalidArgument,
                "bad-geometry",
            ),
            (
                pb::CreateVolumeRequest {
                    columns: 2,
                    ..create("x", pb::RaidLevel::Raid5, 1)
                },
                Code::InvalidArgument,
                "bad-geometry",
            ),
            (
                pb::CreateVolumeRequest {
                    columns: 3,
                    ..create("x", pb::RaidLevel::Raid1, 1)
                },
                Code::InvalidArgument,
                "bad-geometry",
            ),
            (
                pb::CreateVolumeRequest {
                    columns: 6,
                    ..create("x", pb::RaidLevel::Raid5, 1)
                },
                Code::FailedPrecondition,
                "not-enough-nodes",
            ),
            (
                pb::CreateVolumeRequest {
                    nodes: vec!["n1".into(), "n2".into(), "n9".into()],
                    ..create("x", pb::RaidLevel::Raid5, 1)
                },
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                pb::CreateVolumeRequest {
                    nodes: vec!["n1".into(), "n2".into(), "n1".into()],
                    ..create("x", pb::RaidLevel::Raid5, 1)
                },
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                pb::CreateVolumeRequest {
                    columns: 4,
                    nodes: vec!["n1".into(), "n2".into(), "n3".into()],
                    ..create("x", pb::RaidLevel::Raid5, 1)
                },
                Code::InvalidArgument,
                "invalid-request",
            ),
        ];
        for (request, code, expected) in bad_creates {
            let what = format!("{request:?}");
            let s = expect_error(client.create_volume(request).await, code, expected);
            assert!(!s.message().is_empty(), "{what}");
        }
        // A refused creation leaves nothing behind.
        let listed = client
            .list_volumes(pb::ListVolumesRequest {})
            .await
            .unwrap()
            .into_inner()
            .volumes;
        assert_eq!(listed.len(), 1);
        for n in &cluster.nodes {
            assert_eq!(
                n.client().list_components().await.unwrap().len(),
                1,
                "{}",
                n.id
            );
        }

        // Administrative fails.
        expect_error(
            client
                .fail_component(pb::FailComponentRequest {
                    volume: "v".into(),
                    column: 5,
                })
                .await,
            Code::InvalidArgument,
            "invalid-request",
        );
        client
            .create_volume(create("r0", pb::RaidLevel::Raid0, 64 * KIB))
            .await
            .unwrap();
        expect_error(
            client
                .fail_component(pb::FailComponentRequest {
                    volume: "r0".into(),
                    column: 1,
                })
                .await,
            Code::FailedPrecondition,
            "would-exceed-tolerance",
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_guards_every_call_but_health() {
    with_timeout(async {
        let cluster = Cluster::start(3, |c| c.token = Some("s3cret".into())).await;
        for token in [None, Some("wrong".to_owned()), Some("s3cret2".to_owned())] {
            let mut client = cluster.client_with(Token(token.clone())).await;
            expect_error(
                client.get_cluster_info(pb::GetClusterInfoRequest {}).await,
                Code::Unauthenticated,
                "unauthenticated",
            );
            expect_error(
                client
                    .create_volume(create("v", pb::RaidLevel::Raid5, 1))
                    .await,
                Code::Unauthenticated,
                "unauthenticated",
            );
            expect_error(
                client.list_volumes(pb::ListVolumesRequest {}).await,
                Code::Unauthenticated,
                "unauthenticated",
            );
            expect_error(
                client
                    .read(pb::ReadRequest {
                        volume: "v".into(),
                        offset: 0,
                        length: 1,
                    })
                    .await,
                Code::Unauthenticated,
                "unauthenticated",
            );
        }
        let mut client = cluster.client().await;
        client
            .create_volume(create("v", pb::RaidLevel::Raid5, 1))
            .await
            .unwrap();
        assert_eq!(
            client
                .list_volumes(pb::ListVolumesRequest {})
                .await
                .unwrap()
                .into_inner()
                .volumes
                .len(),
            1
        );
        // The standard health service answers without a token.
        let mut health = HealthClient::new(channel(cluster.addr()).await);
        for service in ["", "dagraid.volume.v1.VolumeService"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_component_failed_through_the_api_keeps_serving_and_stays_failed() {
    with_timeout(async {
        let mut cluster = Cluster::start(5, |_| {}).await;
        let mut client = cluster.client().await;
        let v = client
            .create_volume(pb::CreateVolumeRequest {
                stripe_unit_bytes: 16 * KIB,
                ..create("v", pb::RaidLevel::Raid5, 512 * KIB)
            })
            .await
            .unwrap()
            .into_inner();
        let mut model = vec![0u8; v.size_bytes as usize];
        random_workload(&mut client, &v, &mut model, 11).await;

        let failed = client
            .fail_component(pb::FailComponentRequest {
                volume: "v".into(),
                column: 2,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(failed.state, pb::VolumeState::Degraded as i32);
        assert_eq!(
            failed.components[2].state,
            pb::ComponentState::Failed as i32
        );
        // Failing it again changes nothing; a second column would be one too many.
        client
            .fail_component(pb::FailComponentRequest {
                volume: "v".into(),
                column: 2,
            })
            .await
            .unwrap();
        let s = expect_error(
            client
                .fail_component(pb::FailComponentRequest {
                    volume: "v".into(),
                    column: 0,
                })
                .await,
            Code::FailedPrecondition,
            "would-exceed-tolerance",
        );
        assert!(s.message().contains("column 0"), "{s:?}");

        // Degraded reads and writes.
        assert_eq!(read(&mut client, "v", 0, v.size_bytes).await, model);
        random_workload(&mut client, &failed, &mut model, 12).await;
        check_columns(&cluster, &get(&mut client, "v").await, None).await;

        // The failure is durable: after a restart the column is still failed.
        cluster.stop_coordinator().await;
        cluster.start_coordinator().await;
        let mut client = cluster.client().await;
        let after = get(&mut client, "v").await;
        assert_eq!(after.state, pb::VolumeState::Degraded as i32);
        assert_eq!(after.components[2].state, pb::ComponentState::Failed as i32);
        assert_eq!(read(&mut client, "v", 0, v.size_bytes).await, model);
        check_columns(&cluster, &after, None).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_node_is_failed_by_the_health_loop_and_io_goes_on() {
    with_timeout(async {
        let mut cluster = Cluster::start(5, |_| {}).await;
        let mut client = cluster.client().await;
        let mut models = Vec::new();
        for (name, level) in [
            ("r5", pb::RaidLevel::Raid5),
            ("r6", pb::RaidLevel::Raid6),
            ("r0", pb::RaidLevel::Raid0),
        ] {
            let v = client
                .create_volume(pb::CreateVolumeRequest {
                    stripe_unit_bytes: 16 * KIB,
                    ..create(name, level, 256 * KIB)
                })
                .await
                .unwrap()
                .into_inner();
            let mut model = vec![0u8; v.size_bytes as usize];
            random_workload(&mut client, &v, &mut model, 21).await;
            models.push((v, model));
        }

        // No I/O at all while the node goes away: the health loop alone finds it.
        cluster.node_mut("n4").stop().await;
        // The health loop fails the columns volume after volume (each change durable on the
        // labels and in the store): wait for both.
        let (r5, r6) = eventually(Duration::from_secs(30), "n4's columns failed", || {
            let mut client = client.clone();
            async move {
                let r5 = get(&mut client, "r5").await;
                let r6 = get(&mut client, "r6").await;
                let degraded = |v: &pb::Volume| v.state == pb::VolumeState::Degraded as i32;
                (degraded(&r5) && degraded(&r6)).then_some((r5, r6))
            }
        })
        .await;
        assert_eq!(r5.components[3].state, pb::ComponentState::Failed as i32);
        assert_eq!(r6.components[3].state, pb::ComponentState::Failed as i32);
        let n4 = storage_node(&mut client, "n4").await;
        assert!(!n4.reachable && !n4.detail.is_empty(), "{n4:?}");

        // RAID 5 and 6 go on, degraded.
        for (v, model) in models.iter_mut().take(2) {
            let now = get(&mut client, &v.name).await;
            assert_eq!(read(&mut client, &v.name, 0, v.size_bytes).await, *model);
            random_workload(&mut client, &now, model, 22).await;
            check_columns(&cluster, &get(&mut client, &v.name).await, None).await;
        }
        // RAID 0 cannot lose a column: the column is gone, not failed, and the volume shows
        // failed (before: optimal with a dead column); writes are refused, naming the column,
        // and the bytes on it are unavailable (intact, not lost) until the node is back.
        let r0 = eventually(Duration::from_secs(30), "r0 failed", || {
            let mut client = client.clone();
            async move {
                let r0 = get(&mut client, "r0").await;
                (r0.state == pb::VolumeState::Failed as i32).then_some(r0)
            }
        })
        .await;
        assert!(r0.components[3].gone, "{r0:?}");
        assert_eq!(r0.components[3].state, pb::ComponentState::Optimal as i32);
        let s = expect_error(
            client
                .write(pb::WriteRequest {
                    volume: "r0".into(),
                    offset: 0,
                    data: vec![1u8; 10].into(),
                })
                .await,
            Code::FailedPrecondition,
            "volume-failed",
        );
        assert!(s.message().contains("[3]"), "{s:?}");
        let s = expect_error(
            client
                .read(pb::ReadRequest {
                    volume: "r0".into(),
                    offset: 0,
                    length: r0.size_bytes,
                })
                .await,
            Code::Unavailable,
            "unrecoverable",
        );
        assert!(s.message().contains("r0"), "{s:?}");

        cluster.node_mut("n4").restart().await;
        let model = &models[2].1;
        let back = eventually(Duration::from_secs(30), "r0 readable again", || {
            let mut client = client.clone();
            async move {
                client
                    .read(pb::ReadRequest {
                        volume: "r0".into(),
                        offset: 0,
                        length: r0.size_bytes,
                    })
                    .await
                    .ok()
                    .map(|r| r.into_inner().data.to_vec())
            }
        })
        .await;
        assert!(back == *model, "r0 reads back what was written");
        // It left the failed state by itself.
        let r0 = get(&mut client, "r0").await;
        assert_eq!(r0.state, pb::VolumeState::Optimal as i32);
        assert!(!r0.components[3].gone);
        // A failed column whose node was found gone and answers again is re-added from its
        // own component by itself (docs/REBUILD.md, "Re-add").
        let r5 = eventually(Duration::from_secs(60), "r5 column 3 re-added", || {
            let mut client = client.clone();
            async move {
                let r5 = get(&mut client, "r5").await;
                (r5.components[3].state == pb::ComponentState::Optimal as i32).then_some(r5)
            }
        })
        .await;
        assert!(
            r5.rebuilds.iter().any(|r| r.column == 3
                && (r.kind == pb::RebuildKind::ReAdd as i32
                    || r.kind == pb::RebuildKind::InPlace as i32)),
            "{r5:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_health_checks_io_errors_fail_a_dead_node_and_creation_rolls_back() {
    with_timeout(async {
        // Health checks only at start: what happens after is seen through I/O alone.
        let mut cluster =
            Cluster::start(5, |c| c.health_interval = Duration::from_secs(3600)).await;
        let mut client = cluster.client().await;
        let v = client
            .create_volume(pb::CreateVolumeRequest {
                stripe_unit_bytes: 16 * KIB,
                ..create("v", pb::RaidLevel::Raid5, 256 * KIB)
            })
            .await
            .unwrap()
            .into_inner();
        let mut model = vec![0u8; v.size_bytes as usize];
        random_workload(&mut client, &v, &mut model, 31).await;

        cluster.node_mut("n2").stop().await;
        // Creation on a node that is gone fails, names it, and leaves no component behind.
        let s = expect_error(
            client
                .create_volume(create("w", pb::RaidLevel::Raid5, 256 * KIB))
                .await,
            Code::Unavailable,
            "node-unavailable",
        );
        assert!(s.message().contains("n2"), "{s:?}");
        for n in cluster.nodes.iter().filter(|n| n.id != "n2") {
            assert_eq!(
                n.client().list_components().await.unwrap().len(),
                1,
                "{}",
                n.id
            );
        }
        expect_error(
            client
                .get_volume(pb::GetVolumeRequest { name: "w".into() })
                .await,
            Code::NotFound,
            "unknown-volume",
        );

        // The first access that touches n2 marks its column failed, durably, and is served.
        assert_eq!(read(&mut client, "v", 0, v.size_bytes).await, model);
        let now = get(&mut client, "v").await;
        assert_eq!(now.state, pb::VolumeState::Degraded as i32);
        assert_eq!(now.components[1].state, pb::ComponentState::Failed as i32);
        random_workload(&mut client, &now, &mut model, 32).await;
        cluster.stop_coordinator().await;
        cluster.node_mut("n2").restart().await;
        cluster.start_coordinator().await;
        let mut client = cluster.client().await;
        let after = get(&mut client, "v").await;
        assert_eq!(after.components[1].state, pb::ComponentState::Failed as i32);
        assert_eq!(read(&mut client, "v", 0, v.size_bytes).await, model);
        check_columns(&cluster, &after, None).await;
    })
    .await;
}

/// Issue 16, item 4: two nodes of a RAID 5 volume gone. One column is failed (within the
/// tolerance), the other is gone: the volume shows failed (before: degraded, with the dead
/// column shown optimal), writes are refused naming the columns, reads the surviving columns
/// serve are served, and when the gone node answers again the volume leaves failed by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gone_nodes_fail_a_raid5_volume_until_one_answers_again() {
    with_timeout(async {
        let mut cluster = Cluster::start(5, |_| {}).await;
        let mut client = cluster.client().await;
        let v = client
            .create_volume(pb::CreateVolumeRequest {
                stripe_unit_bytes: 16 * KIB,
                ..create("r5", pb::RaidLevel::Raid5, 256 * KIB)
            })
            .await
            .unwrap()
            .into_inner();
        let mut model = vec![0u8; v.size_bytes as usize];
        random_workload(&mut client, &v, &mut model, 41).await;
        let layout = layout_of(&v);
        cluster.node_mut("n1").stop().await;
        cluster.node_mut("n2").stop().await;
        let failed = eventually(Duration::from_secs(30), "r5 failed", || {
            let mut client = client.clone();
            async move {
                let v = get(&mut client, "r5").await;
                (v.state == pb::VolumeState::Failed as i32).then_some(v)
            }
        })
        .await;
        let states: Vec<(i32, bool)> = failed
            .components
            .iter()
            .map(|c| (c.state, c.gone))
            .collect();
        let failed_col = states
            .iter()
            .position(|(s, _)| *s == pb::ComponentState::Failed as i32)
            .expect("one column failed");
        let gone_col = states
            .iter()
            .position(|(_, g)| *g)
            .expect("one column gone");
        assert!(
            failed_col < 2 && gone_col < 2 && failed_col != gone_col,
            "{states:?}"
        );
        assert_eq!(states[gone_col].0, pb::ComponentState::Optimal as i32);
        // Writes are refused, naming both columns.
        let s = expect_error(
            client
                .write(pb::WriteRequest {
                    volume: "r5".into(),
                    offset: 0,
                    data: vec![9u8; 4096].into(),
                })
                .await,
            Code::FailedPrecondition,
            "volume-failed",
        );
        assert!(s.message().contains("[0, 1]"), "{s:?}");
        // A unit on a surviving column is served.
        let unit = layout.unit_bytes();
        let on_live = (0..layout.stripe_data_bytes() / unit)
            .map(|i| i * unit)
            .find(|&o| layout.locate(o).unwrap().column >= 2)
            .unwrap();
        assert_eq!(
            read(&mut client, "r5", on_live, unit).await,
            model[on_live as usize..(on_live + unit) as usize]
        );
        // The gone node answers again: degraded, writable, nothing lost.
        let back = if gone_col == 0 { "n1" } else { "n2" };
        cluster.node_mut(back).restart().await;
        eventually(Duration::from_secs(30), "r5 degraded again", || {
            let mut client = client.clone();
            async move {
                let v = get(&mut client, "r5").await;
                (v.state == pb::VolumeState::Degraded as i32).then_some(())
            }
        })
        .await;
        let now = get(&mut client, "r5").await;
        assert_eq!(read(&mut client, "r5", 0, v.size_bytes).await, model);
        random_workload(&mut client, &now, &mut model, 42).await;
        assert_eq!(read(&mut client, "r5", 0, v.size_bytes).await, model);
        check_columns(&cluster, &get(&mut client, "r5").await, None).await;
    })
    .await;
}

/// Node `id` is stopped: waits until the health loop has missed two more checks of it (so at
/// least one whole round ran after the caller's last change), then serves it again and waits
/// until it answers.
async fn bounce_past_a_missed_check(cluster: &mut Cluster, client: &mut Client, id: &str) {
    let seen = storage_node(client, id).await.missed_checks;
    eventually(Duration::from_secs(30), "two more missed checks", || {
        let mut client = client.clone();
        async move { (storage_node(&mut client, id).await.missed_checks >= seen + 2).then_some(()) }
    })
    .await;
    cluster.node_mut(id).restart().await;
    eventually(Duration::from_secs(30), "the node answers again", || {
        let mut client = client.clone();
        async move { (storage_node(&mut client, id).await.missed_checks == 0).then_some(()) }
    })
    .await;
}

/// A node back before the gone rule ran out (a quick restart, a short partition): the column
/// an access failed on it is re-added by itself, since its node missed a health check with
/// the column failed; before, it stayed failed until the down-out delay (found by the
/// simulation, seed 16). A column the administrator failed stays failed: re-added only by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_back_before_it_is_gone_gets_its_column_re_added_unless_failed_by_hand() {
    with_timeout(async {
        // Never gone within the test: only the missed-check rule can bring a column back.
        let mut cluster = Cluster::start(5, |c| c.gone_after = Duration::from_secs(3600)).await;
        let mut client = cluster.client().await;
        let v = client
            .create_volume(pb::CreateVolumeRequest {
                stripe_unit_bytes: 16 * KIB,
                ..create("r5", pb::RaidLevel::Raid5, 256 * KIB)
            })
            .await
            .unwrap()
            .into_inner();
        let mut model = vec![0u8; v.size_bytes as usize];
        random_workload(&mut client, &v, &mut model, 41).await;

        // n3 (column 2) stops; writes fail its column; it comes back before it is gone.
        cluster.node_mut("n3").stop().await;
        let fresh = random_bytes(&mut rand::rngs::StdRng::seed_from_u64(42), model.len());
        write(&mut client, "r5", 0, fresh, &mut model).await;
        let failed = get(&mut client, "r5").await;
        assert_eq!(
            failed.components[2].state,
            pb::ComponentState::Failed as i32,
            "the write failed n3's column: {failed:?}"
        );
        bounce_past_a_missed_check(&mut cluster, &mut client, "n3").await;
        let v = eventually(Duration::from_secs(60), "column 2 re-added", || {
            let mut client = client.clone();
            async move {
                let v = get(&mut client, "r5").await;
                let done = v.rebuilds.iter().any(|r| {
                    r.column == 2 && r.kind == pb::RebuildKind::ReAdd as i32 && r.completed
                });
                (done && v.state == pb::VolumeState::Optimal as i32).then_some(v)
            }
        })
        .await;
        assert_eq!(read(&mut client, "r5", 0, v.size_bytes).await, model);
        check_columns(&cluster, &v, Some(&model)).await;

        // The administrator fails column 3 (n4); n4 misses checks and answers again.
        client
            .fail_component(pb::FailComponentRequest {
                volume: "r5".into(),
                column: 3,
            })
            .await
            .unwrap();
        cluster.node_mut("n4").stop().await;
        bounce_past_a_missed_check(&mut cluster, &mut client, "n4").await;
        // The monitor looks every 500 ms: give it several looks, then the column must still
        // be failed, with no job on it (a negative, so it needs a bound).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let v = get(&mut client, "r5").await;
        assert_eq!(
            v.components[3].state,
            pb::ComponentState::Failed as i32,
            "a column failed by hand came back by itself: {v:?}"
        );
        assert!(!v.rebuilds.iter().any(|r| r.column == 3), "{v:?}");
        assert_eq!(read(&mut client, "r5", 0, v.size_bytes).await, model);
        check_columns(&cluster, &v, None).await;
    })
    .await;
}

/// A component fence whose answer the coordinator never got (a one-way partition lost it; the
/// simulation's seed 1): the node took the component's new fence epoch, the coordinator still
/// carries the old one on that component, and the node refuses every call of it as stale. A
/// re-add that read the label before fencing was refused for good (`stale-epoch`); it fences
/// first (at the epoch whose answer was lost, or above: the node takes a fence at its current
/// epoch again), then reads the label, and the column comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_column_whose_component_fence_answer_was_lost_is_re_added() {
    with_timeout(async {
        let cluster = Cluster::start(4, |_| {}).await;
        let mut client = cluster.client().await;
        let v = client
            .create_volume(pb::CreateVolumeRequest {
                stripe_unit_bytes: 16 * KIB,
                ..create("lf", pb::RaidLevel::Raid5, 192 * KIB)
            })
            .await
            .unwrap()
            .into_inner();
        let mut model = vec![0u8; v.size_bytes as usize];
        random_workload(&mut client, &v, &mut model, 51).await;
        client
            .fail_component(pb::FailComponentRequest {
                volume: "lf".into(),
                column: 2,
            })
            .await
            .unwrap();
        let fresh = random_bytes(&mut rand::rngs::StdRng::seed_from_u64(52), model.len());
        write(&mut client, "lf", 0, fresh, &mut model).await;

        // The coordinator's component fence of column 2, applied by the node, its answer lost:
        // sent here by another client of the same owner epoch, so the coordinator never hears.
        let member = v.components[2].clone();
        let node = cluster.node(&member.node_id);
        let owner = node.client().node_info().await.unwrap().epoch;
        assert!(owner >= OWNER_EPOCH_STEP, "owner epoch {owner}");
        let other = dagraid_coordinator::node_client::NodeClient::new(
            &node.addr().to_string(),
            dagraid_coordinator::node_client::FencingContext::new("dagraid", owner),
            dagraid_coordinator::node_client::NodeClientConfig::default(),
        )
        .unwrap();
        assert_eq!(
            other.fence_component(&member.component_id).await.unwrap(),
            owner + 1
        );

        client
            .re_add_column(pb::ReAddColumnRequest {
                volume: "lf".into(),
                column: 2,
                rate_bytes_per_second: 0,
            })
            .await
            .unwrap_or_else(|e| panic!("re-add refused: {e:?}"));
        let v = eventually(Duration::from_secs(60), "column 2 re-added", || {
            let mut client = client.clone();
            async move {
                let v = get(&mut client, "lf").await;
                let done = v.rebuilds.iter().any(|r| {
                    r.column == 2 && r.kind == pb::RebuildKind::ReAdd as i32 && r.completed
                });
                (done && v.state == pb::VolumeState::Optimal as i32).then_some(v)
            }
        })
        .await;
        assert_eq!(read(&mut client, "lf", 0, v.size_bytes).await, model);
        check_columns(&cluster, &v, Some(&model)).await;
    })
    .await;
}
