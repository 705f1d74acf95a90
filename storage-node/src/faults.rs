//! Fault injection for tests: fail, delay, hang or late-apply the next operations of a component.
//!
//! Only active when the node was started with `--fault-injection`; otherwise injecting is refused.
//! Faults are consulted before an operation is admitted, so a late-applied write meets fencing at
//! the moment it is finally applied.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::error::NodeError;

/// Which operations a fault matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOps {
    /// Every operation.
    Any,
    /// ReadBlocks, ReadSlot and ReadLog.
    Read,
    /// WriteBlocks, WriteSlot and WriteLog.
    Write,
    /// Flush.
    Flush,
    /// WriteBlocks only.
    BlockWrite,
    /// ReadLog only.
    LogRead,
}

/// The operation being checked against the faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A read of blocks or of a slot.
    Read,
    /// A read of the log area.
    LogRead,
    /// A write of a slot or of the log area.
    Write,
    /// A write of blocks.
    BlockWrite,
    /// A flush.
    Flush,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer this code without touching the disk.
    Fail(Code),
    /// Wait, then run normally.
    Delay(Duration),
    /// Do not answer until the component's faults are cleared (then run normally).
    Hang,
    /// Answer DEADLINE_EXCEEDED at once and apply a write after the delay.
    LateApply(Duration),
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    /// What it does.
    pub action: FaultAction,
    /// What it matches.
    pub ops: FaultOps,
    /// Matching operations left; `None` until cleared.
    pub remaining: Option<u32>,
}

/// The faults of every component of a node.
pub struct FaultRegistry {
    enabled: bool,
    faults: Mutex<HashMap<String, Vec<Fault>>>,
    /// Clear generations, to release hung operations.
    generations: Mutex<HashMap<String, u64>>,
    cleared: watch::Sender<u64>,
}

impl FaultRegistry {
    /// A registry; when `enabled` is false it refuses injections and never matches.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            faults: Mutex::new(HashMap::new()),
            generations: Mutex::new(HashMap::new()),
            cleared: watch::channel(0).0,
        }
    }

    /// Whether fault injection is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn faults(&self) -> MutexGuard<'_, HashMap<String, Vec<Fault>>> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn generations(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.generations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a fault to `component`.
    pub fn inject(&self, component: &str, fault: Fault) -> Result<(), NodeError> {
        if !self.enabled {
            return Err(NodeError::FaultInjectionDisabled);
        }
        self.faults()
            .entry(component.to_owned())
            .or_default()
            .push(fault);
        Ok(())
    }

    /// Removes the faults of `component`, or of every component, and releases hung operations.
    pub fn clear(&self, component: Option<&str>) -> Result<(), NodeError> {
        if !self.enabled {
            return Err(NodeError::FaultInjectionDisabled);
        }
        self.forget(component);
        Ok(())
    }

    /// Like [`FaultRegistry::clear`], also when disabled (component deletion).
    pub fn forget(&self, component: Option<&str>) {
        let mut generations = self.generations();
        match component {
            Some(id) => {
                self.faults().remove(id);
                *generations.entry(id.to_owned()).or_default() += 1;
            }
            None => {
                let ids: Vec<String> = self.faults().drain().map(|(id, _)| id).collect();
                for id in ids {
                    *generations.entry(id).or_default() += 1;
                }
                for g in generations.values_mut() {
                    *g += 1;
                }
            }
        }
        drop(generations);
        self.cleared.send_modify(|v| *v += 1);
    }

    /// The action for the next `op` on `component`, consuming one count of the first matching
    /// fault.
    pub fn take(&self, component: &str, op: Op) -> Option<FaultAction> {
        if !self.enabled {
            return None;
        }
        let mut faults = self.faults();
        let list = faults.get_mut(component)?;
        let index = list.iter().position(|f| {
            matches!(
                (f.ops, op),
                (FaultOps::Any, _)
                    | (FaultOps::Read, Op::Read | Op::LogRead)
                    | (FaultOps::LogRead, Op::LogRead)
                    | (FaultOps::Write, Op::Write | Op::BlockWrite)
                    | (FaultOps::BlockWrite, Op::BlockWrite)
                    | (FaultOps::Flush, Op::Flush)
            )
        })?;
        let fault = &mut list[index];
        let action = fault.action;
        if let Some(n) = &mut fault.remaining {
            *n -= 1;
            if *n == 0 {
                list.remove(index);
            }
        }
        Some(action)
    }

    /// Generation of `component`'s faults; hung operations wait for it to change.
    pub fn generation(&self, component: &str) -> u64 {
        self.generations().get(component).copied().unwrap_or(0)
    }

    /// Waits until `component`'s faults are cleared after `generation`, or the node stops.
    pub async fn hang(
        &self,
        component: &str,
        generation: u64,
        shutdown: &CancellationToken,
    ) -> Result<(), NodeError> {
        let mut cleared = self.cleared.subscribe();
        loop {
            if self.generation(component) != generation {
                return Ok(());
            }
            tokio::select! {
                changed = cleared.changed() => {
                    if changed.is_err() {
                        return Err(NodeError::ShuttingDown);
                    }
                }
                () = shutdown.cancelled() => return Err(NodeError::ShuttingDown),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_registry_refuses_and_never_matches() {
        let reg = FaultRegistry::new(false);
        let fault = Fault {
            action: FaultAction::Hang,
            ops: FaultOps::Any,
            remaining: None,
        };
        assert!(matches!(
            reg.inject("c", fault),
            Err(NodeError::FaultInjectionDisabled)
        ));
        assert_eq!(reg.take("c", Op::Read), None);
    }

    #[test]
    fn counts_and_op_filters_apply() {
        let reg = FaultRegistry::new(true);
        reg.inject(
            "c",
            Fault {
                action: FaultAction::Fail(Code::Unavailable),
                ops: FaultOps::Write,
                remaining: Some(2),
            },
        )
        .unwrap();
        assert_eq!(reg.take("c", Op::Read), None);
        assert_eq!(reg.take("other", Op::Write), None);
        assert_eq!(
            reg.take("c", Op::Write),
            Some(FaultAction::Fail(Code::Unavailable))
        );
        assert_eq!(
            reg.take("c", Op::Write),
            Some(FaultAction::Fail(Code::Unavailable))
        );
        assert_eq!(reg.take("c", Op::Write), None, "count exhausted");
    }

    #[test]
    fn log_read_faults_match_log_reads_only() {
        let reg = FaultRegistry::new(true);
        let fail = FaultAction::Fail(Code::Unavailable);
        for ops in [FaultOps::LogRead, FaultOps::Read] {
            reg.inject(
                "c",
                Fault {
                    action: fail,
                    ops,
                    remaining: None,
                },
            )
            .unwrap();
        }
        // A slot or block read meets only the READ fault; a log read meets the first.
        assert_eq!(reg.take("c", Op::LogRead), Some(fail));
        reg.clear(Some("c")).unwrap();
        reg.inject(
            "c",
            Fault {
                action: fail,
                ops: FaultOps::LogRead,
                remaining: None,
            },
        )
        .unwrap();
        assert_eq!(reg.take("c", Op::Read), None, "labels still read");
        assert_eq!(reg.take("c", Op::Write), None);
        assert_eq!(reg.take("c", Op::LogRead), Some(fail));
    }

    #[tokio::test]
    async fn clearing_releases_a_hang() {
        let reg = std::sync::Arc::new(FaultRegistry::new(true));
        let token = CancellationToken::new();
        let generation = reg.generation("c");
        let hung = tokio::spawn({
            let reg = reg.clone();
            let token = token.clone();
            async move { reg.hang("c", generation, &token).await }
        });
        reg.clear(Some("other")).unwrap();
        tokio::task::yield_now().await;
        assert!(
            !hung.is_finished(),
            "clearing another component released the hang"
        );
        reg.clear(Some("c")).unwrap();
        hung.await.unwrap().unwrap();
    }
}
