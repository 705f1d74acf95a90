//! The NBD export: every volume served over the Network Block Device protocol (the NBD
//! project's `doc/proto.md`), so qemu, libnbd's tools, fio and the kernel's client reach it.
//!
//! - [`wire`]: the wire format (constants, parsers, encoders), pure and tested alone.
//! - [`conn`]: one connection: the fixed newstyle handshake, then the transmission phase, whose
//!   requests go straight into the volume's access pipeline ([`dagraid_core::access::Array`]),
//!   many in flight, answered in any order by handle.
//! - This module: the listener, [`NbdSettings`], and the loopback rule.
//!
//! The export name is the volume name. A request is answered only when its access is durable,
//! exactly as through the gRPC API: a WRITE's success means every live column holds it, so FUA
//! is what every write does anyway, a FLUSH has nothing left to wait for (it is still a barrier
//! for the volume's state), and a flush on one connection covers the writes completed on every
//! other (`NBD_FLAG_CAN_MULTI_CONN`). TRIM and WRITE_ZEROES write zeros through the same path,
//! so parity stays consistent and a trimmed block reads as zeros.
//!
//! NBD has no credentials of its own. With TLS material the export offers `NBD_OPT_STARTTLS`
//! ([`ExportTls`], `--nbd-tls`), with the coordinator's certificate; a TLS client must show a
//! certificate of the cluster naming `client.dagraid` (or `coordinator.dagraid`): the
//! certificate is the credential. The export listens on loopback unless TLS is required or the
//! operator says `--nbd-insecure` (checked with the configuration:
//! `crate::config::check_nbd_listen`).

pub mod conn;
pub mod wire;

use std::sync::Arc;

use dagraid_tls::ServerTls;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::volumes::VolumeManager;

/// TLS on the export (`--nbd-tls`), with the coordinator's reloadable TLS material.
#[derive(Debug, Clone)]
pub enum ExportTls {
    /// No TLS: `NBD_OPT_STARTTLS` is answered `NBD_REP_ERR_POLICY`.
    Off,
    /// TLS offered, plaintext still served.
    On(Arc<ServerTls>),
    /// TLS required before any option but `NBD_OPT_STARTTLS` and `NBD_OPT_ABORT`.
    Require(Arc<ServerTls>),
}

/// How the export serves.
#[derive(Debug, Clone)]
pub struct NbdSettings {
    /// Refuse writes, trims and zeroing on every export (`NBD_FLAG_READ_ONLY`; EPERM).
    pub read_only: bool,
    /// TLS on the export.
    pub tls: ExportTls,
    /// The largest request payload (the API's largest access, at most 32 MiB).
    pub max_request_bytes: u32,
    /// Payload bytes one connection may hold in flight (reads and writes together): the bound
    /// on a connection's memory beside its fixed buffers.
    pub max_in_flight_bytes: u64,
}

/// The largest request payload the export takes, whatever the API's limit: the protocol
/// suggests clients keep to 32 MiB.
pub const MAX_REQUEST_BYTES: u32 = 32 << 20;
/// Default payload bytes in flight on one connection.
pub const DEFAULT_IN_FLIGHT_BYTES: u64 = 64 << 20;

impl NbdSettings {
    /// Settings for an API whose largest access is `max_io_bytes`, without TLS (set
    /// [`NbdSettings::tls`] for it).
    pub fn new(max_io_bytes: u64, read_only: bool) -> Self {
        let max_request_bytes = u32::try_from(max_io_bytes.min(u64::from(MAX_REQUEST_BYTES)))
            .unwrap_or(MAX_REQUEST_BYTES);
        NbdSettings {
            read_only,
            tls: ExportTls::Off,
            max_request_bytes,
            max_in_flight_bytes: DEFAULT_IN_FLIGHT_BYTES.max(u64::from(max_request_bytes)),
        }
    }
}

/// Accepts connections on `listener` until `stop`, each served by [`conn::serve`]; then waits
/// for every connection to end its requests in flight (none is cut in the middle of a write).
pub async fn serve(
    listener: TcpListener,
    volumes: Arc<VolumeManager>,
    settings: NbdSettings,
    stop: CancellationToken,
) {
    let settings = Arc::new(settings);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tracing::info!(%peer, "nbd connection");
                    connections.spawn(conn::serve(
                        stream,
                        peer,
                        volumes.clone(),
                        settings.clone(),
                        stop.clone(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "nbd accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_cap_requests_and_bound_memory() {
        let s = NbdSettings::new(1 << 30, false);
        assert_eq!(s.max_request_bytes, MAX_REQUEST_BYTES);
        assert!(s.max_in_flight_bytes >= u64::from(s.max_request_bytes));
        let s = NbdSettings::new(16 << 20, true);
        assert_eq!((s.max_request_bytes, s.read_only), (16 << 20, true));
        assert_eq!(s.max_in_flight_bytes, DEFAULT_IN_FLIGHT_BYTES);
    }
}
