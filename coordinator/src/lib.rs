//! The dagraid coordinator service (volume API, remote components, telemetry, metadata store).
//!
//! Code map (built so far):
//! - [`node_client`]: connections to one storage node ([`node_client::NodeClient`]), the
//!   coordinator's fencing ([`node_client::FencingContext`]) and the admin calls on a node.
//! - [`remote`]: [`remote::RemoteComponent`], the core's `ComponentIo` over gRPC, with a deadline
//!   per call that does not count time queued locally.
//! - [`error`]: the node client's error type and the one mapping from `tonic::Status` to the
//!   core's `IoError`.
//!
//! The volume API, the access pipeline wiring and the metadata store follow (coordinator issue).

pub mod error;
pub mod node_client;
pub mod remote;
