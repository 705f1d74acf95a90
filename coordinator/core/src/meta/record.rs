//! The metadata record: what a volume keeps in the metadata area of each of its components (two
//! alternating checksummed slots on the node, 64 KiB of payload), beside the 4 KiB label.
//!
//! The record is a set of typed sections, each with its own size budget, the counter of the
//! change that last wrote it, and a merge rule at assembly (`docs/STATE.md`):
//!
//! | section | budget | holds | merge |
//! |---|---|---|---|
//! | `lost` | [`LOST_SECTION_BYTES`] | the lost set's ranges | union of the copies in the winning lineage at or above the label's counter |
//! | `parity_map` (reserved) | 16 KiB | dirty regions | union within the lineage |
//! | `written_while_failed` (reserved) | 16 KiB | regions written while a column was failed | union within the lineage |
//!
//! A lost set with more ranges than its budget holds is coarsened in the record (the smallest
//! gaps filled: good blocks marked lost, never the reverse), and `coarsened` says so; the
//! coordinator's store always keeps the exact set. Unknown sections of a newer minor format are
//! kept by serde's default and ignored; a newer record version is refused.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::lost::LostSet;
use crate::parity_map::DirtyRegions;

/// Marks the bytes as a dagraid metadata record.
pub const RECORD_MAGIC: &str = "dagraid-metadata-record";

/// The record format this code writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// The payload of a component's metadata area.
pub const RECORD_AREA_BYTES: usize = 64 * 1024;

/// The budget of the lost section, encoded.
pub const LOST_SECTION_BYTES: usize = 32 * 1024;

/// Encoded bytes per lost range, at most (two 20-digit numbers, brackets, commas).
const BYTES_PER_RANGE: usize = 46;

/// The lost section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostSection {
    /// The modification counter of the change that wrote this set.
    pub counter: u64,
    /// Half-open volume block ranges, increasing.
    pub ranges: Vec<[u64; 2]>,
    /// Whether the ranges were coarsened to fit the budget (a superset of the true set).
    #[serde(default)]
    pub coarsened: bool,
}

impl LostSection {
    /// The section for `lost` as of `counter`, within its budget.
    pub fn of(lost: &LostSet, counter: u64) -> LostSection {
        let max_ranges = LOST_SECTION_BYTES / BYTES_PER_RANGE;
        let fitted = lost.coarsened(max_ranges);
        LostSection {
            counter,
            coarsened: fitted.range_count() < lost.range_count(),
            ranges: fitted.ranges().map(|r| [r.start, r.end]).collect(),
        }
    }

    /// The set it holds.
    pub fn set(&self) -> LostSet {
        LostSet::from_ranges(
            self.ranges
                .iter()
                .map(|[s, e]| Range { start: *s, end: *e }),
        )
    }
}

/// The budget of the parity-map section, encoded.
pub const MAP_SECTION_BYTES: usize = 16 * 1024;

/// The parity-map section: the dirty regions ([`crate::parity_map`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapSection {
    /// The modification counter of the change that wrote this map.
    pub counter: u64,
    /// Stripes per region.
    pub region_stripes: u64,
    /// Half-open ranges of dirty region indexes, increasing.
    pub ranges: Vec<[u64; 2]>,
    /// Whether the ranges were coarsened to fit the budget (clean regions marked dirty, never
    /// the reverse).
    #[serde(default)]
    pub coarsened: bool,
}

impl MapSection {
    /// The section for `map` as of `counter`, within its budget.
    pub fn of(map: &DirtyRegions, counter: u64) -> MapSection {
        let max_ranges = MAP_SECTION_BYTES / BYTES_PER_RANGE;
        let fitted = map.regions.coarsened(max_ranges);
        MapSection {
            counter,
            region_stripes: map.region_stripes,
            coarsened: fitted.range_count() < map.regions.range_count(),
            ranges: fitted.ranges().map(|r| [r.start, r.end]).collect(),
        }
    }

    /// The regions it holds.
    pub fn regions(&self) -> DirtyRegions {
        DirtyRegions {
            region_stripes: self.region_stripes,
            regions: LostSet::from_ranges(self.ranges.iter().map(|[s, e]| *s..*e)),
        }
    }
}

/// The sections of a record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sections {
    /// The lost set.
    #[serde(default)]
    pub lost: Option<LostSection>,
    /// The parity map (absent in records written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity_map: Option<MapSection>,
}

/// A component's metadata record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRecord {
    /// [`RECORD_MAGIC`].
    pub magic: String,
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The volume it belongs to.
    pub volume_id: String,
    /// The modification counter of the change that wrote it.
    pub mod_counter: u64,
    /// The sections.
    pub sections: Sections,
}

/// Why record bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not a record.
    #[error("not a dagraid metadata record: {0}")]
    Malformed(String),
    /// A record of a newer format.
    #[error("metadata record format version {found} is newer than this dagraid's {RECORD_VERSION}")]
    NewerVersion {
        /// The version found.
        found: u32,
    },
    /// Larger than the area.
    #[error("the metadata record takes {bytes} bytes; the area holds {RECORD_AREA_BYTES}")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
}

impl MetadataRecord {
    /// The record of volume `volume_id` at `mod_counter` holding `lost` (as of `lost_counter`)
    /// and the parity map `map` (as of its counter), if the volume keeps one.
    pub fn new(
        volume_id: &str,
        mod_counter: u64,
        lost: &LostSet,
        lost_counter: u64,
        map: Option<(&DirtyRegions, u64)>,
    ) -> Self {
        MetadataRecord {
            magic: RECORD_MAGIC.to_owned(),
            version: RECORD_VERSION,
            volume_id: volume_id.to_owned(),
            mod_counter,
            sections: Sections {
                lost: Some(LostSection::of(lost, lost_counter)),
                parity_map: map.map(|(m, counter)| MapSection::of(m, counter)),
            },
        }
    }

    /// The bytes stored in the metadata area.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let bytes = serde_json::to_vec(self).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if bytes.len() > RECORD_AREA_BYTES {
            return Err(RecordError::TooLarge { bytes: bytes.len() });
        }
        Ok(bytes)
    }

    /// Parses and checks record bytes.
    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, RecordError> {
        #[derive(Deserialize)]
        struct Head {
            magic: String,
            version: u32,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if head.magic != RECORD_MAGIC {
            return Err(RecordError::Malformed(format!("magic {:?}", head.magic)));
        }
        if head.version > RECORD_VERSION {
            return Err(RecordError::NewerVersion {
                found: head.version,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_large_lost_set_is_coarsened_to_fit() {
        let lost = LostSet::from_ranges([0..4, 100..200]);
        let r = MetadataRecord::new("v-1", 7, &lost, 6, None);
        let back = MetadataRecord::decode(&r.encode().unwrap()).unwrap();
        assert_eq!(back, r);
        let section = back.sections.lost.unwrap();
        assert_eq!((section.counter, section.coarsened), (6, false));
        assert_eq!(section.set(), lost);

        // Every other block of a large volume: far more ranges than the budget.
        let many = LostSet::from_ranges((0..100_000u64).map(|i| 2 * i..2 * i + 1));
        let r = MetadataRecord::new("v-1", 8, &many, 8, None);
        let bytes = r.encode().unwrap();
        assert!(bytes.len() <= RECORD_AREA_BYTES);
        let section = MetadataRecord::decode(&bytes)
            .unwrap()
            .sections
            .lost
            .unwrap();
        assert!(section.coarsened);
        let set = section.set();
        assert!(many.ranges().all(|r| set.overlapping(r.clone()) == [r]));
    }

    #[test]
    fn the_parity_map_round_trips_and_a_large_one_is_coarsened_to_a_superset() {
        let map = DirtyRegions {
            region_stripes: 16,
            regions: LostSet::from_ranges([3..4, 10..12]),
        };
        let r = MetadataRecord::new("v-1", 9, &LostSet::new(), 0, Some((&map, 9)));
        let back = MetadataRecord::decode(&r.encode().unwrap()).unwrap();
        let section = back.sections.parity_map.unwrap();
        assert_eq!((section.counter, section.coarsened), (9, false));
        assert_eq!(section.regions(), map);
        // A record written before the map existed has none.
        let old = br#"{"magic":"dagraid-metadata-record","version":1,"volume_id":"v","mod_counter":3,"sections":{"lost":{"counter":0,"ranges":[]}}}"#;
        assert_eq!(
            MetadataRecord::decode(old).unwrap().sections.parity_map,
            None
        );
        // Every other region of a huge volume: coarsened, still naming every dirty one.
        let many = DirtyRegions {
            region_stripes: 1,
            regions: LostSet::from_ranges((0..100_000u64).map(|i| 2 * i..2 * i + 1)),
        };
        let r = MetadataRecord::new("v-1", 10, &LostSet::new(), 0, Some((&many, 10)));
        let bytes = r.encode().unwrap();
        assert!(bytes.len() <= RECORD_AREA_BYTES);
        let section = MetadataRecord::decode(&bytes)
            .unwrap()
            .sections
            .parity_map
            .unwrap();
        assert!(section.coarsened);
        let got = section.regions().regions;
        assert!(
            many.regions
                .ranges()
                .all(|r| got.overlapping(r.clone()) == [r])
        );
    }

    #[test]
    fn bad_and_newer_records_are_refused() {
        assert!(matches!(
            MetadataRecord::decode(b"{}"),
            Err(RecordError::Malformed(_))
        ));
        let mut r = MetadataRecord::new("v", 1, &LostSet::new(), 0, None);
        r.version = RECORD_VERSION + 1;
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(
            MetadataRecord::decode(&bytes),
            Err(RecordError::NewerVersion {
                found: RECORD_VERSION + 1
            })
        );
    }
}
