//! Request paths as the gateway and the plugins must read them alike.

/// Paths with `.` or `..` segments are refused: upstreams resolve them differently than
/// our route and public-path matching would. A segment counts as one however an upstream
/// might read it: percent-encoded (`%2e%2e`), ended by an encoded slash or a backslash
/// (`..%2f`, `..\\`, which some servers decode or take as `/`), or carrying path
/// parameters (`..;x`, which Java servers strip). So `/public/..;/admin` cannot pass as a
/// public path and reach `/admin`.
pub fn has_dot_segment(path: &str) -> bool {
    fn is_dot(seg: &[u8]) -> bool {
        seg == b"." || seg.eq_ignore_ascii_case(b"%2e")
    }
    fn is_dot_segment(seg: &[u8]) -> bool {
        let seg = seg.split(|&b| b == b';').next().unwrap_or(seg);
        match seg.len() {
            1 | 3 => is_dot(seg),
            2 => seg == b"..",
            4 => is_dot(&seg[..1]) && is_dot(&seg[1..]) || is_dot(&seg[..3]) && is_dot(&seg[3..]),
            6 => is_dot(&seg[..3]) && is_dot(&seg[3..]),
            _ => false,
        }
    }
    // Runs on every request: most paths have neither `.` nor `%` and pass on one scan;
    // no allocation, and most segments are rejected on length.
    let b = path.as_bytes();
    if !b.iter().any(|&c| c == b'.' || c == b'%') {
        return false;
    }
    let (mut start, mut i) = (0, 0);
    while i <= b.len() {
        let separator = match b.get(i) {
            None | Some(b'/' | b'\\') => 1,
            Some(b'%')
                if b.get(i + 1..i + 3).is_some_and(|h| {
                    h.eq_ignore_ascii_case(b"2f") || h.eq_ignore_ascii_case(b"5c")
                }) =>
            {
                3
            }
            _ => 0,
        };
        if separator == 0 {
            i += 1;
            continue;
        }
        if is_dot_segment(&b[start..i]) {
            return true;
        }
        i += separator;
        start = i;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        assert!(has_dot_segment("/a/../b"));
        assert!(has_dot_segment("/a/./b"));
        assert!(has_dot_segment("/a/%2E%2e/b"));
        assert!(has_dot_segment("/.."));
        assert!(!has_dot_segment("/a/..b/c"));
        assert!(!has_dot_segment("/.well-known/buntime"));
        for dots in [".%2e", "%2E.", "%2e%2E", "%2e"] {
            assert!(has_dot_segment(&format!("/a/{dots}/b")), "{dots}");
        }
        for fine in ["/a/.x/b", "/a/%2ex/b", "/...", "/a/%2e%2e%2e", "/%2f"] {
            assert!(!has_dot_segment(fine), "{fine}");
        }
        // Read as a dot segment by some upstream: an encoded slash or a backslash ends
        // it, path parameters are stripped from it.
        for sneaky in [
            "/public/..%2fadmin",
            "/public/%2e%2e%2Fadmin",
            "/public/..%5cadmin",
            "/public/..\\admin",
            "/public/..;/admin",
            "/public/..;jsessionid=1/admin",
            "/public/.;/admin",
            "/public%2f..%2fadmin",
            "/a/..%2F",
        ] {
            assert!(has_dot_segment(sneaky), "{sneaky}");
        }
        for fine in [
            "/a;b/c",
            "/a/..b;c",
            "/files/x%2fy",
            "/a\\b",
            "/v1.2/%5c",
            "/%",
            "/%2",
            "/a.;",
        ] {
            assert!(!has_dot_segment(fine), "{fine}");
        }
    }
}
