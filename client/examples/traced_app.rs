//! An application that traces itself with OpenTelemetry and calls dagraid: its trace goes on
//! through the client SDK's `client.write` span into the coordinator, the DAG's node firings
//! and the storage nodes' disk I/O.
//!
//! The SDK installs no subscriber and no tracer provider: the application owns both. It
//! exports with its own `tracing-opentelemetry` layer; the SDK emits `tracing` spans, which
//! that layer records, and puts the current OpenTelemetry context on every call
//! (`traceparent`), so the servers' spans are children of the application's.
//!
//! ```sh
//! export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317   # Jaeger, a collector
//! cargo run --release -- up                                     # the cluster exports too
//! cargo run -p dagraid-client --example traced_app -- http://127.0.0.1:7070 vol0
//! ```
//!
//! Arguments: the coordinator's URL and a volume's name (`DAGRAID_TOKEN`: its bearer token).

use dagraid_client::{Client, ClientOptions};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7000".into());
    let volume = args.next().unwrap_or_else(|| "vol0".into());

    // The application's own tracing: an OTLP exporter (it reads OTEL_EXPORTER_OTLP_* itself)
    // behind the SDK's batch processor, and a tracing-opentelemetry layer over it.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("traced-app").build())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("traced-app")))
        .with(tracing_subscriber::fmt::layer());
    tracing::subscriber::set_global_default(subscriber)?;

    let client = Client::connect(
        url,
        ClientOptions {
            token: std::env::var("DAGRAID_TOKEN").ok(),
            ..ClientOptions::default()
        },
    )
    .await?;
    let vol = client.volume(&volume);
    // One trace: this span, the SDK's client.write and client.read under it, and under those
    // the coordinator's and the storage nodes' spans.
    async {
        vol.write_at(0, vec![7u8; 4096]).await?;
        let back = vol.read_at(0, 4096).await?;
        tracing::info!(bytes = back.len(), "checkpoint written and read back");
        anyhow::Ok(())
    }
    .instrument(tracing::info_span!("app.checkpoint"))
    .await?;

    // The batch processor's last spans go out before the process ends.
    tokio::task::spawn_blocking(move || provider.shutdown()).await??;
    Ok(())
}
