//! A failed upstream exchange: the JSON error the client gets (SPEC 4.1, 8.3) and the
//! `kind` label of `buntime_upstream_errors_total`.

use buntime_plugin_sdk::ApiResponse;
use http::StatusCode;
use pingora::prelude::*;

/// The `kind` label of `buntime_upstream_errors_total`.
pub(super) fn upstream_error_kind(e: &Error) -> &'static str {
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

pub(super) fn is_timeout(e: &Error) -> bool {
    matches!(e.etype(), ConnectTimedout | ReadTimedout | WriteTimedout)
}

/// The JSON error for a failed request (SPEC 4.1, 8.3); `None` when the client is gone.
/// `reason` replaces the generic upstream reason when the gateway knows better.
pub(super) fn error_response(e: &Error, reason: Option<&str>) -> Option<ApiResponse> {
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
