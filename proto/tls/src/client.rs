//! The client side: a reloadable CA and optional client certificate, and a connector for
//! tonic's `Endpoint::connect_with_connector` that verifies the server's name.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::material::Material;
use crate::{TlsError, TlsFiles, files, provider};

/// A client's TLS material: the CA the server's certificate must chain to, and optionally its
/// own certificate and key (the coordinator's, to call storage nodes; a client's, to call the
/// volume API without a token).
///
/// [`ClientTls::reload`] reads the files again: connections made after it use the new
/// material, connections already up continue.
#[derive(Debug)]
pub struct ClientTls {
    material: Material<ClientConfig>,
}

impl ClientTls {
    /// Loads the CA and, when given, the certificate and key.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let config = Self::build(&files)?;
        Ok(Arc::new(Self {
            material: Material::new(files, config),
        }))
    }

    fn build(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
        let roots = files::roots(&files.ca)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(files::certificates(cert)?, files::private_key(key)?)
                .map_err(|e| TlsError::Rustls(format!("certificate and key: {e}")))?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Invalid(
                    "a client certificate needs its key (and a key its certificate)".into(),
                ));
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// The files this was loaded from.
    pub fn files(&self) -> &TlsFiles {
        self.material.files()
    }

    /// The config new connections use.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.material.current()
    }

    /// Reads the files again. On an error the material in use stays (and the error says why).
    pub fn reload(&self) -> Result<(), TlsError> {
        self.material.reload(Self::build)
    }

    /// A connector that opens TCP to the URI's host and port and does a TLS handshake that
    /// accepts only a certificate naming `server_name` (e.g. `node3.node.dagraid`): whatever
    /// answers at the address, only that peer is talked to. Give tonic an `http://` URI with
    /// it: the TLS is this connector's.
    pub fn connector(self: &Arc<Self>, server_name: &str) -> Result<TlsConnector, TlsError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| TlsError::Invalid(format!("server name {server_name:?}: {e}")))?;
        Ok(TlsConnector {
            tls: self.clone(),
            name,
        })
    }
}

/// See [`ClientTls::connector`].
#[derive(Clone, Debug)]
pub struct TlsConnector {
    tls: Arc<ClientTls>,
    name: ServerName<'static>,
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, std::io::Error>> + Send>>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.tls.config());
        let name = self.name.clone();
        Box::pin(async move {
            let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{uri}: expected host:port"),
                ));
            };
            let tcp = TcpStream::connect(format!("{host}:{port}")).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
