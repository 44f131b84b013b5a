//! Prometheus metrics, served at `/metrics` in the text format: requests by
//! route and status, rows and bytes served by dataset and format, slice
//! latency (time to first byte and total), active streams, authentication
//! failures by reason, policy reloads, and audit write latency.
//! Labels never carry cell values, filters or tokens.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub rows: IntCounterVec,
    pub bytes: IntCounterVec,
    pub first_byte: HistogramVec,
    pub duration: HistogramVec,
    pub active_streams: IntGauge,
    pub auth_failures: IntCounterVec,
    pub policy_reloads: IntCounterVec,
    pub audit_write: Histogram,
}

const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("sluice".into()), None)?;
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram =
            |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, prometheus::Error> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let audit_write = Histogram::with_opts(
            HistogramOpts::new(
                "audit_write_seconds",
                "Time to write and fsync one group of audit records",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(audit_write.clone()))?;
        let active_streams =
            IntGauge::new("active_streams", "Slices whose engine work is running")?;
        registry.register(Box::new(active_streams.clone()))?;
        Ok(Self {
            requests: counter(
                "http_requests_total",
                "HTTP requests by route and status",
                &["route", "status"],
            )?,
            rows: counter(
                "rows_served_total",
                "Rows served by dataset and format",
                &["dataset", "format"],
            )?,
            bytes: counter(
                "bytes_served_total",
                "Body bytes served by dataset and format",
                &["dataset", "format"],
            )?,
            first_byte: histogram(
                "slice_first_byte_seconds",
                "Time from request to the first data chunk",
                &["endpoint"],
            )?,
            duration: histogram(
                "slice_duration_seconds",
                "Time from request to the end of the stream",
                &["endpoint", "outcome"],
            )?,
            active_streams,
            auth_failures: counter(
                "auth_failures_total",
                "Refused tokens by reason",
                &["reason"],
            )?,
            policy_reloads: counter(
                "policy_reloads_total",
                "Policy reloads by result",
                &["result"],
            )?,
            audit_write,
            registry,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
