//! What the export layer keeps of one span: ids, name, kind, times and status, and its
//! attributes and events already encoded as the OTLP protobuf fields they become. Recording a
//! field writes its bytes once, into a buffer inside the record (on the heap only past
//! [`INLINE_ATTRIBUTES`] bytes); when the span ends the whole span is encoded from the record
//! ([`crate::otlp`]). No allocation per attribute, no conversion on the export thread.

use std::borrow::Cow;

use crate::context::SpanContext;
use crate::otlp;

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
    /// `int_value` (a `u64` above `i64::MAX` is recorded as a string).
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bool_value`.
    Bool(bool),
    /// `string_value`.
    Str(String),
}

impl Value {
    /// The borrowed form the encoder writes.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Int(i) => ValueRef::Int(*i),
            Value::Double(d) => ValueRef::Double(*d),
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Str(s) => ValueRef::Str(s),
        }
    }
}

/// A value to encode, borrowed from wherever it was recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bool_value`.
    Bool(bool),
    /// `string_value`.
    Str(&'a str),
}

/// An event inside a span, as read back from its encoding ([`SpanRecord::events`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    /// When it happened, ns since the Unix epoch.
    pub time_ns: u64,
    /// Its message.
    pub name: String,
    /// Its other fields, and `level`.
    pub attributes: Vec<(String, Value)>,
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
    /// From its `otel.status_code` field or an ERROR event.
    pub status: Status,
    /// The attributes, as encoded `Span.attributes` fields, in the order first recorded.
    pub(crate) attributes: AttributeBytes,
    /// The events, as encoded `Span.events` fields, in order.
    pub(crate) events: Vec<u8>,
    /// Bit `i`: the field with index `i` of the span's callsite has been recorded (so a
    /// second recording must replace it; the first one only appends).
    pub(crate) recorded: u64,
}

/// Encoded attributes kept in the record itself up to this many bytes (a DAG node's firing
/// span takes about 150).
pub const INLINE_ATTRIBUTES: usize = 200;

/// A span's encoded attributes: inline up to [`INLINE_ATTRIBUTES`] bytes, then on the heap.
#[derive(Clone)]
pub(crate) struct AttributeBytes {
    len: usize,
    inline: [u8; INLINE_ATTRIBUTES],
    /// Once the inline space is exceeded (`spilled`), every byte lives here.
    heap: Vec<u8>,
    spilled: bool,
}

impl AttributeBytes {
    pub(crate) fn new() -> AttributeBytes {
        AttributeBytes {
            len: 0,
            inline: [0; INLINE_ATTRIBUTES],
            heap: Vec::new(),
            spilled: false,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.spilled {
            &self.heap
        } else {
            &self.inline[..self.len]
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Removes the bytes in `range`.
    pub(crate) fn remove(&mut self, range: std::ops::Range<usize>) {
        if self.spilled {
            self.heap.drain(range);
        } else {
            self.inline.copy_within(range.end..self.len, range.start);
            self.len -= range.len();
        }
    }
}

impl otlp::Out for AttributeBytes {
    fn space(&mut self, n: usize) -> &mut [u8] {
        if !self.spilled {
            if self.len + n <= INLINE_ATTRIBUTES {
                let start = self.len;
                self.len += n;
                return &mut self.inline[start..start + n];
            }
            self.heap.reserve(2 * INLINE_ATTRIBUTES + n);
            self.heap.extend_from_slice(&self.inline[..self.len]);
            self.spilled = true;
        }
        self.heap.space(n)
    }
}

impl PartialEq for AttributeBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl std::fmt::Debug for AttributeBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(otlp::decode_attributes(self.as_slice()))
            .finish()
    }
}

impl SpanRecord {
    /// A record with no attributes, events or status.
    pub fn new(context: SpanContext, name: Cow<'static, str>) -> SpanRecord {
        SpanRecord {
            context,
            parent_span_id: 0,
            parent_remote: false,
            name,
            kind: SpanKind::Internal,
            start_ns: 0,
            end_ns: 0,
            status: Status::Unset,
            attributes: AttributeBytes::new(),
            events: Vec::new(),
            recorded: 0,
        }
    }

    /// Sets attribute `key` to `value`; a key set again replaces its value (OTLP keys are unique
    /// within a span).
    pub fn set_attribute(&mut self, key: &str, value: ValueRef<'_>) {
        if let Some(range) = otlp::find_attribute(self.attributes.as_slice(), key) {
            self.attributes.remove(range);
        }
        self.add_attribute(key, value);
    }

    /// Adds attribute `key`, known not to be set yet (a callsite's fields are distinct).
    pub(crate) fn add_attribute(&mut self, key: &str, value: ValueRef<'_>) {
        otlp::put_key_value(&mut self.attributes, otlp::SPAN_ATTRIBUTES, key, value);
    }

    /// Adds an event at `time_ns` named `name` whose attributes are the encoded `Event.attributes`
    /// fields `attributes`.
    pub(crate) fn add_event(&mut self, time_ns: u64, name: &str, attributes: &[u8]) {
        otlp::put_event(&mut self.events, time_ns, name, attributes);
    }

    /// Adds an event with `attributes`.
    pub fn push_event(&mut self, time_ns: u64, name: &str, attributes: &[(&str, ValueRef<'_>)]) {
        let mut encoded = Vec::new();
        for (k, v) in attributes {
            otlp::put_key_value(&mut encoded, otlp::EVENT_ATTRIBUTES, k, *v);
        }
        self.add_event(time_ns, name, &encoded);
    }

    /// The attributes, decoded (for tests and diagnostics: the export path never decodes).
    pub fn attributes(&self) -> Vec<(String, Value)> {
        otlp::decode_attributes(self.attributes.as_slice())
    }

    /// Attribute `key`, decoded.
    pub fn attribute(&self, key: &str) -> Option<Value> {
        self.attributes()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The events, decoded.
    pub fn events(&self) -> Vec<SpanEvent> {
        otlp::decode_events(&self.events)
    }
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
    fn kinds_parse_and_attributes_set_again_replace_their_value() {
        assert_eq!(SpanKind::parse("server"), Some(SpanKind::Server));
        assert_eq!(SpanKind::parse("Client"), Some(SpanKind::Client));
        assert_eq!(SpanKind::parse("sideways"), None);
        let cx = SpanContext {
            trace_id: 1,
            span_id: 2,
            sampled: true,
            state: None,
        };
        let mut r = SpanRecord::new(cx, Cow::Borrowed("x"));
        r.set_attribute("outcome", ValueRef::Str("good"));
        r.set_attribute("node", ValueRef::Int(3));
        r.set_attribute("outcome", ValueRef::Str("failed"));
        r.set_attribute("ratio", ValueRef::Double(0.5));
        r.set_attribute("node", ValueRef::Bool(true));
        assert_eq!(
            r.attributes(),
            vec![
                ("outcome".to_owned(), Value::Str("failed".into())),
                ("ratio".to_owned(), Value::Double(0.5)),
                ("node".to_owned(), Value::Bool(true)),
            ]
        );
        assert_eq!(r.attribute("ratio"), Some(Value::Double(0.5)));
        // Past the inline space the attributes move to the heap, and stay whole.
        let long = "x".repeat(INLINE_ATTRIBUTES);
        r.set_attribute("long", ValueRef::Str(&long));
        r.set_attribute("outcome", ValueRef::Str("good"));
        assert_eq!(
            r.attributes(),
            vec![
                ("ratio".to_owned(), Value::Double(0.5)),
                ("node".to_owned(), Value::Bool(true)),
                ("long".to_owned(), Value::Str(long.clone())),
                ("outcome".to_owned(), Value::Str("good".into())),
            ]
        );
        r.set_attribute("long", ValueRef::Int(1));
        assert_eq!(r.attribute("long"), Some(Value::Int(1)));
        assert_eq!(r.attributes().len(), 4);
        assert_eq!(r.attribute("none"), None);
        r.push_event(
            9,
            "recovery decision",
            &[("mnemonic", ValueRef::Str("Rod"))],
        );
        assert_eq!(
            r.events(),
            vec![SpanEvent {
                time_ns: 9,
                name: "recovery decision".into(),
                attributes: vec![("mnemonic".into(), Value::Str("Rod".into()))],
            }]
        );
    }
}
