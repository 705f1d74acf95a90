//! Errors of the volume API, and the one place where they become a `tonic::Status`.
//!
//! Every [`ServiceError`] maps to one gRPC code and one `dagraid-error-kind` value
//! ([`dagraid_proto::error_kind`]); the message is the error's `Display`, naming the volume and
//! the numbers that were wrong. `docs/COORDINATOR.md` tabulates the mapping.
//!
//! Why an access that more columns failed than the layout tolerates is UNAVAILABLE, not
//! FAILED_PRECONDITION: the access pipeline never marks a column failed beyond the tolerance, so
//! the columns that broke this access are still in use; nothing was written, the bytes on the
//! components are intact, and the same call succeeds once the storage nodes answer again. That
//! is what UNAVAILABLE tells a client (retry later). Only a write that failed *after* its commit
//! may have landed on some columns only: that one is DATA_LOSS (`torn-write`), and so are later
//! reads of its stripes (`unreadable`).

use dagraid_core::access::AccessError;
use dagraid_core::array::ArrayError;
use dagraid_core::layout::LayoutError;
use dagraid_proto::error_kind;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::{NodeClientError, NodeErrorKind};
use crate::labels::LabelWriteError;
use crate::store::StoreError;

/// Why a volume API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The call carried no bearer token, or the wrong one.
    #[error("missing or wrong bearer token (send `authorization: Bearer <token>`)")]
    Unauthenticated,
    /// The API serves TLS without a token: a call needs a client certificate naming the client
    /// role.
    #[error(
        "this call needs a TLS client certificate naming client.dagraid (the cluster's client certificate; docs/SECURITY.md)"
    )]
    ClientCertificateRequired,
    /// No volume of that name.
    #[error("no volume named {name:?}")]
    UnknownVolume {
        /// The name asked for.
        name: String,
    },
    /// CreateVolume with a name in use.
    #[error("a volume named {name:?} already exists")]
    VolumeExists {
        /// The name.
        name: String,
    },
    /// The volume name breaks the naming rule.
    #[error("invalid volume name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The volume's level, size, stripe unit, block size or column count is not acceptable.
    #[error("bad volume geometry: {detail}")]
    BadGeometry {
        /// What is wrong, with the numbers.
        detail: String,
    },
    /// The storage nodes named for a volume cannot be used as given (unknown, repeated, or not
    /// as many as the columns).
    #[error("bad storage node list: {detail}")]
    BadNodes {
        /// What is wrong.
        detail: String,
    },
    /// Fewer usable storage nodes than the volume's columns.
    #[error("not enough storage nodes: {detail}")]
    NotEnoughNodes {
        /// How many are needed, known and reachable.
        detail: String,
    },
    /// A zero-length Read or Write.
    #[error("volume {volume:?}: zero-length {op} at offset {offset} (at least 1 byte)")]
    ZeroLength {
        /// The volume.
        volume: String,
        /// `read` or `write`.
        op: &'static str,
        /// The offset asked for.
        offset: u64,
    },
    /// A Read or Write larger than `max_io_bytes`.
    #[error(
        "volume {volume:?}: {op} of {len} bytes exceeds the coordinator's limit of {max} bytes per call (max_io_bytes in GetClusterInfo; split the range)"
    )]
    TooLarge {
        /// The volume.
        volume: String,
        /// `read` or `write`.
        op: &'static str,
        /// Bytes asked for.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An access or a state change of a volume failed in the RAID core.
    #[error("volume {volume:?}: {source}")]
    Access {
        /// The volume.
        volume: String,
        /// What the core said.
        #[source]
        source: AccessError,
    },
    /// A storage node refused or failed a component creation.
    #[error("volume {volume:?}: creating component {component} on storage node {node}: {source}")]
    Provision {
        /// The volume.
        volume: String,
        /// The node's id.
        node: String,
        /// The component's id.
        component: String,
        /// What the node (or the connection) said.
        #[source]
        source: Box<NodeClientError>,
    },
    /// A component label of a new volume could not be written.
    #[error(
        "volume {volume:?}: writing the label of component {component} on storage node {node}: {source}"
    )]
    Label {
        /// The volume.
        volume: String,
        /// The node's id.
        node: String,
        /// The component's id.
        component: String,
        /// What went wrong.
        #[source]
        source: LabelWriteError,
    },
    /// The volume is not assembled, so it serves no I/O.
    #[error("volume {volume:?} is not assembled: {problem}")]
    NotAssembled {
        /// The volume.
        volume: String,
        /// Why (what forcing would risk, or why it cannot be assembled at all).
        problem: String,
    },
    /// No hot spare of that id in the pool.
    #[error("no spare {id:?} in the pool (`dagraid spare list` shows the pool)")]
    UnknownSpare {
        /// The id asked for.
        id: String,
    },
    /// The hot spare is in use by a volume's column, so it can be neither removed nor taken.
    #[error(
        "spare {id:?} is in use by column {column} of volume {volume:?}; it returns to the pool only once that column no longer needs it"
    )]
    SpareInUse {
        /// The spare.
        id: String,
        /// The volume using it.
        volume: String,
        /// The column it stands in for.
        column: u32,
    },
    /// An AddSpare request that cannot be done as asked (no size, a bad block size, an unknown
    /// node).
    #[error("bad spare request: {detail}")]
    BadSpare {
        /// What is wrong, with the numbers.
        detail: String,
    },
    /// The storage node of a spare cannot be used now (its last health check failed).
    #[error("storage node {node} cannot hold a spare now: {detail}")]
    SpareNodeUnavailable {
        /// The node's id.
        node: String,
        /// What its last health check said.
        detail: String,
    },
    /// A storage node refused or failed a call on a spare's component (creating it, writing its
    /// spare label, deleting it).
    #[error("spare {spare} on storage node {node}: {operation}: {source}")]
    SpareNode {
        /// `creating the component`, `writing the spare label`, `deleting the component`.
        operation: &'static str,
        /// The node's id.
        node: String,
        /// The spare's id (its component id).
        spare: String,
        /// What the node (or the connection) said.
        #[source]
        source: Box<NodeClientError>,
    },
    /// A request whose fields contradict each other or miss a required one.
    #[error("bad request: {detail}")]
    InvalidRequest {
        /// What is wrong.
        detail: String,
    },
    /// A parity check or rewrite cannot start: RAID 0 (nothing to check), a parity job of the
    /// volume already runs, the volume resyncs, or a column is being reconstructed.
    #[error("volume {volume:?}: parity job refused: {detail}")]
    ParityRefused {
        /// The volume.
        volume: String,
        /// Why, and what to do.
        detail: String,
    },
    /// The coordinator's store failed.
    #[error("coordinator store: {0}")]
    Store(#[from] StoreError),
    /// A bug or an unexpected condition.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The gRPC code and the `dagraid-error-kind` of this error.
    pub fn code_and_kind(&self) -> (Code, &'static str) {
        match self {
            ServiceError::Unauthenticated | ServiceError::ClientCertificateRequired => {
                (Code::Unauthenticated, error_kind::UNAUTHENTICATED)
            }
            ServiceError::InvalidRequest { .. } => {
                (Code::InvalidArgument, error_kind::INVALID_REQUEST)
            }
            ServiceError::UnknownVolume { .. } => (Code::NotFound, error_kind::UNKNOWN_VOLUME),
            ServiceError::VolumeExists { .. } => (Code::AlreadyExists, error_kind::VOLUME_EXISTS),
            ServiceError::InvalidName { .. } => {
                (Code::InvalidArgument, error_kind::INVALID_REQUEST)
            }
            ServiceError::BadGeometry { .. } => (Code::InvalidArgument, error_kind::BAD_GEOMETRY),
            ServiceError::BadNodes { .. } => (Code::InvalidArgument, error_kind::INVALID_REQUEST),
            ServiceError::NotEnoughNodes { .. } => {
                (Code::FailedPrecondition, error_kind::NOT_ENOUGH_NODES)
            }
            ServiceError::ZeroLength { .. } => (Code::InvalidArgument, error_kind::INVALID_REQUEST),
            ServiceError::TooLarge { .. } => (Code::InvalidArgument, error_kind::TOO_LARGE),
            ServiceError::Access { source, .. } => access_code_and_kind(source),
            ServiceError::Provision { source, .. } => provision_code_and_kind(source),
            ServiceError::Label { source, .. } => match source {
                LabelWriteError::Fenced(_) => (Code::FailedPrecondition, error_kind::FENCED),
                LabelWriteError::Component(_) => (Code::Unavailable, error_kind::NODE_UNAVAILABLE),
                LabelWriteError::Refused(_) => (Code::Internal, error_kind::INTERNAL),
            },
            ServiceError::NotAssembled { .. } => {
                (Code::FailedPrecondition, error_kind::NOT_ASSEMBLED)
            }
            ServiceError::UnknownSpare { .. } => (Code::NotFound, error_kind::UNKNOWN_SPARE),
            ServiceError::SpareInUse { .. } => (Code::FailedPrecondition, error_kind::SPARE_IN_USE),
            ServiceError::BadSpare { .. } => (Code::InvalidArgument, error_kind::INVALID_REQUEST),
            ServiceError::SpareNodeUnavailable { .. } => {
                (Code::Unavailable, error_kind::NODE_UNAVAILABLE)
            }
            ServiceError::SpareNode { source, .. } => provision_code_and_kind(source),
            ServiceError::ParityRefused { .. } => {
                (Code::FailedPrecondition, error_kind::PARITY_REFUSED)
            }
            ServiceError::Store(StoreError::Closed) => {
                (Code::Unavailable, error_kind::SHUTTING_DOWN)
            }
            ServiceError::Store(_) | ServiceError::Internal(_) => {
                (Code::Internal, error_kind::INTERNAL)
            }
        }
    }

    /// The status a client receives: code, message and `dagraid-error-kind`.
    pub fn to_status(&self) -> Status {
        let (code, kind) = self.code_and_kind();
        let mut status = Status::new(code, self.to_string());
        status
            .metadata_mut()
            .insert(error_kind::HEADER, MetadataValue::from_static(kind));
        status
    }
}

fn access_code_and_kind(e: &AccessError) -> (Code, &'static str) {
    match e {
        AccessError::Layout(LayoutError::OutOfRange { .. }) => {
            (Code::OutOfRange, error_kind::OUT_OF_RANGE)
        }
        AccessError::Layout(_) => (Code::InvalidArgument, error_kind::INVALID_REQUEST),
        AccessError::Unrecoverable { torn: false, .. } | AccessError::RetriesExhausted { .. } => {
            (Code::Unavailable, error_kind::UNRECOVERABLE)
        }
        AccessError::Unrecoverable { torn: true, .. } => (Code::DataLoss, error_kind::TORN_WRITE),
        AccessError::Unreadable { .. } => (Code::DataLoss, error_kind::UNREADABLE),
        AccessError::Fenced { .. } => (Code::FailedPrecondition, error_kind::FENCED),
        AccessError::WrongCluster { .. } => (Code::FailedPrecondition, error_kind::WRONG_CLUSTER),
        AccessError::VolumeFailed { .. } => (Code::FailedPrecondition, error_kind::VOLUME_FAILED),
        AccessError::StorageRefused { .. } => (Code::Internal, error_kind::STORAGE_REFUSED),
        AccessError::NodeFailed { .. } => (Code::Internal, error_kind::DAG_NODE_FAILED),
        AccessError::StateNotRecorded { .. } => (Code::Unavailable, error_kind::STATE_NOT_RECORDED),
        AccessError::Overloaded(_) => (Code::ResourceExhausted, error_kind::OVERLOADED),
        AccessError::Array(ArrayError::WouldExceedTolerance { .. }) => {
            (Code::FailedPrecondition, error_kind::WOULD_EXCEED_TOLERANCE)
        }
        AccessError::Array(ArrayError::NoSuchColumn { .. }) => {
            (Code::InvalidArgument, error_kind::INVALID_REQUEST)
        }
        AccessError::Array(ArrayError::NotAllowed { .. }) => {
            (Code::FailedPrecondition, error_kind::NOT_ALLOWED)
        }
        AccessError::Rebuild { .. } => (Code::FailedPrecondition, error_kind::REBUILD_REFUSED),
        AccessError::Array(
            ArrayError::ColumnCountMismatch { .. } | ArrayError::SpareColumn { .. },
        )
        | AccessError::Internal(_) => (Code::Internal, error_kind::INTERNAL),
    }
}

fn provision_code_and_kind(e: &NodeClientError) -> (Code, &'static str) {
    match e.kind() {
        Some(NodeErrorKind::Fenced) => (Code::FailedPrecondition, error_kind::FENCED),
        Some(NodeErrorKind::WrongCluster) => (Code::FailedPrecondition, error_kind::WRONG_CLUSTER),
        Some(NodeErrorKind::NoSpace) => (Code::ResourceExhausted, error_kind::NO_SPACE),
        Some(NodeErrorKind::Timeout | NodeErrorKind::Unavailable | NodeErrorKind::Other) => {
            (Code::Unavailable, error_kind::NODE_UNAVAILABLE)
        }
        Some(NodeErrorKind::ComponentExists) => (Code::AlreadyExists, error_kind::COMPONENT_EXISTS),
        // The node refused the component's shape.
        Some(NodeErrorKind::InvalidRequest | NodeErrorKind::OutOfRange) => {
            (Code::InvalidArgument, error_kind::BAD_GEOMETRY)
        }
        Some(
            NodeErrorKind::UnknownComponent
            | NodeErrorKind::ComponentFailed
            | NodeErrorKind::DataLoss { .. }
            | NodeErrorKind::FaultInjectionDisabled
            | NodeErrorKind::InvalidResponse,
        )
        | None => (Code::Internal, error_kind::INTERNAL),
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use dagraid_core::layout::RaidLevel;

    use super::*;

    fn kind(status: &Status) -> &str {
        status
            .metadata()
            .get(error_kind::HEADER)
            .expect("every error carries a kind")
            .to_str()
            .unwrap()
    }

    fn access(source: AccessError) -> ServiceError {
        ServiceError::Access {
            volume: "v".into(),
            source,
        }
    }

    fn provision(kind: NodeErrorKind) -> ServiceError {
        ServiceError::Provision {
            volume: "v".into(),
            node: "n1".into(),
            component: "v1-c0".into(),
            source: Box::new(NodeClientError::Call {
                node: "127.0.0.1:1".into(),
                call: "CreateComponent",
                kind,
                detail: "d".into(),
            }),
        }
    }

    fn spare_node(kind: NodeErrorKind) -> ServiceError {
        ServiceError::SpareNode {
            operation: "creating the component",
            node: "n6".into(),
            spare: "spare-01".into(),
            source: Box::new(NodeClientError::Call {
                node: "127.0.0.1:1".into(),
                call: "CreateComponent",
                kind,
                detail: "d".into(),
            }),
        }
    }

    fn label(source: LabelWriteError) -> ServiceError {
        ServiceError::Label {
            volume: "v".into(),
            node: "n1".into(),
            component: "v1-c0".into(),
            source,
        }
    }

    #[test]
    fn every_error_maps_to_one_code_and_kind() {
        let unrecoverable = |torn| AccessError::Unrecoverable {
            offset: 0,
            len: 10,
            lost: vec![1, 2],
            detail: "d".into(),
            torn,
        };
        let cases: Vec<(ServiceError, Code, &str)> = vec![
            (
                ServiceError::Unauthenticated,
                Code::Unauthenticated,
                "unauthenticated",
            ),
            (
                ServiceError::UnknownVolume { name: "x".into() },
                Code::NotFound,
                "unknown-volume",
            ),
            (
                ServiceError::VolumeExists { name: "x".into() },
                Code::AlreadyExists,
                "volume-exists",
            ),
            (
                ServiceError::InvalidName {
                    name: "a b".into(),
                    reason: "r",
                },
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                ServiceError::BadGeometry { detail: "d".into() },
                Code::InvalidArgument,
                "bad-geometry",
            ),
            (
                ServiceError::BadNodes { detail: "d".into() },
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                ServiceError::NotEnoughNodes { detail: "d".into() },
                Code::FailedPrecondition,
                "not-enough-nodes",
            ),
            (
                ServiceError::ZeroLength {
                    volume: "v".into(),
                    op: "read",
                    offset: 3,
                },
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                ServiceError::TooLarge {
                    volume: "v".into(),
                    op: "write",
                    len: 5,
                    max: 4,
                },
                Code::InvalidArgument,
                "too-large",
            ),
            (
                access(AccessError::Layout(LayoutError::OutOfRange {
                    offset: 1,
                    len: 2,
                    capacity: 2,
                })),
                Code::OutOfRange,
                "out-of-range",
            ),
            (
                access(AccessError::Layout(LayoutError::EmptyAccess { offset: 0 })),
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                access(unrecoverable(false)),
                Code::Unavailable,
                "unrecoverable",
            ),
            (access(unrecoverable(true)), Code::DataLoss, "torn-write"),
            (
                access(AccessError::Unreadable { offset: 0, len: 1 }),
                Code::DataLoss,
                "unreadable",
            ),
            (
                access(AccessError::Fenced { detail: "d".into() }),
                Code::FailedPrecondition,
                "fenced",
            ),
            (
                access(AccessError::StateNotRecorded { detail: "d".into() }),
                Code::Unavailable,
                "state-not-recorded",
            ),
            (
                access(AccessError::RetriesExhausted {
                    stripe: 1,
                    tries: 5,
                    last: "l".into(),
                }),
                Code::Unavailable,
                "unrecoverable",
            ),
            (
                access(AccessError::Array(ArrayError::WouldExceedTolerance {
                    column: 1,
                    level: RaidLevel::Raid5,
                    tolerance: 1,
                })),
                Code::FailedPrecondition,
                "would-exceed-tolerance",
            ),
            (
                access(AccessError::Array(ArrayError::NoSuchColumn {
                    column: 9,
                    columns: 5,
                })),
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                access(AccessError::Internal("bug".into())),
                Code::Internal,
                "internal",
            ),
            (
                access(AccessError::Overloaded(
                    dagraid_core::admission::Overloaded {
                        in_progress: 2,
                        queued: 3,
                    },
                )),
                Code::ResourceExhausted,
                "overloaded",
            ),
            (
                provision(NodeErrorKind::NoSpace),
                Code::ResourceExhausted,
                "no-space",
            ),
            (
                provision(NodeErrorKind::Unavailable),
                Code::Unavailable,
                "node-unavailable",
            ),
            (
                provision(NodeErrorKind::Timeout),
                Code::Unavailable,
                "node-unavailable",
            ),
            (
                provision(NodeErrorKind::Fenced),
                Code::FailedPrecondition,
                "fenced",
            ),
            (
                provision(NodeErrorKind::InvalidRequest),
                Code::InvalidArgument,
                "bad-geometry",
            ),
            (
                ServiceError::Store(StoreError::Closed),
                Code::Unavailable,
                "shutting-down",
            ),
            (
                ServiceError::NotAssembled {
                    volume: "v".into(),
                    problem: "not shut down cleanly and degraded".into(),
                },
                Code::FailedPrecondition,
                "not-assembled",
            ),
            (
                label(LabelWriteError::Component("down".into())),
                Code::Unavailable,
                "node-unavailable",
            ),
            (
                label(LabelWriteError::Fenced("stale".into())),
                Code::FailedPrecondition,
                "fenced",
            ),
            (
                label(LabelWriteError::Refused("too large".into())),
                Code::Internal,
                "internal",
            ),
            (
                ServiceError::Store(StoreError::Exists("x".into())),
                Code::Internal,
                "internal",
            ),
            (
                ServiceError::Internal("bug".into()),
                Code::Internal,
                "internal",
            ),
            (
                ServiceError::UnknownSpare { id: "s".into() },
                Code::NotFound,
                "unknown-spare",
            ),
            (
                ServiceError::ParityRefused {
                    volume: "v".into(),
                    detail: "d".into(),
                },
                Code::FailedPrecondition,
                "parity-refused",
            ),
            (
                ServiceError::SpareInUse {
                    id: "s".into(),
                    volume: "v".into(),
                    column: 2,
                },
                Code::FailedPrecondition,
                "spare-in-use",
            ),
            (
                ServiceError::BadSpare { detail: "d".into() },
                Code::InvalidArgument,
                "invalid-request",
            ),
            (
                ServiceError::SpareNodeUnavailable {
                    node: "n6".into(),
                    detail: "down".into(),
                },
                Code::Unavailable,
                "node-unavailable",
            ),
            (
                spare_node(NodeErrorKind::NoSpace),
                Code::ResourceExhausted,
                "no-space",
            ),
            (
                spare_node(NodeErrorKind::Unavailable),
                Code::Unavailable,
                "node-unavailable",
            ),
        ];
        for (err, code, expected_kind) in cases {
            let status = err.to_status();
            assert_eq!(status.code(), code, "{err}");
            assert_eq!(kind(&status), expected_kind, "{err}");
            assert_eq!(status.message(), err.to_string());
        }
    }

    #[test]
    fn messages_name_the_volume_and_the_numbers() {
        let s = access(AccessError::Layout(LayoutError::OutOfRange {
            offset: 100,
            len: 8,
            capacity: 104,
        }))
        .to_status();
        assert!(s.message().contains("\"v\""), "{}", s.message());
        assert!(s.message().contains("104"), "{}", s.message());
        let s = ServiceError::TooLarge {
            volume: "v".into(),
            op: "read",
            len: 17,
            max: 16,
        }
        .to_status();
        assert!(s.message().contains("17") && s.message().contains("16"));
        let s = provision(NodeErrorKind::NoSpace).to_status();
        assert!(s.message().contains("n1") && s.message().contains("v1-c0"));
    }
}
