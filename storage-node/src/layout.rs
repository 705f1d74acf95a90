//! The on-disk format of a component file (format version 2).
//!
//! ```text
//! offset 0            header (4 KiB reserved): magic, version, geometry, serial, id, log size,
//!                     CRC-32C; a migration copy of the header at MIGRATION_COPY_OFFSET while a
//!                     format 1 file is being migrated (crate::migrate)
//! data_offset         block_count * block_size bytes of block data
//! checksum_offset     block_count * 4 bytes: CRC-32C of each block, little-endian
//! label_offset        two label slots of LABEL_SLOT_BYTES each
//! metadata_offset     two metadata slots of METADATA_SLOT_BYTES each
//! epoch_offset        two fence-epoch slots of EPOCH_SLOT_BYTES each (format 2)
//! log_offset          log_bytes of log area, reserved for the partial-parity log (format 2)
//! file_len            end of file
//! ```
//!
//! Data and checksums live in one file so one fdatasync makes both durable together. Regions start
//! on 4 KiB boundaries. Format 2 only appends regions to format 1, so a format 1 file becomes a
//! format 2 file by growing it and rewriting its header: nothing that exists moves. The header
//! never changes after creation, except that one rewrite.

use crate::checksum::crc32c;
use crate::slot::{EPOCH_SLOT_BYTES, LABEL_SLOT_BYTES, METADATA_SLOT_BYTES};

/// Magic bytes at the start of every component file.
pub const COMPONENT_MAGIC: &[u8; 8] = b"DAGRAIDC";
/// The format version this node writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this node reads (and migrates when it opens the file).
pub const FORMAT_VERSION_V1: u32 = 1;
/// Bytes reserved for the header at the start of the file.
pub const HEADER_REGION_BYTES: u64 = 4096;
/// Bytes of a format 2 header that carry fields (the rest of the region is zero).
pub const HEADER_BYTES: usize = 176;
/// Bytes of a format 1 header that carry fields.
pub const HEADER_BYTES_V1: usize = 168;
/// Where, inside the header region, a migration keeps a copy of the new header until the header
/// itself is durable (unused by format 1, zero outside a migration).
pub const MIGRATION_COPY_OFFSET: u64 = 2048;
/// Smallest default log area.
pub const DEFAULT_LOG_BYTES: u64 = 1 << 20;
/// Blocks the default log area holds at least.
pub const DEFAULT_LOG_BLOCKS: u64 = 8;
/// Largest log area.
pub const MAX_LOG_BYTES: u64 = 1 << 30;
/// Longest component id.
pub const MAX_COMPONENT_ID_LEN: usize = 128;
/// Smallest block size.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size.
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;

const ALIGN: u64 = 4096;

/// The fixed properties of a component, recorded in its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentHeader {
    /// The component id (also the file name stem).
    pub id: String,
    /// Seeds every block checksum.
    pub serial: u64,
    /// Bytes per block, a power of two.
    pub block_size: u32,
    /// Number of blocks.
    pub block_count: u64,
    /// Bytes of the log area (a multiple of 4096).
    pub log_bytes: u64,
}

/// Where each region of a component file lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes per block.
    pub block_size: u32,
    /// Number of blocks.
    pub block_count: u64,
    /// Start of the block data.
    pub data_offset: u64,
    /// Start of the per-block checksums.
    pub checksum_offset: u64,
    /// Start of the two label slots.
    pub label_offset: u64,
    /// Start of the two metadata slots.
    pub metadata_offset: u64,
    /// Start of the two fence-epoch slots.
    pub epoch_offset: u64,
    /// Start of the log area.
    pub log_offset: u64,
    /// Bytes of the log area.
    pub log_bytes: u64,
    /// Total file length.
    pub file_len: u64,
}

fn align_up(value: u64) -> Option<u64> {
    value.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

/// The log area a component gets when its creator does not choose: max(1 MiB, 8 blocks).
///
/// The log will hold partial-parity records of the writes in flight on the component (RAIDframe's
/// parity logging, md's raid5-ppl): one record per in-flight stripe-unit write, of at most a few
/// blocks each. 1 MiB holds 256 records of a 4 KiB block, more than the coordinator keeps in
/// flight per node (64 calls), for 0.1% of a 1 GiB component; 8 blocks keeps room for a few
/// records when blocks are large (8 MiB for 1 MiB blocks). Migration from format 1 uses this
/// size too, so it depends on the geometry only.
pub fn default_log_bytes(block_size: u32) -> u64 {
    DEFAULT_LOG_BYTES.max(DEFAULT_LOG_BLOCKS * u64::from(block_size))
}

/// Why a log area size is not acceptable, or `None` if it is.
pub fn log_bytes_problem(log_bytes: u64) -> Option<&'static str> {
    if log_bytes == 0 || !log_bytes.is_multiple_of(ALIGN) {
        return Some("it must be a non-zero multiple of 4096");
    }
    if log_bytes > MAX_LOG_BYTES {
        return Some("it must be at most 1 GiB");
    }
    None
}

impl Layout {
    /// The format 2 layout of a component with this geometry and log area, or `None` when its
    /// size overflows a u64.
    pub fn new(block_size: u32, block_count: u64, log_bytes: u64) -> Option<Self> {
        let v1 = Self::v1(block_size, block_count)?;
        let epoch_offset = v1.file_len;
        let log_offset = epoch_offset.checked_add(2 * EPOCH_SLOT_BYTES as u64)?;
        let file_len = log_offset.checked_add(log_bytes)?;
        Some(Self {
            epoch_offset,
            log_offset,
            log_bytes,
            file_len,
            ..v1
        })
    }

    /// The format 1 layout: no epoch slots, no log (both offsets at the end of the file).
    pub fn v1(block_size: u32, block_count: u64) -> Option<Self> {
        let data_offset = HEADER_REGION_BYTES;
        let data_len = u64::from(block_size).checked_mul(block_count)?;
        let checksum_offset = align_up(data_offset.checked_add(data_len)?)?;
        let label_offset = align_up(checksum_offset.checked_add(block_count.checked_mul(4)?)?)?;
        let metadata_offset = label_offset.checked_add(2 * LABEL_SLOT_BYTES as u64)?;
        let file_len = metadata_offset.checked_add(2 * METADATA_SLOT_BYTES as u64)?;
        Some(Self {
            block_size,
            block_count,
            data_offset,
            checksum_offset,
            label_offset,
            metadata_offset,
            epoch_offset: file_len,
            log_offset: file_len,
            log_bytes: 0,
            file_len,
        })
    }

    /// File offset of block `index`.
    pub fn block_offset(&self, index: u64) -> u64 {
        self.data_offset + index * u64::from(self.block_size)
    }

    /// File offset of the checksum of block `index`.
    pub fn checksum_entry_offset(&self, index: u64) -> u64 {
        self.checksum_offset + index * 4
    }
}

/// Why a header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a dagraid component file.
    BadMagic,
    /// Written by a newer dagraid, in a format this node does not read.
    UnsupportedVersion(u32),
    /// The header checksum does not match (torn or corrupted header).
    ChecksumMismatch,
    /// A field holds an impossible value.
    BadField(&'static str),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadMagic => write!(f, "not a dagraid component file (bad magic)"),
            Self::UnsupportedVersion(v) => write!(
                f,
                "format version {v} was written by a newer dagraid (this node reads versions \
                 {FORMAT_VERSION_V1} and {FORMAT_VERSION}); downgrade after the first \
                 version {v} write is not supported"
            ),
            Self::ChecksumMismatch => write!(f, "header checksum mismatch (corrupt header)"),
            Self::BadField(field) => write!(f, "header field {field} is invalid"),
        }
    }
}

/// Checks that `block_size` is a power of two in the supported range.
pub fn valid_block_size(block_size: u32) -> bool {
    block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
}

/// Why a component id is not acceptable, or `None` if it is.
///
/// Ids become file names, so only `[A-Za-z0-9._-]` is allowed and a leading dot is refused.
pub fn component_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        return Some("it is empty");
    }
    if id.len() > MAX_COMPONENT_ID_LEN {
        return Some("it is longer than 128 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed");
    }
    if id.starts_with('.') {
        return Some("it must not start with '.'");
    }
    None
}

impl ComponentHeader {
    /// The format 2 layout this header describes.
    pub fn layout(&self) -> Option<Layout> {
        Layout::new(self.block_size, self.block_count, self.log_bytes)
    }

    /// The fields format 1 and 2 share (bytes 0..162), version `version`.
    fn encode_common(&self, version: u32) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_REGION_BYTES as usize];
        buf[0..8].copy_from_slice(COMPONENT_MAGIC);
        buf[8..12].copy_from_slice(&version.to_le_bytes());
        buf[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        buf[16..24].copy_from_slice(&self.block_count.to_le_bytes());
        buf[24..32].copy_from_slice(&self.serial.to_le_bytes());
        let id = self.id.as_bytes();
        buf[32..34].copy_from_slice(&(id.len() as u16).to_le_bytes());
        buf[34..34 + id.len()].copy_from_slice(id);
        buf
    }

    /// Encodes the format 2 header into the first [`HEADER_BYTES`] of a zeroed header region.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = self.encode_common(FORMAT_VERSION);
        buf[164..172].copy_from_slice(&self.log_bytes.to_le_bytes());
        let crc = crc32c(&buf[..HEADER_BYTES - 4]);
        buf[HEADER_BYTES - 4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Encodes the header as format 1 wrote it (no log size): what a file of an older node
    /// holds. Used by tests that build format 1 files.
    pub fn encode_v1(&self) -> Vec<u8> {
        let mut buf = self.encode_common(FORMAT_VERSION_V1);
        let crc = crc32c(&buf[..HEADER_BYTES_V1 - 4]);
        buf[HEADER_BYTES_V1 - 4..HEADER_BYTES_V1].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes and validates a format 2 header, or a format 1 header (then `log_bytes` is the
    /// [`default_log_bytes`] its migration will give it), from at least [`HEADER_BYTES`] bytes.
    /// Returns the header and the format version it was written in.
    pub fn decode(buf: &[u8]) -> Result<(Self, u32), HeaderError> {
        if buf.len() < HEADER_BYTES || &buf[0..8] != COMPONENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        let header_bytes = match version {
            FORMAT_VERSION_V1 => HEADER_BYTES_V1,
            FORMAT_VERSION => HEADER_BYTES,
            newer => return Err(HeaderError::UnsupportedVersion(newer)),
        };
        if crc32c(&buf[..header_bytes - 4]) != u32_at(header_bytes - 4) {
            return Err(HeaderError::ChecksumMismatch);
        }
        let block_size = u32_at(12);
        if !valid_block_size(block_size) {
            return Err(HeaderError::BadField("block_size"));
        }
        let log_bytes = if version == FORMAT_VERSION {
            u64_at(164)
        } else {
            default_log_bytes(block_size)
        };
        if log_bytes_problem(log_bytes).is_some() {
            return Err(HeaderError::BadField("log_bytes"));
        }
        let block_count = u64_at(16);
        if block_count == 0 || Layout::new(block_size, block_count, log_bytes).is_none() {
            return Err(HeaderError::BadField("block_count"));
        }
        let id_len = u16::from_le_bytes([buf[32], buf[33]]) as usize;
        if id_len > MAX_COMPONENT_ID_LEN {
            return Err(HeaderError::BadField("component_id"));
        }
        let id = std::str::from_utf8(&buf[34..34 + id_len])
            .map_err(|_| HeaderError::BadField("component_id"))?
            .to_owned();
        if component_id_problem(&id).is_some() {
            return Err(HeaderError::BadField("component_id"));
        }
        Ok((
            Self {
                id,
                serial: u64_at(24),
                block_size,
                block_count,
                log_bytes,
            },
            version,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ComponentHeader {
        ComponentHeader {
            id: "vol1-col3".into(),
            serial: 0xdead_beef_0123,
            block_size: 4096,
            block_count: 1000,
            log_bytes: 1 << 20,
        }
    }

    #[test]
    fn header_round_trips() {
        let h = header();
        assert_eq!(
            ComponentHeader::decode(&h.encode()),
            Ok((h, FORMAT_VERSION))
        );
    }

    #[test]
    fn a_format_1_header_decodes_with_the_default_log_size() {
        let h = ComponentHeader {
            block_size: 512,
            log_bytes: 12345,
            ..header()
        };
        let (decoded, version) = ComponentHeader::decode(&h.encode_v1()).unwrap();
        assert_eq!(version, FORMAT_VERSION_V1);
        assert_eq!(decoded.log_bytes, DEFAULT_LOG_BYTES);
        assert_eq!(decoded.id, h.id);
        // The fields format 1 and 2 share lie at the same offsets; only the version, the log
        // size and the checksum differ.
        let (v1, v2) = (
            h.encode_v1(),
            ComponentHeader {
                log_bytes: 4096,
                ..h
            }
            .encode(),
        );
        assert_eq!(v1[0..8], v2[0..8]);
        assert_eq!(v1[12..164], v2[12..164]);
    }

    #[test]
    fn a_newer_format_is_refused_with_a_clear_message() {
        let mut buf = header().encode();
        buf[8..12].copy_from_slice(&3u32.to_le_bytes());
        let err = ComponentHeader::decode(&buf).unwrap_err();
        assert_eq!(err, HeaderError::UnsupportedVersion(3));
        let message = err.to_string();
        assert!(
            message.contains("written by a newer dagraid")
                && message.contains("downgrade after the first version 3 write is not supported"),
            "{message}"
        );
    }

    #[test]
    fn every_flipped_header_byte_is_detected() {
        // Beyond a format 1 header's bytes nothing is read.
        for (encoded, len) in [
            (header().encode(), HEADER_BYTES),
            (header().encode_v1(), HEADER_BYTES_V1),
        ] {
            for i in 0..len {
                let mut bad = encoded.clone();
                bad[i] ^= 0x40;
                assert!(
                    ComponentHeader::decode(&bad).is_err(),
                    "flip at byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn bad_log_sizes_are_refused() {
        for bad in [0, 100, 4097, MAX_LOG_BYTES + 4096] {
            let h = ComponentHeader {
                log_bytes: bad,
                ..header()
            };
            assert_eq!(
                ComponentHeader::decode(&h.encode()),
                Err(HeaderError::BadField("log_bytes")),
                "{bad}"
            );
            assert!(log_bytes_problem(bad).is_some());
        }
        assert_eq!(default_log_bytes(4096), 1 << 20);
        assert_eq!(default_log_bytes(1 << 20), 8 << 20);
    }

    #[test]
    fn regions_are_aligned_and_disjoint() {
        let l = Layout::new(512, 3, 8192).unwrap();
        assert_eq!(l.data_offset, 4096);
        assert_eq!(l.checksum_offset, 8192);
        assert_eq!(l.label_offset, 12288);
        assert_eq!(l.metadata_offset, 12288 + 2 * LABEL_SLOT_BYTES as u64);
        assert_eq!(
            l.epoch_offset,
            l.metadata_offset + 2 * METADATA_SLOT_BYTES as u64
        );
        assert_eq!(l.log_offset, l.epoch_offset + 2 * EPOCH_SLOT_BYTES as u64);
        assert_eq!(l.file_len, l.log_offset + 8192);
        for offset in [l.epoch_offset, l.log_offset, l.file_len] {
            assert_eq!(offset % 4096, 0);
        }
        // Format 2 only appends: everything format 1 has stays where it was.
        let v1 = Layout::v1(512, 3).unwrap();
        assert_eq!(v1.file_len, l.epoch_offset);
        assert_eq!(
            (
                v1.data_offset,
                v1.checksum_offset,
                v1.label_offset,
                v1.metadata_offset
            ),
            (
                l.data_offset,
                l.checksum_offset,
                l.label_offset,
                l.metadata_offset
            )
        );
        assert!(Layout::new(1 << 20, u64::MAX / 2, 4096).is_none());
    }

    #[test]
    fn component_ids_are_file_name_safe() {
        assert_eq!(component_id_problem("vol-1_c.3"), None);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(component_id_problem(bad).is_some(), "{bad:?} accepted");
        }
    }
}
