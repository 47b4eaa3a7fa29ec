//! Path globs of SPEC 6.3: anchored; `*` is one path segment (may be empty), `**` is
//! anything including `/`, `?` is one character, everything else is literal. A pattern
//! that starts with `(` is a raw regex used exactly as written.

use regex::RegexSet;

use crate::percent::decode_non_ascii;

/// Translates one glob into an anchored regex source.
pub fn glob_to_regex(glob: &str) -> String {
    if glob.starts_with('(') {
        return glob.to_string();
    }
    let mut out = String::with_capacity(glob.len() + 8);
    out.push('^');
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str(".*");
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            other => out.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
        }
    }
    out.push('$');
    out
}

/// A compiled list of globs, matched in one pass.
#[derive(Clone, Debug)]
pub struct GlobSet {
    patterns: Vec<String>,
    set: RegexSet,
    /// Whether a path's decoded form can match where the path as sent does not: a glob
    /// that names a non-ASCII character or has a `?` (one character, `é` decoded but
    /// six bytes sent), or a raw regex. Others (`/api/health/**`) match both alike.
    decodes: bool,
}

impl GlobSet {
    /// Compiles every glob; the error names the first pattern that is not valid.
    pub fn new<I, S>(globs: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns: Vec<String> = globs.into_iter().map(|g| g.as_ref().to_string()).collect();
        for p in &patterns {
            regex::Regex::new(&glob_to_regex(p))
                .map_err(|e| format!("invalid route pattern {p:?}: {e}"))?;
        }
        let set = RegexSet::new(patterns.iter().map(|p| glob_to_regex(p)))
            .map_err(|e| format!("invalid route patterns: {e}"))?;
        let decodes = patterns
            .iter()
            .any(|p| !p.is_ascii() || p.contains('?') || p.starts_with('('));
        Ok(Self {
            patterns,
            set,
            decodes,
        })
    }

    pub fn empty() -> Self {
        Self {
            patterns: Vec::new(),
            set: RegexSet::empty(),
            decodes: false,
        }
    }

    /// Whether a glob matches `path`, as sent or with its non-ASCII characters decoded
    /// (`/café/**` covers `/caf%C3%A9/x`, as clients send it).
    pub fn is_match(&self, path: &str) -> bool {
        !self.patterns.is_empty()
            && (self.set.is_match(path)
                || self.decodes
                    && decode_non_ascii(path).is_some_and(|decoded| self.set.is_match(&decoded)))
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

impl PartialEq for GlobSet {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

/// Public routes (SPEC 6.3): a list of globs for every method, or a map from method (or
/// `ALL`) to globs. Methods compare case-insensitively.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RouteGlobs {
    all: Option<GlobSet>,
    by_method: Vec<(String, GlobSet)>,
}

impl RouteGlobs {
    /// From `["/a/**"]` or `{"GET": ["/a/**"], "ALL": ["/b"]}`; `null` is empty.
    pub fn from_json(v: &serde_json::Value) -> Result<RouteGlobs, String> {
        use serde_json::Value;
        let globs = |v: &Value, what: &str| -> Result<GlobSet, String> {
            let items = v
                .as_array()
                .ok_or_else(|| format!("{what} must be a list of path patterns"))?;
            let texts = items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(String::from)
                        .ok_or_else(|| format!("{what} must hold strings"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            GlobSet::new(texts)
        };
        match v {
            Value::Null => Ok(RouteGlobs::default()),
            Value::Array(_) => Ok(RouteGlobs {
                all: Some(globs(v, "publicRoutes")?),
                by_method: Vec::new(),
            }),
            Value::Object(map) => {
                let mut out = RouteGlobs::default();
                for (method, list) in map {
                    let m = method.to_ascii_uppercase();
                    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                        return Err(format!("{method:?} is not an HTTP method"));
                    }
                    let set = globs(list, &format!("publicRoutes.{method}"))?;
                    if m == "ALL" {
                        out.all = Some(set);
                    } else {
                        out.by_method.push((m, set));
                    }
                }
                Ok(out)
            }
            _ => Err(
                "publicRoutes must be a list of path patterns or a map of method to patterns"
                    .into(),
            ),
        }
    }

    /// Globs that apply to every method.
    pub fn for_all<I, S>(globs: I) -> Result<RouteGlobs, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(RouteGlobs {
            all: Some(GlobSet::new(globs)?),
            by_method: Vec::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.all.as_ref().is_none_or(GlobSet::is_empty) && self.by_method.is_empty()
    }

    pub fn is_match(&self, method: &str, path: &str) -> bool {
        self.all.as_ref().is_some_and(|g| g.is_match(path))
            || self
                .by_method
                .iter()
                .any(|(m, g)| m.eq_ignore_ascii_case(method) && g.is_match(path))
    }

    /// The same shape as it was given: a list, or a map of method to list.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Map, Value};
        if self.by_method.is_empty() {
            return Value::from(
                self.all
                    .as_ref()
                    .map_or(&[][..], GlobSet::patterns)
                    .to_vec(),
            );
        }
        let mut m = Map::new();
        if let Some(all) = &self.all {
            m.insert("ALL".into(), Value::from(all.patterns().to_vec()));
        }
        for (method, g) in &self.by_method {
            m.insert(method.clone(), Value::from(g.patterns().to_vec()));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, path: &str) -> bool {
        GlobSet::new([glob]).unwrap().is_match(path)
    }

    #[test]
    fn double_star_spans_segments_but_needs_the_slash() {
        assert!(m("/api/**", "/api/"));
        assert!(m("/api/**", "/api/x/y"));
        assert!(!m("/api/**", "/api"));
        assert!(!m("/api/**", "/apix/y"));
    }

    #[test]
    fn single_star_is_one_segment_possibly_empty() {
        assert!(m("/users/*", "/users/42"));
        assert!(m("/users/*", "/users/"));
        assert!(!m("/users/*", "/users/42/posts"));
        assert!(m("/users/*/posts", "/users/42/posts"));
        assert!(m("/*.js", "/app.js"));
    }

    #[test]
    fn non_ascii_paths_match_decoded_too() {
        assert!(m("/café/**", "/caf%C3%A9/x"));
        assert!(m("/v?/x", "/v%C3%A9/x"), "one character, decoded");
        assert!(m("(^/[\\p{L}]+$)", "/caf%C3%A9"));
        assert!(m("/x/*", "/x/caf%C3%A9"));
        assert!(
            m("/x/*", "/x/a%2Fb"),
            "an encoded slash is no segment break"
        );
        assert!(!m("/caf%C3%A9", "/café"), "a path is what clients send");
    }

    #[test]
    fn question_mark_is_one_character() {
        assert!(m("/v?/x", "/v1/x"));
        assert!(!m("/v?/x", "/v10/x"));
        assert!(!m("/v?/x", "/v//x"));
    }

    #[test]
    fn anchored_and_literal() {
        assert!(m("/health", "/health"));
        assert!(!m("/health", "/healthz"));
        assert!(!m("/health", "/x/health"));
        assert!(m("/a.b+c", "/a.b+c"));
        assert!(!m("/a.b", "/aXb"));
    }

    #[test]
    fn raw_regex_is_used_as_written() {
        assert!(m("(^/v[0-9]+/public)", "/v2/public/x"));
        assert!(!m("(^/v[0-9]+/public$)", "/v2/public/x"));
        assert!(GlobSet::new(["(unclosed"]).is_err());
    }

    #[test]
    fn route_globs_by_method() {
        let r =
            RouteGlobs::from_json(&serde_json::json!({"get": ["/config/**"], "ALL": ["/health"]}))
                .unwrap();
        assert!(r.is_match("GET", "/config/a"));
        assert!(r.is_match("get", "/config/a"));
        assert!(!r.is_match("POST", "/config/a"));
        assert!(r.is_match("DELETE", "/health"));
        let list = RouteGlobs::from_json(&serde_json::json!(["/pub/*"])).unwrap();
        assert!(list.is_match("PATCH", "/pub/x"));
        assert_eq!(list.to_json(), serde_json::json!(["/pub/*"]));
        assert!(
            RouteGlobs::from_json(&serde_json::json!(null))
                .unwrap()
                .is_empty()
        );
        assert!(RouteGlobs::from_json(&serde_json::json!("x")).is_err());
        assert!(RouteGlobs::from_json(&serde_json::json!({"GET": "x"})).is_err());
        assert!(RouteGlobs::from_json(&serde_json::json!({"G T": []})).is_err());
        assert!(RouteGlobs::from_json(&serde_json::json!(["(bad"])).is_err());
    }

    #[test]
    fn empty_set_matches_nothing() {
        assert!(!GlobSet::empty().is_match("/"));
    }
}
