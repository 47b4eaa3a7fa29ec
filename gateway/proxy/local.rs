//! Answers the gateway writes itself: the runtime API, plugin routes, `/metrics` and every
//! local error, each with the response hooks' headers and a `Content-Length`.

use buntime_plugin_sdk::{ApiRequest, ApiResponse};
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{ADMIN_BODY_LIMIT, Ctx, Gateway, X_REQUEST_ID};
use crate::access::Denied;
use crate::headers;
use crate::lifecycle::Phase;
use crate::state::Shared;

/// A local answer's body is written in pieces of this size, as Pingora passes a proxied
/// body on (its `BODY_BUF_LIMIT`).
const LOCAL_BODY_PIECE: usize = 64 * 1024;

impl Gateway {
    /// A plugin's admin route, run on the plugins' runtime (see `Shared::admin_runtime`).
    pub(super) async fn plugin_request(&self, i: usize, req: ApiRequest) -> ApiResponse {
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
    pub(super) async fn api_request(
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
    pub(super) async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        resp: ApiResponse,
    ) -> Result<()> {
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
        // A write that fails is the client's doing (it left, or stopped reading): marked
        // so, it is not logged as the gateway's error (`suppress_error_log`).
        write(session, h, send_body.then_some(resp.body))
            .await
            .map_err(|e| e.into_down())
    }

    /// While draining, every answer closes its connection (`Connection: close`): the
    /// client sends its next request on a new connection (another instance, behind a load
    /// balancer), not on a kept-alive one the gateway closes under it when the drain delay
    /// ends, losing a request sent at that moment.
    pub(super) fn close_when_draining(&self, session: &mut Session) {
        if self.shared.lifecycle.phase() == Phase::Draining {
            session.set_keepalive(None);
        }
    }
}

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

/// Writes `h` and `body` (none: a header-only answer). The body goes in pieces the size
/// of a proxied body's: `CLIENT_WRITE_TIMEOUT` bounds each write, and an admin read of up
/// to 32 MiB in one would have to reach the client within it (half a megabyte a second).
async fn write(session: &mut Session, h: ResponseHeader, body: Option<Bytes>) -> Result<()> {
    session
        .write_response_header(Box::new(h), body.is_none())
        .await?;
    if let Some(mut body) = body {
        while body.len() > LOCAL_BODY_PIECE {
            let piece = body.split_to(LOCAL_BODY_PIECE);
            session.write_response_body(Some(piece), false).await?;
        }
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
