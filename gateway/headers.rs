//! Adding the gateway's headers to a response without Pingora's per-header cost, when that
//! changes no byte on the wire.
//!
//! Pingora 0.9 keeps header names twice: in the `http` map, and in a second map with the
//! case each name arrived in, which it writes out on HTTP/1. Its `insert_header` parses the
//! name again, allocates a non-standard one twice and fills both maps, about 1,400
//! instructions a header; there is no way to pass a prebuilt name or reserve room. A header
//! without the case map is written with the names of [`wire_name`] instead. So when every
//! name a response already has is in that form (the Server, Date, Content-Type,
//! Content-Length and Connection of a plain nginx or Go answer are), the case map is
//! dropped and the headers go straight into the `http` map. Otherwise they are added
//! Pingora's way, and the upstream's case is kept.

use http::header::{self, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
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
    let map = &mut parts.headers;
    map.try_reserve(headers.size_hint().0)
        .or_err(InvalidHTTPHeader, "too many headers")?;
    for (name, value, append) in headers {
        if append {
            map.try_append(name, value).map(drop)
        } else {
            map.try_insert(name, value).map(drop)
        }
        .or_err(InvalidHTTPHeader, "too many headers")?;
    }
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
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
