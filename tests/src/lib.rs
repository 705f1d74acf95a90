//! Harness for dagraid's integration tests: starts real binaries on 127.0.0.1 ports.
//!
//! - [`node`]: one `dagraid-node` process on a temporary data directory, with kill -9, SIGTERM,
//!   power cuts (`power_cut`, `hold_syncs`) and restart, and gRPC clients configured for large
//!   transfers.
//! - [`cluster`]: N storage nodes and a `dagraid-coordinator`, each a real process, and the
//!   column checker that reads every column straight from the nodes and verifies P, Q and
//!   mirrors against the data.
//! - [`harness`]: an SDK client without retries, random payloads, waiting for a volume to
//!   settle, the read-back check that allows writes of unknown outcome.
//! - [`process`]: finding the binaries, waiting for their "listening on" (and metrics) lines,
//!   signals, a plain HTTP GET for `/metrics`.
//! - [`cpu`]: CPU time of this process's threads by thread name, for the benches.
//! - [`prom`]: samples of Prometheus text, `promtool check metrics`.
//! - [`otlp_receiver`]: a real OTLP/gRPC trace receiver in the test process (keeping or
//!   counting the spans it is sent), for the trace tests and the tracing bench.
//! - [`load`]: the load and overload runs of docs/RELIABILITY.md (binary `load`).
//! - [`workload`]: the register workload (unique payloads, recorded operations).
//! - [`chaos`]: the real-process chaos soak (faults from a seed, the checkers at the end).
//! - [`linearizability`]: the per-block linearizability checker and the API contract it holds
//!   the service to.
//! - [`with_timeout`]: every test body runs under a deadline.

pub mod chaos;
pub mod cluster;
pub mod cpu;
pub mod harness;
pub mod linearizability;
pub mod load;
pub mod node;
pub mod otlp_receiver;
pub mod process;
pub mod prom;
pub mod tls;
pub mod workload;

use std::future::Future;
use std::time::Duration;

/// Generous deadline of one integration test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `test` under [`TEST_TIMEOUT`]; panics (failing the test) if it takes longer.
pub async fn with_timeout<T>(test: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, test).await {
        Ok(value) => value,
        Err(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// Polls `probe` every 50 ms until it answers `Some`, for at most `timeout`; panics (failing
/// the test) naming `what` when it does not.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
