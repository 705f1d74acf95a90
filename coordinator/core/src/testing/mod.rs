//! In-memory and fault-injecting components for tests of the engine and the DAGs.
//!
//! Only for unit tests of the core: integration tests use real storage nodes.
//!
//! - [`MemComponent`]: a component in a `Vec<u8>`, applied synchronously (a write is visible when
//!   its call returns its future), so tests can check contents right after a DAG. Blocks can be
//!   marked bad ([`MemComponent::mark_bad`]): like a storage node's checksum mismatch, a read
//!   that covers one answers [`IoErrorKind::DataLoss`] naming it, until the block is written.
//! - [`FaultyComponent`]: wraps any component, records every call in an [`IoLog`] (with the DAG
//!   node that issued it, see [`crate::engine::issuing_node`]), and injects [`Fault`]s chosen by a
//!   [`Trigger`]: the Nth call on the component, a call of a kind, at a block, or from a named node.
//! - [`reference`]: the column images a volume must produce, and a parity / Q / mirror checker.

mod faulty;
pub mod reference;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::io::{ComponentIo, IoError, IoErrorKind};

pub use faulty::{Fault, FaultyComponent, Gate, IoLog, IoOp, IoRecord, Trigger};

/// A component held in memory.
#[derive(Debug)]
pub struct MemComponent {
    id: String,
    block_size: u32,
    block_count: u64,
    data: RwLock<Vec<u8>>,
    /// Blocks whose "checksum" does not match: reads covering them answer data loss.
    bad: RwLock<BTreeSet<u64>>,
    /// The log area ([`MEM_LOG_BYTES`]).
    log: RwLock<Vec<u8>>,
}

/// Bytes of an in-memory component's log area.
pub const MEM_LOG_BYTES: usize = 1 << 20;

impl MemComponent {
    /// A zero-filled component.
    pub fn new(id: impl Into<String>, block_size: u32, block_count: u64) -> Arc<Self> {
        let len = usize::try_from(u64::from(block_size) * block_count)
            .expect("an in-memory component fits in memory");
        Arc::new(MemComponent {
            id: id.into(),
            block_size,
            block_count,
            data: RwLock::new(vec![0; len]),
            bad: RwLock::new(BTreeSet::new()),
            log: RwLock::new(vec![0; MEM_LOG_BYTES]),
        })
    }

    /// A component whose blocks are filled from `fill(block_index)` (one byte per block).
    pub fn filled(
        id: impl Into<String>,
        block_size: u32,
        block_count: u64,
        fill: impl Fn(u64) -> u8,
    ) -> Arc<Self> {
        let c = Self::new(id, block_size, block_count);
        {
            let mut data = c.data.write().unwrap_or_else(|p| p.into_inner());
            for b in 0..block_count {
                let s = (b * u64::from(block_size)) as usize;
                data[s..s + block_size as usize].fill(fill(b));
            }
        }
        c
    }

    /// A component holding `data` (a whole number of blocks).
    pub fn with_contents(id: impl Into<String>, block_size: u32, data: Vec<u8>) -> Arc<Self> {
        assert!(
            data.len().is_multiple_of(block_size as usize),
            "contents must be whole blocks"
        );
        Arc::new(MemComponent {
            id: id.into(),
            block_size,
            block_count: (data.len() / block_size as usize) as u64,
            data: RwLock::new(data),
            bad: RwLock::new(BTreeSet::new()),
            log: RwLock::new(vec![0; MEM_LOG_BYTES]),
        })
    }

    /// Overwrites bytes at `offset` directly (no fault, no log): a test corrupting a component.
    pub fn poke(&self, offset: usize, bytes: &[u8]) {
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        data[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    /// Makes `block` bad, as a storage node's checksum mismatch: every read covering it answers
    /// [`IoErrorKind::DataLoss`] naming the bad blocks of the request, until the block is
    /// written again.
    pub fn mark_bad(&self, block: u64) {
        self.bad
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(block);
    }

    /// The blocks that are bad now (see [`MemComponent::mark_bad`]).
    pub fn bad_blocks(&self) -> Vec<u64> {
        self.bad
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// A copy of `block_count` blocks from `start_block`, read directly (no fault, no log).
    pub fn peek(&self, start_block: u64, block_count: u32) -> Vec<u8> {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        let s = (start_block * u64::from(self.block_size)) as usize;
        let e = s + block_count as usize * self.block_size as usize;
        data[s..e].to_vec()
    }

    /// The whole content.
    pub fn contents(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn range(&self, start_block: u64, block_count: u64) -> Result<(usize, usize), IoError> {
        let end = start_block.checked_add(block_count);
        match end {
            Some(end) if end <= self.block_count => {
                let bs = u64::from(self.block_size);
                Ok(((start_block * bs) as usize, (end * bs) as usize))
            }
            _ => Err(IoError::new(
                IoErrorKind::OutOfRange,
                &self.id,
                start_block,
                block_count,
                format!("component has {} blocks", self.block_count),
            )),
        }
    }

    pub(crate) fn read_now(&self, start_block: u64, block_count: u32) -> Result<Bytes, IoError> {
        let (s, e) = self.range(start_block, u64::from(block_count))?;
        let end = start_block + u64::from(block_count);
        let bad: Vec<u64> = self
            .bad
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .range(start_block..end)
            .copied()
            .collect();
        if !bad.is_empty() {
            return Err(IoError::new(
                IoErrorKind::DataLoss { bad_blocks: bad },
                &self.id,
                start_block,
                u64::from(block_count),
                "checksum mismatch",
            ));
        }
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        Ok(Bytes::copy_from_slice(&data[s..e]))
    }

    pub(crate) fn write_now(&self, start_block: u64, bytes: &[u8]) -> Result<(), IoError> {
        let bs = self.block_size as usize;
        if !bytes.len().is_multiple_of(bs) {
            return Err(IoError::new(
                IoErrorKind::InvalidRequest,
                &self.id,
                start_block,
                0,
                format!("{} bytes is not a whole number of blocks", bytes.len()),
            ));
        }
        let count = (bytes.len() / bs) as u64;
        let (s, e) = self.range(start_block, count)?;
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        data[s..e].copy_from_slice(bytes);
        let mut bad = self.bad.write().unwrap_or_else(|p| p.into_inner());
        let rewritten: Vec<u64> = bad
            .range(start_block..start_block + count)
            .copied()
            .collect();
        for b in rewritten {
            bad.remove(&b);
        }
        Ok(())
    }
}

impl ComponentIo for MemComponent {
    fn id(&self) -> &str {
        &self.id
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn block_count(&self) -> u64 {
        self.block_count
    }

    fn read(&self, start_block: u64, block_count: u32) -> BoxFuture<'_, Result<Bytes, IoError>> {
        let r = self.read_now(start_block, block_count);
        Box::pin(std::future::ready(r))
    }

    fn write(&self, start_block: u64, data: Bytes) -> BoxFuture<'_, Result<(), IoError>> {
        let r = self.write_now(start_block, &data);
        Box::pin(std::future::ready(r))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), IoError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn log_bytes(&self) -> u64 {
        MEM_LOG_BYTES as u64
    }

    fn write_log(&self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<(), IoError>> {
        let mut log = self.log.write().unwrap_or_else(|p| p.into_inner());
        let r = match log.get_mut(offset as usize..offset as usize + data.len()) {
            Some(dst) => {
                dst.copy_from_slice(&data);
                Ok(())
            }
            None => Err(IoError::new(
                IoErrorKind::OutOfRange,
                &self.id,
                offset,
                0,
                "beyond the log area",
            )),
        };
        Box::pin(std::future::ready(r))
    }

    fn read_log(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Bytes, IoError>> {
        let log = self.log.read().unwrap_or_else(|p| p.into_inner());
        let r = match log.get(offset as usize..offset as usize + len as usize) {
            Some(src) => Ok(Bytes::copy_from_slice(src)),
            None => Err(IoError::new(
                IoErrorKind::OutOfRange,
                &self.id,
                offset,
                0,
                "beyond the log area",
            )),
        };
        Box::pin(std::future::ready(r))
    }
}

#[cfg(test)]
mod tests;
