//! The dagraid coordinator service (volume API, remote components, telemetry, metadata store).
//!
//! Not built yet: see the coordinator issue.
