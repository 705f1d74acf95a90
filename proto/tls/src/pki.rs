//! The cluster CA and the certificates of its parts, as `dagraid up` makes them on its first
//! start (and `dagraid certs` for a deployment of one's own).
//!
//! A directory holds the CA (`ca.pem`, `ca-key.pem`) and one certificate and key per role:
//! `coordinator.pem`, `node-ID.pem`, `client.pem`, each with its `-key.pem`. Keys and the
//! directory are readable by their owner only (0600, 0700). Keys are ECDSA P-256; certificates
//! are valid for five years, the CA for twenty.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::{Role, TlsError, TlsFiles, check_node_id};

/// The CA's subject: fixed, because certificates are issued later from the stored key under
/// this name (the issued certificate's issuer must equal the CA's subject).
const CA_NAME: &str = "dagraid cluster CA";

/// A directory holding a cluster CA and the certificates issued from it.
#[derive(Debug, Clone)]
pub struct ClusterPki {
    dir: PathBuf,
}

impl ClusterPki {
    /// Opens the CA in `dir`, making the directory and a new CA when there is none.
    pub fn open_or_create(dir: &Path) -> Result<Self, TlsError> {
        private_dir(dir)?;
        let pki = Self {
            dir: dir.to_owned(),
        };
        let (cert, key) = (pki.ca(), pki.ca_key());
        match (cert.exists(), key.exists()) {
            (true, true) => {}
            (false, false) => {
                let key_pair = KeyPair::generate().map_err(generate)?;
                let ca = ca_params().self_signed(&key_pair).map_err(generate)?;
                write_private(&key, key_pair.serialize_pem().as_bytes())?;
                write_private(&cert, ca.pem().as_bytes())?;
            }
            _ => {
                return Err(TlsError::Invalid(format!(
                    "{}: holds only half a CA (ca.pem and ca-key.pem go together): remove the other or restore it",
                    dir.display()
                )));
            }
        }
        Ok(pki)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (the bundle every part verifies its peers against).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }

    /// Where the certificate and key of `role` are (issued or not).
    pub fn files(&self, role: &Role) -> TlsFiles {
        let stem = match role {
            Role::Coordinator => "coordinator".to_owned(),
            Role::Node(id) => format!("node-{id}"),
            Role::Client => "client".to_owned(),
        };
        TlsFiles {
            ca: self.ca(),
            cert: Some(self.dir.join(format!("{stem}.pem"))),
            key: Some(self.dir.join(format!("{stem}-key.pem"))),
        }
    }

    /// The files of `role`, issuing its certificate when it has none yet.
    pub fn ensure(&self, role: &Role) -> Result<TlsFiles, TlsError> {
        self.ensure_naming(role, &[])
    }

    /// [`ClusterPki::ensure`], the certificate also naming the IP addresses `ips`
    /// ([`ClusterPki::issue_naming`]): one that exists is kept if it names them all, and
    /// issued again otherwise (e.g. a certificate from before the addresses were asked for).
    pub fn ensure_naming(
        &self,
        role: &Role,
        ips: &[std::net::IpAddr],
    ) -> Result<TlsFiles, TlsError> {
        let files = self.files(role);
        let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
            unreachable!("files() names both");
        };
        if !(cert.exists() && key.exists() && names_all(cert, ips)) {
            self.issue_naming(role, ips, cert, key)?;
        }
        Ok(files)
    }

    /// Issues a new certificate and key for `role` into `cert` and `key` (replacing them:
    /// a process picks the new ones up when it reloads).
    pub fn issue(&self, role: &Role, cert: &Path, key: &Path) -> Result<(), TlsError> {
        self.issue_naming(role, &[], cert, key)
    }

    /// [`ClusterPki::issue`], the certificate also naming the IP addresses `ips`: for clients
    /// that check the address they connect to against the server's certificate and cannot be
    /// told another name (libnbd 1.14's `nbds://` URIs).
    pub fn issue_naming(
        &self,
        role: &Role,
        ips: &[std::net::IpAddr],
        cert: &Path,
        key: &Path,
    ) -> Result<(), TlsError> {
        if let Role::Node(id) = role {
            check_node_id(id)?;
        }
        let ca_key_pem =
            std::fs::read_to_string(self.ca_key()).map_err(|source| TlsError::File {
                path: self.ca_key(),
                source,
            })?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(generate)?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let key_pair = KeyPair::generate().map_err(generate)?;
        let mut params = leaf_params(role)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let issued = params.signed_by(&key_pair, &issuer).map_err(generate)?;
        // The key first: a certificate never sits beside a key that is not its own for long.
        write_private(key, key_pair.serialize_pem().as_bytes())?;
        write_private(cert, issued.pem().as_bytes())?;
        Ok(())
    }
}

/// Whether the certificate in `cert` (PEM) is valid for every address in `ips`; an unreadable
/// one is not.
fn names_all(cert: &Path, ips: &[std::net::IpAddr]) -> bool {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, IpAddr, ServerName};
    let Ok(der) = CertificateDer::from_pem_file(cert) else {
        return false;
    };
    let Ok(parsed) = webpki::EndEntityCert::try_from(&der) else {
        return false;
    };
    ips.iter().all(|ip| {
        parsed
            .verify_is_valid_for_subject_name(&ServerName::IpAddress(IpAddr::from(*ip)))
            .is_ok()
    })
}

fn generate(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(20 * 365);
    params
}

fn leaf_params(role: &Role) -> Result<CertificateParams, TlsError> {
    let dns = role.dns_name();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, dns.clone());
    params.distinguished_name = name;
    params.subject_alt_names = vec![SanType::DnsName(dns.try_into().map_err(generate)?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // A node only serves; a client only calls; the coordinator does both.
    params.extended_key_usages = match role {
        Role::Coordinator => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Node(_) => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(5 * 365);
    Ok(params)
}

/// Makes `dir` and its missing parents, 0700 where made.
fn private_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::File {
            path: dir.to_owned(),
            source,
        })
}

/// Copies the CA, certificate and key of `files` into `dir` (made, 0700, when missing) under
/// `names` (CA, certificate, key), each written like every file here: 0600, replaced
/// atomically. For a process that expects its files under names of its own (a container's
/// `/tls`, libnbd's `tls-certificates=DIR`). Returns the paths written.
pub fn export(files: &TlsFiles, dir: &Path, names: [&str; 3]) -> Result<Vec<PathBuf>, TlsError> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Err(TlsError::Invalid(format!(
            "exporting to {}: no certificate and key",
            dir.display()
        )));
    };
    private_dir(dir)?;
    let mut written = Vec::new();
    for (from, name) in [(&files.ca, names[0]), (cert, names[1]), (key, names[2])] {
        let bytes = std::fs::read(from).map_err(|source| TlsError::File {
            path: from.clone(),
            source,
        })?;
        let to = dir.join(name);
        write_private(&to, &bytes)?;
        written.push(to);
    }
    Ok(written)
}

/// Writes `bytes` to `path` readable by its owner only, through a temporary file renamed over
/// it (a reader sees the old file or the new one, never half of one).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let err = |source| TlsError::File {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("pem.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_cluster_pki_is_made_once_with_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("tls");
        let pki = ClusterPki::open_or_create(&pki_dir).unwrap();
        let ca = std::fs::read(pki.ca()).unwrap();
        let node = pki.ensure(&Role::Node("node1".into())).unwrap();
        let cert = std::fs::read(node.cert.as_ref().unwrap()).unwrap();
        // Opening again keeps the CA and the issued certificate.
        let again = ClusterPki::open_or_create(&pki_dir).unwrap();
        assert_eq!(std::fs::read(again.ca()).unwrap(), ca);
        again.ensure(&Role::Node("node1".into())).unwrap();
        assert_eq!(std::fs::read(node.cert.as_ref().unwrap()).unwrap(), cert);
        for entry in std::fs::read_dir(&pki_dir).unwrap() {
            let meta = entry.unwrap().metadata().unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        }
        let meta = std::fs::metadata(&pki_dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert!(pki.ensure(&Role::Node("bad.id".into())).is_err());
    }

    #[test]
    fn ensure_naming_issues_again_a_certificate_that_lacks_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ClusterPki::open_or_create(dir.path()).unwrap();
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let files = pki.ensure(&Role::Coordinator).unwrap();
        let cert = files.cert.clone().unwrap();
        assert!(names_all(&cert, &[]));
        assert!(!names_all(&cert, &[lo]));
        let before = std::fs::read(&cert).unwrap();
        pki.ensure_naming(&Role::Coordinator, &[lo]).unwrap();
        let after = std::fs::read(&cert).unwrap();
        assert_ne!(before, after, "issued again");
        assert!(names_all(&cert, &[lo]));
        // Named already: kept as it is.
        pki.ensure_naming(&Role::Coordinator, &[lo]).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), after);
        pki.ensure(&Role::Coordinator).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), after);
    }

    #[test]
    fn half_a_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ClusterPki::open_or_create(dir.path()).unwrap();
        std::fs::remove_file(pki.ca_key()).unwrap();
        let e = ClusterPki::open_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("half a CA"), "{e}");
    }
}
