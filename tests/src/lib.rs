//! Harness for dagraid's integration tests: starts real binaries on 127.0.0.1 ports.
