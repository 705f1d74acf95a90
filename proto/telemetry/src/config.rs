//! What the telemetry of one process is: the standard OpenTelemetry variables and their flags.
//!
//! Precedence: a flag, then its variable (clap reads both), then the default. Export is off
//! unless an endpoint is given: with no endpoint nothing but the local log is set up.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataKey, MetadataValue};

/// The trace flags every dagraid binary accepts (flattened into its command line). Each has the
/// standard OpenTelemetry variable as its environment form.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct TelemetryArgs {
    /// OTLP/gRPC endpoint to export traces to, e.g. http://127.0.0.1:4317 (Jaeger, an
    /// OpenTelemetry collector). No endpoint: no export.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans [default: the binary's name].
    #[arg(long, value_name = "NAME", env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
    /// Sampler: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off or parentbased_traceidratio [default: parentbased_always_on].
    #[arg(long, value_name = "SAMPLER", env = "OTEL_TRACES_SAMPLER")]
    pub trace_sampler: Option<String>,
    /// The sampler's argument: the ratio of traces kept (0 to 1) by the traceidratio
    /// samplers [default: 1].
    #[arg(long, value_name = "RATIO", env = "OTEL_TRACES_SAMPLER_ARG")]
    pub trace_sampler_arg: Option<String>,
}

/// Which traces are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    /// Every trace.
    AlwaysOn,
    /// None.
    AlwaysOff,
    /// This ratio of root traces, by trace id.
    Ratio(f64),
    /// The caller's decision when a call carries a trace context; for roots, the inner choice.
    ParentBased(ParentlessChoice),
}

/// The decision for traces that start here ([`SamplerChoice::ParentBased`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentlessChoice {
    /// Every root trace.
    AlwaysOn,
    /// No root trace (only calls that arrive sampled are traced).
    AlwaysOff,
    /// This ratio of root traces.
    Ratio(f64),
}

impl SamplerChoice {
    /// Parses the `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` pair.
    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Result<SamplerChoice, String> {
        let ratio = || -> Result<f64, String> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(a) => match a.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(format!(
                        "the trace sampler argument must be a ratio from 0 to 1, got {a:?}"
                    )),
                },
            }
        };
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        Ok(match name.unwrap_or("parentbased_always_on") {
            "always_on" => SamplerChoice::AlwaysOn,
            "always_off" => SamplerChoice::AlwaysOff,
            "traceidratio" => SamplerChoice::Ratio(ratio()?),
            "parentbased_always_on" => SamplerChoice::ParentBased(ParentlessChoice::AlwaysOn),
            "parentbased_always_off" => SamplerChoice::ParentBased(ParentlessChoice::AlwaysOff),
            "parentbased_traceidratio" => {
                SamplerChoice::ParentBased(ParentlessChoice::Ratio(ratio()?))
            }
            other => {
                return Err(format!(
                    "unknown trace sampler {other:?}: expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ));
            }
        })
    }

    /// Whether a span of trace `trace_id` is sampled, given its parent's decision (`None` for
    /// a root). The ratio samplers decide by the trace id (its lower 64 bits, as the
    /// OpenTelemetry SDKs do), so every process of a trace takes the same decision.
    pub fn sampled(self, parent: Option<bool>, trace_id: u128) -> bool {
        let ratio = |r: f64| {
            if r >= 1.0 {
                true
            } else if r <= 0.0 {
                false
            } else {
                let bound = (r * (1u64 << 63) as f64) as u64;
                ((trace_id as u64) >> 1) < bound
            }
        };
        match self {
            SamplerChoice::AlwaysOn => true,
            SamplerChoice::AlwaysOff => false,
            SamplerChoice::Ratio(r) => ratio(r),
            SamplerChoice::ParentBased(inner) => match (parent, inner) {
                (Some(sampled), _) => sampled,
                (None, ParentlessChoice::AlwaysOn) => true,
                (None, ParentlessChoice::AlwaysOff) => false,
                (None, ParentlessChoice::Ratio(r)) => ratio(r),
            },
        }
    }
}

/// How the batch exporter queues and sends spans (the standard `OTEL_BSP_*` variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Spans waiting for export at most; a span ending while the queue is full is dropped and
    /// counted (`OTEL_BSP_MAX_QUEUE_SIZE`, default 8192).
    pub max_queue: usize,
    /// Spans per export call at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default 512).
    pub max_batch: usize,
    /// Longest a span waits before its batch is sent (`OTEL_BSP_SCHEDULE_DELAY`, ms, default
    /// 1000).
    pub delay: Duration,
    /// Deadline of one export call (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` or `OTEL_BSP_EXPORT_TIMEOUT`, the first one set, ms,
    /// default 10000).
    pub export_timeout: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_queue: 8192,
            max_batch: 512,
            delay: Duration::from_millis(1000),
            export_timeout: Duration::from_secs(10),
        }
    }
}

impl BatchSettings {
    /// The defaults, overridden by the `OTEL_BSP_*` (and OTLP timeout) variables that are set.
    pub fn from_env() -> Result<BatchSettings, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`BatchSettings::from_env`] with the variables `lookup` gives.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<BatchSettings, String> {
        let var = |name: &str| -> Result<Option<u64>, String> {
            match lookup(name) {
                Some(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| format!("{name} must be a whole number, got {v:?}")),
                _ => Ok(None),
            }
        };
        let mut s = BatchSettings::default();
        if let Some(n) = var("OTEL_BSP_MAX_QUEUE_SIZE")? {
            s.max_queue = (n as usize).max(1);
        }
        if let Some(n) = var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
            s.max_batch = (n as usize).max(1);
        }
        if let Some(ms) = var("OTEL_BSP_SCHEDULE_DELAY")? {
            s.delay = Duration::from_millis(ms.max(1));
        }
        for name in [
            "OTEL_BSP_EXPORT_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        ] {
            // The later, more specific one wins.
            if let Some(ms) = var(name)? {
                s.export_timeout = Duration::from_millis(ms.max(1));
            }
        }
        s.max_batch = s.max_batch.min(s.max_queue);
        Ok(s)
    }
}

/// The resolved trace settings of one process.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// Where spans go; `None`: tracing export is off.
    pub endpoint: Option<String>,
    /// `service.name`.
    pub service_name: String,
    /// Which traces are kept.
    pub sampler: SamplerChoice,
    /// Queueing and batching.
    pub batch: BatchSettings,
    /// More attributes of the process's resource (`OTEL_RESOURCE_ATTRIBUTES`), besides
    /// `service.name`.
    pub resource_attributes: Vec<(String, String)>,
    /// gRPC metadata sent with every export call (`OTEL_EXPORTER_OTLP_TRACES_HEADERS` or
    /// `OTEL_EXPORTER_OTLP_HEADERS`), e.g. a collector's API key; valid metadata, checked by
    /// [`TraceSettings::resolve`].
    pub headers: Vec<(String, String)>,
}

impl Default for TraceSettings {
    /// No export; service `dagraid`, the default sampler and batching, nothing more.
    fn default() -> Self {
        TraceSettings {
            endpoint: None,
            service_name: "dagraid".into(),
            sampler: SamplerChoice::ParentBased(ParentlessChoice::AlwaysOn),
            batch: BatchSettings::default(),
            resource_attributes: Vec::new(),
            headers: Vec::new(),
        }
    }
}

impl TraceSettings {
    /// Resolves `args` (flags and the standard variables) for a process whose default service
    /// name is `default_service`. `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, when set, wins over the
    /// general endpoint, as the OpenTelemetry specification says.
    pub fn resolve(args: &TelemetryArgs, default_service: &str) -> Result<TraceSettings, String> {
        let traces_endpoint = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok();
        let endpoint = traces_endpoint
            .or_else(|| args.otlp_endpoint.clone())
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty());
        if let Some(e) = &endpoint {
            if e.starts_with("https://") {
                return Err(format!(
                    "the OTLP endpoint {e:?} needs TLS, which dagraid does not include: use an http:// endpoint (a collector on the host or the private network)"
                ));
            }
            if !e.starts_with("http://") {
                return Err(format!(
                    "the OTLP endpoint must be an http:// URL, got {e:?}"
                ));
            }
        }
        let service_name = args
            .service_name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(default_service)
            .to_owned();
        Ok(TraceSettings {
            endpoint,
            service_name,
            sampler: SamplerChoice::parse(
                args.trace_sampler.as_deref(),
                args.trace_sampler_arg.as_deref(),
            )?,
            batch: BatchSettings::from_env()?,
            resource_attributes: key_values("OTEL_RESOURCE_ATTRIBUTES")?,
            headers: headers()?,
        })
    }
}

/// The `key=value` list in variable `name` (empty when unset).
fn key_values(name: &str) -> Result<Vec<(String, String)>, String> {
    parse_key_values(name, &std::env::var(name).unwrap_or_default())
}

/// The export calls' metadata: `OTEL_EXPORTER_OTLP_TRACES_HEADERS` when set, else
/// `OTEL_EXPORTER_OTLP_HEADERS`; each pair must be valid ASCII gRPC metadata.
fn headers() -> Result<Vec<(String, String)>, String> {
    let name = if std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_HEADERS").is_some() {
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
    } else {
        "OTEL_EXPORTER_OTLP_HEADERS"
    };
    let headers = key_values(name)?;
    metadata(name, &headers)?;
    Ok(headers)
}

/// One pair of ASCII gRPC metadata.
pub type MetadataPair = (MetadataKey<Ascii>, MetadataValue<Ascii>);

/// `headers` (from variable `name`) as ASCII gRPC metadata; an error names the pair that is
/// not valid metadata.
pub fn metadata(name: &str, headers: &[(String, String)]) -> Result<Vec<MetadataPair>, String> {
    headers
        .iter()
        .map(|(k, v)| {
            let key = MetadataKey::from_bytes(k.as_bytes())
                .map_err(|_| format!("{name}: {k:?} is not a valid gRPC metadata key"))?;
            let value = MetadataValue::try_from(v.as_str())
                .map_err(|_| format!("{name}: the value of {k:?} is not valid gRPC metadata"))?;
            Ok((key, value))
        })
        .collect()
}

/// Parses the value `text` of variable `name` (`OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_EXPORTER_OTLP_HEADERS`): `key=value` pairs separated by commas, values
/// percent-encoded (the W3C baggage form the specification names).
pub fn parse_key_values(name: &str, text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{name}: {pair:?} is not key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{name}: {pair:?} has no key"));
        }
        let value = percent_decode(value.trim())
            .ok_or_else(|| format!("{name}: {pair:?} has a bad %-escape"))?;
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_parse_like_the_specification_says() {
        let p = |n, a| SamplerChoice::parse(n, a);
        assert_eq!(
            p(None, None).unwrap(),
            SamplerChoice::ParentBased(ParentlessChoice::AlwaysOn)
        );
        assert_eq!(p(Some("always_on"), None).unwrap(), SamplerChoice::AlwaysOn);
        assert_eq!(
            p(Some("always_off"), Some("0.5")).unwrap(),
            SamplerChoice::AlwaysOff
        );
        assert_eq!(
            p(Some("traceidratio"), Some("0.25")).unwrap(),
            SamplerChoice::Ratio(0.25)
        );
        assert_eq!(
            p(Some("traceidratio"), None).unwrap(),
            SamplerChoice::Ratio(1.0)
        );
        assert_eq!(
            p(Some("parentbased_traceidratio"), Some("0.1")).unwrap(),
            SamplerChoice::ParentBased(ParentlessChoice::Ratio(0.1))
        );
        assert_eq!(
            p(Some("parentbased_always_off"), None).unwrap(),
            SamplerChoice::ParentBased(ParentlessChoice::AlwaysOff)
        );
        for bad in ["1.5", "-0.1", "half"] {
            let e = p(Some("traceidratio"), Some(bad)).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert!(
            p(Some("sometimes"), None)
                .unwrap_err()
                .contains("sometimes")
        );
    }

    #[test]
    fn batch_settings_come_from_the_variables_and_the_specific_timeout_wins() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            BatchSettings::from_vars(vars(&[])).unwrap(),
            BatchSettings::default()
        );
        let s = BatchSettings::from_vars(vars(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "1000"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ]))
        .unwrap();
        assert_eq!(s.max_queue, 100);
        assert_eq!(s.max_batch, 100, "a batch never exceeds the queue");
        assert_eq!(s.delay, Duration::from_millis(250));
        assert_eq!(s.export_timeout, Duration::from_millis(2000));
        let s = BatchSettings::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "3000"),
        ]))
        .unwrap();
        assert_eq!(s.export_timeout, Duration::from_millis(3000));
        let e = BatchSettings::from_vars(vars(&[("OTEL_BSP_SCHEDULE_DELAY", "soon")])).unwrap_err();
        assert!(
            e.contains("OTEL_BSP_SCHEDULE_DELAY") && e.contains("soon"),
            "{e}"
        );
    }

    #[test]
    fn samplers_decide_like_the_specification_says() {
        let root = None;
        assert!(SamplerChoice::AlwaysOn.sampled(Some(false), 5));
        assert!(!SamplerChoice::AlwaysOff.sampled(Some(true), 5));
        let parent_based = SamplerChoice::ParentBased(ParentlessChoice::AlwaysOff);
        assert!(parent_based.sampled(Some(true), 5));
        assert!(!parent_based.sampled(root, 5));
        assert!(SamplerChoice::ParentBased(ParentlessChoice::AlwaysOn).sampled(root, 5));
        // A ratio keeps about that share of trace ids, and decides the same for the same id.
        let ids =
            (0..20_000u128).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
        let kept = ids
            .clone()
            .filter(|id| SamplerChoice::Ratio(0.25).sampled(root, *id))
            .count();
        assert!((4_000..6_000).contains(&kept), "{kept}");
        for id in ids.take(100) {
            let r = SamplerChoice::Ratio(0.5).sampled(root, id);
            assert_eq!(
                SamplerChoice::ParentBased(ParentlessChoice::Ratio(0.5)).sampled(root, id),
                r
            );
            assert_eq!(SamplerChoice::Ratio(0.5).sampled(Some(!r), id), r);
        }
        assert!(!SamplerChoice::Ratio(0.0).sampled(root, u128::MAX));
        assert!(SamplerChoice::Ratio(1.0).sampled(root, u128::MAX));
    }

    #[test]
    fn key_value_lists_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_key_values("X", " deployment.environment=prod , team=storage%2Craid,").unwrap(),
            vec![
                ("deployment.environment".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "storage,raid".to_owned()),
            ]
        );
        assert_eq!(parse_key_values("X", "").unwrap(), vec![]);
        for bad in ["novalue", "=x", "k=%zz", "k=%4"] {
            let e = parse_key_values("OTEL_X", bad).unwrap_err();
            assert!(e.contains(bad) && e.starts_with("OTEL_X: "), "{e}");
        }
        let ok = parse_key_values("H", "api-key=secret%20value").unwrap();
        assert_eq!(metadata("H", &ok).unwrap()[0].1, "secret value");
        let bad_key = vec![("bad key".to_owned(), "v".to_owned())];
        assert!(metadata("H", &bad_key).unwrap_err().contains("\"bad key\""));
        let bad_value = vec![("k".to_owned(), "line\nbreak".to_owned())];
        assert!(
            metadata("H", &bad_value)
                .unwrap_err()
                .contains("value of \"k\"")
        );
    }

    #[test]
    fn no_endpoint_means_no_export_and_the_default_service_name() {
        let s = TraceSettings::resolve(&TelemetryArgs::default(), "dagraid-node").unwrap();
        if std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
            assert_eq!(s.endpoint, None);
        }
        assert_eq!(s.service_name, "dagraid-node");
        let args = TelemetryArgs {
            otlp_endpoint: Some(" ".into()),
            service_name: Some("n1".into()),
            ..TelemetryArgs::default()
        };
        let s = TraceSettings::resolve(&args, "dagraid-node").unwrap();
        assert_eq!(s.service_name, "n1");
        let args = TelemetryArgs {
            otlp_endpoint: Some("127.0.0.1:4317".into()),
            ..TelemetryArgs::default()
        };
        if std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
            let e = TraceSettings::resolve(&args, "x").unwrap_err();
            assert!(e.contains("http://"), "{e}");
            let args = TelemetryArgs {
                otlp_endpoint: Some("https://collector:4317".into()),
                ..TelemetryArgs::default()
            };
            let e = TraceSettings::resolve(&args, "x").unwrap_err();
            assert!(e.contains("TLS"), "{e}");
        }
    }
}
