//! The client SDK composes with an application's own tracing (`client/examples/traced_app.rs`):
//! an application exporting with its own `tracing-opentelemetry` layer and SDK tracer provider
//! sees the coordinator's and the nodes' spans join its trace, under its own span.

use std::time::Duration;

use dagraid_client::{Client, RaidLevel, VolumeSpec};
use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use dagraid_tests::with_timeout;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applications_trace_continues_through_the_coordinator_and_the_nodes() {
    with_timeout(async {
        let receiver = OtlpReceiver::start().await.unwrap();
        // The application's own pipeline, nothing of dagraid-telemetry's set-up.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(receiver.endpoint())
            .build()
            .unwrap();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("app").build())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("app")));
        tracing::subscriber::set_global_default(subscriber).unwrap();

        let cluster = Cluster::start(ClusterOptions {
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
            .create_volume(VolumeSpec::new("app", RaidLevel::Raid5, 16 << 20))
            .await
            .unwrap();
        let vol = client.volume("app");
        vol.write_at(4096, vec![9u8; 4096])
            .instrument(tracing::info_span!("app.checkpoint"))
            .await
            .unwrap();
        let p = provider.clone();
        tokio::task::spawn_blocking(move || p.force_flush())
            .await
            .unwrap()
            .unwrap();

        let find =
            |spans: &[ReceivedSpan], name: &str| spans.iter().find(|s| s.name == name).cloned();
        let spans = receiver
            .wait_for(Duration::from_secs(60), |spans| {
                // Whole: every process exports in its own batches, so the coordinator's spans
                // may arrive after the nodes' (and the other way round).
                find(spans, "app.checkpoint").is_some_and(|app| {
                    let in_trace = |name: &str| {
                        spans
                            .iter()
                            .filter(|s| s.trace_id == app.trace_id && s.name == name)
                            .count()
                    };
                    in_trace("disk.write") >= 2
                        && [
                            "client.write",
                            "dagraid.volume.v1.VolumeService/Write",
                            "access",
                            "dag",
                            "Wnd",
                            "dagraid.storage.v1.StorageNode/WriteBlocks",
                        ]
                        .iter()
                        .all(|name| in_trace(name) > 0)
                })
            })
            .await
            .unwrap_or_else(|spans| panic!("the trace did not arrive whole: {spans:#?}"));
        let app = find(&spans, "app.checkpoint").unwrap();
        assert_eq!(app.service, "app");
        let in_trace: Vec<_> = spans
            .iter()
            .filter(|s| s.trace_id == app.trace_id)
            .collect();
        let child_of = |parent: &ReceivedSpan, name: &str| {
            in_trace
                .iter()
                .find(|s| s.parent_span_id == parent.span_id && s.name == name)
                .copied()
                .cloned()
                .unwrap_or_else(|| panic!("no {name} under {}: {in_trace:#?}", parent.name))
        };
        let write = child_of(&app, "client.write");
        assert_eq!(write.service, "app");
        let api = child_of(&write, "dagraid.volume.v1.VolumeService/Write");
        assert_eq!(api.service, "dagraid-coordinator");
        let access = child_of(&api, "access");
        let dag = child_of(&access, "dag");
        assert_eq!(dag.attr("dag_kind"), Some("small_write"));
        let wnd = child_of(&dag, "Wnd");
        let call = child_of(&wnd, "dagraid.storage.v1.StorageNode/WriteBlocks");
        assert_eq!(call.service, "dagraid-node");
        child_of(&call, "disk.write");

        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .unwrap()
            .unwrap();
    })
    .await;
}
