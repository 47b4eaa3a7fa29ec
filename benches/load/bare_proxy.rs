//! Baseline (c) of the load benchmark: the smallest Pingora proxy, `upstream_peer` only,
//! on a default server configuration (but for how long it waits when stopped). It is what
//! "bare Pingora" means in the figures.
//!
//! `cargo build --release --example bare-proxy`, then
//! `bare-proxy <listen addr> <upstream addr> [threads]`.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: bare-proxy <listen addr> <upstream addr> [threads]");
        std::process::exit(2);
    };
    let upstream: SocketAddr = upstream
        .parse()
        .expect("upstream: an address like 127.0.0.1:8080");
    let threads = args
        .get(3)
        .map_or(1, |t| t.parse().expect("threads: a number"));
    // The load script stops it with SIGTERM after each round; Pingora's default grace
    // period is a fixed 5-minute sleep, which held every round's stop for the script's
    // 10-second limit. Shutdown only: the request path is Pingora's default.
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let mut service = http_proxy_service(&server.configuration, Bare { upstream });
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever();
}
