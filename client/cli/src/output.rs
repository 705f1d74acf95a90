//! What the verbs print: aligned tables for people, JSON for scripts.
//!
//! The JSON shapes are a contract (docs/CLI.md): states are the lowercase names of
//! [`VolumeState`](dagraid_client::VolumeState) and [`ComponentState`](dagraid_client::ComponentState), sizes are
//! bytes, each component names its `node`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use dagraid_client::size::Size;
use dagraid_client::{
    ClusterInfo, ComponentState, ParityJob, ParityJobKind, RebuildKind, RebuildProgress, VolumeInfo,
};

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
            "regions_total": r.regions_total,
            "regions_done": r.regions_done,
            "full": r.full,
        })),
        "parity_map": v.parity_map.as_ref().map(|m| json!({
            "region_bytes": m.region_bytes,
            "regions": m.regions,
            "dirty_regions": m.dirty_regions,
            "resync_regions": m.resync_regions,
            "cooldown_ms": m.cooldown.as_millis() as u64,
        })),
        "assembly": {
            "problem": v.assembly.problem,
            "needs_force": v.assembly.needs_force,
            "forced": v.assembly.forced,
            "at_risk": v.assembly.at_risk,
        },
        "rebuilds": v.rebuilds.iter().map(rebuild_json).collect::<Vec<_>>(),
        "rebuild_waiting": v.rebuild_waiting,
        "parity_job": v.parity_job.as_ref().map(parity_json),
    })
}

/// A parity check or rewrite as JSON; `null` for a rate limit that is not set and an ETA that
/// is not known.
pub fn parity_json(p: &ParityJob) -> Value {
    json!({
        "kind": p.kind.name(),
        "running": p.running,
        "completed": p.completed,
        "stripes_done": p.stripes_done,
        "stripes_total": p.stripes_total,
        "mismatches": p.mismatches,
        "mismatched_stripes": p.mismatched_stripes,
        "rate_bytes_per_second": p.rate_bytes_per_second,
        "rate_limit_bytes_per_second": (p.rate_limit_bytes_per_second > 0).then_some(p.rate_limit_bytes_per_second),
        "eta_seconds": (p.eta_seconds > 0).then_some(p.eta_seconds),
        "skipped_stripes": p.skipped_stripes,
        "failed_stripes": p.failed_stripes,
        "unreadable_blocks": p.unreadable_blocks,
        "rewritten_stripes": p.rewritten_stripes,
        "resumed_from": p.resumed_from,
        "error": p.error,
    })
}

/// The counts after a parity job's stripes: `, 2 mismatching stripes, 1 skipped`, each
/// starting with `, `, only those that are not zero.
pub fn parity_details(p: &ParityJob) -> String {
    let mut out = String::new();
    if p.running && p.rate_bytes_per_second > 0 {
        out.push_str(&format!(", {}", rate_text(p.rate_bytes_per_second)));
        if p.rate_limit_bytes_per_second > 0 {
            out.push_str(&format!(
                " (limit {})",
                rate_text(p.rate_limit_bytes_per_second)
            ));
        }
    }
    if p.running && p.eta_seconds > 0 {
        out.push_str(&format!(
            ", ETA {}",
            eta_text(Duration::from_secs(p.eta_seconds))
        ));
    }
    if p.kind == ParityJobKind::Check {
        out.push_str(&format!(", {} mismatching stripes", p.mismatches));
    } else {
        out.push_str(&format!(", {} stripes rewritten", p.rewritten_stripes));
    }
    for (n, what) in [
        (p.skipped_stripes, "skipped"),
        (p.failed_stripes, "failed"),
        (p.unreadable_blocks, "unreadable blocks"),
    ] {
        if n > 0 {
            out.push_str(&format!(", {n} {what}"));
        }
    }
    if p.resumed_from > 0 {
        out.push_str(&format!(", resumed at stripe {}", p.resumed_from));
    }
    out
}

/// What a parity job does or did: `parity check: 41% (1234/3000 stripes), 52 MiB/s, ETA 35s,
/// 0 mismatching stripes`; `parity check done: 3000 stripes, 2 mismatching stripes (17, 902)`.
pub fn parity_summary(p: &ParityJob) -> String {
    let kind = p.kind.name();
    let listed = if p.mismatched_stripes.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = p.mismatched_stripes.iter().map(u64::to_string).collect();
        let more = if p.mismatches > p.mismatched_stripes.len() as u64 {
            ", ..."
        } else {
            ""
        };
        format!(" (stripes {}{more})", list.join(", "))
    };
    let stripes = format!(
        "{}% ({}/{} stripes)",
        p.percent(),
        p.stripes_done,
        p.stripes_total
    );
    if p.running {
        let error = p
            .error
            .as_ref()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default();
        format!(
            "parity {kind}: {stripes}{}{listed}{error}",
            parity_details(p)
        )
    } else if p.completed {
        format!(
            "parity {kind} done: {} stripes{}{listed}",
            p.stripes_total,
            parity_details(p)
        )
    } else {
        format!(
            "parity {kind} stopped at {stripes}{}{listed}: {}",
            parity_details(p),
            p.error.as_deref().unwrap_or("no reason given")
        )
    }
}

/// One rebuild (reconstruction or copyback) as JSON; `null` for a rate limit that is not set
/// and an ETA that is not known.
pub fn rebuild_json(r: &RebuildProgress) -> Value {
    json!({
        "column": r.column,
        "kind": r.kind.as_str(),
        "node": r.node_id,
        "component_id": r.component_id,
        "running": r.running,
        "completed": r.completed,
        "stripes_done": r.stripes_done,
        "stripes_total": r.stripes_total,
        "fraction": r.fraction(),
        "bytes_done": r.bytes_done,
        "rate_bytes_per_second": r.rate_bytes_per_second,
        "rate_limit_bytes_per_second": r.rate_limit_bytes_per_second,
        "eta_seconds": r.eta.map(|d| d.as_secs()),
        "lost_blocks": r.lost_blocks,
        "error": r.error,
        "resumed_from": r.resumed_from,
        "stripes_checkpointed": r.stripes_checkpointed,
        "regions_resynced": r.regions_resynced,
        "regions_total": r.regions_total,
        "note": r.note,
    })
}

/// A duration the way people read an ETA: `35s`, `4m05s`, `2h07m`.
pub fn eta_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A rate in bytes per second: `52 MiB/s`, `1.5 GiB/s`.
pub fn rate_text(bytes_per_second: u64) -> String {
    format!("{}/s", Size(bytes_per_second))
}

/// Where a rebuild writes: `node6/spare-3`.
fn rebuild_target(r: &RebuildProgress) -> String {
    match (r.node_id.is_empty(), r.component_id.is_empty()) {
        (false, false) => format!("{}/{}", r.node_id, r.component_id),
        (false, true) => r.node_id.clone(),
        (true, false) => r.component_id.clone(),
        (true, true) => "a component the coordinator did not name".to_owned(),
    }
}

/// Stripes done of the whole: `41% (1234/3000 stripes)`.
fn stripes_text(r: &RebuildProgress) -> String {
    format!(
        "{}% ({}/{} stripes)",
        r.percent(),
        r.stripes_done,
        r.stripes_total
    )
}

/// The speed, ETA and notes of a running rebuild, each starting with `, `: the text after
/// [`stripes_text`] in a line, and the message beside a progress bar.
pub fn rebuild_details(r: &RebuildProgress) -> String {
    let mut out = String::new();
    if r.running {
        out.push_str(", ");
        out.push_str(&rate_text(r.rate_bytes_per_second));
        if let Some(limit) = r.rate_limit_bytes_per_second {
            let _ = write!(out, " (limit {})", rate_text(limit));
        }
        if let Some(eta) = r.eta {
            let _ = write!(out, ", ETA {}", eta_text(eta));
        }
    }
    match r.lost_blocks {
        0 => {}
        1 => out.push_str(", 1 block lost"),
        n => {
            let _ = write!(out, ", {n} blocks lost");
        }
    }
    if r.resumed_from > 0 {
        let _ = write!(out, ", resumed at stripe {}", r.resumed_from);
    }
    if r.kind == RebuildKind::ReAdd {
        let _ = write!(
            out,
            ", {} of {} dirty regions",
            r.regions_resynced, r.regions_total
        );
    }
    if let Some(note) = &r.note {
        let _ = write!(out, " ({note})");
    }
    if let (true, Some(e)) = (r.running, &r.error) {
        let _ = write!(out, ", retrying after an error: {e}");
    }
    out
}

/// What a rebuild does or did, without its column: `rebuilding onto node6/spare-3: 41%
/// (1234/3000 stripes), 52 MiB/s, ETA 35s`; `rebuilt onto node6/spare-3: done (3000 stripes,
/// 750 MiB)`; `rebuild onto node6/spare-3 stopped at 41% (1234/3000 stripes): <error>`.
pub fn rebuild_summary(r: &RebuildProgress) -> String {
    let target = rebuild_target(r);
    if r.completed {
        let what = match r.kind {
            RebuildKind::InPlace => format!("rebuilt in place on {target}"),
            RebuildKind::Copyback => format!("copied back to {target}"),
            RebuildKind::ReAdd => format!("re-added {target}"),
            RebuildKind::Spare | RebuildKind::Unknown => format!("rebuilt onto {target}"),
        };
        return format!(
            "{what}: done ({} stripes, {} written){}",
            r.stripes_total,
            Size(r.bytes_done),
            rebuild_details(r)
        );
    }
    if r.running {
        let what = match r.kind {
            RebuildKind::InPlace => format!("rebuilding in place on {target}"),
            RebuildKind::Copyback => format!("copying back to {target}"),
            RebuildKind::ReAdd => format!("re-adding {target}"),
            RebuildKind::Spare | RebuildKind::Unknown => format!("rebuilding onto {target}"),
        };
        return format!("{what}: {}{}", stripes_text(r), rebuild_details(r));
    }
    let what = match r.kind {
        RebuildKind::InPlace => format!("in-place rebuild on {target}"),
        RebuildKind::Copyback => format!("copyback to {target}"),
        RebuildKind::ReAdd => format!("re-add of {target}"),
        RebuildKind::Spare | RebuildKind::Unknown => format!("rebuild onto {target}"),
    };
    format!(
        "{what} stopped at {}{}: {}",
        stripes_text(r),
        rebuild_details(r),
        r.error
            .as_deref()
            .unwrap_or("the coordinator gave no reason")
    )
}

/// A component's state in the status table: with its column's progress while it is being
/// reconstructed or copied back (`reconstructing 41%`), and `(node gone)` when its node is.
fn component_state_cell(v: &VolumeInfo, c: &dagraid_client::ComponentInfo) -> String {
    let mut cell = c.state.to_string();
    if matches!(
        c.state,
        ComponentState::Reconstructing | ComponentState::Copyback
    ) && let Some(r) = v.rebuild_of(c.column).filter(|r| r.running)
    {
        let _ = write!(cell, " {}%", r.percent());
    }
    if c.gone {
        cell.push_str(" (node gone)");
    }
    cell
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
            "missed_checks": n.missed_checks,
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
                .filter(|c| c.state != ComponentState::Optimal)
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
    if dagraid_client::size::parse_size(&short) == Ok(bytes) {
        short
    } else {
        format!("{short} ({bytes} bytes)")
    }
}

/// The resync's line of `dagraid status`: progress, what it repaired, lost and skipped, and
/// its state (running, waiting to retry after an error, stopped, done).
fn resync_line(r: &dagraid_client::ResyncProgress) -> String {
    let mut line = format!("{} of {} stripes", r.stripes_done, r.stripes_total);
    if r.full {
        line.push_str(" (the whole volume: it kept no parity map)");
    } else if r.regions_total > 0 {
        let _ = write!(
            line,
            " in {} of {} dirty region{}",
            r.regions_done,
            r.regions_total,
            if r.regions_total == 1 { "" } else { "s" }
        );
    }
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

/// One volume in the manner of `raidctl -s`: layout, state, a line per component, counters,
/// and a line per rebuild, resync and assembly note that applies.
pub fn volume_status(v: &VolumeInfo) -> String {
    let (head, tail) = volume_status_parts(v, false);
    head + &tail
}

/// [`volume_status`] in two parts: up to the rebuilds' lines, and the notes after them (why a
/// rebuild waits, spares, assembly). With `bars_show_running`, the lines of running rebuilds
/// are left out: `status --watch` on a terminal draws them as bars between the two parts.
pub fn volume_status_parts(v: &VolumeInfo, bars_show_running: bool) -> (String, String) {
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
                component_state_cell(v, c),
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
    if let Some(m) = v.parity_map.as_ref().filter(|m| m.dirty_regions > 0) {
        let _ = writeln!(
            out,
            "  parity map: {} of {} regions of {} dirty{}",
            m.dirty_regions,
            m.regions,
            Size(m.region_bytes),
            if m.resync_regions > 0 {
                format!(" ({} awaiting their resync)", m.resync_regions)
            } else {
                String::new()
            }
        );
    }
    for r in v
        .rebuilds
        .iter()
        .filter(|r| !(bars_show_running && r.running))
    {
        let _ = writeln!(out, "  column {}: {}", r.column, rebuild_summary(r));
    }
    if let Some(p) = &v.parity_job {
        let _ = writeln!(out, "  {}", parity_summary(p));
    }
    let head = std::mem::take(&mut out);
    if let Some(waiting) = &v.rebuild_waiting {
        let _ = writeln!(out, "  rebuild waiting: {waiting}");
    }
    // Spares matter once a column is not optimal, or when there are some; an optimal volume
    // of a cluster without a pool prints nothing more.
    let not_optimal = v
        .components
        .iter()
        .any(|c| c.state != ComponentState::Optimal);
    if v.spares_available > 0 || not_optimal || !v.rebuilds.is_empty() {
        let _ = writeln!(out, "  spares available: {}", v.spares_available);
    }
    if let Some(problem) = &v.assembly.problem {
        let _ = writeln!(out, "  not assembled: {problem}");
    }
    if let Some(risk) = v.assembly.at_risk.as_ref().filter(|_| v.assembly.forced) {
        let _ = writeln!(out, "  assembled by force; at risk: {risk}");
    }
    (head, out)
}

/// `dagraid status` as text: the cluster (when given: the status of every volume), then each
/// volume, a blank line between.
pub fn status_text(cluster: Option<&ClusterInfo>, volumes: &[VolumeInfo]) -> String {
    let mut out = String::new();
    if let Some(c) = cluster {
        out.push_str(&cluster_status(c));
        out.push('\n');
        if volumes.is_empty() {
            out.push_str("no volumes\n");
        }
    }
    for (i, v) in volumes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&volume_status(v));
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
    use dagraid_client::{ComponentInfo, ComponentState, RaidLevel, VolumeCounters, VolumeState};

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
            parity_map: None,
            assembly: Default::default(),
            lost_bytes: 0,
            lost_ranges: 0,
            rebuilds: Vec::new(),
            rebuild_waiting: None,
            parity_job: None,
            spares_available: 0,
        }
    }

    fn running_rebuild() -> RebuildProgress {
        RebuildProgress {
            column: 1,
            kind: RebuildKind::Spare,
            node_id: "node6".into(),
            component_id: "spare-1".into(),
            running: true,
            completed: false,
            stripes_done: 1234,
            stripes_total: 3000,
            bytes_done: 77 << 20,
            rate_bytes_per_second: 52 << 20,
            rate_limit_bytes_per_second: Some(64 << 20),
            eta: Some(Duration::from_secs(35)),
            lost_blocks: 0,
            error: None,
            resumed_from: 0,
            ..RebuildProgress::default()
        }
    }

    #[test]
    fn a_re_add_line_counts_its_dirty_regions() {
        let r = RebuildProgress {
            kind: RebuildKind::ReAdd,
            regions_resynced: 2,
            regions_total: 5,
            ..running_rebuild()
        };
        let line = rebuild_summary(&r);
        assert!(line.starts_with("re-adding node6/spare-1: 41%"), "{line}");
        assert!(line.contains(", 2 of 5 dirty regions"), "{line}");
        let full = RebuildProgress {
            kind: RebuildKind::InPlace,
            note: Some("re-add fell back to a full reconstruction: why".into()),
            ..running_rebuild()
        };
        assert!(
            rebuild_summary(&full).contains("(re-add fell back to a full reconstruction: why)"),
            "{}",
            rebuild_summary(&full)
        );
        assert_eq!(rebuild_json(&r)["regions_total"], 5);
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
        v.resync = Some(dagraid_client::ResyncProgress {
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
        v.resync = Some(dagraid_client::ResyncProgress {
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
        // After a crash: the dirty regions, and the map's line.
        v.resync = Some(dagraid_client::ResyncProgress {
            running: true,
            stripes_done: 4,
            stripes_total: 32,
            regions_total: 2,
            regions_done: 0,
            ..Default::default()
        });
        v.parity_map = Some(dagraid_client::ParityMapInfo {
            region_bytes: 64 << 20,
            regions: 16,
            dirty_regions: 3,
            resync_regions: 2,
            cooldown: std::time::Duration::from_secs(10),
        });
        let text = volume_status(&v);
        assert!(
            text.contains("  resync: 4 of 32 stripes in 0 of 2 dirty regions, running\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  parity map: 3 of 16 regions of 64 MiB dirty (2 awaiting their resync)\n"
            ),
            "{text}"
        );
        let json = volume_json(&v);
        assert_eq!(json["resync"]["regions_total"], 2);
        assert_eq!(json["parity_map"]["dirty_regions"], 3);
        assert_eq!(json["parity_map"]["cooldown_ms"], 10_000);
    }

    #[test]
    fn rebuild_lines_say_what_where_how_far_how_fast_and_how_long() {
        let mut r = running_rebuild();
        assert_eq!(
            rebuild_summary(&r),
            "rebuilding onto node6/spare-1: 41% (1234/3000 stripes), 52 MiB/s (limit 64 MiB/s), ETA 35s"
        );
        r.lost_blocks = 3;
        r.resumed_from = 1000;
        r.error = Some("node2: timeout".into());
        r.rate_limit_bytes_per_second = None;
        r.eta = Some(Duration::from_secs(245));
        assert_eq!(
            rebuild_summary(&r),
            "rebuilding onto node6/spare-1: 41% (1234/3000 stripes), 52 MiB/s, ETA 4m05s, 3 blocks lost, resumed at stripe 1000, retrying after an error: node2: timeout"
        );
        r.running = false;
        assert_eq!(
            rebuild_summary(&r),
            "rebuild onto node6/spare-1 stopped at 41% (1234/3000 stripes), 3 blocks lost, resumed at stripe 1000: node2: timeout"
        );
        let mut r = running_rebuild();
        r.kind = RebuildKind::Copyback;
        r.node_id = "node2".into();
        r.component_id = "c1-r".into();
        r.running = false;
        r.completed = true;
        r.stripes_done = 3000;
        assert_eq!(
            rebuild_summary(&r),
            "copied back to node2/c1-r: done (3000 stripes, 77 MiB written)"
        );
        r.kind = RebuildKind::InPlace;
        r.completed = false;
        r.running = true;
        r.eta = None;
        assert!(
            rebuild_summary(&r).starts_with("rebuilding in place on node2/c1-r: 100% (3000/3000"),
            "{}",
            rebuild_summary(&r)
        );
        assert_eq!(eta_text(Duration::from_secs(7322)), "2h02m");
    }

    #[test]
    fn status_shows_rebuilds_progress_waiting_and_spares() {
        let mut v = volume();
        // An optimal volume without spares prints nothing new.
        v.state = VolumeState::Optimal;
        v.components[1].state = ComponentState::Optimal;
        assert!(
            !volume_status(&v).contains("spares"),
            "{}",
            volume_status(&v)
        );
        v.state = VolumeState::Reconstructing;
        v.components[1].state = ComponentState::Reconstructing;
        v.rebuilds = vec![running_rebuild()];
        v.rebuild_waiting = Some("column 2: no spare fits".into());
        v.spares_available = 2;
        let text = volume_status(&v);
        assert!(
            text.lines()
                .any(|l| l.contains("node2") && l.ends_with("reconstructing 41%")),
            "{text}"
        );
        assert!(
            text.contains("\n  column 1: rebuilding onto node6/spare-1: 41% (1234/3000 stripes)"),
            "{text}"
        );
        assert!(
            text.contains("\n  rebuild waiting: column 2: no spare fits\n"),
            "{text}"
        );
        assert!(text.contains("\n  spares available: 2\n"), "{text}");
        // status --watch on a terminal draws running rebuilds as bars instead.
        let (head, tail) = volume_status_parts(&v, true);
        assert!(!head.contains("rebuilding onto"), "{head}");
        assert!(tail.starts_with("  rebuild waiting: "), "{tail}");
        assert_eq!(
            head + &tail,
            text.replace(
                &format!("  column 1: {}\n", rebuild_summary(&v.rebuilds[0])),
                ""
            )
        );

        let json = volume_json(&v);
        let r = &json["rebuilds"][0];
        assert_eq!(r["column"], 1);
        assert_eq!(r["kind"], "spare");
        assert_eq!(r["node"], "node6");
        assert_eq!(r["component_id"], "spare-1");
        assert_eq!(r["running"], true);
        assert_eq!(r["completed"], false);
        assert_eq!(r["stripes_done"], 1234);
        assert_eq!(r["stripes_total"], 3000);
        assert_eq!(r["fraction"], 1234.0 / 3000.0);
        assert_eq!(r["bytes_done"], 77 << 20);
        assert_eq!(r["rate_bytes_per_second"], 52 << 20);
        assert_eq!(r["rate_limit_bytes_per_second"], 64 << 20);
        assert_eq!(r["eta_seconds"], 35);
        assert_eq!(r["lost_blocks"], 0);
        assert_eq!(r["error"], Value::Null);
        assert_eq!(r["resumed_from"], 0);
        assert_eq!(json["rebuild_waiting"], "column 2: no spare fits");
        assert_eq!(json["spares_available"], 2);
    }

    #[test]
    fn status_text_is_the_cluster_then_each_volume() {
        let cluster = ClusterInfo {
            cluster_id: "c".into(),
            epoch: 1,
            max_io_bytes: 1 << 20,
            nodes: Vec::new(),
        };
        let text = status_text(Some(&cluster), &[]);
        assert!(text.ends_with("\n\nno volumes\n"), "{text:?}");
        let text = status_text(None, &[volume(), volume()]);
        assert!(text.starts_with("volume vol0"), "{text}");
        assert_eq!(text.matches("\n\nvolume vol0").count(), 1, "{text}");
    }

    #[test]
    fn volume_list_counts_non_optimal_columns() {
        let text = volume_list(&[volume()]);
        assert!(text.lines().nth(1).unwrap().ends_with("1 of 3"), "{text}");
        assert_eq!(volume_list(&[]), "no volumes\n");
    }
}
