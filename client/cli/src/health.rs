//! `dagraid health ADDR [--service NAME]`: one `grpc.health.v1.Health/Check` call, for container
//! health checks (the images are `FROM scratch`: no shell, no curl, but `/dagraid` is in every
//! image). Needs no token: the coordinator serves the health service without authentication.
//!
//! Exit code 0 and `ADDR: serving` on stdout when the server answers SERVING; otherwise the
//! usual one-line error and exit code 1.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dagraid_tls::{ClientTls, TlsFiles};
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The gRPC service name of the coordinator's volume API.
pub const COORDINATOR_SERVICE: &str = "dagraid.volume.v1.VolumeService";
/// The gRPC service name of the storage node's API.
pub const NODE_SERVICE: &str = "dagraid.storage.v1.StorageNode";

/// `http://ADDR` (`https://ADDR` with `tls`) for a bare `host:port`; a URL is kept as it is.
fn url_of(address: &str, tls: bool) -> String {
    if address.contains("://") {
        address.to_owned()
    } else if tls {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    }
}

/// Checks `service` (`""`: the server as a whole) at `address`, within `timeout` for the
/// connection and again for the call. With `tls` (the CA bundle and the name the server's
/// certificate must carry) over TLS, presenting no client certificate.
pub(crate) async fn check(
    address: &str,
    service: &str,
    tls: Option<(&Path, &str)>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let url = url_of(address, tls.is_some());
    if url.starts_with("https://") && tls.is_none() {
        bail!(
            "{url} is https: give the CA its certificate chains to with --tls-ca (DAGRAID_TLS_CA)"
        );
    }
    // Our connector speaks TLS itself: tonic is handed the http:// form of the URL.
    let dial = match url.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => url.clone(),
    };
    let endpoint = Endpoint::from_shared(dial)
        .with_context(|| format!("bad address {address:?}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = match tls {
        Some((ca, server_name)) => {
            let client = ClientTls::load(TlsFiles {
                ca: ca.to_owned(),
                cert: None,
                key: None,
            })?;
            endpoint
                .connect_with_connector(client.connector(server_name)?)
                .await
                .with_context(|| format!("cannot reach {url} over TLS as {server_name}"))?
        }
        None => endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach {url}"))?,
    };
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "health check of {url} failed: {:?}: {}",
                status.code(),
                status.message()
            )
        })?
        .into_inner();
    let what = if service.is_empty() {
        url.clone()
    } else {
        format!("{service} at {url}")
    };
    match answer.status() {
        ServingStatus::Serving => {
            println!("{what}: serving");
            Ok(())
        }
        other => bail!("{what} is not serving: {}", other.as_str_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_become_http_urls() {
        assert_eq!(url_of("127.0.0.1:7001", false), "http://127.0.0.1:7001");
        assert_eq!(url_of("node1:7001", false), "http://node1:7001");
        assert_eq!(url_of("node1:7001", true), "https://node1:7001");
        assert_eq!(
            url_of("http://coordinator:7070", false),
            "http://coordinator:7070"
        );
    }
}
