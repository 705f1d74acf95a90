//! Reassembly: deciding a volume's state from its labels and the coordinator's record.
//!
//! Both the labels (one per component, on the storage nodes) and the coordinator's store carry a
//! modification counter; every state change is written to the surviving components' labels and
//! to the store before the access that caused it is acknowledged. At assembly:
//!
//! - **the record with the highest counter is authoritative**, whether it is the store's or a
//!   label's: a crash between the label writes and the store write leaves the labels ahead, a
//!   crash after the store write and some of the label writes leaves the store (and those labels)
//!   ahead. Neither copy is trusted over a newer one, because either may be the one a crash cut
//!   short. On a tie the record with more failed columns wins (failing is the safe direction).
//! - the states come from that record. A column left behind by a failure has an older counter and
//!   is failed *in the newer record*, so it stays failed even if its node comes back with its old
//!   data and its old label. A label that is merely older (the coordinator died after writing
//!   k of n labels) does not fail a column the authoritative record calls optimal: nothing was
//!   written to the volume between those label writes.
//! - a column whose node does not answer, whose label is missing, unreadable, or belongs to
//!   another volume or geometry, is failed for this assembly (and the caller records it);
//! - a volume whose authoritative record is not clean needs a resync before it is optimal; one
//!   that is dirty *and* degraded is not assembled without `force` (the RAID 5 write hole: a
//!   stripe whose write was cut short cannot be told from one whose lost unit must be rebuilt from
//!   its parity); more failures than the layout tolerates are refused outright.

use crate::array::ComponentState;
use crate::layout::{ColumnSet, Layout};
use crate::lost::LostSet;

use super::label::{ComponentLabel, LabelGeometry};
use super::record::MetadataRecord;
use crate::parity_map::DirtyRegions;

/// What the coordinator found on one column's node.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per column, once per assembly: boxing buys nothing
pub enum Found {
    /// A valid label.
    Label(ComponentLabel),
    /// The node answered, but there is no label of this volume (empty, another volume, another
    /// geometry, unparsable): the reason.
    Foreign(String),
    /// The node or its label could not be read: the reason.
    Unreachable(String),
}

/// The coordinator store's record of the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Its modification counter.
    pub mod_counter: u64,
    /// Its config epoch.
    pub config_epoch: u64,
    /// Whether it says the volume was shut down cleanly.
    pub clean: bool,
    /// Every column's state.
    pub states: Vec<ComponentState>,
    /// Every column's recovery watermark (empty: all 0).
    pub recovered: Vec<u64>,
    /// The lost set, exact.
    pub lost: LostSet,
    /// The counter of the change that last changed the lost set.
    pub lost_counter: u64,
    /// The partial-parity log's period (0: none).
    pub log_period: u64,
}

/// Where the authoritative record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The coordinator's store.
    Store,
    /// The label of this column.
    Label(usize),
}

/// Whether and how to assemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Assemble; resync first if the volume was not shut down cleanly.
    Assemble {
        /// A full resync is needed before the volume is optimal.
        resync: bool,
    },
    /// Dirty and degraded, and every column not current was already so in the authoritative
    /// record, which carries a partial-parity log period: assemble, replay the log
    /// ([`crate::ppl`]), then resync the dirty regions' stripes the log does not concern.
    Replay,
    /// Dirty and degraded beyond what the log covers: assemble only when forced; says what is
    /// at risk.
    NeedsForce {
        /// What forcing risks.
        at_risk: String,
    },
    /// More failures than the layout tolerates.
    Refuse {
        /// Why.
        reason: String,
    },
}

/// The outcome of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every column's state for the assembled volume.
    pub states: Vec<ComponentState>,
    /// Every column's recovery watermark, from the authoritative record.
    pub recovered: Vec<u64>,
    /// The counter of the authoritative record's lost set (see [`merged_lost`]).
    pub lost_counter: u64,
    /// The authoritative counter.
    pub mod_counter: u64,
    /// The authoritative config epoch.
    pub config_epoch: u64,
    /// The authoritative record's partial-parity log period (0: none).
    pub log_period: u64,
    /// Whether the authoritative record is clean.
    pub clean: bool,
    /// Where it came from.
    pub source: Source,
    /// Columns this assembly fails, with the reason (not failed in the authoritative record).
    pub newly_failed: Vec<(usize, String)>,
    /// The decision.
    pub verdict: Verdict,
}

/// Decides the state of volume `volume_id` (geometry `layout`) from the store's `recorded` view
/// and what was `found` on each column's node (in column order).
pub fn plan(layout: &Layout, volume_id: &str, recorded: &Recorded, found: &[Found]) -> Plan {
    let geometry = LabelGeometry::of(layout);
    let n = layout.columns();
    // Labels of this volume, this geometry, the right column.
    let mut found: Vec<Found> = found.to_vec();
    found.resize(n, Found::Unreachable("no node for the column".to_owned()));
    for (column, f) in found.iter_mut().enumerate() {
        if let Found::Label(l) = f {
            let why = if l.volume_id != volume_id {
                Some(format!("label of volume {}", l.volume_id))
            } else if l.geometry != geometry {
                Some("label geometry differs from the volume's".to_owned())
            } else if l.column as usize != column {
                Some(format!("label of column {}", l.column))
            } else {
                None
            };
            if let Some(why) = why {
                *f = Found::Foreign(why);
            }
        }
    }
    let failed_count = |s: &[ComponentState]| s.iter().filter(|s| s.is_failed()).count();
    // The authoritative record: highest counter, then most failures, then the store.
    let mut best = (
        recorded.mod_counter,
        failed_count(&recorded.states),
        Source::Store,
        recorded.config_epoch,
        recorded.clean,
        recorded.states.clone(),
        recorded.recovered.clone(),
        recorded.lost_counter,
        recorded.log_period,
    );
    for (column, f) in found.iter().enumerate() {
        if let Found::Label(l) = f {
            let states = l.states();
            let key = (l.mod_counter, failed_count(&states));
            if key > (best.0, best.1) {
                best = (
                    l.mod_counter,
                    key.1,
                    Source::Label(column),
                    l.config_epoch,
                    l.clean,
                    states,
                    l.recovered(),
                    l.lost.counter,
                    l.log_period,
                );
            }
        }
    }
    let (
        mod_counter,
        _,
        source,
        config_epoch,
        clean,
        mut states,
        mut recovered,
        lost_counter,
        log_period,
    ) = best;
    states.resize(n, ComponentState::Failed);
    recovered.resize(n, 0);
    let mut newly_failed = Vec::new();
    for (column, f) in found.iter().enumerate() {
        let reason = match f {
            Found::Label(_) => continue,
            Found::Foreign(why) => why.clone(),
            Found::Unreachable(why) => why.clone(),
        };
        if !states[column].is_failed() {
            states[column] = ComponentState::Failed;
            newly_failed.push((column, reason));
        }
    }
    // The tolerance counts every column not current everywhere (failed or recovering).
    let failed: ColumnSet = states
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_current())
        .map(|(c, _)| c)
        .collect();
    let verdict = if !layout.tolerates(&failed) {
        Verdict::Refuse {
            reason: format!(
                "columns {:?} are failed or missing; {} tolerates {}",
                failed.iter().collect::<Vec<_>>(),
                layout.level(),
                layout.fault_tolerance()
            ),
        }
    } else if !clean && !failed.is_empty() {
        let logs = crate::ppl::level_logs(layout.level());
        let why = if layout.level() == crate::layout::RaidLevel::Raid1 {
            // No write hole: the live copy of a pair is its data, whichever copy a cut write
            // reached (nothing is rebuilt from redundancy that may be torn).
            String::new()
        } else if !logs {
            format!("{} keeps no partial-parity log", layout.level())
        } else if !newly_failed.is_empty() {
            format!(
                "columns {:?} were current at the crash and are missing now, and the partial-parity log covers only writes made while a column was already out (bring their nodes back and the volume assembles by itself)",
                newly_failed.iter().map(|(c, _)| *c).collect::<Vec<_>>()
            )
        } else if log_period == 0 {
            "the record was written before the partial-parity log (an older coordinator)".to_owned()
        } else {
            String::new()
        };
        if why.is_empty() {
            Verdict::Replay
        } else {
            Verdict::NeedsForce {
                at_risk: format!(
                    "the volume was not shut down cleanly and columns {:?} are failed: a write cut short by the crash may have left a stripe's parity out of step with its data, and the failed columns' data in such a stripe would be rebuilt wrong; stripes that took no write at the crash are intact. Not covered by the log because {why}",
                    failed.iter().collect::<Vec<_>>()
                ),
            }
        }
    } else {
        Verdict::Assemble { resync: !clean }
    };
    Plan {
        states,
        recovered,
        lost_counter,
        mod_counter,
        config_epoch,
        log_period,
        clean,
        source,
        newly_failed,
        verdict,
    }
}

/// The lost set of the assembled volume: the union of every copy in the winning lineage whose
/// lost section is at least as new as the authoritative record's (`plan.lost_counter`). The
/// lineage is the store and the columns the plan keeps in use: their copies were written by
/// every change, so they differ from the authoritative one by at most the change a crash cut
/// short, whose marks the union keeps (conservative: a mark that change was clearing stays, and
/// that change was never acknowledged). `records` holds each column's metadata record, in
/// column order. `Err` when no such copy was found (nothing may be assembled on a guess).
pub fn merged_lost(
    plan: &Plan,
    volume_id: &str,
    recorded: &Recorded,
    found: &[Found],
    records: &[Option<MetadataRecord>],
) -> Result<LostSet, String> {
    let k = plan.lost_counter;
    let mut lost = LostSet::new();
    let mut copies = 0;
    if recorded.lost_counter >= k {
        lost.union_with(&recorded.lost);
        copies += 1;
    }
    for (column, f) in found.iter().enumerate() {
        let in_lineage = matches!(f, Found::Label(l) if l.volume_id == volume_id)
            && plan.states.get(column).is_some_and(|s| !s.is_failed());
        if !in_lineage {
            continue;
        }
        let section = records
            .get(column)
            .and_then(Option::as_ref)
            .filter(|r| r.volume_id == volume_id)
            .and_then(|r| r.sections.lost.as_ref())
            .filter(|s| s.counter >= k);
        if let Some(section) = section {
            lost.union_with(&section.set());
            copies += 1;
        }
    }
    if k > 0 && copies == 0 {
        return Err(format!(
            "the lost set of change {k} is on no copy that could be read (store or metadata records of the columns in use)"
        ));
    }
    Ok(lost)
}

/// The stripes of the assembled volume that may hold a torn write, from its parity map: the
/// union of the store's copy (`stored`) and the metadata-record copies of the columns the plan
/// keeps in use (the winning lineage, as for [`merged_lost`]). Every copy is unioned whatever
/// its counter: a mark is durable on the store and the records before its write is issued, and
/// a clear only after the region was quiet, so a copy can only name too many regions, never too
/// few; an older copy adds resync work, never a hole. `None` when the store keeps no map (a
/// volume written before the map existed): then every stripe may be torn.
pub fn merged_map(
    plan: &Plan,
    volume_id: &str,
    found: &[Found],
    records: &[Option<MetadataRecord>],
    stored: Option<&DirtyRegions>,
    stripes: u64,
) -> Option<LostSet> {
    let mut dirty = stored?.stripes(stripes);
    for (column, f) in found.iter().enumerate() {
        let in_lineage = matches!(f, Found::Label(l) if l.volume_id == volume_id)
            && plan.states.get(column).is_some_and(|s| !s.is_failed());
        if !in_lineage {
            continue;
        }
        let section = records
            .get(column)
            .and_then(Option::as_ref)
            .filter(|r| r.volume_id == volume_id)
            .and_then(|r| r.sections.parity_map.as_ref());
        if let Some(section) = section {
            dirty.union_with(&section.regions().stripes(stripes));
        }
    }
    Some(dirty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Geometry, RaidLevel};
    use crate::meta::label::{LABEL_MAGIC, LABEL_VERSION, LabelState, Member};

    fn layout() -> Layout {
        Layout::new(RaidLevel::Raid5, Geometry::new(4, 4, 512, 64).unwrap()).unwrap()
    }

    fn label(column: usize, counter: u64, clean: bool, failed: &[usize]) -> ComponentLabel {
        ComponentLabel {
            log_period: 0,
            magic: LABEL_MAGIC.into(),
            version: LABEL_VERSION,
            cluster_id: "dagraid".into(),
            volume_id: "v1".into(),
            volume_name: "vol".into(),
            column: column as u32,
            serial: column as u64,
            geometry: LabelGeometry::of(&layout()),
            mod_counter: counter,
            config_epoch: counter,
            clean,
            members: (0..4)
                .map(|c| Member {
                    node_id: format!("n{c}"),
                    component_id: format!("v1-c{c}"),
                    state: if failed.contains(&c) {
                        LabelState::Failed
                    } else {
                        LabelState::Optimal
                    },
                    recovered: 0,
                })
                .collect(),
            lost: Default::default(),
        }
    }

    #[test]
    fn the_lost_set_is_the_union_of_the_lineage_at_or_above_the_winning_counter() {
        let l = layout();
        let mut winner = label(0, 5, false, &[3]);
        winner.lost.counter = 5;
        let found = vec![
            Found::Label(winner),
            Found::Label(label(1, 5, false, &[3])),
            Found::Label(label(2, 5, false, &[3])),
            // Column 3 is failed in the winning record: its copy is not of the lineage.
            Found::Label(label(3, 2, false, &[])),
        ];
        let store = recorded(4, false, &[3]);
        let p = plan(&l, "v1", &store, &found);
        assert_eq!(p.lost_counter, 5);
        let rec = |counter: u64, lost: std::ops::Range<u64>| {
            Some(MetadataRecord::new(
                "v1",
                counter,
                &LostSet::from_ranges([lost]),
                counter,
                None,
            ))
        };
        let records = vec![
            rec(5, 0..4),
            // A later change cut short by the crash: its marks are kept.
            rec(6, 10..12),
            // An older copy (its write of change 5 was the one cut short): ignored.
            rec(3, 40..50),
            rec(9, 60..70),
        ];
        let lost = merged_lost(&p, "v1", &store, &found, &records).unwrap();
        assert_eq!(lost.ranges().collect::<Vec<_>>(), vec![0..4, 10..12]);
        // No copy at or above counter 5: refused, never guessed.
        let err =
            merged_lost(&p, "v1", &store, &found, &[rec(3, 0..1), None, None, None]).unwrap_err();
        assert!(err.contains("change 5"), "{err}");
        // The store alone is enough when it is new enough.
        let mut newer = store.clone();
        newer.lost_counter = 5;
        newer.lost = LostSet::from_ranges(std::iter::once(7..8));
        assert_eq!(
            merged_lost(&p, "v1", &newer, &found, &[None, None, None, None])
                .unwrap()
                .blocks(),
            1
        );
    }

    #[test]
    fn the_parity_map_is_the_union_of_the_store_and_the_lineage_whatever_their_counters() {
        let l = layout();
        let found = vec![
            Found::Label(label(0, 5, false, &[3])),
            Found::Label(label(1, 5, false, &[3])),
            Found::Label(label(2, 5, false, &[3])),
            Found::Label(label(3, 2, false, &[])),
        ];
        let store = recorded(5, false, &[3]);
        let p = plan(&l, "v1", &store, &found);
        // 16 stripes of this layout, regions of 2 stripes.
        let map = |regions: std::ops::Range<u64>| DirtyRegions {
            region_stripes: 2,
            regions: LostSet::from_ranges([regions]),
        };
        let rec = |counter: u64, regions: std::ops::Range<u64>| {
            Some(MetadataRecord::new(
                "v1",
                counter,
                &LostSet::new(),
                0,
                Some((&map(regions), counter)),
            ))
        };
        let records = vec![
            rec(5, 0..1),
            // A mark the store has not received yet (the crash cut the change short).
            rec(6, 3..4),
            // An older copy: its marks are kept too (extra work, never a hole).
            rec(2, 5..6),
            // Column 3 is failed: not of the lineage.
            rec(6, 7..8),
        ];
        let stripes = l.stripes();
        let dirty = merged_map(&p, "v1", &found, &records, Some(&map(1..2)), stripes).unwrap();
        assert_eq!(dirty.ranges().collect::<Vec<_>>(), vec![0..4, 6..8, 10..12]);
        // No map in the store (a volume from before the map): every stripe may be torn.
        assert_eq!(merged_map(&p, "v1", &found, &records, None, stripes), None);
    }

    fn recorded(counter: u64, clean: bool, failed: &[usize]) -> Recorded {
        Recorded {
            log_period: 0,
            mod_counter: counter,
            config_epoch: counter,
            clean,
            recovered: Vec::new(),
            lost: LostSet::new(),
            lost_counter: 0,
            states: (0..4)
                .map(|c| {
                    if failed.contains(&c) {
                        ComponentState::Failed
                    } else {
                        ComponentState::Optimal
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn clean_volume_assembles_without_resync_and_dirty_one_with() {
        let found: Vec<Found> = (0..4)
            .map(|c| Found::Label(label(c, 3, true, &[])))
            .collect();
        let p = plan(&layout(), "v1", &recorded(3, true, &[]), &found);
        assert_eq!(p.verdict, Verdict::Assemble { resync: false });
        assert!(p.newly_failed.is_empty());
        let found: Vec<Found> = (0..4)
            .map(|c| Found::Label(label(c, 4, false, &[])))
            .collect();
        let p = plan(&layout(), "v1", &recorded(4, false, &[]), &found);
        assert_eq!(p.verdict, Verdict::Assemble { resync: true });
    }

    #[test]
    fn a_node_back_with_its_old_label_stays_failed() {
        // Column 2 failed at counter 5; its node comes back with the counter-4 label that
        // calls it optimal, and the store missed the change (crash before the store write).
        let mut found: Vec<Found> = (0..4)
            .map(|c| Found::Label(label(c, 5, true, &[2])))
            .collect();
        found[2] = Found::Label(label(2, 4, true, &[]));
        let p = plan(&layout(), "v1", &recorded(4, true, &[]), &found);
        assert_eq!(p.states[2], ComponentState::Failed);
        assert!(matches!(p.source, Source::Label(_)));
        assert_eq!(p.mod_counter, 5);
        assert!(p.newly_failed.is_empty());
    }

    #[test]
    fn a_crash_after_k_of_n_label_writes_fails_no_healthy_column() {
        // Transition from counter 6 (all optimal, dirty) to 7 (column 3 failed), written to
        // columns 0, 1, 2 in order and then the store; a crash after k of those writes.
        for k in 0..=4 {
            let found: Vec<Found> = (0..4)
                .map(|c| {
                    if c == 3 {
                        Found::Unreachable("node down".into())
                    } else if c < k {
                        Found::Label(label(c, 7, false, &[3]))
                    } else {
                        Found::Label(label(c, 6, false, &[]))
                    }
                })
                .collect();
            let store = if k == 4 {
                recorded(7, false, &[3])
            } else {
                recorded(6, false, &[])
            };
            let p = plan(&layout(), "v1", &store, &found);
            assert_eq!(
                p.states,
                vec![
                    ComponentState::Optimal,
                    ComponentState::Optimal,
                    ComponentState::Optimal,
                    ComponentState::Failed
                ],
                "k = {k}"
            );
            // Dirty and degraded: only by force.
            assert!(matches!(p.verdict, Verdict::NeedsForce { .. }), "k = {k}");
        }
    }

    #[test]
    fn dirty_and_degraded_replays_the_log_only_when_the_record_named_the_failure_with_a_period() {
        let found = |period: u64| -> Vec<Found> {
            (0..4)
                .map(|c| {
                    if c == 3 {
                        Found::Unreachable("node down".into())
                    } else {
                        Found::Label(ComponentLabel {
                            log_period: period,
                            ..label(c, 7, false, &[3])
                        })
                    }
                })
                .collect()
        };
        let store = Recorded {
            log_period: 9,
            ..recorded(7, false, &[3])
        };
        let p = plan(&layout(), "v1", &store, &found(9));
        assert_eq!(p.verdict, Verdict::Replay);
        // RAID 1 has no write hole: even a copy lost at the crash needs no force.
        let raid1 = Layout::new(RaidLevel::Raid1, Geometry::new(4, 4, 512, 64).unwrap()).unwrap();
        let mut r1: Vec<Found> = (0..4)
            .map(|c| {
                let mut l = label(c, 7, false, &[]);
                l.geometry = crate::meta::label::LabelGeometry::of(&raid1);
                Found::Label(l)
            })
            .collect();
        r1[2] = Found::Unreachable("node down".into());
        let p1 = plan(&raid1, "v1", &recorded(7, false, &[]), &r1);
        assert_eq!(p1.verdict, Verdict::Replay, "{:?}", p1.newly_failed);
        assert_eq!(p.log_period, 9);
        // A record written before the log: force, saying so.
        let p = plan(&layout(), "v1", &recorded(7, false, &[3]), &found(0));
        let Verdict::NeedsForce { at_risk } = p.verdict else {
            panic!("{:?}", p.verdict)
        };
        assert!(
            at_risk.contains("before the partial-parity log"),
            "{at_risk}"
        );
        // A column current in the record and missing now: its writes in flight at the crash
        // were not logged.
        let labels: Vec<Found> = (0..4)
            .map(|c| {
                if c == 1 {
                    Found::Unreachable("node down".into())
                } else {
                    Found::Label(label(c, 7, false, &[]))
                }
            })
            .collect();
        let store = Recorded {
            log_period: 9,
            ..recorded(7, false, &[])
        };
        let p = plan(&layout(), "v1", &store, &labels);
        let Verdict::NeedsForce { at_risk } = p.verdict else {
            panic!("{:?}", p.verdict)
        };
        assert!(at_risk.contains("were current at the crash"), "{at_risk}");
    }

    #[test]
    fn foreign_and_missing_labels_fail_their_columns_and_too_many_refuse() {
        let mut found: Vec<Found> = (0..4)
            .map(|c| Found::Label(label(c, 2, true, &[])))
            .collect();
        let mut other = label(1, 9, true, &[]);
        other.volume_id = "v2".into();
        found[1] = Found::Label(other);
        let p = plan(&layout(), "v1", &recorded(2, true, &[]), &found);
        assert_eq!(
            p.mod_counter, 2,
            "another volume's label is never authoritative"
        );
        assert_eq!(p.newly_failed.len(), 1);
        assert_eq!(p.newly_failed[0].0, 1);
        assert_eq!(p.verdict, Verdict::Assemble { resync: false });
        found[0] = Found::Unreachable("connection refused".into());
        let p = plan(&layout(), "v1", &recorded(2, true, &[]), &found);
        assert!(matches!(p.verdict, Verdict::Refuse { .. }));
    }

    #[test]
    fn on_a_tie_the_record_with_more_failures_wins() {
        let found: Vec<Found> = (0..4)
            .map(|c| Found::Label(label(c, 3, true, if c == 0 { &[1] } else { &[] })))
            .collect();
        let p = plan(&layout(), "v1", &recorded(3, true, &[]), &found);
        assert_eq!(p.states[1], ComponentState::Failed);
        assert_eq!(p.source, Source::Label(0));
    }
}
