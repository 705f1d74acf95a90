//! Opening a component file's header, and migrating format 1 files to format 2 on the way.
//!
//! Format 2 only appends regions to format 1 (the fence-epoch slots and the log area) and adds
//! the log size to the header, so a migration moves no data, checksum, label or metadata byte.
//! It runs in four steps, each ending with a sync:
//!
//! 1. [`Step::Grown`]: grow the file to its format 2 length and zero the epoch slots (the log
//!    area is zeros from the growth).
//! 2. [`Step::CopyWritten`]: write the new header at [`MIGRATION_COPY_OFFSET`], inside the
//!    header region (bytes format 1 leaves zero).
//! 3. [`Step::HeaderWritten`]: write the new header over the old one at offset 0. This is the
//!    commit point: from here on the file is a format 2 file.
//! 4. [`Step::CopyCleared`]: zero the copy.
//!
//! What a crash leaves, and what the next open does with it:
//! - before 3: a valid format 1 header, with a file of its format 1 length or longer (up to its
//!   format 2 length): the migration starts over (growing again is harmless, the new regions
//!   hold nothing yet);
//! - during 3: a torn header (its checksum fails), whose geometry, serial and id bytes are those
//!   of the durable copy, and a file of the copy's format 2 length: the header is rewritten from
//!   the copy;
//! - after 3: a valid format 2 header, maybe with the copy still there: the copy is cleared.
//!
//! Any other damage is refused as before (a corrupt header is never "repaired" from a copy that
//! a migration did not leave). A format 1 binary refuses a format 2 header (version check) and a
//! grown format 1 file (size check): downgrading is not supported once a file was migrated.

use crate::backend::StorageBackend;
use crate::layout::{
    ComponentHeader, FORMAT_VERSION, HEADER_BYTES, HEADER_REGION_BYTES, HeaderError, Layout,
    MIGRATION_COPY_OFFSET,
};
use crate::slot::EPOCH_SLOT_BYTES;

/// A step of the migration from format 1 to format 2, each durable when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// The file has its format 2 length and empty epoch slots.
    Grown,
    /// The new header is durable in the migration copy.
    CopyWritten,
    /// The new header is durable at offset 0: the file is a format 2 file.
    HeaderWritten,
    /// The migration copy is zero again.
    CopyCleared,
}

/// A component file's header, its format 2 layout, and the format it had before this open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedHeader {
    /// The header (format 2).
    pub header: ComponentHeader,
    /// Where the regions lie.
    pub layout: Layout,
    /// The format version the file had before this open migrated it, if it did (1), or had
    /// a migration to finish.
    pub migrated_from: Option<u32>,
}

/// Reads and validates the header of a component file of format 1 or 2, migrating a format 1
/// file to format 2 (or finishing a migration a crash interrupted). Blocking. `Err` says what is
/// wrong with the file.
pub fn open_header(backend: &dyn StorageBackend) -> Result<OpenedHeader, String> {
    open_header_until(backend, None)
}

/// [`open_header`], stopping (with an error) after migration step `stop_after`: a crash at that
/// point, for tests.
pub(crate) fn open_header_until(
    backend: &dyn StorageBackend,
    stop_after: Option<Step>,
) -> Result<OpenedHeader, String> {
    let len = backend.size().map_err(|e| format!("cannot stat: {e}"))?;
    if len < HEADER_REGION_BYTES {
        return Err(format!(
            "file is {len} bytes, too short for a component header"
        ));
    }
    let mut region = vec![0u8; HEADER_REGION_BYTES as usize];
    backend
        .read_at(&mut region, 0)
        .map_err(|e| format!("cannot read the header: {e}"))?;
    let copy_at = MIGRATION_COPY_OFFSET as usize;
    let copy = &region[copy_at..copy_at + HEADER_BYTES];
    let copy_present = copy.iter().any(|&b| b != 0);
    let migration = Migration {
        backend,
        stop_after,
    };
    match ComponentHeader::decode(&region) {
        Ok((header, FORMAT_VERSION)) => {
            let layout = layout_of(&header)?;
            check_len(len, &layout, &header)?;
            if copy_present {
                // A migration ended after its commit point, before clearing its copy.
                migration.clear_copy()?;
            }
            Ok(OpenedHeader {
                header,
                layout,
                migrated_from: copy_present.then_some(1),
            })
        }
        Ok((header, version)) => {
            let layout = layout_of(&header)?;
            let v1_len = Layout::v1(header.block_size, header.block_count)
                .ok_or("header geometry overflows")?
                .file_len;
            if len < v1_len || len > layout.file_len {
                return Err(format!(
                    "file is {len} bytes, expected {v1_len} (format {version}) for {} blocks of \
                     {} bytes",
                    header.block_count, header.block_size
                ));
            }
            migration.run(&header, &layout)?;
            tracing::info!(component = %header.id, from = version, to = FORMAT_VERSION, "component file migrated");
            Ok(OpenedHeader {
                header,
                layout,
                migrated_from: Some(version),
            })
        }
        Err(err @ (HeaderError::ChecksumMismatch | HeaderError::BadField(_))) => {
            // A header torn while a migration wrote it: the copy is complete, describes the same
            // component (the bytes both formats share are the same), and the file has the
            // length the copy says.
            match ComponentHeader::decode(copy) {
                Ok((header, FORMAT_VERSION))
                    if region[12..164] == copy[12..164]
                        && header.layout().is_some_and(|l| l.file_len == len) =>
                {
                    let layout = layout_of(&header)?;
                    migration.write_header(&header)?;
                    migration.clear_copy()?;
                    tracing::info!(component = %header.id, "component file migration finished");
                    Ok(OpenedHeader {
                        header,
                        layout,
                        migrated_from: Some(1),
                    })
                }
                _ => Err(err.to_string()),
            }
        }
        Err(err) => Err(err.to_string()),
    }
}

fn layout_of(header: &ComponentHeader) -> Result<Layout, String> {
    header
        .layout()
        .ok_or_else(|| "header geometry overflows".to_owned())
}

fn check_len(len: u64, layout: &Layout, header: &ComponentHeader) -> Result<(), String> {
    if len != layout.file_len {
        return Err(format!(
            "file is {len} bytes, expected {} for {} blocks of {} bytes and a log of {} bytes",
            layout.file_len, header.block_count, header.block_size, header.log_bytes
        ));
    }
    Ok(())
}

struct Migration<'a> {
    backend: &'a dyn StorageBackend,
    stop_after: Option<Step>,
}

impl Migration<'_> {
    fn io(what: &str, err: std::io::Error) -> String {
        format!("migrating to format {FORMAT_VERSION}: {what}: {err}")
    }

    fn sync(&self, step: Step) -> Result<(), String> {
        self.backend.sync().map_err(|e| Self::io("syncing", e))?;
        if self.stop_after == Some(step) {
            return Err(format!("migration stopped after {step:?} (test)"));
        }
        Ok(())
    }

    fn run(&self, header: &ComponentHeader, layout: &Layout) -> Result<(), String> {
        self.backend
            .grow(layout.file_len)
            .map_err(|e| Self::io("growing the file", e))?;
        self.backend
            .write_at(&vec![0u8; 2 * EPOCH_SLOT_BYTES], layout.epoch_offset)
            .map_err(|e| Self::io("clearing the epoch slots", e))?;
        self.sync(Step::Grown)?;
        self.backend
            .write_at(&header.encode()[..HEADER_BYTES], MIGRATION_COPY_OFFSET)
            .map_err(|e| Self::io("writing the header copy", e))?;
        self.sync(Step::CopyWritten)?;
        self.write_header(header)?;
        self.clear_copy()
    }

    fn write_header(&self, header: &ComponentHeader) -> Result<(), String> {
        self.backend
            .write_at(&header.encode()[..HEADER_BYTES], 0)
            .map_err(|e| Self::io("writing the header", e))?;
        self.sync(Step::HeaderWritten)
    }

    fn clear_copy(&self) -> Result<(), String> {
        self.backend
            .write_at(&[0u8; HEADER_BYTES], MIGRATION_COPY_OFFSET)
            .map_err(|e| Self::io("clearing the header copy", e))?;
        self.sync(Step::CopyCleared)
    }
}

#[cfg(test)]
mod tests;
