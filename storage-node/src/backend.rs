//! The storage backend under a component's block store: positioned reads and writes, a data sync,
//! and the size. Calls are blocking; the block store runs them on tokio's blocking pool.
//!
//! The real backend is a [`std::fs::File`]; unit tests use a simulated disk that can lose power
//! (see `power_cut` in the block store's tests).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Blocking byte-addressed storage with an explicit durability point.
pub trait StorageBackend: Send + Sync + 'static {
    /// Fills `buf` from `offset`; a short read is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `data` at `offset`. Not durable until a later [`StorageBackend::sync`].
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write that completed before this call started durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Current size in bytes.
    fn size(&self) -> io::Result<u64>;
}

/// A component file on the local file system.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
}

impl FileBackend {
    /// Wraps an open read-write file.
    pub fn new(file: File) -> Self {
        Self { file }
    }
}

impl StorageBackend for FileBackend {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}
