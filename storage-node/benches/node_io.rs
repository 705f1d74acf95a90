//! Storage-node I/O benchmark (written in a later commit).

fn main() {}
