//! The OTLP trace protocol on the wire: an `ExportTraceServiceRequest` written straight from
//! [`SpanRecord`]s into protobuf bytes (no intermediate message types, no per-span allocation),
//! and the fields of the collector's answer read back without a decoder.
//!
//! The schema is `opentelemetry/proto/collector/trace/v1/trace_service.proto` and the messages
//! it includes (trace, common, resource), version 1.x. Each message's size is computed before
//! it is written, as protobuf's length-delimited fields need; the tests decode what this writes
//! with `opentelemetry-proto`'s generated types.

use crate::record::{Attribute, SpanEvent, SpanRecord, Status, Value};

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// The span flag bits (`SpanFlags`): the parent's remoteness is known, and it is remote.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

fn varint_len(v: u64) -> usize {
    ((64 - (v | 1).leading_zeros() as usize) + 6) / 7
}

fn key_len(tag: u32) -> usize {
    varint_len(u64::from(tag << 3))
}

/// A length-delimited field of `len` bytes of payload, in all.
fn len_field(tag: u32, len: usize) -> usize {
    key_len(tag) + varint_len(len as u64) + len
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, tag: u32, wire: u32) {
    put_varint(out, u64::from((tag << 3) | wire));
}

fn put_len(out: &mut Vec<u8>, tag: u32, len: usize) {
    put_key(out, tag, LEN);
    put_varint(out, len as u64);
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_len(out, tag, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_fixed64(out: &mut Vec<u8>, tag: u32, v: u64) {
    put_key(out, tag, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

// --- common.v1: AnyValue, KeyValue.

fn any_value_len(v: &Value) -> usize {
    match v {
        Value::Str(s) => len_field(1, s.len()),
        Value::Bool(_) => key_len(2) + 1,
        Value::Int(i) => key_len(3) + varint_len(*i as u64),
        Value::Double(_) => key_len(4) + 8,
    }
}

fn put_any_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => put_bytes(out, 1, s.as_bytes()),
        Value::Bool(b) => {
            put_key(out, 2, VARINT);
            out.push(u8::from(*b));
        }
        Value::Int(i) => {
            put_key(out, 3, VARINT);
            put_varint(out, *i as u64);
        }
        Value::Double(d) => put_fixed64(out, 4, d.to_bits()),
    }
}

fn key_value_len(key: &str, value: &Value) -> usize {
    len_field(1, key.len()) + len_field(2, any_value_len(value))
}

fn put_key_value(out: &mut Vec<u8>, tag: u32, key: &str, value: &Value) {
    put_len(out, tag, key_value_len(key, value));
    put_bytes(out, 1, key.as_bytes());
    put_len(out, 2, any_value_len(value));
    put_any_value(out, value);
}

fn attributes_len(tag: u32, attributes: &[Attribute]) -> usize {
    attributes
        .iter()
        .map(|a| len_field(tag, key_value_len(a.key, &a.value)))
        .sum()
}

fn put_attributes(out: &mut Vec<u8>, tag: u32, attributes: &[Attribute]) {
    for a in attributes {
        put_key_value(out, tag, a.key, &a.value);
    }
}

// --- trace.v1: Span, Span.Event, Status.

fn event_len(e: &SpanEvent) -> usize {
    key_len(1) + 8 + len_field(2, e.name.len()) + attributes_len(3, &e.attributes)
}

fn put_event(out: &mut Vec<u8>, e: &SpanEvent) {
    put_len(out, 11, event_len(e));
    put_fixed64(out, 1, e.time_ns);
    put_bytes(out, 2, e.name.as_bytes());
    put_attributes(out, 3, &e.attributes);
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

fn put_status(out: &mut Vec<u8>, s: &Status) {
    let (code, message) = match s {
        Status::Unset => return,
        Status::Ok => (1, None),
        Status::Error(message) => (2, message.as_deref()),
    };
    put_len(out, 15, status_len(s));
    if let Some(m) = message {
        put_bytes(out, 2, m.as_bytes());
    }
    put_key(out, 3, VARINT);
    put_varint(out, code);
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
    n += attributes_len(9, &s.attributes);
    n += s
        .events
        .iter()
        .map(|e| len_field(11, event_len(e)))
        .sum::<usize>();
    if s.status != Status::Unset {
        n += len_field(15, status_len(&s.status));
    }
    n + key_len(16) + 4
}

fn put_span(out: &mut Vec<u8>, s: &SpanRecord, len: usize) {
    let start = out.len();
    let cx = &s.context;
    put_len(out, 2, len); // ScopeSpans.spans
    let body = out.len();
    put_bytes(out, 1, &cx.trace_id.to_be_bytes());
    put_bytes(out, 2, &cx.span_id.to_be_bytes());
    if let Some(state) = &cx.state {
        put_bytes(out, 3, state.as_bytes());
    }
    if s.parent_span_id != 0 {
        put_bytes(out, 4, &s.parent_span_id.to_be_bytes());
    }
    put_bytes(out, 5, s.name.as_bytes());
    put_key(out, 6, VARINT);
    out.push(s.kind as u8);
    put_fixed64(out, 7, s.start_ns);
    put_fixed64(out, 8, s.end_ns);
    put_attributes(out, 9, &s.attributes);
    for e in &s.events {
        put_event(out, e);
    }
    put_status(out, &s.status);
    let mut flags = u32::from(cx.sampled);
    if s.parent_span_id != 0 {
        flags |= FLAG_HAS_IS_REMOTE;
        if s.parent_remote {
            flags |= FLAG_IS_REMOTE;
        }
    }
    put_key(out, 16, FIXED32);
    out.extend_from_slice(&flags.to_le_bytes());
    debug_assert_eq!(out.len() - body, len, "span size computed wrong");
    debug_assert!(out.len() > start);
}

/// Writes export requests for one process: its resource and instrumentation scope are encoded
/// once, each batch's spans behind them.
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
            put_key_value(&mut body, 1, k, v);
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

    /// Writes into `out` (cleared first) an `ExportTraceServiceRequest` with the first spans of
    /// `spans`, as many as fit in `max_bytes` (at least one, whatever its size), and returns
    /// how many it took.
    pub fn encode(&self, spans: &[SpanRecord], max_bytes: usize, out: &mut Vec<u8>) -> usize {
        out.clear();
        if spans.is_empty() {
            return 0;
        }
        let fixed = self.resource.len() + self.scope.len() + 32;
        let mut lens = Vec::with_capacity(spans.len());
        let mut spans_bytes = 0;
        for s in spans {
            let len = span_len(s);
            let field = len_field(2, len);
            if !lens.is_empty() && fixed + spans_bytes + field > max_bytes {
                break;
            }
            spans_bytes += field;
            lens.push(len);
        }
        let scope_spans = self.scope.len() + spans_bytes;
        let resource_spans = self.resource.len() + len_field(2, scope_spans);
        out.reserve(len_field(1, resource_spans));
        put_len(out, 1, resource_spans); // ExportTraceServiceRequest.resource_spans
        out.extend_from_slice(&self.resource);
        put_len(out, 2, scope_spans); // ResourceSpans.scope_spans
        out.extend_from_slice(&self.scope);
        for (s, len) in spans.iter().zip(&lens) {
            put_span(out, s, *len);
        }
        lens.len()
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

    fn attr(key: &'static str, value: Value) -> Attribute {
        Attribute { key, value }
    }

    fn record(i: u64) -> SpanRecord {
        SpanRecord {
            context: SpanContext {
                trace_id: 0x0af7651916cd43dd8448eb211c80319c + u128::from(i),
                span_id: 0xb7ad6b7169203331 + i,
                sampled: true,
                state: (i % 2 == 0).then(|| Arc::from("vendor=x")),
            },
            parent_span_id: if i % 3 == 0 { 0 } else { 1000 + i },
            parent_remote: i % 3 == 1,
            name: if i % 2 == 0 {
                Cow::Borrowed("Rod")
            } else {
                Cow::Owned(format!("dagraid.storage.v1.StorageNode/ReadBlocks{i}"))
            },
            kind: [SpanKind::Internal, SpanKind::Server, SpanKind::Client][i as usize % 3],
            start_ns: 1_700_000_000_000_000_000 + i,
            end_ns: 1_700_000_000_000_500_000 + i,
            attributes: vec![
                attr("dag_kind", Value::Str("small_write".into())),
                attr("node", Value::Int(i as i64)),
                attr("negative", Value::Int(-5)),
                attr("ok", Value::Bool(i % 2 == 0)),
                attr("ratio", Value::Double(0.25)),
                attr("empty", Value::Str(String::new())),
            ],
            events: if i % 2 == 1 {
                vec![SpanEvent {
                    time_ns: 42,
                    name: "recovery decision".into(),
                    attributes: vec![attr("mnemonic", Value::Str("Rod".into()))],
                }]
            } else {
                Vec::new()
            },
            status: match i % 3 {
                0 => Status::Unset,
                1 => Status::Ok,
                _ => Status::Error((i % 2 == 0).then(|| "it broke".to_owned())),
            },
        }
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
        let mut out = Vec::new();
        assert_eq!(encoder.encode(&spans, usize::MAX, &mut out), 40);
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
            assert_eq!(got.events.len(), want.events.len());
            for (e, w) in got.events.iter().zip(&want.events) {
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
    fn a_batch_is_cut_to_the_size_limit_and_never_empty() {
        let encoder = RequestEncoder::new(&[], "dagraid", "0");
        let spans: Vec<SpanRecord> = (0..100).map(record).collect();
        let mut out = Vec::new();
        let mut taken = 0;
        let mut requests = 0;
        while taken < spans.len() {
            let n = encoder.encode(&spans[taken..], 2000, &mut out);
            assert!(n >= 1);
            assert!(
                out.len() <= 2000 || n == 1,
                "{} bytes for {n} spans",
                out.len()
            );
            let request = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
            let got = &request.resource_spans[0].scope_spans[0].spans;
            assert_eq!(got.len(), n);
            assert_eq!(got[0].span_id, spans[taken].context.span_id.to_be_bytes());
            taken += n;
            requests += 1;
        }
        assert!(requests > 1, "the limit cut the batch");
        // A span larger than the limit still goes, alone.
        assert_eq!(encoder.encode(&spans, 10, &mut out), 1);
        assert_eq!(encoder.encode(&[], 10, &mut out), 0);
        assert!(out.is_empty());
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
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut f = Fields(&out);
            assert_eq!(f.varint(), Ok(v));
        }
    }
}
