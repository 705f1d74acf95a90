//! Wire protocols of dagraid, generated from the `.proto` files beside this crate.
//!
//! - [`storage::v1`]: the storage-node API (`dagraid.storage.v1`), spoken by the coordinator to
//!   the storage nodes.
//! - [`volume::v1`]: the coordinator's volume API (`dagraid.volume.v1`), spoken by the client
//!   SDK and the `dagraid` CLI to the coordinator.
//!
//! Proto types stay at the edges: the service, storage-node and client crates convert them at the
//! boundary; `dagraid-core` never sees them.

/// `dagraid.storage.v1`.
pub mod storage {
    /// The storage protocol version this code speaks, reported in `NodeInfo.protocol_version`.
    ///
    /// 2: per-component fence epochs (`FenceRequest.component_id`), epochs on reads
    /// (`ReadBlocksRequest.fencing`, `ReadSlotRequest.fencing`), component files of format 2
    /// with a log area (`ComponentInfo.log_bytes`). Nodes older than this field answer 0.
    ///
    /// 3: the log-area calls `WriteLog` and `ReadLog` (a version 2 node answers them
    /// UNIMPLEMENTED). Nothing else changed: a coordinator still drives version 2 nodes
    /// ([`MIN_PROTOCOL_VERSION`]), without logs.
    pub const PROTOCOL_VERSION: u32 = 3;

    /// The oldest storage protocol version a coordinator accepts: 2 (per-component fencing and
    /// epochs on reads are needed for correctness; the log calls of version 3 are not, a node
    /// without them only has no usable log area).
    pub const MIN_PROTOCOL_VERSION: u32 = 2;

    /// The first storage protocol version with `WriteLog` and `ReadLog`.
    pub const LOG_PROTOCOL_VERSION: u32 = 3;

    /// Version 1 of the storage-node API.
    #[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
    pub mod v1 {
        tonic::include_proto!("dagraid.storage.v1");
    }
}

/// `dagraid.volume.v1`.
pub mod volume {
    /// Version 1 of the volume API.
    #[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
    pub mod v1 {
        tonic::include_proto!("dagraid.volume.v1");
    }
}

/// The encoded file descriptors of `dagraid.storage.v1` and `dagraid.volume.v1`, served by the
/// coordinator's gRPC server reflection (so grpcurl needs no `.proto` files).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dagraid_descriptor");

/// Metadata keys that make errors precise beyond the gRPC status code.
///
/// Callers branch on these values, never on message text.
pub mod error_kind {
    /// Metadata key naming the error kind (one of the constants below).
    pub const HEADER: &str = "dagraid-error-kind";
    /// Metadata key listing the bad block indices of a DATA_LOSS answer, comma-separated.
    pub const BAD_BLOCKS_HEADER: &str = "dagraid-bad-blocks";

    /// The call's epoch is older than the highest the node has accepted.
    pub const STALE_EPOCH: &str = "stale-epoch";
    /// The call's cluster id is not the node's.
    pub const WRONG_CLUSTER: &str = "wrong-cluster";
    /// The component has failed for good on this node.
    pub const COMPONENT_FAILED: &str = "component-failed";
    /// A block's checksum did not match its data.
    pub const CHECKSUM_MISMATCH: &str = "checksum-mismatch";
    /// The component does not exist.
    pub const UNKNOWN_COMPONENT: &str = "unknown-component";
    /// The block range lies outside the component.
    pub const OUT_OF_RANGE: &str = "out-of-range";
    /// The request is malformed (bad length, alignment, id, ...).
    pub const INVALID_REQUEST: &str = "invalid-request";
    /// The payload exceeds the configured limit.
    pub const TOO_LARGE: &str = "too-large";
    /// The answer was produced by an injected fault.
    pub const INJECTED: &str = "injected";
    /// A local I/O error on the node.
    pub const IO: &str = "io";
    /// CreateComponent with an id that is already in use.
    pub const COMPONENT_EXISTS: &str = "component-exists";
    /// The node's file system has no room for the component.
    pub const NO_SPACE: &str = "no-space";
    /// InjectFault on a node started without fault injection.
    pub const FAULT_INJECTION_DISABLED: &str = "fault-injection-disabled";
    /// The node is stopping; try another node or later.
    pub const SHUTTING_DOWN: &str = "shutting-down";

    // Volume API (dagraid.volume.v1).

    /// The call carried no token, or the wrong one.
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// No volume of that name.
    pub const UNKNOWN_VOLUME: &str = "unknown-volume";
    /// CreateVolume with a name that is already in use.
    pub const VOLUME_EXISTS: &str = "volume-exists";
    /// A volume's layout or size is not acceptable (columns, stripe unit, block size, ...).
    pub const BAD_GEOMETRY: &str = "bad-geometry";
    /// Not enough reachable storage nodes for the volume.
    pub const NOT_ENOUGH_NODES: &str = "not-enough-nodes";
    /// More columns are faulty than the volume's redundancy covers for these bytes; nothing was
    /// written and the bytes on the components are intact (UNAVAILABLE: retry once the storage
    /// nodes are back).
    pub const UNRECOVERABLE: &str = "unrecoverable";
    /// A write failed after its commit on more columns than the redundancy covers: it may have
    /// landed on some columns only, so its stripes are now marked lost (DATA_LOSS; see
    /// [`UNREADABLE`]).
    pub const TORN_WRITE: &str = "torn-write";
    /// A storage node a volume operation needed could not be reached (or timed out).
    pub const NODE_UNAVAILABLE: &str = "node-unavailable";
    /// The bytes lie in a stripe marked lost after a write that could not complete.
    pub const UNREADABLE: &str = "unreadable";
    /// The administrative change would leave more failures than the layout tolerates.
    pub const WOULD_EXCEED_TOLERANCE: &str = "would-exceed-tolerance";
    /// The coordinator lost ownership of the cluster (a newer epoch fenced it).
    pub const FENCED: &str = "fenced";
    /// A state change could not be made durable, so the access was not acknowledged.
    pub const STATE_NOT_RECORDED: &str = "state-not-recorded";
    /// The volume is not assembled (not clean and degraded: it needs a forced assembly; or more
    /// failures than its layout tolerates), so it serves no I/O.
    pub const NOT_ASSEMBLED: &str = "not-assembled";
    /// More columns are failed or gone than the volume's layout tolerates: writes are refused
    /// (nothing was written) until enough of the gone nodes are back; reads the surviving
    /// columns can serve are served.
    pub const VOLUME_FAILED: &str = "volume-failed";
    /// The state machine of components has no such transition (e.g. a failed column straight
    /// back to optimal: it must be rebuilt or re-added).
    pub const NOT_ALLOWED: &str = "not-allowed";
    /// A reconstruction or copyback cannot start or go on (no spare fits, the column is not
    /// failed, its target failed, a resync must finish first); the message says which.
    pub const REBUILD_REFUSED: &str = "rebuild-refused";
    /// A parity check or rewrite cannot start (RAID 0 has nothing to check, a parity job, a
    /// reconstruction or a resync of the volume runs); the message says which.
    pub const PARITY_REFUSED: &str = "parity-refused";
    /// A storage node refused a request the coordinator built for it (larger than the node's
    /// limit, outside the component): the volume and the node disagree; nothing was failed.
    pub const STORAGE_REFUSED: &str = "storage-refused";
    /// A DAG node that touches no storage failed (a bug in the coordinator).
    pub const DAG_NODE_FAILED: &str = "dag-node-failed";
    /// The coordinator's queue of accesses waiting to run is full (RESOURCE_EXHAUSTED):
    /// back-pressure, not a failure. Nothing was done and no column was failed; retry later,
    /// with a pause.
    pub const OVERLOADED: &str = "overloaded";
    /// No hot spare of that id in the pool (NOT_FOUND).
    pub const UNKNOWN_SPARE: &str = "unknown-spare";
    /// The hot spare is in use by a volume's column (FAILED_PRECONDITION): it cannot be removed
    /// or taken again until it is released.
    pub const SPARE_IN_USE: &str = "spare-in-use";
    /// A bug or an unexpected condition on the coordinator.
    pub const INTERNAL: &str = "internal";
}
