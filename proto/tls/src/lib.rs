//! dagraid's transport security: mutual TLS on every gRPC link.
//!
//! Every process holds a certificate signed by the cluster's CA; the certificate's DNS name says
//! which part of the cluster it is (its [`Role`]):
//!
//! | role | DNS name in the certificate | may |
//! |---|---|---|
//! | coordinator | `coordinator.dagraid` | serve the volume API; call storage nodes |
//! | storage node `ID` | `ID.node.dagraid` | serve the storage API (as node `ID` only) |
//! | client | `client.dagraid` | call the volume API |
//!
//! A storage node answers its storage API only to a peer whose certificate chains to the
//! cluster CA and names the coordinator ([`require_role`]); the coordinator connects to a node
//! expecting the node's own name, so a certificate of another node (or a stranger at the node's
//! address) fails the handshake. Client certificates are optional at the handshake and enforced
//! per call, so the gRPC health service stays reachable for probes without one.
//!
//! - [`ServerTls`]: a server's certificate, key and CA, reloadable ([`ServerTls::reload`]);
//!   [`ServerTls::incoming`] turns a TCP listener into a stream of TLS connections for tonic's
//!   `serve_with_incoming` (handshakes run beside the accept loop, bounded in time and number).
//! - [`ServerTls::accept_nbd`]: the same material for the NBD export's `NBD_OPT_STARTTLS`, where
//!   the client certificate is required at the handshake (NBD has no token) and must name a
//!   client or the coordinator.
//! - [`ClientTls`]: a client's CA and optional certificate, reloadable; [`ClientTls::connector`]
//!   is a connector for `Endpoint::connect_with_connector` that verifies a given server name.
//! - `pki` (feature `pki`): the cluster CA and certificates `dagraid up` makes on its first
//!   start.
//! - [`transport`]: injected transports ([`transport::Incoming`], [`transport::Connector`]) in
//!   place of the operating system's TCP, for the deterministic simulation.
//!
//! rustls with the `ring` provider throughout (aws-lc needs a C toolchain build).
#![forbid(unsafe_code)]

mod client;
mod files;
mod material;
mod peer;
#[cfg(feature = "pki")]
pub mod pki;
mod server;
pub mod transport;

use std::path::PathBuf;

pub use client::{ClientTls, TlsConnector};
pub use peer::{RoleError, peer_role, require_role};
pub use server::{HANDSHAKE_TIMEOUT, NbdTlsError, ServerTls};
/// The TLS stream of a connection a server accepted ([`ServerTls::accept_nbd`]).
pub use tokio_rustls::server::TlsStream;

/// The domain under which certificates name roles.
pub const ROLE_DOMAIN: &str = "dagraid";

/// Which part of the cluster a certificate speaks for: the DNS name it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The coordinator: serves the volume API, calls the storage nodes.
    Coordinator,
    /// Storage node with this id.
    Node(String),
    /// A client of the volume API (the CLI, an application using the SDK).
    Client,
}

impl Role {
    /// The DNS name a certificate of this role carries (`coordinator.dagraid`,
    /// `ID.node.dagraid`, `client.dagraid`).
    pub fn dns_name(&self) -> String {
        match self {
            Role::Coordinator => format!("coordinator.{ROLE_DOMAIN}"),
            Role::Node(id) => format!("{id}.node.{ROLE_DOMAIN}"),
            Role::Client => format!("client.{ROLE_DOMAIN}"),
        }
    }
}

/// Checks that a node id can be a DNS label (its role name is `ID.node.dagraid`): 1-63 ASCII
/// letters, digits or `-`, not starting or ending with `-`.
pub fn check_node_id(id: &str) -> Result<(), TlsError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(TlsError::Invalid(format!(
            "node id {id:?} cannot be named in a certificate (ID.node.dagraid): use 1-63 letters, digits or '-'"
        )))
    }
}

/// Checks that the certificate in `cert` (its leaf) names `role`: a process refuses to start
/// with a certificate that is not its own (a node's must name its node id).
pub fn check_certificate_names(cert: &std::path::Path, role: &Role) -> Result<(), TlsError> {
    let chain = files::certificates(cert)?;
    peer_role(Some(&chain), role).map_err(|_| TlsError::Pem {
        path: cert.to_owned(),
        what: format!(
            "the certificate does not name {} (a certificate of another part of the cluster?)",
            role.dns_name()
        ),
    })
}

/// Where one process's TLS material is: PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA bundle peers are verified against.
    pub ca: PathBuf,
    /// This process's certificate chain (leaf first). A server needs one; a client may go
    /// without (then it authenticates by token, where the server allows that).
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
}

/// The TLS flags every dagraid process shares (`--tls-ca`, `--tls-cert`, `--tls-key`,
/// `--insecure`), also read from the environment.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// CA bundle (PEM) that peers' certificates must chain to.
    #[arg(long = "tls-ca", env = "DAGRAID_TLS_CA", value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// This process's certificate chain (PEM, leaf first).
    #[arg(long = "tls-cert", env = "DAGRAID_TLS_CERT", value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long = "tls-key", env = "DAGRAID_TLS_KEY", value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Plaintext gRPC, no TLS: anyone who reaches the port can call it. For a laptop or a test
    /// only; logged as a warning.
    #[arg(long, env = "DAGRAID_INSECURE", conflicts_with_all = ["ca", "cert", "key"])]
    pub insecure: bool,
}

impl TlsArgs {
    /// The files of a server (certificate, key and CA all required), or `None` for plaintext,
    /// which a server takes only when asked for it with `--insecure`: a server given neither
    /// is refused rather than left open to anyone who reaches its port.
    pub fn server_files(&self) -> Result<Option<TlsFiles>, TlsError> {
        match (&self.ca, &self.cert, &self.key) {
            (None, None, None) if self.insecure => Ok(None),
            (None, None, None) => Err(TlsError::Invalid(
                "no TLS material: give --tls-ca, --tls-cert and --tls-key (or DAGRAID_TLS_CA, DAGRAID_TLS_CERT, DAGRAID_TLS_KEY), or --insecure (DAGRAID_INSECURE=true) to serve plaintext that anyone who reaches the port can use; see docs/SECURITY.md"
                    .into(),
            )),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles {
                ca: ca.clone(),
                cert: Some(cert.clone()),
                key: Some(key.clone()),
            })),
            _ => Err(TlsError::Invalid(
                "TLS needs --tls-ca, --tls-cert and --tls-key together (or --insecure for plaintext)"
                    .into(),
            )),
        }
    }

    /// The files of a client (CA required; certificate and key together or not at all), or
    /// `None` for plaintext.
    pub fn client_files(&self) -> Result<Option<TlsFiles>, TlsError> {
        match (&self.ca, &self.cert, &self.key) {
            (None, None, None) => Ok(None),
            (Some(ca), cert, key) if cert.is_some() == key.is_some() => Ok(Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, _, _) => Err(TlsError::Invalid(
                "--tls-cert needs --tls-ca (the CA the server's certificate chains to)".into(),
            )),
            _ => Err(TlsError::Invalid(
                "--tls-cert and --tls-key go together".into(),
            )),
        }
    }
}

/// What can go wrong loading or using TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the material (a key that does not match, an unusable CA...).
    #[error("TLS: {0}")]
    Rustls(String),
    /// A setting that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// Making a certificate failed.
    #[error("making a certificate: {0}")]
    Generate(String),
}

/// TLS material that [`reload_on_hangup`] reads again.
#[derive(Clone, Debug)]
pub enum Reloadable {
    /// A server's certificate, key and CA.
    Server(std::sync::Arc<ServerTls>),
    /// A client's CA and certificate.
    Client(std::sync::Arc<ClientTls>),
}

/// Reads `material` again on every SIGHUP, in a task of its own: new handshakes use the new
/// certificates, connections already up continue. A reload that fails (a half-written file)
/// keeps what is in use and says why in the log. The handler is installed before this returns.
pub fn reload_on_hangup(material: Vec<Reloadable>) -> Result<(), TlsError> {
    on_hangup(move || {
        for m in &material {
            m.reload_logged();
        }
    })
}

/// Runs `reload` on every SIGHUP, in a task of its own (a process with more than TLS material
/// to read again, e.g. the coordinator's token file, passes its own). The handler is installed
/// before this returns.
pub fn on_hangup(reload: impl Fn() + Send + 'static) -> Result<(), TlsError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|e| TlsError::Invalid(format!("installing the SIGHUP handler: {e}")))?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reload();
        }
    });
    Ok(())
}

impl Reloadable {
    /// Reads the files again and says in the log what happened (a failure keeps the material
    /// in use).
    pub fn reload_logged(&self) {
        let (result, files) = match self {
            Reloadable::Server(tls) => (tls.reload(), tls.files()),
            Reloadable::Client(tls) => (tls.reload(), tls.files()),
        };
        match result {
            Ok(()) => {
                tracing::info!(cert = ?files.cert, ca = %files.ca.display(), "TLS material reloaded")
            }
            Err(e) => tracing::warn!(error = %e, "TLS reload failed: the material in use stays"),
        }
    }
}

/// The crypto provider every config uses: rustls's `ring`. rustls 0.23.48 deprecates it for
/// lacking post-quantum key exchange (only its aws-lc provider has that); aws-lc needs a C
/// toolchain build, which the project's build machines and images avoid, so ring stays until
/// a post-quantum kept crate builds without one.
#[allow(deprecated)]
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names() {
        assert_eq!(Role::Coordinator.dns_name(), "coordinator.dagraid");
        assert_eq!(Role::Node("node3".into()).dns_name(), "node3.node.dagraid");
        assert_eq!(Role::Client.dns_name(), "client.dagraid");
    }

    #[test]
    fn node_ids_must_be_dns_labels() {
        check_node_id("node1").unwrap();
        check_node_id("a-1").unwrap();
        for bad in ["", "-a", "a-", "a.b", "a_b", &"x".repeat(64)] {
            assert!(check_node_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_go_together() {
        let none = TlsArgs::default();
        let err = none.server_files().unwrap_err().to_string();
        assert!(err.contains("--insecure"), "{err}");
        assert_eq!(none.client_files().unwrap(), None);
        let insecure = TlsArgs {
            insecure: true,
            ..TlsArgs::default()
        };
        assert_eq!(insecure.server_files().unwrap(), None);
        let ca_only = TlsArgs {
            ca: Some("ca.pem".into()),
            ..TlsArgs::default()
        };
        assert!(ca_only.server_files().is_err());
        let files = ca_only.client_files().unwrap().unwrap();
        assert_eq!(files.cert, None);
        let cert_without_key = TlsArgs {
            ca: Some("ca.pem".into()),
            cert: Some("c.pem".into()),
            ..TlsArgs::default()
        };
        assert!(cert_without_key.client_files().is_err());
        assert!(cert_without_key.server_files().is_err());
    }
}
