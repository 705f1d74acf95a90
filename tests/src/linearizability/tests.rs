use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const MS: Nanos = 1_000_000;

fn w(client: u32, seq: u64, invoke: u64, complete: u64, outcome: WriteOutcome) -> Op {
    Op {
        client,
        block: 7,
        invoke: invoke * MS,
        complete: complete * MS,
        kind: OpKind::Write {
            id: WriteId { client, seq },
            outcome,
        },
        error: String::new(),
    }
}

fn ok(client: u32, seq: u64, invoke: u64, complete: u64) -> Op {
    w(client, seq, invoke, complete, WriteOutcome::Applied)
}

fn maybe(client: u32, seq: u64, invoke: u64, complete: u64) -> Op {
    w(client, seq, invoke, complete, WriteOutcome::MaybeApplied)
}

fn r(client: u32, invoke: u64, complete: u64, outcome: ReadOutcome) -> Op {
    Op {
        client,
        block: 7,
        invoke: invoke * MS,
        complete: complete * MS,
        kind: OpKind::Read { outcome },
        error: String::new(),
    }
}

fn saw(client: u32, invoke: u64, complete: u64, writer: u32, seq: u64) -> Op {
    r(
        client,
        invoke,
        complete,
        ReadOutcome::Value(Observed::Write(WriteId {
            client: writer,
            seq,
        })),
    )
}

fn zeros(client: u32, invoke: u64, complete: u64) -> Op {
    r(
        client,
        invoke,
        complete,
        ReadOutcome::Value(Observed::Initial),
    )
}

fn verdict(ops: &[Op]) -> Verdict {
    check(ops, &BTreeSet::new())
}

#[test]
fn sequential_history_is_linearizable() {
    let h = [
        zeros(1, 0, 1),
        ok(1, 1, 2, 3),
        saw(2, 4, 5, 1, 1),
        ok(2, 1, 6, 7),
        saw(1, 8, 9, 2, 1),
    ];
    let v = verdict(&h);
    assert!(v.is_linearizable(), "{:?}", v.violations);
    assert_eq!(v.ops, 5);
}

#[test]
fn stale_read_after_a_completed_write_is_a_violation() {
    let h = [ok(1, 1, 0, 1), ok(1, 2, 2, 3), saw(2, 4, 5, 1, 1)];
    let v = verdict(&h);
    assert_eq!(v.violations.len(), 1);
    let text = v.violations[0].to_string();
    assert!(text.contains("no order"), "{text}");
}

#[test]
fn zeros_after_a_completed_write_is_a_violation() {
    let h = [ok(1, 1, 0, 1), zeros(2, 2, 3)];
    assert!(!verdict(&h).is_linearizable());
}

#[test]
fn a_read_of_a_value_never_written_is_a_violation() {
    let h = [ok(1, 1, 0, 1), saw(2, 2, 3, 3, 9)];
    let v = verdict(&h);
    assert_eq!(v.violations.len(), 1);
    assert!(
        v.violations[0].reason.contains("never written"),
        "{}",
        v.violations[0]
    );
    let garbage = [r(2, 2, 3, ReadOutcome::Value(Observed::Garbage))];
    let v = verdict(&garbage);
    assert!(v.violations[0].reason.contains("neither zeros"));
}

#[test]
fn a_read_seeing_a_write_before_its_invoke_is_a_violation() {
    let h = [saw(2, 0, 1, 1, 1), ok(1, 1, 2, 3)];
    assert!(!verdict(&h).is_linearizable());
}

#[test]
fn concurrent_writes_read_in_either_order_are_fine() {
    // Two overlapping writes; later reads agree on one of them.
    for (first, second) in [(1, 2), (2, 1)] {
        let h = [
            ok(1, 1, 0, 10),
            ok(2, 1, 1, 11),
            saw(3, 12, 13, first, 1),
            saw(3, 14, 15, first, 1),
        ];
        assert!(verdict(&h).is_linearizable(), "last {first}");
        // Reads during the writes may see one, then the other.
        let h = [
            ok(1, 1, 0, 10),
            ok(2, 1, 1, 11),
            saw(3, 2, 3, first, 1),
            saw(3, 4, 5, second, 1),
            saw(3, 12, 13, second, 1),
        ];
        assert!(verdict(&h).is_linearizable(), "{first} then {second}");
    }
}

#[test]
fn flip_flopping_between_two_completed_writes_is_a_violation() {
    let h = [
        ok(1, 1, 0, 10),
        ok(2, 1, 1, 11),
        saw(3, 12, 13, 1, 1),
        saw(3, 14, 15, 2, 1),
    ];
    assert!(!verdict(&h).is_linearizable());
}

#[test]
fn a_maybe_applied_write_seen_late_is_fine() {
    // The write timed out at 5 ms; it lands much later.
    let h = [
        ok(1, 1, 0, 1),
        maybe(2, 1, 2, 5),
        saw(3, 6, 7, 1, 1),
        saw(3, 100, 101, 2, 1),
        saw(3, 102, 103, 2, 1),
    ];
    let v = verdict(&h);
    assert!(v.is_linearizable(), "{:?}", v.violations);
    // And one never seen is left out.
    let h = [ok(1, 1, 0, 1), maybe(2, 1, 2, 5), saw(3, 6, 7, 1, 1)];
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn a_maybe_applied_write_seen_then_unseen_is_a_violation() {
    let h = [
        ok(1, 1, 0, 1),
        maybe(2, 1, 2, 5),
        saw(3, 6, 7, 2, 1),
        saw(3, 8, 9, 1, 1),
    ];
    assert!(!verdict(&h).is_linearizable());
}

#[test]
fn a_write_answered_not_applied_must_not_be_seen() {
    let h = [w(1, 1, 0, 1, WriteOutcome::NotApplied), saw(2, 2, 3, 1, 1)];
    let v = verdict(&h);
    assert_eq!(v.violations.len(), 1);
    assert!(v.violations[0].reason.contains("not applied"));
    // Nor may it hide a write before it.
    let h = [
        ok(1, 1, 0, 1),
        w(1, 2, 2, 3, WriteOutcome::NotApplied),
        saw(2, 4, 5, 1, 1),
    ];
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn data_loss_is_legal_only_on_a_lost_block() {
    let h = [ok(1, 1, 0, 1), r(2, 2, 3, ReadOutcome::DataLoss)];
    let v = verdict(&h);
    assert_eq!(v.violations.len(), 1);
    assert!(v.violations[0].reason.contains("DATA_LOSS"));
    let lost = BTreeSet::from([7]);
    assert!(check(&h, &lost).is_linearizable());
}

#[test]
fn failed_reads_say_nothing() {
    let h = [ok(1, 1, 0, 1), r(2, 2, 3, ReadOutcome::Failed)];
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn blocks_are_checked_apart() {
    let mut other = ok(1, 1, 0, 1);
    other.block = 8;
    // Block 7 reads zeros although block 8 was written: fine.
    let h = [other, zeros(2, 2, 3)];
    let v = verdict(&h);
    assert!(v.is_linearizable());
    assert_eq!(v.blocks, 2);
}

#[test]
fn the_counterexample_is_small() {
    // A long clean history, then one stale read.
    let mut h = Vec::new();
    let mut t = 0;
    for seq in 1..=300 {
        h.push(ok(1, seq, t, t + 2));
        h.push(saw(2, t + 3, t + 4, 1, seq));
        t += 5;
    }
    h.push(saw(2, t, t + 1, 1, 299));
    let v = verdict(&h);
    assert_eq!(v.violations.len(), 1);
    let cx = &v.violations[0].history;
    assert!(cx.len() <= 3, "{}", v.violations[0]);
    // It names the write that made the read stale.
    assert!(
        cx.iter().any(|o| o.kind
            == OpKind::Write {
                id: WriteId {
                    client: 1,
                    seq: 300
                },
                outcome: WriteOutcome::Applied
            }),
        "{}",
        v.violations[0]
    );
    let table = v.violations[0].to_string();
    assert!(
        table.contains("w1.300") && table.contains("w1.299"),
        "{table}"
    );
}

/// A linearizable history of `clients` clients doing `per_client` operations each on one
/// block, with overlapping intervals and a few maybe-applied writes: each op takes effect at a
/// random instant inside its interval, and reads return the value at that instant.
fn random_history(seed: u64, clients: u32, per_client: usize) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed);
    // (effect time, client, invoke, complete, is_write, seq, maybe)
    let mut planned = Vec::new();
    for c in 0..clients {
        let mut t: u64 = rng.random_range(0..1000);
        for seq in 1..=per_client as u64 {
            let invoke = t;
            let len = rng.random_range(1..2000u64);
            let complete = invoke + len;
            let effect = rng.random_range(invoke..complete);
            let is_write = rng.random_bool(0.5);
            let maybe = is_write && rng.random_bool(0.03);
            planned.push((effect, c, invoke, complete, is_write, seq, maybe));
            t = complete + rng.random_range(1..500);
        }
    }
    planned.sort();
    let mut value = Observed::Initial;
    let mut ops = Vec::new();
    for (_, c, invoke, complete, is_write, seq, maybe) in planned {
        let kind = if is_write {
            let id = WriteId { client: c, seq };
            value = Observed::Write(id);
            OpKind::Write {
                id,
                outcome: if maybe {
                    WriteOutcome::MaybeApplied
                } else {
                    WriteOutcome::Applied
                },
            }
        } else {
            OpKind::Read {
                outcome: ReadOutcome::Value(value),
            }
        };
        ops.push(Op {
            client: c,
            block: 3,
            invoke,
            complete,
            kind,
            error: String::new(),
        });
    }
    ops
}

#[test]
fn the_search_stays_linear_on_thousands_of_operations_per_block() {
    for seed in 0..3 {
        let h = random_history(seed, 8, 500);
        let v = verdict(&h);
        assert!(v.is_linearizable(), "seed {seed}: {}", v.violations[0]);
        assert!(v.ops > 3900, "{}", v.ops);
        // The work is deterministic: calls tried, a small multiple of the operations.
        assert!(
            v.steps < 100 * h.len() as u64,
            "seed {seed}: {} steps for {} ops",
            v.steps,
            h.len()
        );
    }
}

#[test]
fn a_fault_in_a_long_random_history_is_found_and_shrunk() {
    let mut h = random_history(42, 8, 500);
    // Make one completed read late in the history return the initial zeros.
    let i = h
        .iter()
        .rposition(|o| {
            matches!(
                o.kind,
                OpKind::Read {
                    outcome: ReadOutcome::Value(Observed::Write(_))
                }
            )
        })
        .unwrap();
    h[i].kind = OpKind::Read {
        outcome: ReadOutcome::Value(Observed::Initial),
    };
    let v = verdict(&h);
    assert_eq!(v.violations.len(), 1);
    assert!(v.violations[0].history.len() <= 4, "{}", v.violations[0]);
}

#[test]
fn write_answers_follow_the_contract() {
    let msg = || "m".to_owned();
    assert_eq!(classify_write(&Ok(()), true), WriteOutcome::Applied);
    for err in [
        ClientError::Unrecoverable { message: msg() },
        ClientError::Overloaded { message: msg() },
        ClientError::NotAssembled { message: msg() },
    ] {
        assert_eq!(
            classify_write(&Err(err.clone()), true),
            WriteOutcome::NotApplied
        );
        // A call over several stripes may have applied the stripes before the failed one.
        assert_eq!(classify_write(&Err(err), false), WriteOutcome::MaybeApplied);
    }
    for err in [
        ClientError::TornWrite { message: msg() },
        ClientError::Timeout { message: msg() },
        ClientError::Transport { message: msg() },
        ClientError::StateNotRecorded { message: msg() },
        ClientError::Fenced { message: msg() },
        ClientError::Internal { message: msg() },
        ClientError::Other {
            code: tonic::Code::FailedPrecondition,
            message: msg(),
        },
    ] {
        assert_eq!(classify_write(&Err(err), true), WriteOutcome::MaybeApplied);
    }
    assert_eq!(
        classify_read(&ClientError::Unreadable { message: msg() }),
        ReadOutcome::DataLoss
    );
    assert_eq!(
        classify_read(&ClientError::Timeout { message: msg() }),
        ReadOutcome::Failed
    );
}
