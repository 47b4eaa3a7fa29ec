//! A rule's `base` and `relativePaths`: the original Buntime's rewriting of the HTML pages
//! a rule proxies, so that a single-page app served by an upstream at its root works under
//! a prefix (`/cpanel/...` -> `http://cpanel:3000/...`). The original did it with string
//! and regex replacements over the whole page; the paths are replaced as it did, and the
//! base goes in as a static app's does (after a `<head>` with attributes too).

use std::sync::LazyLock;

use regex::bytes::Regex;

/// `src="/x"` and `href="/x"` (not `//host`), which `relativePaths` makes `./x`.
static ATTRIBUTE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(src|href)="/([^/]|$)"#).expect("valid regex"));
/// `'/x'` in inline scripts (not `'//host'`), made `'./x'` too.
static QUOTED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"'/([^/]|$)").expect("valid regex"));

/// The page with absolute paths made relative (`relative`), then a `<base href>` of
/// `base` after its `<head>` (the static apps' `injectBase` insertion).
pub fn rewrite(page: &[u8], base: Option<&str>, relative: bool) -> Vec<u8> {
    let mut out = page.to_vec();
    if relative {
        out = ATTRIBUTE.replace_all(&out, &b"$1=\"./$2"[..]).into_owned();
        out = QUOTED.replace_all(&out, &b"'./$1"[..]).into_owned();
    }
    match base {
        Some(base) => buntime_plugin_sdk::html::with_base(&out, base),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(page: &str, base: Option<&str>, relative: bool) -> String {
        String::from_utf8(rewrite(page.as_bytes(), base, relative)).unwrap()
    }

    #[test]
    fn as_the_original_wrote_them() {
        let page = r#"<html><head><link href="/app.css"></head><body><script src="/app.js"></script><a href="//cdn.example/x">x</a><script>fetch('/api/x'); load('//cdn/y')</script></body></html>"#;
        assert_eq!(
            text(page, Some("/cpanel"), true),
            r#"<html><head><base href="/cpanel/" /><link href="./app.css"></head><body><script src="./app.js"></script><a href="//cdn.example/x">x</a><script>fetch('./api/x'); load('//cdn/y')</script></body></html>"#
        );
        assert_eq!(
            text(page, Some("/cpanel/"), false),
            page.replacen("<head>", "<head><base href=\"/cpanel/\" />", 1)
        );
        assert_eq!(text(page, None, false), page);
        // Only the first `<head>`, attributes or not; a page without one gets no base.
        assert_eq!(
            text("<head><head>", Some("/a"), false),
            "<head><base href=\"/a/\" /><head>"
        );
        assert_eq!(
            text("<HEAD lang=x>", Some("/a"), false),
            "<HEAD lang=x><base href=\"/a/\" />"
        );
        assert_eq!(text("<body>", Some("/a"), false), "<body>");
        assert_eq!(text(r#"src="/""#, None, true), r#"src="./""#);
        assert_eq!(
            text("<head>", Some(r#"/a"b"#), false),
            "<head><base href=\"/a&quot;b/\" />"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_pass_unchanged() {
        let page = b"<head>\xff src=\"/x\"";
        assert_eq!(
            rewrite(page, Some("/b"), true),
            b"<head><base href=\"/b/\" />\xff src=\"./x\"".to_vec()
        );
    }
}
