//! Component I/O: the only way the core reaches storage.
