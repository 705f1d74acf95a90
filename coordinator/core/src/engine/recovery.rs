//! The commit-barrier rules (RAIDframe's `ProcessNode` / `NodeReady`, made strict).
//!
//! These are the decisions; [`super::run`] applies them with plain counters.

use crate::dag::EdgeKind;

/// The DAG's mode (RAIDframe's `rf_enable`, `rf_rollForward`, `rf_rollBackward`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No failure so far.
    Enable,
    /// A node failed after the commit (or in a DAG without one): finish forward.
    RollForward,
    /// A node failed before the commit: undo what completed, back to the header.
    RollBackward,
}

impl Mode {
    /// Whether nodes still fire forward.
    pub(crate) fn is_forward(self) -> bool {
        !matches!(self, Mode::RollBackward)
    }
}

/// What a failure does to a DAG still in [`Mode::Enable`]: once a commit node has fired, or when
/// the DAG has none, nothing can be taken back, so it rolls forward; otherwise nothing
/// irreversible has happened and it rolls backward.
pub(crate) fn mode_after_failure(commits_fired: u32, has_commit: bool) -> Mode {
    if commits_fired > 0 || !has_commit {
        Mode::RollForward
    } else {
        Mode::RollBackward
    }
}

/// What an antecedent's end means for a ready node, forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AntecedentEnd {
    /// Completed its do.
    Good,
    /// Failed, or was skipped: it produced nothing.
    NoData,
}

/// Transitive skipping: a node is skipped when any true-data antecedent produced nothing (it
/// failed, or was skipped itself). Other edge kinds only order nodes and never skip. RAIDframe
/// skipped only on a failed (not on a skipped) antecedent, so a node behind a skipped one fired
/// on missing data.
pub(crate) fn must_skip(antecedents: impl Iterator<Item = (EdgeKind, AntecedentEnd)>) -> bool {
    antecedents
        .into_iter()
        .any(|(kind, end)| kind == EdgeKind::TrueData && end == AntecedentEnd::NoData)
}

/// Reverse dependency order: a completed node may be undone once every successor it fired has
/// settled (failed, skipped, undone, or failed to undo). Successors that never fired do not count,
/// and RAIDframe's `numSuccDone == numSuccedents` test (which never holds when a successor did not
/// fire) is not used.
pub(crate) fn undo_ready(succ_fired: u32, succ_settled: u32) -> bool {
    succ_fired == succ_settled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_barrier_decides_the_direction() {
        assert_eq!(mode_after_failure(0, true), Mode::RollBackward);
        assert_eq!(mode_after_failure(1, true), Mode::RollForward);
        assert_eq!(mode_after_failure(0, false), Mode::RollForward);
    }

    #[test]
    fn only_true_data_edges_skip() {
        use AntecedentEnd::*;
        assert!(must_skip([(EdgeKind::TrueData, NoData)].into_iter()));
        assert!(must_skip(
            [(EdgeKind::Control, Good), (EdgeKind::TrueData, NoData)].into_iter()
        ));
        for k in [EdgeKind::AntiData, EdgeKind::OutputData, EdgeKind::Control] {
            assert!(!must_skip([(k, NoData)].into_iter()));
        }
        assert!(!must_skip([(EdgeKind::TrueData, Good)].into_iter()));
    }

    #[test]
    fn undo_waits_for_fired_successors_only() {
        assert!(undo_ready(0, 0));
        assert!(!undo_ready(2, 1));
        assert!(undo_ready(2, 2));
    }
}
