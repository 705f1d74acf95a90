//! Reconstruction: rebuilding a column's units from the redundancy of the others (RAIDframe's
//! reconstruction, Linux md's recovery), and copyback, the copy of a column from its spare to a
//! replacement. This module holds the unit logic, free of I/O policy: what a stripe's
//! reconstruction writes ([`plan`]) and the component that copies a column's writes to its
//! replacement during a copyback ([`CopybackIo`]). The sweep that drives them stripe by stripe,
//! under the stripe locks, is [`crate::access::Array::reconstruct_stripe`] and
//! [`crate::access::Array::copy_stripe`]; the job that runs the sweep, throttles it and keeps its
//! checkpoint is the coordinator's.
//!
//! A stripe's reconstruction, block row by block row of its units: the *erased* units of a row
//! are the target columns (recovering, not yet current for the stripe), the other columns
//! missing for the stripe (failed, gone), and the units that answered data loss for that row.
//!
//! - As many erased units as the layout has redundancy or fewer (RAID 1: the other copy of the
//!   pair reads back): every erased unit is solved (P = XOR, Q = sum g^i D_i, or the mirror), the
//!   targets are written with their value, and a bad block of a surviving column is written
//!   back repaired.
//! - More: the row's erased data blocks cannot be known. They are recorded **lost** (their
//!   volume blocks; durable before anything is written), taken as zeros, and the row's
//!   redundancy is recomputed from the data so the stripe is consistent again: the targets get
//!   zeros or the recomputed parity, a surviving column's bad block is overwritten with zeros,
//!   and a surviving parity unit gets the recomputed parity. The reconstruction carries on; it
//!   never counts those blocks as rebuilt.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::io::{ComponentIo, IoError};
use crate::layout::{ColumnSet, Layout, RaidLevel, StripeLayout, UnitRole};
use crate::parity::{Column, pq};
use crate::resync::{StripeImage, push_block};

/// What the reconstruction of one stripe writes, and what it found.
#[derive(Debug, Clone, Default)]
pub(crate) struct UnitPlan {
    /// Volume blocks that cannot be rebuilt: recorded lost before anything is written.
    pub(crate) lost: Vec<Range<u64>>,
    /// Target blocks written with a rebuilt value (lost ones not counted).
    pub(crate) rebuilt_blocks: u64,
    /// Bad blocks of surviving columns rebuilt and written back.
    pub(crate) repaired_blocks: u64,
    /// `(column, first component block, whole blocks)`.
    pub(crate) writes: Vec<(usize, u64, Bytes)>,
}

/// Per column being written: the unit's new bytes and which rows are written.
struct Out {
    data: Vec<u8>,
    rows: Vec<bool>,
}

/// Plans the reconstruction of `targets` (columns missing in `image`) in stripe `sl` from the
/// other units of `image` (see the module comment). Refuses RAID 0 and targets that are read.
pub(crate) fn plan(
    layout: &Layout,
    sl: &StripeLayout,
    image: &StripeImage,
    targets: &ColumnSet,
) -> Result<UnitPlan, String> {
    if layout.level() == RaidLevel::Raid0 {
        return Err("RAID 0 has no redundancy to rebuild from".into());
    }
    let n = layout.columns();
    let bs = layout.geometry().block_size() as usize;
    let unit = sl.component_blocks();
    let rows = unit.count as usize;
    let k = sl.data_units();
    let first_volume_block = sl.stripe() * k as u64 * unit.count;
    if let Some(t) = targets
        .iter()
        .find(|&t| image.units.get(t).is_none_or(|u| u.is_some()))
    {
        return Err(format!(
            "column {t} is a target of the reconstruction but was read"
        ));
    }
    let mut outs: Vec<Option<Out>> = (0..n).map(|_| None).collect();
    let mut out = UnitPlan::default();
    let erased_in = |b: usize| -> ColumnSet {
        let mut e = ColumnSet::new();
        for c in 0..n {
            match &image.units[c] {
                None => {
                    e.insert(c);
                }
                Some(u) if !u.good(b) => {
                    e.insert(c);
                }
                Some(_) => {}
            }
        }
        e
    };
    let write_rows = |outs: &mut Vec<Option<Out>>, c: usize, run: &Range<usize>, value: &[u8]| {
        let o = outs[c].get_or_insert_with(|| Out {
            data: vec![0; rows * bs],
            rows: vec![false; rows],
        });
        o.data[run.start * bs..run.end * bs].copy_from_slice(value);
        o.rows[run.clone()].fill(true);
    };
    // Runs of rows with the same erased units, solved at once (one run for a unit without bad
    // blocks).
    let mut next = 0;
    while next < rows {
        let erased = erased_in(next);
        let mut end = next + 1;
        while end < rows && erased_in(end) == erased {
            end += 1;
        }
        let run = next..end;
        next = end;
        let b = run.start;
        let len = run.len() * bs;
        let slice = |u: &crate::resync::UnitImage| -> Vec<u8> {
            u.data[run.start * bs..run.end * bs].to_vec()
        };
        if !erased.iter().any(|c| targets.contains(c)) {
            continue;
        }
        let zero = vec![0u8; len];
        let lose = |lost: &mut Vec<Range<u64>>, i: usize| {
            for x in run.clone() {
                push_block(lost, first_volume_block + (i * rows + x) as u64);
            }
        };
        match layout.level() {
            RaidLevel::Raid0 => unreachable!("refused above"),
            RaidLevel::Raid1 => {
                for (i, primary) in sl.data_columns() {
                    let Some(secondary) = sl.mirror_column(i) else {
                        continue;
                    };
                    for (t, partner) in [(primary, secondary), (secondary, primary)] {
                        if !targets.contains(t) {
                            continue;
                        }
                        match image.units[partner].as_ref().filter(|u| u.good(b)) {
                            Some(u) => {
                                write_rows(&mut outs, t, &run, &slice(u));
                                out.rebuilt_blocks += run.len() as u64;
                            }
                            None => {
                                lose(&mut out.lost, i);
                                write_rows(&mut outs, t, &run, &zero);
                                if image.units[partner].is_some() {
                                    // A bad block on the surviving copy: zeros, like its pair.
                                    write_rows(&mut outs, partner, &run, &zero);
                                }
                            }
                        }
                    }
                }
            }
            RaidLevel::Raid4 | RaidLevel::Raid5 | RaidLevel::Raid6 => {
                let mut data: Vec<Vec<u8>> = (0..k)
                    .map(|i| {
                        sl.data_column(i)
                            .and_then(|c| image.units[c].as_ref())
                            .filter(|u| u.good(b))
                            .map(slice)
                            .unwrap_or_else(|| vec![0; len])
                    })
                    .collect();
                let unit_of = |c: Option<usize>| {
                    c.and_then(|c| image.units[c].as_ref())
                        .filter(|u| u.good(b))
                        .map(slice)
                        .unwrap_or_else(|| vec![0; len])
                };
                let mut p = unit_of(sl.p_column());
                let mut q = unit_of(sl.q_column());
                let mut lost_cols = Vec::new();
                for c in erased.iter() {
                    match sl.role_of(c) {
                        Some(UnitRole::Data { index: i }) => lost_cols.push(Column::Data(i)),
                        Some(UnitRole::P) => lost_cols.push(Column::P),
                        Some(UnitRole::Q) => lost_cols.push(Column::Q),
                        _ => {}
                    }
                }
                let solvable = lost_cols.len() <= layout.parity_units();
                if solvable {
                    let mut views: Vec<&mut [u8]> =
                        data.iter_mut().map(|d| d.as_mut_slice()).collect();
                    if layout.level() == RaidLevel::Raid6 {
                        pq::reconstruct(&mut views, &mut p, &mut q, &lost_cols)
                    } else {
                        match lost_cols.as_slice() {
                            [Column::Data(x)] => {
                                let x = *x;
                                let outbuf = std::mem::take(&mut views[x]);
                                let view: Vec<Option<&[u8]>> = views
                                    .iter()
                                    .enumerate()
                                    .map(|(i, d)| (i != x).then_some(&**d))
                                    .collect();
                                pq::recover_data_from_p(&view, &p, outbuf)
                            }
                            [Column::P] => {
                                let full: Vec<&[u8]> = views.iter().map(|d| &**d).collect();
                                pq::p_encode(&full, &mut p)
                            }
                            _ => Ok(()),
                        }
                    }
                    .map_err(|e| format!("stripe {}: {e}", sl.stripe()))?;
                    for c in erased.iter() {
                        let value = match sl.role_of(c) {
                            Some(UnitRole::Data { index: i }) => &data[i],
                            Some(UnitRole::P) => &p,
                            Some(UnitRole::Q) => &q,
                            _ => continue,
                        };
                        if targets.contains(c) {
                            write_rows(&mut outs, c, &run, value);
                            out.rebuilt_blocks += run.len() as u64;
                        } else if image.units[c].is_some() {
                            write_rows(&mut outs, c, &run, value);
                            out.repaired_blocks += run.len() as u64;
                        }
                    }
                } else {
                    // Beyond the redundancy: the erased data blocks are lost, taken as zeros,
                    // and the row's redundancy recomputed from the data.
                    for c in erased.iter() {
                        if let Some(UnitRole::Data { index: i }) = sl.role_of(c) {
                            lose(&mut out.lost, i);
                            data[i].fill(0);
                        }
                    }
                    let full: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
                    pq::p_encode(&full, &mut p).map_err(|e| e.to_string())?;
                    if sl.q_column().is_some() {
                        pq::q_encode(&full, &mut q).map_err(|e| e.to_string())?;
                    }
                    for c in 0..n {
                        let present = image.units[c].is_some();
                        if !targets.contains(c) && !present {
                            continue;
                        }
                        let value = match sl.role_of(c) {
                            Some(UnitRole::Data { index: i }) if erased.contains(c) => &data[i],
                            Some(UnitRole::Data { .. }) => continue,
                            Some(UnitRole::P) => &p,
                            Some(UnitRole::Q) => &q,
                            _ => continue,
                        };
                        write_rows(&mut outs, c, &run, value);
                    }
                }
            }
        }
    }
    out.lost.sort_by_key(|r| r.start);
    merge_ranges(&mut out.lost);
    for (c, o) in outs.into_iter().enumerate() {
        let Some(o) = o else { continue };
        let mut r = 0;
        while r < rows {
            if !o.rows[r] {
                r += 1;
                continue;
            }
            let start = r;
            while r < rows && o.rows[r] {
                r += 1;
            }
            out.writes.push((
                c,
                unit.first + start as u64,
                Bytes::copy_from_slice(&o.data[start * bs..r * bs]),
            ));
        }
    }
    Ok(out)
}

fn merge_ranges(ranges: &mut Vec<Range<u64>>) {
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match merged.last_mut() {
            Some(m) if m.end >= r.start => m.end = m.end.max(r.end),
            _ => merged.push(r),
        }
    }
    *ranges = merged;
}

/// The component of a column during its copyback: the column lives on `source` (its spare),
/// which serves every read and takes every write; a write below the copy's watermark (stripes
/// already copied) is also written to `target` (the replacement), so the replacement is
/// current below the watermark when the sweep reaches the end. A write the replacement
/// refuses breaks the copyback ([`CopybackIo::broken`]) without failing the column: the
/// replacement is then abandoned, never read.
#[derive(Debug)]
pub struct CopybackIo {
    source: Arc<dyn ComponentIo>,
    target: Arc<dyn ComponentIo>,
    /// First component block not copied yet.
    copied_below: AtomicU64,
    broken: Mutex<Option<String>>,
}

impl CopybackIo {
    /// A copyback of `source` onto `target`, nothing copied yet.
    pub fn new(source: Arc<dyn ComponentIo>, target: Arc<dyn ComponentIo>) -> Arc<CopybackIo> {
        Arc::new(CopybackIo {
            source,
            target,
            copied_below: AtomicU64::new(0),
            broken: Mutex::new(None),
        })
    }

    /// The spare the column lives on.
    pub fn source(&self) -> &Arc<dyn ComponentIo> {
        &self.source
    }

    /// The replacement.
    pub fn target(&self) -> &Arc<dyn ComponentIo> {
        &self.target
    }

    /// Why the replacement cannot be used any more, if it cannot.
    pub fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_broken(&self, why: String) {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(why);
    }

    /// Marks the component blocks below `block` copied.
    pub(crate) fn advance(&self, block: u64) {
        self.copied_below.fetch_max(block, Ordering::AcqRel);
    }

    /// The first component block not copied yet.
    pub fn copied_below(&self) -> u64 {
        self.copied_below.load(Ordering::Acquire)
    }
}

impl ComponentIo for CopybackIo {
    fn id(&self) -> &str {
        self.source.id()
    }

    fn block_size(&self) -> u32 {
        self.source.block_size()
    }

    fn block_count(&self) -> u64 {
        self.source.block_count()
    }

    fn read(&self, start_block: u64, block_count: u32) -> BoxFuture<'_, Result<Bytes, IoError>> {
        self.source.read(start_block, block_count)
    }

    fn write(&self, start_block: u64, data: Bytes) -> BoxFuture<'_, Result<(), IoError>> {
        Box::pin(async move {
            // Writes never span the watermark: it moves a whole stripe unit at a time, under the
            // stripe's write lock, which every write to the stripe holds.
            let copy = start_block < self.copied_below() && self.broken().is_none();
            if !copy {
                return self.source.write(start_block, data).await;
            }
            let (a, b) = futures::join!(
                self.source.write(start_block, data.clone()),
                self.target.write(start_block, data)
            );
            if let Err(e) = b {
                tracing::warn!(error = %e, "copyback: the replacement refused a write; the copyback stops");
                self.set_broken(format!("the replacement refused a write: {e}"));
            }
            a
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), IoError>> {
        Box::pin(async move {
            if self.broken().is_none()
                && let Err(e) = self.target.flush().await
            {
                self.set_broken(format!("the replacement failed a flush: {e}"));
            }
            self.source.flush().await
        })
    }

    fn fence(&self) -> BoxFuture<'_, Result<(), IoError>> {
        Box::pin(async move {
            if self.broken().is_none()
                && let Err(e) = self.target.fence().await
            {
                self.set_broken(format!("the replacement could not be fenced: {e}"));
            }
            self.source.fence().await
        })
    }

    fn own_deadline(&self) -> Option<std::time::Duration> {
        self.source.own_deadline()
    }
}

#[cfg(test)]
mod tests;
