//! Builds and runs the Pingora server: the proxy service on `PORT`, the plugin starter,
//! our signal handling and the drain watcher (SPEC 11).

use std::sync::{Arc, Once};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::apps::http_app::ServeHttp;
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::ext::TcpKeepalive;
use pingora::proxy::ProxyServiceBuilder;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;

use crate::config::Config;
use crate::lifecycle::{Signals, watch_drain};
use crate::plugins;
use crate::proxy::Gateway;
use crate::state::Shared;

/// How long one plugin may take to stop at shutdown.
const PLUGIN_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Pingora's timeouts of more than this many whole seconds run on tokio's timer, the rest
/// (a worker's `timeout: 500ms`) on Pingora's own "fast" timer.
///
/// Pingora's timer needs a thread that wakes 100 times a second for the life of the
/// process, even when nothing waits (an idle gateway used 4.5-6.1 ms of CPU a second with
/// it, 0.5 without); in the load bench at a steady rate, the gateway without that thread
/// used about a fifth less CPU per request and its p99 went from about 1.3x bare
/// Pingora's to about 1.1x (medians, benches/README.md). Pingora has a timer of its own
/// because tokio keeps one timer per runtime behind one lock, taken to register and to
/// cancel each timeout (tokio-rs/tokio#6504), which the threads of a work-stealing
/// runtime contend for. Here each proxy thread has a runtime of its own (`work_stealing`
/// below), so a timer of its own.
const TOKIO_TIMER_ABOVE_SECS: u64 = 0;

/// Where to listen on `port`: every IPv6 and IPv4 address (`[::]`, dual-stack) when the
/// host has IPv6, else every IPv4 address. Both binds are tried now: Pingora binds later,
/// and on a busy port it retries for 30 s and then panics in a task while the process
/// lives on; a clear error now is better.
fn listen_address(name: &str, port: u16) -> Result<String, String> {
    let busy = |e: std::io::Error| format!("{name} {port}: cannot listen: {e}");
    drop(std::net::TcpListener::bind(("0.0.0.0", port)).map_err(busy)?);
    match std::net::TcpListener::bind(("::", port)) {
        Ok(_) => Ok(format!("[::]:{port}")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(busy(e)),
        Err(e) => {
            log::info!("{name} {port}: IPv4 only, no IPv6 here ({e})");
            Ok(format!("0.0.0.0:{port}"))
        }
    }
}

/// TCP keepalive on client connections: a WebSocket has no read timeout (`proxy.rs`), so
/// one whose client vanished without a FIN (a laptop closed, a NAT entry dropped) is
/// ended about two minutes after its last byte instead of holding its upstream, and a
/// worker past its ttl, for ever. Five `setsockopt` calls per accepted connection (none
/// per request on a kept-alive one).
pub const CLIENT_KEEPALIVE: TcpKeepalive = TcpKeepalive {
    idle: Duration::from_secs(60),
    interval: Duration::from_secs(10),
    count: 6,
    user_timeout: Duration::ZERO,
};

/// A listener on `address`. `[::]` takes IPv4 clients too whatever
/// `net.ipv6.bindv6only` says; their addresses arrive IPv4-mapped and are made plain IPv4
/// again where the client address is read. Reads go straight to Pingora's own request
/// buffer: its default 64 KiB read buffer per connection, zeroed when allocated (mimalloc
/// then touches all of it), made an idle client connection cost 103 KB instead of 39 KB,
/// and saved no system call (benches/README.md).
fn listener(address: &str) -> ListenerConfig {
    let mut options = TcpSocketOptions::default();
    options.ipv6_only = address.starts_with('[').then_some(false);
    options.tcp_keepalive = Some(CLIENT_KEEPALIVE);
    ListenerConfig::tcp(address)
        .tcp_socket_options(options)
        .l4_buffer(L4BufferSettings::default().read(0))
}

/// Runs until shutdown. Errors are start-up errors (the message says what to fix).
pub fn serve(config: Config) -> Result<(), String> {
    let port = config.server.port;
    let public = listen_address("PORT", port)?;
    let metrics_listener = match config.server.metrics_port {
        Some(p) => Some(listen_address("METRICS_PORT", p)?),
        None => None,
    };
    // Set now, not only by Pingora's `run()` from `ServerConf`: the pool's first health
    // checks come before it, and the first fast timeout starts the timer thread for good.
    pingora::time::fast_timeout::set_fast_timeout_to_tokio_threshold(Some(Duration::from_secs(
        TOKIO_TIMER_ABOVE_SECS,
    )));
    let plugins = plugins::build(&config).map_err(|problems| problems.to_string())?;
    let pool = start_pool(&config)?;
    let shared = Arc::new(Shared::new(config, plugins, Some(pool)));
    if let Some(m) = shared.plugins.typed.metrics.clone() {
        let stats_from = shared.clone();
        m.set_stats(move || {
            crate::telemetry::stats(
                &stats_from.plugins.typed,
                &stats_from.lifecycle,
                stats_from.pool.as_ref(),
            )
        });
    }
    let server_conf = ServerConf {
        threads: shared.server.threads,
        // Our drain watcher ends the process as soon as requests are done; Pingora's
        // fixed grace sleep is only the backstop.
        grace_period_seconds: Some(shared.server.shutdown_grace.as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        fast_timeout_to_tokio_threshold_seconds: Some(TOKIO_TIMER_ABOVE_SECS),
        // One runtime per proxy thread, as nginx has one event loop per worker: a
        // connection stays on the thread that accepted it. With work stealing, another
        // thread's poll could see an upstream's 101 arrive while Pingora 0.9.1 had yet to
        // take the upgrade request's (empty) body end, which it then took for the end of
        // the tunnel: about 1 WebSocket in 100 closed right after its 101
        // (cloudflare/pingora#946, unfixed upstream). With one runtime, readiness changes
        // only between polls, so that end is always taken before the 101 is read.
        work_stealing: false,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, server_conf);
    server.bootstrap();

    let proxy = ProxyServiceBuilder::new(
        &server.configuration,
        Gateway {
            shared: shared.clone(),
        },
    )
    .name("gateway")
    .server_options(HttpServerOptions::default());
    let mut proxy = proxy.build();
    proxy.add_listener(listener(&public));
    server.add_service(proxy);
    if let Some(address) = metrics_listener {
        let mut metrics = Service::new(
            "metrics".to_string(),
            MetricsPort {
                shared: shared.clone(),
            },
        );
        metrics.add_listener(listener(&address));
        server.add_service(metrics);
    }
    server.add_service(background_service(
        "plugins",
        PluginStarter {
            shared: shared.clone(),
        },
    ));

    let finish = finisher(shared.clone());
    watch_drain(
        shared.lifecycle.clone(),
        server.watch_execution_phase(),
        shared.server.shutdown_grace,
        finish.clone(),
    );
    let reload_target = shared.clone();
    log::info!(
        "buntime {} listening on {public} (API at {})",
        crate::state::VERSION,
        shared.server.api_base
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            lifecycle: shared.lifecycle.clone(),
            drain_delay: shared.server.drain_delay,
            reload: Box::new(move || reload_target.reload()),
        }),
    });
    finish();
    Ok(())
}

/// The worker pool over `RUNTIME_WORKER_DIRS`; the runtime API's first segment never
/// names an app.
fn start_pool(config: &Config) -> Result<Arc<buntime_workers::Pool>, String> {
    let server = &config.server;
    let api_segment = server
        .api_base
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("api")
        .to_string();
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this binary for static workers: {e}"))?;
    buntime_workers::Pool::start(buntime_workers::PoolOptions {
        dirs: server.worker_dirs.clone(),
        reserved: vec![api_segment],
        size: server.pool_size,
        ephemeral_concurrency: server.ephemeral_concurrency,
        ephemeral_queue: server.ephemeral_queue_limit,
        exe,
    })
    .map_err(|e| format!("cannot start the worker pool: {e}"))
}

/// `METRICS_PORT`: `/metrics` alone on its own listener (same token rule).
struct MetricsPort {
    shared: Arc<Shared>,
}

#[async_trait]
impl ServeHttp for MetricsPort {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let req = session.req_header();
        let answer = match (req.uri.path(), &req.method) {
            ("/metrics", &http::Method::GET | &http::Method::HEAD) => {
                crate::proxy::metrics_answer(&self.shared, &req.headers)
            }
            ("/metrics", _) => buntime_plugin_sdk::ApiResponse::method_not_allowed(
                http::HeaderValue::from_static("GET, HEAD"),
            ),
            _ => buntime_plugin_sdk::ApiResponse::not_found(),
        };
        let mut resp = http::Response::builder().status(answer.status);
        for (name, value) in answer.headers {
            resp = resp.header(name, value);
        }
        resp.header(http::header::CONTENT_LENGTH, answer.body.len())
            .body(answer.body.to_vec())
            .unwrap_or_default()
    }
}

/// Starts plugins in load order, then flips readiness; keeps its runtime alive for the
/// tasks plugins spawn.
struct PluginStarter {
    shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for PluginStarter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = self
            .shared
            .admin_runtime
            .set(tokio::runtime::Handle::current());
        for p in &self.shared.plugins.loaded {
            if let Err(e) = p.plugin.start().await {
                log::error!("plugin {} failed to start: {e}", p.name);
                std::process::exit(1);
            }
            log::debug!("plugin {} started", p.name);
        }
        self.shared.lifecycle.set_running();
        log::info!(
            "{} plugin(s) started: {}",
            self.shared.plugins.loaded.len(),
            self.shared
                .plugins
                .loaded
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = shutdown.changed().await;
    }
}

/// The last steps of a shutdown, run once: plugins stop in reverse load order, workers
/// stop last, then the access log is flushed.
fn finisher(shared: Arc<Shared>) -> Arc<dyn Fn() + Send + Sync> {
    let once = Arc::new(Once::new());
    Arc::new(move || {
        once.call_once(|| {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("cannot stop plugins: {e}");
                    return;
                }
            };
            rt.block_on(async {
                for p in shared.plugins.loaded.iter().rev() {
                    if tokio::time::timeout(PLUGIN_STOP_TIMEOUT, p.plugin.stop())
                        .await
                        .is_err()
                    {
                        log::warn!(
                            "plugin {} did not stop within {PLUGIN_STOP_TIMEOUT:?}",
                            p.name
                        );
                    }
                }
            });
            if let Some(pool) = &shared.pool {
                pool.shutdown();
            }
            if let Some(log) = &shared.access_log {
                log.flush(Duration::from_secs(1));
            }
            log::info!("stopped");
        });
    })
}
