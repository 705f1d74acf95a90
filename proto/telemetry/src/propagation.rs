//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata: injected by callers from
//! their current `tracing` span, extracted by servers into the parent of their call span.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http::HeaderMap;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Adds the current `tracing` span's trace context to `metadata`, so the callee's spans join
/// this trace. Costs one branch when the current span is disabled or not exported.
pub fn inject_current(metadata: &mut MetadataMap) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    inject(&span.context(), metadata);
}

/// Adds `cx`'s trace context to `metadata` (nothing if `cx` has no valid span).
pub fn inject(cx: &Context, metadata: &mut MetadataMap) {
    if !cx.span().span_context().is_valid() {
        return;
    }
    TraceContextPropagator::new().inject_context(cx, &mut MetadataInjector(metadata));
}

/// The trace context a call carries in its headers (an empty context when none).
pub fn extract(headers: &HeaderMap) -> Context {
    if !headers.contains_key("traceparent") {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    #[test]
    fn a_context_survives_metadata() {
        let sc = SpanContext::new(
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
            SpanId::from(0xb7ad6b7169203331_u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        let mut md = MetadataMap::new();
        inject(&cx, &mut md);
        assert_eq!(
            md.get("traceparent").unwrap(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        let headers = md.into_headers();
        let back = extract(&headers);
        let got = back.span().span_context().clone();
        assert_eq!(got.trace_id(), sc.trace_id());
        assert_eq!(got.span_id(), sc.span_id());
        assert!(got.is_sampled());
        // Nothing to inject, nothing extracted.
        let mut empty = MetadataMap::new();
        inject(&Context::new(), &mut empty);
        assert!(empty.is_empty());
        assert!(!extract(&HeaderMap::new()).span().span_context().is_valid());
    }
}
