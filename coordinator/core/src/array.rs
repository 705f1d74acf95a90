//! Component states and the array state derived from them.
//!
//! The access pipeline keeps one [`ComponentStates`] per array, reads it under the stripe lock
//! to build each DAG, and marks a column failed through [`ComponentStates::mark_failed`], which
//! refuses a failure the layout would not survive (RAIDframe: a failure beyond the fault
//! tolerance fails the access, and the component stays as it was).

use std::fmt;

use crate::layout::{ColumnSet, Layout, RaidLevel};

/// The state of one component (column).
///
/// `Reconstructing` and `Spared` come with rebuild; callers outside this crate must already
/// handle states they do not know (`#[non_exhaustive]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ComponentState {
    /// In use, holding current data.
    #[default]
    Optimal,
    /// Out of use: its contents are stale or unreachable, and its units are reconstructed from
    /// redundancy.
    Failed,
}

impl ComponentState {
    /// Whether the component's units must be treated as missing.
    pub fn is_failed(self) -> bool {
        matches!(self, ComponentState::Failed)
    }
}

impl fmt::Display for ComponentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComponentState::Optimal => "optimal",
            ComponentState::Failed => "failed",
        })
    }
}

/// The state of the array as a whole, derived from its components and its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArrayState {
    /// No component failed.
    Optimal,
    /// Some failed, within the layout's tolerance: every byte is still served, some from
    /// redundancy.
    Degraded,
    /// More failures than the layout tolerates: some bytes are lost.
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
    /// The states do not match the layout's columns.
    #[error("{states} component states for a layout of {columns} columns")]
    ColumnCountMismatch {
        /// States given.
        states: usize,
        /// Columns of the layout.
        columns: usize,
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

/// The states of every component of one array, with a generation counter that changes on every
/// change (a retrying access can tell the state it built on is stale).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComponentStates {
    states: Vec<ComponentState>,
    generation: u64,
}

impl ComponentStates {
    /// Every column optimal.
    pub fn all_optimal(columns: usize) -> ComponentStates {
        ComponentStates {
            states: vec![ComponentState::Optimal; columns],
            generation: 0,
        }
    }

    /// States loaded from elsewhere (labels, the metadata store); must match `layout`.
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
        Ok(ComponentStates {
            states,
            generation: 0,
        })
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

    /// Bumped on every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The failed columns: the input of [`Layout::failures`].
    pub fn failed_columns(&self) -> ColumnSet {
        self.states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_failed())
            .map(|(c, _)| c)
            .collect()
    }

    /// The array's state under `layout`.
    pub fn array_state(&self, layout: &Layout) -> ArrayState {
        let failed = self.failed_columns();
        if failed.is_empty() {
            ArrayState::Optimal
        } else if layout.tolerates(&failed) {
            ArrayState::Degraded
        } else {
            ArrayState::Failed
        }
    }

    /// Marks `column` failed if the layout survives it; otherwise changes nothing and says why.
    /// The access pipeline calls this when a disk node fails (RAIDframe marks a component
    /// failed only while the array still tolerates it).
    pub fn mark_failed(
        &mut self,
        layout: &Layout,
        column: usize,
    ) -> Result<FailOutcome, ArrayError> {
        let state = self.checked(column)?;
        if state.is_failed() {
            return Ok(FailOutcome::AlreadyFailed);
        }
        let mut failed = self.failed_columns();
        failed.insert(column);
        if !layout.tolerates(&failed) {
            return Err(ArrayError::WouldExceedTolerance {
                column,
                level: layout.level(),
                tolerance: layout.fault_tolerance(),
            });
        }
        self.states[column] = ComponentState::Failed;
        self.generation += 1;
        Ok(FailOutcome::Marked)
    }

    /// Sets `column`'s state unconditionally (an administrator's action, rebuild completion);
    /// returns the previous state.
    pub fn set(
        &mut self,
        column: usize,
        state: ComponentState,
    ) -> Result<ComponentState, ArrayError> {
        let previous = self.checked(column)?;
        if previous != state {
            self.states[column] = state;
            self.generation += 1;
        }
        Ok(previous)
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
        // An administrator may force it; the array is then failed.
        assert_eq!(
            s.set(0, ComponentState::Failed),
            Ok(ComponentState::Optimal)
        );
        assert_eq!(s.array_state(&l), ArrayState::Failed);
        assert_eq!(
            s.set(4, ComponentState::Optimal),
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
