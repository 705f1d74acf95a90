//! Persisted metadata of a volume: component labels ([`label`]) and the reassembly decision
//! made from them and the coordinator's record ([`assembly`]).
//!
//! Pure data and decisions: reading and writing labels on the nodes, and the store, belong to the
//! coordinator service.

pub mod assembly;
pub mod label;
