//! The register workload of the linearizability checker: clients read and write whole blocks of
//! a small set (so that they contend), every write with a payload unique to it, and record each
//! operation with its interval and outcome ([`crate::linearizability::Op`]).
//!
//! A payload names its write: bytes 0..8 hold the client + 1 (never zero), bytes 8..16 the
//! sequence number, the rest a pseudo-random stream seeded by (client, sequence, block), so a
//! write that lands on the wrong block, or half of one, reads back as garbage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dagraid_client::{ClientError, Volume};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::linearizability::{
    Nanos, Observed, Op, OpKind, ReadOutcome, WriteId, WriteOutcome, classify_read, classify_write,
    error_name,
};

/// The payload of write `id` for `block`, `block_size` bytes.
pub fn payload(id: WriteId, block: u64, block_size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(block_size);
    out.extend_from_slice(&(u64::from(id.client) + 1).to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
    let mut x = u64::from(id.client) << 40 ^ id.seq.rotate_left(17) ^ block.wrapping_mul(0x9e37);
    while out.len() < block_size {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let take = (block_size - out.len()).min(8);
        out.extend_from_slice(&z.to_le_bytes()[..take]);
    }
    out.truncate(block_size);
    out
}

/// What the bytes of `block` say: zeros, a write's payload, or garbage.
pub fn decode(data: &[u8], block: u64) -> Observed {
    if data.iter().all(|&b| b == 0) {
        return Observed::Initial;
    }
    if data.len() < 16 {
        return Observed::Garbage;
    }
    let client = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
    let seq = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
    let Some(client) = client.checked_sub(1).and_then(|c| u32::try_from(c).ok()) else {
        return Observed::Garbage;
    };
    let id = WriteId { client, seq };
    if payload(id, block, data.len()) == data {
        Observed::Write(id)
    } else {
        Observed::Garbage
    }
}

/// The registers and their place in the volume.
#[derive(Debug, Clone, Copy)]
pub struct Registers {
    /// The first register's block.
    pub first_block: u64,
    /// How many consecutive blocks are registers.
    pub count: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// Data blocks per stripe (a call is atomic per stripe only).
    pub stripe_blocks: u64,
}

impl Registers {
    fn one_stripe(&self, first: u64, n: u64) -> bool {
        first / self.stripe_blocks == (first + n - 1) / self.stripe_blocks
    }
}

/// What one client did.
#[derive(Debug, Default)]
pub struct ClientRecord {
    /// Its operations, one per block (a multi-block write is one op per block).
    pub ops: Vec<Op>,
    /// Calls by (kind, outcome): kind `read`, `write` (one block), `multi-write`; outcome `ok`,
    /// `not-applied`, `maybe-applied`, `data-loss`, `failed`.
    pub calls: BTreeMap<(&'static str, &'static str), u64>,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Longest time the client went without a successful answer: between two successive
    /// successful answers (or from its start, or until its end), so it counts calls that
    /// failed and calls that were slow.
    pub longest_unavailable: Duration,
    /// Blocks of writes answered `torn-write` (recorded lost by the service).
    pub torn_blocks: Vec<u64>,
}

/// Runs client `client`'s workload on `volume` until `stop` is set: reads of one register,
/// writes of one register, writes of a few consecutive registers, and now and then a write
/// of a whole stripe's registers. Times are measured from `epoch`.
pub async fn run_client(
    client: u32,
    seed: u64,
    volume: Volume,
    registers: Registers,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> ClientRecord {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(client) << 32) ^ 0x00c1_1e47);
    let mut rec = ClientRecord::default();
    let mut seq = 0u64;
    let mut last_success = Instant::now();
    let bs = registers.block_size as usize;
    let now = |epoch: Instant| epoch.elapsed().as_nanos() as Nanos;
    while !stop.load(Ordering::Relaxed) {
        let dice: f64 = rng.random();
        let ok;
        if dice < 0.45 {
            let block = registers.first_block + rng.random_range(0..registers.count);
            let invoke = now(epoch);
            let answer = volume.read_at(block * registers.block_size, bs).await;
            let complete = now(epoch);
            let (outcome, error) = match &answer {
                Ok(data) => (ReadOutcome::Value(decode(data, block)), String::new()),
                Err(e) => (classify_read(e), e.to_string()),
            };
            ok = answer.is_ok();
            let name = match outcome {
                ReadOutcome::Value(_) => "ok",
                ReadOutcome::DataLoss => "data-loss",
                ReadOutcome::Failed => "failed",
            };
            count(&mut rec, "read", name, answer.as_ref().err());
            rec.ops.push(Op {
                client,
                block,
                invoke,
                complete,
                kind: OpKind::Read { outcome },
                error,
            });
        } else {
            let (first, n, kind) = if dice < 0.85 {
                let b = rng.random_range(0..registers.count);
                (b, 1, "write")
            } else if dice < 0.95 {
                let n = rng.random_range(2..=6u64).min(registers.count);
                (rng.random_range(0..=registers.count - n), n, "multi-write")
            } else {
                // A whole stripe's worth of registers (a large write when aligned).
                let n = registers.stripe_blocks.min(registers.count);
                let stripes = registers.count / n;
                (rng.random_range(0..stripes.max(1)) * n, n, "multi-write")
            };
            let first = registers.first_block + first;
            seq += 1;
            let id = WriteId { client, seq };
            let mut data = Vec::with_capacity(n as usize * bs);
            for b in first..first + n {
                data.extend_from_slice(&payload(id, b, bs));
            }
            let invoke = now(epoch);
            let answer = volume
                .write_at(first * registers.block_size, Bytes::from(data))
                .await;
            let complete = now(epoch);
            let outcome = classify_write(&answer, registers.one_stripe(first, n));
            ok = answer.is_ok();
            let name = match outcome {
                WriteOutcome::Applied => "ok",
                WriteOutcome::NotApplied => "not-applied",
                WriteOutcome::MaybeApplied => "maybe-applied",
            };
            count(&mut rec, kind, name, answer.as_ref().err());
            if let Err(ClientError::TornWrite { .. }) = &answer {
                rec.torn_blocks.extend(first..first + n);
            }
            let error = answer.as_ref().err().map(ToString::to_string);
            for block in first..first + n {
                rec.ops.push(Op {
                    client,
                    block,
                    invoke,
                    complete,
                    kind: OpKind::Write { id, outcome },
                    error: error.clone().unwrap_or_default(),
                });
            }
        }
        if ok {
            rec.longest_unavailable = rec.longest_unavailable.max(last_success.elapsed());
            last_success = Instant::now();
        } else {
            // Do not spin on a service that is down.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    rec.longest_unavailable = rec.longest_unavailable.max(last_success.elapsed());
    rec
}

fn count(
    rec: &mut ClientRecord,
    kind: &'static str,
    outcome: &'static str,
    error: Option<&ClientError>,
) {
    *rec.calls.entry((kind, outcome)).or_default() += 1;
    if let Some(e) = error {
        *rec.errors.entry(error_name(e)).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_their_write_and_block() {
        let id = WriteId { client: 3, seq: 77 };
        let p = payload(id, 5, 4096);
        assert_eq!(p.len(), 4096);
        assert_eq!(decode(&p, 5), Observed::Write(id));
        // The same write's payload for another block is garbage here.
        assert_eq!(decode(&payload(id, 6, 4096), 5), Observed::Garbage);
        assert_eq!(decode(&[0u8; 4096], 5), Observed::Initial);
        // Half of a new write over an old one: garbage.
        let old = payload(WriteId { client: 1, seq: 1 }, 5, 4096);
        let mut torn = p.clone();
        torn[2048..].copy_from_slice(&old[2048..]);
        assert_eq!(decode(&torn, 5), Observed::Garbage);
    }
}
