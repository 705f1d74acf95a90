//! TLS for the real-process tests: a cluster CA in a temporary directory, the flags that hand
//! its certificates to the processes, and channels that speak TLS to them.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use dagraid_client::TlsFiles;
use dagraid_tls::pki::ClusterPki;
use dagraid_tls::{ClientTls, Role};
use tonic::transport::Channel;

/// A cluster CA (and the certificates issued from it) in a temporary directory, removed when
/// dropped.
pub struct TestPki {
    _dir: tempfile::TempDir,
    pki: ClusterPki,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.pki.dir())
            .finish()
    }
}

impl TestPki {
    /// A new CA.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir().context("creating the PKI directory")?;
        let pki = ClusterPki::open_or_create(&dir.path().join("tls"))?;
        Ok(Self { _dir: dir, pki })
    }

    /// The CA underneath.
    pub fn pki(&self) -> &ClusterPki {
        &self.pki
    }

    /// The certificate, key and CA of `role` (issued on first use).
    pub fn files(&self, role: &Role) -> Result<TlsFiles> {
        Ok(self.pki.ensure(role)?)
    }

    /// The CA alone: what a client without a certificate has.
    pub fn ca_only(&self) -> TlsFiles {
        TlsFiles {
            ca: self.pki.ca(),
            cert: None,
            key: None,
        }
    }

    /// `--tls-ca CA --tls-cert CERT --tls-key KEY` of `role`.
    pub fn server_args(&self, role: &Role) -> Result<Vec<String>> {
        Ok(server_args(&self.files(role)?))
    }
}

/// `--tls-ca CA --tls-cert CERT --tls-key KEY` of `files`.
pub fn server_args(files: &TlsFiles) -> Vec<String> {
    let mut args = vec!["--tls-ca".to_owned(), files.ca.display().to_string()];
    if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
        args.extend([
            "--tls-cert".to_owned(),
            cert.display().to_string(),
            "--tls-key".to_owned(),
            key.display().to_string(),
        ]);
    }
    args
}

/// A channel to `addr` over TLS with `files`, accepting only a server certificate that names
/// `server`, with the data path's HTTP/2 settings.
pub async fn channel(addr: SocketAddr, files: &TlsFiles, server: &Role) -> Result<Channel> {
    let tls = ClientTls::load(files.clone())?;
    crate::node::endpoint(addr)?
        .connect_with_connector(tls.connector(&server.dns_name())?)
        .await
        .with_context(|| format!("TLS connection to {addr} ({})", server.dns_name()))
}

/// The DER of the first certificate in a PEM file's bytes.
pub fn first_certificate(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem)
        .expect("a PEM certificate")
        .to_vec()
}

/// The DER of the certificate the server at `addr` presents in a new handshake (verified
/// against `files`' CA and `server`'s name).
pub async fn served_certificate(
    addr: SocketAddr,
    files: &TlsFiles,
    server: &Role,
) -> Result<Vec<u8>> {
    let tls = ClientTls::load(files.clone())?;
    let name = rustls_pki_types::ServerName::try_from(server.dns_name())?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(tls.config())
        .connect(name, tcp)
        .await?;
    let (_, session) = stream.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no certificate presented")?;
    Ok(leaf.to_vec())
}
