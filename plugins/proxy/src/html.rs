//! A rule's `base` and `relativePaths`: the original Buntime's rewriting of the HTML pages
//! a rule proxies, so that a single-page app served by an upstream at its root works under
//! a prefix (`/cpanel/...` -> `http://cpanel:3000/...`). The original did it with string
//! and regex replacements over the whole page; these do the same, byte for byte.

use std::sync::LazyLock;

use regex::bytes::Regex;

/// `src="/x"` and `href="/x"` (not `//host`), which `relativePaths` makes `./x`.
static ATTRIBUTE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(src|href)="/([^/]|$)"#).expect("valid regex"));
/// `'/x'` in inline scripts (not `'//host'`), made `'./x'` too.
static QUOTED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"'/([^/]|$)").expect("valid regex"));

/// The page with absolute paths made relative (`relative`), then `<base href>` after its
/// first `<head>` (`base`, given a trailing slash), as the original wrote them.
pub fn rewrite(page: &[u8], base: Option<&str>, relative: bool) -> Vec<u8> {
    let mut out = page.to_vec();
    if relative {
        out = ATTRIBUTE.replace_all(&out, &b"$1=\"./$2"[..]).into_owned();
        out = QUOTED.replace_all(&out, &b"'./$1"[..]).into_owned();
    }
    if let Some(base) = base
        && let Some(at) = find(&out, b"<head>")
    {
        let slash = if base.ends_with('/') { "" } else { "/" };
        // The value is an admin's, but a quote in it would end the attribute.
        let href = base.replace('"', "&quot;");
        let tag = format!("<base href=\"{href}{slash}\" />");
        let end = at + b"<head>".len();
        out.splice(end..end, tag.into_bytes());
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
        // Only the first plain `<head>`; a page without one gets no base.
        assert_eq!(
            text("<head><head>", Some("/a"), false),
            "<head><base href=\"/a/\" /><head>"
        );
        assert_eq!(text("<HEAD lang=x>", Some("/a"), false), "<HEAD lang=x>");
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
