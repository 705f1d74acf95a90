//! The real-process chaos soak (`dagraid_tests::chaos`): a cluster of real processes, clients
//! running the register workload, faults drawn from a seed; exits non-zero on any violation or
//! lost acknowledged byte.
//!
//! ```sh
//! cargo build --release -p dagraid-node -p dagraid-coordinator --bins
//! cargo run --release -p dagraid-tests --bin chaos -- --minutes 5 --clients 8 --level raid5 --seed 1
//! cargo run --release -p dagraid-tests --bin chaos -- --minutes 5 --level raid5 --spares 1 --seed 1
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dagraid_tests::chaos::{ChaosConfig, ChaosLevel, run, schedule};

/// Runs the chaos soak and prints its summary.
#[derive(Debug, Parser)]
#[command(name = "chaos", about = "dagraid's real-process chaos soak")]
struct Args {
    /// How long the clients run, in minutes (fractions allowed: 0.5).
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// raid5 (5 nodes) or raid6 (6 nodes).
    #[arg(long, default_value = "raid5")]
    level: ChaosLevel,
    /// Seed of the fault schedule and the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Blocks used as registers (from block 0).
    #[arg(long, default_value_t = 32)]
    registers: u64,
    /// Hot spares, each on a node of its own: failed columns are rebuilt during the soak.
    #[arg(long, default_value_t = 0)]
    spares: usize,
    /// Print the fault schedule the seed gives, and exit.
    #[arg(long)]
    schedule_only: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.minutes.is_finite() && args.minutes > 0.0 && args.minutes <= 24.0 * 60.0) {
        eprintln!("error: --minutes must be above 0 and at most 1440");
        return ExitCode::from(2);
    }
    let mut config = ChaosConfig::new(
        args.level,
        Duration::from_secs_f64(args.minutes * 60.0),
        args.seed,
    );
    config.clients = args.clients;
    config.registers = args.registers;
    config.spares = args.spares;
    config.progress = true;
    if args.schedule_only {
        for fault in schedule(&config) {
            println!("{fault}");
        }
        return ExitCode::SUCCESS;
    }
    match run(&config).await {
        Ok(summary) => {
            println!("{summary}");
            if summary.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
