//! CPU time of this process's threads, told apart by thread name, for the benches that report
//! the CPU cost of an operation by part.

/// CPU time (ns, `/proc/self/task/*/schedstat`) used so far by this process's live threads,
/// summed into `N` parts: `part` maps a thread's name to the index of its part, or `None` to
/// leave the thread out. Empty (all zeros) where `/proc` is not readable.
pub fn by_thread_name<const N: usize>(part: impl Fn(&str) -> Option<usize>) -> [u64; N] {
    let mut out = [0; N];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let Some(index) = part(comm.trim()) else {
            continue;
        };
        let ns: u64 = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        out[index] += ns;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::by_thread_name;

    /// Spins on a thread of its own until its part shows 20 ms of CPU; the other part (every
    /// other thread of the test process, this one included) stays out of it.
    #[test]
    fn a_busy_thread_is_counted_in_its_part_and_only_there() {
        let part = |c: &str| match c {
            "cpu-test-spin" => Some(0),
            "cpu-test-idle" => Some(1),
            _ => None,
        };
        let idle = std::thread::Builder::new()
            .name("cpu-test-idle".into())
            .spawn(|| std::thread::sleep(Duration::from_secs(60)))
            .unwrap();
        let spin = std::thread::Builder::new()
            .name("cpu-test-spin".into())
            .spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut x = 0u64;
                loop {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                    let [spun, idle] = by_thread_name::<2>(part);
                    if spun >= 20_000_000 || Instant::now() > deadline {
                        return (spun, idle);
                    }
                }
            })
            .unwrap();
        let (spun, idle_ns) = spin.join().unwrap();
        assert!(spun >= 20_000_000, "the spinning thread counted {spun} ns");
        assert!(
            idle_ns < 5_000_000,
            "the sleeping thread counted {idle_ns} ns"
        );
        drop(idle);
    }
}
