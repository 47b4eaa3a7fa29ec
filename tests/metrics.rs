//! SPEC 9: the metrics output parses, every family is there with its type, counters move
//! by exactly the requests sent for each route kind, and labels stay bounded.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::upstream::Upstream;
use common::{Gateway, Options};
use prometheus_parse::{Sample, Scrape, Value as PValue};
use serde_json::json;

fn scrape(gw: &Gateway) -> Scrape {
    let r = gw.get("/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    parse(&r.text())
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the exposition parses")
}

fn labels_of(s: &Sample) -> HashMap<String, String> {
    s.labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The value of `name` with exactly these labels (0 when absent).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| {
            let l = labels_of(s);
            l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| match &s.value {
            PValue::Counter(v) | PValue::Gauge(v) | PValue::Untyped(v) => *v,
            PValue::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            _ => 0.0,
        })
        .sum()
}

fn kind(scrape: &Scrape, name: &str) -> Option<&'static str> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .map(|s| match s.value {
            PValue::Counter(_) => "counter",
            PValue::Gauge(_) => "gauge",
            PValue::Histogram(_) => "histogram",
            PValue::Summary(_) => "summary",
            PValue::Untyped(_) => "untyped",
        })
}

#[test]
fn families_types_and_exact_counts_per_route_kind() {
    let up = Upstream::http();
    let gw = Gateway::start(
        Options::default()
            .env("AUTH_JWT_SECRET", "metrics-test-secret")
            .env("AUTH_PUBLIC_ROUTES", "/open/**")
            .env("RUNTIME_MASTER_KEY", "mk")
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "1000")
            .ready(),
    );
    let admin = [("x-api-key", "mk")];
    for (pattern, target) in [
        ("^/open(/.*)?$", up.url()),
        ("^/closed", up.url()),
        (
            "^/broken",
            format!("http://127.0.0.1:{}", common::free_port()),
        ),
    ] {
        let r = gw.json("POST", "/redirects/api/rules", &admin, &json!({"id": pattern.trim_start_matches("^/").split('(').next().unwrap(), "pattern": pattern, "target": target, "publicRoutes": ["/broken"]}));
        assert_eq!(r.status, 201, "{r:?}");
    }
    let before = scrape(&gw);
    let k = 3;
    for _ in 0..k {
        gw.send("HEAD", "/api/health", &[], None);
        gw.get_with("/gateway/api/stats", &admin);
        gw.get("/open/x");
        gw.get("/closed");
        gw.get("/broken");
        gw.get("/open/../x");
        gw.send(
            "OPTIONS",
            "/open/x",
            &[
                ("origin", "https://a.test"),
                ("access-control-request-method", "GET"),
            ],
            None,
        );
    }
    let after = scrape(&gw);
    let delta = |labels: &[(&str, &str)]| {
        value(&after, "buntime_http_requests_total", labels)
            - value(&before, "buntime_http_requests_total", labels)
    };
    let k = k as f64;
    assert_eq!(
        delta(&[("route", "api"), ("method", "HEAD"), ("status", "200")]),
        k
    );
    assert_eq!(
        delta(&[
            ("route", "plugin:gateway"),
            ("method", "GET"),
            ("status", "200")
        ]),
        k
    );
    assert_eq!(
        delta(&[("route", "rule:open"), ("method", "GET"), ("status", "200")]),
        k
    );
    assert_eq!(
        delta(&[
            ("route", "rule:closed"),
            ("method", "GET"),
            ("status", "401")
        ]),
        k
    );
    assert_eq!(
        delta(&[
            ("route", "rule:broken"),
            ("method", "GET"),
            ("status", "502")
        ]),
        k
    );
    assert_eq!(
        delta(&[("route", "none"), ("method", "GET"), ("status", "400")]),
        k
    );
    assert_eq!(
        delta(&[
            ("route", "preflight"),
            ("method", "OPTIONS"),
            ("status", "204")
        ]),
        k
    );
    let up_errors = value(
        &after,
        "buntime_upstream_errors_total",
        &[("route", "rule:broken"), ("kind", "connect")],
    ) - value(
        &before,
        "buntime_upstream_errors_total",
        &[("route", "rule:broken"), ("kind", "connect")],
    );
    assert_eq!(up_errors, k);
    assert_eq!(
        value(
            &after,
            "buntime_auth_failures_total",
            &[("reason", "missing_token")]
        ) - value(
            &before,
            "buntime_auth_failures_total",
            &[("reason", "missing_token")]
        ),
        k
    );
    assert!(
        value(
            &after,
            "buntime_upstream_duration_seconds",
            &[("route", "rule:open")]
        ) >= k
    );
    assert_eq!(value(&after, "buntime_proxy_rules", &[]), 3.0);
    assert!(value(&after, "buntime_rules_reload_total", &[("result", "ok")]) >= 3.0);
    assert_eq!(
        value(&after, "buntime_cors_preflights_total", &[])
            - value(&before, "buntime_cors_preflights_total", &[]),
        k
    );

    for (family, t) in [
        ("buntime_http_requests_total", "counter"),
        ("buntime_http_request_duration_seconds", "histogram"),
        ("buntime_http_requests_in_flight", "gauge"),
        ("buntime_upstream_duration_seconds", "histogram"),
        ("buntime_upstream_errors_total", "counter"),
        ("buntime_auth_failures_total", "counter"),
        ("buntime_proxy_rules", "gauge"),
        ("buntime_rules_reload_total", "counter"),
        ("buntime_cors_preflights_total", "counter"),
        ("buntime_database_queries_total", "counter"),
        ("buntime_keyval_operations_total", "counter"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(kind(&after, family), Some(t), "{family}");
        assert!(after.docs.contains_key(family), "{family} has a HELP line");
    }
}

/// `process_cpu_seconds_total` keeps its fraction. The prometheus crate counts whole
/// seconds, so a gateway read 0 for its first second of CPU, then stepped by one.
#[test]
fn process_cpu_time_keeps_its_fraction() {
    let gw = Gateway::start(Options::default().ready());
    let cpu = value(&scrape(&gw), "process_cpu_seconds_total", &[]);
    assert!(cpu > 0.0 && cpu.fract() != 0.0, "{cpu}");
}

#[test]
fn rate_limit_rejections_are_counted() {
    let gw = Gateway::start(
        Options::default()
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "2")
            .env("GATEWAY_RATE_LIMIT_EXCLUDE", "/metrics,/api/health/**")
            .ready(),
    );
    for _ in 0..5 {
        gw.get("/x");
    }
    let s = scrape(&gw);
    assert_eq!(
        value(&s, "buntime_ratelimit_rejected_total", &[("route", "none")]),
        3.0
    );
    assert_eq!(
        value(
            &s,
            "buntime_http_requests_total",
            &[("route", "none"), ("method", "GET"), ("status", "429")]
        ),
        3.0
    );
}

/// An upstream that sends its header and then hangs up mid-body failed the exchange: the
/// client gets a cut answer, and the error counter must show it as it shows a refused
/// connection.
#[test]
fn an_upstream_cutting_its_body_short_is_counted() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part");
        }
    });
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    for (id, target) in [
        ("cut", format!("http://127.0.0.1:{port}")),
        ("whole", up.url()),
    ] {
        let rule = json!({"id": id, "pattern": format!("^/{id}"), "target": target});
        let r = gw.json("POST", "/redirects/api/rules", &[], &rule);
        assert_eq!(r.status, 201, "{r:?}");
    }
    for path in ["/cut", "/whole"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let got = common::raw(gw.port, request.as_bytes(), Duration::from_secs(10));
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    }
    // The answer is logged, and counted, once the client's connection is done with.
    let errors = |route: &str| {
        let labels = [("route", route), ("kind", "reset")];
        value(&scrape(&gw), "buntime_upstream_errors_total", &labels)
    };
    let counted = common::eventually(Duration::from_secs(5), || {
        (errors("rule:cut") == 1.0).then_some(())
    });
    assert!(
        counted.is_some(),
        "cut body not counted: {}",
        errors("rule:cut")
    );
    assert_eq!(errors("rule:whole"), 0.0);
}

#[test]
fn unlabelled_families_exist_from_start_up() {
    let gw = Gateway::start(Options::default().ready());
    let s = scrape(&gw);
    assert_eq!(kind(&s, "buntime_http_requests_in_flight"), Some("gauge"));
    assert_eq!(kind(&s, "buntime_proxy_rules"), Some("gauge"));
    assert_eq!(value(&s, "buntime_proxy_rules", &[]), 0.0);
}

#[test]
fn token_and_separate_port() {
    let port = common::free_port();
    let gw = Gateway::start(
        Options::default()
            .env("METRICS_TOKEN", "scrape-me")
            .env("METRICS_PORT", &port.to_string())
            .ready(),
    );
    assert_eq!(gw.get("/metrics").status, 401);
    assert_eq!(
        gw.get_with("/metrics", &[("authorization", "Bearer wrong")])
            .status,
        401
    );
    let r = gw.get_with("/metrics", &[("authorization", "Bearer scrape-me")]);
    assert_eq!(r.status, 200);
    parse(&r.text());
    let agent = common::agent();
    let on_port = |h: &[(&str, &str)]| {
        common::send(
            &agent,
            "GET",
            &format!("http://127.0.0.1:{port}/metrics"),
            h,
            None,
        )
    };
    assert_eq!(on_port(&[]).status, 401);
    let r = on_port(&[("authorization", "Bearer scrape-me")]);
    assert_eq!(r.status, 200);
    assert!(
        parse(&r.text())
            .samples
            .iter()
            .any(|s| s.metric == "buntime_http_requests_total")
    );
    assert_eq!(
        common::send(
            &agent,
            "GET",
            &format!("http://127.0.0.1:{port}/other"),
            &[],
            None
        )
        .status,
        404
    );
    // The port serves GET and HEAD of /metrics; a POST was answered as a GET.
    let post = common::send(
        &agent,
        "POST",
        &format!("http://127.0.0.1:{port}/metrics"),
        &[("authorization", "Bearer scrape-me")],
        Some(b""),
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert!(!gw.logs().contains("scrape-me"));
}

#[test]
fn label_values_stay_bounded() {
    let gw = Gateway::start(
        Options::default()
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "1000000")
            .ready(),
    );
    // 600 rules, written behind the API, loaded by a restart: more than the 500-label budget.
    let sets: Vec<serde_json::Value> = (0..600)
        .map(|i| json!({"type": "set", "key": ["proxy", "rules", format!("r{i}")], "value": {"pattern": format!("^/r{i}$"), "target": "http://127.0.0.1:9", "order": i}}))
        .collect();
    assert_eq!(
        gw.json(
            "POST",
            "/keyval/api/atomic",
            &[],
            &json!({"mutations": sets})
        )
        .json()["ok"],
        true
    );
    let mut gw = gw;
    gw.stop();
    let mut opts = Options::default()
        .env("GATEWAY_RATE_LIMIT_REQUESTS", "1000000")
        .ready();
    opts.dir = Some(gw.dir.clone());
    let gw = Gateway::start(opts);
    let agent = common::agent();
    for i in 0..600 {
        common::send(&agent, "GET", &gw.url(&format!("/r{i}")), &[], None);
    }
    for i in 0..10_000 {
        common::send(
            &agent,
            "GET",
            &gw.url(&format!("/distinct/path/{i}?token=t{i}")),
            &[],
            None,
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = scrape(&gw);
    let routes: HashSet<String> = s
        .samples
        .iter()
        .filter(|x| x.metric == "buntime_http_requests_total")
        .map(|x| labels_of(x)["route"].clone())
        .collect();
    let rule_labels = routes.iter().filter(|r| r.starts_with("rule:")).count();
    assert_eq!(rule_labels, 501, "500 rule labels and rule:other");
    assert!(routes.contains("rule:other"));
    assert!(routes.contains("none"));
    assert!(
        routes
            .iter()
            .all(|r| !r.contains('/') && !r.contains("token")),
        "no raw paths or tokens"
    );
    assert!(s.samples.len() < 20_000, "{} samples", s.samples.len());
}

/// The dashboard and the alert rules only use metric names the gateway exports.
#[test]
fn dashboard_and_alerts_use_real_metric_names() {
    let exported = [
        "buntime_http_requests_total",
        "buntime_http_request_duration_seconds_bucket",
        "buntime_http_requests_in_flight",
        "buntime_upstream_duration_seconds_bucket",
        "buntime_upstream_errors_total",
        "buntime_ratelimit_rejected_total",
        "buntime_auth_failures_total",
        "buntime_jwks_refresh_total",
        "buntime_proxy_rules",
        "buntime_rules_reload_total",
        "buntime_workers",
        "buntime_worker_starts_total",
        "buntime_worker_crashes_total",
        "buntime_database_queries_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ];
    let re = regex::Regex::new(r"\b((?:buntime|process)_[a-z_]+)").unwrap();
    for file in [
        "conf/monitoring/grafana-dashboard.json",
        "conf/monitoring/alerts.yaml",
    ] {
        let text =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let used: HashSet<&str> = re
            .captures_iter(&text)
            .map(|c| c.get(1).unwrap().as_str())
            .collect();
        assert!(!used.is_empty());
        for name in used {
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which the gateway does not export"
            );
        }
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/conf/monitoring/grafana-dashboard.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(dash["panels"].as_array().unwrap().len() >= 10);
    let alerts: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!(
            "{}/conf/monitoring/alerts.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = alerts["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    for needed in [
        "BuntimeHigh5xxRate",
        "BuntimeAuthFailuresSpike",
        "BuntimeWorkerCrashLoop",
    ] {
        assert!(names.contains(&needed), "{needed}");
    }
}
