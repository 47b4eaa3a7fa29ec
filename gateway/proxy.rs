//! `impl ProxyHttp for Gateway`: the request flow of SPEC 1 mapped onto Pingora's phases.
//! Decisions are made synchronously from snapshots; only admin handlers await. The steps
//! the phases call live below: `admit` (steps 2-5: route, access, request hooks),
//! `upstream` (peers and what a forwarded request carries), `local` (answers written
//! here) and `failure` (the error a failed exchange answers).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use buntime_plugin_sdk::html::find_ignore_case;
use buntime_plugin_sdk::{ApiResponse, HeaderList, Identity, RouteKind};
use buntime_proxy::CompiledRule;
use buntime_workers::{App, AppManifest, Lease};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use buntime_metrics::RequestRecord;

use crate::headers;
use crate::lifecycle::InflightGuard;
use crate::logging::AccessEntry;
use crate::state::Shared;

mod admit;
mod failure;
mod local;
mod upstream;

use failure::{error_response, is_timeout, upstream_error_kind};
pub use local::metrics_answer;
use upstream::{app_request, repeated_content_length, rule_peer, rule_request};

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

/// Pages a rule's `base`/`relativePaths` rewrites are held whole up to this size (as the
/// static worker's, `INJECT_MAX`); larger ones go on as they are.
const HTML_REWRITE_MAX: usize = 8 << 20;

/// The status logged for a request whose client left before any answer (nginx's 499).
const CLIENT_CLOSED_REQUEST: u16 = 499;
/// An incoming `x-request-id` longer than this is replaced, not echoed.
const MAX_REQUEST_ID: usize = 200;
// Statics: `headers::set_upstream` takes the names it sets by `&'static` reference.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
    /// A rule's upstream addresses that failed to connect; retries try the others.
    failed_addrs: Vec<std::net::SocketAddr>,
    /// The answer when no worker could be had (503 App unavailable, 500 manifest).
    app_error: Option<ApiResponse>,
    /// The HTML page a rule's `base`/`relativePaths` rewrites, gathered until its end.
    html: Option<Vec<u8>>,
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
            failed_addrs: Vec::new(),
            app_error: None,
            html: None,
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
        admit::to_origin_form(session.req_header_mut())?;
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
        let next = match self.header_too_large(session) {
            Some(resp) => Some(Next::Respond(resp)),
            None => self.admit(session.req_header(), ctx),
        };
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
                self.respond(session, ctx, not_stored(resp)).await?;
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
                self.respond(session, ctx, not_stored(resp)).await?;
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

    /// A worker refused the connection: retry once, on another worker. A rule's upstream
    /// address did: retry on each of the name's other addresses (nothing was sent yet).
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(rule), Some(addr)) = (
            &ctx.rule,
            pingora::upstreams::peer::Peer::address(peer).as_inet(),
        ) {
            rule.upstream.failed(*addr);
            ctx.failed_addrs.push(*addr);
            if ctx.failed_addrs.len() < rule.upstream.count() {
                e.set_retry(true);
            }
        }
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
        if upstream_response.status == StatusCode::SWITCHING_PROTOCOLS {
            // Pingora's 60 s client read timeout would cut a socket idle that long (a
            // chat nobody types in); it lives until a side closes, and TCP keepalive
            // (`server::listener`) ends one whose client is gone.
            session.set_read_timeout(None);
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
        // A redirect to the upstream's own URL goes to the client as the gateway's
        // (`CompiledRule::local_location`); only redirects and `201` carry one that matters.
        if let Some(rule) = &ctx.rule
            && (upstream_response.status.is_redirection()
                || upstream_response.status == StatusCode::CREATED)
            && let Some(local) = upstream_response
                .headers
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| rule.local_location(l))
        {
            upstream_response.insert_header(http::header::LOCATION, local)?;
        }
        if ctx.rule.as_ref().is_some_and(|r| r.rule.rewrites_html()) && html_page(upstream_response)
        {
            // Its length changes (so a HEAD's would be wrong too): chunked, or to
            // HTTP/1.0 ended by the close below.
            upstream_response.remove_header(&http::header::CONTENT_LENGTH);
            if session.req_header().method != http::Method::HEAD {
                upstream_response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                ctx.html = Some(Vec::new());
            }
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

    /// A page a rule rewrites (`html` in `Ctx`) is held whole, then rewritten; one over
    /// `HTML_REWRITE_MAX` is sent on as it is from there.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        let Some(page) = &mut ctx.html else {
            return Ok(None);
        };
        if let Some(piece) = body.take() {
            page.extend_from_slice(&piece);
        }
        if end_of_stream || page.len() > HTML_REWRITE_MAX {
            let page = ctx.html.take().unwrap_or_default();
            let done = match (&ctx.rule, end_of_stream) {
                (Some(rule), true) => buntime_proxy::html::rewrite(
                    &page,
                    rule.rule.base.as_deref(),
                    rule.rule.relative_paths,
                ),
                _ => page,
            };
            *body = Some(Bytes::from(done));
        }
        Ok(None)
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

// === helpers ===

/// An API answer with `Cache-Control: no-store`: it may hold rules (with the headers they
/// add, often an upstream's credentials), SQL rows or keyval values, and a cache in front
/// of the gateway (a CDN, a corporate proxy) must keep none of it for the next asker.
fn not_stored(resp: ApiResponse) -> ApiResponse {
    resp.with_header(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    )
}

/// A response whose body is a whole HTML page as sent (not compressed), as a rule's HTML
/// rewriting needs it; not an interim, empty, unchanged or partial (`206`, whose
/// `Content-Range` counts the upstream's bytes) answer.
fn html_page(resp: &ResponseHeader) -> bool {
    let header = |name| resp.headers.get(name).map(HeaderValue::as_bytes);
    !resp.status.is_informational()
        && !matches!(resp.status.as_u16(), 204 | 206 | 304)
        && header(http::header::CONTENT_TYPE)
            .is_some_and(|t| find_ignore_case(t, b"text/html").is_some())
        && header(http::header::CONTENT_ENCODING)
            .is_none_or(|e| e.eq_ignore_ascii_case(b"identity"))
}

fn is_websocket(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&'static str, &'static str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (name, value) in headers {
            r.insert_header(*name, *value).unwrap();
        }
        r
    }

    /// Only a whole, uncompressed HTML page can be rewritten as text.
    #[test]
    fn html_pages_are_whole_uncompressed_html() {
        let html = ("content-type", "Text/HTML; charset=utf-8");
        assert!(html_page(&answer(200, &[html])));
        assert!(html_page(&answer(
            404,
            &[html, ("content-encoding", "IDENTITY")]
        )));
        assert!(!html_page(&answer(
            200,
            &[html, ("content-encoding", "gzip")]
        )));
        assert!(!html_page(&answer(
            200,
            &[("content-type", "application/json")]
        )));
        assert!(!html_page(&answer(200, &[])));
        for status in [103, 204, 206, 304] {
            assert!(!html_page(&answer(status, &[html])), "{status}");
        }
    }
}
