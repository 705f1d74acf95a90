//! `/metrics` of a real cluster (processes): counters and histograms move by exactly what the
//! I/O did, including a failed Rod made deterministic with the node's fault injection, and the
//! real output of the coordinator and a node passes `promtool check metrics`.

use dagraid_client::{Client, RaidLevel, VolumeSpec};
use dagraid_proto::storage::v1 as spb;
use dagraid_tests::cluster::{Cluster, ClusterOptions, layout_of};
use dagraid_tests::prom::{promtool_available, promtool_check_metrics, sample};
use dagraid_tests::with_timeout;

const VOLUME: &str = "measured";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_move_by_what_the_io_did() {
    with_timeout(async {
        let cluster = Cluster::start(ClusterOptions {
            fault_injection: true,
            metrics: true,
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let client = Client::connect(cluster.url(), cluster.client_options())
            .await
            .unwrap();
        client
            .create_volume(
                VolumeSpec::new(VOLUME, RaidLevel::Raid5, 16 << 20)
                    .columns(5)
                    .stripe_unit_bytes(64 << 10),
            )
            .await
            .unwrap();
        let vol = client.volume(VOLUME);
        let v = cluster
            .volume_client()
            .await
            .unwrap()
            .get_volume(VOLUME)
            .await
            .unwrap();
        let layout = layout_of(&v).unwrap();
        let column = layout.locate(0).unwrap().column;
        let c = v.components[column].clone();
        let node = cluster.node_by_id(&c.node_id).unwrap();

        let before = cluster.coordinator.scrape().await.unwrap();
        let node_before = node.scrape().await.unwrap();
        let vl = [("volume", VOLUME)];
        assert_eq!(
            sample(
                &before,
                "dagraid_volume_state",
                &[("volume", VOLUME), ("state", "optimal")]
            ),
            1.0
        );
        assert_eq!(
            sample(&before, "dagraid_volume_spare_nodes", &vl),
            0.0,
            "the pool has no spare"
        );

        // Ten small writes (each in its own stripe, so no lock waits), five reads.
        let stripe = layout.stripe_data_bytes();
        for i in 0..10 {
            vol.write_at(i * stripe, vec![7u8; 4096]).await.unwrap();
        }
        for i in 0..5 {
            vol.read_at(i * stripe, 4096).await.unwrap();
        }
        // Rod fails once on the column of offset 0: that DAG rolls back, the retry is degraded.
        node.client()
            .await
            .unwrap()
            .inject_fault(spb::InjectFaultRequest {
                component_id: c.component_id.clone(),
                kind: spb::FaultKind::Fail as i32,
                ops: spb::FaultOps::Read as i32,
                count: 1,
                delay_ms: 0,
                status_code: tonic::Code::Unavailable as i32,
                seed: 0,
            })
            .await
            .unwrap();
        vol.write_at(0, vec![8u8; 4096]).await.unwrap();

        let after = cluster.coordinator.scrape().await.unwrap();
        let node_after = node.scrape().await.unwrap();
        let delta = |name: &str, labels: &[(&str, &str)]| {
            sample(&after, name, labels) - sample(&before, name, labels)
        };
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut l = vec![("volume", VOLUME)];
            l.extend_from_slice(extra);
            l
        };
        let ok_writes = with(&[("op", "write"), ("outcome", "ok")]);
        assert_eq!(delta("dagraid_volume_operations_total", &ok_writes), 11.0);
        assert_eq!(
            delta(
                "dagraid_volume_operations_total",
                &with(&[("op", "read"), ("outcome", "ok")])
            ),
            5.0
        );
        assert_eq!(
            delta(
                "dagraid_volume_operations_total",
                &with(&[("outcome", "error")])
            ),
            0.0
        );
        assert_eq!(
            delta("dagraid_volume_bytes_total", &with(&[("op", "write")])),
            11.0 * 4096.0
        );
        assert_eq!(
            delta(
                "dagraid_volume_operation_seconds_count",
                &with(&[("op", "write")])
            ),
            11.0
        );
        assert_eq!(
            delta(
                "dagraid_volume_operation_seconds_bucket",
                &with(&[("op", "read"), ("le", "+Inf")])
            ),
            5.0
        );
        assert!(
            delta(
                "dagraid_volume_operation_seconds_sum",
                &with(&[("op", "write")])
            ) > 0.0
        );
        let dags = |kind: &'static str, outcome: &'static str| {
            delta(
                "dagraid_dags_total",
                &with(&[("kind", kind), ("outcome", outcome)]),
            )
        };
        assert_eq!(dags("small_write", "forward"), 10.0);
        assert_eq!(dags("small_write", "rolled_backward"), 1.0);
        assert_eq!(dags("degraded_write", "forward"), 1.0);
        assert_eq!(dags("ff_read", "forward"), 5.0);
        let firings = |mnemonic: &'static str, phase: &'static str, outcome: &'static str| {
            delta(
                "dagraid_node_firings_total",
                &with(&[
                    ("mnemonic", mnemonic),
                    ("phase", phase),
                    ("outcome", outcome),
                ]),
            )
        };
        assert_eq!(firings("Rod", "do", "ok"), 10.0);
        assert_eq!(firings("Rod", "do", "failed"), 1.0);
        assert_eq!(firings("Rop", "undo", "ok"), 1.0);
        assert_eq!(
            firings("Wnd", "do", "ok"),
            10.0,
            "the retry writes no data unit"
        );
        assert_eq!(firings("Wnp", "do", "ok"), 11.0);
        assert_eq!(firings("R", "do", "ok"), 5.0);
        assert_eq!(
            delta(
                "dagraid_recoveries_total",
                &with(&[("direction", "backward")])
            ),
            1.0
        );
        assert_eq!(
            delta(
                "dagraid_recoveries_total",
                &with(&[("direction", "forward")])
            ),
            0.0
        );
        assert_eq!(sample(&after, "dagraid_dags_in_flight", &vl), 0.0);
        let col = column.to_string();
        assert_eq!(
            sample(
                &after,
                "dagraid_component_state",
                &[
                    ("volume", VOLUME),
                    ("column", col.as_str()),
                    ("state", "failed")
                ]
            ),
            1.0
        );
        assert_eq!(
            sample(
                &after,
                "dagraid_volume_state",
                &[("volume", VOLUME), ("state", "degraded")]
            ),
            1.0
        );
        assert_eq!(
            delta("dagraid_stripe_lock_acquired_total", &vl),
            16.0,
            "one stripe lock per access"
        );
        // The admission queue: idle after the I/O, with its default limits.
        assert_eq!(
            sample(&after, "dagraid_accesses", &[("state", "running")]),
            0.0
        );
        assert_eq!(
            sample(&after, "dagraid_accesses", &[("state", "waiting")]),
            0.0
        );
        assert_eq!(
            sample(&after, "dagraid_accesses_limit", &[("state", "running")]),
            128.0
        );
        assert_eq!(
            sample(&after, "dagraid_accesses_limit", &[("state", "waiting")]),
            1024.0
        );
        let address = node.addr().to_string();
        assert_eq!(
            delta(
                "dagraid_storage_rpc_errors_total",
                &[
                    ("node", address.as_str()),
                    ("rpc", "ReadBlocks"),
                    ("code", "UNAVAILABLE")
                ]
            ),
            1.0
        );
        assert_eq!(
            delta(
                "dagraid_storage_rpc_seconds_count",
                &[("rpc", "WriteBlocks")]
            ),
            21.0,
            "two per small write, the retry's parity"
        );
        let api = |method: &'static str, code: &'static str| {
            delta(
                "dagraid_grpc_server_handled_total",
                &[("method", method), ("code", code)],
            )
        };
        assert_eq!(api("dagraid.volume.v1.VolumeService/Write", "OK"), 11.0);
        assert_eq!(api("dagraid.volume.v1.VolumeService/Read", "OK"), 5.0);
        // The node saw the injected failure as its own answer.
        let node_delta = |name: &str, labels: &[(&str, &str)]| {
            sample(&node_after, name, labels) - sample(&node_before, name, labels)
        };
        assert_eq!(
            node_delta(
                "dagraid_grpc_server_handled_total",
                &[
                    ("method", "dagraid.storage.v1.StorageNode/ReadBlocks"),
                    ("code", "UNAVAILABLE")
                ]
            ),
            1.0
        );
        assert!(
            node_delta(
                "dagraid_node_component_bytes_total",
                &[("component", c.component_id.as_str()), ("op", "write")]
            ) >= 4096.0
        );

        // The real output is valid Prometheus text.
        if promtool_available() {
            promtool_check_metrics(&after).unwrap();
            promtool_check_metrics(&node_after).unwrap();
        } else {
            eprintln!("promtool not installed (Debian package prometheus): check skipped");
        }

        // Every metric the alert rules and the dashboard name exists in this real output.
        let families: Vec<&str> = after
            .lines()
            .chain(node_after.lines())
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        for file in ["prometheus/alerts.yml", "grafana/dashboards/dagraid.json"] {
            let text = std::fs::read_to_string(deploy.join(file)).unwrap();
            for name in metric_names(&text) {
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    families.contains(&family),
                    "{file} names {name}, which no process exports"
                );
            }
        }
    })
    .await;
}

/// The `dagraid_*` names in a text.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("dagraid_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Not a part of a longer word (dagraid-prometheus, "dagraid_up" in prose).
        let before = rest[..i].chars().last();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out.sort();
    out.dedup();
    out
}
