//! The failure state of an array: every column's [`ComponentState`], the recovery watermark of
//! a column being rebuilt or re-added, the [`LostSet`], and the array state derived from them.
//!
//! This is the one state machine of `docs/STATE.md`: [`ComponentStates::transition`] is the only
//! code that changes a column's state (it checks that the transition is allowed and that the
//! layout survives it); everything else asks questions of it: is this column readable or
//! writable *for this stripe* ([`ComponentStates::current_for`]), which columns does a stripe's
//! DAG have to treat as missing ([`ComponentStates::missing_for`]). RAIDframe keeps the same
//! thing in `RF_DiskStatus_t`; Mayastor in `ChildState`.
//!
//! The access pipeline keeps one [`ComponentStates`] per array, reads it under the stripe lock to
//! build each DAG, and marks a column failed through [`ComponentStates::mark_failed`], which
//! refuses a failure the layout would not survive (RAIDframe: a failure beyond the fault
//! tolerance fails the access, and the component stays as it was).

use std::fmt;

use crate::layout::{ColumnSet, Layout, RaidLevel};
use crate::lost::LostSet;

/// The state of one component: of a column of an array, or of a spare.
///
/// | state | holds current data | read | written |
/// |---|---|---|---|
/// | `Optimal` | every stripe | yes | yes |
/// | `Failed` | none | never | never |
/// | `Spare` | none (not a column) | never | never |
/// | `Reconstructing` | stripes below its watermark | below the watermark | below the watermark |
/// | `Stale` (re-adding) | stripes below its watermark | below the watermark | below the watermark |
/// | `Copyback` | every stripe (the column is on its spare) | yes | yes |
///
/// Stripes at or above a recovering column's watermark are treated as if the column were
/// failed for that stripe: the rebuild (or re-add) writes them under the stripe lock when it
/// reaches them, so a user write there needs no copy on the recovering component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ComponentState {
    /// In use, holding current data.
    #[default]
    Optimal,
    /// Out of use: gone, broken, or failed by an administrator. Never read or written again until
    /// it is rebuilt or re-added from what it missed.
    Failed,
    /// A hot spare in the pool: belongs to no column yet.
    Spare,
    /// Being rebuilt from redundancy (onto a spare, or in place); current below its watermark.
    Reconstructing,
    /// Came back after an outage and is being re-added: resynced region by region from what it
    /// missed; current below its watermark.
    Stale,
    /// Current (the column lives on its spare) while its data is copied back to a replacement.
    Copyback,
}

impl ComponentState {
    /// Every state, in the order of the table above.
    pub const ALL: [ComponentState; 6] = [
        ComponentState::Optimal,
        ComponentState::Failed,
        ComponentState::Spare,
        ComponentState::Reconstructing,
        ComponentState::Stale,
        ComponentState::Copyback,
    ];

    /// Whether the component is failed.
    pub fn is_failed(self) -> bool {
        matches!(self, ComponentState::Failed)
    }

    /// Whether the component holds current data for every stripe.
    pub fn is_current(self) -> bool {
        matches!(self, ComponentState::Optimal | ComponentState::Copyback)
    }

    /// Whether the component is current only below its recovery watermark.
    pub fn is_recovering(self) -> bool {
        matches!(self, ComponentState::Reconstructing | ComponentState::Stale)
    }

    /// Whether `self -> to` is a transition of the state machine (`docs/STATE.md`).
    pub fn can_become(self, to: ComponentState) -> bool {
        use ComponentState::*;
        matches!(
            (self, to),
            (Optimal, Failed)
                | (Optimal, Copyback)
                | (Failed, Reconstructing)
                | (Failed, Stale)
                | (Spare, Reconstructing)
                | (Reconstructing, Optimal)
                | (Reconstructing, Failed)
                | (Stale, Optimal)
                | (Stale, Failed)
                | (Stale, Reconstructing)
                | (Copyback, Optimal)
                | (Copyback, Failed)
        )
    }

    /// The stable lowercase name (labels, the store, the API, metrics).
    pub fn name(self) -> &'static str {
        match self {
            ComponentState::Optimal => "optimal",
            ComponentState::Failed => "failed",
            ComponentState::Spare => "spare",
            ComponentState::Reconstructing => "reconstructing",
            ComponentState::Stale => "stale",
            ComponentState::Copyback => "copyback",
        }
    }
}

impl fmt::Display for ComponentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The state of the array as a whole, derived from its components and its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArrayState {
    /// Every column current.
    Optimal,
    /// Some columns are not current (failed, or still recovering), within the layout's
    /// tolerance: every byte is still served, some from redundancy.
    Degraded,
    /// More columns are missing than the layout tolerates: some bytes cannot be served.
    Failed,
}

impl fmt::Display for ArrayState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArrayState::Optimal => "optimal",
            ArrayState::Degraded => "degraded",
            ArrayState::Failed => "failed",
        })
    }
}

/// Errors of component state changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArrayError {
    /// The column does not exist.
    #[error("column {column} does not exist (the array has {columns} columns)")]
    NoSuchColumn {
        /// Column asked for.
        column: usize,
        /// Columns of the array.
        columns: usize,
    },
    /// Marking the column failed would leave the array with more failures than its layout
    /// tolerates; nothing was changed.
    #[error("failing column {column} would exceed the fault tolerance of {level} ({tolerance})")]
    WouldExceedTolerance {
        /// The column.
        column: usize,
        /// The array's level.
        level: RaidLevel,
        /// Failures the level tolerates.
        tolerance: usize,
    },
    /// The state machine has no such transition; nothing was changed.
    #[error("column {column} cannot go from {from} to {to}")]
    NotAllowed {
        /// The column.
        column: usize,
        /// Its state.
        from: ComponentState,
        /// The state asked for.
        to: ComponentState,
    },
    /// The states do not match the layout's columns.
    #[error("{states} component states for a layout of {columns} columns")]
    ColumnCountMismatch {
        /// States given.
        states: usize,
        /// Columns of the layout.
        columns: usize,
    },
    /// A column cannot be in the spare state (spares belong to no column).
    #[error("column {column} is recorded as a spare; a column is never a spare")]
    SpareColumn {
        /// The column.
        column: usize,
    },
}

/// What [`ComponentStates::mark_failed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailOutcome {
    /// The column is now failed.
    Marked,
    /// It already was (another access got there first).
    AlreadyFailed,
}

/// The failure state of one array: every column's state and recovery watermark, and the lost
/// set, with a generation counter that changes on every change (a retrying access can tell the
/// state it built on is stale; the recorder never writes an older generation over a newer one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComponentStates {
    states: Vec<ComponentState>,
    /// Per column: the first stripe not yet recovered (meaningful while recovering).
    recovered: Vec<u64>,
    lost: LostSet,
    /// Columns whose node is gone but that could not be failed (beyond the tolerance): not
    /// persisted, not counted in the generation; they are treated as missing until their node
    /// answers again, and while any are, the array is failed and writes are refused (so the
    /// gone columns stay current and the array recovers by itself when they come back).
    gone: ColumnSet,
    generation: u64,
    /// The partial-parity log's period ([`crate::ppl`]): drawn when the array stops being
    /// optimal, 0 while every column is current.
    log_period: u64,
}

impl ComponentStates {
    /// Every column optimal, nothing lost.
    pub fn all_optimal(columns: usize) -> ComponentStates {
        ComponentStates {
            states: vec![ComponentState::Optimal; columns],
            recovered: vec![0; columns],
            lost: LostSet::new(),
            gone: ColumnSet::new(),
            generation: 0,
            log_period: 0,
        }
    }

    /// States loaded from elsewhere (labels, the metadata store); must match `layout`, and no
    /// column may be a spare.
    pub fn from_states(
        layout: &Layout,
        states: Vec<ComponentState>,
    ) -> Result<ComponentStates, ArrayError> {
        if states.len() != layout.columns() {
            return Err(ArrayError::ColumnCountMismatch {
                states: states.len(),
                columns: layout.columns(),
            });
        }
        if let Some(column) = states.iter().position(|s| *s == ComponentState::Spare) {
            return Err(ArrayError::SpareColumn { column });
        }
        Ok(ComponentStates {
            recovered: vec![0; states.len()],
            states,
            lost: LostSet::new(),
            gone: ColumnSet::new(),
            generation: 0,
            log_period: 0,
        }
        .with_log_period(0))
    }

    /// The same, with the recovery watermarks (`recovered[c]`: the first stripe column `c` has
    /// not recovered yet) and the lost set.
    pub fn with_recovery(mut self, recovered: Vec<u64>, lost: LostSet) -> ComponentStates {
        if recovered.len() == self.states.len() {
            self.recovered = recovered;
        }
        self.lost = lost;
        self
    }

    /// Number of columns.
    pub fn columns(&self) -> usize {
        self.states.len()
    }

    /// The state of `column`.
    pub fn get(&self, column: usize) -> Option<ComponentState> {
        self.states.get(column).copied()
    }

    /// All states in column order.
    pub fn states(&self) -> &[ComponentState] {
        &self.states
    }

    /// The recovery watermarks, in column order (see [`ComponentStates::with_recovery`]).
    pub fn recovered(&self) -> &[u64] {
        &self.recovered
    }

    /// The lost blocks.
    pub fn lost(&self) -> &LostSet {
        &self.lost
    }

    /// The partial-parity log's period: a random number drawn when the array stopped being
    /// optimal and kept until every column is current again; 0 while every column is current
    /// ([`crate::ppl`]: only entries of this period count at a replay).
    pub fn log_period(&self) -> u64 {
        self.log_period
    }

    /// The same, with the log period `period` loaded from a record (assembly); a new one is
    /// drawn when a column is not current and the record had none (0), and it is 0 when every
    /// column is current.
    pub fn with_log_period(mut self, period: u64) -> ComponentStates {
        self.log_period = period;
        self.settle_log_period();
        self
    }

    /// The same with no log period, for a record of an array that keeps no log.
    pub fn without_log_period(mut self) -> ComponentStates {
        self.log_period = 0;
        self
    }

    fn settle_log_period(&mut self) {
        if self.states.iter().all(|s| s.is_current()) {
            self.log_period = 0;
        } else if self.log_period == 0 {
            self.log_period = rand::random::<u64>().max(1);
        }
    }

    /// Bumped on every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `column` holds current data for `stripe`: it may be read, and must be written,
    /// by that stripe's DAGs. A gone column is not, until its node answers again.
    pub fn current_for(&self, column: usize, stripe: u64) -> bool {
        if self.gone.contains(column) {
            return false;
        }
        match self.get(column) {
            Some(s) if s.is_current() => true,
            Some(s) if s.is_recovering() => stripe < self.recovered[column],
            _ => false,
        }
    }

    /// The columns a DAG of `stripe` must treat as missing: neither read nor written.
    pub fn missing_for(&self, stripe: u64) -> ColumnSet {
        (0..self.states.len())
            .filter(|&c| !self.current_for(c, stripe))
            .collect()
    }

    /// The columns in the failed state.
    pub fn failed_columns(&self) -> ColumnSet {
        self.columns_where(|s| s.is_failed())
    }

    /// The columns not current for every stripe (failed or recovering): the set the fault
    /// tolerance is counted against, since some stripe misses all of them at once.
    pub fn degraded_columns(&self) -> ColumnSet {
        self.columns_where(|s| !s.is_current())
    }

    fn columns_where(&self, f: impl Fn(ComponentState) -> bool) -> ColumnSet {
        self.states
            .iter()
            .enumerate()
            .filter(|(_, s)| f(**s))
            .map(|(c, _)| c)
            .collect()
    }

    /// The columns that are gone without being failed (see the field's doc).
    pub fn gone_columns(&self) -> &ColumnSet {
        &self.gone
    }

    /// Records that `column`'s node is gone (`true`) or answers again (`false`); returns
    /// whether that changed anything. Only for a column that is not failed: a failed column is
    /// out of use whatever its node does.
    pub fn set_gone(&mut self, column: usize, gone: bool) -> bool {
        if gone && self.get(column).is_none_or(|s| s.is_failed()) {
            return false;
        }
        if gone {
            self.gone.insert(column)
        } else {
            self.gone.remove(column)
        }
    }

    /// The columns missing everywhere or somewhere: failed, recovering, or gone.
    pub fn unavailable_columns(&self) -> ColumnSet {
        let mut set = self.degraded_columns();
        for c in self.gone.iter() {
            set.insert(c);
        }
        set
    }

    /// The array's state under `layout`: failed when the columns that are failed, recovering
    /// or gone are more than the layout tolerates.
    pub fn array_state(&self, layout: &Layout) -> ArrayState {
        let degraded = self.unavailable_columns();
        if degraded.is_empty() {
            ArrayState::Optimal
        } else if layout.tolerates(&degraded) {
            ArrayState::Degraded
        } else {
            ArrayState::Failed
        }
    }

    /// The one place a column's state changes: checks that `to` is a transition of the state
    /// machine from the column's state and, when the column stops being current, that the
    /// layout survives it; then performs it (a recovering state starts at watermark 0). Returns
    /// the previous state; the same state again changes nothing.
    pub fn transition(
        &mut self,
        layout: &Layout,
        column: usize,
        to: ComponentState,
    ) -> Result<ComponentState, ArrayError> {
        let from = self.checked(column)?;
        if from == to {
            return Ok(from);
        }
        if !from.can_become(to) {
            return Err(ArrayError::NotAllowed { column, from, to });
        }
        if from.is_current() && !to.is_current() {
            let mut degraded = self.degraded_columns();
            degraded.insert(column);
            if !layout.tolerates(&degraded) {
                return Err(ArrayError::WouldExceedTolerance {
                    column,
                    level: layout.level(),
                    tolerance: layout.fault_tolerance(),
                });
            }
        }
        self.states[column] = to;
        // A recovering column's watermark, or a copyback's (the stripes copied to its
        // replacement), starts at 0; a copyback's ends with it.
        if to.is_recovering() || to == ComponentState::Copyback || from == ComponentState::Copyback
        {
            self.recovered[column] = 0;
        }
        self.settle_log_period();
        self.generation += 1;
        Ok(from)
    }

    /// Marks `column` failed if the layout survives it; otherwise changes nothing and says why.
    /// The access pipeline calls this when a disk node fails (RAIDframe marks a component
    /// failed only while the array still tolerates it).
    pub fn mark_failed(
        &mut self,
        layout: &Layout,
        column: usize,
    ) -> Result<FailOutcome, ArrayError> {
        match self.transition(layout, column, ComponentState::Failed)? {
            ComponentState::Failed => Ok(FailOutcome::AlreadyFailed),
            _ => Ok(FailOutcome::Marked),
        }
    }

    /// Moves a recovering column's watermark up to `stripe` (the rebuild or re-add finished the
    /// stripes below it), or a copyback's (the stripes below it are on the replacement: its
    /// checkpoint; the column stays current everywhere). Never moves it down.
    pub fn advance_recovery(&mut self, column: usize, stripe: u64) -> Result<(), ArrayError> {
        let state = self.checked(column)?;
        if (state.is_recovering() || state == ComponentState::Copyback)
            && stripe > self.recovered[column]
        {
            self.recovered[column] = stripe;
            self.generation += 1;
        }
        Ok(())
    }

    /// Marks volume blocks `blocks` lost; returns whether anything changed.
    pub fn mark_lost(&mut self, blocks: std::ops::Range<u64>) -> bool {
        if blocks.is_empty() || self.lost.overlapping(blocks.clone()) == [blocks.clone()] {
            return false;
        }
        self.lost.insert(blocks);
        self.generation += 1;
        true
    }

    /// Clears volume blocks `blocks` (rewritten whole); returns whether anything changed.
    pub fn clear_lost(&mut self, blocks: std::ops::Range<u64>) -> bool {
        if !self.lost.intersects(blocks.clone()) {
            return false;
        }
        self.lost.remove(blocks);
        self.generation += 1;
        true
    }

    fn checked(&self, column: usize) -> Result<ComponentState, ArrayError> {
        self.get(column).ok_or(ArrayError::NoSuchColumn {
            column,
            columns: self.states.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Geometry;

    #[test]
    fn the_transitions_are_the_state_machine_of_the_docs() {
        use ComponentState::*;
        let allowed: Vec<(ComponentState, ComponentState)> = ComponentState::ALL
            .iter()
            .flat_map(|&a| ComponentState::ALL.iter().map(move |&b| (a, b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Optimal, Failed),
                (Optimal, Copyback),
                (Failed, Reconstructing),
                (Failed, Stale),
                (Spare, Reconstructing),
                (Reconstructing, Optimal),
                (Reconstructing, Failed),
                (Stale, Optimal),
                (Stale, Failed),
                (Stale, Reconstructing),
                (Copyback, Optimal),
                (Copyback, Failed),
            ]
        );
        // Nothing leaves Failed except through recovery: never straight back to Optimal.
        assert!(!Failed.can_become(Optimal));
        for s in ComponentState::ALL {
            assert!(!s.can_become(Spare), "{s} -> spare");
        }
    }

    #[test]
    fn a_recovering_column_is_current_only_below_its_watermark() {
        let l = layout(RaidLevel::Raid5, 4);
        let mut s = ComponentStates::all_optimal(4);
        s.mark_failed(&l, 1).unwrap();
        assert_eq!(
            s.transition(&l, 1, ComponentState::Optimal),
            Err(ArrayError::NotAllowed {
                column: 1,
                from: ComponentState::Failed,
                to: ComponentState::Optimal
            })
        );
        s.transition(&l, 1, ComponentState::Reconstructing).unwrap();
        assert!(!s.current_for(1, 0));
        assert_eq!(s.missing_for(0).iter().collect::<Vec<_>>(), vec![1]);
        s.advance_recovery(1, 3).unwrap();
        assert!(s.current_for(1, 2) && !s.current_for(1, 3));
        assert!(s.missing_for(2).is_empty());
        // Still degraded, and a second column may not fail while it recovers.
        assert_eq!(s.array_state(&l), ArrayState::Degraded);
        assert!(matches!(
            s.mark_failed(&l, 0),
            Err(ArrayError::WouldExceedTolerance { .. })
        ));
        s.transition(&l, 1, ComponentState::Optimal).unwrap();
        assert_eq!(s.array_state(&l), ArrayState::Optimal);
        // Copyback is current; a spare is never a column.
        s.transition(&l, 2, ComponentState::Copyback).unwrap();
        assert_eq!(s.array_state(&l), ArrayState::Optimal);
        // A copyback's watermark is its checkpoint: it moves up only, the column stays current
        // below and above it, and it ends with the copyback.
        assert_eq!(s.recovered()[2], 0);
        s.advance_recovery(2, 5).unwrap();
        s.advance_recovery(2, 4).unwrap();
        assert_eq!(s.recovered()[2], 5);
        assert!(s.current_for(2, 9) && s.current_for(2, 0));
        s.transition(&l, 2, ComponentState::Optimal).unwrap();
        assert_eq!(s.recovered()[2], 0);
        assert_eq!(
            ComponentStates::from_states(&l, vec![ComponentState::Spare; 4]),
            Err(ArrayError::SpareColumn { column: 0 })
        );
    }

    #[test]
    fn lost_marks_bump_the_generation_only_when_they_change() {
        let mut s = ComponentStates::all_optimal(3);
        assert!(s.mark_lost(0..8));
        assert!(!s.mark_lost(2..4));
        assert_eq!(s.generation(), 1);
        assert!(s.clear_lost(0..2));
        assert!(!s.clear_lost(20..30));
        assert_eq!(s.lost().ranges().collect::<Vec<_>>(), vec![2..8]);
        assert_eq!(s.generation(), 2);
    }

    fn layout(level: RaidLevel, columns: usize) -> Layout {
        Layout::new(level, Geometry::new(columns, 1, 512, 8).unwrap()).unwrap()
    }

    #[test]
    fn raid5_degrades_then_refuses_a_second_failure() {
        let l = layout(RaidLevel::Raid5, 4);
        let mut s = ComponentStates::all_optimal(4);
        assert_eq!(s.array_state(&l), ArrayState::Optimal);
        assert_eq!(s.mark_failed(&l, 2), Ok(FailOutcome::Marked));
        assert_eq!(s.generation(), 1);
        assert_eq!(s.array_state(&l), ArrayState::Degraded);
        assert_eq!(s.mark_failed(&l, 2), Ok(FailOutcome::AlreadyFailed));
        assert!(matches!(
            s.mark_failed(&l, 0),
            Err(ArrayError::WouldExceedTolerance { column: 0, .. })
        ));
        assert_eq!(s.get(0), Some(ComponentState::Optimal));
        assert_eq!(s.generation(), 1);
        assert_eq!(s.failed_columns().iter().collect::<Vec<_>>(), vec![2]);
        assert_eq!(
            s.transition(&l, 4, ComponentState::Optimal),
            Err(ArrayError::NoSuchColumn {
                column: 4,
                columns: 4
            })
        );
    }

    #[test]
    fn raid1_tolerates_one_failure_per_pair() {
        let l = layout(RaidLevel::Raid1, 4);
        let mut s = ComponentStates::all_optimal(4);
        assert_eq!(s.mark_failed(&l, 0), Ok(FailOutcome::Marked));
        assert_eq!(s.mark_failed(&l, 3), Ok(FailOutcome::Marked));
        assert_eq!(s.array_state(&l), ArrayState::Degraded);
        assert!(s.mark_failed(&l, 1).is_err());
        assert!(s.mark_failed(&l, 2).is_err());
    }

    #[test]
    fn raid6_tolerates_two_and_raid0_none() {
        let l6 = layout(RaidLevel::Raid6, 5);
        let mut s = ComponentStates::all_optimal(5);
        assert!(s.mark_failed(&l6, 1).is_ok());
        assert!(s.mark_failed(&l6, 4).is_ok());
        assert_eq!(s.array_state(&l6), ArrayState::Degraded);
        assert!(s.mark_failed(&l6, 0).is_err());

        let l0 = layout(RaidLevel::Raid0, 3);
        let mut s = ComponentStates::all_optimal(3);
        assert!(s.mark_failed(&l0, 1).is_err());
        assert_eq!(s.array_state(&l0), ArrayState::Optimal);
    }

    #[test]
    fn states_must_match_the_layout() {
        let l = layout(RaidLevel::Raid4, 3);
        assert_eq!(
            ComponentStates::from_states(&l, vec![ComponentState::Optimal; 4]),
            Err(ArrayError::ColumnCountMismatch {
                states: 4,
                columns: 3
            })
        );
        let s = ComponentStates::from_states(
            &l,
            vec![
                ComponentState::Optimal,
                ComponentState::Failed,
                ComponentState::Optimal,
            ],
        )
        .unwrap();
        assert_eq!(s.array_state(&l), ArrayState::Degraded);
    }
}
