//! Reading Prometheus text in tests: one sample's value, and `promtool check metrics`.

use anyhow::{Context, Result, bail};

/// The sum of the samples of `name` whose labels include every pair of `labels` (0 when there
/// is none). `name` is a whole sample name (`dagraid_volume_bytes_total`,
/// `dagraid_volume_operation_seconds_count`).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Whether `promtool` is installed (the Debian package `prometheus`; `.ci/run` installs it).
pub fn promtool_available() -> bool {
    std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `promtool check metrics` on `text`; `Err` with promtool's complaints.
pub fn promtool_check_metrics(text: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running promtool")?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "promtool check metrics: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let text =
            "# TYPE x_total counter\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"1\",b=\"3\"} 4\ny 5\n";
        assert_eq!(sample(text, "x_total", &[("a", "1")]), 7.0);
        assert_eq!(sample(text, "x_total", &[("b", "3")]), 4.0);
        assert_eq!(sample(text, "y", &[]), 5.0);
        assert_eq!(sample(text, "x", &[]), 0.0);
    }
}
