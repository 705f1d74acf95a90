//! Client SDK of dagraid. The `dagraid` command-line tool is built on it in a crate of its own
//! (`dagraid-cli`, in `client/cli/`), so that an application depending on the SDK compiles
//! neither the coordinator nor the storage node the tool embeds.
//!
//! The SDK talks `dagraid.volume.v1` to a coordinator; proto types stay inside this crate.
//!
//! - [`Client`] (`client.rs`): connection, bearer token, deadlines, retries of idempotent calls,
//!   admin and query calls; [`ClientOptions`], [`RetryPolicy`].
//! - [`Volume`] (`volume.rs`): `read_at`, `write_at`, `flush`, `describe`; large ranges are cut
//!   into bounded calls (`chunk.rs`) with a few in flight.
//! - [`ClientError`] (`error.rs`): the one error type, read from the gRPC code and the
//!   `dagraid-error-kind` metadata.
//! - `types.rs`: [`VolumeSpec`], [`VolumeInfo`] (with its [`RebuildProgress`]), [`ClusterInfo`],
//!   [`RebuildTarget`] and the state enums.
//! - [`size`]: sizes like `4KiB` and `1GiB`.
//!
//! ```no_run
//! use dagraid_client::{Client, ClientOptions};
//!
//! # async fn example() -> Result<(), dagraid_client::ClientError> {
//! let client = Client::connect("http://127.0.0.1:7070", ClientOptions::default()).await?;
//! let vol = client.volume("vol0");
//! vol.write_at(0, vec![0xab; 1 << 20]).await?;
//! let back = vol.read_at(0, 1 << 20).await?;
//! assert!(back.iter().all(|&b| b == 0xab));
//! println!("{}", vol.status().await?.state);
//! # Ok(())
//! # }
//! ```

mod chunk;
mod client;
mod error;
pub mod size;
mod types;
mod volume;

pub use client::{
    Client, ClientOptions, HTTP2_CONNECTION_WINDOW, HTTP2_MAX_FRAME_SIZE, HTTP2_STREAM_WINDOW,
    MAX_MESSAGE_BYTES, RetryPolicy,
};
pub use dagraid_tls::TlsFiles;
pub use error::ClientError;
pub use types::{
    AssembleOutcome, AssemblyInfo, ClusterInfo, ComponentInfo, ComponentState, LostRange,
    ParityJob, ParityJobKind, ParityMapInfo, ParseRaidLevelError, RaidLevel, RebuildKind,
    RebuildProgress, RebuildTarget, ResyncProgress, Spare, SpareUse, StorageNodeInfo,
    VolumeCounters, VolumeInfo, VolumeSpec, VolumeState,
};
pub use volume::Volume;
