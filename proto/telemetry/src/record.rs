//! What the export layer keeps of one span: ids, name, kind, times, attributes, events and
//! status, in the compact form the OTLP encoder ([`crate::otlp`]) writes from directly. Keys
//! are the `tracing` field names (`&'static str`): recording a field copies no key.

use std::borrow::Cow;

use crate::context::SpanContext;

/// OTLP's span kinds (`opentelemetry.proto.trace.v1.Span.SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SpanKind {
    /// An operation inside a process.
    Internal = 1,
    /// The server side of a call.
    Server = 2,
    /// The client side of a call.
    Client = 3,
    /// The producer of a message.
    Producer = 4,
    /// The consumer of a message.
    Consumer = 5,
}

impl SpanKind {
    /// The kind an `otel.kind` field names (`server`, `client`, ...), case-insensitively.
    pub fn parse(name: &str) -> Option<SpanKind> {
        const KINDS: [(&str, SpanKind); 5] = [
            ("internal", SpanKind::Internal),
            ("server", SpanKind::Server),
            ("client", SpanKind::Client),
            ("producer", SpanKind::Producer),
            ("consumer", SpanKind::Consumer),
        ];
        KINDS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, k)| *k)
    }
}

/// An attribute's value, as OTLP's `AnyValue` carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `int_value` (a `u64` above `i64::MAX` becomes a [`Value::Str`]).
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bool_value`.
    Bool(bool),
    /// `string_value`.
    Str(String),
}

/// One attribute of a span or an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// The field's name.
    pub key: &'static str,
    /// Its value.
    pub value: Value,
}

/// Sets `key` to `value` in `attributes`: a field recorded again replaces its value (OTLP
/// keys are unique within a span).
pub(crate) fn set(attributes: &mut Vec<Attribute>, key: &'static str, value: Value) {
    match attributes.iter_mut().find(|a| a.key == key) {
        Some(a) => a.value = value,
        None => attributes.push(Attribute { key, value }),
    }
}

/// An event inside a span (a `tracing` event whose span is exported).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    /// When it happened, ns since the Unix epoch.
    pub time_ns: u64,
    /// Its message.
    pub name: String,
    /// Its other fields, and `level`.
    pub attributes: Vec<Attribute>,
}

/// A span's status (`opentelemetry.proto.trace.v1.Status`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Status {
    /// Nothing said (code 0).
    #[default]
    Unset,
    /// Explicitly fine (code 1).
    Ok,
    /// Failed (code 2), with an optional message.
    Error(Option<String>),
}

/// One span, from its start to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// Its ids, sampled flag and `tracestate`.
    pub context: SpanContext,
    /// The parent's span id; 0 for a root.
    pub parent_span_id: u64,
    /// Whether the parent is in another process (it came in a `traceparent`).
    pub parent_remote: bool,
    /// The span's name (the callsite's, or its `otel.name` field).
    pub name: Cow<'static, str>,
    /// From its `otel.kind` field; internal by default.
    pub kind: SpanKind,
    /// ns since the Unix epoch.
    pub start_ns: u64,
    /// ns since the Unix epoch; 0 while it is open.
    pub end_ns: u64,
    /// Its fields, in the order they were first recorded.
    pub attributes: Vec<Attribute>,
    /// Its events, in order.
    pub events: Vec<SpanEvent>,
    /// From its `otel.status_code` field or an ERROR event.
    pub status: Status,
}

/// Now, in ns since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_fields_recorded_again_replace_their_value() {
        assert_eq!(SpanKind::parse("server"), Some(SpanKind::Server));
        assert_eq!(SpanKind::parse("Client"), Some(SpanKind::Client));
        assert_eq!(SpanKind::parse("sideways"), None);
        let mut a = Vec::new();
        set(&mut a, "outcome", Value::Str("good".into()));
        set(&mut a, "node", Value::Int(3));
        set(&mut a, "outcome", Value::Str("failed".into()));
        assert_eq!(
            a,
            vec![
                Attribute {
                    key: "outcome",
                    value: Value::Str("failed".into())
                },
                Attribute {
                    key: "node",
                    value: Value::Int(3)
                },
            ]
        );
    }
}
