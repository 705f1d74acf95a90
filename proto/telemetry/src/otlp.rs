//! The OTLP trace protocol on the wire: each span written straight from its [`SpanRecord`]
//! into protobuf bytes when it ends (no intermediate message types, no per-span allocation),
//! an `ExportTraceServiceRequest` put together from those bytes, and the fields of the
//! collector's answer read back without a decoder.
//!
//! The schema is `opentelemetry/proto/collector/trace/v1/trace_service.proto` and the messages
//! it includes (trace, common, resource), version 1.x. Each message's size is computed before
//! it is written, as protobuf's length-delimited fields need; the tests decode what this writes
//! with `opentelemetry-proto`'s generated types.

use std::ops::Range;

use crate::record::{SpanEvent, SpanRecord, Status, Value, ValueRef};

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// The span flag bits (`SpanFlags`): the parent's remoteness is known, and it is remote.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// `ScopeSpans.spans`: the field each encoded span is.
const SCOPE_SPANS_SPANS: u32 = 2;
/// `Span.attributes`.
pub(crate) const SPAN_ATTRIBUTES: u32 = 9;
/// `Span.events`.
const SPAN_EVENTS: u32 = 11;
/// `Span.Event.attributes`.
pub(crate) const EVENT_ATTRIBUTES: u32 = 3;

/// Where encoded bytes go: a `Vec`, or a record's inline attribute buffer. A message is
/// written in one piece: its size is computed first, [`Out::space`] makes room for exactly that
/// many bytes, and a [`Cursor`] fills them.
pub(crate) trait Out {
    /// `n` more bytes at the end, to be overwritten.
    fn space(&mut self, n: usize) -> &mut [u8];
}

impl Out for Vec<u8> {
    fn space(&mut self, n: usize) -> &mut [u8] {
        let len = self.len();
        self.resize(len + n, 0);
        &mut self[len..]
    }
}

/// Fills a slice of exactly the size of what is written into it.
pub(crate) struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a mut [u8]) -> Cursor<'a> {
        Cursor { buf, at: 0 }
    }

    fn byte(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }

    fn slice(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    fn key(&mut self, tag: u32, wire: u32) {
        self.varint(u64::from((tag << 3) | wire));
    }

    fn len(&mut self, tag: u32, len: usize) {
        self.key(tag, LEN);
        self.varint(len as u64);
    }

    fn bytes(&mut self, tag: u32, bytes: &[u8]) {
        self.len(tag, bytes.len());
        self.slice(bytes);
    }

    fn fixed64(&mut self, tag: u32, v: u64) {
        self.key(tag, FIXED64);
        self.slice(&v.to_le_bytes());
    }

    /// Checks that exactly the computed size was written.
    fn done(self) {
        debug_assert_eq!(self.at, self.buf.len(), "message size computed wrong");
    }
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn key_len(tag: u32) -> usize {
    varint_len(u64::from(tag << 3))
}

/// A length-delimited field of `len` bytes of payload, in all.
fn len_field(tag: u32, len: usize) -> usize {
    key_len(tag) + varint_len(len as u64) + len
}

/// Appends field `tag` holding `bytes`.
fn put_bytes(out: &mut impl Out, tag: u32, bytes: &[u8]) {
    let mut c = Cursor::new(out.space(len_field(tag, bytes.len())));
    c.bytes(tag, bytes);
    c.done();
}

// --- common.v1: AnyValue, KeyValue.

fn any_value_len(v: ValueRef<'_>) -> usize {
    match v {
        ValueRef::Str(s) => len_field(1, s.len()),
        ValueRef::Bool(_) => key_len(2) + 1,
        ValueRef::Int(i) => key_len(3) + varint_len(i as u64),
        ValueRef::Double(_) => key_len(4) + 8,
    }
}

fn key_value_len(key: &str, value: ValueRef<'_>) -> usize {
    len_field(1, key.len()) + len_field(2, any_value_len(value))
}

/// Appends a `KeyValue` as field `tag` of the message being written.
pub(crate) fn put_key_value(out: &mut impl Out, tag: u32, key: &str, value: ValueRef<'_>) {
    let len = key_value_len(key, value);
    let mut c = Cursor::new(out.space(len_field(tag, len)));
    c.len(tag, len);
    c.bytes(1, key.as_bytes());
    c.len(2, any_value_len(value));
    match value {
        ValueRef::Str(s) => c.bytes(1, s.as_bytes()),
        ValueRef::Bool(b) => {
            c.key(2, VARINT);
            c.byte(u8::from(b));
        }
        ValueRef::Int(i) => {
            c.key(3, VARINT);
            c.varint(i as u64);
        }
        ValueRef::Double(d) => c.fixed64(4, d.to_bits()),
    }
    c.done();
}

/// Where the `KeyValue` field whose key is `key` lies in encoded attributes, if anywhere.
pub(crate) fn find_attribute(attributes: &[u8], key: &str) -> Option<Range<usize>> {
    let mut fields = Fields::new(attributes);
    let mut start = 0;
    while let Some(Ok((_, Field::Len(kv)))) = fields.next() {
        let end = attributes.len() - fields.0.len();
        if Fields::new(kv)
            .next()
            .is_some_and(|f| f == Ok((1, Field::Len(key.as_bytes()))))
        {
            return Some(start..end);
        }
        start = end;
    }
    None
}

fn decode_value(any: &[u8]) -> Value {
    match Fields::new(any).next() {
        Some(Ok((1, Field::Len(s)))) => Value::Str(String::from_utf8_lossy(s).into_owned()),
        Some(Ok((2, Field::Varint(b)))) => Value::Bool(b != 0),
        Some(Ok((3, Field::Varint(i)))) => Value::Int(i as i64),
        Some(Ok((4, Field::Fixed(d)))) => Value::Double(f64::from_bits(d)),
        _ => Value::Str(String::new()),
    }
}

/// Decodes encoded `KeyValue` fields (any tag).
pub(crate) fn decode_attributes(encoded: &[u8]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for field in Fields::new(encoded) {
        let Ok((_, Field::Len(kv))) = field else {
            break;
        };
        let (mut key, mut value) = (String::new(), Value::Str(String::new()));
        for f in Fields::new(kv).flatten() {
            match f {
                (1, Field::Len(k)) => key = String::from_utf8_lossy(k).into_owned(),
                (2, Field::Len(v)) => value = decode_value(v),
                _ => {}
            }
        }
        out.push((key, value));
    }
    out
}

/// Decodes encoded `Span.events` fields.
pub(crate) fn decode_events(encoded: &[u8]) -> Vec<SpanEvent> {
    let mut out = Vec::new();
    for field in Fields::new(encoded) {
        let Ok((_, Field::Len(event))) = field else {
            break;
        };
        let mut e = SpanEvent {
            time_ns: 0,
            name: String::new(),
            attributes: Vec::new(),
        };
        let mut attributes = Vec::new();
        let mut fields = Fields::new(event);
        let mut start = 0;
        while let Some(Ok((tag, payload))) = fields.next() {
            let end = event.len() - fields.0.len();
            match (tag, payload) {
                (1, Field::Fixed(t)) => e.time_ns = t,
                (2, Field::Len(n)) => e.name = String::from_utf8_lossy(n).into_owned(),
                (3, Field::Len(_)) => attributes.extend_from_slice(&event[start..end]),
                _ => {}
            }
            start = end;
        }
        e.attributes = decode_attributes(&attributes);
        out.push(e);
    }
    out
}

// --- trace.v1: Span, Span.Event, Status.

/// Appends a `Span.events` field: an event at `time_ns` named `name` with the encoded
/// `Event.attributes` fields `attributes`.
pub(crate) fn put_event(out: &mut Vec<u8>, time_ns: u64, name: &str, attributes: &[u8]) {
    let len = key_len(1) + 8 + len_field(2, name.len()) + attributes.len();
    let mut c = Cursor::new(out.space(len_field(SPAN_EVENTS, len)));
    c.len(SPAN_EVENTS, len);
    c.fixed64(1, time_ns);
    c.bytes(2, name.as_bytes());
    c.slice(attributes);
    c.done();
}

fn status_len(s: &Status) -> usize {
    match s {
        Status::Unset => 0,
        Status::Ok => key_len(3) + 1,
        Status::Error(message) => {
            key_len(3) + 1 + message.as_ref().map_or(0, |m| len_field(2, m.len()))
        }
    }
}

/// The size of a span's message, without its own tag and length.
fn span_len(s: &SpanRecord) -> usize {
    let cx = &s.context;
    let mut n = len_field(1, 16) + len_field(2, 8);
    if let Some(state) = &cx.state {
        n += len_field(3, state.len());
    }
    if s.parent_span_id != 0 {
        n += len_field(4, 8);
    }
    n += len_field(5, s.name.len());
    n += key_len(6) + 1; // the kind, 1 to 5
    n += 2 * (key_len(7) + 8);
    n += s.attributes.len() + s.events.len();
    if s.status != Status::Unset {
        n += len_field(15, status_len(&s.status));
    }
    n + key_len(16) + 4
}

/// Appends span `s` to `out` as a whole `ScopeSpans.spans` field: what an export request is
/// made of ([`RequestEncoder::request`]).
pub fn encode_span(out: &mut Vec<u8>, s: &SpanRecord) {
    let len = span_len(s);
    let mut c = Cursor::new(out.space(len_field(SCOPE_SPANS_SPANS, len)));
    c.len(SCOPE_SPANS_SPANS, len);
    let cx = &s.context;
    c.bytes(1, &cx.trace_id.to_be_bytes());
    c.bytes(2, &cx.span_id.to_be_bytes());
    if let Some(state) = &cx.state {
        c.bytes(3, state.as_bytes());
    }
    if s.parent_span_id != 0 {
        c.bytes(4, &s.parent_span_id.to_be_bytes());
    }
    c.bytes(5, s.name.as_bytes());
    c.key(6, VARINT);
    c.byte(s.kind as u8);
    c.fixed64(7, s.start_ns);
    c.fixed64(8, s.end_ns);
    c.slice(s.attributes.as_slice());
    c.slice(&s.events);
    let (code, message) = match &s.status {
        Status::Unset => (0, None),
        Status::Ok => (1, None),
        Status::Error(message) => (2, message.as_deref()),
    };
    if code != 0 {
        c.len(15, status_len(&s.status));
        if let Some(m) = message {
            c.bytes(2, m.as_bytes());
        }
        c.key(3, VARINT);
        c.varint(code);
    }
    let mut flags = u32::from(cx.sampled);
    if s.parent_span_id != 0 {
        flags |= FLAG_HAS_IS_REMOTE;
        if s.parent_remote {
            flags |= FLAG_IS_REMOTE;
        }
    }
    c.key(16, FIXED32);
    c.slice(&flags.to_le_bytes());
    c.done();
}

/// How many whole spans (whole `ScopeSpans.spans` fields) at the start of `spans` fit in
/// `max_spans` and `max_bytes`, and where they end.
pub(crate) fn take_spans(spans: &[u8], max_spans: usize, max_bytes: usize) -> (usize, usize) {
    let mut fields = Fields::new(spans);
    let (mut k, mut end) = (0, 0);
    while k < max_spans {
        let Some(Ok((_, Field::Len(_)))) = fields.next() else {
            break;
        };
        let next = spans.len() - fields.rest();
        if next > max_bytes {
            break;
        }
        (k, end) = (k + 1, next);
    }
    (k, end)
}

/// Writes export requests for one process: its resource and instrumentation scope are encoded
/// once, the spans (encoded as they ended) behind them.
#[derive(Debug, Clone)]
pub struct RequestEncoder {
    /// `ResourceSpans.resource` as a whole field (tag, length, `Resource` message).
    resource: Vec<u8>,
    /// `ScopeSpans.scope` as a whole field.
    scope: Vec<u8>,
}

impl RequestEncoder {
    /// An encoder for a process whose resource has `attributes` (`service.name` among them)
    /// and whose spans come from instrumentation scope `scope` at `version`.
    pub fn new(attributes: &[(String, Value)], scope: &str, version: &str) -> RequestEncoder {
        let mut body = Vec::new();
        for (k, v) in attributes {
            put_key_value(&mut body, 1, k, v.as_ref());
        }
        let mut resource = Vec::new();
        put_bytes(&mut resource, 1, &body);
        let mut body = Vec::new();
        put_bytes(&mut body, 1, scope.as_bytes());
        put_bytes(&mut body, 2, version.as_bytes());
        let mut scope = Vec::new();
        put_bytes(&mut scope, 1, &body);
        RequestEncoder { resource, scope }
    }

    /// The bytes of a request up to its spans, for `spans_len` bytes of encoded spans.
    fn head(&self, spans_len: usize, out: &mut Vec<u8>) {
        let scope_spans = self.scope.len() + spans_len;
        let resource_spans = self.resource.len() + len_field(2, scope_spans);
        let head = len_field(1, resource_spans) - resource_spans
            + self.resource.len()
            + (len_field(2, scope_spans) - scope_spans)
            + self.scope.len();
        let mut c = Cursor::new(out.space(head));
        c.len(1, resource_spans); // ExportTraceServiceRequest.resource_spans
        c.slice(&self.resource);
        c.len(2, scope_spans); // ResourceSpans.scope_spans
        c.slice(&self.scope);
        c.done();
    }

    /// The size of a request's bytes before its spans, at most.
    pub(crate) fn head_len(&self) -> usize {
        self.resource.len() + self.scope.len() + 3 * 10
    }

    /// Writes into `out` (cleared first) an `ExportTraceServiceRequest` whose spans are the
    /// encoded spans in `pieces`, in order.
    pub fn request(&self, pieces: &[&[u8]], out: &mut Vec<u8>) {
        out.clear();
        let spans_len = pieces.iter().map(|p| p.len()).sum();
        self.head(spans_len, out);
        out.reserve(spans_len);
        for p in pieces {
            out.extend_from_slice(p);
        }
    }
}

/// What an `ExportTraceServiceResponse` says: spans the receiver rejected, and its message.
pub fn partial_success(response: &[u8]) -> Result<(u64, String), &'static str> {
    let mut rejected = 0;
    let mut message = String::new();
    for field in Fields::new(response) {
        if let (1, Field::Len(partial)) = field? {
            for field in Fields::new(partial) {
                match field? {
                    (1, Field::Varint(n)) => rejected = n,
                    (2, Field::Len(m)) => message = String::from_utf8_lossy(m).into_owned(),
                    _ => {}
                }
            }
        }
    }
    Ok((rejected, message))
}

/// Counts the spans in an encoded `ExportTraceServiceRequest` without decoding it: request
/// field 1 (`resource_spans`), in each of those field 2 (`scope_spans`), in each of those field
/// 2 (`spans`); everything else is skipped by its wire type. `Err` on malformed protobuf.
pub fn count_spans(request: &[u8]) -> Result<u64, &'static str> {
    fn nested<'a>(field: Field<'a>, what: &'static str) -> Result<&'a [u8], &'static str> {
        match field {
            Field::Len(payload) => Ok(payload),
            _ => Err(what),
        }
    }
    let mut n = 0;
    for field in Fields::new(request) {
        let (number, payload) = field?;
        if number != 1 {
            continue;
        }
        for field in Fields::new(nested(payload, "resource_spans is not length-delimited")?) {
            let (number, payload) = field?;
            if number != 2 {
                continue;
            }
            for field in Fields::new(nested(payload, "scope_spans is not length-delimited")?) {
                if field?.0 == 2 {
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

/// One field's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire types 1 and 5.
    Fixed(u64),
    /// Wire type 2.
    Len(&'a [u8]),
}

/// The fields of one protobuf message, in order: number and payload. Stops after the first
/// error (a truncated field, an unknown wire type).
#[derive(Debug, Clone)]
pub struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    /// The fields of `message`.
    pub fn new(message: &'a [u8]) -> Fields<'a> {
        Fields(message)
    }

    /// How many bytes are left after the fields read so far.
    pub fn rest(&self) -> usize {
        self.0.len()
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first().ok_or("truncated varint")?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], &'static str> {
        let len = usize::try_from(len).map_err(|_| "length out of range")?;
        if len > self.0.len() {
            return Err("truncated field");
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    fn field(&mut self) -> Result<(u64, Field<'a>), &'static str> {
        let key = self.varint()?;
        let payload = match (key & 7) as u32 {
            VARINT => Field::Varint(self.varint()?),
            FIXED64 => Field::Fixed(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            LEN => {
                let len = self.varint()?;
                Field::Len(self.take(len)?)
            }
            FIXED32 => Field::Fixed(u64::from(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            ))),
            _ => return Err("unsupported wire type"),
        };
        Ok((key >> 3, payload))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Field<'a>), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message;

    use super::*;
    use crate::context::SpanContext;
    use crate::record::SpanKind;

    fn record(i: u64) -> SpanRecord {
        let mut r = SpanRecord::new(
            SpanContext {
                trace_id: 0x0af7651916cd43dd8448eb211c80319c + u128::from(i),
                span_id: 0xb7ad6b7169203331 + i,
                sampled: true,
                state: i.is_multiple_of(2).then(|| Arc::from("vendor=x")),
            },
            if i.is_multiple_of(2) {
                Cow::Borrowed("Rod")
            } else {
                Cow::Owned(format!("dagraid.storage.v1.StorageNode/ReadBlocks{i}"))
            },
        );
        r.parent_span_id = if i.is_multiple_of(3) { 0 } else { 1000 + i };
        r.parent_remote = i % 3 == 1;
        r.kind = [SpanKind::Internal, SpanKind::Server, SpanKind::Client][i as usize % 3];
        r.start_ns = 1_700_000_000_000_000_000 + i;
        r.end_ns = 1_700_000_000_000_500_000 + i;
        r.add_attribute("dag_kind", ValueRef::Str("small_write"));
        r.add_attribute("node", ValueRef::Int(i as i64));
        r.add_attribute("negative", ValueRef::Int(-5));
        r.add_attribute("ok", ValueRef::Bool(i.is_multiple_of(2)));
        r.add_attribute("ratio", ValueRef::Double(0.25));
        r.add_attribute("empty", ValueRef::Str(""));
        if i % 2 == 1 {
            r.push_event(
                42,
                "recovery decision",
                &[("mnemonic", ValueRef::Str("Rod"))],
            );
        }
        r.status = match i % 3 {
            0 => Status::Unset,
            1 => Status::Ok,
            _ => Status::Error(i.is_multiple_of(2).then(|| "it broke".to_owned())),
        };
        r
    }

    fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
        match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => format!("s:{s}"),
            Some(any_value::Value::IntValue(i)) => format!("i:{i}"),
            Some(any_value::Value::BoolValue(b)) => format!("b:{b}"),
            Some(any_value::Value::DoubleValue(d)) => format!("d:{d}"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn what_the_encoder_writes_decodes_as_the_otlp_schema_says() {
        let resource = [
            ("service.name".to_owned(), Value::Str("dagraid-node".into())),
            (
                "telemetry.sdk.language".to_owned(),
                Value::Str("rust".into()),
            ),
        ];
        let encoder = RequestEncoder::new(&resource, "dagraid", "0.1.0");
        let spans: Vec<SpanRecord> = (0..40).map(record).collect();
        // Two threads' buffers, say.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for s in &spans[..25] {
            encode_span(&mut a, s);
        }
        for s in &spans[25..] {
            encode_span(&mut b, s);
        }
        let mut out = Vec::new();
        encoder.request(&[&a, &b], &mut out);
        assert!(encoder.head_len() >= out.len() - a.len() - b.len());
        let request = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
        assert_eq!(request.resource_spans.len(), 1);
        let rs = &request.resource_spans[0];
        let res = rs.resource.as_ref().unwrap();
        assert_eq!(res.attributes.len(), 2);
        assert_eq!(res.attributes[0].key, "service.name");
        assert_eq!(text(&res.attributes[0].value), "s:dagraid-node");
        assert_eq!(rs.scope_spans.len(), 1);
        let ss = &rs.scope_spans[0];
        let scope = ss.scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("dagraid", "0.1.0")
        );
        assert_eq!(ss.spans.len(), 40);
        for (got, want) in ss.spans.iter().zip(&spans) {
            assert_eq!(got.trace_id, want.context.trace_id.to_be_bytes());
            assert_eq!(got.span_id, want.context.span_id.to_be_bytes());
            assert_eq!(
                got.trace_state,
                want.context.state.as_deref().unwrap_or_default()
            );
            if want.parent_span_id == 0 {
                assert!(got.parent_span_id.is_empty());
                assert_eq!(got.flags, 1);
            } else {
                assert_eq!(got.parent_span_id, want.parent_span_id.to_be_bytes());
                let remote = if want.parent_remote { 0x200 } else { 0 };
                assert_eq!(got.flags, 1 | 0x100 | remote);
            }
            assert_eq!(got.name, want.name);
            assert_eq!(got.kind, want.kind as i32);
            assert_eq!(got.start_time_unix_nano, want.start_ns);
            assert_eq!(got.end_time_unix_nano, want.end_ns);
            let attrs: Vec<(String, String)> = got
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), text(&kv.value)))
                .collect();
            assert_eq!(
                attrs,
                [
                    ("dag_kind", "s:small_write".to_owned()),
                    (
                        "node",
                        format!("i:{}", want.context.span_id - 0xb7ad6b7169203331)
                    ),
                    ("negative", "i:-5".to_owned()),
                    ("ok", format!("b:{}", want.context.span_id % 2 == 1)),
                    ("ratio", "d:0.25".to_owned()),
                    ("empty", "s:".to_owned()),
                ]
                .map(|(k, v)| (k.to_owned(), v))
            );
            let want_events = want.events();
            assert_eq!(got.events.len(), want_events.len());
            for (e, w) in got.events.iter().zip(&want_events) {
                assert_eq!(e.time_unix_nano, w.time_ns);
                assert_eq!(e.name, w.name);
                assert_eq!(e.attributes[0].key, "mnemonic");
                assert_eq!(text(&e.attributes[0].value), "s:Rod");
            }
            let (code, message) = match &want.status {
                Status::Unset => (0, ""),
                Status::Ok => (1, ""),
                Status::Error(m) => (2, m.as_deref().unwrap_or_default()),
            };
            let status = got.status.clone().unwrap_or_default();
            assert_eq!((status.code, status.message.as_str()), (code, message));
        }
    }

    #[test]
    fn encoded_spans_are_split_on_their_boundaries() {
        let encoder = RequestEncoder::new(&[], "dagraid", "0");
        let spans: Vec<SpanRecord> = (0..10).map(record).collect();
        let mut encoded = Vec::new();
        for s in &spans {
            encode_span(&mut encoded, s);
        }
        let mut out = Vec::new();
        for k in [0, 1, 4, 10] {
            let cut = take_spans(&encoded, k, usize::MAX).1;
            encoder.request(&[&encoded[..cut]], &mut out);
            let request = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
            let got = &request.resource_spans[0].scope_spans[0].spans;
            assert_eq!(got.len(), k);
            assert_eq!(count_spans(&out), Ok(k as u64));
            if k > 0 {
                assert_eq!(
                    got[k - 1].span_id,
                    spans[k - 1].context.span_id.to_be_bytes()
                );
            }
        }
        assert_eq!(
            take_spans(&encoded, 11, usize::MAX).1,
            encoded.len(),
            "fewer than asked: all"
        );
        assert_eq!(take_spans(&[], 3, usize::MAX).1, 0);
    }

    #[test]
    fn the_answer_s_partial_success_is_read() {
        let answer = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 7,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(partial_success(&answer), Ok((7, "too old".to_owned())));
        assert_eq!(partial_success(&[]), Ok((0, String::new())));
        assert!(partial_success(&answer[..answer.len() - 1]).is_err());
    }

    #[test]
    fn varints_have_the_length_they_are_written_with() {
        for v in [0, 1, 127, 128, 16383, 16384, u64::from(u32::MAX), u64::MAX] {
            let mut out = vec![0; varint_len(v)];
            let mut c = Cursor::new(&mut out);
            c.varint(v);
            c.done();
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut f = Fields(&out);
            assert_eq!(f.varint(), Ok(v));
        }
    }
}
