//! The array's side of parity verification (scrub): [`Array::check_stripe`] reads every current
//! unit of one stripe under its whole-stripe lock and recomputes the redundancy from the data,
//! answering which units disagree, block range by block range. The rewrite is
//! [`Array::resync_stripe`] (the redundancy rewritten from the data under the write lock); the
//! sweep over the stripes, its throttle and its progress are the coordinator's job
//! (`docs/SCRUB.md`).
//!
//! Rules:
//! - A check holds the stripe's whole-stripe lock in read mode from its first read to its last:
//!   no write of the stripe is in flight meanwhile, so a stripe a client is writing is never
//!   seen half old, half new (no false mismatch). Reads of the stripe go on beside it.
//! - The component table and the missing columns are taken after the lock, like every DAG.
//! - A check writes nothing and fails no column: a read that fails is reported
//!   ([`CheckOutcome::ReadFailed`]) and the access pipeline, which meets the same component,
//!   decides about the column. Blocks that answer data loss are reported
//!   ([`StripeCheck::unreadable`]) and their rows are not compared.
//! - A stripe with lost blocks is skipped ([`CheckOutcome::Lost`]): its units were made
//!   consistent when the blocks were recorded lost, and its data is not served.
//! - Missing columns (failed, gone, reconstructing at or above the stripe): the check compares
//!   what the remaining redundancy still allows (RAID 6 with one column missing: the other
//!   syndrome; RAID 1: the pairs with both copies), else the stripe is
//!   [`CheckOutcome::Degraded`].

use std::ops::Range;

use crate::layout::{RaidLevel, StripeLayout, UnitRole};
use crate::parity::{gf256, pq};
use crate::resync::{StripeImage, UnitImage};
use crate::stripe_lock::{LockMode, StripeLockRequest};

use super::{AccessError, Array};

/// How the check of one stripe went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Compared: [`StripeCheck::mismatches`] says what disagreed (nothing when consistent).
    Checked,
    /// RAID 0: no redundancy to compare.
    NothingToCheck,
    /// Too many columns are missing for the stripe to compare anything.
    Degraded,
    /// The stripe has lost blocks (the lost set): skipped.
    Lost,
    /// A unit could not be read (not data loss: a timeout, a fault, a refusal).
    ReadFailed {
        /// The column.
        column: usize,
        /// What it answered.
        detail: String,
    },
}

impl CheckOutcome {
    /// Short stable name, for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckOutcome::Checked => "checked",
            CheckOutcome::NothingToCheck => "nothing-to-check",
            CheckOutcome::Degraded => "skipped-degraded",
            CheckOutcome::Lost => "skipped-lost",
            CheckOutcome::ReadFailed { .. } => "read-failed",
        }
    }
}

/// Blocks of one column's unit of a stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitBlocks {
    /// The column.
    pub column: usize,
    /// What its unit holds in the stripe.
    pub role: UnitRole,
    /// Component blocks, in increasing order, adjacent ones merged.
    pub blocks: Vec<Range<u64>>,
}

/// What the check of one stripe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeCheck {
    /// The stripe.
    pub stripe: u64,
    /// How it went.
    pub outcome: CheckOutcome,
    /// Units that disagree with the data: the P or Q unit whose recomputed value differs;
    /// RAID 6 a data unit when P and Q together locate the one bad unit of a row; RAID 1 the
    /// secondary copy of a pair whose copies differ (which copy is right is not known).
    pub mismatches: Vec<UnitBlocks>,
    /// Blocks that answered data loss (their rows were not compared).
    pub unreadable: Vec<UnitBlocks>,
    /// Columns missing for the stripe (not read).
    pub missing: Vec<usize>,
}

impl StripeCheck {
    fn new(stripe: u64, outcome: CheckOutcome) -> Self {
        Self {
            stripe,
            outcome,
            mismatches: Vec::new(),
            unreadable: Vec::new(),
            missing: Vec::new(),
        }
    }

    /// Whether some unit disagrees with the data.
    pub fn mismatched(&self) -> bool {
        !self.mismatches.is_empty()
    }

    /// The columns that disagree, in increasing order.
    pub fn mismatched_columns(&self) -> Vec<usize> {
        let mut c: Vec<usize> = self.mismatches.iter().map(|m| m.column).collect();
        c.sort_unstable();
        c.dedup();
        c
    }
}

impl Array {
    /// Checks stripe `stripe`'s redundancy against its data, under its whole-stripe read lock
    /// (the module's rules). Writes nothing. `Err` only for a stripe out of range or a lock
    /// that could not be taken; everything about the stripe itself is in the answer.
    pub async fn check_stripe(&self, stripe: u64) -> Result<StripeCheck, AccessError> {
        let sb = self.layout.stripe_data_bytes();
        let map = self.layout.map(stripe * sb, sb)?;
        let sl = map.stripes[0].layout;
        if self.layout.level() == RaidLevel::Raid0 {
            return Ok(StripeCheck::new(stripe, CheckOutcome::NothingToCheck));
        }
        let lock = StripeLockRequest::whole_stripe(&self.layout, stripe, LockMode::Read);
        let _locks = self
            .locks
            .lock([lock])
            .await
            .map_err(|e| AccessError::Internal(e.to_string()))?;
        let (missing, lost, table) = {
            let st = self.lock_states();
            (
                st.missing_for(stripe),
                st.lost().intersects(self.stripe_blocks(stripe)),
                self.components(),
            )
        };
        if lost {
            return Ok(StripeCheck::new(stripe, CheckOutcome::Lost));
        }
        let deadline = self.config.engine.node_deadline;
        let image =
            match crate::resync::read_stripe(&self.layout, &table, &sl, &missing, deadline).await {
                Ok(image) => image,
                Err(e) => {
                    return Ok(StripeCheck::new(
                        stripe,
                        CheckOutcome::ReadFailed {
                            column: e.column,
                            detail: e.error.to_string(),
                        },
                    ));
                }
            };
        let bs = self.layout.geometry().block_size() as usize;
        let mut check = compare(self.layout.level(), &sl, &image, bs);
        check.missing = missing.iter().collect();
        Ok(check)
    }
}

/// Compares the stripe's redundancy with its data, row by row (a row: the same block of every
/// unit).
fn compare(level: RaidLevel, sl: &StripeLayout, image: &StripeImage, bs: usize) -> StripeCheck {
    let unit = sl.component_blocks();
    let rows = unit.count as usize;
    let mut check = StripeCheck::new(sl.stripe(), CheckOutcome::Checked);
    let role = |c: usize| sl.role_of(c).unwrap_or(UnitRole::P);
    let blocks_of = |flags: &[bool]| -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for (b, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
            crate::resync::push_block(&mut out, unit.first + b as u64);
        }
        out
    };
    for (c, u) in image.units.iter().enumerate() {
        if let Some(u) = u.as_ref().filter(|u| u.bad.iter().any(|b| *b)) {
            check.unreadable.push(UnitBlocks {
                column: c,
                role: role(c),
                blocks: blocks_of(&u.bad),
            });
        }
    }
    // By column: the rows that disagree.
    let mut flagged: Vec<Vec<bool>> = vec![vec![false; rows]; image.units.len()];
    let unit_of = |c: Option<usize>| c.and_then(|c| image.units[c].as_ref());
    match level {
        RaidLevel::Raid0 => check.outcome = CheckOutcome::NothingToCheck,
        RaidLevel::Raid1 => {
            let mut compared = false;
            for (i, primary) in sl.data_columns() {
                let Some(secondary) = sl.mirror_column(i) else {
                    continue;
                };
                let (Some(a), Some(b)) = (unit_of(Some(primary)), unit_of(Some(secondary))) else {
                    continue;
                };
                compared = true;
                for (row, f) in flagged[secondary].iter_mut().enumerate() {
                    *f = a.good(row) && b.good(row) && a.row(row, bs) != b.row(row, bs);
                }
            }
            if !compared {
                check.outcome = CheckOutcome::Degraded;
            }
        }
        RaidLevel::Raid4 | RaidLevel::Raid5 | RaidLevel::Raid6 => {
            let data: Vec<(usize, Option<&UnitImage>)> = sl
                .data_columns()
                .map(|(_, c)| (c, image.units[c].as_ref()))
                .collect();
            let p = unit_of(sl.p_column());
            let q = unit_of(sl.q_column());
            let q_exists = sl.q_column().is_some();
            let absent_data: Vec<usize> =
                (0..data.len()).filter(|&i| data[i].1.is_none()).collect();
            let absent =
                absent_data.len() + usize::from(p.is_none()) + usize::from(q_exists && q.is_none());
            // What is left to compare: with one unit missing, RAID 6 still has one equation.
            let can = matches!((q_exists, absent), (_, 0) | (true, 1));
            if !can {
                check.outcome = CheckOutcome::Degraded;
            } else {
                for row in 0..rows {
                    let present_bad = data.iter().filter_map(|(_, u)| *u).any(|u| !u.good(row))
                        || p.is_some_and(|u| !u.good(row))
                        || q.is_some_and(|u| !u.good(row));
                    if present_bad {
                        continue;
                    }
                    compare_row(sl, &data, p, q, &absent_data, row, bs, &mut flagged);
                }
            }
        }
    }
    for (c, f) in flagged.iter().enumerate() {
        if f.iter().any(|x| *x) {
            check.mismatches.push(UnitBlocks {
                column: c,
                role: role(c),
                blocks: blocks_of(f),
            });
        }
    }
    check
}

/// One row of a RAID 4/5/6 stripe: flags the unit (by column) that disagrees in `flagged`.
#[allow(clippy::too_many_arguments)]
fn compare_row(
    sl: &StripeLayout,
    data: &[(usize, Option<&UnitImage>)],
    p: Option<&UnitImage>,
    q: Option<&UnitImage>,
    absent_data: &[usize],
    row: usize,
    bs: usize,
    flagged: &mut [Vec<bool>],
) {
    let mut rebuilt: Option<Vec<u8>> = None;
    if let (&[x], Some(p)) = (absent_data, p) {
        // RAID 6 with a data unit missing: rebuild it from P, then only Q can be compared.
        let mut d = p.row(row, bs).to_vec();
        for (i, (_, u)) in data.iter().enumerate() {
            if i != x
                && let Some(u) = u
            {
                crate::parity::xor_into(&mut d, u.row(row, bs)).ok();
            }
        }
        rebuilt = Some(d);
    }
    let rows: Vec<&[u8]> = data
        .iter()
        .map(|(_, u)| match u {
            Some(u) => u.row(row, bs),
            None => rebuilt.as_deref().unwrap_or(&[]),
        })
        .collect();
    let mut p_calc = vec![0u8; bs];
    let mut q_calc = vec![0u8; bs];
    let p_bad = rebuilt.is_none()
        && p.is_some_and(|p| {
            pq::p_encode(&rows, &mut p_calc).is_ok() && p.row(row, bs) != p_calc.as_slice()
        });
    let q_bad = q.is_some_and(|q| {
        pq::q_encode(&rows, &mut q_calc).is_ok() && q.row(row, bs) != q_calc.as_slice()
    });
    let (Some(pc), qc) = (sl.p_column(), sl.q_column()) else {
        return;
    };
    match (p_bad, q_bad, qc) {
        (true, true, Some(qc)) => {
            let (p, q) = (p.map(|u| u.row(row, bs)), q.map(|u| u.row(row, bs)));
            match p.zip(q).and_then(|(p, q)| locate(p, q, &p_calc, &q_calc)) {
                Some(i) if i < data.len() => flagged[data[i].0][row] = true,
                _ => {
                    flagged[pc][row] = true;
                    flagged[qc][row] = true;
                }
            }
        }
        (true, _, _) => flagged[pc][row] = true,
        (_, true, Some(qc)) => flagged[qc][row] = true,
        _ => {}
    }
}

/// RAID 6: the logical index of the one data unit whose corruption explains both the P and
/// the Q difference of a row (an error `e` in data unit `z` changes P by `e` and Q by
/// `g^z * e`, byte by byte), if one does.
fn locate(p: &[u8], q: &[u8], p_calc: &[u8], q_calc: &[u8]) -> Option<usize> {
    let mut found: Option<u8> = None;
    for i in 0..p.len() {
        let dp = p[i] ^ p_calc[i];
        let dq = q[i] ^ q_calc[i];
        match (dp, dq) {
            (0, 0) => {}
            (0, _) | (_, 0) => return None,
            (dp, dq) => {
                let z = gf256::log(gf256::mul(dq, gf256::inv(dp)?))?;
                if found.is_some_and(|f| f != z) {
                    return None;
                }
                found = Some(z);
            }
        }
    }
    found.map(usize::from)
}
