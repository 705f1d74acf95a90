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
use crate::{TlsError, TlsFiles, files, provider};

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
#[derive(Debug)]
pub struct ServerTls {
    material: Material<ServerConfig>,
}

impl ServerTls {
    /// Loads the certificate, key and CA (all three needed).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let config = Self::build(&files)?;
        Ok(Arc::new(Self {
            material: Material::new(files, config),
        }))
    }

    fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
        let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
            return Err(TlsError::Invalid(
                "a TLS server needs a certificate and its key".into(),
            ));
        };
        let chain = files::certificates(cert)?;
        let key = files::private_key(key)?;
        let roots = Arc::new(files::roots(&files.ca)?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Rustls(format!("client verifier: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Rustls(format!("certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// The files this was loaded from.
    pub fn files(&self) -> &TlsFiles {
        self.material.files()
    }

    /// The config new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.material.current()
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
