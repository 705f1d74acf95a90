//! A component wrapper that records every call and injects faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};

use crate::dag::Mnemonic;
use crate::engine::{IssuingNode, issuing_node};
use crate::io::{ComponentIo, IoError, IoErrorKind};

/// Kind of component call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoOp {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `flush`.
    Flush,
    /// `fence`.
    Fence,
    /// `read_log`: matched only by a trigger that names it ([`Trigger::op`]), and not recorded
    /// in the [`IoLog`] (which holds block calls).
    ReadLog,
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoRecord {
    /// Position in the log (shared by every component using the log): the order of issue.
    pub seq: u64,
    /// [`ComponentIo::id`] of the component.
    pub component: String,
    /// Call kind.
    pub op: IoOp,
    /// First block.
    pub start_block: u64,
    /// Blocks.
    pub block_count: u64,
    /// The DAG node that issued the call, if the engine did.
    pub issuer: Option<IssuingNode>,
    /// Name of the injected fault, if any.
    pub fault: Option<&'static str>,
    /// How the call ended, once it did (`None`: still pending, or abandoned by its caller).
    pub result: Option<Result<(), IoErrorKind>>,
    /// A write applied after its caller was told it timed out ([`Fault::LateApply`]).
    pub late_apply: bool,
}

#[derive(Debug, Default)]
struct LogInner {
    records: Mutex<Vec<IoRecord>>,
    changed: Notify,
}

/// A log of component calls, shared by the components of a test.
#[derive(Debug, Clone, Default)]
pub struct IoLog {
    inner: Arc<LogInner>,
}

impl IoLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every record so far, in issue order.
    pub fn records(&self) -> Vec<IoRecord> {
        self.lock().clone()
    }

    /// The write calls issued by DAG nodes (late applications excluded).
    pub fn writes(&self) -> Vec<IoRecord> {
        self.lock()
            .iter()
            .filter(|r| r.op == IoOp::Write && !r.late_apply)
            .cloned()
            .collect()
    }

    /// Forgets every record.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Waits until `pred` holds over the records (checked now and after every change).
    pub async fn wait_until(&self, pred: impl Fn(&[IoRecord]) -> bool) {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pred(&self.lock()) {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IoRecord>> {
        self.inner.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, mut record: IoRecord) -> u64 {
        let seq = {
            let mut records = self.lock();
            record.seq = records.len() as u64;
            records.push(record);
            records.len() as u64 - 1
        };
        self.inner.changed.notify_waiters();
        seq
    }

    fn complete(&self, seq: u64, result: Result<(), IoErrorKind>) {
        if let Some(r) = self.lock().get_mut(seq as usize) {
            r.result = Some(result);
        }
        self.inner.changed.notify_waiters();
    }
}

/// A latch a test opens to release held calls.
#[derive(Debug, Clone)]
pub struct Gate {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Gate {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Opens the gate for good.
    pub fn open(&self) {
        self.tx.send_replace(true);
    }

    async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so this only returns once the gate is open.
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// What an injected fault does to a call it matches.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this error kind at once; storage is not touched.
    Fail(IoErrorKind),
    /// Never answer: only the caller's deadline ends the call.
    Hang,
    /// Hold the call until the gate opens, then perform it normally.
    HoldUntil(Gate),
    /// Perform the call normally after a delay.
    Delay(Duration),
    /// Succeed, but flip the first byte: of the data returned (read) or stored (write).
    Corrupt,
    /// Answer `Timeout` at once, and apply the write when the gate opens (reads and flushes just
    /// time out). Models a write that reached the node after its caller gave up; like the
    /// storage node, the component refuses it (result `Fenced`, not applied) when it was fenced
    /// ([`ComponentIo::fence`]) after the write was issued.
    LateApply(Gate),
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Fault::Fail(_) => "fail",
            Fault::Hang => "hang",
            Fault::HoldUntil(_) => "hold",
            Fault::Delay(_) => "delay",
            Fault::Corrupt => "corrupt",
            Fault::LateApply(_) => "late_apply",
        }
    }
}

/// Which calls a fault applies to. All given conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    nth: Option<u64>,
    op: Option<IoOp>,
    mnemonic: Option<Mnemonic>,
    start_block: Option<u64>,
    times: Option<u32>,
}

impl Trigger {
    /// Every call.
    pub fn always() -> Self {
        Self::default()
    }

    /// The `n`th call on the component, counting every kind from 1.
    pub fn nth(n: u64) -> Self {
        Trigger {
            nth: Some(n),
            ..Self::default()
        }
    }

    /// Calls issued by a DAG node with this mnemonic (the component names the column).
    pub fn node(mnemonic: Mnemonic) -> Self {
        Trigger {
            mnemonic: Some(mnemonic),
            ..Self::default()
        }
    }

    /// Only calls of kind `op`.
    pub fn op(mut self, op: IoOp) -> Self {
        self.op = Some(op);
        self
    }

    /// Only calls starting at `block`.
    pub fn at_block(mut self, block: u64) -> Self {
        self.start_block = Some(block);
        self
    }

    /// At most `n` matching calls (default: all).
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, call: u64, op: IoOp, start_block: u64, issuer: Option<&IssuingNode>) -> bool {
        self.nth.is_none_or(|n| n == call)
            && self.op.is_none_or(|o| o == op)
            && self.start_block.is_none_or(|b| b == start_block)
            && self
                .mnemonic
                .is_none_or(|m| issuer.is_some_and(|i| i.mnemonic == m))
    }
}

#[derive(Debug)]
struct Rule {
    trigger: Trigger,
    fault: Fault,
    remaining: Option<u32>,
}

/// Wraps a component: records every call in an [`IoLog`] and injects [`Fault`]s.
#[derive(Debug)]
pub struct FaultyComponent {
    inner: Arc<dyn ComponentIo>,
    log: IoLog,
    rules: Mutex<Vec<Rule>>,
    calls: AtomicU64,
    /// Fences so far: a late write issued before a fence is refused.
    fences: Arc<AtomicU64>,
}

impl FaultyComponent {
    /// Wraps `inner`, logging into `log`.
    pub fn new(inner: Arc<dyn ComponentIo>, log: IoLog) -> Arc<Self> {
        Arc::new(FaultyComponent {
            inner,
            log,
            rules: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            fences: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Adds a fault; the first matching rule (in injection order) applies to a call.
    pub fn inject(&self, trigger: Trigger, fault: Fault) {
        let remaining = trigger.times;
        self.lock_rules().push(Rule {
            trigger,
            fault,
            remaining,
        });
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.lock_rules().clear();
    }

    /// The log this component records into.
    pub fn log(&self) -> &IoLog {
        &self.log
    }

    fn lock_rules(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts, matches and logs a call.
    fn begin(&self, op: IoOp, start_block: u64, block_count: u64) -> (u64, Option<Fault>) {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let issuer = issuing_node();
        let fault = {
            let mut rules = self.lock_rules();
            rules
                .iter_mut()
                .find(|r| {
                    r.remaining != Some(0)
                        && r.trigger.matches(call, op, start_block, issuer.as_ref())
                })
                .map(|r| {
                    if let Some(n) = r.remaining.as_mut() {
                        *n -= 1;
                    }
                    r.fault.clone()
                })
        };
        let seq = self.log.push(IoRecord {
            seq: 0,
            component: self.inner.id().to_owned(),
            op,
            start_block,
            block_count,
            issuer,
            fault: fault.as_ref().map(Fault::name),
            result: None,
            late_apply: false,
        });
        (seq, fault)
    }

    fn injected(&self, kind: IoErrorKind, start_block: u64, block_count: u64) -> IoError {
        IoError::new(
            kind,
            self.inner.id(),
            start_block,
            block_count,
            "injected fault",
        )
    }

    fn end<T>(&self, seq: u64, r: &Result<T, IoError>) {
        self.log
            .complete(seq, r.as_ref().map(|_| ()).map_err(|e| e.kind.clone()));
    }
}

fn flip_first(data: &[u8]) -> Bytes {
    let mut v = data.to_vec();
    if let Some(b) = v.first_mut() {
        *b ^= 0xff;
    }
    Bytes::from(v)
}

impl ComponentIo for FaultyComponent {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn log_bytes(&self) -> u64 {
        self.inner.log_bytes()
    }

    fn write_log(&self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<(), IoError>> {
        self.inner.write_log(offset, data)
    }

    fn read_log(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Bytes, IoError>> {
        let fault = {
            let mut rules = self.lock_rules();
            rules
                .iter_mut()
                .find(|r| {
                    r.remaining != Some(0)
                        && r.trigger.op == Some(IoOp::ReadLog)
                        && r.trigger.matches(0, IoOp::ReadLog, offset, None)
                })
                .map(|r| {
                    if let Some(n) = r.remaining.as_mut() {
                        *n -= 1;
                    }
                    r.fault.clone()
                })
        };
        Box::pin(async move {
            match fault {
                Some(Fault::Fail(kind)) => Err(self.injected(kind, offset, u64::from(len))),
                Some(Fault::Hang) => std::future::pending().await,
                _ => self.inner.read_log(offset, len).await,
            }
        })
    }

    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }

    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }

    fn read(&self, start_block: u64, block_count: u32) -> BoxFuture<'_, Result<Bytes, IoError>> {
        let count = u64::from(block_count);
        let (seq, fault) = self.begin(IoOp::Read, start_block, count);
        Box::pin(async move {
            let r = match fault {
                None => self.inner.read(start_block, block_count).await,
                Some(Fault::Fail(kind)) => Err(self.injected(kind, start_block, count)),
                Some(Fault::Hang) => std::future::pending().await,
                Some(Fault::HoldUntil(gate)) => {
                    gate.wait().await;
                    self.inner.read(start_block, block_count).await
                }
                Some(Fault::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    self.inner.read(start_block, block_count).await
                }
                Some(Fault::Corrupt) => self
                    .inner
                    .read(start_block, block_count)
                    .await
                    .map(|b| flip_first(&b)),
                Some(Fault::LateApply(_)) => {
                    Err(self.injected(IoErrorKind::Timeout, start_block, count))
                }
            };
            self.end(seq, &r);
            r
        })
    }

    fn write(&self, start_block: u64, data: Bytes) -> BoxFuture<'_, Result<(), IoError>> {
        let bs = u64::from(self.inner.block_size().max(1));
        let count = data.len() as u64 / bs;
        let (seq, fault) = self.begin(IoOp::Write, start_block, count);
        Box::pin(async move {
            let r = match fault {
                None => self.inner.write(start_block, data).await,
                Some(Fault::Fail(kind)) => Err(self.injected(kind, start_block, count)),
                Some(Fault::Hang) => std::future::pending().await,
                Some(Fault::HoldUntil(gate)) => {
                    gate.wait().await;
                    self.inner.write(start_block, data).await
                }
                Some(Fault::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    self.inner.write(start_block, data).await
                }
                Some(Fault::Corrupt) => self.inner.write(start_block, flip_first(&data)).await,
                Some(Fault::LateApply(gate)) => {
                    let inner = self.inner.clone();
                    let log = self.log.clone();
                    let fences = self.fences.clone();
                    let issued_under = fences.load(Ordering::Acquire);
                    tokio::spawn(async move {
                        gate.wait().await;
                        let r = if fences.load(Ordering::Acquire) == issued_under {
                            inner.write(start_block, data).await
                        } else {
                            Err(IoError::new(
                                IoErrorKind::Fenced,
                                inner.id(),
                                start_block,
                                count,
                                "a late write issued before a fence",
                            ))
                        };
                        let seq = log.push(IoRecord {
                            seq: 0,
                            component: inner.id().to_owned(),
                            op: IoOp::Write,
                            start_block,
                            block_count: count,
                            issuer: None,
                            fault: Some("late_apply"),
                            result: None,
                            late_apply: true,
                        });
                        log.complete(seq, r.map_err(|e| e.kind));
                    });
                    Err(self.injected(IoErrorKind::Timeout, start_block, count))
                }
            };
            self.end(seq, &r);
            r
        })
    }

    fn fence(&self) -> BoxFuture<'_, Result<(), IoError>> {
        let (seq, fault) = self.begin(IoOp::Fence, 0, 0);
        Box::pin(async move {
            let r = match fault {
                None | Some(Fault::Corrupt) => self.inner.fence().await,
                Some(Fault::Fail(kind)) => Err(self.injected(kind, 0, 0)),
                Some(Fault::Hang) => std::future::pending().await,
                Some(Fault::HoldUntil(gate)) => {
                    gate.wait().await;
                    self.inner.fence().await
                }
                Some(Fault::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    self.inner.fence().await
                }
                Some(Fault::LateApply(_)) => Err(self.injected(IoErrorKind::Timeout, 0, 0)),
            };
            if r.is_ok() {
                self.fences.fetch_add(1, Ordering::AcqRel);
            }
            self.end(seq, &r);
            r
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), IoError>> {
        let (seq, fault) = self.begin(IoOp::Flush, 0, 0);
        Box::pin(async move {
            let r = match fault {
                None | Some(Fault::Corrupt) => self.inner.flush().await,
                Some(Fault::Fail(kind)) => Err(self.injected(kind, 0, 0)),
                Some(Fault::Hang) => std::future::pending().await,
                Some(Fault::HoldUntil(gate)) => {
                    gate.wait().await;
                    self.inner.flush().await
                }
                Some(Fault::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    self.inner.flush().await
                }
                Some(Fault::LateApply(_)) => Err(self.injected(IoErrorKind::Timeout, 0, 0)),
            };
            self.end(seq, &r);
            r
        })
    }
}
