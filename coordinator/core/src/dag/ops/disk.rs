//! Disk reads and writes: the only operations that reach storage, each under a deadline.

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

/// Reads `t` from `io`; a read that does not answer within `deadline` fails with `Timeout`, and an
/// answer of the wrong size fails with `Other` (it would otherwise poison every XOR downstream).
pub(crate) async fn read(
    io: Arc<dyn ComponentIo>,
    t: DiskTarget,
    deadline: Duration,
) -> Result<Option<Bytes>, NodeError> {
    match tokio::time::timeout(deadline, io.read(t.start_block, t.block_count)).await {
        Err(_) => Err(timeout_error(io.as_ref(), &t, deadline)),
        Ok(Err(e)) => Err(NodeError::Io(e)),
        Ok(Ok(data)) => {
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
    }
}

/// Writes `data` to `t` on `io` under `deadline`.
pub(crate) async fn write(
    io: Arc<dyn ComponentIo>,
    t: DiskTarget,
    data: Bytes,
    deadline: Duration,
) -> Result<Option<Bytes>, NodeError> {
    match tokio::time::timeout(deadline, io.write(t.start_block, data)).await {
        Err(_) => Err(timeout_error(io.as_ref(), &t, deadline)),
        Ok(Err(e)) => Err(NodeError::Io(e)),
        Ok(Ok(())) => Ok(None),
    }
}
