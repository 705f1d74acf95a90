//! `dagraid health ADDR [--service NAME]`: one `grpc.health.v1.Health/Check` call, for container
//! health checks (the images are `FROM scratch`: no shell, no curl, but `/dagraid` is in every
//! image). Needs no token: the coordinator serves the health service without authentication.
//!
//! Exit code 0 and `ADDR: serving` on stdout when the server answers SERVING; otherwise the
//! usual one-line error and exit code 1.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The gRPC service name of the coordinator's volume API.
pub const COORDINATOR_SERVICE: &str = "dagraid.volume.v1.VolumeService";
/// The gRPC service name of the storage node's API.
pub const NODE_SERVICE: &str = "dagraid.storage.v1.StorageNode";

/// `http://ADDR` for a bare `host:port`; a URL is kept as it is.
fn url_of(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

/// Checks `service` (`""`: the server as a whole) at `address`, within `timeout` for the
/// connection and again for the call.
pub(crate) async fn check(address: &str, service: &str, timeout: Duration) -> anyhow::Result<()> {
    let url = url_of(address);
    let endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("bad address {address:?}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
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
        assert_eq!(url_of("127.0.0.1:7001"), "http://127.0.0.1:7001");
        assert_eq!(url_of("node1:7001"), "http://node1:7001");
        assert_eq!(url_of("http://coordinator:7070"), "http://coordinator:7070");
    }
}
