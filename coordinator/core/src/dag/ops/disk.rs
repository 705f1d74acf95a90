//! Disk reads and writes: the only operations that reach storage, each under a deadline that
//! measures the storage, never a local queue (see [`ComponentIo::own_deadline`]).
//!
//! A component that sets no deadline of its own is bounded by the engine's around the whole
//! call. A component that does (a remote one: its node client's timeout starts when the call is
//! sent, after the wait for a place among the node's calls in flight) is not wrapped again: an
//! outer deadline could only expire on a call still queued, failing a healthy column for the
//! coordinator's own load. The wait in such a queue is bounded without one: every call ahead
//! of it ends within its own deadline, and the queue itself is bounded by the admission of
//! accesses ([`crate::admission`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::dag::{DiskTarget, NodeError};
use crate::io::{ComponentIo, IoError, IoErrorKind};

fn timeout_error(io: &dyn ComponentIo, t: &DiskTarget, deadline: Duration) -> NodeError {
    NodeError::Io(IoError::new(
        IoErrorKind::Timeout,
        io.id(),
        t.start_block,
        u64::from(t.block_count),
        format!("no answer within the node deadline of {deadline:?}"),
    ))
}

/// Runs `call` on `io` under the engine's `deadline`, unless `io` bounds its calls itself.
async fn bounded<T>(
    io: &dyn ComponentIo,
    t: &DiskTarget,
    deadline: Duration,
    call: impl Future<Output = Result<T, IoError>>,
) -> Result<T, NodeError> {
    let answer = if io.own_deadline().is_some() {
        call.await
    } else {
        match tokio::time::timeout(deadline, call).await {
            Ok(answer) => answer,
            Err(_) => return Err(timeout_error(io, t, deadline)),
        }
    };
    answer.map_err(NodeError::Io)
}

/// Reads `t` from `io`; a read that does not answer within its deadline fails with `Timeout`,
/// and an answer of the wrong size fails with `Other` (it would otherwise poison every XOR
/// downstream).
pub(crate) async fn read(
    io: Arc<dyn ComponentIo>,
    t: DiskTarget,
    deadline: Duration,
) -> Result<Option<Bytes>, NodeError> {
    let data = bounded(
        io.as_ref(),
        &t,
        deadline,
        io.read(t.start_block, t.block_count),
    )
    .await?;
    let expected = t.block_count as usize * io.block_size() as usize;
    if data.len() == expected {
        Ok(Some(data))
    } else {
        Err(NodeError::Io(IoError::new(
            IoErrorKind::Other,
            io.id(),
            t.start_block,
            u64::from(t.block_count),
            format!("read answered {} bytes, expected {expected}", data.len()),
        )))
    }
}

/// Writes `data` to `t` on `io` under its deadline.
pub(crate) async fn write(
    io: Arc<dyn ComponentIo>,
    t: DiskTarget,
    data: Bytes,
    deadline: Duration,
) -> Result<Option<Bytes>, NodeError> {
    bounded(io.as_ref(), &t, deadline, io.write(t.start_block, data))
        .await
        .map(|()| None)
}
