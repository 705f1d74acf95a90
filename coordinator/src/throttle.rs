//! The pace of the background jobs (reconstruction, copyback, parity check and rewrite): a
//! rate limit with two rates (clients idle, clients busy), the progress computation (rate and
//! ETA), and the yield to user I/O queued for admission. Knows no volume: the jobs give it the
//! count of client accesses and the admission queue.

use std::time::Duration;

// tokio's clock: the simulation's where there is one (turmoil), the system's otherwise.
use tokio::time::Instant;

use dagraid_core::admission::Admission;

/// Tokens for the rate limit: bytes may be written once the time they take at the rate passed.
/// Two rates, like md's `speed_limit_max` and `speed_limit_min`: `idle` while no client I/O is
/// seen, `busy` while an access ran within the last [`BUSY_WINDOW`].
pub(crate) struct Throttle {
    idle: u64,
    busy: u64,
    current: u64,
    since: Instant,
    bytes: u64,
    /// Accesses counted so far (every volume), and when they last moved.
    accesses: u64,
    active: Instant,
}

/// How long after the last client access a background job still counts the clients as active.
pub(crate) const BUSY_WINDOW: Duration = Duration::from_millis(200);

impl Throttle {
    /// A throttle for a job that starts now, when `accesses` client accesses were counted: only
    /// accesses after that make the clients active (a count taken as activity would hold a job
    /// started on an idle array at the busy limit for its first batch).
    pub(crate) fn new(idle: u64, busy: u64, accesses: u64) -> Self {
        let busy = match (idle, busy) {
            (0, b) => b,
            (i, 0) => i,
            (i, b) => i.min(b),
        };
        Self {
            idle,
            busy,
            current: idle,
            since: Instant::now(),
            bytes: 0,
            accesses,
            active: Instant::now() - BUSY_WINDOW * 2,
        }
    }

    /// The limit in force after the last [`Throttle::rate`] or [`Throttle::consume`].
    pub(crate) fn current(&self) -> u64 {
        self.current
    }

    /// Whether the clients counted as active at the last [`Throttle::rate`].
    pub(crate) fn clients_active(&self) -> bool {
        self.active.elapsed() < BUSY_WINDOW
    }

    /// The limit now, given the count of client accesses so far.
    pub(crate) fn rate(&mut self, accesses: u64) -> u64 {
        if accesses != self.accesses {
            self.accesses = accesses;
            self.active = Instant::now();
        }
        let rate = if self.active.elapsed() < BUSY_WINDOW {
            self.busy
        } else {
            self.idle
        };
        if rate != self.current {
            self.current = rate;
            self.since = Instant::now();
            self.bytes = 0;
        }
        rate
    }

    pub(crate) async fn consume(&mut self, bytes: u64, accesses: u64) {
        let rate = self.rate(accesses);
        if rate == 0 {
            return;
        }
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        let elapsed = self.since.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
        // A window of a few seconds: an idle stretch earns no burst beyond it.
        if elapsed > Duration::from_secs(4) {
            self.since = Instant::now();
            self.bytes = 0;
        }
    }
}

/// The rate of a job that wrote `bytes` since `started` over `stripes` stripes, and the time
/// its `left` stripes take at that rate (`None` before any byte).
pub(crate) fn progress(
    started: Instant,
    bytes: u64,
    stripes: u64,
    left: u64,
) -> (u64, Option<Duration>) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let per_sec = (bytes as f64 / secs) as u64;
    let per_stripe = bytes / stripes.max(1);
    let eta =
        (per_sec > 0).then(|| Duration::from_secs_f64((left * per_stripe) as f64 / per_sec as f64));
    (per_sec, eta)
}

/// User I/O first: while accesses wait for admission, the job's next stripe waits too (at most
/// 50 ms, so the job always moves).
pub(crate) async fn yield_to_users(admission: &Admission) {
    let until = Instant::now() + Duration::from_millis(50);
    while admission.waiting() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_counts_only_accesses_after_its_start_as_activity() {
        let mut t = Throttle::new(0, 8 << 20, 5_000);
        assert_eq!(t.rate(5_000), 0, "the count at the start is no activity");
        assert_eq!(t.rate(5_001), 8 << 20, "a new access is");
        let mut t = Throttle::new(64 << 20, 8 << 20, 0);
        assert_eq!(t.rate(0), 64 << 20);
        assert_eq!(t.rate(1), 8 << 20);
    }
}
