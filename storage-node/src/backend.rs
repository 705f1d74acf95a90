//! The storage backend under a component's block store: positioned reads and writes, a data sync,
//! and the size. Calls are blocking; the block store runs them on tokio's blocking pool.
//!
//! The real backend is a [`std::fs::File`]; unit tests use a simulated disk that can lose power
//! (see `power_cut` in the block store's tests).
//!
//! [`Directory`] is the same seam for the small files kept beside a component file (its failure
//! marker) and for the node state file: the real one is [`LocalDirectory`], unit tests simulate
//! one that loses power.
//!
//! A backend or directory that never blocks (memory: [`crate::memory`], the deterministic
//! simulation's disks) says so ([`StorageBackend::blocks`]), and its calls run right on the
//! async task instead of tokio's blocking pool, whose real threads a simulation cannot schedule.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Blocking byte-addressed storage with an explicit durability point.
pub trait StorageBackend: Send + Sync + 'static {
    /// Fills `buf` from `offset`; a short read is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Fills `buf` from `offset` only if that needs no device I/O (the bytes are in the page
    /// cache): `Ok(true)` when filled, `Ok(false)` when the caller must use
    /// [`StorageBackend::read_at`] on a blocking thread instead. Lets cached reads skip the
    /// hand-off to the blocking pool, which costs more than the copy itself on a busy machine.
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let _ = (buf, offset);
        Ok(false)
    }
    /// Writes all of `data` at `offset`. Not durable until a later [`StorageBackend::sync`].
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write that completed before this call started durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Current size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Whether a call may block its thread (real I/O): it then runs on tokio's blocking pool.
    /// A backend that answers `false` (memory) is called inline, on the async task.
    fn blocks(&self) -> bool {
        true
    }
    /// Grows the storage to `len` bytes of zeros beyond the current end, reserving the space
    /// where it can. Not durable until a later [`StorageBackend::sync`]. Only migration grows a
    /// component; backends that cannot answer `Unsupported`.
    fn grow(&self, len: u64) -> io::Result<()> {
        let _ = len;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this backend cannot grow",
        ))
    }
}

/// Reserves `len` bytes of `file` (from offset 0), so a full disk shows when space is reserved,
/// not at a later write; file systems without fallocate get a sparse file.
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(errno)
            if errno == rustix::io::Errno::OPNOTSUPP || errno == rustix::io::Errno::NOSYS =>
        {
            file.set_len(len)
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
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

    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        use rustix::io::{Errno, ReadWriteFlags, preadv2};
        let mut done = 0;
        while done < buf.len() {
            let mut slices = [io::IoSliceMut::new(&mut buf[done..])];
            match preadv2(
                &self.file,
                &mut slices,
                offset + done as u64,
                ReadWriteFlags::NOWAIT,
            ) {
                // End of file: let the blocking path report the short read.
                Ok(0) => return Ok(false),
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                // Not cached, or RWF_NOWAIT unsupported here.
                Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                    return Ok(false);
                }
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(true)
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

    fn grow(&self, len: u64) -> io::Result<()> {
        if len > self.size()? {
            preallocate(&self.file, len)?;
        }
        Ok(())
    }
}

/// Blocking operations on the directory that holds component files, as the failure marker needs
/// them. Nothing is durable until synced: a file's bytes by [`Directory::sync_file`], a new
/// file's entry by [`Directory::sync_dir`].
pub trait Directory: Send + Sync + 'static {
    /// Creates (or truncates) the file `name` and writes `data` into it.
    fn write_file(&self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Makes the bytes of the file `name` durable (fsync).
    fn sync_file(&self, name: &str) -> io::Result<()>;
    /// Makes the directory's entries durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;
    /// The bytes of the file `name`, `None` if there is no such file.
    fn read_file(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Renames the file `from` to `to`, replacing `to` atomically. Not durable until
    /// [`Directory::sync_dir`].
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes the file `name`; `Ok` if there was none. Not durable until
    /// [`Directory::sync_dir`].
    fn remove_file(&self, name: &str) -> io::Result<()>;
    /// Whether a call may block its thread (see [`StorageBackend::blocks`]).
    fn blocks(&self) -> bool {
        true
    }
}

/// Runs `f` (calls on a backend or directory) on tokio's blocking pool when `blocks`, else
/// right here: an in-memory backend never leaves the async task.
pub(crate) async fn off_async<T: Send + 'static>(
    blocks: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if blocks {
        tokio::task::spawn_blocking(f).await
    } else {
        Ok(f())
    }
}

/// A directory on the local file system.
#[derive(Debug, Clone)]
pub struct LocalDirectory {
    path: PathBuf,
}

impl LocalDirectory {
    /// The directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl Directory for LocalDirectory {
    fn write_file(&self, name: &str, data: &[u8]) -> io::Result<()> {
        std::fs::write(self.path.join(name), data)
    }

    fn sync_file(&self, name: &str) -> io::Result<()> {
        File::open(self.path.join(name))?.sync_all()
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }

    fn read_file(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.path.join(from), self.path.join(to))
    }

    fn remove_file(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path.join(name)) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_reads_return_the_written_bytes_or_defer() {
        let file = tempfile::tempfile().unwrap();
        let backend = FileBackend::new(file);
        let data: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
        backend.write_at(&data, 4096).unwrap();
        let mut buf = vec![0u8; 65536];
        if backend.read_cached(&mut buf, 4096).unwrap() {
            assert_eq!(buf, data);
        }
        // Past the end: never claims success.
        let mut tail = vec![0u8; 8192];
        assert!(!backend.read_cached(&mut tail, 65536).unwrap());
        backend.read_at(&mut buf, 4096).unwrap();
        assert_eq!(buf, data);
    }
}
