//! What the static worker adds to an app's HTML pages when its manifest asks, as the
//! original Buntime did: `<base href>` after `<head>` (`injectBase: true`: a single-page
//! app built with relative asset URLs, served under `/web/`, then loads `assets/app.js`
//! from `/web/assets/` on a deep link such as `/web/users/42`), and `window.__env__`
//! before `</head>`, holding the app's variables whose names start with one of its
//! `envPrefix` entries (default `PUBLIC_`, `VITE_`): run-time settings for a built page.

use buntime_plugin_sdk::html;

use crate::manifest::AppManifest;

pub struct Inject {
    base: bool,
    /// `<script>window.__env__={...};</script>`, or empty: no variable is public.
    env_script: String,
}

impl Inject {
    /// What `m` asks to add to its pages; `None` when nothing.
    pub fn new(m: &AppManifest) -> Option<Inject> {
        let public: serde_json::Map<String, serde_json::Value> = m
            .env
            .iter()
            .filter(|(name, _)| m.env_prefix.iter().any(|p| name.starts_with(p.as_str())))
            .map(|(name, value)| (name.clone(), value.clone().into()))
            .collect();
        let env_script = if public.is_empty() {
            String::new()
        } else {
            // `<` as its JSON escape: no value can close the script (`</script>`) or open
            // a comment in it, whatever it holds.
            let json = serde_json::Value::Object(public)
                .to_string()
                .replace('<', "\\u003c");
            format!("<script>window.__env__={json};</script>")
        };
        (m.inject_base || !env_script.is_empty()).then_some(Inject {
            base: m.inject_base,
            env_script,
        })
    }

    /// The `<base>` tag for a request whose `x-base` is `base`, if one is added.
    fn base_tag(&self, base: Option<&str>) -> Option<String> {
        base.filter(|_| self.base).map(html::base_tag)
    }

    /// A tag that changes when what is added changes: the page's entity tag must differ
    /// from the file's, and between apps' bases.
    pub fn tag(&self, base: Option<&str>) -> u64 {
        let tag = self.base_tag(base).unwrap_or_default();
        fnv1a(tag.as_bytes().iter().chain(self.env_script.as_bytes()))
    }

    /// `html` with the additions; a page without `<head>` gets no base tag, one without
    /// `</head>` no script (as the original).
    pub fn page(&self, html: &[u8], base: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(html.len() + 64 + self.env_script.len());
        let mut rest = html;
        if let Some(tag) = self.base_tag(base)
            && let Some(at) = html::head_open_end(rest)
        {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(tag.as_bytes());
            rest = &rest[at..];
        }
        if !self.env_script.is_empty()
            && let Some(at) = html::find_ignore_case(rest, b"</head")
        {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(self.env_script.as_bytes());
            rest = &rest[at..];
        }
        out.extend_from_slice(rest);
        out
    }
}

/// FNV-1a, 64 bits: stable across builds, unlike std's hasher, so a page's entity tag
/// survives a gateway upgrade.
fn fnv1a<'a>(bytes: impl Iterator<Item = &'a u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(yaml: &str) -> AppManifest {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("manifest.yaml"), yaml).unwrap();
        crate::manifest::load(d.path()).unwrap()
    }

    fn page(i: &Inject, html: &str, base: Option<&str>) -> String {
        String::from_utf8(i.page(html.as_bytes(), base)).unwrap()
    }

    #[test]
    fn nothing_asked_nothing_added() {
        assert!(Inject::new(&manifest("ttl: 5m")).is_none());
        assert!(Inject::new(&manifest("env: {SECRET: x, API_URL: y}")).is_none());
    }

    #[test]
    fn base_after_head() {
        let i = Inject::new(&manifest("injectBase: true")).unwrap();
        let html = "<html><HEAD lang=\"en\"><title>t</title></head><header></header>";
        assert_eq!(
            page(&i, html, Some("/web")),
            "<html><HEAD lang=\"en\"><base href=\"/web/\" /><title>t</title></head><header></header>"
        );
        assert_eq!(
            page(&i, "<head><title>", Some("/")),
            "<head><base href=\"/\" /><title>"
        );
        assert_eq!(
            page(&i, "<header><head>", Some("/a\"b")),
            "<header><head><base href=\"/a&quot;b/\" />"
        );
        // No base from the gateway, or no head: the page as it is.
        assert_eq!(page(&i, "<head>", None), "<head>");
        assert_eq!(page(&i, "<body>x", Some("/web")), "<body>x");
    }

    #[test]
    fn public_variables_before_the_head_ends() {
        let m = manifest(
            "env:\n  PUBLIC_API: https://api.example.com\n  VITE_X: '</script><script>alert(1)</script>'\n  DB_PASSWORD: hunter2\n",
        );
        let i = Inject::new(&m).unwrap();
        let out = page(&i, "<head><title>t</title></HEAD><body>", Some("/web"));
        assert_eq!(
            out,
            "<head><title>t</title><script>window.__env__={\"PUBLIC_API\":\"https://api.example.com\",\"VITE_X\":\"\\u003c/script>\\u003cscript>alert(1)\\u003c/script>\"};</script></HEAD><body>",
            "no base tag unless asked; the value cannot close the script"
        );
        assert!(!out.contains("hunter2"));
        let mut custom = m.clone();
        custom.env_prefix = vec!["DB_".into()];
        let out = page(&Inject::new(&custom).unwrap(), "<head></head>", None);
        assert!(
            out.contains("hunter2") && !out.contains("PUBLIC_API"),
            "{out}"
        );
        custom.env_prefix = Vec::new();
        assert!(Inject::new(&custom).is_none());
    }

    #[test]
    fn the_tag_follows_what_is_added() {
        let i = Inject::new(&manifest("injectBase: true\nenv: {PUBLIC_A: 1}")).unwrap();
        assert_ne!(i.tag(Some("/web")), i.tag(Some("/web@2")));
        assert_eq!(i.tag(Some("/web")), i.tag(Some("/web")));
        let j = Inject::new(&manifest("injectBase: true\nenv: {PUBLIC_A: 2}")).unwrap();
        assert_ne!(i.tag(Some("/web")), j.tag(Some("/web")));
    }
}
