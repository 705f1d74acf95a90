//! Spans of the engine: one per DAG, one per node firing (do and undo), named by the mnemonic.
//!
//! A span's name is fixed at its callsite, so [`node_span`] expands one callsite per mnemonic. When
//! no subscriber listens, each callsite's interest is cached and a firing costs one branch.

use tracing::Span;

use crate::dag::Mnemonic;

/// Which function of a node a span covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Do,
    Undo,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Do => "do",
            Phase::Undo => "undo",
        }
    }
}

/// The fields every node span carries from its start. The DAG's id and kind are its parent
/// `dag` span's, not repeated on each firing.
pub(crate) struct NodeFields<'a> {
    pub(crate) node: usize,
    pub(crate) component: Option<&'a str>,
    pub(crate) column: Option<usize>,
    pub(crate) offset: Option<u64>,
    pub(crate) length: Option<u64>,
    pub(crate) phase: Phase,
}

macro_rules! node_span_match {
    ($mn:expr, $parent:expr, $f:expr, $($name:ident),+ $(,)?) => {
        match $mn {
            $(
                Mnemonic::$name => tracing::info_span!(
                    parent: $parent,
                    stringify!($name),
                    node = $f.node as u64,
                    component = $f.component,
                    column = $f.column.map(|c| c as u64),
                    offset = $f.offset,
                    length = $f.length,
                    direction = $f.phase.as_str(),
                    outcome = tracing::field::Empty,
                    error = tracing::field::Empty,
                ),
            )+
        }
    };
}

/// Opens the span of one firing; `outcome` (and `error`) are recorded when it completes.
pub(crate) fn node_span(mnemonic: Mnemonic, parent: &Span, f: &NodeFields<'_>) -> Span {
    node_span_match!(
        mnemonic, parent, f, Nil, Cmt, Trm, R, W, Rod, Rop, Roq, Rud, Rrd, Rp, Rq, Xor, Xrc, Q,
        Wnd, Wnp, Wnq, Rmir, Wpd, Wsd, Ovl,
    )
}

/// Opens the span of one DAG run, child of the caller's current span.
pub(crate) fn dag_span(
    dag_id: u64,
    dag_kind: &'static str,
    nodes: usize,
    origin: Option<super::DagOrigin>,
) -> Span {
    tracing::info_span!(
        "dag",
        dag_id,
        dag_kind,
        nodes = nodes as u64,
        stripe = origin.map(|o| o.stripe),
        attempt = origin.map(|o| u64::from(o.attempt)),
        direction = tracing::field::Empty,
        committed = tracing::field::Empty,
        failed = tracing::field::Empty,
        skipped = tracing::field::Empty,
    )
}
