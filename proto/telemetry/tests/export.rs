//! End to end in one process: a span around a gRPC call, its context in the call's metadata,
//! the server's span under it, both exported over OTLP to a real receiver.

use std::time::Duration;

use dagraid_telemetry::receiver::OtlpReceiver;
use dagraid_telemetry::{BatchSettings, GrpcServerLayer, GrpcServerMetrics, SamplerChoice};
use dagraid_telemetry::{TraceSettings, metrics};
use prometheus_client::registry::Registry;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_and_its_server_span_are_one_trace() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let settings = TraceSettings {
        endpoint: Some(receiver.endpoint()),
        service_name: "telemetry-test".into(),
        sampler: SamplerChoice::AlwaysOn,
        batch: BatchSettings {
            delay: Duration::from_millis(50),
            ..BatchSettings::default()
        },
        headers: vec![("x-collector-key".into(), "s3cret".into())],
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

    let mut registry = Registry::default();
    let grpc_metrics = GrpcServerMetrics::register(&mut registry);
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(GrpcServerLayer::new(Some(grpc_metrics)).quiet(&["grpc.health.v1.Health/Watch"]))
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    async {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        dagraid_telemetry::propagation::inject_current(request.metadata_mut());
        assert!(request.metadata().get("traceparent").is_some());
        client.check(request).await.unwrap();
        // No context at all: the server span is a root of its own trace.
    }
    .instrument(tracing::info_span!(target: "dagraid_test", "caller"))
    .await;
    client
        .check(HealthCheckRequest {
            service: "unknown".into(),
        })
        .await
        .unwrap_err();

    let spans = receiver
        .wait_for(Duration::from_secs(30), |s| s.len() >= 3)
        .await
        .unwrap_or_else(|s| panic!("spans: {s:#?}"));
    let caller = spans.iter().find(|s| s.name == "caller").unwrap();
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "grpc.health.v1.Health/Check")
        .collect();
    assert_eq!(servers.len(), 2, "{spans:#?}");
    let child = servers
        .iter()
        .find(|s| !s.parent_span_id.is_empty())
        .unwrap();
    assert_eq!(child.trace_id, caller.trace_id);
    assert_eq!(child.parent_span_id, caller.span_id);
    assert_eq!(child.kind, 2, "a server span");
    assert_eq!(child.attr("rpc.grpc.status_code"), Some("0"));
    assert_eq!(child.service, "telemetry-test");
    let root = servers
        .iter()
        .find(|s| s.parent_span_id.is_empty())
        .unwrap();
    assert_ne!(root.trace_id, caller.trace_id);
    assert_eq!(root.attr("rpc.grpc.status_code"), Some("5"), "NOT_FOUND");
    assert!(root.error);
    assert_eq!(
        receiver
            .last_headers()
            .get("x-collector-key")
            .map(String::as_str),
        Some("s3cret"),
        "OTEL_EXPORTER_OTLP_HEADERS go with every export call"
    );

    let text = metrics::render(&registry, metrics::Format::Prometheus);
    assert!(
        text.contains(
            "dagraid_grpc_server_handled_total{method=\"grpc.health.v1.Health/Check\",code=\"OK\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "dagraid_grpc_server_handled_total{method=\"grpc.health.v1.Health/Check\",code=\"NOT_FOUND\"} 1"
        ),
        "{text}"
    );
    // Counted once the export returned: after the shutdown's flush at the latest.
    telemetry.shutdown().await;
    let (ended, dropped, exported, failed) = dagraid_telemetry::export::stats().snapshot();
    assert_eq!((ended, dropped, exported, failed), (3, 0, 3, 0));
}
