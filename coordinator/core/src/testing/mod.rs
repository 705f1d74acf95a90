//! In-memory and fault-injecting components for tests.
