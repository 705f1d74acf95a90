//! Persisted metadata of a volume: component labels ([`label`]), the metadata record beside
//! them ([`record`]: the lost set, later the bitmaps), and the reassembly decision made from
//! them and the coordinator's record ([`assembly`]). The formats are in `docs/STATE.md`.
//!
//! Pure data and decisions: reading and writing labels on the nodes, and the store, belong to the
//! coordinator service.

pub mod assembly;
pub mod label;
pub mod record;
