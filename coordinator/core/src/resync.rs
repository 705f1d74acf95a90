//! Resync of a stripe whose data does not all read back: what the parity rewrite
//! ([`crate::dag::builders::parity_rewrite`]) refuses, because a data unit (RAID 1: a primary
//! copy) answered data loss.
//!
//! After an unclean shutdown the stripe's redundancy is suspect (a write may have landed on some
//! columns and not on others), so it cannot simply rebuild a bad block the way a degraded read
//! does. Block row by block row:
//!
//! - **RAID 1**: a bad block of one copy is rebuilt from the other copy when that one reads
//!   back (the secondary repairs the primary); the pair's copies are then made equal again.
//! - **RAID 6**: one bad data block in a row is rebuilt twice, from P and from Q, two
//!   independent equations for one unknown. When both agree (and only then) the stripe's
//!   redundancy matched its data in that row, and the block is rebuilt with that value.
//! - **Otherwise** (RAID 4/5, where the one equation is the suspect parity itself; RAID 6 when P
//!   and Q disagree, or a second data block, P or Q is bad in the row; both copies of a RAID 1
//!   pair bad): the block is **lost**. Exactly the volume blocks of the bad component blocks are
//!   recorded lost (not the whole stripe: the other blocks read back with good checksums and
//!   hold what was last written to them). The caller makes the lost set durable before any
//!   write, then the bad blocks are overwritten with zeros, so the stripe's columns agree again.
//!
//! Then the stripe's redundancy is recomputed from the (repaired) data and written whole: P and
//! Q, or RAID 1's secondaries. Everything runs under the stripe's whole-stripe write lock, taken
//! by [`crate::access::Array::resync_stripe`], which also turns the I/O errors met here into
//! component failures like the access pipeline does. No DAG: this is a slow path of a
//! background job, met once per bad block.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use crate::dag::ComponentTable;
use crate::io::{IoError, IoErrorKind};
use crate::layout::{ColumnSet, Layout, RaidLevel, StripeLayout};
use crate::parity::pq;

/// How the resync left one stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StripeOutcome {
    /// Its redundancy was rewritten from its data.
    Rewritten,
    /// A data unit (RAID 4/5/6) is on a failed column, in a forced assembly: its parity is the
    /// only way to rebuild that data, so the stripe was left as it was.
    Skipped,
    /// Blocks that answered data loss were rebuilt from redundancy (RAID 1: the other copy;
    /// RAID 6: P and Q agreeing) and written back; the redundancy was rewritten.
    Repaired,
    /// Blocks that answered data loss could not be rebuilt: they were recorded lost (durably),
    /// overwritten with zeros, and the redundancy rewritten from the data.
    Lost,
}

impl StripeOutcome {
    /// Short stable name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            StripeOutcome::Rewritten => "rewritten",
            StripeOutcome::Skipped => "skipped",
            StripeOutcome::Repaired => "repaired",
            StripeOutcome::Lost => "lost",
        }
    }
}

/// What the resync did to one stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeResync {
    /// How the stripe was left.
    pub outcome: StripeOutcome,
    /// Columns marked failed on the way.
    pub marked_failed: Vec<usize>,
    /// Volume blocks recorded lost.
    pub lost_blocks: Vec<Range<u64>>,
}

/// A component call that failed with something other than data loss.
#[derive(Debug, Clone)]
pub(crate) struct ColumnError {
    /// The column.
    pub(crate) column: usize,
    /// What it answered.
    pub(crate) error: IoError,
}

/// One column's unit of the stripe as read: its bytes, and which blocks answered data loss
/// (their bytes are zeros).
#[derive(Debug, Clone)]
pub(crate) struct UnitImage {
    pub(crate) data: Vec<u8>,
    pub(crate) bad: Vec<bool>,
}

impl UnitImage {
    pub(crate) fn row(&self, block: usize, bs: usize) -> &[u8] {
        &self.data[block * bs..(block + 1) * bs]
    }

    pub(crate) fn good(&self, block: usize) -> bool {
        !self.bad[block]
    }
}

/// The stripe's units as read, by column; `None` for a column that is missing for the stripe.
#[derive(Debug, Clone)]
pub(crate) struct StripeImage {
    pub(crate) units: Vec<Option<UnitImage>>,
}

/// What to do to the stripe: the volume blocks to record lost first, then the writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct RepairPlan {
    /// Volume blocks that could not be rebuilt.
    pub(crate) lost: Vec<Range<u64>>,
    /// Blocks rebuilt from redundancy.
    pub(crate) repaired_blocks: u64,
    /// `(column, first component block, whole blocks)`.
    pub(crate) writes: Vec<(usize, u64, Bytes)>,
}

impl RepairPlan {
    /// The outcome the plan gives the stripe.
    pub(crate) fn outcome(&self) -> StripeOutcome {
        if !self.lost.is_empty() {
            StripeOutcome::Lost
        } else if self.repaired_blocks > 0 {
            StripeOutcome::Repaired
        } else {
            StripeOutcome::Rewritten
        }
    }
}

/// Runs `call` with the engine's per-call deadline, like a DAG's disk node.
async fn with_deadline<T>(
    deadline: Duration,
    component: &str,
    start_block: u64,
    block_count: u64,
    call: impl std::future::Future<Output = Result<T, IoError>>,
) -> Result<T, IoError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(IoError::new(
            IoErrorKind::Timeout,
            component,
            start_block,
            block_count,
            format!("no answer within {deadline:?}"),
        )),
    }
}

/// Reads every unit of the stripe on the columns not `missing`. A unit that answers data loss is
/// read again block by block, so its good blocks are known and its bad ones named.
pub(crate) async fn read_stripe(
    layout: &Layout,
    components: &ComponentTable,
    sl: &StripeLayout,
    missing: &ColumnSet,
    deadline: Duration,
) -> Result<StripeImage, ColumnError> {
    let unit = sl.component_blocks();
    let bs = layout.geometry().block_size() as usize;
    let reads = (0..layout.columns()).map(|column| async move {
        if missing.contains(column) {
            return Ok(None);
        }
        let io = &components[column];
        let fail = |error| ColumnError { column, error };
        let count = u32::try_from(unit.count).map_err(|_| {
            fail(IoError::new(
                IoErrorKind::InvalidRequest,
                io.id(),
                unit.first,
                unit.count,
                "stripe unit too large for one read",
            ))
        })?;
        let whole = with_deadline(
            deadline,
            io.id(),
            unit.first,
            unit.count,
            io.read(unit.first, count),
        )
        .await;
        match whole {
            Ok(data) if data.len() == count as usize * bs => Ok(Some(UnitImage {
                data: data.to_vec(),
                bad: vec![false; count as usize],
            })),
            Ok(data) => Err(fail(IoError::new(
                IoErrorKind::Other,
                io.id(),
                unit.first,
                unit.count,
                format!("read answered {} bytes", data.len()),
            ))),
            Err(e) if matches!(e.kind, IoErrorKind::DataLoss { .. }) => {
                let mut image = UnitImage {
                    data: vec![0; count as usize * bs],
                    bad: vec![false; count as usize],
                };
                for b in 0..count as usize {
                    let block = unit.first + b as u64;
                    match with_deadline(deadline, io.id(), block, 1, io.read(block, 1)).await {
                        Ok(data) if data.len() == bs => {
                            image.data[b * bs..(b + 1) * bs].copy_from_slice(&data);
                        }
                        Err(e) if matches!(e.kind, IoErrorKind::DataLoss { .. }) => {
                            image.bad[b] = true;
                        }
                        Ok(data) => {
                            return Err(fail(IoError::new(
                                IoErrorKind::Other,
                                io.id(),
                                block,
                                1,
                                format!("read answered {} bytes", data.len()),
                            )));
                        }
                        Err(e) => return Err(fail(e)),
                    }
                }
                Ok(Some(image))
            }
            Err(e) => Err(fail(e)),
        }
    });
    let units = futures::future::join_all(reads)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StripeImage { units })
}

/// Contiguous runs of `true` in `flags`.
fn runs(flags: &[bool]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for (i, &f) in flags.iter().enumerate() {
        if !f {
            continue;
        }
        match out.last_mut() {
            Some(r) if r.end == i => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// Adds block `block` to `ranges` (blocks pushed in increasing order), merging with the last
/// range when adjacent.
pub(crate) fn push_block(ranges: &mut Vec<Range<u64>>, block: u64) {
    match ranges.last_mut() {
        Some(r) if r.end == block => r.end = block + 1,
        _ => ranges.push(block..block + 1),
    }
}

/// Decides the stripe's repair from its image: which blocks are rebuilt, which are lost, and
/// every write that leaves the stripe's columns consistent. Refuses a RAID 4/5/6 stripe with a
/// data unit on a missing column (its parity is needed to rebuild that unit).
pub(crate) fn plan(
    layout: &Layout,
    sl: &StripeLayout,
    image: &StripeImage,
) -> Result<RepairPlan, String> {
    let bs = layout.geometry().block_size() as usize;
    let unit = sl.component_blocks();
    let rows = unit.count as usize;
    let k = sl.data_units();
    // The stripe's first volume block; data unit i's blocks follow at i * rows.
    let first_volume_block = sl.stripe() * k as u64 * unit.count;
    let mut out = RepairPlan::default();
    match layout.level() {
        RaidLevel::Raid0 => return Err("RAID 0 has no redundancy to resync".into()),
        RaidLevel::Raid1 => {
            for (i, primary) in sl.data_columns() {
                let Some(secondary) = sl.mirror_column(i) else {
                    continue;
                };
                let copies = [primary, secondary];
                let present: Vec<(usize, &UnitImage)> = copies
                    .iter()
                    .filter_map(|&c| image.units[c].as_ref().map(|u| (c, u)))
                    .collect();
                if present.is_empty() {
                    continue;
                }
                let mut value = vec![0u8; rows * bs];
                for b in 0..rows {
                    match present.iter().find(|(_, u)| u.good(b)) {
                        Some((_, u)) => {
                            value[b * bs..(b + 1) * bs].copy_from_slice(u.row(b, bs));
                            out.repaired_blocks +=
                                present.iter().filter(|(_, u)| !u.good(b)).count() as u64;
                        }
                        None => {
                            push_block(&mut out.lost, first_volume_block + (i * rows + b) as u64)
                        }
                    }
                }
                // Every live copy ends equal to the value: the primary where it changed, the
                // secondary whole (the copy the parity rewrite makes anyway).
                for (column, u) in present {
                    if column == primary {
                        let changed: Vec<bool> = (0..rows)
                            .map(|b| !u.good(b) || u.row(b, bs) != &value[b * bs..(b + 1) * bs])
                            .collect();
                        for r in runs(&changed) {
                            out.writes.push((
                                column,
                                unit.first + r.start as u64,
                                Bytes::copy_from_slice(&value[r.start * bs..r.end * bs]),
                            ));
                        }
                    } else {
                        out.writes
                            .push((column, unit.first, Bytes::copy_from_slice(&value)));
                    }
                }
            }
        }
        RaidLevel::Raid4 | RaidLevel::Raid5 | RaidLevel::Raid6 => {
            let mut data: Vec<(usize, UnitImage)> = Vec::with_capacity(k);
            for (i, column) in sl.data_columns() {
                let Some(u) = image.units[column].clone() else {
                    return Err(format!(
                        "data unit {i} is on column {column}, which is missing: its stripe's parity is what rebuilds it"
                    ));
                };
                data.push((column, u));
            }
            let p = sl.p_column().and_then(|c| image.units[c].as_ref());
            let q = sl.q_column().and_then(|c| image.units[c].as_ref());
            // By row, then data unit: which blocks the repair rewrites.
            let mut changed: Vec<Vec<bool>> = vec![vec![false; k]; rows];
            for (b, changed_in_row) in changed.iter_mut().enumerate() {
                let bad: Vec<usize> = (0..k).filter(|&i| !data[i].1.good(b)).collect();
                if bad.is_empty() {
                    continue;
                }
                let rebuilt = match (bad.as_slice(), p, q) {
                    (&[x], Some(p), Some(q)) if p.good(b) && q.good(b) => {
                        let survivors: Vec<Option<&[u8]>> = (0..k)
                            .map(|i| (i != x).then(|| data[i].1.row(b, bs)))
                            .collect();
                        let mut from_p = vec![0u8; bs];
                        let mut from_q = vec![0u8; bs];
                        let solved = pq::recover_data_from_p(&survivors, p.row(b, bs), &mut from_p)
                            .and_then(|()| {
                                pq::recover_data_from_q(&survivors, q.row(b, bs), &mut from_q)
                            });
                        match solved {
                            Ok(()) if from_p == from_q => Some((x, from_p)),
                            Ok(()) => None,
                            Err(e) => return Err(format!("stripe {}: {e}", sl.stripe())),
                        }
                    }
                    _ => None,
                };
                match rebuilt {
                    Some((x, value)) => {
                        data[x].1.data[b * bs..(b + 1) * bs].copy_from_slice(&value);
                        changed_in_row[x] = true;
                        out.repaired_blocks += 1;
                    }
                    None => {
                        for &i in &bad {
                            data[i].1.data[b * bs..(b + 1) * bs].fill(0);
                            changed_in_row[i] = true;
                            push_block(&mut out.lost, first_volume_block + (i * rows + b) as u64);
                        }
                    }
                }
            }
            out.lost.sort_by_key(|r| r.start);
            for (i, (column, u)) in data.iter().enumerate() {
                let unit_changed: Vec<bool> = changed.iter().map(|row| row[i]).collect();
                for r in runs(&unit_changed) {
                    out.writes.push((
                        *column,
                        unit.first + r.start as u64,
                        Bytes::copy_from_slice(&u.data[r.start * bs..r.end * bs]),
                    ));
                }
            }
            let units: Vec<&[u8]> = data.iter().map(|(_, u)| u.data.as_slice()).collect();
            let len = rows * bs;
            if let Some(c) = sl.p_column().filter(|&c| image.units[c].is_some()) {
                let mut parity = vec![0u8; len];
                pq::p_encode(&units, &mut parity).map_err(|e| e.to_string())?;
                out.writes.push((c, unit.first, Bytes::from(parity)));
            }
            if let Some(c) = sl.q_column().filter(|&c| image.units[c].is_some()) {
                let mut syndrome = vec![0u8; len];
                pq::q_encode(&units, &mut syndrome).map_err(|e| e.to_string())?;
                out.writes.push((c, unit.first, Bytes::from(syndrome)));
            }
        }
    }
    Ok(out)
}

/// Performs `writes` (`(column, first component block, whole blocks)`), concurrently; returns
/// every column whose write failed.
pub(crate) async fn apply(
    components: &ComponentTable,
    writes: &[(usize, u64, Bytes)],
    deadline: Duration,
) -> Vec<ColumnError> {
    let bs = |c: usize| u64::from(components[c].block_size().max(1));
    let writes = writes.iter().map(|(column, start, data)| async move {
        let io = &components[*column];
        let count = data.len() as u64 / bs(*column);
        with_deadline(
            deadline,
            io.id(),
            *start,
            count,
            io.write(*start, data.clone()),
        )
        .await
        .map_err(|error| ColumnError {
            column: *column,
            error,
        })
    });
    futures::future::join_all(writes)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_the_contiguous_true_stretches() {
        assert_eq!(runs(&[]), Vec::<Range<usize>>::new());
        assert_eq!(runs(&[true, true, false, true]), vec![0..2, 3..4]);
        assert_eq!(runs(&[false, false]), Vec::<Range<usize>>::new());
    }

    #[test]
    fn lost_blocks_merge_when_adjacent() {
        let mut lost = Vec::new();
        for b in [3, 4, 7] {
            push_block(&mut lost, b);
        }
        assert_eq!(lost, vec![3..5, 7..8]);
    }
}
