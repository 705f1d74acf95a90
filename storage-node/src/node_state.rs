//! The node state file: node identity and the highest accepted owner epoch.
//!
//! Updated atomically (write a temporary file, fsync it, rename over the old one, fsync the
//! directory), so after a crash the file holds either the old or the new state, never a mix.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::{Directory, LocalDirectory};
use crate::error::NodeError;

/// Current version of the node state format.
pub const NODE_STATE_VERSION: u32 = 1;
/// File name inside the data directory.
pub const NODE_STATE_FILE: &str = "node-state.json";
/// The temporary file a new state is written to before it is renamed over the old one.
const NODE_STATE_TMP: &str = "node-state.json.tmp";

/// What the node persists about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Format version of this record.
    pub format_version: u32,
    /// The node's id, fixed at its first start.
    pub node_id: String,
    /// The cluster the node belongs to, fixed at its first start.
    pub cluster_id: String,
    /// Highest owner epoch accepted.
    pub epoch: u64,
}

/// Reads and atomically replaces the node state file of a data directory.
#[derive(Clone)]
pub struct NodeStateFile {
    dir: Arc<dyn Directory>,
    path: PathBuf,
}

impl std::fmt::Debug for NodeStateFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStateFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl NodeStateFile {
    /// The state file of `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self::in_directory(
            Arc::new(LocalDirectory::new(data_dir)),
            data_dir.join(NODE_STATE_FILE),
        )
    }

    /// The state file in `dir` (an in-memory data directory, say), named `path` in errors.
    pub fn in_directory(dir: Arc<dyn Directory>, path: PathBuf) -> Self {
        Self { dir, path }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether its calls may block (see [`Directory::blocks`]).
    pub fn blocks(&self) -> bool {
        self.dir.blocks()
    }

    fn bad(&self, reason: impl Into<String>) -> NodeError {
        NodeError::BadNodeState {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Loads the state, or `None` if the node never started in this directory.
    pub fn load(&self) -> Result<Option<NodeState>, NodeError> {
        let bytes = match self.dir.read_file(NODE_STATE_FILE) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(err) => return Err(self.bad(err.to_string())),
        };
        let state: NodeState =
            serde_json::from_slice(&bytes).map_err(|err| self.bad(format!("corrupt: {err}")))?;
        if state.format_version != NODE_STATE_VERSION {
            return Err(self.bad(format!(
                "format version {} is not supported (this node reads {NODE_STATE_VERSION})",
                state.format_version
            )));
        }
        Ok(Some(state))
    }

    /// Durably replaces the state: written to a temporary file, synced, renamed over the old
    /// one, directory synced. Blocking.
    pub fn store(&self, state: &NodeState) -> Result<(), NodeError> {
        let text = serde_json::to_string_pretty(state).map_err(|err| self.bad(err.to_string()))?;
        let io = |what: &str, err: std::io::Error| {
            NodeError::io(format!("{what} {}", self.path.display()), err)
        };
        self.dir
            .write_file(NODE_STATE_TMP, text.as_bytes())
            .and_then(|()| self.dir.sync_file(NODE_STATE_TMP))
            .map_err(|e| io("writing", e))?;
        self.dir
            .rename(NODE_STATE_TMP, NODE_STATE_FILE)
            .map_err(|e| io("renaming over", e))?;
        self.dir
            .sync_dir()
            .map_err(|e| io("syncing the directory of", e))
    }
}

/// fsyncs a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn state_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let file = NodeStateFile::new(dir.path());
        assert_eq!(file.load().unwrap(), None);
        let mut state = NodeState {
            format_version: NODE_STATE_VERSION,
            node_id: "n1".into(),
            cluster_id: "c".into(),
            epoch: 3,
        };
        file.store(&state).unwrap();
        state.epoch = 9;
        file.store(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state));
        assert!(!dir.path().join("node-state.json.tmp").exists());
    }

    #[test]
    fn corrupt_or_future_state_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = NodeStateFile::new(dir.path());
        fs::write(file.path(), "{not json").unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        fs::write(
            file.path(),
            r#"{"format_version":99,"node_id":"n","cluster_id":"c","epoch":0}"#,
        )
        .unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("version 99"), "{err}");
    }
}
