//! Connects the metrics plugin to the counters other parts keep (SPEC 9): in-flight
//! requests, auth failures, JWKS refreshes, proxy rules and reloads, CORS preflights,
//! database and keyval operations; and the `/metrics/api/stats` document.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use buntime_auth_token::Reason;
use buntime_metrics::{Metrics, Samples};
use serde_json::json;

use buntime_workers::Pool;

use crate::lifecycle::Lifecycle;
use crate::plugins::Typed;

fn outcome(ok: bool) -> String {
    if ok { "ok".into() } else { "error".into() }
}

/// Every labelled sample with a non-zero count (labelled families appear after their
/// first event).
fn nonzero(samples: impl IntoIterator<Item = (Vec<String>, u64)>) -> Samples {
    samples
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(l, n)| (l, n as f64))
        .collect()
}

/// `buntime_<plural>_total{<label>,result}` and `buntime_<singular>_seconds_total{<label>}`.
fn op_families(
    m: &Metrics,
    (plural, singular): (&str, &str),
    what: &str,
    label: &'static str,
    stats: impl Fn() -> Vec<(&'static str, bool, u64, f64)> + Send + Sync + Clone + 'static,
) {
    let counts = stats.clone();
    m.counter_fn(
        &format!("buntime_{plural}_total"),
        &format!("{what}, by {label} and result."),
        &[label, "result"],
        move || {
            nonzero(
                counts()
                    .into_iter()
                    .map(|(op, ok, n, _)| (vec![op.to_string(), outcome(ok)], n)),
            )
        },
    );
    m.counter_fn(
        &format!("buntime_{singular}_seconds_total"),
        &format!("Time spent in {what}, by {label}."),
        &[label],
        move || {
            let mut by_op: std::collections::BTreeMap<&str, f64> = Default::default();
            for (op, _, _, secs) in stats() {
                *by_op.entry(op).or_default() += secs;
            }
            by_op
                .into_iter()
                .map(|(op, s)| (vec![op.to_string()], s))
                .collect()
        },
    );
}

pub fn register(m: &Metrics, typed: &Typed, lifecycle: &Arc<Lifecycle>, pool: Option<&Arc<Pool>>) {
    if let Some(pool) = pool {
        register_pool(m, pool);
    }
    let l = lifecycle.clone();
    m.gauge_fn(
        "buntime_http_requests_in_flight",
        "Requests being answered now.",
        &[],
        move || vec![(vec![], l.inflight() as f64)],
    );
    if let Some(auth) = &typed.auth {
        let v = auth.verifier().clone();
        m.counter_fn(
            "buntime_auth_failures_total",
            "Rejected tokens, by reason.",
            &["reason"],
            move || {
                nonzero(
                    Reason::ALL
                        .iter()
                        .map(|r| (vec![r.as_str().to_string()], v.failures(*r))),
                )
            },
        );
        let v = auth.verifier().clone();
        m.counter_fn(
            "buntime_jwks_refresh_total",
            "JWKS fetches, by result.",
            &["result"],
            move || {
                nonzero([
                    (vec!["ok".into()], v.jwks_ok.load(Ordering::Relaxed)),
                    (vec!["error".into()], v.jwks_failed.load(Ordering::Relaxed)),
                ])
            },
        );
    }
    if let Some(proxy) = &typed.proxy {
        let table = proxy.table();
        m.gauge_fn(
            "buntime_proxy_rules",
            "Enabled proxy rules in the live table.",
            &[],
            move || vec![(vec![], table.load().active_len() as f64)],
        );
        let store = proxy.store().clone();
        m.counter_fn(
            "buntime_rules_reload_total",
            "Rule table rebuilds, by result.",
            &["result"],
            move || {
                nonzero([
                    (
                        vec!["ok".into()],
                        store.stats.reloads_ok.load(Ordering::Relaxed),
                    ),
                    (
                        vec!["error".into()],
                        store.stats.reloads_failed.load(Ordering::Relaxed),
                    ),
                ])
            },
        );
    }
    if let Some(gateway) = &typed.gateway {
        let g = gateway.clone();
        m.counter_fn(
            "buntime_cors_preflights_total",
            "CORS preflights answered.",
            &[],
            move || vec![(vec![], g.preflights.load(Ordering::Relaxed) as f64)],
        );
    }
    if let Some(db) = &typed.database {
        let db = db.clone();
        op_families(
            m,
            ("database_queries", "database_query"),
            "database queries",
            "target",
            move || db.stats.snapshot(),
        );
    }
    if let Some(kv) = &typed.keyval {
        let kv = kv.stats.clone();
        op_families(
            m,
            ("keyval_operations", "keyval_operation"),
            "keyval operations",
            "op",
            move || kv.snapshot(),
        );
    }
}

/// `buntime_workers{app,state}`, `buntime_worker_starts_total{app}`,
/// `buntime_worker_crashes_total{app}`.
fn register_pool(m: &Metrics, pool: &Arc<Pool>) {
    let p = pool.clone();
    m.gauge_fn(
        "buntime_workers",
        "Worker processes, by app and state.",
        &["app", "state"],
        move || {
            p.apps()
                .iter()
                .flat_map(|a| {
                    a.states()
                        .into_iter()
                        .map(|(state, n)| (vec![a.name.clone(), state.to_string()], n as f64))
                        .collect::<Vec<_>>()
                })
                .collect()
        },
    );
    for (name, help, pick) in [
        (
            "buntime_worker_starts_total",
            "Worker processes started, by app.",
            true,
        ),
        (
            "buntime_worker_crashes_total",
            "Worker processes that exited unexpectedly, by app.",
            false,
        ),
    ] {
        let p = pool.clone();
        m.counter_fn(name, help, &["app"], move || {
            nonzero(p.apps().iter().map(|a| {
                let n = if pick { &a.starts } else { &a.crashes };
                (vec![a.name.clone()], n.load(Ordering::Relaxed))
            }))
        });
    }
}

/// `/metrics/api/stats`: the gateway's and the pool's numbers.
pub fn stats(typed: &Typed, lifecycle: &Lifecycle, pool: Option<&Arc<Pool>>) -> serde_json::Value {
    let pool = pool.map(|p| {
        let apps: Vec<serde_json::Value> = p
            .apps()
            .iter()
            .map(|a| {
                json!({
                    "app": a.name,
                    "version": a.version,
                    "workers": a.states().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                    "starts": a.starts.load(Ordering::Relaxed),
                    "crashes": a.crashes.load(Ordering::Relaxed),
                })
            })
            .collect();
        json!({"apps": apps})
    });
    let rate_limit = typed.gateway.as_ref().map(|g| {
        let c = &g.limiter.counters;
        json!({
            "totalRequests": c.total.load(Ordering::Relaxed),
            "allowed": c.allowed.load(Ordering::Relaxed),
            "blocked": c.blocked.load(Ordering::Relaxed),
            "activeKeys": g.limiter.active_keys(),
        })
    });
    json!({
        "gateway": {
            "inFlight": lifecycle.inflight(),
            "rules": typed.proxy.as_ref().map(|p| p.table().load().active_len()),
            "rateLimit": rate_limit,
            "corsPreflights": typed.gateway.as_ref().map(|g| g.preflights.load(Ordering::Relaxed)),
            "auth": typed.auth.as_ref().map(|a| json!({
                "failures": Reason::ALL.iter().map(|r| (r.as_str(), a.verifier().failures(*r))).collect::<std::collections::BTreeMap<_, _>>(),
            })),
        },
        "pool": pool,
    })
}
