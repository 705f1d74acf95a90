//! Sampling and the export layer's filter, against a real OTLP receiver: below a span of a trace
//! that is not sampled the export layer records nothing (no span builder, no fields), the context still
//! carries the trace and its decision on to the calls made inside it, and a served call whose
//! remote parent is sampled is traced whole whatever the local ratio. The last test checks the
//! same of real processes: writes whose caller did not sample export no span from any process
//! (the decision reaches the storage nodes through the coordinator's tasks), a sampled one is
//! one whole trace.

use std::time::Duration;

use dagraid_client::{Client, RaidLevel, VolumeSpec};
use dagraid_telemetry::{Telemetry, TraceSettings, propagation};
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::otlp_receiver::OtlpReceiver;
use dagraid_tests::with_timeout;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tonic::metadata::MetadataMap;
use tracing::Dispatch;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const REMOTE_TRACE: u128 = 0x0af7651916cd43dd8448eb211c80319c;
const REMOTE_SPAN: u64 = 0xb7ad6b7169203331;

/// The production subscriber exporting to `receiver` with `sampler` (its argument `ratio`).
fn traced(receiver: &OtlpReceiver, sampler: &str, ratio: Option<&str>) -> (Dispatch, Telemetry) {
    let settings = TraceSettings {
        endpoint: Some(receiver.endpoint()),
        sampler: Some(dagraid_telemetry::sampler(sampler, ratio).unwrap()),
        ..TraceSettings::default()
    };
    let log = tracing_subscriber::EnvFilter::new("info");
    dagraid_telemetry::build(&settings, log, std::io::sink, false).unwrap()
}

/// A caller's context, as a served call extracts it from its `traceparent`.
fn remote(sampled: bool) -> opentelemetry::Context {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from(REMOTE_TRACE),
        SpanId::from(REMOTE_SPAN),
        flags,
        true,
        TraceState::default(),
    ))
}

/// A served call as the gRPC layer makes it (a root span given the caller's context), with an
/// access below it, a DAG, a firing with an explicit parent and an event; returns the
/// `traceparent` a storage call made inside the firing would carry, and whether the export
/// layer recorded the spans below the served call's (a span it does not record has no
/// OpenTelemetry context of its own).
fn served_call(parent: Option<opentelemetry::Context>) -> (String, [bool; 3]) {
    let call = tracing::info_span!(target: "dagraid_telemetry::grpc", "grpc", otel.kind = "server");
    if let Some(cx) = parent {
        call.set_parent(cx).unwrap();
    }
    call.in_scope(|| {
        let access = tracing::info_span!(target: "dagraid_core::access", "access", offset = 0u64);
        access.in_scope(|| {
            let dag = tracing::info_span!(target: "dagraid_core::engine", "dag", nodes = 8u64);
            dag.in_scope(|| {
                let firing =
                    tracing::info_span!(target: "dagraid_core::engine", parent: &dag, "Wnd");
                firing.in_scope(|| {
                    tracing::info!(target: "dagraid_core::engine", node = 5u64, "node skipped");
                    let mut md = MetadataMap::new();
                    propagation::inject_current(&mut md);
                    let traceparent = md
                        .get("traceparent")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    let recorded = |s: &tracing::Span| s.context().span().span_context().is_valid();
                    (
                        traceparent,
                        [recorded(&access), recorded(&dag), recorded(&firing)],
                    )
                })
            })
        })
    })
}

async fn flush(telemetry: Telemetry) -> Telemetry {
    tokio::task::spawn_blocking(move || {
        telemetry.flush_blocking().unwrap();
        telemetry
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_an_unsampled_span_nothing_is_recorded_and_the_decision_travels_on() {
    with_timeout(async {
        let receiver = OtlpReceiver::start().await.unwrap();
        let (dispatch, telemetry) = traced(&receiver, "parentbased_traceidratio", Some("0"));
        let (traceparent, made) =
            tracing::dispatcher::with_default(&dispatch, || served_call(None));
        assert_eq!(
            made, [false; 3],
            "nothing is recorded below an unsampled root"
        );
        // A storage call made below carries the trace and its decision (not sampled): the
        // nodes' parent-based samplers drop their spans too.
        assert!(traceparent.starts_with("00-"), "{traceparent:?}");
        assert!(traceparent.ends_with("-00"), "{traceparent:?}");
        // A caller that sampled nothing: the same.
        let (traceparent, made) =
            tracing::dispatcher::with_default(&dispatch, || served_call(Some(remote(false))));
        assert_eq!(made, [false; 3]);
        assert_eq!(
            traceparent.split('-').nth(1),
            Some(format!("{REMOTE_TRACE:032x}").as_str())
        );
        assert!(traceparent.ends_with("-00"), "{traceparent:?}");
        let telemetry = flush(telemetry).await;
        assert_eq!(receiver.count(), 0, "{:#?}", receiver.spans());
        let stats = dagraid_telemetry::counting::stats().snapshot();
        assert_eq!(stats.not_sent(), 0);
        telemetry.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_caller_gets_the_whole_trace_whatever_the_local_ratio() {
    with_timeout(async {
        let receiver = OtlpReceiver::start().await.unwrap();
        let (dispatch, telemetry) = traced(&receiver, "parentbased_traceidratio", Some("0"));
        let (traceparent, made) =
            tracing::dispatcher::with_default(&dispatch, || served_call(Some(remote(true))));
        assert_eq!(made, [true; 3]);
        assert!(traceparent.ends_with("-01"), "{traceparent:?}");
        let _telemetry = flush(telemetry).await;
        let spans = receiver
            .wait_for(Duration::from_secs(30), |s| s.len() >= 4)
            .await
            .unwrap_or_else(|s| panic!("4 spans expected: {s:#?}"));
        assert_eq!(spans.len(), 4, "{spans:#?}");
        let trace = format!("{REMOTE_TRACE:032x}");
        assert!(spans.iter().all(|s| s.trace_id == trace), "{spans:#?}");
        let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
        assert_eq!(
            by_name("grpc").parent_span_id,
            format!("{REMOTE_SPAN:016x}")
        );
        assert_eq!(by_name("access").parent_span_id, by_name("grpc").span_id);
        assert_eq!(by_name("dag").parent_span_id, by_name("access").span_id);
        let firing = by_name("Wnd");
        assert_eq!(firing.parent_span_id, by_name("dag").span_id);
        assert_eq!(firing.events.len(), 1, "{firing:#?}");
        // The storage call made inside the firing continues the trace below it.
        assert_eq!(traceparent, format!("00-{trace}-{}-01", firing.span_id));
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn real_processes_follow_a_caller_that_did_not_sample_down_to_the_disk() {
    with_timeout(async {
        let receiver = OtlpReceiver::start().await.unwrap();
        // The default sampler, parentbased_always_on: only the caller decides.
        let cluster = Cluster::start(ClusterOptions {
            env: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint()),
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "50".into()),
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
                VolumeSpec::new("v", RaidLevel::Raid5, 16 << 20).stripe_unit_bytes(64 << 10),
            )
            .await
            .unwrap();
        let vol = client.volume("v");
        for i in 0..20u64 {
            let _caller = remote(false).attach();
            vol.write_at(i * 4096, vec![i as u8; 4096]).await.unwrap();
        }
        let _caller = remote(true).attach();
        vol.write_at(0, vec![7u8; 4096]).await.unwrap();
        // The sampled write: the API call, the access, its DAG, 8 firings, 4 storage calls and
        // their 4 disk spans. Every process exports in order, so once the storage nodes' spans
        // of this write are in, theirs of the earlier writes would be too.
        let trace = format!("{REMOTE_TRACE:032x}");
        let spans = receiver
            .wait_for(Duration::from_secs(60), |s| {
                s.iter().filter(|s| s.trace_id == trace).count() >= 18
            })
            .await
            .unwrap_or_else(|s| panic!("the sampled write's trace did not complete: {s:#?}"));
        // Spans of the other writes' data path (setting up the volume has traces of its own).
        let data_path = [
            "dagraid.volume.v1.VolumeService/Write",
            "access",
            "dag",
            "dagraid.storage.v1.StorageNode/ReadBlocks",
            "dagraid.storage.v1.StorageNode/WriteBlocks",
            "disk.read",
            "disk.write",
        ];
        let others: Vec<_> = spans
            .iter()
            .filter(|s| s.trace_id != trace && data_path.contains(&s.name.as_str()))
            .collect();
        assert!(
            others.is_empty(),
            "spans of writes not sampled: {others:#?}"
        );
    })
    .await;
}
