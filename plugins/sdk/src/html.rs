//! Adding a `<base href>` to an HTML page, as the original Buntime did for static apps
//! (`injectBase`) and for the pages a proxy rule with `base` proxies.

/// `html` with `<base href="<base>/" />` just after its first `<head>` (or `<head ...>`,
/// in any case); a page without one is returned as it is.
pub fn with_base(html: &[u8], base: &str) -> Vec<u8> {
    let mut out = html.to_vec();
    if let Some(at) = head_open_end(html) {
        out.splice(at..at, base_tag(base).into_bytes());
    }
    out
}

/// `<base href="/web/" />` for `/web` or `/web/`; `/` stays `/`.
pub fn base_tag(base: &str) -> String {
    let href = format!("{}/", base.trim_end_matches('/'));
    format!("<base href=\"{}\" />", escape_attr(&href))
}

/// Just after the first `<head>` (or `<head lang=...>`), in any case.
pub fn head_open_end(html: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = find_ignore_case(&html[from..], b"<head") {
        let after = from + i + b"<head".len();
        match html.get(after) {
            // `<header>` is not the head.
            Some(b'>') => return Some(after + 1),
            Some(c) if c.is_ascii_whitespace() => {
                let close = html[after..].iter().position(|&c| c == b'>')?;
                return Some(after + close + 1);
            }
            _ => from = after,
        }
    }
    None
}

pub fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

fn escape_attr(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(html: &str, base: &str) -> String {
        String::from_utf8(with_base(html.as_bytes(), base)).unwrap()
    }

    #[test]
    fn after_the_first_head() {
        assert_eq!(
            text(
                "<html><HEAD lang=\"en\"><title>t</title></head><header></header>",
                "/web"
            ),
            "<html><HEAD lang=\"en\"><base href=\"/web/\" /><title>t</title></head><header></header>"
        );
        assert_eq!(
            text("<head><head>", "/a/"),
            "<head><base href=\"/a/\" /><head>"
        );
        assert_eq!(
            text("<head><title>", "/"),
            "<head><base href=\"/\" /><title>"
        );
        assert_eq!(
            text("<header><head>", "/a\"b"),
            "<header><head><base href=\"/a&quot;b/\" />"
        );
        assert_eq!(text("<body>x", "/web"), "<body>x");
    }
}
