//! Migration tests: a format 1 file built by hand opens as format 2 with everything it held, after
//! a stop at every step, a power cut at every disk operation, and a header torn at every byte.

use std::sync::Arc;

use super::*;
use crate::block_store::BlockStore;
use crate::layout::{FORMAT_VERSION_V1, default_log_bytes};
use crate::slot::Area;
use crate::testing::{BLOCK_SIZE, BLOCKS, CutMode, PowerCutDisk, V1File, v1_file};

fn disk(image: Vec<u8>) -> Arc<PowerCutDisk> {
    Arc::new(PowerCutDisk::from_image(image, 7))
}

fn header_version(disk: &PowerCutDisk) -> Result<u32, HeaderError> {
    let mut region = vec![0u8; HEADER_REGION_BYTES as usize];
    disk.read_at(&mut region, 0).unwrap();
    ComponentHeader::decode(&region).map(|(_, version)| version)
}

/// Opens `disk` as a block store and checks it is the format 2 version of `v1`, with every block
/// (through its checksum), the label and the metadata intact, and no fence epoch.
async fn assert_migrated(disk: Arc<PowerCutDisk>, v1: &V1File) {
    let store = BlockStore::open(disk.clone(), None)
        .unwrap_or_else(|e| panic!("a migrated file does not open: {e}"));
    let expected = ComponentHeader {
        log_bytes: default_log_bytes(BLOCK_SIZE),
        ..v1.header.clone()
    };
    assert_eq!(store.header(), &expected);
    assert_eq!(
        disk.size().unwrap(),
        expected.layout().unwrap().file_len,
        "format 2 length"
    );
    assert_eq!(header_version(&disk), Ok(FORMAT_VERSION));
    let mut copy = vec![0u8; HEADER_BYTES];
    disk.read_at(&mut copy, MIGRATION_COPY_OFFSET).unwrap();
    assert!(copy.iter().all(|&b| b == 0), "the migration copy is left");
    let data = store.read_blocks(0, BLOCKS).await.unwrap();
    assert_eq!(data, v1.blocks.concat(), "block data (and checksums)");
    assert_eq!(
        store.read_slot(Area::Label).await.unwrap(),
        Some(v1.label.clone())
    );
    assert_eq!(
        store.read_slot(Area::Metadata).await.unwrap(),
        Some(v1.metadata.clone())
    );
    assert_eq!(store.fence_epoch(), 0);
}

#[tokio::test]
async fn a_format_1_file_opens_as_format_2_with_its_data_checksums_labels_and_metadata() {
    let v1 = v1_file(1);
    let disk = disk(v1.image.clone());
    assert_eq!(header_version(&disk), Ok(FORMAT_VERSION_V1));
    let opened = open_header(disk.as_ref()).unwrap();
    assert_eq!(opened.migrated_from, Some(FORMAT_VERSION_V1));
    assert_migrated(disk.clone(), &v1).await;
    // Opening again changes nothing.
    let again = open_header(disk.as_ref()).unwrap();
    assert_eq!(again.migrated_from, None);
    assert_migrated(disk.clone(), &v1).await;
    // The migrated file takes writes and fence epochs like any format 2 file.
    let store = BlockStore::open(disk.clone(), None).unwrap();
    store
        .write_blocks(9, bytes::Bytes::from(vec![5u8; 512]))
        .await
        .unwrap();
    assert_eq!(store.raise_fence_epoch(4).await.unwrap(), 4);
    let store = BlockStore::open(disk, None).unwrap();
    assert_eq!(store.fence_epoch(), 4);
    assert_eq!(store.read_blocks(9, 1).await.unwrap(), vec![5u8; 512]);
}

#[tokio::test]
async fn a_migration_stopped_after_any_step_leaves_a_file_that_opens_with_everything() {
    for step in [
        Step::Grown,
        Step::CopyWritten,
        Step::HeaderWritten,
        Step::CopyCleared,
    ] {
        let v1 = v1_file(2);
        let disk = disk(v1.image.clone());
        let err = open_header_until(disk.as_ref(), Some(step)).unwrap_err();
        assert!(err.contains("stopped"), "{step:?}: {err}");
        // Before the commit point the file is still format 1, from it on format 2.
        let expected = if step < Step::HeaderWritten {
            FORMAT_VERSION_V1
        } else {
            FORMAT_VERSION
        };
        assert_eq!(header_version(&disk), Ok(expected), "after {step:?}");
        assert_migrated(disk, &v1).await;
    }
}

/// A power cut at every write, growth and sync of the migration (every unsynced write lost, or a
/// random subset of its sectors kept): the restarted node opens the file and finds everything.
#[tokio::test]
async fn a_power_cut_at_any_point_of_a_migration_leaves_a_file_that_opens_with_everything() {
    let v1 = v1_file(3);
    // Count the disk operations of one migration: it ends before a cut that far away.
    let mut ops = 0;
    loop {
        let disk = disk(v1.image.clone());
        disk.arm(ops, CutMode::DropAllUnsynced);
        if open_header(disk.as_ref()).is_ok() {
            break;
        }
        ops += 1;
        assert!(ops < 100, "the migration never ends");
    }
    assert!(ops >= 8, "a migration of {ops} operations");
    for (cut, mode, seed) in (0..ops).flat_map(|cut| {
        [(cut, CutMode::DropAllUnsynced, 0)]
            .into_iter()
            .chain((0..8).map(move |seed| (cut, CutMode::KeepRandomSectors, seed)))
    }) {
        let disk = Arc::new(PowerCutDisk::from_image(v1.image.clone(), seed));
        disk.arm(cut, mode);
        assert!(open_header(disk.as_ref()).is_err(), "cut {cut} missed");
        let image = disk.after_cut().expect("the power was cut");
        let restarted = Arc::new(PowerCutDisk::from_image(image, 0));
        let version = header_version(&restarted);
        assert!(
            matches!(version, Ok(FORMAT_VERSION_V1 | FORMAT_VERSION))
                || version == Err(HeaderError::ChecksumMismatch),
            "cut {cut} {mode:?} left a header of {version:?}"
        );
        assert_migrated(restarted, &v1).await;
    }
}

/// The commit write torn after every byte: the header is either still format 1 (migrated again)
/// or a mix that the durable copy completes.
#[tokio::test]
async fn a_header_torn_at_every_byte_is_completed_from_the_migration_copy() {
    let v1 = v1_file(4);
    let prepared = disk(v1.image.clone());
    open_header_until(prepared.as_ref(), Some(Step::CopyWritten)).unwrap_err();
    let mut image = vec![0u8; prepared.size().unwrap() as usize];
    prepared.read_at(&mut image, 0).unwrap();
    let new_header = ComponentHeader {
        log_bytes: default_log_bytes(BLOCK_SIZE),
        ..v1.header.clone()
    }
    .encode();
    for cut in 0..=HEADER_BYTES {
        let mut torn = image.clone();
        torn[..cut].copy_from_slice(&new_header[..cut]);
        assert_migrated(disk(torn), &v1).await;
    }
}

#[test]
fn a_corrupt_header_is_not_repaired_from_a_copy_no_migration_left() {
    let v1 = v1_file(5);
    let migrated = disk(v1.image.clone());
    open_header(migrated.as_ref()).unwrap();
    let mut image = vec![0u8; migrated.size().unwrap() as usize];
    migrated.read_at(&mut image, 0).unwrap();

    // No copy: a flipped header byte is refused.
    let mut corrupt = image.clone();
    corrupt[20] ^= 1;
    let err = open_header(disk(corrupt.clone()).as_ref()).unwrap_err();
    assert!(err.contains("header checksum mismatch"), "{err}");

    // A copy of another component's header does not repair it either.
    let other = ComponentHeader {
        id: "someone-else".into(),
        log_bytes: default_log_bytes(BLOCK_SIZE),
        ..v1.header.clone()
    };
    let at = MIGRATION_COPY_OFFSET as usize;
    corrupt[at..at + HEADER_BYTES].copy_from_slice(&other.encode()[..HEADER_BYTES]);
    let err = open_header(disk(corrupt).as_ref()).unwrap_err();
    assert!(err.contains("header checksum mismatch"), "{err}");

    // A newer format is refused with the downgrade message, copy or not.
    let mut newer = image;
    newer[8..12].copy_from_slice(&3u32.to_le_bytes());
    let err = open_header(disk(newer).as_ref()).unwrap_err();
    assert!(
        err.contains("written by a newer dagraid") && err.contains("downgrade"),
        "{err}"
    );
}

#[test]
fn a_format_1_file_of_a_length_no_migration_leaves_is_refused() {
    let v1 = v1_file(6);
    let v2_len = ComponentHeader {
        log_bytes: default_log_bytes(BLOCK_SIZE),
        ..v1.header.clone()
    }
    .layout()
    .unwrap()
    .file_len as usize;
    for len in [v1.image.len() - 4096, v2_len + 4096] {
        let mut image = v1.image.clone();
        image.resize(len, 0);
        let err = open_header(disk(image).as_ref()).unwrap_err();
        assert!(err.contains("expected"), "{len}: {err}");
    }
}

/// What a format 1 node does with a format 2 header: its first checks are the magic (unchanged)
/// and `version == 1`, which a format 2 header fails, so it stops at the version.
#[test]
fn a_format_2_header_fails_the_version_check_of_a_format_1_reader() {
    let v1 = v1_file(7);
    let v2 = ComponentHeader {
        log_bytes: 4096,
        ..v1.header.clone()
    }
    .encode();
    assert_eq!(&v2[0..8], crate::layout::COMPONENT_MAGIC);
    assert_ne!(u32::from_le_bytes(v2[8..12].try_into().unwrap()), 1);
}
