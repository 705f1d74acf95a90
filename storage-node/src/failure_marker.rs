//! The failure marker: a small file beside a component file (`<id>.failed`, the reason inside)
//! that records that the component failed for good, so that it never reopens as healthy.
//!
//! Recording it is durable before it returns: the file is written, fsynced, and its directory
//! fsynced (a new file's entry survives a power cut only once the directory is synced). A marker
//! that exists but cannot be read counts as a failure.

use std::io;
use std::sync::Arc;

use crate::backend::{Directory, LocalDirectory};

/// The reason given for a marker that exists but holds no reason.
const NO_REASON: &str = "failed before the last restart";

/// The file name of component `id`'s marker.
pub fn file_name(id: &str) -> String {
    format!("{id}.failed")
}

/// Where one component's failure is recorded.
#[derive(Clone)]
pub struct FailureMarker {
    dir: Arc<dyn Directory>,
    name: String,
}

impl FailureMarker {
    /// The marker `name` in `dir`.
    pub fn new(dir: Arc<dyn Directory>, name: impl Into<String>) -> Self {
        Self {
            dir,
            name: name.into(),
        }
    }

    /// The marker of component `id` in the local directory `dir` (`<id>.failed`).
    pub fn local(dir: &std::path::Path, id: &str) -> Self {
        Self::new(Arc::new(LocalDirectory::new(dir)), file_name(id))
    }

    /// The recorded reason, if the component failed; a marker that cannot be read counts as a
    /// failure (its reason says so). Blocking.
    pub fn load(&self) -> Option<String> {
        let bytes = match self.dir.read_file(&self.name) {
            Ok(bytes) => bytes?,
            Err(err) => return Some(format!("its failure marker cannot be read: {err}")),
        };
        let reason = String::from_utf8_lossy(&bytes).into_owned();
        Some(if reason.is_empty() {
            NO_REASON.to_owned()
        } else {
            reason
        })
    }

    /// Whether recording or loading may block (see [`Directory::blocks`]).
    pub fn blocks(&self) -> bool {
        self.dir.blocks()
    }

    /// Records `reason` durably: write, fsync the file, fsync the directory. Blocking.
    pub fn record(&self, reason: &str) -> io::Result<()> {
        self.dir.write_file(&self.name, reason.as_bytes())?;
        self.dir.sync_file(&self.name)?;
        self.dir.sync_dir()
    }
}
