//! Two-slot areas (label, metadata, fence epoch): an update is atomic across a crash.
//!
//! Each area has two fixed-size slots. A record is a 24-byte header (magic, format version, area,
//! sequence, payload length, CRC-32C over the header fields and the payload) followed by the
//! payload. An update writes the next sequence number into the slot that does NOT hold the newest
//! valid record, then syncs; a reader takes the valid record with the highest sequence. A torn
//! update therefore leaves the previous version readable in the other slot.

/// Magic bytes of a slot record.
pub const SLOT_MAGIC: &[u8; 4] = b"DGSL";
/// Slot record format version.
pub const SLOT_FORMAT_VERSION: u16 = 1;
/// Bytes of a slot record header.
pub const SLOT_HEADER_BYTES: usize = 24;
/// Largest label payload.
pub const MAX_LABEL_PAYLOAD: usize = 4096;
/// Largest metadata payload.
pub const MAX_METADATA_PAYLOAD: usize = 64 * 1024;
/// Bytes of one label slot on disk.
pub const LABEL_SLOT_BYTES: usize = 8 * 1024;
/// Bytes of one metadata slot on disk.
pub const METADATA_SLOT_BYTES: usize = 68 * 1024;
/// Payload of a fence-epoch record: the epoch, u64 little-endian.
pub const EPOCH_PAYLOAD: usize = 8;
/// Bytes of one fence-epoch slot on disk (format 2).
pub const EPOCH_SLOT_BYTES: usize = 4 * 1024;

/// Which two-slot area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    /// The component label.
    Label,
    /// The coordinator's metadata (parity map ...).
    Metadata,
    /// The component's fence epoch (format 2; the node's own, never served over gRPC).
    Epoch,
}

impl Area {
    /// Largest payload the area stores.
    pub fn max_payload(self) -> usize {
        match self {
            Self::Label => MAX_LABEL_PAYLOAD,
            Self::Metadata => MAX_METADATA_PAYLOAD,
            Self::Epoch => EPOCH_PAYLOAD,
        }
    }

    /// Bytes of one slot of the area.
    pub fn slot_bytes(self) -> usize {
        match self {
            Self::Label => LABEL_SLOT_BYTES,
            Self::Metadata => METADATA_SLOT_BYTES,
            Self::Epoch => EPOCH_SLOT_BYTES,
        }
    }

    fn tag(self) -> u16 {
        match self {
            Self::Label => 1,
            Self::Metadata => 2,
            Self::Epoch => 3,
        }
    }

    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Label => "label",
            Self::Metadata => "metadata",
            Self::Epoch => "fence epoch",
        }
    }
}

/// One decoded slot record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRecord {
    /// Version number; 1 for the first write.
    pub sequence: u64,
    /// The stored bytes.
    pub payload: Vec<u8>,
}

/// Encodes a record for `area`. The caller has checked the payload size.
pub fn encode(area: Area, sequence: u64, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= area.max_payload());
    let mut buf = Vec::with_capacity(SLOT_HEADER_BYTES + payload.len());
    buf.extend_from_slice(SLOT_MAGIC);
    buf.extend_from_slice(&SLOT_FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&area.tag().to_le_bytes());
    buf.extend_from_slice(&sequence.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = record_crc(&buf, payload);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

fn record_crc(header_fields: &[u8], payload: &[u8]) -> u32 {
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    digest.update(header_fields);
    digest.update(payload);
    digest.finalize() as u32
}

/// Decodes one slot's bytes; `None` if it holds no complete, valid record of `area`.
pub fn decode(area: Area, slot: &[u8]) -> Option<SlotRecord> {
    if slot.len() < SLOT_HEADER_BYTES || &slot[0..4] != SLOT_MAGIC {
        return None;
    }
    let version = u16::from_le_bytes([slot[4], slot[5]]);
    let tag = u16::from_le_bytes([slot[6], slot[7]]);
    if version != SLOT_FORMAT_VERSION || tag != area.tag() {
        return None;
    }
    let sequence = u64::from_le_bytes(slot[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(slot[16..20].try_into().ok()?) as usize;
    if len > area.max_payload() || SLOT_HEADER_BYTES + len > slot.len() {
        return None;
    }
    let crc = u32::from_le_bytes(slot[20..24].try_into().ok()?);
    let payload = &slot[SLOT_HEADER_BYTES..SLOT_HEADER_BYTES + len];
    if record_crc(&slot[..20], payload) != crc || sequence == 0 {
        return None;
    }
    Some(SlotRecord {
        sequence,
        payload: payload.to_vec(),
    })
}

/// The newest valid record of the two slots, and the index (0 or 1) of the slot an update must
/// overwrite (the one not holding that record).
pub fn newest(area: Area, slots: [&[u8]; 2]) -> (Option<SlotRecord>, usize) {
    let a = decode(area, slots[0]);
    let b = decode(area, slots[1]);
    match (a, b) {
        (Some(a), Some(b)) if b.sequence > a.sequence => (Some(b), 0),
        (Some(a), _) => (Some(a), 1),
        (None, Some(b)) => (Some(b), 0),
        (None, None) => (None, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies one update to a two-slot image in memory, the way the block store does.
    fn update(area: Area, image: &mut [u8], payload: &[u8]) -> u64 {
        let size = area.slot_bytes();
        let (cur, target) = newest(area, [&image[..size], &image[size..]]);
        let seq = cur.map_or(1, |r| r.sequence + 1);
        let rec = encode(area, seq, payload);
        image[target * size..target * size + rec.len()].copy_from_slice(&rec);
        seq
    }

    fn read(area: Area, image: &[u8]) -> Option<SlotRecord> {
        let size = area.slot_bytes();
        newest(area, [&image[..size], &image[size..]]).0
    }

    #[test]
    fn updates_alternate_and_the_newest_wins() {
        let area = Area::Label;
        let mut image = vec![0u8; 2 * area.slot_bytes()];
        assert_eq!(read(area, &image), None);
        for i in 1..=5u64 {
            let payload = vec![i as u8; 100 * i as usize];
            assert_eq!(update(area, &mut image, &payload), i);
            assert_eq!(
                read(area, &image),
                Some(SlotRecord {
                    sequence: i,
                    payload
                })
            );
        }
    }

    #[test]
    fn other_area_records_are_not_accepted() {
        let rec = encode(Area::Label, 1, b"x");
        assert!(decode(Area::Metadata, &rec).is_none());
        assert!(decode(Area::Label, &rec).is_some());
    }

    /// A slot write torn after every possible byte prefix reads back as the previous or the new
    /// version, for the first write and for later ones, growing and shrinking payloads.
    #[test]
    fn torn_write_at_every_byte_reads_previous_or_new() {
        for area in [Area::Label, Area::Metadata, Area::Epoch] {
            let size = area.slot_bytes();
            let mut image = vec![0u8; 2 * size];
            let versions: Vec<Vec<u8>> = vec![
                (0..300u32).map(|i| (i * 7) as u8).collect(),
                (0..1000u32).map(|i| (i * 13 + 1) as u8).collect(),
                vec![0xab; 10],
                (0..area.max_payload() as u32)
                    .map(|i| (i * 31) as u8)
                    .collect(),
            ];
            let mut previous: Option<SlotRecord> = None;
            for mut payload in versions {
                payload.truncate(area.max_payload());
                let (cur, target) = newest(area, [&image[..size], &image[size..]]);
                assert_eq!(cur, previous);
                let seq = cur.as_ref().map_or(1, |r| r.sequence + 1);
                let rec = encode(area, seq, &payload);
                let new = SlotRecord {
                    sequence: seq,
                    payload: payload.clone(),
                };
                for cut in 0..=rec.len() {
                    let mut torn = image.clone();
                    torn[target * size..target * size + cut].copy_from_slice(&rec[..cut]);
                    let got = read(area, &torn);
                    if cut == rec.len() {
                        assert_eq!(got.as_ref(), Some(&new), "complete write at {cut}");
                    } else {
                        assert!(
                            got == previous || got.as_ref() == Some(&new),
                            "{}: torn at byte {cut} of {} read {:?}",
                            area.name(),
                            rec.len(),
                            got.map(|r| r.sequence)
                        );
                    }
                }
                image[target * size..target * size + rec.len()].copy_from_slice(&rec);
                previous = Some(new);
            }
        }
    }
}
