//! The `metrics` plugin (SPEC 9): one Prometheus registry owned by the product (not the
//! crate's process-global one), the request families recorded in the `logging` phase, and
//! `/metrics/api/stats`.
#![forbid(unsafe_code)]

pub mod callback;
pub mod labels;
mod process;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use buntime_plugin_sdk::openapi::Paths;
use buntime_plugin_sdk::{
    ApiRequest, ApiResponse, Plugin, PluginSpec, Problems, RouteKind, Settings,
};
use bytes::Bytes;
use prometheus::proto::MetricType;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

pub use callback::Samples;
use labels::RouteLabels;

pub const SPEC: PluginSpec = PluginSpec {
    name: "metrics",
    manifest: include_str!("../manifest.yaml"),
    keys: &["buckets"],
    env: &[],
    env_numbered: &[],
};

/// `text/plain; version=0.0.4`
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// One finished request, as `logging` saw it.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    pub route: &'a RouteKind,
    pub method: &'a http::Method,
    pub status: u16,
    pub duration: Duration,
    /// Time to the upstream's response header (or to its failure), if one was tried.
    pub upstream: Option<Duration>,
    /// `connect`, `timeout`, `reset`, `tls` or `other`.
    pub upstream_error: Option<&'static str>,
    pub rate_limited: bool,
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream: HistogramVec,
    upstream_errors: IntCounterVec,
    rate_limited: IntCounterVec,
    routes: RouteLabels<RouteSeries>,
}

/// A route's label and the handles of its per-route series, resolved once.
struct RouteSeries {
    label: String,
    duration: Histogram,
    /// Made at the route's first upstream exchange: a labelled series appears only after
    /// its first event.
    upstream: OnceLock<Histogram>,
    /// `buntime_http_requests_total` of this route's first method and status pairs.
    requests: [OnceLock<(u32, IntCounter)>; REQUEST_SLOTS],
}

/// Method and status pairs per route whose counter is kept at hand. A route sees a few
/// (GET 200, 304, 404, POST 201, ...); later pairs are looked up in the family.
const REQUEST_SLOTS: usize = 8;

impl Metrics {
    pub fn new(buckets: Vec<f64>) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "buntime_http_requests_total",
                "Requests answered, by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "buntime_http_request_duration_seconds",
                "Time from the request header to the end of the response.",
            )
            .buckets(buckets.clone()),
            &["route"],
        )?;
        let upstream = HistogramVec::new(
            HistogramOpts::new(
                "buntime_upstream_duration_seconds",
                "Time to the upstream's response header.",
            )
            .buckets(buckets),
            &["route"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "buntime_upstream_errors_total",
                "Failed upstream exchanges, by kind.",
            ),
            &["route", "kind"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "buntime_ratelimit_rejected_total",
                "Requests answered 429 by the rate limiter.",
            ),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(process::ProcessMetrics::for_self()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            upstream,
            upstream_errors,
            rate_limited,
            routes: RouteLabels::default(),
        })
    }

    /// Records one request (every request: local, preflight, 401/429, upstream failures).
    pub fn record(&self, r: &RequestRecord<'_>) {
        let series = self.routes.of(r.route, &|label| RouteSeries {
            label: label.to_string(),
            duration: self.duration.with_label_values(&[label]),
            upstream: OnceLock::new(),
            requests: Default::default(),
        });
        let route = series.label.as_str();
        self.count_request(&series, r.method, r.status);
        series.duration.observe(r.duration.as_secs_f64());
        if let Some(up) = r.upstream {
            series
                .upstream
                .get_or_init(|| self.upstream.with_label_values(&[route]))
                .observe(up.as_secs_f64());
        }
        if let Some(kind) = r.upstream_error {
            self.upstream_errors.with_label_values(&[route, kind]).inc();
        }
        if r.rate_limited {
            self.rate_limited.with_label_values(&[route]).inc();
        }
    }

    /// Counts a request in its route's slot for its method and status: lock-free once the
    /// slot is filled. The family's own lookup hashes the three labels and takes its lock.
    fn count_request(&self, series: &RouteSeries, method: &http::Method, status: u16) {
        let (index, method) = labels::method(method);
        let key = (u32::from(index) << 16) | u32::from(status);
        let make = || {
            let mut buf = [0u8; 3];
            let status = status_text(&mut buf, status);
            self.requests
                .with_label_values(&[series.label.as_str(), method, status])
        };
        for slot in &series.requests {
            // An empty slot takes this pair, or the pair of a thread that fills it first.
            let (k, counter) = slot.get_or_init(|| (key, make()));
            if *k == key {
                counter.inc();
                return;
            }
        }
        make().inc();
    }

    /// A family read at scrape time from counters kept elsewhere.
    pub fn counter_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        read: impl Fn() -> Samples + Send + Sync + 'static,
    ) {
        self.register_fn(name, help, MetricType::COUNTER, labels, read);
    }

    pub fn gauge_fn(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        read: impl Fn() -> Samples + Send + Sync + 'static,
    ) {
        self.register_fn(name, help, MetricType::GAUGE, labels, read);
    }

    fn register_fn(
        &self,
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[&str],
        read: impl Fn() -> Samples + Send + Sync + 'static,
    ) {
        let registered = callback::Callback::new(name, help, kind, labels, read)
            .and_then(|c| self.registry.register(Box::new(c)));
        if let Err(e) = registered {
            log::error!("metrics: cannot register {name}: {e}");
        }
    }

    /// The text exposition (format 0.0.4, with HELP and TYPE lines).
    pub fn render(&self) -> Bytes {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("metrics: cannot encode: {e}");
        }
        Bytes::from(out)
    }
}

/// The status code as text without allocating.
fn status_text(buf: &mut [u8; 3], status: u16) -> &str {
    let s = status.min(999);
    buf[0] = b'0' + (s / 100) as u8;
    buf[1] = b'0' + (s / 10 % 10) as u8;
    buf[2] = b'0' + (s % 10) as u8;
    std::str::from_utf8(buf).unwrap_or("000")
}

/// Parses the `buckets` setting: ascending positive seconds.
fn buckets(s: &Settings, problems: &mut Problems) -> Option<Vec<f64>> {
    let list = s.list("buckets", problems)?;
    let mut out = Vec::with_capacity(list.len());
    for b in &list {
        match b.parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() && out.last().is_none_or(|l: &f64| v > *l) => {
                out.push(v)
            }
            _ => {
                s.problem(
                    problems,
                    "buckets",
                    format!("{b:?}: buckets must be ascending positive numbers of seconds"),
                );
                return None;
            }
        }
    }
    if out.is_empty() {
        s.problem(problems, "buckets", "needs at least one bucket");
        return None;
    }
    Some(out)
}

pub struct MetricsPlugin {
    metrics: Arc<Metrics>,
    /// Pool and gateway stats, supplied by the gateway (`/metrics/api/stats`).
    stats: OnceLock<Box<dyn Fn() -> serde_json::Value + Send + Sync>>,
}

impl MetricsPlugin {
    pub fn parse(s: &Settings, problems: &mut Problems) -> Option<Vec<f64>> {
        buckets(s, problems)
    }

    pub fn new(buckets: Vec<f64>) -> MetricsPlugin {
        MetricsPlugin {
            metrics: Arc::new(Metrics::new(buckets).expect("metric families have valid names")),
            stats: OnceLock::new(),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn set_stats(&self, stats: impl Fn() -> serde_json::Value + Send + Sync + 'static) {
        let _ = self.stats.set(Box::new(stats));
    }
}

#[async_trait]
impl Plugin for MetricsPlugin {
    fn name(&self) -> &'static str {
        "metrics"
    }

    async fn handle(&self, req: ApiRequest) -> ApiResponse {
        match (req.method.as_str(), req.path.trim_end_matches('/')) {
            ("GET", "/api/stats") => {
                ApiResponse::ok(&self.stats.get().map_or(serde_json::json!({}), |s| s()))
            }
            _ => ApiResponse::not_found(),
        }
    }

    fn openapi_paths(&self) -> serde_json::Value {
        let mut p = Paths::new();
        p.add(
            "GET",
            "/metrics/api/stats",
            "Pool and gateway stats as JSON",
            true,
            &[200, 401],
        );
        p.into_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_needs_no_allocation() {
        let mut b = [0u8; 3];
        assert_eq!(status_text(&mut b, 200), "200");
        assert_eq!(status_text(&mut b, 0), "000");
        assert_eq!(status_text(&mut b, 504), "504");
    }

    /// Pairs past the kept slots, and pairs that differ by method only, count apart.
    #[test]
    fn every_method_and_status_counts_apart() {
        let m = Metrics::new(vec![0.1]).unwrap();
        let route = RouteKind::Rule("r1".into());
        let record = |method: &http::Method, status: u16| {
            m.record(&RequestRecord {
                route: &route,
                method,
                status,
                duration: Duration::from_millis(1),
                upstream: None,
                upstream_error: None,
                rate_limited: false,
            })
        };
        for _ in 0..2 {
            for status in 200..212 {
                record(&http::Method::GET, status);
            }
            record(&http::Method::POST, 200);
        }
        let text = String::from_utf8(m.render().to_vec()).unwrap();
        for status in 200..212 {
            let line = format!(
                "buntime_http_requests_total{{method=\"GET\",route=\"rule:r1\",status=\"{status}\"}} 2"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.contains(
            "buntime_http_requests_total{method=\"POST\",route=\"rule:r1\",status=\"200\"} 2"
        ));
    }

    #[test]
    fn records_and_renders() {
        let m = Metrics::new(vec![0.01, 0.1]).unwrap();
        m.record(&RequestRecord {
            route: &RouteKind::Api,
            method: &http::Method::GET,
            status: 200,
            duration: Duration::from_millis(5),
            upstream: None,
            upstream_error: None,
            rate_limited: false,
        });
        m.gauge_fn("buntime_test_gauge", "A test gauge.", &[], || {
            vec![(vec![], 3.0)]
        });
        let text = String::from_utf8(m.render().to_vec()).unwrap();
        assert!(
            text.contains("# TYPE buntime_http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "buntime_http_requests_total{method=\"GET\",route=\"api\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE buntime_test_gauge gauge\nbuntime_test_gauge 3"),
            "{text}"
        );
        assert!(text.contains("process_start_time_seconds"), "{text}");
    }
}
