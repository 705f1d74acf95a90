//! The deploy/ observability files: the Prometheus configuration and alert rules pass
//! `promtool check config`, `check rules` and the rule unit tests; the Grafana dashboard is
//! valid JSON on the provisioned data sources. (That every metric they name exists in real
//! output is checked in tests/tests/metrics.rs.)

use std::path::{Path, PathBuf};
use std::process::Command;

use dagraid_tests::prom::promtool_available;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn promtool(dir: &Path, args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_prometheus_config_and_alert_rules_pass_promtool() {
    if !promtool_available() {
        eprintln!("promtool not installed (Debian package prometheus): skipped");
        return;
    }
    let dir = deploy().join("prometheus");
    promtool(&dir, &["check", "config", "prometheus.yml"]);
    promtool(&dir, &["check", "rules", "alerts.yml"]);
    promtool(&dir, &["test", "rules", "alerts_test.yml"]);
}

#[test]
fn the_prometheus_config_scrapes_every_process_on_9464() {
    let text = std::fs::read_to_string(deploy().join("prometheus/prometheus.yml")).unwrap();
    assert!(text.contains("\"coordinator:9464\""), "{text}");
    for i in 1..=6 {
        assert!(text.contains(&format!("node{i}:9464")), "{text}");
    }
}

#[test]
fn the_dashboard_is_valid_json_on_the_provisioned_data_sources() {
    let text = std::fs::read_to_string(deploy().join("grafana/dashboards/dagraid.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dash["uid"], "dagraid");
    let panels = dash["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Throughput",
        "Latency p50 / p99",
        "DAGs by kind",
        "Recoveries",
        "Failed components",
        "Running rebuilds",
        "Spares available",
        "Bytes rebuilt",
        "Rebuild rate vs. limit",
        "Stripes left",
        "Blocks lost during rebuilds",
    ] {
        assert!(titles.contains(&want), "{titles:?}");
    }
    let sources =
        std::fs::read_to_string(deploy().join("grafana/provisioning/datasources/datasources.yml"))
            .unwrap();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let uid = p["datasource"]["uid"].as_str().unwrap();
        assert!(sources.contains(&format!("uid: {uid}")), "{uid}");
    }
    assert!(sources.contains("url: http://prometheus:9090"));
    assert!(sources.contains("url: http://jaeger:16686"));
}
