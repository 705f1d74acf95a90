//! The server side: a reloadable certificate, key and CA, and the TLS accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::material::Material;
use crate::{Role, TlsError, TlsFiles, files, peer_role, provider};

/// How long a peer has to finish its TLS handshake after its TCP connection is accepted.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections beyond it are closed at once.
const MAX_HANDSHAKES: usize = 256;

/// A server's TLS material: its certificate chain and key, and the CA its clients'
/// certificates must chain to. A client certificate is asked for but optional at the
/// handshake (the gRPC health service answers without one); one that is presented must chain
/// to the CA, and the services check the role it names per call ([`crate::require_role`]).
///
/// [`ServerTls::reload`] reads the files again: handshakes after it use the new material,
/// connections already up continue.
///
/// The same material also makes a second config for the NBD export ([`ServerTls::accept_nbd`]):
/// no ALPN (NBD clients offer none) and a client certificate required at the handshake.
#[derive(Debug)]
pub struct ServerTls {
    material: Material<Configs>,
}

/// The configs built from one certificate, key and CA.
struct Configs {
    /// gRPC: ALPN `h2`, client certificate optional.
    grpc: Arc<ServerConfig>,
    /// NBD: no ALPN, client certificate required.
    nbd: Arc<ServerConfig>,
}

/// Why an NBD client's TLS session was refused ([`ServerTls::accept_nbd`]).
#[derive(Debug, thiserror::Error)]
pub enum NbdTlsError {
    /// The handshake failed: no client certificate, one from another CA, a plaintext peer.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// The handshake did not finish within [`HANDSHAKE_TIMEOUT`].
    #[error("TLS handshake timed out after {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    /// The certificate chains to the cluster CA but names neither a client nor the
    /// coordinator.
    #[error("the client certificate names neither client.dagraid nor coordinator.dagraid")]
    Role,
}

impl ServerTls {
    /// Loads the certificate, key and CA (all three needed).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let config = Self::build(&files)?;
        Ok(Arc::new(Self {
            material: Material::new(files, config),
        }))
    }

    fn build(files: &TlsFiles) -> Result<Configs, TlsError> {
        let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
            return Err(TlsError::Invalid(
                "a TLS server needs a certificate and its key".into(),
            ));
        };
        let chain = files::certificates(cert)?;
        let key = files::private_key(key)?;
        let roots = Arc::new(files::roots(&files.ca)?);
        let config = |client_cert_required: bool| {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
            let verifier = if client_cert_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Rustls(format!("client verifier: {e}")))?;
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Rustls(e.to_string()))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| TlsError::Rustls(format!("certificate and key: {e}")))
        };
        let mut grpc = config(false)?;
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        let nbd = config(true)?;
        Ok(Configs {
            grpc: Arc::new(grpc),
            nbd: Arc::new(nbd),
        })
    }

    /// The files this was loaded from.
    pub fn files(&self) -> &TlsFiles {
        self.material.files()
    }

    /// The config new gRPC handshakes use (ALPN `h2`, client certificate optional).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.material.current().grpc.clone()
    }

    /// The config new NBD handshakes use: the same certificate, key and CA, no ALPN, and a
    /// client certificate chaining to the CA required at the handshake.
    pub fn nbd_config(&self) -> Arc<ServerConfig> {
        self.material.current().nbd.clone()
    }

    /// The server side of an NBD client's TLS session on `io` (after `NBD_OPT_STARTTLS` was
    /// acknowledged), with [`ServerTls::nbd_config`], within [`HANDSHAKE_TIMEOUT`]. NBD has no
    /// token: the certificate is the credential, so a client without one, with one from
    /// another CA or without the clientAuth usage (a node's), fails the handshake, and one
    /// whose certificate names neither `client.dagraid` nor `coordinator.dagraid` is refused
    /// right after it.
    pub async fn accept_nbd<IO>(&self, io: IO) -> Result<TlsStream<IO>, NbdTlsError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.nbd_config());
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io))
            .await
            .map_err(|_| NbdTlsError::Timeout)?
            .map_err(NbdTlsError::Handshake)?;
        let certs = stream.get_ref().1.peer_certificates();
        let allowed = [Role::Client, Role::Coordinator]
            .iter()
            .any(|role| peer_role(certs, role).is_ok());
        if allowed {
            Ok(stream)
        } else {
            Err(NbdTlsError::Role)
        }
    }

    /// Reads the files again. On an error the material in use stays (and the error says why).
    pub fn reload(&self) -> Result<(), TlsError> {
        self.material.reload(Self::build)
    }

    /// The TLS connections of `listener`, for tonic's `serve_with_incoming`. Each accepted TCP
    /// connection does its handshake in a task of its own (at most [`HANDSHAKE_TIMEOUT`]), so a
    /// slow or silent peer holds no one else up; one that fails (plaintext, a certificate from
    /// another CA, a timeout) is closed and logged. Accepting stops when the stream is dropped.
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept_loop(self.clone(), listener, tx));
        ReceiverStream::new(rx)
    }
}

async fn accept_loop(
    tls: Arc<ServerTls>,
    listener: TcpListener,
    tx: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: not fatal, but do not spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many TLS handshakes in progress: connection closed");
            continue;
        };
        let acceptor = TlsAcceptor::from(tls.config());
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(stream) = handshake(acceptor, tcp, peer).await {
                let _ = tx.send(Ok(stream)).await;
            }
        });
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed: connection closed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out: connection closed");
            None
        }
    }
}
