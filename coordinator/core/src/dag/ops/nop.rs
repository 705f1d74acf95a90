//! Nil, commit and terminator: no work, finished in place by the engine.

use bytes::Bytes;

use crate::dag::NodeError;

/// A no-op succeeds and produces nothing; its meaning (commit counting, completion) is the
/// engine's.
pub(crate) fn run() -> Result<Option<Bytes>, NodeError> {
    Ok(None)
}
