//! A storage node's data in memory: its component disks, its node state file and failure
//! markers, for the deterministic simulation (`tests/tests/simulation.rs`), where a node runs its
//! real code but no real file and no blocking thread may take part.
//!
//! [`MemoryMedia`] outlives the node that uses it: a node crashed and started again on the same
//! media finds what it had written, like a process restarted on its data directory. Every write
//! is durable as soon as it returns (a disk without a volatile cache); with fault injection the
//! node puts its [`crate::volatile_cache::VolatileCache`] in front as it does on files. Nothing
//! here blocks: the block store and the group commit call it inline ([`StorageBackend::blocks`]).

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::backend::{Directory, StorageBackend};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One component's bytes.
#[derive(Debug, Default)]
pub struct MemoryDisk {
    bytes: RwLock<Vec<u8>>,
}

impl MemoryDisk {
    /// A disk of `len` zero bytes.
    pub fn new(len: u64) -> Self {
        Self {
            bytes: RwLock::new(vec![0; len as usize]),
        }
    }

    /// Flips every bit of the byte at `offset` (a bad sector for the checksums to find).
    pub fn corrupt(&self, offset: u64) {
        let mut bytes = self.bytes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = bytes.get_mut(offset as usize) {
            *b = !*b;
        }
    }

    fn range(len: usize, offset: u64, size: usize) -> io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        match start.checked_add(len) {
            Some(end) if end <= size => Ok(start..end),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{len} bytes at {offset}: beyond the end ({size})"),
            )),
        }
    }
}

impl StorageBackend for MemoryDisk {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let bytes = self.bytes.read().unwrap_or_else(|p| p.into_inner());
        let range = Self::range(buf.len(), offset, bytes.len())?;
        buf.copy_from_slice(&bytes[range]);
        Ok(())
    }

    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        self.read_at(buf, offset).map(|()| true)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut bytes = self.bytes.write().unwrap_or_else(|p| p.into_inner());
        let range = Self::range(data.len(), offset, bytes.len())?;
        bytes[range].copy_from_slice(data);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.bytes.read().unwrap_or_else(|p| p.into_inner()).len() as u64)
    }

    fn grow(&self, len: u64) -> io::Result<()> {
        let mut bytes = self.bytes.write().unwrap_or_else(|p| p.into_inner());
        if len as usize > bytes.len() {
            bytes.resize(len as usize, 0);
        }
        Ok(())
    }

    fn blocks(&self) -> bool {
        false
    }
}

/// Small files by name (node state, failure markers); every change durable at once.
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Directory for MemoryDirectory {
    fn write_file(&self, name: &str, data: &[u8]) -> io::Result<()> {
        lock(&self.files).insert(name.to_owned(), data.to_vec());
        Ok(())
    }

    fn sync_file(&self, name: &str) -> io::Result<()> {
        match lock(&self.files).contains_key(name) {
            true => Ok(()),
            false => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }

    fn read_file(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(lock(&self.files).get(name).cloned())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut files = lock(&self.files);
        let data = files.remove(from).ok_or(io::ErrorKind::NotFound)?;
        files.insert(to.to_owned(), data);
        Ok(())
    }

    fn remove_file(&self, name: &str) -> io::Result<()> {
        lock(&self.files).remove(name);
        Ok(())
    }

    fn blocks(&self) -> bool {
        false
    }
}

/// A node's whole data directory in memory. Share it (an `Arc`) between the lives of one node.
#[derive(Debug)]
pub struct MemoryMedia {
    directory: Arc<MemoryDirectory>,
    components: Mutex<BTreeMap<String, Arc<MemoryDisk>>>,
    serials: AtomicU64,
}

impl MemoryMedia {
    /// Empty media; component serials the node draws come from `seed` (a simulation's runs
    /// stay the same for the same seed).
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            directory: Arc::new(MemoryDirectory::default()),
            components: Mutex::new(BTreeMap::new()),
            serials: AtomicU64::new(seed),
        })
    }

    /// The directory of the node state file and the failure markers.
    pub fn directory(&self) -> Arc<dyn Directory> {
        self.directory.clone()
    }

    /// The components, ordered by id.
    pub fn components(&self) -> Vec<(String, Arc<MemoryDisk>)> {
        lock(&self.components)
            .iter()
            .map(|(id, disk)| (id.clone(), disk.clone()))
            .collect()
    }

    /// Component `id`'s disk, if it exists.
    pub fn component(&self, id: &str) -> Option<Arc<MemoryDisk>> {
        lock(&self.components).get(id).cloned()
    }

    /// Makes `disk` component `id` (after it was initialised: a component is listed complete).
    pub(crate) fn insert(&self, id: &str, disk: Arc<MemoryDisk>) {
        lock(&self.components).insert(id.to_owned(), disk);
    }

    /// Removes component `id`.
    pub(crate) fn remove(&self, id: &str) {
        lock(&self.components).remove(id);
    }

    /// The next serial a component created without one gets (odd, never 0).
    pub(crate) fn next_serial(&self) -> u64 {
        self.serials
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            | 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_reads_what_was_written_and_refuses_beyond_its_end() {
        let disk = MemoryDisk::new(8192);
        disk.write_at(b"abc", 4096).unwrap();
        let mut buf = [0u8; 3];
        assert!(disk.read_cached(&mut buf, 4096).unwrap());
        assert_eq!(&buf, b"abc");
        assert!(disk.write_at(b"x", 8192).is_err());
        assert!(disk.read_at(&mut buf, 8190).is_err());
        disk.corrupt(4096);
        disk.read_at(&mut buf, 4096).unwrap();
        assert_eq!(buf[0], !b'a');
        assert!(!disk.blocks());
    }

    #[test]
    fn the_directory_renames_and_removes() {
        let dir = MemoryDirectory::default();
        dir.write_file("a.tmp", b"1").unwrap();
        dir.sync_file("a.tmp").unwrap();
        dir.rename("a.tmp", "a").unwrap();
        assert_eq!(dir.read_file("a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(dir.read_file("a.tmp").unwrap(), None);
        dir.remove_file("a").unwrap();
        dir.remove_file("a").unwrap();
        assert!(dir.sync_file("a").is_err());
    }
}
