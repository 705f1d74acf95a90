//! Component I/O: the only way the core reaches storage.
//!
//! A component is a fixed-size array of blocks on some storage node. The engine's disk nodes, and
//! later rebuild and parity rewrite, talk to it only through [`ComponentIo`], so the same DAGs run
//! over the remote gRPC client (coordinator crate), the in-memory and fault-injecting components of
//! [`crate::testing`], or anything else.
//!
//! Errors are typed ([`IoErrorKind`]) because recovery branches on them: a data-loss answer names
//! blocks to rebuild from redundancy, a fenced answer means this coordinator lost ownership, a
//! timeout is a failure like any other.

use std::fmt;

use bytes::Bytes;
use futures::future::BoxFuture;

/// Alignment of log-area offsets and lengths ([`ComponentIo::write_log`]).
pub const LOG_ALIGN: u64 = 4096;

/// Block-addressed access to one component.
///
/// Object safe: the core holds components as `Arc<dyn ComponentIo>`. Semantics follow the storage
/// node's API (`proto/dagraid/storage/v1/storage.proto`):
/// - `read` returns exactly `block_count * block_size` bytes or an error, never a short read;
/// - `write` takes a whole number of blocks and is durable when it returns `Ok`;
/// - a block whose checksum does not match is reported as [`IoErrorKind::DataLoss`] naming it;
/// - a call under an epoch older than the node's is refused with [`IoErrorKind::Fenced`].
///
/// **Deadlines measure the storage, never a queue.** A component whose calls may wait locally
/// before they leave for storage (a remote component behind its node's limit of calls in
/// flight) bounds every call itself, with a deadline that starts when the call is sent, answers
/// [`IoErrorKind::Timeout`] at its expiry, and says so through
/// [`ComponentIo::own_deadline`]; the engine then puts no deadline of its own around the call
/// (one would count the wait in the queue against the storage and fail a healthy column for
/// the coordinator's own load). A component that does not queue (the default) is bounded by
/// the engine's deadline around the whole call.
pub trait ComponentIo: Send + Sync + fmt::Debug {
    /// Stable identifier used in errors and traces (for a remote component, its component id).
    fn id(&self) -> &str;

    /// Bytes per block; every transfer is a whole number of blocks.
    fn block_size(&self) -> u32;

    /// Number of blocks in the component; DAG validation refuses targets beyond it.
    fn block_count(&self) -> u64;

    /// Reads `block_count` blocks starting at `start_block`.
    fn read(&self, start_block: u64, block_count: u32) -> BoxFuture<'_, Result<Bytes, IoError>>;

    /// Writes `data` (a whole number of blocks) starting at `start_block`.
    fn write(&self, start_block: u64, data: Bytes) -> BoxFuture<'_, Result<(), IoError>>;

    /// Makes every acknowledged or pending write of the component durable.
    fn flush(&self) -> BoxFuture<'_, Result<(), IoError>>;

    /// Fences the component after a write to it ended with an unknown outcome (a timeout, a
    /// lost connection): once this returns `Ok`, no write issued to the component before the
    /// call can still land (storage finished it or will refuse it), so the write can be redone
    /// without a late copy of the old one overwriting the redo. An answer also shows that the
    /// storage is alive: slow, not gone. The default is for components that never apply a write
    /// after answering it (in memory): there is nothing to fence.
    fn fence(&self) -> BoxFuture<'_, Result<(), IoError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Bytes of the component's log area, where the partial-parity log of writes made while the
    /// volume is degraded is kept ([`crate::ppl`]); 0 (the default): the component has none, and
    /// a degraded write whose stripe would log on it fails rather than open a write hole.
    fn log_bytes(&self) -> u64 {
        0
    }

    /// Writes `data` at byte `offset` of the log area (both multiples of [`LOG_ALIGN`]);
    /// answers once the bytes are durable, fenced like a block write.
    fn write_log(&self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<(), IoError>> {
        let _ = data;
        Box::pin(std::future::ready(Err(IoError::new(
            IoErrorKind::InvalidRequest,
            self.id(),
            offset,
            0,
            "this component has no log area",
        ))))
    }

    /// Reads `len` bytes at byte `offset` of the log area (both multiples of [`LOG_ALIGN`]).
    fn read_log(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Bytes, IoError>> {
        let _ = len;
        Box::pin(std::future::ready(Err(IoError::new(
            IoErrorKind::InvalidRequest,
            self.id(),
            offset,
            0,
            "this component has no log area",
        ))))
    }

    /// The deadline this component puts on each call itself, counted from the moment the call
    /// leaves for storage (after any wait in a local queue, which no deadline counts); expiry
    /// answers [`IoErrorKind::Timeout`]. `None` (the default): the component sets none and the
    /// engine bounds the whole call with its own node deadline.
    fn own_deadline(&self) -> Option<std::time::Duration> {
        None
    }
}

/// What went wrong with a component call; callers branch on this, never on [`IoError::detail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoErrorKind {
    /// No answer within the deadline. The operation may or may not have been applied.
    Timeout,
    /// The component could not be reached (connection refused or lost, node shutting down).
    Unavailable,
    /// The listed blocks failed their checksum (or were otherwise lost); the other blocks of the
    /// request were fine. Recover those blocks from redundancy; the component is not failed.
    DataLoss {
        /// Absolute block indices within the component.
        bad_blocks: Vec<u64>,
    },
    /// The call's epoch is not the owner's any more: this coordinator must stop writing.
    /// Storage's `stale-epoch` answer maps here.
    Fenced,
    /// The node belongs to another cluster (storage's `wrong-cluster`): a configuration error,
    /// never a component fault.
    WrongCluster,
    /// The request was malformed (length not a whole number of blocks, too large, ...). A bug on
    /// the caller's side, not a component fault.
    InvalidRequest,
    /// The component has failed for good, or does not exist on its node.
    ComponentFailed,
    /// The block range lies outside the component.
    OutOfRange,
    /// Anything else (a local I/O error on the node, an answer of the wrong size, ...).
    Other,
}

impl IoErrorKind {
    /// Whether this error says the component itself is unreliable, so that the access pipeline
    /// should mark it failed (while the layout tolerates it). Data loss names blocks, fencing and
    /// invalid requests are about the caller: none of those fail the component.
    pub fn implicates_component(&self) -> bool {
        matches!(
            self,
            IoErrorKind::Timeout
                | IoErrorKind::Unavailable
                | IoErrorKind::ComponentFailed
                | IoErrorKind::Other
        )
    }

    /// Whether a write that failed this way may still have been applied, or may be applied
    /// later: no answer in time, or the connection was lost on the way. Such a write is never
    /// retried blindly: its component is fenced first ([`ComponentIo::fence`]).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, IoErrorKind::Timeout | IoErrorKind::Unavailable)
    }

    /// Short stable name, used in traces and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            IoErrorKind::Timeout => "timeout",
            IoErrorKind::Unavailable => "unavailable",
            IoErrorKind::DataLoss { .. } => "data_loss",
            IoErrorKind::Fenced => "fenced",
            IoErrorKind::WrongCluster => "wrong_cluster",
            IoErrorKind::InvalidRequest => "invalid_request",
            IoErrorKind::ComponentFailed => "component_failed",
            IoErrorKind::OutOfRange => "out_of_range",
            IoErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for IoErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoErrorKind::DataLoss { bad_blocks } => write!(f, "data loss in blocks {bad_blocks:?}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// A failed component call, with enough context to say which data is affected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{kind} on component {component} (blocks {start_block}..{}): {detail}",
    start_block + block_count
)]
pub struct IoError {
    /// What went wrong.
    pub kind: IoErrorKind,
    /// [`ComponentIo::id`] of the component.
    pub component: String,
    /// First block of the failed request (0 for a flush).
    pub start_block: u64,
    /// Blocks in the failed request (0 for a flush).
    pub block_count: u64,
    /// Human-readable detail for logs; not for matching.
    pub detail: String,
}

impl IoError {
    /// Builds an error for a request on `component`.
    pub fn new(
        kind: IoErrorKind,
        component: impl Into<String>,
        start_block: u64,
        block_count: u64,
        detail: impl Into<String>,
    ) -> Self {
        IoError {
            kind,
            component: component.into(),
            start_block,
            block_count,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_kind_component_and_range() {
        let e = IoError::new(
            IoErrorKind::DataLoss {
                bad_blocks: vec![5, 7],
            },
            "n1/c0",
            4,
            4,
            "crc mismatch",
        );
        assert_eq!(
            e.to_string(),
            "data loss in blocks [5, 7] on component n1/c0 (blocks 4..8): crc mismatch"
        );
    }

    #[test]
    fn only_component_faults_implicate_the_component() {
        assert!(IoErrorKind::Timeout.implicates_component());
        assert!(IoErrorKind::Unavailable.implicates_component());
        assert!(IoErrorKind::ComponentFailed.implicates_component());
        assert!(!IoErrorKind::Fenced.implicates_component());
        assert!(!IoErrorKind::InvalidRequest.implicates_component());
        assert!(!IoErrorKind::OutOfRange.implicates_component());
        assert!(!IoErrorKind::DataLoss { bad_blocks: vec![] }.implicates_component());
    }
}
