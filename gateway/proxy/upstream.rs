//! What a forwarded request carries and where it goes: the rule's or the worker's peer,
//! the rewritten path, and the forwarding headers (SPEC 1, 4.1, 8.3).

use std::net::IpAddr;
use std::time::Duration;

use buntime_plugin_sdk::ApiResponse;
use buntime_plugin_sdk::net::X_FORWARDED_FOR;
use buntime_proxy::CompiledRule;
use buntime_workers::{Address, AppManifest, Unavailable};
use http::{HeaderName, HeaderValue, StatusCode};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{AppRoute, Ctx, Gateway, X_REQUEST_ID, content_length, peer_ip};
use crate::headers;

/// Workers are local: a connection that takes longer is a dead worker.
const WORKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a kept-alive upstream connection waits in the pool for its next request. A
/// server closes an idle connection on its own schedule (Node and uvicorn after 5 s,
/// gunicorn after 2 s); a request sent on it as it closes is lost, and a `POST` cannot be
/// sent again (`error_while_proxy`): a `502`. Dropped before any of those, it is never
/// reused at that moment. Reconnecting after a second of silence costs little.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
// Statics: `headers::set_upstream` takes the names it sets by `&'static` reference.
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_IDENTITY: HeaderName = HeaderName::from_static("x-identity");
static X_AUTH_SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");

impl Gateway {
    /// A worker for the request's app: a ready one from the snapshot, else wait for one to
    /// start (bounded by the app's `startTimeout`).
    pub(super) async fn app_peer(&self, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
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

    /// X-Forwarded-* and X-Real-IP (SPEC 1), `x-request-id`; identity headers are only
    /// ever the gateway's own.
    pub(super) fn forwarding_headers(
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

/// The peer for a rule's target: TLS and SNI for https/wss, certificate checks unless
/// `secure: false`, the rule's timeouts (an upgraded WebSocket is not cut by the read
/// timeout).
pub(super) fn rule_peer(rule: &CompiledRule, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
    let Some(addr) = rule.upstream.addr(&ctx.failed_addrs) else {
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
    // Without a read timeout, keepalive is what ends a socket whose upstream vanished.
    if ctx.websocket {
        peer.options.tcp_keepalive = Some(crate::server::CLIENT_KEEPALIVE);
    }
    Ok(Box::new(peer))
}

/// Rewritten path and query, changeOrigin (Host and Origin), and the rule's headers.
pub(super) fn rule_request(
    rule: &CompiledRule,
    uri: Option<&str>,
    up: &mut RequestHeader,
) -> Result<()> {
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
    // Pages are rewritten as text: ask for them uncompressed (the original's fetch
    // decompressed them, and sent them on uncompressed too).
    if rule.rule.rewrites_html() {
        up.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
    }
    Ok(())
}

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
pub(super) fn app_path<'a>(base: &str, path: &'a str) -> &'a str {
    if base == "/" {
        return path;
    }
    match path.strip_prefix(base) {
        Some("") | None => "/",
        Some(rest) => rest,
    }
}

/// The worker sees the path without the app segment, and `x-base`.
pub(super) fn app_request(
    route: &AppRoute,
    req: &RequestHeader,
    up: &mut RequestHeader,
) -> Result<()> {
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

/// The single value of a `Content-Length` written more than once. Pingora passes such a
/// header on as it came, and readers of one number refuse it (Python's `http.server` and
/// Go, as upstreams) or read the body until the connection closes (Python's `http.client`,
/// as a client: on a kept-alive connection, until the idle timeout).
pub(super) fn repeated_content_length(headers: &http::HeaderMap) -> Option<u64> {
    let mut all = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let first = all.next()?;
    if first.as_bytes().contains(&b',') || all.next().is_some() {
        content_length(headers)
    } else {
        None
    }
}
