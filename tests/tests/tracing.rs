//! Traces of a real cluster (processes) exported over OTLP to a receiver in this test process:
//! one client write is one trace, SDK -> coordinator -> storage nodes, with every node firing of
//! its DAG; a failed Rod shows the failed node, the undo and the retry DAG; a degraded read
//! shows its recovery XOR. Faults come from the nodes' fault injection.

use std::collections::BTreeMap;
use std::time::Duration;

use dagraid_client::{Client, RaidLevel, VolumeSpec};
use dagraid_proto::storage::v1 as spb;
use dagraid_telemetry::TraceSettings;
use dagraid_tests::cluster::{Cluster, ClusterOptions, layout_of};
use dagraid_tests::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use dagraid_tests::with_timeout;

const VOLUME: &str = "traced";
/// Spans of three processes arrive on their own schedule: this is a deadline, not a pause.
const ARRIVAL: Duration = Duration::from_secs(60);

/// The spans of `trace`, by id.
fn trace<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

fn children<'a>(spans: &[&'a ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .copied()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect()
}

fn names(spans: &[&ReceivedSpan]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in spans {
        *m.entry(s.name.clone()).or_default() += 1;
    }
    m
}

fn count(names: &[(&str, usize)]) -> BTreeMap<String, usize> {
    names.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

/// The client span of the write (or read) at `offset`, and its trace, once `done` holds.
async fn wait_trace(
    receiver: &OtlpReceiver,
    client_span: &str,
    offset: u64,
    done: impl Fn(&[&ReceivedSpan]) -> bool,
) -> (ReceivedSpan, Vec<ReceivedSpan>) {
    let offset = offset.to_string();
    let find = |spans: &[ReceivedSpan]| {
        spans
            .iter()
            .find(|s| s.name == client_span && s.attr("offset") == Some(offset.as_str()))
            .cloned()
    };
    let got = receiver
        .wait_for(ARRIVAL, |spans| {
            find(spans).is_some_and(|c| done(&trace(spans, &c.trace_id)))
        })
        .await;
    let spans = got.unwrap_or_else(|spans| {
        let mine: Vec<_> = find(&spans)
            .map(|c| trace(&spans, &c.trace_id).into_iter().cloned().collect())
            .unwrap_or_default();
        panic!("the trace did not complete within {ARRIVAL:?}; it has: {mine:#?}")
    });
    let root = find(&spans).expect("found above");
    let all = trace(&spans, &root.trace_id).into_iter().cloned().collect();
    (root, all)
}

fn one<'a>(spans: &[&'a ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span expected in {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_write_is_one_trace_down_to_the_disk_with_failures_and_recovery() {
    with_timeout(async {
        let receiver = OtlpReceiver::start().await.unwrap();
        // This process is the SDK's caller: its spans go to the same receiver.
        let settings = TraceSettings {
            endpoint: Some(receiver.endpoint()),
            service_name: Some("dagraid-test".into()),
            sampler: dagraid_telemetry::sampler("always_on", None).ok(),
            delay: Some(Duration::from_millis(100)),
            ..TraceSettings::default()
        };
        let (dispatch, telemetry) = dagraid_telemetry::build(
            &settings,
            tracing_subscriber::EnvFilter::new("off"),
            std::io::sink,
            false,
        )
        .unwrap();
        tracing::dispatcher::set_global_default(dispatch).unwrap();

        let cluster = Cluster::start(ClusterOptions {
            fault_injection: true,
            env: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint()),
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ],
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
        // Fetches the cluster's limits once, so the traced writes below are one call each.
        vol.write_at(1 << 20, vec![1u8; 4096]).await.unwrap();

        // --- A fault-free small write: exactly the small-write DAG.
        vol.write_at(0, vec![2u8; 4096]).await.unwrap();
        let (root, spans) = wait_trace(&receiver, "client.write", 0, |t| {
            let n = names(t);
            // The API call's span ends last in the coordinator.
            n.contains_key("dagraid.volume.v1.VolumeService/Write")
                && n.get("disk.write") == Some(&2)
                && n.get("disk.read") == Some(&2)
        })
        .await;
        let t: Vec<&ReceivedSpan> = spans.iter().collect();
        assert_eq!(root.service, "dagraid-test");
        assert!(
            root.parent_span_id.is_empty(),
            "the client call is the root"
        );
        assert_eq!(root.attr("length"), Some("4096"));
        let api = one(
            &children(&t, &root),
            "dagraid.volume.v1.VolumeService/Write",
        );
        assert_eq!(api.service, "dagraid-coordinator");
        assert_eq!(api.kind, 2, "server span");
        let access = one(&children(&t, api), "access");
        assert_eq!(access.attr("kind"), Some("write"));
        let dag = one(&children(&t, access), "dag");
        assert_eq!(dag.attr("dag_kind"), Some("small_write"));
        assert_eq!(dag.attr("stripe"), Some("0"));
        assert_eq!(dag.attr("attempt"), Some("1"));
        assert_eq!(dag.attr("direction"), Some("forward"));
        let firings = children(&t, dag);
        assert_eq!(
            names(&firings),
            count(&[
                ("Cmt", 1),
                ("Nil", 1),
                ("Rod", 1),
                ("Rop", 1),
                ("Trm", 1),
                ("Wnd", 1),
                ("Wnp", 1),
                ("Xor", 1),
            ]),
            "exactly the small-write DAG's firings"
        );
        for f in &firings {
            assert_eq!(f.attr("direction"), Some("do"), "{f:?}");
            assert_eq!(f.attr("outcome"), Some("good"), "{f:?}");
            // The DAG's id and kind are on its span, not repeated on each firing.
            assert_eq!(f.attr("dag_kind"), None, "{f:?}");
            assert_eq!(f.attr("dag_id"), None, "{f:?}");
        }
        // Under each disk node: the storage node's call span, and its disk I/O under that.
        for (mnemonic, rpc, io) in [
            ("Rod", "ReadBlocks", "disk.read"),
            ("Rop", "ReadBlocks", "disk.read"),
            ("Wnd", "WriteBlocks", "disk.write"),
            ("Wnp", "WriteBlocks", "disk.write"),
        ] {
            let node = one(&firings, mnemonic);
            assert_eq!(node.attr("length"), Some("4096"), "{node:?}");
            assert_eq!(node.attr("offset"), Some("0"), "{node:?}");
            let component = node
                .attr("component")
                .expect("a disk node names its component");
            let call = one(
                &children(&t, node),
                &format!("dagraid.storage.v1.StorageNode/{rpc}"),
            );
            assert_eq!(call.service, "dagraid-node");
            assert_eq!(call.attr("rpc.grpc.status_code"), Some("0"));
            let disk = one(&children(&t, call), io);
            assert_eq!(disk.attr("component"), Some(component));
            assert_eq!(disk.attr("bytes"), Some("4096"));
        }

        // --- Rod fails (an injected UNAVAILABLE on its component's next read).
        let v = cluster
            .volume_client()
            .await
            .unwrap()
            .get_volume(VOLUME)
            .await
            .unwrap();
        let layout = layout_of(&v).unwrap();
        let column = layout.locate(8192).unwrap().column;
        let c = &v.components[column];
        let node = cluster.node_by_id(&c.node_id).unwrap();
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
        vol.write_at(8192, vec![3u8; 4096]).await.unwrap();
        let (root, spans) = wait_trace(&receiver, "client.write", 8192, |t| {
            // The retry's parity write and the failed read's span have arrived.
            let n = names(t);
            n.contains_key("dagraid.volume.v1.VolumeService/Write")
                && n.get("dag") == Some(&2)
                && n.contains_key("disk.write")
                && t.iter().any(|s| {
                    s.name == "dagraid.storage.v1.StorageNode/ReadBlocks"
                        && s.attr("rpc.grpc.status_code") == Some("14")
                })
        })
        .await;
        let t: Vec<&ReceivedSpan> = spans.iter().collect();
        let api = one(
            &children(&t, &root),
            "dagraid.volume.v1.VolumeService/Write",
        );
        let access = one(&children(&t, api), "access");
        let mut dags: Vec<_> = children(&t, access)
            .into_iter()
            .filter(|s| s.name == "dag")
            .collect();
        dags.sort_by_key(|d| d.attr("attempt").map(str::to_owned));
        assert_eq!(dags.len(), 2, "the first DAG and its retry");
        let (first, retry) = (dags[0], dags[1]);
        assert_eq!(first.attr("dag_kind"), Some("small_write"));
        assert_eq!(first.attr("attempt"), Some("1"));
        assert_eq!(first.attr("direction"), Some("rolled_backward"));
        assert!(
            first
                .events
                .iter()
                .any(|(name, _)| name == "recovery decision"),
            "{first:?}"
        );
        let firings = children(&t, first);
        let rod: Vec<_> = firings.iter().filter(|s| s.name == "Rod").collect();
        assert_eq!(rod.len(), 1, "a failed node is not undone: {firings:#?}");
        assert_eq!(rod[0].attr("outcome"), Some("failed"));
        let error = rod[0].attr("error").unwrap_or_default();
        assert!(
            error.contains(&node.addr().to_string()),
            "the failed node is named: {error}"
        );
        let failed_call = one(
            &children(&t, rod[0]),
            "dagraid.storage.v1.StorageNode/ReadBlocks",
        );
        assert!(failed_call.error);
        assert!(
            children(&t, failed_call).is_empty(),
            "the injected failure touched no disk"
        );
        let undone: BTreeMap<String, usize> = names(
            &firings
                .iter()
                .copied()
                .filter(|s| s.attr("direction") == Some("undo"))
                .collect::<Vec<_>>(),
        );
        assert_eq!(undone, count(&[("Nil", 1), ("Rop", 1)]), "{firings:#?}");
        assert!(
            !firings.iter().any(|s| s.name.starts_with('W')),
            "nothing written before the commit"
        );
        assert_eq!(retry.attr("attempt"), Some("2"));
        assert_eq!(retry.attr("dag_kind"), Some("degraded_write"));
        assert_eq!(retry.attr("direction"), Some("forward"));
        // The new data's column is failed: only parity is written, from the other data units.
        let n = names(&children(&t, retry));
        assert_eq!(n.get("Rrd"), Some(&3), "{n:?}");
        assert_eq!(n.get("Wnp"), Some(&1), "{n:?}");
        assert!(
            !n.contains_key("Wnd"),
            "a failed column is never written: {n:?}"
        );

        // --- A degraded read of the failed column: its recovery XOR.
        let back = vol.read_at(8192, 4096).await.unwrap();
        assert!(back.iter().all(|&b| b == 3));
        let (root, spans) = wait_trace(&receiver, "client.read", 8192, |t| {
            let n = names(t);
            n.contains_key("dagraid.volume.v1.VolumeService/Read")
                && n.get("disk.read").copied().unwrap_or(0) >= 4
        })
        .await;
        let t: Vec<&ReceivedSpan> = spans.iter().collect();
        let api = one(&children(&t, &root), "dagraid.volume.v1.VolumeService/Read");
        let access = one(&children(&t, api), "access");
        let dag = one(&children(&t, access), "dag");
        assert_eq!(dag.attr("dag_kind"), Some("degraded_read"));
        let firings = children(&t, dag);
        let n = names(&firings);
        assert_eq!(n.get("Xrc"), Some(&1), "{n:?}");
        assert_eq!(
            n.get("Rrd"),
            Some(&3),
            "the three surviving data units: {n:?}"
        );
        assert_eq!(n.get("Rp"), Some(&1), "{n:?}");
        assert!(!n.contains_key("Rud"), "the lost unit is not read: {n:?}");
        let xrc = one(&firings, "Xrc");
        assert_eq!(xrc.attr("outcome"), Some("good"));

        telemetry.shutdown().await;
        let counted = dagraid_telemetry::counting::stats().snapshot();
        assert_eq!(counted.not_sent(), 0, "{counted:?}");
        assert_eq!(counted.exported, counted.ended, "{counted:?}");
    })
    .await;
}
