//! Tests of the test components: they must do exactly what a test asks, or engine tests lie.

use std::sync::Arc;

use bytes::Bytes;

use super::*;

fn rig() -> (Arc<MemComponent>, Arc<FaultyComponent>, IoLog) {
    let mem = MemComponent::filled("m", 8, 4, |b| b as u8);
    let log = IoLog::new();
    let f = FaultyComponent::new(mem.clone() as Arc<dyn ComponentIo>, log.clone());
    (mem, f, log)
}

#[tokio::test]
async fn memory_component_reads_writes_and_refuses_bad_ranges() {
    let (mem, f, _) = rig();
    assert_eq!(
        f.read(1, 2).await.unwrap().as_ref(),
        &[1u8; 8]
            .iter()
            .chain(&[2u8; 8])
            .copied()
            .collect::<Vec<_>>()[..]
    );
    f.write(3, Bytes::from(vec![9u8; 8])).await.unwrap();
    assert_eq!(mem.peek(3, 1), vec![9u8; 8]);
    assert_eq!(
        f.read(3, 2).await.unwrap_err().kind,
        IoErrorKind::OutOfRange
    );
    assert_eq!(
        f.read(u64::MAX, 1).await.unwrap_err().kind,
        IoErrorKind::OutOfRange
    );
    let e = f.write(0, Bytes::from(vec![0u8; 5])).await.unwrap_err();
    assert_eq!(e.kind, IoErrorKind::InvalidRequest);
    assert_eq!(
        mem.peek(0, 1),
        vec![0u8; 8],
        "a refused write changes nothing"
    );
    f.flush().await.unwrap();
}

#[tokio::test]
async fn nth_call_and_times_select_the_faulted_calls() {
    let (_, f, log) = rig();
    f.inject(Trigger::nth(2), Fault::Fail(IoErrorKind::Unavailable));
    f.inject(
        Trigger::always().op(IoOp::Write).times(1),
        Fault::Fail(IoErrorKind::Fenced),
    );
    assert!(f.read(0, 1).await.is_ok());
    assert_eq!(
        f.read(0, 1).await.unwrap_err().kind,
        IoErrorKind::Unavailable
    );
    assert!(f.read(0, 1).await.is_ok());
    assert_eq!(
        f.write(0, Bytes::from(vec![1u8; 8]))
            .await
            .unwrap_err()
            .kind,
        IoErrorKind::Fenced
    );
    assert!(f.write(0, Bytes::from(vec![1u8; 8])).await.is_ok());
    let faults: Vec<_> = log.records().iter().map(|r| r.fault).collect();
    assert_eq!(faults, vec![None, Some("fail"), None, Some("fail"), None]);
    assert_eq!(log.writes().len(), 2);
    f.clear();
    assert!(f.read(0, 1).await.is_ok());
}

#[tokio::test]
async fn corrupt_flips_data_read_and_written() {
    let (mem, f, _) = rig();
    f.inject(Trigger::always().at_block(2), Fault::Corrupt);
    let r = f.read(2, 1).await.unwrap();
    assert_eq!(r[0], 2 ^ 0xff);
    assert_eq!(&r[1..], &[2u8; 7]);
    f.write(2, Bytes::from(vec![5u8; 8])).await.unwrap();
    assert_eq!(mem.peek(2, 1)[0], 5 ^ 0xff);
    assert_eq!(
        f.read(1, 1).await.unwrap()[0],
        1,
        "other blocks are untouched"
    );
}

#[tokio::test]
async fn hold_until_and_late_apply() {
    let (mem, f, log) = rig();
    let gate = Gate::new();
    f.inject(
        Trigger::always().op(IoOp::Read).times(1),
        Fault::HoldUntil(gate.clone()),
    );
    let held = tokio::spawn({
        let f = f.clone();
        async move { f.read(1, 1).await }
    });
    log.wait_until(|r| r.len() == 1).await;
    assert!(log.records()[0].result.is_none());
    gate.open();
    assert_eq!(held.await.unwrap().unwrap()[0], 1);

    let late = Gate::new();
    f.inject(
        Trigger::always().op(IoOp::Write),
        Fault::LateApply(late.clone()),
    );
    let e = f.write(0, Bytes::from(vec![7u8; 8])).await.unwrap_err();
    assert_eq!(e.kind, IoErrorKind::Timeout);
    assert_eq!(mem.peek(0, 1), vec![0u8; 8], "not applied yet");
    late.open();
    log.wait_until(|r| r.iter().any(|r| r.late_apply && r.result == Some(Ok(()))))
        .await;
    assert_eq!(mem.peek(0, 1), vec![7u8; 8]);
}

#[tokio::test(start_paused = true)]
async fn hang_never_answers() {
    let (_, f, _) = rig();
    f.inject(Trigger::always(), Fault::Hang);
    let r = tokio::time::timeout(std::time::Duration::from_secs(3600), f.read(0, 1)).await;
    assert!(r.is_err());
}
