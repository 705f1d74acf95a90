//! The identity of a span across processes: trace id, span id, the sampled flag and the
//! vendor `tracestate`, with the W3C `traceparent` text form and the id generator.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// A span's place in a trace, as W3C trace context carries it between processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanContext {
    /// The trace's id; never zero.
    pub trace_id: u128,
    /// The span's id; never zero.
    pub span_id: u64,
    /// Whether the trace is sampled (recorded and exported).
    pub sampled: bool,
    /// The caller's `tracestate` header, passed on unchanged; `None` when it sent none.
    pub state: Option<Arc<str>>,
}

impl SpanContext {
    /// Parses a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`). A future version's value
    /// is read by its first four fields, as the specification asks; anything malformed, and
    /// all-zero ids, are `None` (the callee then starts a trace of its own).
    pub fn from_traceparent(value: &str) -> Option<SpanContext> {
        let v = value.trim().as_bytes();
        // version "-" trace "-" span "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2.
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let version = hex(&v[..2])?;
        // Version 00 has exactly four fields; later versions may append more after a '-'.
        if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        let trace_id = hex(&v[3..35])?;
        let span_id = hex(&v[36..52])? as u64;
        let flags = hex(&v[53..55])?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(SpanContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
            state: None,
        })
    }

    /// The `traceparent` header value of this context (version 00).
    pub fn traceparent(&self) -> String {
        String::from_utf8_lossy(&self.traceparent_bytes()).into_owned()
    }

    /// [`SpanContext::traceparent`] without an allocation.
    pub fn traceparent_bytes(&self) -> [u8; 55] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 55];
        out[0] = b'0';
        out[1] = b'0';
        for (i, o) in out[3..35].iter_mut().enumerate() {
            *o = DIGITS[((self.trace_id >> (124 - 4 * i)) & 0xf) as usize];
        }
        for (i, o) in out[36..52].iter_mut().enumerate() {
            *o = DIGITS[((self.span_id >> (60 - 4 * i)) & 0xf) as usize];
        }
        out[53] = b'0';
        out[54] = if self.sampled { b'1' } else { b'0' };
        out
    }
}

/// Lower-case hex digits (what W3C trace context allows) as a number; `None` for anything else.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some((n << 4) | u128::from(v))
    })
}

impl fmt::Display for SpanContext {
    /// The `traceparent` form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

thread_local! {
    /// This thread's id generator state (splitmix64), seeded from the process's random hasher
    /// keys and the thread's own address space position, so threads never share a sequence.
    static ID_STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    let local = 0u8;
    h.write_usize(std::ptr::addr_of!(local) as usize);
    h.finish()
}

/// A random non-zero `u64` (splitmix64 over a per-thread state: ids, not secrets).
fn next_u64() -> u64 {
    ID_STATE.with(|state| {
        loop {
            let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(s);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    })
}

/// A new span id.
pub(crate) fn new_span_id() -> u64 {
    next_u64()
}

/// A new trace id (random in all 128 bits, as the W3C `random` flag assumes).
pub(crate) fn new_trace_id() -> u128 {
    (u128::from(next_u64()) << 64) | u128::from(next_u64())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_what_the_specification_rejects() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = SpanContext::from_traceparent(tp).unwrap();
        assert_eq!(cx.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(cx.span_id, 0xb7ad6b7169203331);
        assert!(cx.sampled);
        assert_eq!(cx.traceparent(), tp);
        assert_eq!(cx.to_string(), tp);
        for (trace_id, span_id) in [(1u128, 1u64), (u128::MAX, u64::MAX), (0x10 << 100, 0xf00)] {
            let cx = SpanContext {
                trace_id,
                span_id,
                sampled: false,
                state: None,
            };
            assert_eq!(
                cx.traceparent(),
                format!("00-{trace_id:032x}-{span_id:016x}-00")
            );
            assert_eq!(SpanContext::from_traceparent(&cx.traceparent()), Some(cx));
        }
        let unsampled = SpanContext::from_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )
        .unwrap();
        assert!(!unsampled.sampled);
        assert!(unsampled.traceparent().ends_with("-00"));
        assert!(
            SpanContext::from_traceparent(&format!(" {tp} ")).is_some(),
            "trimmed"
        );
        // A later version with an extra field is read by its first four.
        assert!(
            SpanContext::from_traceparent(
                "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-ever"
            )
            .is_some()
        );
        for bad in [
            "",
            "00",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
        ] {
            assert_eq!(SpanContext::from_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ids_are_non_zero_and_do_not_repeat() {
        let spans: HashSet<u64> = (0..100_000).map(|_| new_span_id()).collect();
        assert_eq!(spans.len(), 100_000);
        assert!(!spans.contains(&0));
        let traces: HashSet<u128> = (0..10_000).map(|_| new_trace_id()).collect();
        assert_eq!(traces.len(), 10_000);
        // Another thread has a sequence of its own.
        let other: HashSet<u64> =
            std::thread::spawn(|| (0..100_000).map(|_| new_span_id()).collect())
                .join()
                .unwrap();
        assert!(spans.is_disjoint(&other));
    }
}
