//! [`Array::check_stripe`] over in-memory components: a clean array finds nothing; a corrupt
//! parity unit, data unit or RAID 1 copy is found exactly; degraded, lost and unreadable stripes
//! are said so; a check beside concurrent writers sees no false mismatch.

// Block ranges are compared as vectors of ranges, one range long here.
#![allow(clippy::single_range_in_vec_init)]

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Rig, rig};
use crate::access::{CheckOutcome, StripeCheck, UnitBlocks};
use crate::layout::{RaidLevel, UnitRole};

/// Flips every byte of component block `block` of `column` in place (no fault, no log).
fn corrupt(r: &Rig, column: usize, block: u64) {
    let bs = u64::from(super::BS);
    let old = r.mems[column].peek(block, 1);
    let flipped: Vec<u8> = old.iter().map(|b| b ^ 0x5a).collect();
    r.mems[column].poke((block * bs) as usize, &flipped);
}

/// The column holding `role` in `stripe`, and the stripe unit's first component block.
fn unit_of(r: &Rig, stripe: u64, role: UnitRole) -> (usize, u64) {
    let sl = r.layout.stripe(stripe).unwrap();
    let column = sl.units().find(|(_, x)| *x == role).unwrap().0;
    (column, sl.component_blocks().first)
}

async fn check_all(r: &Rig) -> Vec<StripeCheck> {
    let mut out = Vec::new();
    for s in 0..r.layout.stripes() {
        out.push(r.array.check_stripe(s).await.unwrap());
    }
    out
}

/// Every stripe but `except` checked and consistent.
fn clean_except(checks: &[StripeCheck], except: &[u64]) {
    for c in checks.iter().filter(|c| !except.contains(&c.stripe)) {
        assert_eq!(c.outcome, CheckOutcome::Checked, "stripe {}", c.stripe);
        assert!(
            c.mismatches.is_empty(),
            "stripe {}: {:?}",
            c.stripe,
            c.mismatches
        );
        assert!(c.unreadable.is_empty(), "stripe {}", c.stripe);
    }
}

#[tokio::test]
async fn a_clean_array_finds_nothing() {
    for level in [
        RaidLevel::Raid1,
        RaidLevel::Raid4,
        RaidLevel::Raid5,
        RaidLevel::Raid6,
    ] {
        let r = rig(level, 1, &[]);
        clean_except(&check_all(&r).await, &[]);
    }
    let r = rig(RaidLevel::Raid0, 1, &[]);
    for c in check_all(&r).await {
        assert_eq!(c.outcome, CheckOutcome::NothingToCheck);
    }
}

#[tokio::test]
async fn a_corrupt_parity_unit_is_found_exactly_and_the_rewrite_fixes_it() {
    for level in [RaidLevel::Raid4, RaidLevel::Raid5, RaidLevel::Raid6] {
        let r = rig(level, 2, &[]);
        let (p, first) = unit_of(&r, 3, UnitRole::P);
        corrupt(&r, p, first + 1);
        let checks = check_all(&r).await;
        clean_except(&checks, &[3]);
        assert_eq!(
            checks[3].mismatches,
            vec![UnitBlocks {
                column: p,
                role: UnitRole::P,
                blocks: vec![first + 1..first + 2],
            }],
            "{level}"
        );
        r.array.resync_stripe(3, true).await.unwrap();
        clean_except(&check_all(&r).await, &[]);
        r.assert_consistent();
    }
}

#[tokio::test]
async fn a_corrupt_q_unit_is_found() {
    let r = rig(RaidLevel::Raid6, 3, &[]);
    let (q, first) = unit_of(&r, 5, UnitRole::Q);
    corrupt(&r, q, first);
    corrupt(&r, q, first + 2);
    let checks = check_all(&r).await;
    clean_except(&checks, &[5]);
    assert_eq!(checks[5].mismatched_columns(), vec![q]);
    assert_eq!(
        checks[5].mismatches[0].blocks,
        vec![first..first + 1, first + 2..first + 3]
    );
}

#[tokio::test]
async fn a_corrupt_data_unit_is_a_parity_mismatch_on_raid5_and_located_on_raid6() {
    let r = rig(RaidLevel::Raid5, 4, &[]);
    let (d, first) = unit_of(&r, 2, UnitRole::Data { index: 1 });
    let (p, _) = unit_of(&r, 2, UnitRole::P);
    corrupt(&r, d, first + 3);
    let checks = check_all(&r).await;
    clean_except(&checks, &[2]);
    // One equation: which unit is wrong cannot be told, the parity disagrees.
    assert_eq!(checks[2].mismatched_columns(), vec![p]);

    let r = rig(RaidLevel::Raid6, 4, &[]);
    let (d, first) = unit_of(&r, 2, UnitRole::Data { index: 1 });
    corrupt(&r, d, first + 3);
    let checks = check_all(&r).await;
    clean_except(&checks, &[2]);
    // Two equations: P and Q together name the data unit.
    assert_eq!(
        checks[2].mismatches,
        vec![UnitBlocks {
            column: d,
            role: UnitRole::Data { index: 1 },
            blocks: vec![first + 3..first + 4],
        }]
    );
}

#[tokio::test]
async fn a_corrupt_raid1_copy_is_found() {
    let r = rig(RaidLevel::Raid1, 5, &[]);
    let (primary, first) = unit_of(&r, 6, UnitRole::Data { index: 0 });
    let (secondary, _) = unit_of(&r, 6, UnitRole::Mirror { index: 0 });
    corrupt(&r, primary, first + 2);
    let checks = check_all(&r).await;
    clean_except(&checks, &[6]);
    assert_eq!(
        checks[6].mismatches,
        vec![UnitBlocks {
            column: secondary,
            role: UnitRole::Mirror { index: 0 },
            blocks: vec![first + 2..first + 3],
        }]
    );
    let (secondary1, first1) = unit_of(&r, 1, UnitRole::Mirror { index: 1 });
    corrupt(&r, secondary1, first1);
    let checks = check_all(&r).await;
    assert_eq!(checks[1].mismatched_columns(), vec![secondary1]);
}

#[tokio::test]
async fn degraded_stripes_are_checked_as_far_as_the_redundancy_allows() {
    // RAID 5 with a failed column: nothing left to compare.
    let r = rig(RaidLevel::Raid5, 6, &[0]);
    for c in check_all(&r).await {
        assert_eq!(c.outcome, CheckOutcome::Degraded);
        assert_eq!(c.missing, vec![0]);
    }
    // RAID 6 with a failed column: the other syndrome still compares.
    let r = rig(RaidLevel::Raid6, 6, &[0]);
    clean_except(&check_all(&r).await, &[]);
    for stripe in 0..r.layout.stripes() {
        let (q, first) = unit_of(&r, stripe, UnitRole::Q);
        let (p, _) = unit_of(&r, stripe, UnitRole::P);
        let target = if q == 0 { p } else { q };
        corrupt(&r, target, first);
        let c = r.array.check_stripe(stripe).await.unwrap();
        assert_eq!(c.mismatched_columns(), vec![target], "stripe {stripe}");
    }
    // RAID 6 with two: nothing left.
    let r = rig(RaidLevel::Raid6, 6, &[0, 1]);
    for c in check_all(&r).await {
        assert_eq!(c.outcome, CheckOutcome::Degraded);
    }
}

#[tokio::test]
async fn unreadable_blocks_are_reported_and_lost_stripes_skipped() {
    let r = rig(RaidLevel::Raid5, 7, &[]);
    let (d, first) = unit_of(&r, 4, UnitRole::Data { index: 0 });
    r.mems[d].mark_bad(first + 1);
    let checks = check_all(&r).await;
    clean_except(&checks, &[4]);
    assert_eq!(checks[4].outcome, CheckOutcome::Checked);
    assert!(checks[4].mismatches.is_empty());
    assert_eq!(checks[4].unreadable[0].column, d);
    assert_eq!(checks[4].unreadable[0].blocks, vec![first + 1..first + 2]);

    let blocks = r.array.stripe_blocks(6);
    r.array.lock_states().mark_lost(blocks);
    let c = r.array.check_stripe(6).await.unwrap();
    assert_eq!(c.outcome, CheckOutcome::Lost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_beside_writers_finds_no_false_mismatch() {
    for level in [RaidLevel::Raid1, RaidLevel::Raid5, RaidLevel::Raid6] {
        let r = rig(level, 8, &[]);
        let array = r.array.clone();
        let capacity = r.layout.capacity();
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let array: Arc<crate::access::Array> = array.clone();
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(w);
                    for _ in 0..60 {
                        let len = rng.random_range(1..200u64).min(capacity);
                        let at = rng.random_range(0..capacity - len);
                        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                        array.write(at, data.into()).await.unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..5 {
            for s in 0..r.layout.stripes() {
                let c = r.array.check_stripe(s).await.unwrap();
                assert!(c.mismatches.is_empty(), "{level} stripe {s}: {c:?}");
            }
        }
        for w in writers {
            w.await.unwrap();
        }
        clean_except(&check_all(&r).await, &[]);
    }
}
