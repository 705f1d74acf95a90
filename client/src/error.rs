//! The one error type of the SDK, and the one place that reads a [`tonic::Status`].
//!
//! The coordinator names every error it produces in the `dagraid-error-kind` metadata
//! ([`dagraid_proto::error_kind`]); the gRPC code alone is ambiguous (FAILED_PRECONDITION is both
//! "would exceed tolerance" and "fenced"), so the kind is read first and the code only when the
//! answer carries no kind we know (tonic's own answers, transport failures).

use std::error::Error as _;

use dagraid_proto::error_kind;
use tonic::{Code, Status};

/// What went wrong with a call to the coordinator.
///
/// Every variant that comes from the coordinator keeps its message verbatim in `message`;
/// callers branch on the variant, never on the text.
///
/// ```
/// use dagraid_client::ClientError;
///
/// fn explain(err: &ClientError) -> &'static str {
///     match err {
///         ClientError::UnknownVolume { .. } => "no such volume",
///         ClientError::Unrecoverable { .. } | ClientError::Unreadable { .. } => "data lost",
///         e if e.is_transport() => "coordinator unreachable",
///         _ => "other",
///     }
/// }
/// # let _ = explain;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The endpoint given to [`crate::Client::connect`] is not a usable URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The [`crate::ClientOptions`] cannot be used (a token that is not valid in an HTTP header,
    /// a zero timeout, ...).
    #[error("invalid client options: {0}")]
    InvalidOptions(&'static str),
    /// The TLS material in [`crate::ClientOptions::tls`] cannot be used (a file that is
    /// missing or holds no certificate, a key that does not match).
    #[error("TLS: {message}")]
    Tls {
        /// What is wrong, naming the file.
        message: String,
    },
    /// The call carried no token or the wrong one (UNAUTHENTICATED).
    #[error("{}", labelled("unauthenticated", .message))]
    Unauthenticated {
        /// The coordinator's message.
        message: String,
    },
    /// No volume of that name (`unknown-volume`, NOT_FOUND).
    #[error("{}", labelled("unknown volume", .message))]
    UnknownVolume {
        /// The coordinator's message.
        message: String,
    },
    /// No hot spare of that id in the pool (`unknown-spare`, NOT_FOUND).
    #[error("{}", labelled("unknown spare", .message))]
    UnknownSpare {
        /// The coordinator's message.
        message: String,
    },
    /// The hot spare is in use by a volume's column (`spare-in-use`, FAILED_PRECONDITION): it
    /// cannot be removed until it is released.
    #[error("{}", labelled("spare in use", .message))]
    SpareInUse {
        /// The coordinator's message.
        message: String,
    },
    /// A volume of that name already exists (`volume-exists`, ALREADY_EXISTS).
    #[error("{}", labelled("volume exists", .message))]
    VolumeExists {
        /// The coordinator's message.
        message: String,
    },
    /// The request is malformed: bad name, zero or oversized length, ... (INVALID_ARGUMENT).
    #[error("{}", labelled("invalid argument", .message))]
    InvalidArgument {
        /// The coordinator's message.
        message: String,
    },
    /// The volume's layout or size is not acceptable (`bad-geometry`).
    #[error("{}", labelled("bad geometry", .message))]
    BadGeometry {
        /// The coordinator's message.
        message: String,
    },
    /// The byte range lies outside the volume (OUT_OF_RANGE).
    #[error("{}", labelled("out of range", .message))]
    OutOfRange {
        /// The coordinator's message.
        message: String,
    },
    /// Not enough reachable storage nodes for the volume (`not-enough-nodes`).
    #[error("{}", labelled("not enough storage nodes", .message))]
    NotEnoughNodes {
        /// The coordinator's message.
        message: String,
    },
    /// More columns are faulty than the volume's redundancy covers for these bytes
    /// (`unrecoverable`): nothing was written and the bytes on the components are intact; the
    /// call may succeed once the storage nodes are back. Not retried automatically.
    #[error("{}", labelled("unrecoverable", .message))]
    Unrecoverable {
        /// The coordinator's message.
        message: String,
    },
    /// The bytes lie in a stripe marked lost after a write that could not complete
    /// (`unreadable`).
    #[error("{}", labelled("unreadable", .message))]
    Unreadable {
        /// The coordinator's message.
        message: String,
    },
    /// A write failed after its commit on more columns than the redundancy covers
    /// (`torn-write`): it may have landed on some columns only, and its stripes are now lost
    /// (later reads of them are [`ClientError::Unreadable`]).
    #[error("{}", labelled("torn write", .message))]
    TornWrite {
        /// The coordinator's message.
        message: String,
    },
    /// A storage node the call needed could not be reached or timed out
    /// (`node-unavailable`). Named by the coordinator, so not retried by the SDK.
    #[error("{}", labelled("storage node unavailable", .message))]
    NodeUnavailable {
        /// The coordinator's message.
        message: String,
    },
    /// A storage node has no room for a new component (`no-space`).
    #[error("{}", labelled("no space", .message))]
    NoSpace {
        /// The coordinator's message.
        message: String,
    },
    /// The coordinator's queue of accesses waiting to run is full (RESOURCE_EXHAUSTED,
    /// `overloaded`): back-pressure, nothing was done. Not retried by the SDK; retry later,
    /// with a pause.
    #[error("{}", labelled("coordinator overloaded", .message))]
    Overloaded {
        /// The coordinator's message.
        message: String,
    },
    /// The volume is failed (`volume-failed`): more columns are failed or their nodes gone than
    /// its layout tolerates. The write was refused and nothing was written; reads of what the
    /// surviving columns hold are still served. Retry once enough nodes are back.
    #[error("{}", labelled("volume failed", .message))]
    VolumeFailed {
        /// The coordinator's message.
        message: String,
    },
    /// The component state machine has no such transition (`not-allowed`), e.g. a failed
    /// column straight back to optimal: it must be rebuilt or re-added.
    #[error("{}", labelled("not allowed", .message))]
    NotAllowed {
        /// The coordinator's message.
        message: String,
    },
    /// A reconstruction or copyback cannot start or go on (`rebuild-refused`,
    /// FAILED_PRECONDITION): no spare fits, the column is not failed (or not on a spare, for a
    /// copyback), a job runs on it already, its target failed, a resync must finish first. The
    /// message says which; nothing was started.
    #[error("{}", labelled("rebuild refused", .message))]
    RebuildRefused {
        /// The coordinator's message.
        message: String,
    },
    /// A parity check or rewrite cannot start (`parity-refused`, FAILED_PRECONDITION): RAID 0
    /// has nothing to check, a parity job of the volume runs already, the volume resyncs, or a
    /// column is being reconstructed. The message says which; nothing was started.
    #[error("{}", labelled("parity job refused", .message))]
    ParityRefused {
        /// The coordinator's message.
        message: String,
    },
    /// A storage node refused a request the coordinator built for it (`storage-refused`): the
    /// volume and the node disagree (a size limit, a range); no column was failed.
    #[error("{}", labelled("refused by storage", .message))]
    StorageRefused {
        /// The coordinator's message.
        message: String,
    },
    /// The administrative change would leave more failures than the layout tolerates
    /// (`would-exceed-tolerance`).
    #[error("{}", labelled("would exceed the layout's tolerance", .message))]
    WouldExceedTolerance {
        /// The coordinator's message.
        message: String,
    },
    /// The coordinator lost ownership of the cluster (`fenced`): another coordinator owns it.
    #[error("{}", labelled("fenced", .message))]
    Fenced {
        /// The coordinator's message.
        message: String,
    },
    /// The volume is not assembled (`not-assembled`): not shut down cleanly and degraded (a
    /// forced assembly, [`crate::Client::assemble_volume`], brings it back and says what is at
    /// risk), or more failures than its layout tolerates. The message says which.
    #[error("{}", labelled("not assembled", .message))]
    NotAssembled {
        /// The coordinator's message.
        message: String,
    },
    /// A state change could not be made durable, so the access was not acknowledged
    /// (`state-not-recorded`); its outcome is unknown.
    #[error("{}", labelled("state not recorded", .message))]
    StateNotRecorded {
        /// The coordinator's message.
        message: String,
    },
    /// The coordinator answered that it cannot serve the call now (UNAVAILABLE with a kind,
    /// e.g. `shutting-down`). Not retried: the coordinator itself said so.
    #[error("{}", labelled("unavailable", .message))]
    Unavailable {
        /// The coordinator's message.
        message: String,
    },
    /// The call did not get an answer from the coordinator's service: connection refused or
    /// reset, HTTP/2 error (UNAVAILABLE without a kind). Idempotent calls are retried on this.
    #[error("{}", labelled("transport", .message))]
    Transport {
        /// What the transport said.
        message: String,
    },
    /// No answer within the request timeout (DEADLINE_EXCEEDED, CANCELLED). For a write the
    /// outcome is unknown.
    #[error("{}", labelled("timed out", .message))]
    Timeout {
        /// What the transport or coordinator said.
        message: String,
    },
    /// A bug or an unexpected condition on the coordinator (`internal`, INTERNAL).
    #[error("{}", labelled("internal error on the coordinator", .message))]
    Internal {
        /// The coordinator's message.
        message: String,
    },
    /// Something other than a volume was not found (NOT_FOUND with a kind this SDK does not
    /// know, e.g. a spare id the pool does not hold): kept apart from
    /// [`ClientError::UnknownVolume`] so that it is never reported as a missing volume.
    #[error("{}", labelled("not found", .message))]
    NotFound {
        /// The coordinator's message.
        message: String,
    },
    /// The coordinator does not implement the call (UNIMPLEMENTED): it is older than this SDK
    /// (reconstruction, copyback and spares came with issue 19), or the call is not served
    /// yet.
    #[error("{}", labelled("not supported by this coordinator", .message))]
    Unsupported {
        /// The coordinator's message.
        message: String,
    },
    /// The coordinator's answer does not make sense (wrong length, unknown enum value, ...).
    #[error("invalid response from the coordinator: {0}")]
    InvalidResponse(String),
    /// Any other gRPC status (FAILED_PRECONDITION without a kind, UNIMPLEMENTED, ...).
    #[error("{code:?}: {message}")]
    Other {
        /// The gRPC code.
        code: Code,
        /// The coordinator's message.
        message: String,
    },
}

impl ClientError {
    /// Whether the call never reached the coordinator's service (connection-level failure):
    /// the only case in which the SDK retries, and only idempotent calls.
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }

    /// The one reading of a status: the `dagraid-error-kind` first, then the code.
    pub fn from_status(status: &Status) -> Self {
        let message = status.message().to_owned();
        let kind = status
            .metadata()
            .get(error_kind::HEADER)
            .and_then(|v| v.to_str().ok());
        match kind {
            Some(error_kind::UNAUTHENTICATED) => ClientError::Unauthenticated { message },
            Some(error_kind::UNKNOWN_VOLUME) => ClientError::UnknownVolume { message },
            Some(error_kind::VOLUME_EXISTS) => ClientError::VolumeExists { message },
            Some(error_kind::UNKNOWN_SPARE) => ClientError::UnknownSpare { message },
            Some(error_kind::SPARE_IN_USE) => ClientError::SpareInUse { message },
            Some(error_kind::BAD_GEOMETRY) => ClientError::BadGeometry { message },
            Some(error_kind::NOT_ENOUGH_NODES) => ClientError::NotEnoughNodes { message },
            Some(error_kind::UNRECOVERABLE) => ClientError::Unrecoverable { message },
            Some(error_kind::UNREADABLE) => ClientError::Unreadable { message },
            Some(error_kind::TORN_WRITE) => ClientError::TornWrite { message },
            Some(error_kind::NODE_UNAVAILABLE) => ClientError::NodeUnavailable { message },
            Some(error_kind::WOULD_EXCEED_TOLERANCE) => {
                ClientError::WouldExceedTolerance { message }
            }
            Some(error_kind::FENCED | error_kind::STALE_EPOCH | error_kind::WRONG_CLUSTER) => {
                ClientError::Fenced { message }
            }
            Some(error_kind::STATE_NOT_RECORDED) => ClientError::StateNotRecorded { message },
            Some(error_kind::NOT_ASSEMBLED) => ClientError::NotAssembled { message },
            Some(error_kind::INTERNAL | error_kind::DAG_NODE_FAILED) => {
                ClientError::Internal { message }
            }
            Some(error_kind::VOLUME_FAILED) => ClientError::VolumeFailed { message },
            Some(error_kind::NOT_ALLOWED) => ClientError::NotAllowed { message },
            Some(error_kind::REBUILD_REFUSED) => ClientError::RebuildRefused { message },
            Some(error_kind::PARITY_REFUSED) => ClientError::ParityRefused { message },
            Some(error_kind::STORAGE_REFUSED) => ClientError::StorageRefused { message },
            Some(error_kind::OUT_OF_RANGE) => ClientError::OutOfRange { message },
            Some(error_kind::INVALID_REQUEST | error_kind::TOO_LARGE) => {
                ClientError::InvalidArgument { message }
            }
            Some(error_kind::SHUTTING_DOWN) => ClientError::Unavailable { message },
            Some(error_kind::NO_SPACE) => ClientError::NoSpace { message },
            Some(error_kind::OVERLOADED) => ClientError::Overloaded { message },
            // A kind this SDK does not know yet reads like no kind at all.
            _ => Self::by_code(status, kind.is_some(), message),
        }
    }

    fn by_code(status: &Status, named: bool, message: String) -> Self {
        // A status with a source was made here, from a transport error (a status from the
        // coordinator has none): tonic reports a connection closed under a call (a TLS alert
        // after the handshake, a reset) as CANCELLED or UNKNOWN, and an HTTP/2 protocol error
        // (plaintext spoken to a TLS port) as INTERNAL: neither a timeout nor the service's
        // own error. tonic's own deadline (`TimeoutExpired` in the source chain) stays a
        // timeout.
        if status.source().is_some()
            && !timed_out(status)
            && matches!(
                status.code(),
                Code::Cancelled | Code::Unknown | Code::Internal
            )
        {
            return ClientError::Transport {
                message: transport_message(status),
            };
        }
        match status.code() {
            Code::Unauthenticated => ClientError::Unauthenticated { message },
            // Unnamed NOT_FOUND and ALREADY_EXISTS have one meaning each in the volume API; a
            // NOT_FOUND named with a kind this SDK does not know is about something else (a
            // spare, say), never a volume.
            Code::NotFound if named => ClientError::NotFound { message },
            Code::NotFound => ClientError::UnknownVolume { message },
            Code::AlreadyExists => ClientError::VolumeExists { message },
            Code::InvalidArgument => ClientError::InvalidArgument { message },
            Code::OutOfRange => ClientError::OutOfRange { message },
            Code::DataLoss => ClientError::Unrecoverable { message },
            Code::DeadlineExceeded | Code::Cancelled => ClientError::Timeout { message },
            // An UNAVAILABLE the service named is its own word; an unnamed one comes from the
            // transport (tonic's connection errors, HTTP/2 GOAWAY, a proxy).
            Code::Unavailable if named => ClientError::Unavailable { message },
            Code::Unavailable => ClientError::Transport {
                message: transport_message(status),
            },
            // A status tonic built locally from a transport error carries it as its source; one
            // that came over the wire never does.
            Code::Unknown if status.source().is_some() => ClientError::Transport {
                message: transport_message(status),
            },
            Code::Internal => ClientError::Internal { message },
            Code::Unimplemented => ClientError::Unsupported { message },
            Code::Ok => {
                ClientError::InvalidResponse(format!("error status with code OK: {message}"))
            }
            code => ClientError::Other { code, message },
        }
    }
}

/// `label: message`, or the message alone when its first clause already says what the label
/// says (the coordinator's "bad volume geometry: ..." needs no "bad geometry:" in front).
fn labelled(label: &str, message: &str) -> String {
    fn words(s: &str) -> impl Iterator<Item = String> + '_ {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
    }
    let clause = message.split(':').next().unwrap_or_default();
    let said: Vec<String> = words(clause).collect();
    if !said.is_empty() && words(label).all(|w| said.contains(&w)) {
        message.to_owned()
    } else {
        format!("{label}: {message}")
    }
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        ClientError::from_status(&status)
    }
}

/// tonic's message for a transport failure is often just "transport error": add its causes.
/// Whether tonic's own deadline ended the call (its `TimeoutExpired` in the source chain).
fn timed_out(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn transport_message(status: &Status) -> String {
    let mut message = status.message().to_owned();
    let mut source = status.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = err.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn status(code: Code, kind: Option<&'static str>) -> Status {
        let mut s = Status::new(code, "the message");
        if let Some(kind) = kind {
            s.metadata_mut()
                .insert(error_kind::HEADER, MetadataValue::from_static(kind));
        }
        s
    }

    fn msg() -> String {
        "the message".to_owned()
    }

    #[test]
    fn kind_decides_over_code() {
        use ClientError as E;
        let cases = [
            (
                Code::Unauthenticated,
                error_kind::UNAUTHENTICATED,
                E::Unauthenticated { message: msg() },
            ),
            (
                Code::NotFound,
                error_kind::UNKNOWN_VOLUME,
                E::UnknownVolume { message: msg() },
            ),
            (
                Code::AlreadyExists,
                error_kind::VOLUME_EXISTS,
                E::VolumeExists { message: msg() },
            ),
            (
                Code::InvalidArgument,
                error_kind::BAD_GEOMETRY,
                E::BadGeometry { message: msg() },
            ),
            (
                Code::FailedPrecondition,
                error_kind::NOT_ENOUGH_NODES,
                E::NotEnoughNodes { message: msg() },
            ),
            (
                Code::DataLoss,
                error_kind::UNRECOVERABLE,
                E::Unrecoverable { message: msg() },
            ),
            (
                Code::DataLoss,
                error_kind::UNREADABLE,
                E::Unreadable { message: msg() },
            ),
            (
                Code::FailedPrecondition,
                error_kind::WOULD_EXCEED_TOLERANCE,
                E::WouldExceedTolerance { message: msg() },
            ),
            (
                Code::FailedPrecondition,
                error_kind::FENCED,
                E::Fenced { message: msg() },
            ),
            (
                Code::Unavailable,
                error_kind::STATE_NOT_RECORDED,
                E::StateNotRecorded { message: msg() },
            ),
            (
                Code::FailedPrecondition,
                error_kind::NOT_ASSEMBLED,
                E::NotAssembled { message: msg() },
            ),
            (
                Code::Internal,
                error_kind::INTERNAL,
                E::Internal { message: msg() },
            ),
            (
                Code::OutOfRange,
                error_kind::OUT_OF_RANGE,
                E::OutOfRange { message: msg() },
            ),
            (
                Code::InvalidArgument,
                error_kind::INVALID_REQUEST,
                E::InvalidArgument { message: msg() },
            ),
            (
                Code::InvalidArgument,
                error_kind::TOO_LARGE,
                E::InvalidArgument { message: msg() },
            ),
            (
                Code::Unavailable,
                error_kind::SHUTTING_DOWN,
                E::Unavailable { message: msg() },
            ),
            (
                Code::ResourceExhausted,
                error_kind::NO_SPACE,
                E::NoSpace { message: msg() },
            ),
            (
                Code::NotFound,
                error_kind::UNKNOWN_SPARE,
                E::UnknownSpare { message: msg() },
            ),
            (
                Code::FailedPrecondition,
                error_kind::SPARE_IN_USE,
                E::SpareInUse { message: msg() },
            ),
            (
                Code::ResourceExhausted,
                error_kind::OVERLOADED,
                E::Overloaded { message: msg() },
            ),
            (
                Code::FailedPrecondition,
                error_kind::VOLUME_FAILED,
                E::VolumeFailed { message: msg() },
            ),
            (
                Code::FailedPrecondition,
                error_kind::NOT_ALLOWED,
                E::NotAllowed { message: msg() },
            ),
            (
                Code::FailedPrecondition,
                error_kind::REBUILD_REFUSED,
                E::RebuildRefused { message: msg() },
            ),
            (
                Code::FailedPrecondition,
                error_kind::PARITY_REFUSED,
                E::ParityRefused { message: msg() },
            ),
            (
                Code::Internal,
                error_kind::STORAGE_REFUSED,
                E::StorageRefused { message: msg() },
            ),
            (
                Code::Internal,
                error_kind::DAG_NODE_FAILED,
                E::Internal { message: msg() },
            ),
        ];
        for (code, kind, want) in cases {
            assert_eq!(
                ClientError::from_status(&status(code, Some(kind))),
                want,
                "{kind}"
            );
        }
    }

    #[test]
    fn a_connection_closed_under_a_call_is_a_transport_error() {
        for code in [Code::Cancelled, Code::Unknown, Code::Internal] {
            let mut status = Status::new(code, "operation was canceled");
            status.set_source(std::sync::Arc::new(std::io::Error::other(
                "received fatal alert: DecryptError",
            )));
            let e = ClientError::from_status(&status);
            assert!(e.is_transport(), "{code:?}: {e:?}");
            assert!(e.to_string().contains("fatal alert"), "{e}");
        }
        // tonic's own deadline is a timeout, source or not.
        let mut status = Status::cancelled("Timeout expired");
        status.set_source(std::sync::Arc::new(tonic::TimeoutExpired(())));
        let e = ClientError::from_status(&status);
        assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    }

    #[test]
    fn code_alone() {
        use ClientError as E;
        let cases = [
            (Code::Unauthenticated, E::Unauthenticated { message: msg() }),
            (Code::NotFound, E::UnknownVolume { message: msg() }),
            (Code::AlreadyExists, E::VolumeExists { message: msg() }),
            (Code::InvalidArgument, E::InvalidArgument { message: msg() }),
            (Code::OutOfRange, E::OutOfRange { message: msg() }),
            (Code::DataLoss, E::Unrecoverable { message: msg() }),
            (Code::DeadlineExceeded, E::Timeout { message: msg() }),
            (Code::Cancelled, E::Timeout { message: msg() }),
            (Code::Unavailable, E::Transport { message: msg() }),
            (Code::Internal, E::Internal { message: msg() }),
            (
                Code::FailedPrecondition,
                E::Other {
                    code: Code::FailedPrecondition,
                    message: msg(),
                },
            ),
            (Code::Unimplemented, E::Unsupported { message: msg() }),
            (
                Code::Unknown,
                E::Other {
                    code: Code::Unknown,
                    message: msg(),
                },
            ),
        ];
        for (code, want) in cases {
            assert_eq!(
                ClientError::from_status(&status(code, None)),
                want,
                "{code:?}"
            );
        }
    }

    #[test]
    fn unknown_kind_falls_back_to_the_code_but_counts_as_named() {
        let mut s = Status::unavailable("the message");
        s.metadata_mut().insert(
            error_kind::HEADER,
            MetadataValue::from_static("some-future-kind"),
        );
        // The service named it, so it is not a transport failure and is not retried.
        let err = ClientError::from_status(&s);
        assert_eq!(err, ClientError::Unavailable { message: msg() });
        assert!(!err.is_transport());
        // A named NOT_FOUND of a kind this SDK does not know is not about a volume (an unknown
        // spare, say); only an unnamed one reads as an unknown volume.
        let mut s = Status::not_found("no spare \"sp-9\"");
        s.metadata_mut().insert(
            error_kind::HEADER,
            MetadataValue::from_static("some-future-kind"),
        );
        let err = ClientError::from_status(&s);
        assert_eq!(
            err,
            ClientError::NotFound {
                message: "no spare \"sp-9\"".into()
            }
        );
        assert_eq!(err.to_string(), "not found: no spare \"sp-9\"");
        let s = status(Code::NotFound, None);
        assert!(matches!(
            ClientError::from_status(&s),
            ClientError::UnknownVolume { .. }
        ));
    }

    #[test]
    fn only_unnamed_unavailable_is_transport() {
        assert!(ClientError::from_status(&status(Code::Unavailable, None)).is_transport());
        assert!(
            !ClientError::from_status(&status(Code::Unavailable, Some(error_kind::SHUTTING_DOWN)))
                .is_transport()
        );
        assert!(!ClientError::from_status(&status(Code::DeadlineExceeded, None)).is_transport());
    }

    #[test]
    fn local_transport_error_keeps_its_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let s = Status::from_error(Box::new(io));
        let err = ClientError::from_status(&s);
        match err {
            ClientError::Transport { message } => {
                assert!(message.contains("connection refused"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn display_does_not_repeat_the_kind() {
        let mut s = Status::invalid_argument("bad volume geometry: size must be at least 1 byte");
        s.metadata_mut().insert(
            error_kind::HEADER,
            MetadataValue::from_static(error_kind::BAD_GEOMETRY),
        );
        assert_eq!(
            ClientError::from_status(&s).to_string(),
            "bad volume geometry: size must be at least 1 byte"
        );
        let mut s = Status::already_exists("volume \"v\" exists");
        s.metadata_mut().insert(
            error_kind::HEADER,
            MetadataValue::from_static(error_kind::VOLUME_EXISTS),
        );
        assert_eq!(
            ClientError::from_status(&s).to_string(),
            "volume \"v\" exists"
        );
        let mut s = Status::out_of_range("volume \"v\": 1 byte at 1024 is beyond 1024 bytes");
        s.metadata_mut().insert(
            error_kind::HEADER,
            MetadataValue::from_static(error_kind::OUT_OF_RANGE),
        );
        assert!(
            ClientError::from_status(&s)
                .to_string()
                .starts_with("out of range: volume")
        );
        let s = Status::unauthenticated("missing token");
        assert_eq!(
            ClientError::from_status(&s).to_string(),
            "unauthenticated: missing token"
        );
    }

    #[test]
    fn display_keeps_the_message() {
        let err =
            ClientError::from_status(&status(Code::NotFound, Some(error_kind::UNKNOWN_VOLUME)));
        assert_eq!(err.to_string(), "unknown volume: the message");
    }
}
