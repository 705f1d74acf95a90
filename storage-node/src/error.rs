//! The node's one error type and its single mapping to `tonic::Status`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use dagraid_proto::error_kind;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Everything that can go wrong in the storage node, from start-up to a single block read.
///
/// Variants carry the context a caller needs (component, range, limits); [`NodeError::to_status`]
/// turns them into a gRPC status with a precise `dagraid-error-kind`.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A component id that cannot be used (syntax).
    #[error("component id {id:?} is invalid: {reason}")]
    InvalidComponentId {
        /// The id as received.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A malformed request field (length, alignment, missing field, bad enum ...).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A block range outside the component.
    #[error(
        "component {component:?}: blocks {start}..{start}+{count} lie outside its {block_count} blocks"
    )]
    OutOfRange {
        /// The component.
        component: String,
        /// First block asked for.
        start: u64,
        /// Number of blocks asked for.
        count: u64,
        /// Blocks in the component.
        block_count: u64,
    },
    /// A log-area range outside the component's log area.
    #[error(
        "component {component:?}: log bytes {offset}..{offset}+{len} lie outside its log area of {log_bytes} bytes"
    )]
    LogOutOfRange {
        /// The component.
        component: String,
        /// First byte asked for, in the log area.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// Bytes of the log area.
        log_bytes: u64,
    },
    /// No component with this id on this node.
    #[error("component {0:?} does not exist on this node")]
    UnknownComponent(String),
    /// CreateComponent with an id already in use.
    #[error("component {0:?} already exists on this node")]
    ComponentExists(String),
    /// A payload (or the answer to a read) larger than the configured limit.
    #[error("{what} of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The call names another cluster.
    #[error("cluster id {got:?} does not match this node's cluster {expected:?}")]
    WrongCluster {
        /// Cluster id in the call.
        got: String,
        /// This node's cluster id.
        expected: String,
    },
    /// The call's epoch is older than the node's.
    #[error("epoch {got} is stale: this node has accepted epoch {current}")]
    StaleEpoch {
        /// Epoch in the call.
        got: u64,
        /// Highest epoch accepted by the node.
        current: u64,
    },
    /// The call's epoch is older than its component's fence epoch (a component fence raised it
    /// above the node's epoch).
    #[error(
        "epoch {got} is stale: component {component:?} was fenced at epoch {current} on this node"
    )]
    StaleComponentEpoch {
        /// The component.
        component: String,
        /// Epoch in the call.
        got: u64,
        /// The component's fence epoch.
        current: u64,
    },
    /// The component failed for good (a sync or write failed).
    #[error("component {component:?} has failed: {reason}")]
    ComponentFailed {
        /// The component.
        component: String,
        /// Why it failed.
        reason: String,
    },
    /// Blocks whose checksum does not match their data.
    #[error("component {component:?}: checksum mismatch in blocks {}", list_blocks(.blocks))]
    ChecksumMismatch {
        /// The component.
        component: String,
        /// Indices of the bad blocks, ascending.
        blocks: Vec<u64>,
    },
    /// The file system has no room for a new component.
    #[error("no space left to create component {component:?}: {source}")]
    NoSpace {
        /// The component.
        component: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A local I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (names the component or file).
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Answer produced by an injected fault.
    #[error("injected fault on component {component:?}: {code:?}")]
    Injected {
        /// The component.
        component: String,
        /// The gRPC code to answer.
        code: Code,
    },
    /// InjectFault on a node started without `--fault-injection`.
    #[error("fault injection is disabled on this node (start it with --fault-injection)")]
    FaultInjectionDisabled,
    /// The node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The data directory cannot be used.
    #[error("data directory {}: {reason}", path.display())]
    BadDataDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A component file that cannot be opened as a component.
    #[error("component file {}: {reason}", path.display())]
    BadComponentFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The node state file cannot be used.
    #[error("node state file {}: {reason}", path.display())]
    BadNodeState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The listening socket cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The gRPC server stopped with an error.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

fn list_blocks(blocks: &[u64]) -> String {
    blocks
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl NodeError {
    /// Shorthand for an I/O error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// The gRPC code and `dagraid-error-kind` of this error.
    pub fn code_and_kind(&self) -> (Code, &'static str) {
        match self {
            Self::InvalidComponentId { .. } | Self::InvalidArgument(_) => {
                (Code::InvalidArgument, error_kind::INVALID_REQUEST)
            }
            Self::OutOfRange { .. } | Self::LogOutOfRange { .. } => {
                (Code::OutOfRange, error_kind::OUT_OF_RANGE)
            }
            Self::UnknownComponent(_) => (Code::NotFound, error_kind::UNKNOWN_COMPONENT),
            Self::ComponentExists(_) => (Code::AlreadyExists, error_kind::COMPONENT_EXISTS),
            Self::TooLarge { .. } => (Code::ResourceExhausted, error_kind::TOO_LARGE),
            Self::NoSpace { .. } => (Code::ResourceExhausted, error_kind::NO_SPACE),
            Self::WrongCluster { .. } => (Code::FailedPrecondition, error_kind::WRONG_CLUSTER),
            Self::StaleEpoch { .. } | Self::StaleComponentEpoch { .. } => {
                (Code::FailedPrecondition, error_kind::STALE_EPOCH)
            }
            Self::ComponentFailed { .. } => {
                (Code::FailedPrecondition, error_kind::COMPONENT_FAILED)
            }
            Self::ChecksumMismatch { .. } => (Code::DataLoss, error_kind::CHECKSUM_MISMATCH),
            Self::Injected { code, .. } => (*code, error_kind::INJECTED),
            Self::FaultInjectionDisabled => (
                Code::FailedPrecondition,
                error_kind::FAULT_INJECTION_DISABLED,
            ),
            Self::ShuttingDown => (Code::Unavailable, error_kind::SHUTTING_DOWN),
            Self::Io { .. }
            | Self::BadDataDir { .. }
            | Self::BadComponentFile { .. }
            | Self::BadNodeState { .. }
            | Self::Bind { .. }
            | Self::Config(_)
            | Self::Serve(_) => (Code::Internal, error_kind::IO),
        }
    }

    /// The one place where node errors become gRPC statuses: code, message and metadata.
    pub fn to_status(&self) -> Status {
        let (code, kind) = self.code_and_kind();
        let mut status = Status::new(code, self.to_string());
        status
            .metadata_mut()
            .insert(error_kind::HEADER, MetadataValue::from_static(kind));
        if let Self::ChecksumMismatch { blocks, .. } = self
            && let Ok(value) = list_blocks(blocks).parse()
        {
            status
                .metadata_mut()
                .insert(error_kind::BAD_BLOCKS_HEADER, value);
        }
        status
    }
}

impl From<NodeError> for Status {
    fn from(err: NodeError) -> Self {
        err.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: &Status) -> &str {
        status
            .metadata()
            .get(error_kind::HEADER)
            .unwrap()
            .to_str()
            .unwrap()
    }

    #[test]
    fn checksum_mismatch_names_the_blocks() {
        let status = NodeError::ChecksumMismatch {
            component: "c".into(),
            blocks: vec![3, 17],
        }
        .to_status();
        assert_eq!(status.code(), Code::DataLoss);
        assert_eq!(kind(&status), error_kind::CHECKSUM_MISMATCH);
        assert_eq!(
            status
                .metadata()
                .get(error_kind::BAD_BLOCKS_HEADER)
                .unwrap(),
            "3,17"
        );
        assert!(
            status.message().contains("blocks 3,17"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn codes_follow_the_contract() {
        let cases = [
            (
                NodeError::InvalidArgument("x".into()),
                Code::InvalidArgument,
            ),
            (
                NodeError::OutOfRange {
                    component: "c".into(),
                    start: 9,
                    count: 2,
                    block_count: 10,
                },
                Code::OutOfRange,
            ),
            (NodeError::UnknownComponent("c".into()), Code::NotFound),
            (
                NodeError::TooLarge {
                    what: "write",
                    bytes: 2,
                    limit: 1,
                },
                Code::ResourceExhausted,
            ),
            (
                NodeError::StaleEpoch { got: 1, current: 2 },
                Code::FailedPrecondition,
            ),
            (
                NodeError::StaleComponentEpoch {
                    component: "c".into(),
                    got: 1,
                    current: 2,
                },
                Code::FailedPrecondition,
            ),
            (
                NodeError::WrongCluster {
                    got: "a".into(),
                    expected: "b".into(),
                },
                Code::FailedPrecondition,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.to_status().code(), code, "{err}");
        }
    }
}
