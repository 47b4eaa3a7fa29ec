//! `impl ProxyHttp for Gateway`: the request flow of SPEC 1 mapped onto Pingora's phases.
//! Decisions are made synchronously from snapshots; only admin handlers await.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use buntime_plugin_sdk::net::X_FORWARDED_FOR;
use buntime_plugin_sdk::path::has_dot_segment;
use buntime_plugin_sdk::{ApiRequest, ApiResponse, HeaderList, Identity, RequestInfo, RouteKind};
use buntime_proxy::CompiledRule;
use buntime_workers::{Address, App, AppManifest, Lease, Unavailable};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, StatusCode, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use buntime_metrics::RequestRecord;

use crate::access::Denied;
use crate::headers;
use crate::lifecycle::{InflightGuard, Phase};
use crate::logging::AccessEntry;
use crate::routes::Route;
use crate::state::Shared;

/// Body limit of routes that do not set their own (SPEC 1).
const DEFAULT_BODY_LIMIT: u64 = 10 << 20;
/// Admin APIs read whole JSON bodies up to this size.
const ADMIN_BODY_LIMIT: u64 = 1 << 20;
/// Idle keep-alive for client connections; Pingora would otherwise keep them forever.
const KEEPALIVE_IDLE_SECS: u64 = 60;
/// Longest wait for one write to a client to go through. Pingora waits forever: a client
/// that stops reading a large answer would hold its connection, the upstream's and the
/// buffered body for good. nginx's `send_timeout` is the same 60 s; Pingora's own reads
/// from clients have it too.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// A local answer's body is written in pieces of this size, as Pingora passes a proxied
/// body on (its `BODY_BUF_LIMIT`).
const LOCAL_BODY_PIECE: usize = 64 * 1024;
/// The status logged for a request whose client left before any answer (nginx's 499).
const CLIENT_CLOSED_REQUEST: u16 = 499;
/// Workers are local: a connection that takes longer is a dead worker.
const WORKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a kept-alive upstream connection waits in the pool for its next request. A
/// server closes an idle connection on its own schedule (Node and uvicorn after 5 s,
/// gunicorn after 2 s); a request sent on it as it closes is lost, and a `POST` cannot be
/// sent again (`error_while_proxy`): a `502`. Dropped before any of those, it is never
/// reused at that moment. Reconnecting after a second of silence costs little.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// An incoming `x-request-id` longer than this is replaced, not echoed.
const MAX_REQUEST_ID: usize = 200;
// Statics: `headers::set_upstream` takes the names it sets by `&'static` reference.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Headers that carry the method an app should act on instead of the request line's.
static METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_IDENTITY: HeaderName = HeaderName::from_static("x-identity");
static X_AUTH_SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");

pub struct Gateway {
    pub shared: Arc<Shared>,
}

/// Per-request state, dropped after `logging` (or when a request panics).
pub struct Ctx {
    start: Instant,
    request_id: HeaderValue,
    client_ip: IpAddr,
    /// The peer is a trusted proxy: `client_ip` is its `X-Forwarded-For`, if it sent one.
    forwarded: bool,
    route: RouteKind,
    identity: Option<Arc<Identity>>,
    /// Headers that hooks asked to add to whatever response the request gets.
    headers_out: HeaderList,
    body_limit: u64,
    body_seen: u64,
    /// The matched proxy rule, and the path and query it sends upstream.
    rule: Option<Arc<CompiledRule>>,
    upstream_uri: Option<String>,
    /// The request asks for a WebSocket upgrade.
    websocket: bool,
    /// Why the upstream could not be reached, when we know better than the error type.
    error_reason: Option<&'static str>,
    /// When the first upstream attempt began, and how long until its response header.
    upstream_start: Option<Instant>,
    upstream_time: Option<Duration>,
    /// A request hook answered 429 (the rate limiter).
    rate_limited: bool,
    /// The app (or the shell) that serves the request, and the worker it has.
    app: Option<AppRoute>,
    lease: Option<Lease>,
    /// A worker that refused the connection; the one retry avoids it.
    failed_worker: Option<String>,
    /// The answer when no worker could be had (503 App unavailable, 500 manifest).
    app_error: Option<ApiResponse>,
    _inflight: InflightGuard,
}

/// A request for an app: which, its manifest, and the base the worker sees (`x-base`).
struct AppRoute {
    app: Arc<App>,
    manifest: Arc<AppManifest>,
    /// `/hello@1` for an app (stripped from the path), `/` for the shell (kept).
    base: String,
}

/// What the synchronous part of `request_filter` decided.
enum Next {
    Respond(ApiResponse),
    RuntimeApi(String),
    Plugin(usize, String),
}

#[async_trait]
impl ProxyHttp for Gateway {
    /// Boxed: Pingora keeps the context by value in the future it makes for each request,
    /// in several of its states, and copies that whole future into place as a request
    /// starts. A pointer there instead of the 400 bytes of `Ctx` (benches/README.md).
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx {
            start: Instant::now(),
            request_id: HeaderValue::from_static(""),
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            forwarded: false,
            route: RouteKind::None,
            identity: None,
            // Rate-limit and CORS headers, and a few more.
            headers_out: HeaderList::with_capacity(8),
            body_limit: DEFAULT_BODY_LIMIT,
            body_seen: 0,
            rule: None,
            upstream_uri: None,
            websocket: false,
            error_reason: None,
            upstream_start: None,
            upstream_time: None,
            rate_limited: false,
            app: None,
            lease: None,
            failed_worker: None,
            app_error: None,
            _inflight: self.shared.lifecycle.enter(),
        })
    }

    /// None. Pingora's default adds its response-compression module switched off (level 0),
    /// which the gateway never turns on; it still cost each request an allocation and a
    /// call in every phase (benches/README.md).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        if session.get_keepalive() == Some(0) {
            session.set_keepalive(Some(KEEPALIVE_IDLE_SECS));
        }
        // Requests a client pipelines behind this one are answered in turn, as nginx
        // does; Pingora's default closes the connection and drops them.
        session.set_pipelining_enabled(true);
        session.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
        let req = session.req_header();
        ctx.request_id = request_id(req);
        let peer = peer_ip(session);
        let trusted = &self.shared.server.trusted_proxies;
        ctx.client_ip = trusted.client_ip(peer, &req.headers);
        ctx.forwarded = trusted.contains(peer);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // Checked here first so that, once the rules are read, a request awaits nothing.
        let req = session.req_header();
        if self.shared.router.rules_pending() {
            self.shared
                .wait_for_rules(&req.method, req.uri.path(), is_websocket(req))
                .await;
        }
        let next = self.admit(session.req_header(), ctx);
        match next {
            None => Ok(false),
            Some(Next::Respond(resp)) => {
                self.respond(session, ctx, resp).await?;
                Ok(true)
            }
            Some(Next::RuntimeApi(rest)) => {
                let resp = match self.api_request(session, ctx, rest).await? {
                    Ok(req) => crate::api::handle(&self.shared, &req),
                    Err(resp) => resp,
                };
                self.respond(session, ctx, resp).await?;
                Ok(true)
            }
            Some(Next::Plugin(i, rest)) => {
                let mut resp = match self.api_request(session, ctx, rest).await? {
                    Ok(req) => self.plugin_request(i, req).await,
                    Err(resp) => resp,
                };
                if resp.status == StatusCode::NOT_FOUND {
                    let req = session.req_header();
                    let allowed = &self.shared.allowed_methods;
                    if let Some(allow) = allowed.allow(&req.method, req.uri.path()) {
                        resp = ApiResponse::method_not_allowed(allow);
                    }
                }
                self.respond(session, ctx, resp).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        ctx.upstream_start.get_or_insert_with(Instant::now);
        if ctx.app.is_some() {
            return self.app_peer(ctx).await;
        }
        match ctx.rule.clone() {
            Some(rule) => rule_peer(&rule, ctx),
            // Only routes with an upstream get here.
            None => Error::e_explain(HTTPStatus(404), "no upstream for this route"),
        }
    }

    /// Pingora's rule (retry on a reused connection only when reading failed, never a
    /// non-idempotent request), plus: a pooled connection whose peer has gone (an idle
    /// upstream closed it, a worker exited) fails on the first write, before anything
    /// reached a server, so that request goes again on a fresh connection too.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = !session.as_ref().retry_buffer_truncated();
        if client_reused && replayable && *e.etype() == WriteError {
            e.set_retry(true);
        } else if !session.req_header().method.is_idempotent() || !replayable {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    /// A worker refused the connection: retry once, on another worker.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(lease) = ctx.lease.take() {
            lease.worker.count_error();
            if ctx.failed_worker.is_none() {
                ctx.failed_worker = Some(lease.worker.id.clone());
                e.set_retry(true);
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        self.forwarding_headers(session, upstream, ctx)?;
        self.shared.admin.strip_master_key(upstream);
        if let Some(rule) = &ctx.rule {
            rule_request(rule, ctx.upstream_uri.as_deref(), upstream)?;
        }
        if let Some(route) = &ctx.app {
            app_request(route, session.req_header(), upstream)?;
        }
        if let Some(n) = repeated_content_length(&upstream.headers) {
            upstream.insert_header(http::header::CONTENT_LENGTH, n.to_string())?;
        }
        // Only an HTTP/1.0 client may leave Host out (`admit` refuses the others), but
        // Pingora sends every upstream request as HTTP/1.1, which must carry one (RFC 9112
        // 3.2): strict servers (Go, nginx) answer it 400. As nginx does, it gets the
        // upstream's own name (a worker's is localhost).
        if session.req_header().version == Version::HTTP_10
            && !upstream.headers.contains_key(http::header::HOST)
        {
            let host = ctx
                .rule
                .as_ref()
                .map_or_else(|| "localhost".to_string(), |r| r.target.authority());
            upstream.insert_header(http::header::HOST, host)?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Upgraded (WebSocket) bytes pass through this filter too; they are not a body.
        if session.was_upgraded() {
            return Ok(());
        }
        if let Some(chunk) = body {
            ctx.body_seen += chunk.len() as u64;
            if ctx.body_seen > ctx.body_limit {
                return Error::e_explain(HTTPStatus(413), "request body over the route's limit");
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(start) = ctx.upstream_start {
            ctx.upstream_time.get_or_insert(start.elapsed());
        }
        // The response is ours, in our version: an HTTP/1.0 upstream (Python's
        // http.server, by default) made Pingora answer an HTTP/1.1 client in HTTP/1.0.
        if upstream_response.version == Version::HTTP_10
            && session.req_header().version == Version::HTTP_11
        {
            upstream_response.set_version(Version::HTTP_11);
        }
        // A 101 makes the connection a tunnel to the upstream: only the WebSocket
        // handshake the client asked for, proven by its accept key, may (`upgrade.rs`).
        if upstream_response.status == StatusCode::SWITCHING_PROTOCOLS
            && !(ctx.websocket
                && crate::upgrade::accepted(
                    &session.req_header().headers,
                    &upstream_response.headers,
                ))
        {
            log::warn!(
                "refused a 101 from the upstream of {}: not the WebSocket handshake the \
                 client asked for (no upgrade asked, or a Sec-WebSocket-Accept that does not \
                 answer its key)",
                route_label(&ctx.route)
            );
            return Error::e_explain(InvalidHTTPHeader, "101 without a WebSocket handshake")
                .map_err(|e| e.into_up());
        }
        headers::strip_hop_by_hop(upstream_response);
        if self
            .shared
            .plugins
            .typed
            .gateway
            .as_ref()
            .is_some_and(|g| g.cors_enabled())
        {
            headers::strip_cors(upstream_response);
        }
        // A 204 has no body, and may not say it has one (RFC 9110 8.6, RFC 9112 6.1);
        // Pingora sends none, but passed an upstream's `Content-Length: 5` or
        // `Transfer-Encoding: chunked` on, and a client or proxy in front that believed
        // it read the next response's bytes as this body. nginx takes them off too.
        if upstream_response.status == StatusCode::NO_CONTENT {
            upstream_response.remove_header(&http::header::CONTENT_LENGTH);
            upstream_response.remove_header(&http::header::TRANSFER_ENCODING);
        }
        if let Some(n) = repeated_content_length(&upstream_response.headers) {
            upstream_response.insert_header(http::header::CONTENT_LENGTH, n.to_string())?;
        }
        // An interim answer (`100 Continue`, `103 Early Hints`) passes as it came: the
        // gateway's headers go on the final one, which would lose the rate-limit headers
        // taken from `ctx` here. A 101 is the last answer on its connection: it gets them.
        if upstream_response.status.is_informational()
            && upstream_response.status != StatusCode::SWITCHING_PROTOCOLS
        {
            return Ok(());
        }
        // HTTP/1.0 has no chunked coding (RFC 9112 6.1), yet Pingora chunks every body
        // without a length: a 1.0 client (ApacheBench, many health checkers) got the
        // chunk sizes as data. Such a body goes to it unframed, ending with the connection.
        if session.req_header().version < Version::HTTP_11
            && upstream_response
                .headers
                .contains_key(http::header::TRANSFER_ENCODING)
        {
            upstream_response.remove_header(&http::header::TRANSFER_ENCODING);
            session.set_keepalive(None);
        }
        self.close_when_draining(session);
        let mut extra = std::mem::take(&mut ctx.headers_out);
        self.response_hooks(session.req_header(), ctx, &mut extra);
        let id = (X_REQUEST_ID.clone(), ctx.request_id.clone(), false);
        headers::add(upstream_response, extra.into_iter().chain([id]))
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        if let Some(sent) = session.response_written() {
            // The header already went out; all we can do is close.
            return FailToProxy {
                error_code: sent.status.as_u16(),
                can_reuse_downstream: false,
            };
        }
        let resp = match ctx.app_error.take() {
            Some(resp) => Some(resp),
            None if ctx.app.is_some()
                && matches!(e.esource(), ErrorSource::Upstream)
                && !is_timeout(e) =>
            {
                Some(ApiResponse::error(StatusCode::BAD_GATEWAY, "Bad Gateway"))
            }
            None => error_response(e, ctx.error_reason),
        };
        let Some(resp) = resp else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let code = resp.status.as_u16();
        // The connection is not reused after a failure (the request body may be half
        // read); say so in the response, or a pooling client would reuse a closed socket.
        session.set_keepalive(None);
        if let Err(err) = self.respond(session, ctx, resp).await {
            log::debug!("could not send the {code} error response: {err}");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(
        &self,
        session: &mut Session,
        e: Option<&pingora::Error>,
        ctx: &mut Self::CTX,
    ) {
        let req = session.req_header();
        // A client that hangs up is not the upstream's or the worker's failure.
        let client_gone = e.is_some_and(|e| matches!(e.esource(), ErrorSource::Downstream));
        let status = match session.response_written() {
            Some(r) => r.status.as_u16(),
            // nginx's "client closed request", which dashboards know to set apart.
            None if client_gone => CLIENT_CLOSED_REQUEST,
            None => 0,
        };
        if let Some(lease) = &ctx.lease
            && (status >= 500 || (e.is_some() && !client_gone))
        {
            lease.worker.count_error();
        }
        if let Some(metrics) = &self.shared.plugins.typed.metrics {
            // Before the upstream's header any failure is the exchange's; after it, only
            // the upstream's own (a body cut short, a stall past the read timeout).
            let upstream_error = e
                .filter(|_| !client_gone && ctx.upstream_start.is_some())
                .filter(|e| {
                    ctx.upstream_time.is_none() || matches!(e.esource(), ErrorSource::Upstream)
                })
                .map(upstream_error_kind);
            metrics.metrics().record(&RequestRecord {
                route: &ctx.route,
                method: &req.method,
                status,
                duration: ctx.start.elapsed(),
                upstream: ctx
                    .upstream_start
                    .map(|s| ctx.upstream_time.unwrap_or_else(|| s.elapsed())),
                upstream_error,
                rate_limited: ctx.rate_limited,
            });
        }
        let Some(log) = &self.shared.access_log else {
            return;
        };
        log.record(AccessEntry {
            time: SystemTime::now(),
            request_id: ctx.request_id.to_str().unwrap_or("").to_string(),
            client_ip: ctx.client_ip,
            method: req.method.as_str().to_string(),
            path: req.uri.path().to_string(),
            status,
            bytes: session.body_bytes_sent() as u64,
            duration: ctx.start.elapsed(),
            route: route_label(&ctx.route),
        });
    }

    /// How Pingora's error lines name the request. Its own summary holds the query string,
    /// which can carry a secret (a signed URL, an app's `?token=`) and which the access
    /// log leaves out for that reason; this one names the path and the request id instead.
    fn request_summary(&self, session: &Session, ctx: &Self::CTX) -> String {
        let req = session.req_header();
        let id = ctx.request_id.to_str().unwrap_or("");
        format!("{} {}, request id {id}", req.method, req.uri.path())
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, error: &Error) -> bool {
        // Answers we chose (413, an unavailable app: logged where decided) and clients
        // hanging up are not server errors.
        matches!(error.etype(), HTTPStatus(_)) || matches!(error.esource(), ErrorSource::Downstream)
    }
}

// === impl Gateway ===

impl Gateway {
    /// Steps 2-5 of SPEC 1: early hooks, route, body limit, access, request hooks.
    /// `None` means "proxy it".
    fn admit(&self, req: &RequestHeader, ctx: &mut Ctx) -> Option<Next> {
        let shared = &*self.shared;
        let path = req.uri.path();
        // Only origin-form targets (`/path?query`): the upstream gets the target as sent,
        // and `keep/this`, `evil.com:80` or `HTTP://h/x` were routed (and checked against
        // public routes) as `/` while the upstream read something else.
        if req.raw_path().first() != Some(&b'/') || has_dot_segment(path) {
            return Some(Next::Respond(ApiResponse::error(
                StatusCode::BAD_REQUEST,
                "Invalid path",
            )));
        }
        // RFC 9112 3.2: an HTTP/1.1 request without Host, or any request with an invalid
        // one, must be answered 400; Pingora lets both through (two Host lines it refuses).
        let host_problem = match req.headers.get(http::header::HOST) {
            None if req.version != Version::HTTP_10 => Some("Missing Host header"),
            Some(host) if !valid_host(host.as_bytes()) => Some("Invalid Host header"),
            _ => None,
        };
        if let Some(problem) = host_problem {
            return Some(Next::Respond(ApiResponse::error(
                StatusCode::BAD_REQUEST,
                problem,
            )));
        }
        // RFC 9112 6.1 asks a 501 for a transfer coding the server does not apply.
        if req.headers.contains_key(http::header::TRANSFER_ENCODING) && !chunked_only(&req.headers)
        {
            return Some(Next::Respond(ApiResponse::error(
                StatusCode::NOT_IMPLEMENTED,
                "Unsupported Transfer-Encoding",
            )));
        }

        for p in &shared.plugins.loaded {
            if let Some(resp) = p.plugin.on_early_request(&self.info(req, ctx)) {
                ctx.route = RouteKind::Preflight;
                return Some(Next::Respond(resp));
            }
        }

        ctx.websocket = is_websocket(req);
        let route = shared
            .router
            .route(&req.method, path, &req.headers, ctx.websocket);
        ctx.route = match &route {
            Route::Api(_) | Route::WellKnown | Route::Metrics => RouteKind::Api,
            Route::Plugin(i, _) => RouteKind::Plugin(shared.plugins.loaded[*i].name),
            Route::Rule(rule) => {
                ctx.rule = Some(rule.clone());
                RouteKind::Rule(rule.id.clone())
            }
            Route::Shell(_) => RouteKind::Shell,
            Route::App(app, _) => RouteKind::App(Arc::from(app.name.as_str())),
            Route::NotFound => RouteKind::None,
        };
        // A request this gateway already forwarded: a rule's target (or an app) leads back
        // here, and each round would take two more connections until none were left.
        if shared.via.looped(&req.headers) {
            log::warn!(
                "request {} came back to this gateway (route {}): a target leads back to it; \
                 answered 508",
                ctx.request_id.to_str().unwrap_or(""),
                route_label(&ctx.route)
            );
            return Some(Next::Respond(ApiResponse::error(
                StatusCode::LOOP_DETECTED,
                "Loop Detected",
            )));
        }
        ctx.body_limit = match &route {
            Route::Api(_) | Route::Plugin(..) => ADMIN_BODY_LIMIT,
            _ => DEFAULT_BODY_LIMIT,
        };
        if let Route::Shell(app) | Route::App(app, _) = &route {
            let manifest = match app.manifest() {
                Ok(m) => m,
                Err(why) => {
                    return Some(Next::Respond(ApiResponse::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("Invalid app manifest: {why}"),
                    )));
                }
            };
            ctx.body_limit = manifest.max_body_size;
            let base = match &route {
                Route::App(_, segment) => format!("/{segment}"),
                _ => "/".to_string(),
            };
            ctx.app = Some(AppRoute {
                app: app.clone(),
                manifest,
                base,
            });
        }
        if content_length(&req.headers).is_some_and(|n| n > ctx.body_limit) {
            return Some(Next::Respond(ApiResponse::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload Too Large",
            )));
        }

        let admin = match &route {
            Route::Api(rest) => !crate::api::is_public(rest.trim_end_matches('/')),
            Route::Plugin(..) => true,
            _ => false,
        };
        if admin && let Err(denied) = self.check_admin(req, ctx) {
            return Some(Next::Respond(denied.response()));
        }
        if !admin && let Some(resp) = self.check_token(req, &route, ctx) {
            return Some(Next::Respond(resp));
        }

        // Plugins add their response headers straight to the request's list (moved out
        // while `info` borrows the context), headers of a plugin that answers included.
        let mut out = std::mem::take(&mut ctx.headers_out);
        let info = self.info(req, ctx);
        let answer = shared
            .plugins
            .loaded
            .iter()
            .find_map(|p| p.plugin.on_request(&info, &mut out));
        ctx.headers_out = out;
        if let Some(resp) = answer {
            ctx.rate_limited = resp.status == StatusCode::TOO_MANY_REQUESTS;
            return Some(Next::Respond(resp));
        }

        Some(match route {
            Route::Api(rest) => Next::RuntimeApi(rest),
            Route::WellKnown => Next::Respond(crate::api::well_known(shared.router.api_base())),
            Route::Plugin(i, rest) => Next::Plugin(i, rest),
            Route::Rule(rule) if rule.keeps_path() => return None,
            Route::Rule(rule) => {
                ctx.upstream_uri = Some(rule.upstream_uri(path, req.uri.query()));
                return None;
            }
            Route::App(..) if needs_slash(req, ctx.app.as_ref()) => Next::Respond(add_slash(req)),
            Route::Shell(_) | Route::App(..) => return None,
            Route::Metrics => Next::Respond(metrics_answer(shared, &req.headers)),
            Route::NotFound => Next::Respond(ApiResponse::not_found()),
        })
    }

    /// A worker for the request's app: a ready one from the snapshot, else wait for one to
    /// start (bounded by the app's `startTimeout`).
    async fn app_peer(&self, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let (Some(pool), Some(route)) = (&self.shared.pool, &ctx.app) else {
            return Error::e_explain(HTTPStatus(404), "no worker pool");
        };
        let (app, manifest) = (route.app.clone(), route.manifest.clone());
        match pool.checkout(&app, ctx.failed_worker.as_deref()).await {
            Ok(lease) => {
                let peer = worker_peer(&lease.worker.address, &manifest, ctx.websocket)?;
                ctx.lease = Some(lease);
                Ok(peer)
            }
            Err(Unavailable::Invalid(why)) => {
                ctx.app_error = Some(ApiResponse::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Invalid app manifest: {why}"),
                ));
                Error::e_explain(HTTPStatus(500), "invalid app manifest")
            }
            Err(Unavailable::Down { why, retry_after }) => {
                log::warn!("app {} unavailable: {why}", app.name);
                let body = serde_json::json!({"error": "App unavailable", "app": app.name});
                ctx.app_error = Some(
                    ApiResponse::json(StatusCode::SERVICE_UNAVAILABLE, &body)
                        .with_header(http::header::RETRY_AFTER, HeaderValue::from(retry_after)),
                );
                Error::e_explain(HTTPStatus(503), "app unavailable")
            }
        }
    }

    fn check_admin(&self, req: &RequestHeader, ctx: &Ctx) -> Result<(), Denied> {
        let admin = &self.shared.admin;
        // Loopback by X-Forwarded-For counts only when no hop after it is a stranger's.
        let from_loopback = buntime_plugin_sdk::net::is_loopback(ctx.client_ip)
            && (!ctx.forwarded || self.shared.server.trusted_proxies.vouched_for(&req.headers));
        match &self.shared.plugins.typed.auth {
            Some(auth) => {
                let role =
                    |h: &http::HeaderMap| auth.authenticate(h).ok().map(|id| id.has_role("admin"));
                admin.check(&req.headers, from_loopback, Some(&role))
            }
            None => admin.check(&req.headers, from_loopback, None),
        }
    }

    /// The JWT check of SPEC 6 for routes that are neither admin nor public: `None` to go
    /// on (with the identity in `ctx`), else the 401 or 503 to answer.
    fn check_token(
        &self,
        req: &RequestHeader,
        route: &Route,
        ctx: &mut Ctx,
    ) -> Option<ApiResponse> {
        let auth = self.shared.plugins.typed.auth.as_ref()?;
        let protected = matches!(
            route,
            Route::Rule(_) | Route::Shell(_) | Route::App(..) | Route::NotFound
        );
        let path = req.uri.path();
        let public_for = |method: &str| {
            crate::api::is_public_path(self.shared.router.api_base(), path)
                || auth.is_public(method, path)
                || ctx
                    .rule
                    .as_ref()
                    .is_some_and(|r| r.public.is_match(method, path))
                // An app's publicRoutes are relative to the app.
                || ctx
                    .app
                    .as_ref()
                    .is_some_and(|a| a.manifest.public.is_match(method, app_path(&a.base, path)))
        };
        // A method-override header makes many apps act on its method instead (Express's
        // method-override, Rails, Google's APIs): with `POST` public and `DELETE` not,
        // `POST` plus `X-HTTP-Method-Override: DELETE` was a DELETE without a token. Such
        // a request is public only if every method it names is.
        let public = public_for(req.method.as_str())
            && METHOD_OVERRIDES
                .iter()
                .flat_map(|name| req.headers.get_all(name))
                .all(|v| v.to_str().is_ok_and(|m| public_for(m.trim())));
        if !protected || public {
            return None;
        }
        if !auth.available() {
            return Some(buntime_auth_token::unavailable());
        }
        match auth.authenticate(&req.headers) {
            Ok(identity) => {
                ctx.identity = Some(identity);
                None
            }
            Err(reason) => Some(buntime_auth_token::rejection(reason)),
        }
    }

    fn info<'a>(&self, req: &'a RequestHeader, ctx: &'a Ctx) -> RequestInfo<'a> {
        RequestInfo {
            method: &req.method,
            path: req.uri.path(),
            headers: &req.headers,
            client_ip: ctx.client_ip,
            route: &ctx.route,
            identity: ctx.identity.as_deref(),
            rate_limit: ctx.rule.as_ref().and_then(|r| r.rate_limit()).or_else(|| {
                ctx.app
                    .as_ref()
                    .and_then(|a| a.manifest.rate_limit.as_ref())
            }),
        }
    }

    /// Step 7 for every response: each plugin's response hook, in reverse load order.
    fn response_hooks(&self, req: &RequestHeader, ctx: &Ctx, out: &mut HeaderList) {
        let info = self.info(req, ctx);
        for p in self.shared.plugins.loaded.iter().rev() {
            p.plugin.on_response(&info, out);
        }
    }

    /// A plugin's admin route, run on the plugins' runtime (see `Shared::admin_runtime`).
    async fn plugin_request(&self, i: usize, req: ApiRequest) -> ApiResponse {
        let plugin = self.shared.plugins.loaded[i].plugin.clone();
        let Some(rt) = self.shared.admin_runtime.get() else {
            return plugin.handle(req).await;
        };
        match rt.spawn(async move { plugin.handle(req).await }).await {
            Ok(resp) => resp,
            Err(e) => {
                log::error!("admin handler failed: {e}");
                ApiResponse::error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }

    /// Reads an admin request's body (up to 1 MiB) into an `ApiRequest`.
    async fn api_request(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        path: String,
    ) -> Result<Result<ApiRequest, ApiResponse>> {
        let body = match read_body(session, ADMIN_BODY_LIMIT).await? {
            Some(b) => b,
            None => {
                return Ok(Err(ApiResponse::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Payload Too Large",
                )));
            }
        };
        let req = session.req_header();
        // HEAD is a GET whose body `respond` leaves out: the plugins' routes know GET only.
        let method = if req.method == Method::HEAD {
            Method::GET
        } else {
            req.method.clone()
        };
        Ok(Ok(ApiRequest {
            method,
            path,
            query: req.uri.query().map(String::from),
            headers: req.headers.clone(),
            body,
            client_ip: ctx.client_ip,
        }))
    }

    /// Writes a local response: hook headers, `x-request-id`, and always a Content-Length.
    async fn respond(&self, session: &mut Session, ctx: &mut Ctx, resp: ApiResponse) -> Result<()> {
        self.close_when_draining(session);
        let mut extra = std::mem::take(&mut ctx.headers_out);
        self.response_hooks(session.req_header(), ctx, &mut extra);
        let mut h = ResponseHeader::build_no_case(resp.status, None)?;
        let own = resp
            .headers
            .into_iter()
            .map(|(name, value)| (name, value, false));
        let id = (X_REQUEST_ID.clone(), ctx.request_id.clone(), false);
        headers::add(&mut h, own.chain(extra).chain([id]))?;
        let bodiless = matches!(resp.status.as_u16(), 204 | 304);
        if !bodiless {
            h.set_content_length(resp.body.len())?;
        }
        let send_body =
            !bodiless && !resp.body.is_empty() && session.req_header().method != Method::HEAD;
        session
            .write_response_header(Box::new(h), !send_body)
            .await?;
        if send_body {
            // In pieces the size of a proxied body's: `CLIENT_WRITE_TIMEOUT` bounds each
            // write, and an admin read of up to 32 MiB in one would have to reach the
            // client within it (half a megabyte a second).
            let mut body = resp.body;
            while body.len() > LOCAL_BODY_PIECE {
                let piece = body.split_to(LOCAL_BODY_PIECE);
                session.write_response_body(Some(piece), false).await?;
            }
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }

    /// While draining, every answer closes its connection (`Connection: close`): the
    /// client sends its next request on a new connection (another instance, behind a load
    /// balancer), not on a kept-alive one the gateway closes under it when the drain delay
    /// ends, losing a request sent at that moment.
    fn close_when_draining(&self, session: &mut Session) {
        if self.shared.lifecycle.phase() == Phase::Draining {
            session.set_keepalive(None);
        }
    }

    /// X-Forwarded-* and X-Real-IP (SPEC 1), `x-request-id`; identity headers are only
    /// ever the gateway's own.
    fn forwarding_headers(
        &self,
        session: &Session,
        up: &mut RequestHeader,
        ctx: &Ctx,
    ) -> Result<()> {
        let peer = peer_ip(session);
        let trusted = ctx.forwarded;
        // Incoming forwarding headers count only from a trusted proxy (names prebuilt:
        // looking up a `&str` parses it on every request).
        let incoming = |name: &HeaderName| {
            trusted
                .then(|| session.req_header().headers.get(name))
                .flatten()
        };
        // Formatted once: without a trusted proxy, X-Forwarded-For and X-Real-IP agree.
        let peer_text = ip_header(peer);
        let xff = match incoming(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => HeaderValue::from_str(&format!("{prev}, {peer}"))
                .unwrap_or_else(|_| peer_text.clone()),
            None => peer_text.clone(),
        };
        let real_ip = if ctx.client_ip == peer {
            peer_text
        } else {
            ip_header(ctx.client_ip)
        };
        let proto = incoming(&X_FORWARDED_PROTO)
            .cloned()
            .unwrap_or(HeaderValue::from_static("http"));
        let host = incoming(&X_FORWARDED_HOST)
            .or_else(|| session.req_header().headers.get(http::header::HOST))
            .cloned();
        // The identity headers are the gateway's alone; from a client that is not a
        // trusted proxy, so are a proxy's.
        let spoofable: Vec<String> = up
            .headers
            .keys()
            .map(|k| k.as_str())
            .filter(|k| {
                *k == "x-identity" || k.starts_with("x-auth-") || (!trusted && set_by_proxy(k))
            })
            .map(String::from)
            .collect();
        for name in spoofable {
            up.remove_header(&name);
        }
        let client = session.req_header();
        let via = self.shared.via.forwarded(client.version, &client.headers);
        let identity = ctx.identity.as_deref();
        headers::set_upstream(
            up,
            self.shared.server.preserve_header_case,
            [
                Some((&http::header::VIA, via)),
                Some((&X_FORWARDED_FOR, xff)),
                Some((&X_REAL_IP, real_ip)),
                Some((&X_FORWARDED_PROTO, proto)),
                host.map(|h| (&X_FORWARDED_HOST, h)),
                Some((&X_REQUEST_ID, ctx.request_id.clone())),
                identity.map(|id| (&X_IDENTITY, id.header.clone())),
                identity
                    .and_then(|id| id.subject_header.clone())
                    .map(|s| (&X_AUTH_SUBJECT, s)),
            ],
        )
    }
}

// === metrics ===

/// The `/metrics` answer (main listener and `METRICS_PORT`): open unless `METRICS_TOKEN`
/// is set, then only with it as a Bearer.
pub fn metrics_answer(shared: &Shared, headers: &http::HeaderMap) -> ApiResponse {
    let Some(metrics) = &shared.plugins.typed.metrics else {
        return ApiResponse::not_found();
    };
    if let Some(token) = &shared.server.metrics_token {
        use subtle::ConstantTimeEq;
        let given = crate::access::bearer(headers).unwrap_or_default();
        if !bool::from(given.ct_eq(token.as_bytes())) {
            return Denied::Unauthorized.response();
        }
    }
    let mut r = ApiResponse::empty(StatusCode::OK);
    r.headers.push((
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(buntime_metrics::CONTENT_TYPE),
    ));
    r.body = metrics.metrics().render();
    r
}

/// The `kind` label of `buntime_upstream_errors_total`.
fn upstream_error_kind(e: &Error) -> &'static str {
    match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout => "timeout",
        ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError
        | ConnectProxyFailure => "connect",
        TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
        | TLSWantX509Lookup => "tls",
        ConnectionClosed | ReadError | WriteError => "reset",
        _ => "other",
    }
}

// === rules ===

/// The peer for a rule's target: TLS and SNI for https/wss, certificate checks unless
/// `secure: false`, the rule's timeouts (an upgraded WebSocket is not cut by the read
/// timeout).
fn rule_peer(rule: &CompiledRule, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
    let Some(addr) = rule.upstream.addr() else {
        ctx.error_reason = Some("upstream host does not resolve");
        return Error::e_explain(ConnectNoRoute, "upstream host does not resolve");
    };
    let t = &rule.target;
    let mut peer = HttpPeer::new(addr, t.scheme.tls(), t.host.clone());
    let timeouts = &rule.rule.timeouts;
    peer.options.verify_cert = rule.rule.secure;
    peer.options.verify_hostname = rule.rule.secure;
    peer.options.connection_timeout = Some(timeouts.connect);
    peer.options.read_timeout = (!ctx.websocket).then_some(timeouts.read);
    peer.options.write_timeout = Some(timeouts.write);
    peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
    Ok(Box::new(peer))
}

/// Rewritten path and query, changeOrigin (Host and Origin), and the rule's headers.
fn rule_request(rule: &CompiledRule, uri: Option<&str>, up: &mut RequestHeader) -> Result<()> {
    if let Some(uri) = uri {
        up.set_raw_path(uri.as_bytes())?;
    }
    if rule.rule.change_origin {
        up.insert_header(http::header::HOST, rule.target.authority())?;
        if up.headers.contains_key(http::header::ORIGIN) {
            up.insert_header(http::header::ORIGIN, rule.target.origin())?;
        }
    }
    for (name, value) in &rule.headers {
        up.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

// === apps ===

/// Connects to a worker over TCP or its unix socket; the app's `timeout` bounds the wait
/// for its answer (not for an upgraded WebSocket).
fn worker_peer(
    address: &Address,
    manifest: &AppManifest,
    websocket: bool,
) -> Result<Box<HttpPeer>> {
    let mut peer = match address {
        Address::Tcp(addr) => HttpPeer::new(*addr, false, String::new()),
        Address::Unix(path) => HttpPeer::new_uds(&path.to_string_lossy(), false, String::new())?,
    };
    peer.options.connection_timeout = Some(WORKER_CONNECT_TIMEOUT);
    peer.options.read_timeout = (!websocket).then_some(manifest.timeout);
    peer.options.write_timeout = Some(manifest.timeout);
    peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
    Ok(Box::new(peer))
}

/// The path below the app's base: `/hello/x` under `/hello` is `/x`.
fn app_path<'a>(base: &str, path: &'a str) -> &'a str {
    if base == "/" {
        return path;
    }
    match path.strip_prefix(base) {
        Some("") | None => "/",
        Some(rest) => rest,
    }
}

/// Whether a `Host` value is `host[:port]` as RFC 3986 spells it: letters, digits,
/// `-._~`, sub-delims, `%`, `:` and the brackets of an IPv6 address (empty is allowed, for
/// a target without authority). No space, `/`, `@`, quote, angle bracket or raw UTF-8,
/// which an upstream echoing the host into a link or a cache key would pass on.
fn valid_host(value: &[u8]) -> bool {
    value.iter().all(|&b| HOST_BYTES[b as usize])
}

/// The bytes of [`valid_host`], as a table: it runs on every request.
const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,;=%:[]";
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

/// Whether a request's `Transfer-Encoding` is one `chunked` and nothing else. Pingora
/// takes off the chunks and sends the body upstream as `chunked` alone: a `gzip` before
/// them reached the upstream as bytes it could not tell from a plain body.
fn chunked_only(headers: &http::HeaderMap) -> bool {
    let mut codings = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    matches!(
        (codings.next(), codings.next()),
        (Some(coding), None) if coding.eq_ignore_ascii_case(b"chunked")
    )
}

/// A GET or HEAD of a static app's root without the trailing slash (`/web`): its worker
/// would get `/` either way, and a page served at `/web` resolves its relative links
/// against `/`. Command apps answer for themselves.
fn needs_slash(req: &RequestHeader, app: Option<&AppRoute>) -> bool {
    app.is_some_and(|a| a.manifest.command.is_none() && req.uri.path() == a.base)
        && (req.method == http::Method::GET || req.method == http::Method::HEAD)
}

/// `301` to the path with a trailing slash, query kept.
fn add_slash(req: &RequestHeader) -> ApiResponse {
    let location =
        buntime_workers::static_files::slash_location("", req.uri.path(), req.uri.query());
    let resp = ApiResponse::empty(StatusCode::MOVED_PERMANENTLY);
    match HeaderValue::from_str(&location) {
        Ok(v) => resp.with_header(http::header::LOCATION, v),
        Err(_) => resp,
    }
}

/// The worker sees the path without the app segment, and `x-base`.
fn app_request(route: &AppRoute, req: &RequestHeader, up: &mut RequestHeader) -> Result<()> {
    let mut uri = app_path(&route.base, req.uri.path()).to_string();
    if let Some(q) = req.uri.query() {
        uri.push('?');
        uri.push_str(q);
    }
    up.set_raw_path(uri.as_bytes())?;
    up.insert_header("x-base", route.base.clone())?;
    Ok(())
}

/// Headers that only a proxy in front of the gateway sets, dropped from anyone else: what
/// a client sends there is its own choice. Frameworks that believe `Forwarded` or
/// `X-Forwarded-Port`/`-Prefix` (Spring, Tomcat) build links and redirects from them and
/// take the client's address from `Forwarded: for=`; apps and rate limiters read the
/// address CDNs put in `True-Client-IP`, `CF-Connecting-IP`, `Fastly-Client-IP` or
/// `Client-IP` (Rails, many PHP apps); Symfony and Zend before 2018 (CVE-2018-14773)
/// routed by `X-Original-URL`/`X-Rewrite-URL`, so a public path carried a protected one
/// past the token check. The gateway sets `X-Forwarded-For/-Proto/-Host` and `X-Real-IP`.
fn set_by_proxy(name: &str) -> bool {
    name.starts_with("x-forwarded-")
        || matches!(
            name,
            "forwarded"
                | "x-original-url"
                | "x-rewrite-url"
                | "true-client-ip"
                | "cf-connecting-ip"
                | "fastly-client-ip"
                | "client-ip"
                | "x-client-ip"
                | "x-cluster-client-ip"
        )
}

fn is_timeout(e: &Error) -> bool {
    matches!(e.etype(), ConnectTimedout | ReadTimedout | WriteTimedout)
}

fn is_websocket(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

// === helpers ===

/// Keeps a sane incoming `x-request-id`, else makes a UUID v4.
fn request_id(req: &RequestHeader) -> HeaderValue {
    if let Some(v) = req.headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("invalid"))
}

/// An address as a header value. Consecutive requests on a thread mostly come from the
/// same client (keep-alive), so the last one is kept rather than formatted again.
fn ip_header(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((seen, value)) if *seen == ip => value.clone(),
        _ => {
            let value = format_ip(ip);
            *last = Some((ip, value.clone()));
            value
        }
    })
}

fn format_ip(ip: IpAddr) -> HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 48];
    let mut w = &mut buf[..];
    let _ = write!(w, "{ip}");
    let len = 48 - w.len();
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("unknown"))
}

fn peer_ip(session: &Session) -> IpAddr {
    match session.client_addr() {
        Some(SocketAddr::Inet(addr)) => buntime_plugin_sdk::net::canonical(addr.ip()),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// A message's `Content-Length`. Pingora takes one repeated with a single value (`3, 3`,
/// or on two lines: RFC 9110 8.6) and has refused conflicting ones, so the first is it.
fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    let value = headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?;
    value.split(',').next()?.trim().parse().ok()
}

/// The single value of a `Content-Length` written more than once. Pingora passes such a
/// header on as it came, and readers of one number refuse it (Python's `http.server` and
/// Go, as upstreams) or read the body until the connection closes (Python's `http.client`,
/// as a client: on a kept-alive connection, until the idle timeout).
fn repeated_content_length(headers: &http::HeaderMap) -> Option<u64> {
    let mut all = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let first = all.next()?;
    if first.as_bytes().contains(&b',') || all.next().is_some() {
        content_length(headers)
    } else {
        None
    }
}

/// Reads the whole body; `None` when it is over `limit`. Answers `Expect: 100-continue`,
/// which Pingora leaves to locally handled requests.
async fn read_body(session: &mut Session, limit: u64) -> Result<Option<Bytes>> {
    let expects = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // The client's errors (a malformed chunk, a closed connection) are marked as the
    // client's, so they answer 400 or nothing rather than a 502 that blames an upstream.
    let downstream = |mut e: Box<Error>| {
        e.as_down();
        e
    };
    if expects {
        session
            .as_downstream_mut()
            .write_continue_response()
            .await
            .map_err(downstream)?;
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await.map_err(downstream)? {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}

/// The JSON error for a failed request (SPEC 4.1, 8.3); `None` when the client is gone.
/// `reason` replaces the generic upstream reason when the gateway knows better.
fn error_response(e: &Error, reason: Option<&str>) -> Option<ApiResponse> {
    let upstream_reason = |e: &Error| reason.unwrap_or_else(|| upstream_reason(e));
    let (status, message) = match e.etype() {
        HTTPStatus(413) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large".to_string(),
        ),
        HTTPStatus(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY);
            (
                status,
                status.canonical_reason().unwrap_or("Error").to_string(),
            )
        }
        ConnectTimedout | ReadTimedout | WriteTimedout => {
            (StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout".to_string())
        }
        _ => match e.esource() {
            ErrorSource::Upstream => (
                StatusCode::BAD_GATEWAY,
                format!("Proxy error: {}", upstream_reason(e)),
            ),
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => return None,
                _ => (StatusCode::BAD_REQUEST, "Bad Request".to_string()),
            },
            ErrorSource::Internal | ErrorSource::Unset => (
                StatusCode::BAD_GATEWAY,
                format!("Proxy error: {}", upstream_reason(e)),
            ),
        },
    };
    Some(ApiResponse::error(status, message))
}

/// A short, stable reason for a failed upstream exchange (no addresses, no secrets).
fn upstream_reason(e: &Error) -> &'static str {
    match e.etype() {
        ConnectRefused => "connection refused",
        ConnectNoRoute => "no route to upstream",
        TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError => {
            "TLS handshake failed"
        }
        ConnectionClosed => "upstream closed the connection",
        ConnectError | BindError | SocketError => "could not connect to upstream",
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => {
            "invalid response from upstream"
        }
        ReadError | WriteError => "connection to upstream failed",
        _ => "upstream request failed",
    }
}

/// The metrics/access-log label of a route (SPEC 9).
pub fn route_label(route: &RouteKind) -> String {
    match route {
        RouteKind::Api => "api".into(),
        RouteKind::Plugin(name) => format!("plugin:{name}"),
        RouteKind::Rule(id) => format!("rule:{id}"),
        RouteKind::Shell => "shell".into(),
        RouteKind::App(name) => format!("app:{name}"),
        RouteKind::Preflight => "preflight".into(),
        RouteKind::None => "none".into(),
    }
}
