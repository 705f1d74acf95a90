//! A per-block linearizability checker: is every read a client saw explained by some order of
//! the writes that respects real time?
//!
//! Each block of the volume is a register. Clients read whole blocks and write whole blocks
//! (a multi-block write is one write per block, all with the call's interval); every write
//! carries a payload unique to it ([`WriteId`]: client and sequence number), so a read names
//! the write it saw, the initial zeros, or garbage ([`Observed`]). A history is a list of
//! [`Op`]s with their invoke and complete times (monotonic nanoseconds) and outcomes.
//!
//! # The API's contract, as the checker reads it
//!
//! Which outcome an answer of the volume API stands for ([`classify_write`],
//! [`classify_read`]; docs/RELIABILITY.md, "The contract the checker holds the service to"):
//!
//! - **OK**: the write was applied (between invoke and complete); a read's bytes are the block's
//!   value at some instant in its interval.
//! - **An error the service itself answered, carrying its `dagraid-error-kind`**: what the kind
//!   promises. Answered before anything is written, so *not applied*: `unrecoverable`
//!   (UNAVAILABLE: every stripe of the access rolled backward, "nothing was written"),
//!   `overloaded` (RESOURCE_EXHAUSTED, refused at admission), `not-assembled`, `unknown-volume`,
//!   invalid arguments and out-of-range. That holds for a call within one stripe: a call is
//!   atomic per stripe only, so a call over several stripes may have applied the stripes before
//!   the one that failed, and its "not applied" answers count as *maybe applied*.
//!   Kinds that may have written part of the call, or whose outcome is unknown, are *maybe
//!   applied*: `torn-write` (DATA_LOSS: landed on some columns only; its stripes are recorded
//!   lost), `state-not-recorded`, `fenced`, `internal`, `storage-refused`, and anything the SDK
//!   does not name (it reads `volume-failed`, which is answered before anything is written, as
//!   a bare FAILED_PRECONDITION, so it is counted as maybe applied too: weaker, still sound).
//! - **A deadline, a dropped connection, a transport error without the service's kind**: the
//!   write is *maybe applied*, at any instant after its invoke, or never.
//! - **DATA_LOSS on a read** (`unreadable`): legal only for a block recorded lost (the caller
//!   passes the set, e.g. from `ListLost` / `dagraid volume lost`, and the blocks of writes
//!   answered `torn-write`). Any other failed read says nothing about the value and is ignored.
//!
//! # The search
//!
//! Per block, the Wing–Gong search with memoization (as in Porcupine): walk the history's call
//! and return events in time order, linearize a pending call when the register's model allows
//! it, backtrack when a return is reached whose call could not be placed, and never visit a
//! (set of linearized operations, register value) pair twice. A maybe-applied write has no
//! return event, so it can be placed anywhere after its invoke or left out. A maybe-applied
//! write that no read saw is dropped up front (leaving it out never changes what a read can
//! see). When a block has no linearization, [`check`] cuts its history to the shortest time
//! prefix that already has none (operations still running at the cut count as maybe-applied
//! writes and unanswered reads), drops every operation the violation does not need, and
//! reports the rest as a table ([`Violation`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use dagraid_client::ClientError;

/// Monotonic time in nanoseconds since the run started.
pub type Nanos = u64;

/// Which write a payload belongs to: the writing client and its sequence number (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId {
    /// The client.
    pub client: u32,
    /// Its write sequence number, from 1.
    pub seq: u64,
}

impl fmt::Display for WriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}.{}", self.client, self.seq)
    }
}

/// What a read returned, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Observed {
    /// All zeros: no write has landed yet.
    Initial,
    /// The payload of this write.
    Write(WriteId),
    /// Bytes that are neither zeros nor any write's payload for this block.
    Garbage,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observed::Initial => f.write_str("zeros"),
            Observed::Write(id) => write!(f, "{id}"),
            Observed::Garbage => f.write_str("GARBAGE"),
        }
    }
}

/// What a write's answer promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteOutcome {
    /// OK: applied between invoke and complete.
    Applied,
    /// The service answered that nothing was written.
    NotApplied,
    /// Unknown: applied at some instant after invoke, or never.
    MaybeApplied,
}

/// What a read's answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadOutcome {
    /// The bytes, decoded.
    Value(Observed),
    /// DATA_LOSS (`unreadable`): legal only for a block recorded lost.
    DataLoss,
    /// Any other error: says nothing about the block.
    Failed,
}

/// One operation on one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A write of `id`'s payload.
    Write {
        /// The payload written.
        id: WriteId,
        /// What the answer promises.
        outcome: WriteOutcome,
    },
    /// A read.
    Read {
        /// What came back.
        outcome: ReadOutcome,
    },
}

/// One operation of a client on one block, with its interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The client that issued it.
    pub client: u32,
    /// The block (volume block index).
    pub block: u64,
    /// When the call was made.
    pub invoke: Nanos,
    /// When the answer came (for every outcome, also errors and deadlines).
    pub complete: Nanos,
    /// Read or write, and the outcome.
    pub kind: OpKind,
    /// The error, for the report (empty when OK).
    pub error: String,
}

/// Classifies a write's answer under the contract above. `one_stripe`: the call lay within one
/// stripe (only then is a "nothing was written" answer true of every block of the call).
pub fn classify_write(answer: &Result<(), ClientError>, one_stripe: bool) -> WriteOutcome {
    let err = match answer {
        Ok(()) => return WriteOutcome::Applied,
        Err(err) => err,
    };
    let refused_before_writing = matches!(
        err,
        ClientError::Unrecoverable { .. }
            | ClientError::Overloaded { .. }
            | ClientError::VolumeFailed { .. }
            | ClientError::NotAssembled { .. }
            | ClientError::UnknownVolume { .. }
            | ClientError::InvalidArgument { .. }
            | ClientError::OutOfRange { .. }
            | ClientError::Unauthenticated { .. }
            | ClientError::InvalidEndpoint { .. }
            | ClientError::InvalidOptions(_)
    );
    if refused_before_writing && one_stripe {
        WriteOutcome::NotApplied
    } else {
        WriteOutcome::MaybeApplied
    }
}

/// Classifies a read's error (a read that answered bytes is [`ReadOutcome::Value`]).
pub fn classify_read(err: &ClientError) -> ReadOutcome {
    match err {
        ClientError::Unreadable { .. } => ReadOutcome::DataLoss,
        _ => ReadOutcome::Failed,
    }
}

/// A short name of an error's kind, for counting.
pub fn error_name(err: &ClientError) -> &'static str {
    match err {
        ClientError::InvalidEndpoint { .. } => "invalid-endpoint",
        ClientError::InvalidOptions(_) => "invalid-options",
        ClientError::Tls { .. } => "tls",
        ClientError::Unauthenticated { .. } => "unauthenticated",
        ClientError::UnknownVolume { .. } => "unknown-volume",
        ClientError::VolumeExists { .. } => "volume-exists",
        ClientError::UnknownSpare { .. } => "unknown-spare",
        ClientError::SpareInUse { .. } => "spare-in-use",
        ClientError::InvalidArgument { .. } => "invalid-argument",
        ClientError::BadGeometry { .. } => "bad-geometry",
        ClientError::OutOfRange { .. } => "out-of-range",
        ClientError::NotEnoughNodes { .. } => "not-enough-nodes",
        ClientError::Unrecoverable { .. } => "unrecoverable",
        ClientError::Unreadable { .. } => "unreadable",
        ClientError::TornWrite { .. } => "torn-write",
        ClientError::NodeUnavailable { .. } => "node-unavailable",
        ClientError::NoSpace { .. } => "no-space",
        ClientError::Overloaded { .. } => "overloaded",
        ClientError::WouldExceedTolerance { .. } => "would-exceed-tolerance",
        ClientError::VolumeFailed { .. } => "volume-failed",
        ClientError::NotAllowed { .. } => "not-allowed",
        ClientError::RebuildRefused { .. } => "rebuild-refused",
        ClientError::ParityRefused { .. } => "parity-refused",
        ClientError::StorageRefused { .. } => "storage-refused",
        ClientError::Fenced { .. } => "fenced",
        ClientError::NotAssembled { .. } => "not-assembled",
        ClientError::StateNotRecorded { .. } => "state-not-recorded",
        ClientError::Unavailable { .. } => "unavailable",
        ClientError::Transport { .. } => "transport",
        ClientError::Timeout { .. } => "timeout",
        ClientError::Internal { .. } => "internal",
        ClientError::NotFound { .. } => "not-found",
        ClientError::Unsupported { .. } => "unsupported",
        ClientError::InvalidResponse(_) => "invalid-response",
        ClientError::Other { .. } => "other",
    }
}

/// A block whose history no linearization explains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The block.
    pub block: u64,
    /// Why, in a sentence.
    pub reason: String,
    /// The smallest history found that shows it, in invoke order.
    pub history: Vec<Op>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "block {}: {}", self.block, self.reason)?;
        writeln!(
            f,
            "  {:>3} {:>6} {:>5} {:>12} {:>12}  {:<12} {:<13} error",
            "#", "client", "op", "invoke ms", "complete ms", "value", "outcome"
        )?;
        for (i, op) in self.history.iter().enumerate() {
            let (kind, value, outcome) = match op.kind {
                OpKind::Write { id, outcome } => (
                    "write",
                    id.to_string(),
                    match outcome {
                        WriteOutcome::Applied => "ok",
                        WriteOutcome::NotApplied => "not applied",
                        WriteOutcome::MaybeApplied => "maybe applied",
                    },
                ),
                OpKind::Read { outcome } => match outcome {
                    ReadOutcome::Value(v) => ("read", v.to_string(), "ok"),
                    ReadOutcome::DataLoss => ("read", "-".to_owned(), "DATA_LOSS"),
                    ReadOutcome::Failed => ("read", "-".to_owned(), "failed"),
                },
            };
            writeln!(
                f,
                "  {:>3} {:>6} {:>5} {:>12.3} {:>12.3}  {:<12} {:<13} {}",
                i,
                op.client,
                kind,
                op.invoke as f64 / 1e6,
                op.complete as f64 / 1e6,
                value,
                outcome,
                op.error
            )?;
        }
        Ok(())
    }
}

/// The checker's answer over a whole history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Blocks checked.
    pub blocks: usize,
    /// Operations checked (after dropping failed reads, writes not applied, unseen maybe-applied
    /// writes).
    pub ops: usize,
    /// Search steps in all (calls tried), a measure of the work the search did.
    pub steps: u64,
    /// The blocks with no linearization, with their counterexamples.
    pub violations: Vec<Violation>,
}

impl Verdict {
    /// Whether every block has a linearization.
    pub fn is_linearizable(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks `ops` block by block; `lost` are the blocks recorded lost at some point (DATA_LOSS
/// reads of them are legal).
pub fn check(ops: &[Op], lost: &BTreeSet<u64>) -> Verdict {
    let mut by_block: BTreeMap<u64, Vec<Op>> = BTreeMap::new();
    for op in ops {
        by_block.entry(op.block).or_default().push(op.clone());
    }
    let mut verdict = Verdict::default();
    for (block, ops) in by_block {
        verdict.blocks += 1;
        match check_block(&ops, lost.contains(&block)) {
            BlockResult::Ok { ops, steps } => {
                verdict.ops += ops;
                verdict.steps += steps;
            }
            BlockResult::Violation { reason, history } => {
                let mut history = history;
                history.sort_by_key(|o| (o.invoke, o.complete));
                verdict.violations.push(Violation {
                    block,
                    reason,
                    history,
                });
            }
        }
    }
    verdict
}

enum BlockResult {
    Ok { ops: usize, steps: u64 },
    Violation { reason: String, history: Vec<Op> },
}

/// One block's history.
fn check_block(ops: &[Op], lost: bool) -> BlockResult {
    // Reads that break the contract on their own, whatever the order.
    let writes: BTreeMap<WriteId, &Op> = ops
        .iter()
        .filter_map(|o| match o.kind {
            OpKind::Write { id, .. } => Some((id, o)),
            OpKind::Read { .. } => None,
        })
        .collect();
    for op in ops {
        let OpKind::Read { outcome } = op.kind else {
            continue;
        };
        let lone = |reason: String, mut history: Vec<Op>| {
            history.push(op.clone());
            BlockResult::Violation { reason, history }
        };
        match outcome {
            ReadOutcome::Value(Observed::Garbage) => {
                return lone(
                    "a read returned bytes that are neither zeros nor any write's payload".into(),
                    Vec::new(),
                );
            }
            ReadOutcome::DataLoss if !lost => {
                return lone(
                    "a read answered DATA_LOSS on a block never recorded lost".into(),
                    Vec::new(),
                );
            }
            ReadOutcome::Value(Observed::Write(id)) => match writes.get(&id) {
                None => {
                    return lone(
                        format!("a read returned {id}, a payload never written to this block"),
                        Vec::new(),
                    );
                }
                Some(w) => {
                    if let OpKind::Write {
                        outcome: WriteOutcome::NotApplied,
                        ..
                    } = w.kind
                    {
                        return lone(
                            format!(
                                "a read returned {id}, a write the service answered was not applied"
                            ),
                            vec![(*w).clone()],
                        );
                    }
                }
            },
            _ => {}
        }
    }
    let (reduced, _) = reduce(ops);
    let mut steps = 0;
    if search(&reduced, &mut steps) {
        return BlockResult::Ok {
            ops: reduced.len(),
            steps,
        };
    }
    BlockResult::Violation {
        reason: "no order of the writes explains every read (stale or reordered value)".into(),
        history: shrink(ops),
    }
}

/// The operations the search needs: answered reads, and writes that may have applied (a
/// maybe-applied write only if some read saw it). Maybe-applied writes complete at infinity.
/// Also returns, for each kept op, its index in `ops`.
fn reduce(ops: &[Op]) -> (Vec<Op>, Vec<usize>) {
    let seen: HashSet<WriteId> = ops
        .iter()
        .filter_map(|o| match o.kind {
            OpKind::Read {
                outcome: ReadOutcome::Value(Observed::Write(id)),
            } => Some(id),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    let mut index = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let keep = match op.kind {
            OpKind::Read { outcome } => matches!(outcome, ReadOutcome::Value(_)),
            OpKind::Write { outcome, id } => match outcome {
                WriteOutcome::Applied => true,
                WriteOutcome::NotApplied => false,
                WriteOutcome::MaybeApplied => seen.contains(&id),
            },
        };
        if keep {
            let mut op = op.clone();
            if let OpKind::Write {
                outcome: WriteOutcome::MaybeApplied,
                ..
            } = op.kind
            {
                op.complete = Nanos::MAX;
            }
            out.push(op);
            index.push(i);
        }
    }
    (out, index)
}

/// The register's value in the search: 0 = zeros, otherwise 1 + the index of the write op.
type Value = u32;

/// The Wing–Gong search over `ops` (already reduced). True when a linearization exists.
fn search(ops: &[Op], steps: &mut u64) -> bool {
    let n = ops.len();
    if n == 0 {
        return true;
    }
    // What each op needs or sets: a write sets its own value; a read needs a value.
    let mut value_of_write: BTreeMap<WriteId, Value> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let OpKind::Write { id, .. } = op.kind {
            value_of_write.insert(id, i as Value + 1);
        }
    }
    // A read of a value no kept write produces can never be linearized.
    let needs: Vec<Option<Value>> = ops
        .iter()
        .map(|op| match op.kind {
            OpKind::Write { .. } => None,
            OpKind::Read { outcome } => Some(match outcome {
                ReadOutcome::Value(Observed::Write(id)) => {
                    value_of_write.get(&id).copied().unwrap_or(Value::MAX)
                }
                _ => 0,
            }),
        })
        .collect();

    // Events: (time, is_return, op). Calls sort before returns at equal times (concurrent).
    let mut events: Vec<(Nanos, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, false, i));
        if op.complete != Nanos::MAX {
            events.push((op.complete.max(op.invoke), true, i));
        }
    }
    events.sort();
    // A doubly linked list over the events, with sentinels `head` and `end`.
    let m = events.len();
    let (head, end) = (m, m + 1);
    let mut next = vec![end; m + 2];
    let mut prev = vec![head; m + 2];
    for i in 0..m {
        next[i] = if i + 1 < m { i + 1 } else { end };
        prev[i] = if i == 0 { head } else { i - 1 };
    }
    next[head] = if m > 0 { 0 } else { end };
    let mut return_of = vec![usize::MAX; n];
    for (e, &(_, is_return, op)) in events.iter().enumerate() {
        if is_return {
            return_of[op] = e;
        }
    }

    // The set of linearized ops is kept as a 128-bit Zobrist hash (the xor of a random key per
    // op): a collision could only prune a branch (a false violation, which the shrinking
    // re-checks), never accept a wrong history.
    let mut keys = Vec::with_capacity(n);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..n {
        keys.push(u128::from(splitmix(&mut x)) << 64 | u128::from(splitmix(&mut x)));
    }
    let mut linearized: u128 = 0;
    let mut cache: HashSet<(u128, Value)> = HashSet::new();
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut state: Value = 0;
    let mut entry = next[head];

    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, q) = (prev[e], next[e]);
        next[p] = q;
        if q != end {
            prev[q] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, q) = (prev[e], next[e]);
        next[p] = e;
        if q != end {
            prev[q] = e;
        }
    };

    loop {
        if entry == end {
            // Only calls of maybe-applied writes are left: leave them out.
            return true;
        }
        let (_, is_return, op) = events[entry];
        if !is_return {
            *steps += 1;
            let new_state = match needs[op] {
                None => Some(op as Value + 1),
                Some(v) if v == state => Some(state),
                Some(_) => None,
            };
            if let Some(new_state) = new_state {
                linearized ^= keys[op];
                if cache.insert((linearized, new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    unlink(&mut next, &mut prev, entry);
                    if return_of[op] != usize::MAX {
                        unlink(&mut next, &mut prev, return_of[op]);
                    }
                    entry = next[head];
                    continue;
                }
                linearized ^= keys[op];
            }
            entry = next[entry];
        } else {
            // The return of an op not yet placed: undo the last choice.
            let Some((call, old_state)) = stack.pop() else {
                return false;
            };
            let op = events[call].2;
            linearized ^= keys[op];
            state = old_state;
            if return_of[op] != usize::MAX {
                relink(&mut next, &mut prev, return_of[op]);
            }
            relink(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
}

/// The splitmix64 step: the search's per-op keys.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether `ops` (one block, unreduced) has a linearization.
fn linearizable(ops: &[Op]) -> bool {
    let (reduced, _) = reduce(ops);
    search(&reduced, &mut 0)
}

/// The history as it stood at time `t`: operations invoked by then; one still running is a
/// maybe-applied write or an unanswered read (dropped).
fn prefix_at(ops: &[Op], t: Nanos) -> Vec<Op> {
    ops.iter()
        .filter(|o| o.invoke <= t)
        .filter_map(|o| {
            if o.complete <= t {
                return Some(o.clone());
            }
            match o.kind {
                OpKind::Read { .. } => None,
                OpKind::Write { id, outcome } => {
                    if outcome == WriteOutcome::NotApplied {
                        return None;
                    }
                    Some(Op {
                        kind: OpKind::Write {
                            id,
                            outcome: WriteOutcome::MaybeApplied,
                        },
                        complete: Nanos::MAX,
                        error: "(still running at the cut)".into(),
                        ..o.clone()
                    })
                }
            }
        })
        .collect()
}

/// Most sub-histories the shrinking checks.
const SHRINK_CHECKS: usize = 400;

/// `ops` without those marked in `remove`, and without the reads that saw a removed write.
/// Both removals keep a linearizable history linearizable, so a result that is not
/// linearizable proves that `ops` is not either.
fn without(ops: &[Op], remove: &[bool]) -> Vec<Op> {
    let gone: HashSet<WriteId> = ops
        .iter()
        .zip(remove)
        .filter_map(|(o, &r)| match o.kind {
            OpKind::Write { id, .. } if r => Some(id),
            _ => None,
        })
        .collect();
    ops.iter()
        .zip(remove)
        .filter(|&(o, &r)| {
            !r && match o.kind {
                OpKind::Read {
                    outcome: ReadOutcome::Value(Observed::Write(id)),
                } => !gone.contains(&id),
                _ => true,
            }
        })
        .map(|(o, _)| o.clone())
        .collect()
}

/// A small history that is already not linearizable: the shortest time prefix, then the latest
/// window start that keeps it so, then delta debugging over what is left (drop chunks of
/// halving size while the rest still fails).
fn shrink(ops: &[Op]) -> Vec<Op> {
    let mut times: Vec<Nanos> = ops
        .iter()
        .flat_map(|o| [o.invoke, o.complete])
        .filter(|&t| t != Nanos::MAX)
        .collect();
    times.sort_unstable();
    times.dedup();
    if times.is_empty() {
        return ops.to_vec();
    }
    let fails = |h: &[Op]| !linearizable(h);
    // The smallest cut that fails (failure only grows with the cut).
    let (mut lo, mut hi) = (0usize, times.len() - 1);
    if !fails(&prefix_at(ops, times[hi])) {
        return ops.to_vec();
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&prefix_at(ops, times[mid])) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut current = prefix_at(ops, times[hi]);
    // Drop everything that completed before a start time, as late a start as still fails (a
    // binary search; each accepted step was checked).
    let (mut lo, mut hi) = (0usize, times.len() - 1);
    let mut checks = 0;
    while lo < hi && checks < SHRINK_CHECKS {
        checks += 1;
        let mid = (lo + hi).div_ceil(2);
        let remove: Vec<bool> = current.iter().map(|o| o.complete < times[mid]).collect();
        let candidate = without(&current, &remove);
        if fails(&candidate) {
            current = candidate;
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut chunk = current.len().div_ceil(2).max(1);
    while checks < SHRINK_CHECKS {
        let mut start = 0;
        while start < current.len() && checks < SHRINK_CHECKS {
            checks += 1;
            let remove: Vec<bool> = (0..current.len())
                .map(|i| i >= start && i < start + chunk)
                .collect();
            let candidate = without(&current, &remove);
            if fails(&candidate) {
                current = candidate;
            } else {
                start += chunk;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    current
}

#[cfg(test)]
mod tests;
