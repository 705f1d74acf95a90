//! The partial-parity log: what closes the write hole while a volume is degraded.
//!
//! A stripe whose data unit is on a failed column keeps that unit only in its parity. A write to
//! the stripe's other units changes data and parity on different nodes; a coordinator crash
//! between the two leaves a parity that matches neither the old nor the new data, and the failed
//! column's unit, rebuilt from it, comes back wrong: data nobody wrote to is damaged (the RAID 5
//! write hole). Linux md's PPL logs the partial parity of the untouched data before such a write
//! and recomputes the parity from it after a crash; dagraid logs, before every write to a stripe
//! while any column of the volume is not current, the contents the stripe's not-current data
//! units hold *after* the write, over the byte range the write touches (old contents read by a
//! degraded read where the write does not cover them). After a crash, assembly recomputes the
//! parity of each logged stripe from the surviving data as it is on disk and the logged units:
//! the failed columns' data then reads back exactly as logged, whichever of the write's
//! columns landed. An entry is written to the log area of every surviving parity column of its
//! stripe (P, and Q for RAID 6), durably, before any of the write is issued.
//!
//! **Entries.** Each log area is cut into fixed slots of [`slot_bytes`]; an entry takes one
//! slot: a header block (magic, [`FORMAT_VERSION`], the log period, the sequence, the stripe,
//! the in-unit block range, the columns, CRC-32C of the header and of the payload) and its
//! payload (each logged column's bytes, in the order of the columns). Slots are used round
//! robin, so an older entry is always overwritten before a newer one; a slot is not reused
//! while the write that logged in it is in flight.
//!
//! **Which entries count.** The *log period* is a random number drawn when the volume stops
//! being optimal and kept, in the labels and the store, until every column is current again
//! ([`crate::array::ComponentStates::log_period`]). Every write in a period is logged, so for
//! a stripe the entry of the period with the highest sequence holds what its not-current data
//! units hold now (or would hold, had the write that logged it finished). Entries of another
//! period (an earlier degraded spell, another volume) never count: after a period ends,
//! writes are not logged and an old entry would be stale. The sequence is (owner epoch of the
//! coordinator, a counter), so a later coordinator's entries rank above an earlier one's.
//!
//! **What the log cannot cover**, and assembly still refuses without `--force`: a column that
//! was current at the crash and is missing at assembly (nothing logged the writes in flight
//! then: bring its node back), a stripe whose missing data columns are not all in its newest
//! entry, and a stripe whose every parity column is missing too (nothing to recompute).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use bytes::{BufMut, Bytes, BytesMut};

use crate::array::ComponentStates;
use crate::dag::ComponentTable;
use crate::io::{IoError, LOG_ALIGN};
use crate::layout::{Layout, RaidLevel};
use crate::parity::pq;

/// Magic of an entry header.
pub const MAGIC: &[u8; 8] = b"DGRDPPL\0";
/// Version of the entry format this coordinator writes and reads (others are ignored).
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of an entry header (one log-aligned block).
pub const HEADER_BYTES: u64 = LOG_ALIGN;

/// The sequence of an entry: (owner epoch, counter), compared in that order.
pub type Sequence = (u64, u64);

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The log period it was written in.
    pub period: u64,
    /// Its sequence.
    pub seq: Sequence,
    /// The stripe.
    pub stripe: u64,
    /// The blocks of the stripe unit it covers, relative to the start of a unit.
    pub unit_blocks: Range<u64>,
    /// The columns it logs, each with `unit_blocks` of bytes, in this order in `payload`.
    pub columns: Vec<usize>,
    /// The logged bytes.
    pub payload: Bytes,
}

impl Entry {
    /// The logged bytes of `column`, if it is logged.
    pub fn unit(&self, column: usize) -> Option<Bytes> {
        let i = self.columns.iter().position(|&c| c == column)?;
        let per = self.payload.len() / self.columns.len().max(1);
        Some(self.payload.slice(i * per..(i + 1) * per))
    }

    /// The entry as it is written: header block, then the payload padded to [`LOG_ALIGN`].
    pub fn encode(&self) -> Bytes {
        let padded = (self.payload.len() as u64).div_ceil(LOG_ALIGN) * LOG_ALIGN;
        let mut b = BytesMut::with_capacity((HEADER_BYTES + padded) as usize);
        b.put_slice(MAGIC);
        b.put_u32_le(FORMAT_VERSION);
        b.put_u32_le(self.columns.len() as u32);
        b.put_u64_le(self.period);
        b.put_u64_le(self.seq.0);
        b.put_u64_le(self.seq.1);
        b.put_u64_le(self.stripe);
        b.put_u64_le(self.unit_blocks.start);
        b.put_u64_le(self.unit_blocks.end);
        b.put_u64_le(self.payload.len() as u64);
        b.put_u32_le(crc32c(&self.payload));
        for &c in &self.columns {
            b.put_u32_le(c as u32);
        }
        let crc = crc32c(&b);
        b.put_u32_le(crc);
        b.resize(HEADER_BYTES as usize, 0);
        b.put_slice(&self.payload);
        b.resize((HEADER_BYTES + padded) as usize, 0);
        b.freeze()
    }

    /// Decodes the entry at the start of `slot` (a whole slot's bytes, or at least the entry's),
    /// or `None` when there is none: no magic, another format version, a checksum that does not
    /// match (a slot being overwritten when the crash came), fields out of bounds.
    pub fn decode(slot: &Bytes) -> Option<Entry> {
        let h = slot.get(..HEADER_BYTES as usize)?;
        if &h[..8] != MAGIC {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or_default());
        if u32_at(8) != FORMAT_VERSION {
            return None;
        }
        let ncols = u32_at(12) as usize;
        if ncols == 0 || ncols > 2 {
            return None;
        }
        let fixed = 16 + 8 * 7 + 4;
        let cols_end = fixed + 4 * ncols;
        let crc = u32_at(cols_end);
        if crc32c(&h[..cols_end]) != crc {
            return None;
        }
        let payload_len = u64_at(64) as usize;
        let payload_crc = u32_at(72);
        let start = HEADER_BYTES as usize;
        let payload = slot.get(start..start.checked_add(payload_len)?)?;
        if crc32c(payload) != payload_crc {
            return None;
        }
        let unit_blocks = u64_at(48)..u64_at(56);
        if unit_blocks.is_empty() || !payload_len.is_multiple_of(ncols) {
            return None;
        }
        Some(Entry {
            period: u64_at(16),
            seq: (u64_at(24), u64_at(32)),
            stripe: u64_at(40),
            unit_blocks,
            columns: (0..ncols).map(|i| u32_at(fixed + 4 * i) as usize).collect(),
            payload: slot.slice(start..start + payload_len),
        })
    }
}

fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// The slot size of a volume of `layout`: a header and one whole unit of each column an entry
/// can log (the layout's fault tolerance).
pub fn slot_bytes(layout: &Layout) -> u64 {
    let units = layout.fault_tolerance().max(1) as u64;
    HEADER_BYTES + (units * layout.unit_bytes()).div_ceil(LOG_ALIGN) * LOG_ALIGN
}

/// Whether writes to a volume of this level can open a write hole (and are logged while it is
/// degraded): levels with parity.
pub fn level_logs(level: RaidLevel) -> bool {
    matches!(
        level,
        RaidLevel::Raid4 | RaidLevel::Raid5 | RaidLevel::Raid6
    )
}

/// The slots of one component's log area, used round robin; a slot in use by a write in flight
/// is not reused until that write ends.
#[derive(Debug)]
pub struct Ring {
    slot_bytes: u64,
    state: Mutex<RingState>,
    freed: tokio::sync::Notify,
}

#[derive(Debug)]
struct RingState {
    busy: Vec<bool>,
    next: usize,
}

/// A slot of a [`Ring`], held while the write that logged in it is in flight.
#[derive(Debug)]
pub struct SlotGuard {
    ring: std::sync::Arc<Ring>,
    slot: usize,
}

impl SlotGuard {
    /// Byte offset of the slot in the log area.
    pub fn offset(&self) -> u64 {
        self.slot as u64 * self.ring.slot_bytes
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut st = self.ring.state.lock().unwrap_or_else(|p| p.into_inner());
        st.busy[self.slot] = false;
        drop(st);
        self.ring.freed.notify_waiters();
    }
}

impl Ring {
    /// The ring of a log area of `log_bytes` with slots of `slot_bytes`, or `None` when not
    /// even one slot fits.
    pub fn new(log_bytes: u64, slot_bytes: u64) -> Option<Ring> {
        let slots = (log_bytes / slot_bytes.max(1)) as usize;
        (slots > 0).then(|| Ring {
            slot_bytes,
            state: Mutex::new(RingState {
                busy: vec![false; slots],
                next: 0,
            }),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .busy
            .len()
    }

    /// The next slot in round-robin order, waiting while it is in use (an older entry is
    /// always overwritten before a newer one).
    pub async fn acquire(self: &std::sync::Arc<Self>) -> SlotGuard {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let slot = st.next;
                if !st.busy[slot] {
                    st.busy[slot] = true;
                    st.next = (slot + 1) % st.busy.len();
                    return SlotGuard {
                        ring: self.clone(),
                        slot,
                    };
                }
            }
            freed.await;
        }
    }
}

/// The rings of one array's components, by component id (a spare that replaces a column gets
/// a ring of its own).
#[derive(Debug, Default)]
pub struct Rings {
    rings: Mutex<HashMap<String, std::sync::Arc<Ring>>>,
}

impl Rings {
    /// The ring of `component` (log area `log_bytes`), `None` when its log area holds no slot
    /// (asked again next time: the size may not be known yet).
    pub fn of(
        &self,
        component: &str,
        log_bytes: u64,
        slot_bytes: u64,
    ) -> Option<std::sync::Arc<Ring>> {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ring) = rings.get(component) {
            return Some(ring.clone());
        }
        let ring = std::sync::Arc::new(Ring::new(log_bytes, slot_bytes)?);
        rings.insert(component.to_owned(), ring.clone());
        Some(ring)
    }
}

/// What [`replay`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Valid entries of the period found.
    pub entries: u64,
    /// Stripes whose parity was recomputed from their newest entry.
    pub replayed: u64,
    /// Stripes whose newest entry could not be applied, with the reason (their failed data
    /// cannot be trusted).
    pub unapplied: Vec<(u64, String)>,
    /// Columns whose log area could not be read, with the error: their entries were not
    /// applied (a replay by force, [`crate::access::Array::replay_log`]).
    pub unread: Vec<(usize, String)>,
}

/// The log areas a replay could not read: column and error. Applying only the entries of the
/// others could leave a stripe a write was cut short in out of step with nothing said (on RAID 5
/// a stripe's entries are on its one parity column), so the replay applies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableLog(pub Vec<(usize, String)>);

impl std::fmt::Display for UnreadableLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the partial-parity log cannot be read on ")?;
        for (i, (column, error)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "column {column} ({error})")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnreadableLog {}

/// Reads every valid entry of `period` from the log areas of the columns `read_from`: the
/// newest per stripe, and how many entries of the period were found. A column whose log
/// cannot be read is returned beside, with the error (the caller decides: see
/// [`UnreadableLog`]).
pub async fn newest_entries(
    layout: &Layout,
    components: &ComponentTable,
    read_from: &[usize],
    period: u64,
) -> (HashMap<u64, Entry>, u64, Vec<(usize, IoError)>) {
    let slot = slot_bytes(layout);
    let mut newest: HashMap<u64, Entry> = HashMap::new();
    let mut count = 0;
    let mut errors = Vec::new();
    for &column in read_from {
        let Some(c) = components.get(column) else {
            continue;
        };
        let slots = c.log_bytes() / slot;
        for i in 0..slots {
            let bytes = match c.read_log(i * slot, slot as u32).await {
                Ok(b) => b,
                Err(e) => {
                    errors.push((column, e));
                    break;
                }
            };
            let Some(entry) = Entry::decode(&bytes) else {
                continue;
            };
            if entry.period != period {
                continue;
            }
            count += 1;
            match newest.get(&entry.stripe) {
                Some(old) if old.seq >= entry.seq => {}
                _ => {
                    newest.insert(entry.stripe, entry);
                }
            }
        }
    }
    (newest, count, errors)
}

/// Applies the newest entry of each stripe: the stripe's parity (every parity column present)
/// is recomputed over the entry's range from the logged units and the other data units as
/// they are on disk, and the logged units are written to their columns where those are
/// present, so the stripe is consistent and its missing data reads back as logged.
///
/// `states` is the assembled state: a column counts as missing for a stripe where it is not
/// current ([`ComponentStates::current_for`]). An entry is applied only when it logs every
/// missing data column of its stripe and a parity column is present; a stripe with no
/// missing data column is left to the parity resync.
pub async fn replay(
    layout: &Layout,
    components: &ComponentTable,
    states: &ComponentStates,
    entries: HashMap<u64, Entry>,
) -> ReplayReport {
    let mut report = ReplayReport {
        entries: entries.len() as u64,
        ..ReplayReport::default()
    };
    let mut stripes: Vec<_> = entries.into_iter().collect();
    stripes.sort_by_key(|(s, _)| *s);
    for (stripe, entry) in stripes {
        if stripe >= layout.stripes() {
            report
                .unapplied
                .push((stripe, "entry names a stripe beyond the volume".into()));
            continue;
        }
        match apply(layout, components, states, &entry).await {
            Ok(true) => report.replayed += 1,
            Ok(false) => {}
            Err(why) => report.unapplied.push((stripe, why)),
        }
    }
    report
}

async fn apply(
    layout: &Layout,
    components: &ComponentTable,
    states: &ComponentStates,
    entry: &Entry,
) -> Result<bool, String> {
    let Some(sl) = layout.stripe(entry.stripe) else {
        return Err("entry names a stripe beyond the volume".into());
    };
    let present = |c: usize| states.current_for(c, entry.stripe);
    let missing: Vec<usize> = sl
        .data_columns()
        .map(|(_, c)| c)
        .filter(|&c| !present(c))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    if let Some(c) = missing.iter().find(|c| !entry.columns.contains(c)) {
        return Err(format!(
            "column {c} is missing and its newest log entry does not hold its data"
        ));
    }
    let Some(blocks) = sl.component_blocks_of(entry.unit_blocks.clone()) else {
        return Err(format!(
            "entry range {:?} is outside a stripe unit",
            entry.unit_blocks
        ));
    };
    let bs = layout.geometry().block_size();
    let len = (blocks.count * bs) as usize;
    let parity: Vec<(usize, bool)> = [
        sl.p_column().map(|c| (c, false)),
        sl.q_column().map(|c| (c, true)),
    ]
    .into_iter()
    .flatten()
    .filter(|&(c, _)| present(c))
    .collect();
    if parity.is_empty() {
        return Err("no parity column of the stripe is present".into());
    }
    let mut data: Vec<Bytes> = Vec::with_capacity(sl.data_units());
    for (_, column) in sl.data_columns() {
        let bytes = match entry.unit(column) {
            Some(b) => b,
            None => components[column]
                .read(blocks.first, blocks.count as u32)
                .await
                .map_err(|e| format!("reading column {column}: {e}"))?,
        };
        if bytes.len() != len {
            return Err(format!(
                "column {column}: {} bytes where the entry covers {len}",
                bytes.len()
            ));
        }
        data.push(bytes);
    }
    let refs: Vec<&[u8]> = data.iter().map(|b| b.as_ref()).collect();
    for (column, is_q) in parity {
        let mut out = vec![0u8; len];
        let r = if is_q {
            pq::q_encode(&refs, &mut out)
        } else {
            pq::p_encode(&refs, &mut out)
        };
        r.map_err(|e| e.to_string())?;
        components[column]
            .write(blocks.first, Bytes::from(out))
            .await
            .map_err(|e| format!("writing parity column {column}: {e}"))?;
    }
    // A logged column that is present (current for the stripe) gets the logged bytes too.
    for &column in &entry.columns {
        if present(column)
            && let Some(b) = entry.unit(column)
        {
            components[column]
                .write(blocks.first, b)
                .await
                .map_err(|e| format!("writing column {column}: {e}"))?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            period: 7,
            seq: (3, 9),
            stripe: 12,
            unit_blocks: 2..4,
            columns: vec![1, 3],
            payload: Bytes::from((0..16384u32).map(|i| i as u8).collect::<Vec<_>>()),
        }
    }

    #[test]
    fn an_entry_round_trips_and_any_flipped_byte_voids_it() {
        let e = entry();
        let bytes = e.encode();
        assert_eq!(bytes.len() as u64, HEADER_BYTES + 16384);
        assert_eq!(Entry::decode(&bytes), Some(e.clone()));
        assert_eq!(e.unit(3).unwrap().len(), 8192);
        assert_eq!(e.unit(3).unwrap()[0], 0);
        assert!(e.unit(2).is_none());
        for at in [0usize, 8, 20, 60, 80, 86, 4096, 4096 + 16383] {
            let mut b = bytes.to_vec();
            b[at] ^= 1;
            assert_eq!(Entry::decode(&Bytes::from(b)), None, "byte {at}");
        }
        // A slot cut short (the crash came during its write) holds no entry.
        assert_eq!(Entry::decode(&bytes.slice(..8192)), None);
        assert_eq!(Entry::decode(&Bytes::from(vec![0u8; 8192])), None);
    }

    #[tokio::test]
    async fn the_ring_goes_round_and_waits_for_a_busy_slot() {
        let ring = std::sync::Arc::new(Ring::new(3 * 8192 + 100, 8192).unwrap());
        assert_eq!(ring.slots(), 3);
        let a = ring.acquire().await;
        let b = ring.acquire().await;
        let c = ring.acquire().await;
        assert_eq!((a.offset(), b.offset(), c.offset()), (0, 8192, 16384));
        let r = ring.clone();
        let waiter = tokio::spawn(async move { r.acquire().await.offset() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::task::yield_now().await;
        // Slot 0 is next in order, still busy: slot 1 being free does not jump the queue.
        assert!(!waiter.is_finished());
        drop(a);
        assert_eq!(waiter.await.unwrap(), 0);
        assert!(Ring::new(8191, 8192).is_none());
    }
}
