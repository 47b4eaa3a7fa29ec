//! Adding the gateway's headers to a response, and to an upstream request, without
//! Pingora's per-header cost.
//!
//! Pingora 0.9 keeps header names twice: in the `http` map, and in a second map with the
//! case each name arrived in, which it writes out on HTTP/1. Its `insert_header` parses the
//! name again, allocates a non-standard one twice and fills both maps, about 1,400
//! instructions a header; there is no way to pass a prebuilt name or reserve room. A header
//! without the case map is written with the names of [`wire_name`] instead.
//!
//! - Responses (`add`): when every name a response already has is in that form (the
//!   Server, Date, Content-Type, Content-Length and Connection of a plain nginx or Go
//!   answer are), the case map is dropped and the headers go straight into the `http` map:
//!   no byte changes. Otherwise they are added Pingora's way, and the upstream's case kept.
//! - Upstream requests (`set_upstream`): the case map is dropped unless
//!   `RUNTIME_PRESERVE_HEADER_CASE` asks to keep the client's case, so client names go
//!   upstream in lower case. Header names are case-insensitive (RFC 9110 5.1), and lower
//!   case is what HTTP/2 upstreams always get, what Envoy and HAProxy send by default and
//!   what Buntime's own proxy (Bun's `fetch`) sent; it saves ~7,000 instructions per
//!   proxied request (benches/README.md).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

/// Adds `(name, value, append)` to `resp`: `append` keeps the values already there, else
/// they are replaced.
pub fn add(
    resp: &mut ResponseHeader,
    headers: impl IntoIterator<Item = (HeaderName, HeaderValue, bool)>,
) -> Result<()> {
    let headers = headers.into_iter();
    if !names_are_default(resp) {
        for (name, value, append) in headers {
            if append {
                resp.append_header(name, value)?;
            } else {
                resp.insert_header(name, value)?;
            }
        }
        return Ok(());
    }
    // A reason phrase other than the status's own goes with the conversion; put it back.
    let reason = (resp.get_reason_phrase() != resp.status.canonical_reason())
        .then(|| resp.get_reason_phrase().map(str::to_owned))
        .flatten();
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, empty).into();
    put(&mut parts.headers, headers.size_hint().0, headers)?;
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
    }
    Ok(())
}

/// Drops an upstream response's own `Access-Control-*` headers, for when the gateway
/// answers CORS: its policy must hold whatever the app sends. An app whose CORS
/// middleware reflects every origin let a browser on an origin the gateway refuses read
/// the answer (the gateway adds no `Access-Control-Allow-Origin` for it, so the app's
/// went through).
pub fn strip_cors(resp: &mut ResponseHeader) {
    let is_cors = |name: &HeaderName| name.as_str().starts_with("access-control-");
    if !resp.headers.keys().any(is_cors) {
        return;
    }
    let names: Vec<HeaderName> = resp
        .headers
        .keys()
        .filter(|n| is_cors(n))
        .cloned()
        .collect();
    for name in names {
        resp.remove_header(&name);
    }
}

/// Drops an upstream response's hop-by-hop headers (RFC 9110 7.6.1), which Pingora passes
/// on: `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade` outside a 101, and every header
/// the `Connection` header names. (Pingora writes its own `Connection` to the client,
/// except on a 1xx.) A 101 is left whole: its `Connection: upgrade` and `Upgrade` are the
/// handshake. Framing headers named in `Connection` are kept: Pingora frames the body
/// by them.
pub fn strip_hop_by_hop(resp: &mut ResponseHeader) {
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS || !has_hop_by_hop(resp) {
        return;
    }
    let named: Vec<HeaderName> = resp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .filter(|name| *name != header::CONTENT_LENGTH && *name != header::TRANSFER_ENCODING)
        .collect();
    let fixed = ["keep-alive", "proxy-connection", "te", "upgrade"];
    for name in fixed
        .into_iter()
        .chain(named.iter().map(HeaderName::as_str))
    {
        resp.remove_header(name);
    }
    resp.remove_header(&header::CONNECTION);
}

/// Whether `resp` has a header for [`strip_hop_by_hop`] to remove. Most have at most
/// `Connection: keep-alive`, which names none.
fn has_hop_by_hop(resp: &ResponseHeader) -> bool {
    resp.headers.iter().any(|(name, value)| match *name {
        header::CONNECTION => {
            let value = value.as_bytes();
            !value.eq_ignore_ascii_case(b"keep-alive") && !value.eq_ignore_ascii_case(b"close")
        }
        header::TE | header::UPGRADE => true,
        _ => matches!(name.as_str(), "keep-alive" | "proxy-connection"),
    })
}

/// Sets `headers` on an upstream request, each replacing whatever the request had under
/// its name. The `http` map gets them directly, and Pingora's case map goes (so do the
/// names of later `insert_header`s: a rule's `headers`), unless `keep_case` is set or the
/// request holds what its conversion to `http::request::Parts` would lose: a
/// request-target other than the URI's path and query (absolute-form, not UTF-8), or the
/// HTTP/2 end-of-stream flag.
pub fn set_upstream<const N: usize>(
    req: &mut RequestHeader,
    keep_case: bool,
    headers: [Option<(&'static HeaderName, HeaderValue)>; N],
) -> Result<()> {
    let plain_target = req.raw_path_is_utf8()
        && req
            .uri
            .path_and_query()
            .is_some_and(|p| p.as_str().as_bytes() == req.raw_path());
    if keep_case || !plain_target || req.send_end_stream().is_some() {
        for (name, value) in headers.into_iter().flatten() {
            req.insert_header(name.as_str(), value)?;
        }
        return Ok(());
    }
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, empty).into();
    put(
        &mut parts.headers,
        N,
        headers
            .into_iter()
            .flatten()
            .map(|(n, v)| (n.clone(), v, false)),
    )?;
    *req = RequestHeader::from(parts);
    Ok(())
}

/// Adds `(name, value, append)` to `map`, with room reserved for `room` more entries.
fn put(
    map: &mut HeaderMap,
    room: usize,
    headers: impl Iterator<Item = (HeaderName, HeaderValue, bool)>,
) -> Result<()> {
    map.try_reserve(room)
        .or_err(InvalidHTTPHeader, "too many headers")?;
    for (name, value, append) in headers {
        if append {
            map.try_append(name, value).map(drop)
        } else {
            map.try_insert(name, value).map(drop)
        }
        .or_err(InvalidHTTPHeader, "too many headers")?;
    }
    Ok(())
}

/// Whether Pingora would write every name of `resp` as it is now without its case map.
fn names_are_default(resp: &ResponseHeader) -> bool {
    // Both iterate the same entries in the same order (Pingora asserts so itself).
    resp.case_header_iter()
        .zip(resp.headers.iter())
        .all(|((case, _), (name, _))| case.as_slice() == wire_name(name).as_bytes())
}

/// The name Pingora 0.9 writes for `name` in a header without a case map: title case for
/// these, lower case for the rest (pingora-http's `titled_header_name_str`, not exported;
/// a test holds the two together).
fn wire_name(name: &HeaderName) -> &str {
    match *name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        _ => name.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(resp: &ResponseHeader) -> String {
        let mut buf = Vec::new();
        resp.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    /// An upstream response as Pingora parses it: names kept in the case they came in.
    fn upstream(names: &[&'static str]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for name in names {
            resp.append_header(*name, "v").unwrap();
        }
        resp
    }

    fn ours() -> Vec<(HeaderName, HeaderValue, bool)> {
        vec![
            (
                HeaderName::from_static("ratelimit-limit"),
                HeaderValue::from_static("100"),
                false,
            ),
            (header::VARY, HeaderValue::from_static("Origin"), true),
            (header::SERVER, HeaderValue::from_static("replaced"), false),
            (
                HeaderName::from_static("x-request-id"),
                HeaderValue::from_static("id"),
                false,
            ),
        ]
    }

    /// The same headers added Pingora's way, for comparison.
    fn slow(resp: &mut ResponseHeader) {
        for (name, value, append) in ours() {
            if append {
                resp.append_header(name, value).unwrap();
            } else {
                resp.insert_header(name, value).unwrap();
            }
        }
    }

    #[test]
    fn wire_names_match_pingora() {
        // Every standard header: Pingora's own choice is what it stores for a `HeaderName`.
        let names = [
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "access-control-allow-credentials",
            "access-control-allow-headers",
            "access-control-allow-methods",
            "access-control-allow-origin",
            "access-control-expose-headers",
            "access-control-max-age",
            "access-control-request-headers",
            "access-control-request-method",
            "age",
            "allow",
            "alt-svc",
            "authorization",
            "cache-control",
            "cache-status",
            "cdn-cache-control",
            "connection",
            "content-disposition",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-range",
            "content-security-policy",
            "content-security-policy-report-only",
            "content-type",
            "cookie",
            "dnt",
            "date",
            "etag",
            "expect",
            "expires",
            "forwarded",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "link",
            "location",
            "max-forwards",
            "origin",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "public-key-pins",
            "public-key-pins-report-only",
            "range",
            "referer",
            "referrer-policy",
            "refresh",
            "retry-after",
            "sec-websocket-accept",
            "sec-websocket-extensions",
            "sec-websocket-key",
            "sec-websocket-protocol",
            "sec-websocket-version",
            "server",
            "set-cookie",
            "strict-transport-security",
            "te",
            "trailer",
            "transfer-encoding",
            "user-agent",
            "upgrade",
            "upgrade-insecure-requests",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "x-content-type-options",
            "x-dns-prefetch-control",
            "x-frame-options",
            "x-xss-protection",
            "x-request-id",
            "ratelimit-remaining",
        ];
        for name in names {
            let name = HeaderName::from_static(name);
            let mut resp = ResponseHeader::build(200, None).unwrap();
            resp.insert_header(name.clone(), "v").unwrap();
            let (case, _) = resp.case_header_iter().next().unwrap();
            assert_eq!(case.as_slice(), wire_name(&name).as_bytes(), "{name}");
        }
    }

    #[test]
    fn default_names_give_the_same_bytes() {
        let names = [
            "Server",
            "Date",
            "Content-Type",
            "Content-Length",
            "x-powered-by",
            "vary",
        ];
        let mut fast = upstream(&names);
        add(&mut fast, ours()).unwrap();
        assert!(!fast.has_case(), "the case map was dropped");
        let mut kept = upstream(&names);
        slow(&mut kept);
        assert_eq!(wire(&fast), wire(&kept));
        assert!(
            wire(&fast).contains("Server: replaced\r\n"),
            "{}",
            wire(&fast)
        );
        assert_eq!(fast.headers.get_all(header::VARY).iter().count(), 2);
    }

    #[test]
    fn other_names_keep_their_case() {
        for odd in ["X-Powered-By", "content-type", "ETag", "CONNECTION"] {
            let names = ["Server", odd];
            let mut resp = upstream(&names);
            add(&mut resp, ours()).unwrap();
            assert!(resp.has_case(), "{odd}");
            let mut kept = upstream(&names);
            slow(&mut kept);
            assert_eq!(wire(&resp), wire(&kept));
            assert!(
                wire(&resp).contains(&format!("{odd}: v\r\n")),
                "{}",
                wire(&resp)
            );
        }
    }

    fn names(resp: &ResponseHeader) -> Vec<&str> {
        resp.headers.keys().map(HeaderName::as_str).collect()
    }

    #[test]
    fn hop_by_hop_headers_go_and_the_rest_stay() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (name, value) in [
            ("Server", "s"),
            ("Connection", "X-One , keep-alive"),
            ("connection", "x-TWO,Transfer-Encoding,bad name"),
            ("X-One", "1"),
            ("X-Two", "2"),
            ("X-Three", "3"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
        ] {
            resp.append_header(name, value).unwrap();
        }
        strip_hop_by_hop(&mut resp);
        assert_eq!(names(&resp), ["server", "x-three", "transfer-encoding"]);
        assert!(
            wire(&resp).contains("Server: s\r\nX-Three: 3\r\n"),
            "{}",
            wire(&resp)
        );
    }

    #[test]
    fn plain_responses_and_upgrades_are_untouched() {
        let mut resp = upstream(&["Server", "Content-Length"]);
        resp.append_header("Connection", "keep-alive").unwrap();
        strip_hop_by_hop(&mut resp);
        assert_eq!(names(&resp), ["server", "content-length", "connection"]);

        let mut upgrade = ResponseHeader::build(101, None).unwrap();
        upgrade.append_header("Connection", "Upgrade").unwrap();
        upgrade.append_header("Upgrade", "websocket").unwrap();
        strip_hop_by_hop(&mut upgrade);
        assert_eq!(names(&upgrade), ["connection", "upgrade"]);
    }

    static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    static REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

    /// A client request as Pingora parses it, with these names in their case.
    fn client(target: &[u8], names: &[&'static str]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target, None).unwrap();
        for name in names {
            req.append_header(*name, "v").unwrap();
        }
        req
    }

    fn upstream_headers() -> [Option<(&'static HeaderName, HeaderValue)>; 3] {
        [
            Some((&REQUEST_ID, HeaderValue::from_static("id"))),
            None,
            Some((&REAL_IP, HeaderValue::from_static("192.0.2.1"))),
        ]
    }

    fn request_wire(req: &RequestHeader) -> String {
        let mut buf = Vec::new();
        req.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    /// The same headers set Pingora's way, for comparison.
    fn slow_request(req: &mut RequestHeader) {
        for (name, value) in upstream_headers().into_iter().flatten() {
            req.insert_header(name.as_str(), value).unwrap();
        }
    }

    #[test]
    fn client_names_go_upstream_in_lower_case_by_default() {
        let names = ["Host", "User-Agent", "X-Request-Id", "X-Custom"];
        let mut req = client(b"/p?q=1", &names);
        set_upstream(&mut req, false, upstream_headers()).unwrap();
        assert!(!req.has_case());
        let wire = request_wire(&req);
        for line in [
            "Host: v",
            "user-agent: v",
            "x-custom: v",
            "x-real-ip: 192.0.2.1",
        ] {
            assert!(wire.contains(&format!("{line}\r\n")), "{line} in {wire}");
        }
        // Set means replaced: the client's own x-request-id is gone.
        assert_eq!(req.headers.get_all("x-request-id").iter().count(), 1);
        assert_eq!(req.headers["x-request-id"], "id");
        assert_eq!(req.raw_path(), b"/p?q=1");
    }

    #[test]
    fn kept_case_is_pingoras_way() {
        let names = ["Host", "User-Agent", "x-custom"];
        let mut req = client(b"/p", &names);
        set_upstream(&mut req, true, upstream_headers()).unwrap();
        assert!(req.has_case());
        let mut pingora = client(b"/p", &names);
        slow_request(&mut pingora);
        assert_eq!(request_wire(&req), request_wire(&pingora));
        assert!(request_wire(&req).contains("User-Agent: v\r\n"));
    }

    #[test]
    fn targets_and_flags_the_conversion_would_lose_stay() {
        for target in [&b"http://example.com/p?q=1"[..], b"/caf\xe9"] {
            let mut req = client(target, &["User-Agent"]);
            set_upstream(&mut req, false, upstream_headers()).unwrap();
            assert!(req.has_case(), "Pingora's way for {target:?}");
            assert_eq!(req.raw_path(), target);
            assert!(request_wire(&req).contains("User-Agent: v\r\n"));
        }
        let mut h2 = client(b"/p", &["user-agent"]);
        h2.set_version(http::Version::HTTP_2);
        h2.set_send_end_stream(false);
        set_upstream(&mut h2, false, upstream_headers()).unwrap();
        assert_eq!(h2.send_end_stream(), Some(false));
        assert_eq!(h2.headers["x-real-ip"], "192.0.2.1");
    }

    #[test]
    fn a_custom_reason_phrase_stays() {
        let mut resp = upstream(&["Server"]);
        resp.set_reason_phrase(Some("Fine")).unwrap();
        add(&mut resp, ours()).unwrap();
        assert_eq!(resp.get_reason_phrase(), Some("Fine"));
        let mut plain = upstream(&["Server"]);
        add(&mut plain, ours()).unwrap();
        assert_eq!(plain.get_reason_phrase(), Some("OK"));
    }
}
