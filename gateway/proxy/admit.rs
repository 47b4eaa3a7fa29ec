//! Steps 2-5 of SPEC 1, decided from snapshots before anything is proxied: the request's
//! form, early hooks (the CORS preflight), the route and its body limit, the admin or
//! JWT check, and the plugins' request hooks (the rate limit).

use std::sync::Arc;

use buntime_plugin_sdk::path::has_dot_segment;
use buntime_plugin_sdk::{ApiResponse, HeaderList, RequestInfo, RouteKind};
use http::{HeaderName, HeaderValue, StatusCode, Version};
use pingora::http::RequestHeader;
use pingora::http::authority::{RawTargetAuthority, is_http_family_scheme, raw_target_authority};
use pingora::prelude::*;
use pingora::proxy::Session;

use super::upstream::app_path;
use super::{
    ADMIN_BODY_LIMIT, AppRoute, Ctx, DEFAULT_BODY_LIMIT, Gateway, Next, content_length,
    is_websocket, metrics_answer, route_label,
};
use crate::access::Denied;
use crate::routes::Route;

/// Headers that carry the method an app should act on instead of the request line's.
static METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

impl Gateway {
    /// `431` for a request header (its line and fields, as sent) over `maxHeaderSize`,
    /// before any route. Pingora takes up to 1 MiB and would send the upstream a
    /// copy, which most refuse for far less (Node above 16 KiB), each in its own way.
    pub(super) fn header_too_large(&self, session: &Session) -> Option<ApiResponse> {
        let size = session
            .as_downstream()
            .as_http1()?
            .get_headers_raw_bytes()
            .len();
        let limit = self.shared.server.max_header_size;
        (size > limit).then(|| {
            ApiResponse::error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("Request header too large: {size} bytes, at most {limit}"),
            )
        })
    }

    /// Steps 2-5 of SPEC 1: early hooks, route, body limit, access, request hooks.
    /// `None` means "proxy it".
    pub(super) fn admit(&self, req: &RequestHeader, ctx: &mut Ctx) -> Option<Next> {
        let shared = &*self.shared;
        let path = req.uri.path();
        // Only origin-form targets (`/path?query`; absolute-form was rewritten to it by
        // `to_origin_form`): the upstream gets the target as sent, and `keep/this`,
        // `evil.com:80` or `foo://h/x` were routed (and checked against public routes) as
        // `/` while the upstream read something else.
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

        // TRACE asks the server to send the request back as it got it: an upstream's echo
        // holds what the gateway added on the way, a rule's `headers` (often the upstream's
        // own credentials) and `X-Identity`. Apache httpd answers it by default
        // (`TraceEnable on`); nginx refuses it, as this does. TRACK is IIS's spelling.
        if req.method == http::Method::TRACE || req.method.as_str() == "TRACK" {
            return Some(Next::Respond(ApiResponse::error(
                StatusCode::NOT_IMPLEMENTED,
                format!("{} is not supported", req.method),
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
            Route::Rule(rule) => rule.rule.max_body_size.unwrap_or(DEFAULT_BODY_LIMIT),
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

    pub(super) fn check_admin(&self, req: &RequestHeader, ctx: &Ctx) -> Result<(), Denied> {
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
    pub(super) fn check_token(
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

    pub(super) fn info<'a>(&self, req: &'a RequestHeader, ctx: &'a Ctx) -> RequestInfo<'a> {
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
    pub(super) fn response_hooks(&self, req: &RequestHeader, ctx: &Ctx, out: &mut HeaderList) {
        let info = self.info(req, ctx);
        for p in self.shared.plugins.loaded.iter().rev() {
            p.plugin.on_response(&info, out);
        }
    }
}

/// Rewrites an absolute-form target (`GET http://host/path?q`) to origin-form
/// (`/path?q`), taking its authority as `Host` when none was sent. RFC 9112 3.2.2: a
/// server must accept absolute-form, which clients configured to use the gateway as their
/// HTTP proxy send. Pingora has already refused one whose authority is ambiguous or
/// differs from `Host`, and parsed its path from the same classification read here; after
/// this, what is routed and checked is what the upstream gets. Any other target that does
/// not start with `/` is left for [`Gateway::admit`] to refuse.
pub(super) fn to_origin_form(req: &mut RequestHeader) -> pingora::Result<()> {
    if req.raw_path().first() == Some(&b'/') {
        return Ok(());
    }
    let RawTargetAuthority::Absolute {
        scheme,
        authority,
        path_and_query,
    } = raw_target_authority(req.raw_path())
    else {
        return Ok(());
    };
    if !is_http_family_scheme(scheme) {
        return Ok(());
    }
    let host = (!req.headers.contains_key(http::header::HOST))
        .then(|| HeaderValue::from_bytes(authority))
        .transpose()
        .map_err(|e| pingora::Error::because(InvalidHTTPHeader, "absolute-form authority", e))?;
    let target = match path_and_query.first() {
        Some(b'/') => path_and_query.to_vec(),
        _ => [b"/".as_slice(), path_and_query].concat(),
    };
    req.set_raw_path(&target)?;
    if let Some(host) = host {
        req.insert_header(http::header::HOST, host)?;
    }
    Ok(())
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
