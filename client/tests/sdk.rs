//! The SDK against a fake coordinator over real gRPC: chunking, ordering, bounded
//! concurrency, retries (only where safe), authentication, error mapping, timeouts.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use dagraid_client::{
    Client, ClientError, ClientOptions, ComponentState, RaidLevel, RebuildKind, RebuildTarget,
    RetryPolicy, VolumeSpec, VolumeState,
};

const TOKEN: &str = "t0ken";

async fn client(server: &common::FakeServer, options: ClientOptions) -> Client {
    Client::connect(
        server.url(),
        ClientOptions {
            token: Some(TOKEN.into()),
            ..options
        },
    )
    .await
    .unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

async fn with_timeout<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out")
}

#[tokio::test]
async fn large_ranges_are_cut_sent_concurrently_and_reassembled_in_order() {
    with_timeout(async {
        let server = common::start(Some(TOKEN), 256 << 10).await;
        let c = client(&server, ClientOptions::default()).await;
        // RAID 5 over 4 columns, 64 KiB units: 192 KiB stripes; 256 KiB holds one whole stripe.
        c.create_volume(VolumeSpec::new("v", RaidLevel::Raid5, 32 << 20).columns(4))
            .await
            .unwrap();
        server.knobs.io_delay_ms.store(20, Ordering::SeqCst);
        let vol = c.volume("v");
        let offset = 12_345;
        let data = pattern((5 << 20) + 17, 1);
        vol.write_at(offset, data.clone()).await.unwrap();
        let writes = server.knobs.write_calls.load(Ordering::SeqCst);
        let max_in_flight = server.knobs.max_in_flight.load(Ordering::SeqCst);
        assert!(max_in_flight > 1, "writes were not concurrent");
        assert!(max_in_flight <= 4, "{max_in_flight} writes in flight");
        let chunk = 192 << 10;
        assert_eq!(
            writes,
            ((offset + data.len() as u64).div_ceil(chunk) - offset / chunk) as usize
        );
        {
            let log = server.knobs.io_log.lock().unwrap();
            for (i, &(_, off, len)) in log.iter().enumerate() {
                assert!(len <= 256 << 10);
                // Whole stripes except at the ends of the range.
                if off != offset {
                    assert_eq!(off % chunk, 0, "call {i} at {off}");
                }
            }
        }

        server.knobs.max_in_flight.store(0, Ordering::SeqCst);
        let back = vol.read_at(offset, data.len()).await.unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back[..] == data[..], "read back differs");
        let max_in_flight = server.knobs.max_in_flight.load(Ordering::SeqCst);
        assert!(
            (2..=4).contains(&max_in_flight),
            "{max_in_flight} reads in flight"
        );
        // Cluster info (max_io_bytes) and the stripe size were each asked once.
        assert_eq!(server.knobs.cluster_info_calls.load(Ordering::SeqCst), 1);
        assert_eq!(server.knobs.get_volume_calls.load(Ordering::SeqCst), 1);

        // Small accesses need no lookup of the stripe.
        let other = c.volume("v");
        other.write_at(0, b"abc".to_vec()).await.unwrap();
        assert_eq!(&other.read_at(0, 3).await.unwrap()[..], b"abc");
        assert_eq!(server.knobs.get_volume_calls.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn max_in_flight_and_max_io_options_are_honoured() {
    with_timeout(async {
        let server = common::start(Some(TOKEN), 1 << 20).await;
        let c = client(
            &server,
            ClientOptions {
                max_in_flight: 1,
                max_io_bytes: Some(64 << 10),
                ..ClientOptions::default()
            },
        )
        .await;
        c.create_volume(VolumeSpec::new("v", RaidLevel::Raid0, 4 << 20))
            .await
            .unwrap();
        server.knobs.io_delay_ms.store(5, Ordering::SeqCst);
        let data = pattern(1 << 20, 2);
        c.volume("v").write_at(0, data.clone()).await.unwrap();
        assert_eq!(server.knobs.write_calls.load(Ordering::SeqCst), 16);
        assert_eq!(server.knobs.max_in_flight.load(Ordering::SeqCst), 1);
        assert_eq!(c.max_io_bytes().await.unwrap(), 64 << 10);
        let back = c.volume("v").read_at(0, 1 << 20).await.unwrap();
        assert!(back[..] == data[..]);
    })
    .await;
}

#[tokio::test]
async fn reads_and_queries_are_retried_after_transport_failures_writes_never() {
    with_timeout(async {
        let server = common::start(Some(TOKEN), 1 << 20).await;
        let c = client(
            &server,
            ClientOptions {
                retry: RetryPolicy {
                    max_attempts: 3,
                    initial_backoff: Duration::from_millis(1),
                    max_backoff: Duration::from_millis(5),
                },
                ..ClientOptions::default()
            },
        )
        .await;
        c.create_volume(VolumeSpec::new("v", RaidLevel::Raid1, 1 << 20).columns(2))
            .await
            .unwrap();
        let vol = c.volume("v");
        vol.write_at(0, b"hello".to_vec()).await.unwrap();

        // Two failures then success: within three attempts.
        server.knobs.fail_reads.store(2, Ordering::SeqCst);
        let before = server.knobs.read_calls.load(Ordering::SeqCst);
        assert_eq!(&vol.read_at(0, 5).await.unwrap()[..], b"hello");
        assert_eq!(server.knobs.read_calls.load(Ordering::SeqCst) - before, 3);

        // Three failures: the attempts run out and the transport error comes through.
        server.knobs.fail_reads.store(3, Ordering::SeqCst);
        let err = vol.read_at(0, 5).await.unwrap_err();
        assert!(err.is_transport(), "{err:?}");

        server.knobs.fail_get_volume.store(1, Ordering::SeqCst);
        assert_eq!(vol.describe().await.unwrap().name, "v");

        // A write that fails is reported, never sent again.
        server.knobs.fail_writes.store(1, Ordering::SeqCst);
        let before = server.knobs.write_calls.load(Ordering::SeqCst);
        let err = vol.write_at(0, b"world".to_vec()).await.unwrap_err();
        assert!(err.is_transport(), "{err:?}");
        assert_eq!(server.knobs.write_calls.load(Ordering::SeqCst) - before, 1);
        assert_eq!(&vol.read_at(0, 5).await.unwrap()[..], b"hello");
    })
    .await;
}

#[tokio::test]
async fn every_call_carries_the_token() {
    with_timeout(async {
        let server = common::start(Some(TOKEN), 1 << 20).await;
        for token in [None, Some("wrong".to_owned())] {
            let c = Client::connect(
                server.url(),
                ClientOptions {
                    token,
                    ..ClientOptions::default()
                },
            )
            .await
            .unwrap();
            let err = c.list_volumes().await.unwrap_err();
            assert!(
                matches!(err, ClientError::Unauthenticated { .. }),
                "{err:?}"
            );
            let err = c.volume("v").read_at(0, 1).await.unwrap_err();
            assert!(
                matches!(err, ClientError::Unauthenticated { .. }),
                "{err:?}"
            );
        }
        let c = client(&server, ClientOptions::default()).await;
        assert!(c.list_volumes().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn errors_are_precise() {
    with_timeout(async {
        let server = common::start(Some(TOKEN), 1 << 20).await;
        let c = client(&server, ClientOptions::default()).await;
        let err = c.volume("nope").read_at(0, 1).await.unwrap_err();
        match &err {
            ClientError::UnknownVolume { message } => assert!(message.contains("nope")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.delete_volume("nope").await.unwrap_err(),
            ClientError::UnknownVolume { .. }
        ));
        let spec = VolumeSpec::new("v", RaidLevel::Raid5, 1 << 20).columns(3);
        c.create_volume(spec.clone()).await.unwrap();
        assert!(matches!(
            c.create_volume(spec).await.unwrap_err(),
            ClientError::VolumeExists { .. }
        ));
        let vol = c.volume("v");
        assert!(matches!(
            vol.read_at((1 << 20) - 1, 2).await.unwrap_err(),
            ClientError::OutOfRange { .. }
        ));
        assert!(matches!(
            vol.write_at(u64::MAX, vec![1]).await.unwrap_err(),
            ClientError::OutOfRange { .. }
        ));
        // Zero-length accesses are the coordinator's to judge.
        assert!(matches!(
            vol.read_at(0, 0).await.unwrap_err(),
            ClientError::InvalidArgument { .. }
        ));
        assert!(matches!(
            vol.write_at(0, Vec::new()).await.unwrap_err(),
            ClientError::InvalidArgument { .. }
        ));

        // Admin fail, and the refusal of a second one.
        let after = c.fail_component("v", 1).await.unwrap();
        assert_eq!(after.state, VolumeState::Degraded);
        assert_eq!(after.components[1].state, ComponentState::Failed);
        assert!(matches!(
            c.fail_component("v", 2).await.unwrap_err(),
            ClientError::WouldExceedTolerance { .. }
        ));
        vol.flush().await.unwrap();
        c.delete_volume("v").await.unwrap();
        assert!(c.list_volumes().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn describe_and_cluster_info_convert_every_field() {
    with_timeout(async {
        let server = common::start(Some(TOKEN), 1 << 20).await;
        let c = client(&server, ClientOptions::default()).await;
        c.create_volume(
            VolumeSpec::new("v", RaidLevel::Raid6, 3 << 20)
                .columns(6)
                .stripe_unit_bytes(128 << 10)
                .block_size(8192)
                .nodes(["a", "b", "c", "d", "e", "f"]),
        )
        .await
        .unwrap();
        let info = c.volume("v").status().await.unwrap();
        assert_eq!(info.level, RaidLevel::Raid6);
        assert_eq!(info.columns, 6);
        assert_eq!(info.stripe_unit_bytes, 128 << 10);
        assert_eq!(info.block_size, 8192);
        assert_eq!(info.size_bytes, 3 << 20);
        assert_eq!(info.state, VolumeState::Optimal);
        assert_eq!(info.components[5].node_id, "f");
        assert_eq!(info.stripe_data_bytes(), Some(4 * (128 << 10)));
        let cluster = c.cluster_info().await.unwrap();
        assert_eq!(cluster.cluster_id, "fake");
        assert_eq!(cluster.epoch, 7);
        assert_eq!(cluster.max_io_bytes, 1 << 20);
        assert_eq!(cluster.nodes.len(), 5);
        assert!(!cluster.nodes[4].reachable);
    })
    .await;
}

#[tokio::test]
async fn a_coordinator_that_never_answers_times_out() {
    with_timeout(async {
        let server = common::start(Some(TOKEN), 1 << 20).await;
        let c = client(
            &server,
            ClientOptions {
                request_timeout: Duration::from_millis(300),
                ..ClientOptions::default()
            },
        )
        .await;
        c.create_volume(VolumeSpec::new("v", RaidLevel::Raid0, 1 << 20))
            .await
            .unwrap();
        server.knobs.stall_reads.store(true, Ordering::SeqCst);
        let err = c.volume("v").read_at(0, 10).await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        // A timeout is not a transport failure: the read was not retried.
        assert_eq!(server.knobs.read_calls.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn rebuild_column_and_copyback_send_their_target_and_rate_and_report_progress() {
    with_timeout(async {
        let server = common::start(Some(TOKEN), 1 << 20).await;
        let c = client(&server, ClientOptions::default()).await;
        c.create_volume(VolumeSpec::new("v", RaidLevel::Raid5, 4 << 20).columns(4))
            .await
            .unwrap();
        c.fail_component("v", 1).await.unwrap();

        // Refused before any call: an empty spare id, a rate of 0, an empty node.
        for (target, rate) in [
            (RebuildTarget::Spare(" ".into()), None),
            (RebuildTarget::BestSpare, Some(0)),
        ] {
            let err = c.rebuild_column("v", 1, target, rate).await.unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidArgument { .. }),
                "{err:?}"
            );
        }
        let err = c.copyback("v", 1, "", None).await.unwrap_err();
        assert!(
            matches!(err, ClientError::InvalidArgument { .. }),
            "{err:?}"
        );
        // A spare the pool does not hold is not an unknown volume.
        let err = c
            .rebuild_column("v", 1, RebuildTarget::Spare("sp9".into()), None)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::UnknownSpare { .. }), "{err:?}");
        let err = c
            .rebuild_column("nope", 1, RebuildTarget::BestSpare, None)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::UnknownVolume { .. }), "{err:?}");
        let err = c
            .rebuild_column("v", 0, RebuildTarget::InPlace, None)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::RebuildRefused { .. }), "{err:?}");

        let spare = c.add_spare("node6", 4 << 20, 0).await.unwrap();
        let started = c
            .rebuild_column(
                "v",
                1,
                RebuildTarget::Spare(spare.id.clone()),
                Some(8 << 20),
            )
            .await
            .unwrap();
        assert_eq!(started.state, VolumeState::Reconstructing);
        assert_eq!(started.components[1].state, ComponentState::Reconstructing);
        let r = started.rebuild_of(1).unwrap();
        assert_eq!(r.kind, RebuildKind::Spare);
        assert_eq!((r.node_id.as_str(), &r.component_id), ("node6", &spare.id));
        assert_eq!(r.rate_limit_bytes_per_second, Some(8 << 20));
        assert!(r.running && r.eta.is_none() && r.fraction() == 0.0);
        // Each look moves the fake's rebuild on by 5 of 20 stripes.
        let vol = c.volume("v");
        let r = vol.describe().await.unwrap().rebuild_of(1).unwrap().clone();
        assert_eq!((r.stripes_done, r.percent()), (5, 25));
        assert_eq!(r.eta, Some(Duration::from_secs(30)));
        let mut last = vol.describe().await.unwrap();
        while last.rebuild_of(1).unwrap().running {
            last = vol.describe().await.unwrap();
        }
        let r = last.rebuild_of(1).unwrap();
        assert!(r.completed && r.stripes_left() == 0 && r.error.is_none());
        assert_eq!(last.state, VolumeState::Optimal);
        assert_eq!(last.components[1].component_id, spare.id);

        let v = c.copyback("v", 1, "node2", None).await.unwrap();
        let r = v.rebuild_of(1).unwrap();
        assert_eq!(r.kind, RebuildKind::Copyback);
        assert_eq!(r.node_id, "node2");
        assert_eq!(v.components[1].state, ComponentState::Copyback);
        // Four looks took it from 0 to 20 stripes.
        assert_eq!(server.knobs.get_volume_calls.load(Ordering::SeqCst), 4);
    })
    .await;
}
