//! Whether an upstream's `101 Switching Protocols` is the WebSocket handshake the client
//! asked for. After a 101 the gateway only copies bytes both ways, so what the client
//! sends next reaches the upstream unrouted and unchecked. An upstream that answers 101
//! without having upgraded (an endpoint that echoes a status it is given, as httpbin's
//! `/status/101` does) thus opened a tunnel through which the client's next requests
//! went straight to any path of it, past the rules, the token check and the rate limit
//! ("WebSocket smuggling"). Only a server that read this request's key can give its
//! `Sec-WebSocket-Accept` (RFC 6455 4.2.2), so the gateway checks it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use sha1::{Digest, Sha1};

/// RFC 6455 1.3: appended to the client's key before hashing.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether `response` (a 101) completes the WebSocket upgrade that `request` asked for.
pub fn accepted(request: &HeaderMap, response: &HeaderMap) -> bool {
    let Some(key) = request.get("sec-websocket-key") else {
        return false;
    };
    let mut hash = Sha1::new();
    hash.update(key.as_bytes());
    hash.update(GUID);
    let expected = STANDARD.encode(hash.finalize());
    response
        .get("sec-websocket-accept")
        .is_some_and(|v| v.as_bytes() == expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn one(name: &'static str, value: &'static str) -> HeaderMap {
        HeaderMap::from_iter([(
            http::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )])
    }

    #[test]
    fn the_accept_must_answer_the_key() {
        // The example of RFC 6455 1.3.
        let request = one("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        let answer = |accept| one("sec-websocket-accept", accept);
        assert!(accepted(&request, &answer("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")));
        assert!(!accepted(&request, &answer("s3pPLMBiTxaQ9kYGzzhZRbK+xOp=")));
        assert!(!accepted(&request, &HeaderMap::new()));
        assert!(!accepted(
            &HeaderMap::new(),
            &answer("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        ));
    }
}
