//! A tiny capturing `tracing` layer: every span (name, fields, parent, open and close order) and
//! every event, in one global order.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, Once};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// One captured span.
#[derive(Debug, Clone)]
pub(super) struct SpanRec {
    pub(super) name: &'static str,
    pub(super) parent: Option<usize>,
    pub(super) fields: BTreeMap<String, String>,
    pub(super) opened: u64,
    pub(super) closed: Option<u64>,
}

impl SpanRec {
    pub(super) fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    pub(super) fn node(&self) -> usize {
        self.field("node").expect("node field").parse().unwrap()
    }
}

/// One captured event.
#[derive(Debug, Clone)]
pub(super) struct EventRec {
    pub(super) seq: u64,
    pub(super) parent: Option<usize>,
    pub(super) fields: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct State {
    seq: u64,
    spans: Vec<SpanRec>,
    events: Vec<EventRec>,
    ids: HashMap<u64, usize>,
}

/// What one test captured; clones share the data.
#[derive(Debug, Clone, Default)]
pub(super) struct Capture {
    state: Arc<Mutex<State>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

thread_local! {
    /// The capture of the test running on this thread, if any.
    static CURRENT: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Routes every span and event to the calling thread's [`Capture`].
///
/// One global subscriber, always interested, instead of a scoped one per test: scoped
/// dispatchers installed and dropped by tests running in parallel make `tracing` rebuild its
/// callsite interest concurrently, and spans then go missing at random.
struct Router;

/// Installs the global routing subscriber. Every unit test of the core that runs DAGs calls this
/// before its first span: a callsite first hit before the global subscriber exists may keep a
/// stale "never interested" verdict, and a capturing test would then miss spans at random.
pub(crate) fn install_router() {
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Router))
            .expect("no other global subscriber in the core's unit tests");
    });
}

fn current() -> Option<Capture> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Ends a test's capture on its thread.
pub(super) struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

impl Capture {
    pub(super) fn spans(&self) -> Vec<SpanRec> {
        self.state.lock().unwrap().spans.clone()
    }

    pub(super) fn events(&self) -> Vec<EventRec> {
        self.state.lock().unwrap().events.clone()
    }

    /// Captures what this thread emits until the guard drops. Tests using it must run their
    /// DAGs on a current-thread runtime.
    pub(super) fn install(&self) -> CaptureGuard {
        install_router();
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        CaptureGuard
    }

    fn new_span(&self, attrs: &Attributes<'_>, id: &Id, parent_id: Option<Id>) {
        let mut st = self.state.lock().unwrap();
        let parent = parent_id.and_then(|p| st.ids.get(&p.into_u64()).copied());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        st.seq += 1;
        let opened = st.seq;
        let index = st.spans.len();
        st.spans.push(SpanRec {
            name: attrs.metadata().name(),
            parent,
            fields,
            opened,
            closed: None,
        });
        st.ids.insert(id.into_u64(), index);
    }

    fn record(&self, id: &Id, values: &Record<'_>) {
        let mut st = self.state.lock().unwrap();
        if let Some(&i) = st.ids.get(&id.into_u64()) {
            values.record(&mut Fields(&mut st.spans[i].fields));
        }
    }

    fn event(&self, event: &Event<'_>, parent_id: Option<Id>) {
        let mut st = self.state.lock().unwrap();
        let parent = parent_id.and_then(|p| st.ids.get(&p.into_u64()).copied());
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        st.seq += 1;
        let seq = st.seq;
        st.events.push(EventRec {
            seq,
            parent,
            fields,
        });
    }

    fn close(&self, id: &Id) {
        let mut st = self.state.lock().unwrap();
        st.seq += 1;
        let seq = st.seq;
        if let Some(i) = st.ids.remove(&id.into_u64()) {
            st.spans[i].closed = Some(seq);
        }
    }
}

impl<S> Layer<S> for Router
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(cap) = current() {
            let parent = attrs.parent().cloned().or_else(|| {
                if attrs.is_contextual() {
                    ctx.current_span().id().cloned()
                } else {
                    None
                }
            });
            cap.new_span(attrs, id, parent);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(cap) = current() {
            cap.record(id, values);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(cap) = current() {
            let parent = event.parent().cloned().or_else(|| {
                if event.is_contextual() {
                    ctx.current_span().id().cloned()
                } else {
                    None
                }
            });
            cap.event(event, parent);
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        if let Some(cap) = current() {
            cap.close(&id);
        }
    }
}
