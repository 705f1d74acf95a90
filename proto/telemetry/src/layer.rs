//! The export layer: a `tracing` layer that keeps a [`SpanRecord`] in the extensions of every
//! span it sees, from the span's start to its end, and hands it to the export queue when the
//! span closes. It replaces `tracing-opentelemetry` and the OpenTelemetry SDK span on the data
//! path: no span builder, no SDK span, no conversion at the end; the record is what the encoder
//! writes from (`docs/BENCHMARKS.md`, "Tracing overhead", says why).
//!
//! Fields with a meaning of their own (they are not exported as attributes):
//! - `otel.name`: the span's name (e.g. the gRPC method of a server span);
//! - `otel.kind`: `server`, `client`, `producer`, `consumer` or `internal` (the default);
//! - `otel.status_code`: `error` or `ok`; `otel.status_message`: the status's message;
//! - `traceparent` (and `tracestate`): a W3C trace context that came from another process;
//!   the span becomes a child of that remote span instead of a local one.
//!
//! Events (`info!`, `warn!` ... inside a span) become span events named by their message; an
//! ERROR event sets the span's status to error. The sampler decides each span when it starts;
//! a span that is not sampled keeps only its ids (its children follow its decision) and is
//! not queued.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::config::SamplerChoice;
use crate::context::{SpanContext, new_span_id, new_trace_id};
use crate::export::SpanQueue;
use crate::otlp;
use crate::record::{SpanKind, SpanRecord, Status, ValueRef, now_ns};

/// The layer (see the module's documentation).
#[derive(Debug, Clone)]
pub struct ExportLayer {
    sampler: SamplerChoice,
    queue: Arc<SpanQueue>,
}

impl ExportLayer {
    pub(crate) fn new(sampler: SamplerChoice, queue: Arc<SpanQueue>) -> ExportLayer {
        ExportLayer { sampler, queue }
    }
}

/// Reads the remote parent of a span from its `traceparent` / `tracestate` fields.
#[derive(Default)]
struct RemoteParent {
    parent: Option<SpanContext>,
    state: Option<Arc<str>>,
}

impl Visit for RemoteParent {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "traceparent" => self.parent = SpanContext::from_traceparent(value),
            "tracestate" if !value.is_empty() => self.state = Some(Arc::from(value)),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if matches!(field.name(), "traceparent" | "tracestate") {
            self.record_str(field, &format!("{value:?}"));
        }
    }
}

/// Formats a `Debug` (or `%` Display) value into this thread's scratch string and hands it to
/// `f`: the value is encoded from there, with no allocation of its own.
fn with_text<T>(value: &dyn fmt::Debug, f: impl FnOnce(&str) -> T) -> T {
    thread_local! {
        static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut s) => {
            s.clear();
            let _ = write!(s, "{value:?}");
            f(&s)
        }
        // Re-entered (a Debug impl that records a span): format on the heap.
        Err(_) => f(&format!("{value:?}")),
    })
}

/// A `u64` as OTLP's signed integer, or as text above `i64::MAX`.
fn unsigned(v: u64, f: impl FnOnce(ValueRef<'_>)) {
    match i64::try_from(v) {
        Ok(i) => f(ValueRef::Int(i)),
        Err(_) => f(ValueRef::Str(&v.to_string())),
    }
}

/// Records a span's fields into its record. A field recorded a second time replaces its value;
/// the record's bit mask of recorded fields spares the first recording the search.
struct SpanFields<'a> {
    record: &'a mut SpanRecord,
}

impl SpanFields<'_> {
    fn value(&mut self, field: &Field, value: ValueRef<'_>) {
        let r = &mut *self.record;
        match field.name() {
            "traceparent" | "tracestate" => {}
            "otel.name" => r.name = Cow::Owned(text(value)),
            "otel.kind" => {
                if let Some(kind) = SpanKind::parse(&text(value)) {
                    r.kind = kind;
                }
            }
            "otel.status_code" => {
                let code = text(value);
                if code.eq_ignore_ascii_case("error") {
                    if !matches!(r.status, Status::Error(_)) {
                        r.status = Status::Error(None);
                    }
                } else if code.eq_ignore_ascii_case("ok") {
                    r.status = Status::Ok;
                }
            }
            "otel.status_message" | "otel.status_description" => {
                r.status = Status::Error(Some(text(value)));
            }
            key => match 1u64.checked_shl(field.index() as u32) {
                Some(bit) if r.recorded & bit == 0 => {
                    r.recorded |= bit;
                    r.add_attribute(key, value);
                }
                _ => r.set_attribute(key, value),
            },
        }
    }
}

fn text(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Str(s) => s.to_owned(),
        ValueRef::Int(i) => i.to_string(),
        ValueRef::Double(d) => d.to_string(),
        ValueRef::Bool(b) => b.to_string(),
    }
}

/// The `Visit` methods of a visitor whose `value` method takes a [`ValueRef`].
macro_rules! visit_values {
    () => {
        fn record_i64(&mut self, field: &Field, value: i64) {
            self.value(field, ValueRef::Int(value));
        }

        fn record_u64(&mut self, field: &Field, value: u64) {
            unsigned(value, |v| self.value(field, v));
        }

        fn record_f64(&mut self, field: &Field, value: f64) {
            self.value(field, ValueRef::Double(value));
        }

        fn record_bool(&mut self, field: &Field, value: bool) {
            self.value(field, ValueRef::Bool(value));
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            self.value(field, ValueRef::Str(value));
        }

        fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
            self.value(field, ValueRef::Str(&value.to_string()));
        }

        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            with_text(value, |s| self.value(field, ValueRef::Str(s)));
        }
    };
}

impl Visit for SpanFields<'_> {
    visit_values!();
}

/// Records an event's fields: its message as its name, the rest as encoded attributes.
struct EventFields {
    name: String,
    attributes: Vec<u8>,
}

impl EventFields {
    fn value(&mut self, field: &Field, value: ValueRef<'_>) {
        if field.name() == "message" {
            self.name = text(value);
        } else {
            otlp::put_key_value(
                &mut self.attributes,
                otlp::EVENT_ATTRIBUTES,
                field.name(),
                value,
            );
        }
    }
}

impl Visit for EventFields {
    visit_values!();
}

impl<S> tracing_subscriber::Layer<S> for ExportLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let meta = attrs.metadata();
        // A remote parent (a server span) wins over the local one.
        let mut remote = RemoteParent::default();
        if meta.fields().field("traceparent").is_some() {
            attrs.record(&mut remote);
        }
        let (trace_id, parent_span_id, parent_sampled, state, parent_remote) = match remote.parent {
            Some(p) => (p.trace_id, p.span_id, Some(p.sampled), remote.state, true),
            None => {
                let local = match attrs.parent() {
                    Some(parent) => ctx.span(parent),
                    None if attrs.is_contextual() => ctx.lookup_current(),
                    None => None,
                };
                match local.and_then(|p| recorded_context(&p)) {
                    Some(p) => (p.trace_id, p.span_id, Some(p.sampled), p.state, false),
                    None => (new_trace_id(), 0, None, None, false),
                }
            }
        };
        let sampled = self.sampler.sampled(parent_sampled, trace_id);
        let context = SpanContext {
            trace_id,
            span_id: new_span_id(),
            sampled,
            state,
        };
        let mut record = SpanRecord::new(context, Cow::Borrowed(meta.name()));
        record.parent_span_id = parent_span_id;
        record.parent_remote = parent_remote;
        if sampled {
            attrs.record(&mut SpanFields {
                record: &mut record,
            });
            record.start_ns = now_ns();
        }
        span.extensions_mut().insert(record);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(record) = extensions.get_mut::<SpanRecord>()
            && record.context.sampled
        {
            values.record(&mut SpanFields { record });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        let Some(record) = extensions.get_mut::<SpanRecord>() else {
            return;
        };
        if !record.context.sampled {
            return;
        }
        let meta = event.metadata();
        let mut e = EventFields {
            name: String::new(),
            attributes: Vec::new(),
        };
        event.record(&mut e);
        otlp::put_key_value(
            &mut e.attributes,
            otlp::EVENT_ATTRIBUTES,
            "level",
            ValueRef::Str(meta.level().as_str()),
        );
        if e.name.is_empty() {
            e.name = meta.name().to_owned();
        }
        if *meta.level() == Level::ERROR && !matches!(record.status, Status::Error(Some(_))) {
            record.status = Status::Error(Some(e.name.clone()));
        }
        record.add_event(now_ns(), &e.name, &e.attributes);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        // Encoded where it lies; the registry drops the record with the span's extensions.
        let mut extensions = span.extensions_mut();
        if let Some(record) = extensions.get_mut::<SpanRecord>()
            && record.context.sampled
        {
            record.end_ns = now_ns();
            self.queue.push(record);
        }
    }
}

/// The context of the nearest span around `span` (itself included) that the export layer
/// records; `None` when no export layer runs or no such span is open.
pub fn context_of(span: &tracing::Span) -> Option<SpanContext> {
    span.with_subscriber(|(id, dispatch)| nearest_context(dispatch, id))
        .flatten()
}

/// The context of the nearest span around the current one (itself included) that the export
/// layer records: [`context_of`] for the current span, without taking a handle on it.
pub(crate) fn current_context() -> Option<SpanContext> {
    tracing::dispatcher::get_default(|dispatch| {
        nearest_context(dispatch, dispatch.current_span().id()?)
    })
}

/// The context of span `id` or of its nearest ancestor that the export layer records.
fn nearest_context(dispatch: &tracing::Dispatch, id: &Id) -> Option<SpanContext> {
    let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
    registry
        .span(id)?
        .scope()
        .find_map(|s| recorded_context(&s))
}

/// The context the export layer recorded for `span`, if it records it.
fn recorded_context<'a, R: LookupSpan<'a>>(
    span: &tracing_subscriber::registry::SpanRef<'a, R>,
) -> Option<SpanContext> {
    span.extensions()
        .get::<SpanRecord>()
        .map(|r| r.context.clone())
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::config::ParentlessChoice;
    use crate::export::SpanQueue;
    use crate::record::Value;

    /// Runs `f` under a registry with the export layer (sampler `sampler`); returns the records
    /// the spans closed into, in closing order.
    fn recorded(sampler: SamplerChoice, f: impl FnOnce()) -> Vec<SpanRecord> {
        let (queue, collected) = SpanQueue::collecting();
        let layer = ExportLayer::new(sampler, queue);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        collected.lock().unwrap().clone()
    }

    fn attr(r: &SpanRecord, key: &str) -> Option<Value> {
        r.attribute(key)
    }

    #[test]
    fn spans_nest_and_carry_their_fields_kind_status_and_events() {
        let spans = recorded(SamplerChoice::AlwaysOn, || {
            let outer = tracing::info_span!(
                "grpc",
                otel.name = "dagraid.volume.v1.VolumeService/Write",
                otel.kind = "server",
                rpc.grpc.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let _o = outer.enter();
            let dag = tracing::info_span!(
                "dag",
                dag_id = 7u64,
                dag_kind = "small_write",
                big = u64::MAX,
                neg = -3i64,
                ratio = 0.5,
                ok = true,
                volume = %"vol0",
                direction = tracing::field::Empty,
            );
            {
                let _d = dag.enter();
                tracing::info!(node = 3u64, mnemonic = "Rod", "recovery decision");
                tracing::error!("it broke");
            }
            dag.record("direction", "rolled_backward");
            dag.record("direction", "forward");
            drop(dag);
            outer.record("rpc.grpc.status_code", 14);
            outer.record("otel.status_code", "error");
        });
        assert_eq!(spans.len(), 2);
        let (dag, outer) = (&spans[0], &spans[1]);
        assert_eq!(outer.name, "dagraid.volume.v1.VolumeService/Write");
        assert_eq!(outer.kind, SpanKind::Server);
        assert_eq!(outer.parent_span_id, 0);
        assert_eq!(outer.status, Status::Error(None));
        assert_eq!(attr(outer, "rpc.grpc.status_code"), Some(Value::Int(14)));
        assert!(
            attr(outer, "otel.kind").is_none(),
            "special fields are not attributes"
        );
        assert_eq!(dag.name, "dag");
        assert_eq!(dag.kind, SpanKind::Internal);
        assert_eq!(dag.context.trace_id, outer.context.trace_id);
        assert_eq!(dag.parent_span_id, outer.context.span_id);
        assert!(!dag.parent_remote);
        assert_ne!(dag.context.span_id, outer.context.span_id);
        assert_eq!(attr(dag, "dag_id"), Some(Value::Int(7)));
        assert_eq!(
            attr(dag, "dag_kind"),
            Some(Value::Str("small_write".into()))
        );
        assert_eq!(attr(dag, "big"), Some(Value::Str(u64::MAX.to_string())));
        assert_eq!(attr(dag, "neg"), Some(Value::Int(-3)));
        assert_eq!(attr(dag, "ratio"), Some(Value::Double(0.5)));
        assert_eq!(attr(dag, "ok"), Some(Value::Bool(true)));
        assert_eq!(attr(dag, "volume"), Some(Value::Str("vol0".into())));
        assert_eq!(attr(dag, "direction"), Some(Value::Str("forward".into())));
        assert_eq!(
            dag.attributes()
                .iter()
                .filter(|(k, _)| k == "direction")
                .count(),
            1
        );
        let events = dag.events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].name, "recovery decision");
        assert_eq!(
            events[0].attributes,
            [
                ("node".to_owned(), Value::Int(3)),
                ("mnemonic".to_owned(), Value::Str("Rod".into())),
                ("level".to_owned(), Value::Str("INFO".into())),
            ]
        );
        assert_eq!(events[1].name, "it broke");
        assert_eq!(dag.status, Status::Error(Some("it broke".into())));
        assert!(dag.start_ns > 0 && dag.end_ns >= dag.start_ns);
        assert!(outer.start_ns <= dag.start_ns && outer.end_ns >= dag.end_ns);
    }

    #[test]
    fn a_remote_parent_makes_the_span_its_child_and_its_children_follow() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let spans = recorded(
            SamplerChoice::ParentBased(ParentlessChoice::AlwaysOff),
            || {
                let server = tracing::info_span!("grpc", traceparent = tp, tracestate = "v=1");
                let _s = server.enter();
                let inner = tracing::info_span!("access");
                let _i = inner.enter();
                let cx = context_of(&tracing::Span::current()).unwrap();
                assert_eq!(cx.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
                assert!(cx.sampled);
                // A root under parentbased_always_off is not sampled, nor its children.
                let root = tracing::info_span!(parent: None, "root");
                let _c = tracing::info_span!(parent: &root, "child");
                let root_cx = context_of(&root).unwrap();
                assert!(!root_cx.sampled);
                assert_ne!(root_cx.trace_id, cx.trace_id);
            },
        );
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["access", "grpc"], "unsampled spans are not queued");
        let (access, server) = (&spans[0], &spans[1]);
        assert_eq!(server.context.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(server.parent_span_id, 0xb7ad6b7169203331);
        assert!(server.parent_remote);
        assert_eq!(server.context.state.as_deref(), Some("v=1"));
        assert!(
            server.attributes().is_empty(),
            "traceparent is no attribute"
        );
        assert_eq!(access.parent_span_id, server.context.span_id);
        assert_eq!(access.context.state.as_deref(), Some("v=1"));
        assert!(!access.parent_remote);
    }

    #[test]
    fn a_remote_unsampled_parent_is_followed_by_the_parent_based_sampler() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        let run = |sampler| {
            recorded(sampler, || {
                let _s = tracing::info_span!("grpc", traceparent = tp).entered();
                let _a = tracing::info_span!("access").entered();
            })
            .len()
        };
        assert_eq!(
            run(SamplerChoice::ParentBased(ParentlessChoice::AlwaysOn)),
            0
        );
        assert_eq!(run(SamplerChoice::AlwaysOn), 2);
        assert_eq!(run(SamplerChoice::AlwaysOff), 0);
    }

    #[test]
    fn without_the_layer_there_is_no_context() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("x");
            assert_eq!(context_of(&span), None);
        });
        assert_eq!(context_of(&tracing::Span::none()), None);
    }
}
