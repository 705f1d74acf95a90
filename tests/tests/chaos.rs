//! The short fixed-seed form of the chaos soak (`dagraid_tests::chaos`, binary `chaos`), one
//! run per layout: real processes, clients running the register workload, node SIGSTOPs,
//! node kill -9, power cut or SIGSTOP beyond the node deadline, coordinator kill -9 and restart,
//! all within the tolerance; then
//! the full read-back, the linearizability checker over the whole history and the column
//! checker. Passes only on a clean verdict.
//!
//! The RAID 5 run has a hot spare: its node kills, power cuts and long stalls lead to
//! reconstructions onto the spare (down-out delay 0) during the soak, and it must see at least
//! one complete. The RAID 6 run has none: a node killed for longer than the gone rule comes
//! back by re-add (only the regions written meanwhile): every such kill must end with its column
//! re-added (a problem in the summary otherwise), and a re-add started for each.
//!
//! Each run's first column fault kills a node and then, once its column is out, the
//! coordinator: the volume must be assembled by itself (the partial-parity log replayed).
//!
//! The two runs take turns (each is a cluster of 6 or 7 processes and 8 clients on a 2-core
//! machine).

use std::time::Duration;

use dagraid_tests::chaos::{ChaosConfig, ChaosLevel, run};
use tokio::sync::Mutex;

/// Load time per layout.
const DURATION: Duration = Duration::from_secs(45);
/// The whole run, settling and checks included.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn soak(level: ChaosLevel, seed: u64, spares: usize) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut config = ChaosConfig::new(level, DURATION, seed);
    config.spares = spares;
    let summary = tokio::time::timeout(RUN_TIMEOUT, run(&config))
        .await
        .unwrap_or_else(|_| panic!("the {level} soak did not finish within {RUN_TIMEOUT:?}"))
        .expect("the soak could not run");
    println!("{summary}");
    assert!(summary.is_clean(), "{summary}");
    let faults: u64 = summary.faults_run.values().sum();
    assert!(faults >= 3, "too few faults ran: {summary}");
    assert!(
        summary.coordinator_restarts + summary.node_restarts >= 1,
        "no process was restarted: {summary}"
    );
    if spares > 0 {
        assert!(
            summary.rebuilds_completed >= 1,
            "no rebuild completed: {summary}"
        );
    }
    assert!(
        summary.degraded_crashes >= 1,
        "no coordinator crash while a column was out: {summary}"
    );
    assert!(
        summary.readds >= summary.long_kills,
        "a node killed beyond the gone rule came back without a re-add: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raid5_soak_with_a_spare_and_a_fixed_seed_is_clean() {
    soak(ChaosLevel::Raid5, 3, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raid6_soak_with_a_fixed_seed_is_clean() {
    soak(ChaosLevel::Raid6, 8, 0).await;
}
