//! The DAG engine: runs any [`Dag`] to completion with RAIDframe's commit-barrier recovery.
//!
//! Each DAG runs as one async state machine in its own Tokio task ([`Engine::run`]): all ready
//! nodes are in flight at once, completions propagate through plain counters, and many DAGs run
//! concurrently without any lock. Once started, a DAG cannot be torn by its caller: dropping the
//! [`DagHandle`] detaches the task, which still runs to its terminator (or back to its header).
//!
//! The rules (see `docs/ENGINE.md` for the invariants and why they hold):
//! - a node fires once all its antecedents are done; a node whose true-data antecedent failed or
//!   was skipped is skipped, transitively;
//! - the first failure decides the direction: roll forward if the commit node has fired (or there
//!   is none), roll backward otherwise; after the commit every write that does not depend on a
//!   failed node is still issued;
//! - backward, completed nodes are undone in reverse dependency order, each once, only after every
//!   successor they fired has settled; nodes that never fired are never undone;
//! - every disk node runs under a deadline that measures the storage, never a local queue:
//!   [`EngineConfig::node_deadline`] around the whole call for a component that sets none, the
//!   component's own (which starts when the call is sent) for one that does
//!   ([`crate::io::ComponentIo::own_deadline`]); expiry is a [`crate::io::IoErrorKind::Timeout`]
//!   failure like any other;
//! - a failed undo is reported in the [`DagResult`], never a panic.
//!
//! Every firing, do and undo, is a `tracing` span named by the node's [`Mnemonic`], child of the
//! DAG's span (`dag`), which records the result; the recovery decision and each skipped node are
//! events on the DAG span. [`EngineStats`] counts DAGs in flight and firings by mnemonic, for
//! metrics read at scrape time.

mod recovery;
mod result;
mod run;
mod trace;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::dag::{Dag, Mnemonic, NodeId};

pub use result::{DagResult, Direction, NodeOutcome, NodeReport};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Deadline of every disk node on a component that sets none of its own
    /// ([`crate::io::ComponentIo::own_deadline`]). A call can hang; past this the node fails
    /// with `Timeout` and the DAG recovers like for any other failure. A component that may
    /// queue calls locally bounds them itself from the moment they are sent, and is not wrapped
    /// in this deadline: it would count the queue.
    pub node_deadline: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node_deadline: Duration::from_secs(10),
        }
    }
}

/// Counters of one engine: DAGs in flight, and every firing by mnemonic, phase and outcome.
/// Relaxed atomics, one increment per firing; read by metrics at scrape time.
#[derive(Debug, Default)]
pub struct EngineStats {
    in_flight: AtomicU64,
    /// `[mnemonic][do, undo][succeeded, failed]`.
    firings: [[[AtomicU64; 2]; 2]; Mnemonic::ALL.len()],
    skipped: [AtomicU64; Mnemonic::ALL.len()],
}

impl EngineStats {
    /// DAGs started and not yet finished.
    pub fn dags_in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Firings of `mnemonic` so far: its undo (`undo`) or do, failed or succeeded.
    pub fn firings(&self, mnemonic: Mnemonic, undo: bool, failed: bool) -> u64 {
        self.firings[mnemonic.index()][usize::from(undo)][usize::from(failed)]
            .load(Ordering::Relaxed)
    }

    /// Nodes of `mnemonic` skipped (behind a failed or skipped true-data antecedent).
    pub fn skipped(&self, mnemonic: Mnemonic) -> u64 {
        self.skipped[mnemonic.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn fired(&self, mnemonic: Mnemonic, undo: bool, failed: bool) {
        self.firings[mnemonic.index()][usize::from(undo)][usize::from(failed)]
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn skip(&self, mnemonic: Mnemonic) {
        self.skipped[mnemonic.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Which stripe a DAG serves and which try it is, recorded on its span (`stripe`, `attempt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DagOrigin {
    /// The stripe.
    pub stripe: u64,
    /// 1 for the first DAG of the stripe, 2 for the retry after a roll-backward, ...
    pub attempt: u32,
}

/// Runs DAGs. Cheap to clone; holds its configuration and its counters.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    config: EngineConfig,
    stats: Arc<EngineStats>,
    /// Test hook: the undo of this node fails (no undo needs storage, so none can fail otherwise).
    #[cfg(test)]
    fail_undo_of: Option<NodeId>,
}

static NEXT_DAG_ID: AtomicU64 = AtomicU64::new(1);

impl Engine {
    /// An engine with `config`.
    pub fn new(config: EngineConfig) -> Self {
        Engine {
            config,
            stats: Arc::default(),
            #[cfg(test)]
            fail_undo_of: None,
        }
    }

    /// An engine whose undo of `node` fails, to test that path.
    #[cfg(test)]
    pub(crate) fn failing_undo_of(config: EngineConfig, node: NodeId) -> Self {
        Engine {
            config,
            stats: Arc::default(),
            fail_undo_of: Some(node),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The counters of the DAGs this engine (and its clones) ran.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Starts `dag` in its own task and returns a handle to its result.
    ///
    /// The DAG's span is a child of the caller's current span. Dropping the handle does not stop
    /// the DAG. Must be called within a Tokio runtime (like `tokio::spawn`).
    pub fn run(&self, dag: Dag) -> DagHandle {
        self.run_for(dag, None)
    }

    /// [`Engine::run`], with the stripe and try the DAG is for recorded on its span.
    pub fn run_for(&self, dag: Dag, origin: Option<DagOrigin>) -> DagHandle {
        let (dag_id, span, run) = self.prepare(dag, origin);
        // A DAG span not made (below an unsampled span: the export's gate) leaves the task in
        // the caller's span, so the calls it makes still carry the trace and its decision.
        let join = tokio::spawn(run.execute().instrument(span.or_current()));
        DagHandle { dag_id, join }
    }

    /// Runs `dag` inside the caller's task.
    ///
    /// Dropping this future mid-run tears the DAG (writes may be half issued): use it only from a
    /// task that is itself never cancelled. [`Engine::run`] is the safe default.
    pub async fn execute(&self, dag: Dag) -> DagResult {
        let (_, span, run) = self.prepare(dag, None);
        run.execute().instrument(span).await
    }

    fn prepare(&self, dag: Dag, origin: Option<DagOrigin>) -> (u64, tracing::Span, run::Run) {
        let dag_id = NEXT_DAG_ID.fetch_add(1, Ordering::Relaxed);
        let span = trace::dag_span(dag_id, dag.kind(), dag.len(), origin);
        let run = run::Run::new(dag_id, dag.into_parts(), self, span.clone());
        (dag_id, span, run)
    }
}

/// Why a DAG's result could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The DAG's task ended without a result: the runtime shut down under it, or it panicked
    /// (an engine bug).
    #[error("DAG {dag_id} ended without a result: {detail}")]
    TaskLost {
        /// The DAG's id.
        dag_id: u64,
        /// What the runtime said.
        detail: String,
    },
}

/// The result of a DAG started with [`Engine::run`]. Dropping it detaches the DAG, which still
/// completes.
#[derive(Debug)]
pub struct DagHandle {
    dag_id: u64,
    join: JoinHandle<DagResult>,
}

impl DagHandle {
    /// The DAG's id (as on its span).
    pub fn dag_id(&self) -> u64 {
        self.dag_id
    }
}

impl Future for DagHandle {
    type Output = Result<DagResult, EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let dag_id = self.dag_id;
        Pin::new(&mut self.join).poll(cx).map(|r| {
            r.map_err(|e| EngineError::TaskLost {
                dag_id,
                detail: e.to_string(),
            })
        })
    }
}

/// The node on whose behalf a component call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuingNode {
    /// The DAG run.
    pub dag_id: u64,
    /// The DAG family.
    pub dag_kind: &'static str,
    /// The node.
    pub node: NodeId,
    /// Its mnemonic.
    pub mnemonic: Mnemonic,
}

tokio::task_local! {
    static ISSUER: IssuingNode;
}

/// The DAG node issuing the current component call, when called from within a
/// [`crate::io::ComponentIo`] method invoked by the engine; `None` elsewhere. Lets a component
/// label its requests (and lets the fault-injecting test component target a named node) without
/// widening the trait.
pub fn issuing_node() -> Option<IssuingNode> {
    ISSUER.try_with(|n| *n).ok()
}

#[cfg(test)]
pub(crate) mod tests;
