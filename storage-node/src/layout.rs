//! The on-disk format of a component file (format version 1).
//!
//! ```text
//! offset 0            header (4 KiB reserved): magic, version, geometry, serial, id, CRC-32C
//! data_offset         block_count * block_size bytes of block data
//! checksum_offset     block_count * 4 bytes: CRC-32C of each block, little-endian
//! label_offset        two label slots of LABEL_SLOT_BYTES each
//! metadata_offset     two metadata slots of METADATA_SLOT_BYTES each
//! file_len            end of file
//! ```
//!
//! Data and checksums live in one file so one fdatasync makes both durable together. Regions start
//! on 4 KiB boundaries. The header never changes after creation.

use crate::checksum::crc32c;
use crate::slot::{LABEL_SLOT_BYTES, METADATA_SLOT_BYTES};

/// Magic bytes at the start of every component file.
pub const COMPONENT_MAGIC: &[u8; 8] = b"DAGRAIDC";
/// The format version this node writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes reserved for the header at the start of the file.
pub const HEADER_REGION_BYTES: u64 = 4096;
/// Bytes of the header that carry fields (the rest of the region is zero).
pub const HEADER_BYTES: usize = 168;
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
    /// Total file length.
    pub file_len: u64,
}

fn align_up(value: u64) -> Option<u64> {
    value.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

impl Layout {
    /// The layout of a component with this geometry, or `None` when its size overflows a u64.
    pub fn new(block_size: u32, block_count: u64) -> Option<Self> {
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
    /// Written by a format this node does not read.
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
            Self::UnsupportedVersion(v) => {
                write!(
                    f,
                    "format version {v} is not supported (this node reads {FORMAT_VERSION})"
                )
            }
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
    /// The layout this header describes.
    pub fn layout(&self) -> Option<Layout> {
        Layout::new(self.block_size, self.block_count)
    }

    /// Encodes the header into the first [`HEADER_BYTES`] of a zeroed header region.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER_REGION_BYTES as usize];
        buf[0..8].copy_from_slice(COMPONENT_MAGIC);
        buf[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        buf[16..24].copy_from_slice(&self.block_count.to_le_bytes());
        buf[24..32].copy_from_slice(&self.serial.to_le_bytes());
        let id = self.id.as_bytes();
        buf[32..34].copy_from_slice(&(id.len() as u16).to_le_bytes());
        buf[34..34 + id.len()].copy_from_slice(id);
        let crc = crc32c(&buf[..HEADER_BYTES - 4]);
        buf[HEADER_BYTES - 4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes and validates a header from at least [`HEADER_BYTES`] bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, HeaderError> {
        if buf.len() < HEADER_BYTES || &buf[0..8] != COMPONENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        if crc32c(&buf[..HEADER_BYTES - 4]) != u32_at(HEADER_BYTES - 4) {
            return Err(HeaderError::ChecksumMismatch);
        }
        let block_size = u32_at(12);
        if !valid_block_size(block_size) {
            return Err(HeaderError::BadField("block_size"));
        }
        let block_count = u64_at(16);
        if block_count == 0 || Layout::new(block_size, block_count).is_none() {
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
        Ok(Self {
            id,
            serial: u64_at(24),
            block_size,
            block_count,
        })
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
        }
    }

    #[test]
    fn header_round_trips() {
        let h = header();
        assert_eq!(ComponentHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn every_flipped_header_byte_is_detected() {
        let encoded = header().encode();
        for i in 0..HEADER_BYTES {
            let mut bad = encoded.clone();
            bad[i] ^= 0x40;
            assert!(
                ComponentHeader::decode(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn regions_are_aligned_and_disjoint() {
        let l = Layout::new(512, 3).unwrap();
        assert_eq!(l.data_offset, 4096);
        assert_eq!(l.checksum_offset, 8192);
        assert_eq!(l.label_offset, 12288);
        assert_eq!(l.metadata_offset, 12288 + 2 * LABEL_SLOT_BYTES as u64);
        assert_eq!(
            l.file_len,
            l.metadata_offset + 2 * METADATA_SLOT_BYTES as u64
        );
        assert!(Layout::new(1 << 20, u64::MAX / 2).is_none());
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
