//! dagraid's RAID core, after NetBSD's RAIDframe: every access becomes a DAG of primitive
//! operations that the engine runs with commit-barrier recovery.
//!
//! No gRPC, no exporter: storage is reached only through the [`io::ComponentIo`] trait.

pub mod access;
pub mod admission;
pub mod array;
pub mod dag;
pub mod engine;
pub mod io;
pub mod layout;
pub mod lost;
pub mod meta;
pub mod parity;
pub mod parity_map;
pub mod ppl;
pub mod reconstruct;
pub mod resync;
pub mod stats;
pub mod stripe_lock;
#[cfg(feature = "testing")]
pub mod testing;
