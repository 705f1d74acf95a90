//! `load`: the load and overload runs of docs/RELIABILITY.md on a cluster of real processes
//! (`dagraid_tests::load`).
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p dagraid-tests --bin load -- [--minutes 10] [--clients 64] [--rate auto|OPS]
//!     [--warmup-s 60] [--overload-minutes 2] [--overload-clients 256] [--seed 1] [--skip-load]
//! ```
//!
//! Exits non-zero on any violation.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use dagraid_tests::load::{LoadConfig, run_load, run_overload};

fn parse(args: &[String]) -> Result<(LoadConfig, bool)> {
    let mut config = LoadConfig::default();
    let mut skip_load = false;
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).context("a value is missing");
        let secs = |v: &String, unit: u64| -> Result<Duration> {
            Ok(Duration::from_secs_f64(v.parse::<f64>()? * unit as f64))
        };
        match args[i].as_str() {
            "--minutes" => config.duration = secs(value()?, 60)?,
            "--warmup-s" => config.warmup = secs(value()?, 1)?,
            "--ramp-step-s" => config.ramp_step = secs(value()?, 1)?,
            "--clients" => config.clients = value()?.parse()?,
            "--rate" => {
                let v = value()?;
                config.rate = if v == "auto" { None } else { Some(v.parse()?) };
            }
            "--overload-minutes" => config.overload = secs(value()?, 60)?,
            "--overload-clients" => config.overload_clients = value()?.parse()?,
            "--seed" => config.seed = value()?.parse()?,
            "--skip-load" => {
                skip_load = true;
                i += 1;
                continue;
            }
            other => {
                bail!("unknown argument {other:?} (see the doc comment of tests/src/bin/load.rs)")
            }
        }
        i += 2;
    }
    Ok((config, skip_load))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, skip_load) = parse(&args)?;
    let mut clean = true;
    if !skip_load {
        let report = run_load(&config).await?;
        clean &= report.is_clean();
    }
    if !config.overload.is_zero() {
        let report = run_overload(&config).await?;
        clean &= report.is_clean();
    }
    if !clean {
        bail!("violations found (see VIOLATION lines above)");
    }
    println!("verdict: clean");
    Ok(())
}
