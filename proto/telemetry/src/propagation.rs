//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata, injected by callers from
//! their current `tracing` span. Servers do not extract it here: their call span
//! ([`crate::grpc`]) records the headers in its `traceparent` / `tracestate` fields, and the
//! export layer makes the span a child of that context.

use opentelemetry::trace::TraceContextExt;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::context::SpanContext;

/// Adds the current `tracing` span's trace context to `metadata`, so the callee's spans join
/// this trace. The context is the export layer's, or, in a process that exports with
/// OpenTelemetry's own SDK (an application using the client SDK under `tracing-opentelemetry`,
/// say), the current OpenTelemetry context. Costs one branch when no span is current.
pub fn inject_current(metadata: &mut MetadataMap) {
    if let Some(cx) = crate::layer::current_context() {
        inject(&cx, metadata);
        return;
    }
    let otel = opentelemetry::Context::current();
    let otel = otel.span();
    let sc = otel.span_context();
    if sc.is_valid() {
        let state = sc.trace_state().header();
        inject(
            &SpanContext {
                trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
                span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
                sampled: sc.is_sampled(),
                state: (!state.is_empty()).then(|| state.into()),
            },
            metadata,
        );
    }
}

/// Adds `cx` to `metadata` as `traceparent` (and `tracestate` when it has one).
///
/// Both are marked sensitive, which HTTP/2 sends as never-indexed literals: a `traceparent`
/// differs on every call, and indexing it would only push the headers that repeat (content
/// type, authorization, timeout) out of the connection's HPACK table, costing every call a
/// re-encoding of them.
pub fn inject(cx: &SpanContext, metadata: &mut MetadataMap) {
    if let Ok(mut v) = MetadataValue::try_from(&cx.traceparent_bytes()[..]) {
        v.set_sensitive(true);
        metadata.insert("traceparent", v);
    }
    if let Some(state) = &cx.state
        && let Ok(mut v) = MetadataValue::try_from(state.as_ref())
    {
        v.set_sensitive(true);
        metadata.insert("tracestate", v);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    #[test]
    fn a_context_survives_metadata() {
        let cx = SpanContext {
            trace_id: 0x0af7651916cd43dd8448eb211c80319c,
            span_id: 0xb7ad6b7169203331,
            sampled: true,
            state: Some("congo=t61rcWkgMzE".into()),
        };
        let mut md = MetadataMap::new();
        inject(&cx, &mut md);
        assert_eq!(
            md.get("traceparent").unwrap(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(md.get("tracestate").unwrap(), "congo=t61rcWkgMzE");
        assert!(
            md.get("traceparent").unwrap().is_sensitive(),
            "never indexed"
        );
        // What the server's span records reads back as the same context.
        let back = SpanContext::from_traceparent(md.get("traceparent").unwrap().to_str().unwrap());
        assert_eq!(
            back,
            Some(SpanContext {
                state: None,
                ..cx.clone()
            })
        );
        assert_eq!(
            SpanContext::from_traceparent("00-zz-yy-01"),
            None,
            "an invalid traceparent is no parent"
        );
    }

    #[test]
    fn without_a_span_nothing_is_injected_unless_opentelemetry_has_a_context() {
        let mut md = MetadataMap::new();
        inject_current(&mut md);
        assert!(md.is_empty());
        // An application's own OpenTelemetry context is carried on.
        let sc = opentelemetry::trace::SpanContext::new(
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
            SpanId::from(0xb7ad6b7169203331_u64),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let _attached = opentelemetry::Context::new()
            .with_remote_span_context(sc)
            .attach();
        inject_current(&mut md);
        assert_eq!(
            md.get("traceparent").unwrap(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert!(md.get("tracestate").is_none());
    }
}
