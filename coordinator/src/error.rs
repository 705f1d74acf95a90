//! Errors of calls to storage nodes, and the one place where a `tonic::Status` becomes one. (The
//! volume API's own errors, which wrap these and those of the layers above, live higher up, in
//! [`crate::service_error`].)
//!
//! The node names every error it produces in the `dagraid-error-kind` metadata
//! ([`dagraid_proto::error_kind`]); the gRPC code alone is ambiguous (FAILED_PRECONDITION is a
//! stale epoch, a failed component or disabled fault injection). [`classify`] reads the kind
//! first and falls back to the code only for answers the node did not produce itself: transport
//! failures, tonic's own limits and timeouts, and injected faults (which answer with the code they
//! were given). [`status_to_io_error`] narrows that to the [`IoError`] the engine branches on.

use std::error::Error as _;
use std::fmt;

use dagraid_core::io::{IoError, IoErrorKind};
use dagraid_proto::error_kind;
use tonic::{Code, Status};

/// What went wrong with a call to a storage node, as precisely as the node's answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeErrorKind {
    /// No answer within the call's deadline; the operation may or may not have been applied.
    Timeout,
    /// The node could not be reached, or is shutting down.
    Unavailable,
    /// The call's epoch is stale: a newer owner exists, and this one must stop.
    Fenced,
    /// The node's cluster id is not the coordinator's: the configuration names the wrong node.
    WrongCluster,
    /// The component does not exist on the node.
    UnknownComponent,
    /// CreateComponent with an id already in use.
    ComponentExists,
    /// The component has failed for good on the node.
    ComponentFailed,
    /// The node has no room for a new component.
    NoSpace,
    /// Blocks failed their checksum. `None` when the answer did not list them (an injected
    /// DATA_LOSS), in which case every block of the request must be presumed lost.
    DataLoss {
        /// Absolute indices of the bad blocks, as the node listed them.
        bad_blocks: Option<Vec<u64>>,
    },
    /// The block range lies outside the component.
    OutOfRange,
    /// The request is malformed or too large.
    InvalidRequest,
    /// InjectFault on a node started without fault injection.
    FaultInjectionDisabled,
    /// The node answered something that breaks the protocol (a short read, a bad enum value, an
    /// unparsable bad-block list, ...).
    InvalidResponse,
    /// Anything else (a local I/O error on the node, an unexpected code).
    Other,
}

impl NodeErrorKind {
    /// Short stable name, used in logs and messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeErrorKind::Timeout => "timeout",
            NodeErrorKind::Unavailable => "unavailable",
            NodeErrorKind::Fenced => "fenced",
            NodeErrorKind::WrongCluster => "wrong cluster",
            NodeErrorKind::UnknownComponent => "unknown component",
            NodeErrorKind::ComponentExists => "component exists",
            NodeErrorKind::ComponentFailed => "component failed",
            NodeErrorKind::NoSpace => "no space",
            NodeErrorKind::DataLoss { .. } => "data loss",
            NodeErrorKind::OutOfRange => "out of range",
            NodeErrorKind::InvalidRequest => "invalid request",
            NodeErrorKind::FaultInjectionDisabled => "fault injection disabled",
            NodeErrorKind::InvalidResponse => "invalid response",
            NodeErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for NodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeErrorKind::DataLoss {
                bad_blocks: Some(blocks),
            } => write!(f, "data loss in blocks {blocks:?}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Errors of the node client layer: setting a client up, or one call to a node failing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeClientError {
    /// The node address cannot be turned into an endpoint.
    #[error("invalid storage node address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A client setting the client cannot work with.
    #[error("invalid node client configuration: {0}")]
    InvalidConfig(&'static str),
    /// A component description that cannot be addressed (zero-sized blocks, no blocks).
    #[error("component {component:?}: {reason}")]
    InvalidComponent {
        /// The component id.
        component: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The node speaks an older storage protocol than this coordinator needs
    /// ([`dagraid_proto::storage::MIN_PROTOCOL_VERSION`]); nodes older than protocol versions
    /// report 0.
    #[error(
        "storage node {node} speaks storage protocol version {protocol_version}, this \
         coordinator needs version {needed} or newer: upgrade the node (its software version: \
         {version:?})"
    )]
    IncompatibleNode {
        /// Address of the node.
        node: String,
        /// The version the node reported.
        protocol_version: u32,
        /// The version this coordinator needs.
        needed: u32,
        /// The node's software version, as it reported it.
        version: String,
    },
    /// One call to a node failed.
    #[error("{call} on storage node {node}: {kind}: {detail}")]
    Call {
        /// Address of the node.
        node: String,
        /// The RPC (`GetNodeInfo`, `CreateComponent`, ...).
        call: &'static str,
        /// What went wrong; callers branch on this.
        kind: NodeErrorKind,
        /// The node's message or the local reason, for logs.
        detail: String,
    },
}

impl NodeClientError {
    /// The kind of a failed call; `None` for set-up errors.
    pub fn kind(&self) -> Option<&NodeErrorKind> {
        match self {
            NodeClientError::Call { kind, .. } => Some(kind),
            _ => None,
        }
    }

    pub(crate) fn from_status(node: &str, call: &'static str, status: &Status) -> Self {
        NodeClientError::Call {
            node: node.to_owned(),
            call,
            kind: classify(status),
            detail: describe(status),
        }
    }

    pub(crate) fn invalid_response(node: &str, call: &'static str, detail: String) -> Self {
        NodeClientError::Call {
            node: node.to_owned(),
            call,
            kind: NodeErrorKind::InvalidResponse,
            detail,
        }
    }
}

/// The one reading of a status: the node's `dagraid-error-kind` first, then the code.
pub fn classify(status: &Status) -> NodeErrorKind {
    let kind = status
        .metadata()
        .get(error_kind::HEADER)
        .and_then(|v| v.to_str().ok());
    match kind {
        Some(error_kind::STALE_EPOCH) => NodeErrorKind::Fenced,
        Some(error_kind::WRONG_CLUSTER) => NodeErrorKind::WrongCluster,
        Some(error_kind::CHECKSUM_MISMATCH) => data_loss(status),
        Some(error_kind::COMPONENT_FAILED) => NodeErrorKind::ComponentFailed,
        Some(error_kind::UNKNOWN_COMPONENT) => NodeErrorKind::UnknownComponent,
        Some(error_kind::OUT_OF_RANGE) => NodeErrorKind::OutOfRange,
        Some(error_kind::INVALID_REQUEST | error_kind::TOO_LARGE) => NodeErrorKind::InvalidRequest,
        Some(error_kind::COMPONENT_EXISTS) => NodeErrorKind::ComponentExists,
        Some(error_kind::NO_SPACE) => NodeErrorKind::NoSpace,
        Some(error_kind::FAULT_INJECTION_DISABLED) => NodeErrorKind::FaultInjectionDisabled,
        Some(error_kind::SHUTTING_DOWN) => NodeErrorKind::Unavailable,
        Some(error_kind::IO) => NodeErrorKind::Other,
        // Injected faults answer with the code they were given; a kind this client does not know
        // yet is read like no kind at all.
        _ => by_code(status),
    }
}

/// The code alone: answers the node did not name (transport, tonic, injected faults).
fn by_code(status: &Status) -> NodeErrorKind {
    match status.code() {
        // tonic answers an expired `grpc-timeout` with CANCELLED ("Timeout expired"), and a
        // stream reset mid-call is CANCELLED too: either way the outcome is unknown.
        Code::DeadlineExceeded | Code::Cancelled => NodeErrorKind::Timeout,
        Code::Unavailable => NodeErrorKind::Unavailable,
        // Overload (HTTP/2 ENHANCE_YOUR_CALM, an injected RESOURCE_EXHAUSTED): the node is there
        // but not serving this call. The node's own size limit is named `too-large`.
        Code::ResourceExhausted => NodeErrorKind::Unavailable,
        // A status built locally from a transport error carries that error as its source; one
        // that came over the wire never does.
        Code::Unknown if status.source().is_some() => NodeErrorKind::Unavailable,
        Code::DataLoss => data_loss(status),
        Code::NotFound => NodeErrorKind::UnknownComponent,
        Code::AlreadyExists => NodeErrorKind::ComponentExists,
        Code::InvalidArgument => NodeErrorKind::InvalidRequest,
        // The node names its range errors `out-of-range`; an unnamed OUT_OF_RANGE is tonic's
        // message-size limit (on either side), i.e. a request that is too large.
        Code::OutOfRange => NodeErrorKind::InvalidRequest,
        Code::Ok => NodeErrorKind::InvalidResponse,
        Code::Unknown
        | Code::Internal
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::Unimplemented => NodeErrorKind::Other,
    }
}

fn data_loss(status: &Status) -> NodeErrorKind {
    let Some(value) = status.metadata().get(error_kind::BAD_BLOCKS_HEADER) else {
        return NodeErrorKind::DataLoss { bad_blocks: None };
    };
    let parsed: Option<Vec<u64>> = value.to_str().ok().and_then(|text| {
        text.split(',')
            .map(|b| b.trim().parse::<u64>().ok())
            .collect()
    });
    match parsed {
        Some(blocks) if !blocks.is_empty() => NodeErrorKind::DataLoss {
            bad_blocks: Some(blocks),
        },
        // A list we cannot read must not be guessed at.
        _ => NodeErrorKind::InvalidResponse,
    }
}

fn describe(status: &Status) -> String {
    let kind = status
        .metadata()
        .get(error_kind::HEADER)
        .and_then(|v| v.to_str().ok());
    match kind {
        Some(kind) => format!("{:?} [{kind}]: {}", status.code(), status.message()),
        None => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// Which component call a status answered; only a read can name lost blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// `ReadBlocks`.
    Read,
    /// `WriteBlocks`.
    Write,
    /// `Flush`.
    Flush,
    /// `Fence` of one component.
    Fence,
    /// `WriteLog`.
    WriteLog,
    /// `ReadLog`.
    ReadLog,
}

impl IoOp {
    fn as_str(self) -> &'static str {
        match self {
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Flush => "flush",
            IoOp::Fence => "fence",
            IoOp::WriteLog => "log write",
            IoOp::ReadLog => "log read",
        }
    }
}

/// Maps the status of a component call to the [`IoError`] the engine and the access pipeline
/// branch on. `start_block` and `block_count` are the request's range (0 and 0 for a flush).
///
/// Bad-block lists are checked against the request: a list naming blocks outside it is an answer
/// we cannot trust, reported as [`IoErrorKind::Other`] rather than passed on.
pub fn status_to_io_error(
    status: &Status,
    op: IoOp,
    component: &str,
    start_block: u64,
    block_count: u64,
) -> IoError {
    let mut detail = format!("{}: {}", op.as_str(), describe(status));
    let kind = match classify(status) {
        NodeErrorKind::DataLoss { bad_blocks } if op == IoOp::Read => {
            let range = start_block..start_block.saturating_add(block_count);
            match bad_blocks {
                None => IoErrorKind::DataLoss {
                    bad_blocks: range.collect(),
                },
                Some(blocks) if blocks.iter().all(|b| range.contains(b)) => {
                    IoErrorKind::DataLoss { bad_blocks: blocks }
                }
                Some(blocks) => {
                    detail.push_str(&format!(
                        "; bad blocks {blocks:?} lie outside the request {range:?}"
                    ));
                    IoErrorKind::Other
                }
            }
        }
        other => other.into(),
    };
    IoError::new(kind, component, start_block, block_count, detail)
}

impl From<NodeErrorKind> for IoErrorKind {
    /// The component-I/O reading of a node error kind, for callers outside a read (a data loss
    /// without a read range to check it against is [`IoErrorKind::Other`]).
    fn from(kind: NodeErrorKind) -> Self {
        use IoErrorKind as K;
        match kind {
            NodeErrorKind::Timeout => K::Timeout,
            NodeErrorKind::Unavailable => K::Unavailable,
            NodeErrorKind::Fenced => K::Fenced,
            NodeErrorKind::WrongCluster => K::WrongCluster,
            NodeErrorKind::UnknownComponent | NodeErrorKind::ComponentFailed => K::ComponentFailed,
            NodeErrorKind::OutOfRange => K::OutOfRange,
            NodeErrorKind::InvalidRequest => K::InvalidRequest,
            NodeErrorKind::DataLoss { .. }
            | NodeErrorKind::ComponentExists
            | NodeErrorKind::NoSpace
            | NodeErrorKind::FaultInjectionDisabled
            | NodeErrorKind::InvalidResponse
            | NodeErrorKind::Other => K::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn status(code: Code, kind: Option<&'static str>, bad_blocks: Option<&'static str>) -> Status {
        let mut s = Status::new(code, "msg");
        if let Some(kind) = kind {
            s.metadata_mut()
                .insert(error_kind::HEADER, MetadataValue::from_static(kind));
        }
        if let Some(blocks) = bad_blocks {
            s.metadata_mut().insert(
                error_kind::BAD_BLOCKS_HEADER,
                MetadataValue::from_static(blocks),
            );
        }
        s
    }

    fn io_kind(s: &Status, op: IoOp) -> IoErrorKind {
        status_to_io_error(s, op, "c", 10, 4).kind
    }

    /// Every kind the node names, with the code the node sends it with.
    #[test]
    fn node_kinds_map_by_kind_not_by_code() {
        use IoErrorKind as K;
        let cases: &[(Code, &'static str, IoErrorKind)] = &[
            (Code::FailedPrecondition, error_kind::STALE_EPOCH, K::Fenced),
            (
                Code::FailedPrecondition,
                error_kind::WRONG_CLUSTER,
                K::WrongCluster,
            ),
            (
                Code::FailedPrecondition,
                error_kind::COMPONENT_FAILED,
                K::ComponentFailed,
            ),
            (
                Code::NotFound,
                error_kind::UNKNOWN_COMPONENT,
                K::ComponentFailed,
            ),
            (Code::OutOfRange, error_kind::OUT_OF_RANGE, K::OutOfRange),
            (
                Code::InvalidArgument,
                error_kind::INVALID_REQUEST,
                K::InvalidRequest,
            ),
            (
                Code::ResourceExhausted,
                error_kind::TOO_LARGE,
                K::InvalidRequest,
            ),
            (Code::Internal, error_kind::IO, K::Other),
            (Code::Unavailable, error_kind::SHUTTING_DOWN, K::Unavailable),
            (Code::AlreadyExists, error_kind::COMPONENT_EXISTS, K::Other),
            (Code::ResourceExhausted, error_kind::NO_SPACE, K::Other),
        ];
        for (code, kind, want) in cases {
            let s = status(*code, Some(kind), None);
            for op in [IoOp::Read, IoOp::Write, IoOp::Flush] {
                assert_eq!(&io_kind(&s, op), want, "{kind} ({code:?}) on {op:?}");
            }
        }
    }

    #[test]
    fn the_kind_wins_over_a_misleading_code() {
        // Same code, three meanings: only the kind tells them apart.
        let s = status(
            Code::FailedPrecondition,
            Some(error_kind::STALE_EPOCH),
            None,
        );
        assert_eq!(classify(&s), NodeErrorKind::Fenced);
        let s = status(
            Code::FailedPrecondition,
            Some(error_kind::COMPONENT_FAILED),
            None,
        );
        assert_eq!(classify(&s), NodeErrorKind::ComponentFailed);
        let s = status(
            Code::FailedPrecondition,
            Some(error_kind::FAULT_INJECTION_DISABLED),
            None,
        );
        assert_eq!(classify(&s), NodeErrorKind::FaultInjectionDisabled);
        assert_eq!(
            classify(&status(Code::FailedPrecondition, None, None)),
            NodeErrorKind::Other
        );
    }

    /// Answers without a kind (transport, tonic, injected faults) map by code.
    #[test]
    fn unnamed_and_injected_answers_map_by_code() {
        use IoErrorKind as K;
        let cases = [
            (Code::DeadlineExceeded, K::Timeout),
            (Code::Cancelled, K::Timeout),
            (Code::Unavailable, K::Unavailable),
            (Code::ResourceExhausted, K::Unavailable),
            (Code::NotFound, K::ComponentFailed),
            (Code::InvalidArgument, K::InvalidRequest),
            (Code::OutOfRange, K::InvalidRequest),
            (Code::Unknown, K::Other),
            (Code::Internal, K::Other),
            (Code::FailedPrecondition, K::Other),
            (Code::Aborted, K::Other),
            (Code::PermissionDenied, K::Other),
            (Code::Unauthenticated, K::Other),
            (Code::Unimplemented, K::Other),
            (Code::AlreadyExists, K::Other),
            (Code::Ok, K::Other),
        ];
        for (code, want) in cases {
            for kind in [
                None,
                Some(error_kind::INJECTED),
                Some("a-kind-from-the-future"),
            ] {
                let s = status(code, kind, None);
                assert_eq!(
                    io_kind(&s, IoOp::Write),
                    want,
                    "{code:?} with kind {kind:?}"
                );
            }
        }
    }

    #[test]
    fn a_local_transport_failure_is_unavailable() {
        let err = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let s = Status::from_error(Box::new(err));
        assert_eq!(s.code(), Code::Unknown);
        assert_eq!(io_kind(&s, IoOp::Read), IoErrorKind::Unavailable);
    }

    #[test]
    fn checksum_mismatch_names_exactly_the_listed_blocks() {
        let s = status(
            Code::DataLoss,
            Some(error_kind::CHECKSUM_MISMATCH),
            Some("11,13"),
        );
        let e = status_to_io_error(&s, IoOp::Read, "c", 10, 4);
        assert_eq!(
            e.kind,
            IoErrorKind::DataLoss {
                bad_blocks: vec![11, 13]
            }
        );
        assert_eq!(
            (e.component.as_str(), e.start_block, e.block_count),
            ("c", 10, 4)
        );
        assert!(e.detail.contains("msg"), "{}", e.detail);
    }

    #[test]
    fn data_loss_that_cannot_be_trusted_is_not_passed_on() {
        // Blocks outside the request.
        let s = status(
            Code::DataLoss,
            Some(error_kind::CHECKSUM_MISMATCH),
            Some("9"),
        );
        assert_eq!(io_kind(&s, IoOp::Read), IoErrorKind::Other);
        let s = status(
            Code::DataLoss,
            Some(error_kind::CHECKSUM_MISMATCH),
            Some("14"),
        );
        assert_eq!(io_kind(&s, IoOp::Read), IoErrorKind::Other);
        // An unparsable or empty list.
        for bad in ["11,x", "", "-1", "11,,12"] {
            let s = status(
                Code::DataLoss,
                Some(error_kind::CHECKSUM_MISMATCH),
                Some(bad),
            );
            assert_eq!(classify(&s), NodeErrorKind::InvalidResponse, "{bad:?}");
            assert_eq!(io_kind(&s, IoOp::Read), IoErrorKind::Other, "{bad:?}");
        }
        // A write or flush cannot lose blocks of its own.
        let s = status(
            Code::DataLoss,
            Some(error_kind::CHECKSUM_MISMATCH),
            Some("11"),
        );
        assert_eq!(io_kind(&s, IoOp::Write), IoErrorKind::Other);
        assert_eq!(io_kind(&s, IoOp::Flush), IoErrorKind::Other);
    }

    #[test]
    fn an_unlisted_data_loss_presumes_the_whole_request_lost() {
        let s = status(Code::DataLoss, Some(error_kind::INJECTED), None);
        assert_eq!(
            io_kind(&s, IoOp::Read),
            IoErrorKind::DataLoss {
                bad_blocks: vec![10, 11, 12, 13]
            }
        );
        assert_eq!(classify(&s), NodeErrorKind::DataLoss { bad_blocks: None });
    }

    #[test]
    fn call_errors_expose_their_kind_and_name_the_call() {
        let s = status(
            Code::AlreadyExists,
            Some(error_kind::COMPONENT_EXISTS),
            None,
        );
        let e = NodeClientError::from_status("127.0.0.1:1", "CreateComponent", &s);
        assert_eq!(e.kind(), Some(&NodeErrorKind::ComponentExists));
        let text = e.to_string();
        assert!(
            text.starts_with("CreateComponent on storage node 127.0.0.1:1: component exists"),
            "{text}"
        );
        assert_eq!(NodeClientError::InvalidConfig("x").kind(), None);
    }
}
