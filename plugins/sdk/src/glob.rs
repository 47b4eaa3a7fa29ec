//! Path globs of SPEC 6.3: anchored; `*` is one path segment (may be empty), `**` is
//! anything including `/`, `?` is one character, everything else is literal. A pattern
//! that starts with `(` is a raw regex used exactly as written.

use regex::RegexSet;

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
        Ok(Self { patterns, set })
    }

    pub fn empty() -> Self {
        Self {
            patterns: Vec::new(),
            set: RegexSet::empty(),
        }
    }

    pub fn is_match(&self, path: &str) -> bool {
        !self.patterns.is_empty() && self.set.is_match(path)
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
    fn empty_set_matches_nothing() {
        assert!(!GlobSet::empty().is_match("/"));
    }
}
