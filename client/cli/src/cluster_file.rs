//! `<data-dir>/cluster.toml`: where `dagraid up` tells the other verbs how to reach the local
//! cluster.
//!
//! ```toml
//! version = 1
//! coordinator = "https://127.0.0.1:7070"
//! token = "3f9c..."
//! tls-ca = "/home/me/.dagraid/tls/ca.pem"
//! tls-cert = "/home/me/.dagraid/tls/client.pem"
//! tls-key = "/home/me/.dagraid/tls/client-key.pem"
//! ```
//!
//! The `tls-*` keys (the cluster CA and the client certificate `dagraid up` made) are there
//! when the coordinator serves TLS; a tool that does not know them ignores them and is refused
//! the `https://` URL with a clear error.
//!
//! The file holds the bearer token, so it is written with mode 0600, through a temporary file
//! renamed over the old one (a reader never sees half a file).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the file inside the data directory.
pub const FILE_NAME: &str = "cluster.toml";

/// The format version this tool writes and the newest it reads.
pub const VERSION: u32 = 1;

/// Contents of the cluster file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Format version; files without it are version 1.
    #[serde(default = "default_version")]
    pub version: u32,
    /// The coordinator's URL (`http://127.0.0.1:7070`).
    pub coordinator: String,
    /// The bearer token the coordinator was started with.
    pub token: String,
    /// The cluster CA (`https://` coordinators).
    #[serde(default, rename = "tls-ca", skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// The client certificate.
    #[serde(default, rename = "tls-cert", skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key.
    #[serde(default, rename = "tls-key", skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

fn default_version() -> u32 {
    VERSION
}

/// A cluster file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ClusterFileError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a cluster file this tool understands.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl ClusterFile {
    /// A version-1 file.
    pub fn new(coordinator: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            version: VERSION,
            coordinator: coordinator.into(),
            token: token.into(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }

    /// With the TLS material a client of this cluster uses.
    pub fn with_tls(mut self, files: &dagraid_client::TlsFiles) -> Self {
        self.tls_ca = Some(files.ca.clone());
        self.tls_cert = files.cert.clone();
        self.tls_key = files.key.clone();
        self
    }

    /// The TLS material of the file, if it names any.
    pub fn tls(&self) -> Option<dagraid_client::TlsFiles> {
        self.tls_ca.as_ref().map(|ca| dagraid_client::TlsFiles {
            ca: ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        })
    }

    /// `<data_dir>/cluster.toml`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE_NAME)
    }

    /// Parses the TOML text of a cluster file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ClusterFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        if file.version == 0 || file.version > VERSION {
            return Err(format!(
                "version {} is not supported (this dagraid reads version {VERSION})",
                file.version
            ));
        }
        if file.coordinator.is_empty() {
            return Err("coordinator is empty".into());
        }
        Ok(file)
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a cluster file always serialises")
    }

    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>, ClusterFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ClusterFileError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(&text)
            .map(Some)
            .map_err(|reason| ClusterFileError::Invalid {
                path: path.to_owned(),
                reason,
            })
    }

    /// Writes `path` (mode 0600) through a temporary file in the same directory, synced and
    /// renamed over the old file.
    pub fn save(&self, path: &Path) -> Result<(), ClusterFileError> {
        let io = |source| ClusterFileError::Io {
            path: path.to_owned(),
            source,
        };
        let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(self.to_toml().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = ClusterFile::path_in(dir.path());
        assert!(ClusterFile::load(&path).unwrap().is_none());
        let file = ClusterFile::new("http://127.0.0.1:7070", "abc123");
        file.save(&path).unwrap();
        assert_eq!(ClusterFile::load(&path).unwrap(), Some(file.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Overwritten in place, still 0600, no temporary left behind.
        let newer = ClusterFile::new("http://127.0.0.1:7071", "abc123");
        newer.save(&path).unwrap();
        assert_eq!(ClusterFile::load(&path).unwrap(), Some(newer));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn text_format() {
        let text = ClusterFile::new("http://h:1", "t").to_toml();
        assert!(text.contains("coordinator = \"http://h:1\""), "{text}");
        assert!(text.contains("token = \"t\""), "{text}");
        // The keys other tools rely on are enough; the version defaults to 1.
        let file = ClusterFile::parse("coordinator = \"http://h:1\"\ntoken = \"t\"\n").unwrap();
        assert_eq!(file, ClusterFile::new("http://h:1", "t"));
        let tls = dagraid_client::TlsFiles {
            ca: "/d/tls/ca.pem".into(),
            cert: Some("/d/tls/client.pem".into()),
            key: Some("/d/tls/client-key.pem".into()),
        };
        let with = ClusterFile::new("https://h:1", "t").with_tls(&tls);
        let text = with.to_toml();
        assert!(text.contains("tls-ca = \"/d/tls/ca.pem\""), "{text}");
        assert_eq!(ClusterFile::parse(&text).unwrap().tls(), Some(tls));
        // Keys this version does not know are ignored.
        let file = ClusterFile::parse("coordinator = \"http://h:1\"\ntoken = \"t\"\nnodes = 5\n");
        assert!(file.is_ok());
    }

    #[test]
    fn bad_files_are_refused() {
        for text in [
            "",
            "coordinator = \"http://h:1\"",
            "token = \"t\"",
            "coordinator = \"\"\ntoken = \"t\"",
            "version = 2\ncoordinator = \"http://h:1\"\ntoken = \"t\"",
            "not toml",
        ] {
            assert!(ClusterFile::parse(text).is_err(), "{text:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = ClusterFile::path_in(dir.path());
        std::fs::write(&path, "garbage").unwrap();
        let err = ClusterFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("cluster.toml"), "{err}");
    }
}
