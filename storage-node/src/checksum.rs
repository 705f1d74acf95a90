//! Block checksums: CRC-32C seeded with the component serial and the block index.
//!
//! Seeding with the serial and the index means a block written to the wrong component or the wrong
//! offset (a misdirected write) fails its check just like a corrupted one.

use crc_fast::{CrcAlgorithm, Digest};

/// CRC-32C (`Crc32Iscsi`) of `serial` (little-endian u64), `block_index` (little-endian u64) and
/// `data`.
pub fn block_checksum(serial: u64, block_index: u64, data: &[u8]) -> u32 {
    let mut digest = Digest::new(CrcAlgorithm::Crc32Iscsi);
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&serial.to_le_bytes());
    seed[8..].copy_from_slice(&block_index.to_le_bytes());
    digest.update(&seed);
    digest.update(data);
    digest.finalize() as u32
}

/// Plain CRC-32C, for headers and slot records.
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn seed_catches_misdirected_blocks() {
        let data = vec![7u8; 4096];
        let base = block_checksum(1, 5, &data);
        assert_ne!(base, block_checksum(2, 5, &data), "other serial");
        assert_ne!(base, block_checksum(1, 6, &data), "other block");
        assert_eq!(base, block_checksum(1, 5, &data), "deterministic");
        let mut seeded = Vec::new();
        seeded.extend_from_slice(&1u64.to_le_bytes());
        seeded.extend_from_slice(&5u64.to_le_bytes());
        seeded.extend_from_slice(&data);
        assert_eq!(base, crc32c(&seeded), "the seed is a plain prefix");
    }
}
