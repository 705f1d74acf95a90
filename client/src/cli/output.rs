//! What the verbs print: aligned tables for people, JSON for scripts.
//!
//! The JSON shapes are a contract (docs/CLI.md): states are the lowercase names of
//! [`VolumeState`](crate::VolumeState) and [`ComponentState`](crate::ComponentState), sizes are
//! bytes, each component names its `node`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::size::Size;
use crate::{ClusterInfo, VolumeInfo};

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < widths.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// One volume as JSON.
pub fn volume_json(v: &VolumeInfo) -> Value {
    json!({
        "name": v.name,
        "id": v.id,
        "level": v.level.as_str(),
        "size_bytes": v.size_bytes,
        "columns": v.columns,
        "stripe_unit_bytes": v.stripe_unit_bytes,
        "block_size": v.block_size,
        "state": v.state.as_str(),
        "components": v.components.iter().map(|c| json!({
            "column": c.column,
            "node": c.node_id,
            "address": c.node_address,
            "component_id": c.component_id,
            "state": c.state.as_str(),
            "gone": c.gone,
            "size_bytes": c.size_bytes,
        })).collect::<Vec<_>>(),
        "counters": {
            "reads": v.counters.reads,
            "writes": v.counters.writes,
            "bytes_read": v.counters.bytes_read,
            "bytes_written": v.counters.bytes_written,
            "errors": v.counters.errors,
            "dags_rolled_forward": v.counters.dags_rolled_forward,
            "dags_rolled_backward": v.counters.dags_rolled_backward,
            "lost_stripes": v.counters.lost_stripes,
        },
        "lost_bytes": v.lost_bytes,
        "lost_ranges": v.lost_ranges,
        "spares_available": v.spares_available,
        "resync": v.resync.as_ref().map(|r| json!({
            "running": r.running,
            "stripes_done": r.stripes_done,
            "stripes_total": r.stripes_total,
            "stripes_skipped": r.stripes_skipped,
            "stripes_repaired": r.stripes_repaired,
            "stripes_lost": r.stripes_lost,
            "error": r.error,
            "retries": r.retries,
        })),
        "assembly": {
            "problem": v.assembly.problem,
            "needs_force": v.assembly.needs_force,
            "forced": v.assembly.forced,
            "at_risk": v.assembly.at_risk,
        },
    })
}

/// The cluster as JSON.
pub fn cluster_json(c: &ClusterInfo) -> Value {
    json!({
        "cluster_id": c.cluster_id,
        "epoch": c.epoch,
        "max_io_bytes": c.max_io_bytes,
        "nodes": c.nodes.iter().map(|n| json!({
            "node": n.node_id,
            "address": n.address,
            "reachable": n.reachable,
            "components": n.components,
            "detail": n.detail,
        })).collect::<Vec<_>>(),
    })
}

/// `dagraid status --json`: the cluster and the volumes shown.
pub fn status_json(cluster: &ClusterInfo, volumes: &[VolumeInfo]) -> Value {
    json!({
        "cluster": cluster_json(cluster),
        "volumes": volumes.iter().map(volume_json).collect::<Vec<_>>(),
    })
}

/// `dagraid volume list`: one line per volume.
pub fn volume_list(volumes: &[VolumeInfo]) -> String {
    if volumes.is_empty() {
        return "no volumes\n".to_owned();
    }
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|v| {
            let failed = v
                .components
                .iter()
                .filter(|c| c.state != crate::ComponentState::Optimal)
                .count();
            vec![
                v.name.clone(),
                v.level.to_string(),
                Size(v.size_bytes).to_string(),
                v.columns.to_string(),
                Size(v.stripe_unit_bytes).to_string(),
                v.state.to_string(),
                if failed == 0 {
                    "-".to_owned()
                } else {
                    format!("{failed} of {}", v.components.len())
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "LEVEL",
            "SIZE",
            "COLUMNS",
            "STRIPE UNIT",
            "STATE",
            "NOT OPTIMAL",
        ],
        &rows,
    )
}

/// `1 GiB`, or `64.0 MiB (67125248 bytes)` when the short form is rounded.
fn exact_size(bytes: u64) -> String {
    let short = Size(bytes).to_string();
    if crate::size::parse_size(&short) == Ok(bytes) {
        short
    } else {
        format!("{short} ({bytes} bytes)")
    }
}

/// The resync's line of `dagraid status`: progress, what it repaired, lost and skipped, and
/// its state (running, waiting to retry after an error, stopped, done).
fn resync_line(r: &crate::ResyncProgress) -> String {
    let mut line = format!("{} of {} stripes", r.stripes_done, r.stripes_total);
    let mut notes = Vec::new();
    if r.stripes_repaired > 0 {
        notes.push(format!("{} repaired", r.stripes_repaired));
    }
    if r.stripes_lost > 0 {
        notes.push(format!("{} with lost blocks", r.stripes_lost));
    }
    if r.stripes_skipped > 0 {
        notes.push(format!(
            "{} skipped: their data is on a failed column",
            r.stripes_skipped
        ));
    }
    if !notes.is_empty() {
        let _ = write!(line, " ({})", notes.join(", "));
    }
    let retries = match r.retries {
        0 => String::new(),
        1 => " (1 retry so far)".to_owned(),
        n => format!(" ({n} retries so far)"),
    };
    match (&r.error, r.running) {
        (Some(e), true) => {
            let _ = write!(line, ", retrying after an error{retries}: {e}");
        }
        (Some(e), false) => {
            let _ = write!(line, ", stopped: {e}");
        }
        (None, true) => line.push_str(", running"),
        (None, false) => {
            line.push_str(", done");
            if r.retries > 0 {
                let _ = write!(
                    line,
                    " after {} retr{}",
                    r.retries,
                    if r.retries == 1 { "y" } else { "ies" }
                );
            }
        }
    }
    line
}

/// One volume in the manner of `raidctl -s`: layout, state, a line per component, counters.
pub fn volume_status(v: &VolumeInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "volume {}: {}, {}, {} columns, stripe unit {}, block {}: {}",
        v.name,
        v.level,
        exact_size(v.size_bytes),
        v.columns,
        Size(v.stripe_unit_bytes),
        Size(u64::from(v.block_size)),
        v.state
    );
    let rows: Vec<Vec<String>> = v
        .components
        .iter()
        .map(|c| {
            vec![
                c.column.to_string(),
                c.node_id.clone(),
                c.node_address.clone(),
                c.component_id.clone(),
                if c.gone {
                    format!("{} (node gone)", c.state)
                } else {
                    c.state.to_string()
                },
            ]
        })
        .collect();
    for line in table(&["COLUMN", "NODE", "ADDRESS", "COMPONENT", "STATE"], &rows).lines() {
        let _ = writeln!(out, "  {line}");
    }
    let k = &v.counters;
    let _ = writeln!(
        out,
        "  reads {} ({}), writes {} ({}), errors {}, DAGs rolled forward {} / backward {}, lost stripes {}",
        k.reads,
        Size(k.bytes_read),
        k.writes,
        Size(k.bytes_written),
        k.errors,
        k.dags_rolled_forward,
        k.dags_rolled_backward,
        k.lost_stripes
    );
    if v.lost_bytes > 0 {
        let _ = writeln!(
            out,
            "  LOST: {} in {} range(s) answer DATA_LOSS until written again (`dagraid volume lost {}`)",
            exact_size(v.lost_bytes),
            v.lost_ranges,
            v.name
        );
    }
    if let Some(r) = &v.resync {
        let _ = writeln!(out, "  resync: {}", resync_line(r));
    }
    if let Some(problem) = &v.assembly.problem {
        let _ = writeln!(out, "  not assembled: {problem}");
    }
    if let Some(risk) = v.assembly.at_risk.as_ref().filter(|_| v.assembly.forced) {
        let _ = writeln!(out, "  assembled by force; at risk: {risk}");
    }
    out
}

/// The cluster's header and its storage nodes.
pub fn cluster_status(c: &ClusterInfo) -> String {
    let reachable = c.nodes.iter().filter(|n| n.reachable).count();
    let mut out = format!(
        "cluster {}: epoch {}, {} storage nodes ({} reachable), max I/O {}\n",
        c.cluster_id,
        c.epoch,
        c.nodes.len(),
        reachable,
        Size(c.max_io_bytes)
    );
    let rows: Vec<Vec<String>> = c
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.clone(),
                n.address.clone(),
                if n.reachable { "yes" } else { "no" }.to_owned(),
                n.components.to_string(),
                n.detail.clone(),
            ]
        })
        .collect();
    for line in table(
        &["NODE", "ADDRESS", "REACHABLE", "COMPONENTS", "DETAIL"],
        &rows,
    )
    .lines()
    {
        let _ = writeln!(out, "  {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ComponentInfo, ComponentState, RaidLevel, VolumeCounters, VolumeState};

    fn volume() -> VolumeInfo {
        VolumeInfo {
            name: "vol0".into(),
            id: "id-1".into(),
            level: RaidLevel::Raid5,
            columns: 3,
            stripe_unit_bytes: 65536,
            block_size: 4096,
            size_bytes: 1 << 30,
            state: VolumeState::Degraded,
            components: (0..3)
                .map(|i| ComponentInfo {
                    column: i,
                    node_id: format!("node{}", i + 1),
                    node_address: format!("127.0.0.1:{}", 7001 + i),
                    component_id: format!("c{i}"),
                    state: if i == 1 {
                        ComponentState::Failed
                    } else {
                        ComponentState::Optimal
                    },
                    size_bytes: 1 << 29,
                    gone: false,
                })
                .collect(),
            counters: VolumeCounters::default(),
            resync: None,
            assembly: Default::default(),
            lost_bytes: 0,
            lost_ranges: 0,
            spares_available: 0,
        }
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "LONG HEADER", "C"],
            &[vec!["wide cell".into(), "x".into(), "y".into()]],
        );
        assert_eq!(t, "A          LONG HEADER  C\nwide cell  x            y\n");
    }

    #[test]
    fn status_json_has_the_documented_keys() {
        let v = volume_json(&volume());
        assert_eq!(v["name"], "vol0");
        assert_eq!(v["state"], "degraded");
        assert_eq!(v["level"], "raid5");
        let c = &v["components"][1];
        assert_eq!(c["column"], 1);
        assert_eq!(c["node"], "node2");
        assert_eq!(c["state"], "failed");
    }

    #[test]
    fn volume_status_lists_every_component() {
        let text = volume_status(&volume());
        assert!(
            text.starts_with("volume vol0: raid5, 1 GiB, 3 columns, stripe unit 64 KiB"),
            "{text}"
        );
        assert!(text.contains("degraded"), "{text}");
        assert_eq!(text.lines().filter(|l| l.contains("127.0.0.1:")).count(), 3);
        assert!(
            text.lines()
                .any(|l| l.contains("node2") && l.ends_with("failed")),
            "{text}"
        );
    }

    #[test]
    fn the_resync_line_shows_repairs_losses_errors_and_retries() {
        let mut v = volume();
        v.resync = Some(crate::ResyncProgress {
            running: true,
            stripes_done: 3,
            stripes_total: 8,
            stripes_repaired: 1,
            stripes_lost: 2,
            error: Some("stripe 3: timeout".into()),
            retries: 2,
            ..Default::default()
        });
        let text = volume_status(&v);
        let line = text.lines().find(|l| l.contains("resync:")).unwrap();
        assert_eq!(
            line,
            "  resync: 3 of 8 stripes (1 repaired, 2 with lost blocks), retrying after an error (2 retries so far): stripe 3: timeout"
        );
        let json = volume_json(&v);
        assert_eq!(json["resync"]["stripes_repaired"], 1);
        assert_eq!(json["resync"]["stripes_lost"], 2);
        assert_eq!(json["resync"]["retries"], 2);
        v.resync = Some(crate::ResyncProgress {
            stripes_done: 8,
            stripes_total: 8,
            retries: 1,
            ..Default::default()
        });
        let text = volume_status(&v);
        assert!(
            text.contains("  resync: 8 of 8 stripes, done after 1 retry\n"),
            "{text}"
        );
    }

    #[test]
    fn volume_list_counts_non_optimal_columns() {
        let text = volume_list(&[volume()]);
        assert!(text.lines().nth(1).unwrap().ends_with("1 of 3"), "{text}");
        assert_eq!(volume_list(&[]), "no volumes\n");
    }
}
