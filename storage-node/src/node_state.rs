//! The node state file: node identity and the highest accepted owner epoch.
//!
//! Updated atomically (write a temporary file, fsync it, rename over the old one, fsync the
//! directory), so after a crash the file holds either the old or the new state, never a mix.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// Current version of the node state format.
pub const NODE_STATE_VERSION: u32 = 1;
/// File name inside the data directory.
pub const NODE_STATE_FILE: &str = "node-state.json";

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
#[derive(Debug, Clone)]
pub struct NodeStateFile {
    dir: PathBuf,
    path: PathBuf,
}

impl NodeStateFile {
    /// The state file of `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.to_path_buf(),
            path: data_dir.join(NODE_STATE_FILE),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn bad(&self, reason: impl Into<String>) -> NodeError {
        NodeError::BadNodeState {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Loads the state, or `None` if the node never started in this directory.
    pub fn load(&self) -> Result<Option<NodeState>, NodeError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(self.bad(err.to_string())),
        };
        let state: NodeState =
            serde_json::from_str(&text).map_err(|err| self.bad(format!("corrupt: {err}")))?;
        if state.format_version != NODE_STATE_VERSION {
            return Err(self.bad(format!(
                "format version {} is not supported (this node reads {NODE_STATE_VERSION})",
                state.format_version
            )));
        }
        Ok(Some(state))
    }

    /// Durably replaces the state. Blocking.
    pub fn store(&self, state: &NodeState) -> Result<(), NodeError> {
        let tmp = self.dir.join(format!("{NODE_STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(state).map_err(|err| self.bad(err.to_string()))?;
        let io = |what: &str, err: std::io::Error| {
            NodeError::io(format!("{what} {}", self.path.display()), err)
        };
        let mut file = File::create(&tmp).map_err(|e| io("creating", e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("writing", e))?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(|e| io("renaming over", e))?;
        sync_dir(&self.dir).map_err(|e| io("syncing the directory of", e))
    }
}

/// fsyncs a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

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
