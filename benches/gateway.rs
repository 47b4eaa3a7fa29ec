//! Per-request cost of the gateway plugin's hooks: rate limiting (`on_request`) and CORS
//! (`on_response`) together, as every proxied request pays them.
//! Run: `cargo bench --bench gateway`.

use std::hint::black_box;
use std::net::IpAddr;

use buntime_gateway::GatewayPlugin;
use buntime_plugin_sdk::{HeaderList, Plugin, Problems, RequestInfo, RouteKind, Settings};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};

fn plugin(origins: &str) -> GatewayPlugin {
    let manifest: serde_yaml::Mapping =
        serde_yaml::from_str(buntime_gateway::SPEC.manifest).unwrap();
    let mut settings = Settings::new("plugins.gateway", manifest);
    settings.set_from_env("cors.origin", "GATEWAY_CORS_ORIGIN", origins.into());
    // Far above the load, so every request is counted and allowed.
    settings.set_from_env(
        "rateLimit.requests",
        "GATEWAY_RATE_LIMIT_REQUESTS",
        "1000000000".into(),
    );
    let cfg = GatewayPlugin::parse(&settings, "/api", &mut Problems::default()).unwrap();
    GatewayPlugin::new(cfg, "/api", None)
}

fn hooks(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("origin", "https://app.example.com".parse().unwrap());
    headers.insert("host", "gateway.example.com".parse().unwrap());
    let route = RouteKind::Rule("r1".into());
    let method = Method::GET;
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    for (name, origins) in [
        ("origin_star", "*"),
        ("origin_list", "https://a.test,*.example.com,https://b.test"),
    ] {
        let g = plugin(origins);
        c.bench_function(&format!("gateway_hooks/{name}"), |b| {
            b.iter(|| {
                let req = RequestInfo {
                    method: &method,
                    path: black_box("/api/v1/orders"),
                    headers: &headers,
                    client_ip: ip,
                    route: &route,
                    identity: None,
                    rate_limit: None,
                };
                let mut out = HeaderList::default();
                black_box(g.on_request(&req, &mut out));
                g.on_response(&req, &mut out);
                black_box(out)
            })
        });
    }
}

criterion_group!(benches, hooks);
criterion_main!(benches);
