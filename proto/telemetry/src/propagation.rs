//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata, with the SDK's
//! `TraceContextPropagator`: callers inject the current context, servers extract their call
//! span's parent.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http::HeaderMap;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Dispatch;
use tracing::span::Id;
use tracing_subscriber::registry::{LookupSpan, Registry};

/// Writes into gRPC metadata, every value marked sensitive: HTTP/2 sends it as a
/// never-indexed literal. A `traceparent` differs on every call; indexed, it would only push
/// the headers that repeat (content type, authorization, timeout) out of the connection's
/// HPACK table, costing every call a re-encoding of them. An empty value (the propagator's
/// `tracestate` of a context without one) is not sent.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(key), Ok(mut value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            value.set_sensitive(true);
            self.0.insert(key, value);
        }
    }
}

/// Reads a served call's HTTP/2 headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The context a call made now should carry: that of the current `tracing` span, or of the
/// nearest span above it that an OpenTelemetry layer (dagraid's, or an application's own
/// `tracing-opentelemetry` layer) records: dagraid's export layer records nothing below a span
/// that is not sampled, and a call made there still carries the trace and its decision (not
/// sampled). Without such a span, the current OpenTelemetry context (an application using the
/// OpenTelemetry API directly).
pub fn current_context() -> opentelemetry::Context {
    tracing::dispatcher::get_default(|d| recorded_context(d, d.current_span().id().cloned()))
        .filter(|cx| cx.span().span_context().is_valid())
        .unwrap_or_else(opentelemetry::Context::current)
}

/// The OpenTelemetry context of span `id` or, when no OpenTelemetry layer records it, of the
/// nearest span above it (by parent, not by what the thread entered) that one records.
pub(crate) fn recorded_context(dispatch: &Dispatch, id: Option<Id>) -> Option<Context> {
    let registry = dispatch.downcast_ref::<Registry>();
    let mut span = id;
    while let Some(id) = span {
        if let Some(cx) = tracing_opentelemetry::get_otel_context(&id, dispatch) {
            return Some(cx);
        }
        span = registry?.span(&id)?.parent().map(|p| p.id());
    }
    None
}

/// Adds the current context ([`current_context`]) to `metadata`, so the callee's spans join
/// this trace. Nothing is added when there is no valid context.
pub fn inject_current(metadata: &mut MetadataMap) {
    inject(&current_context(), metadata);
}

/// Adds `cx` to `metadata` as `traceparent` (and `tracestate` when it has one).
pub fn inject(cx: &opentelemetry::Context, metadata: &mut MetadataMap) {
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut MetadataInjector(metadata));
    }
}

/// The caller's context in a served call's headers (an empty context when there is none, or
/// when it is invalid: the call then starts a trace of its own).
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn remote(state: TraceState) -> opentelemetry::Context {
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
            SpanId::from(0xb7ad6b7169203331_u64),
            TraceFlags::SAMPLED,
            true,
            state,
        ))
    }

    #[test]
    fn a_context_survives_metadata_never_indexed() {
        let state = TraceState::from_key_value([("congo", "t61rcWkgMzE")]).unwrap();
        let mut md = MetadataMap::new();
        inject(&remote(state), &mut md);
        assert_eq!(
            md.get("traceparent").unwrap(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(md.get("tracestate").unwrap(), "congo=t61rcWkgMzE");
        assert!(
            md.get("traceparent").unwrap().is_sensitive(),
            "never indexed"
        );
        let back = extract(&md.into_headers());
        let sc = back.span().span_context().clone();
        assert_eq!(
            sc.trace_id(),
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128)
        );
        assert_eq!(sc.span_id(), SpanId::from(0xb7ad6b7169203331_u64));
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "congo=t61rcWkgMzE");
        let mut bad = HeaderMap::new();
        bad.insert("traceparent", "00-zz-yy-01".parse().unwrap());
        assert!(!extract(&bad).span().span_context().is_valid());
    }

    #[test]
    fn without_a_span_nothing_is_injected_unless_opentelemetry_has_a_context() {
        let mut md = MetadataMap::new();
        inject_current(&mut md);
        assert!(md.is_empty());
        // An application's own OpenTelemetry context is carried on.
        let _attached = remote(TraceState::default()).attach();
        inject_current(&mut md);
        assert_eq!(
            md.get("traceparent").unwrap(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert!(md.get("tracestate").is_none());
    }
}
