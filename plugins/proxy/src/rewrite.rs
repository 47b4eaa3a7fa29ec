//! Rewrite templates (SPEC 4.1): `$1`..`$9` and `${name}` are replaced by the pattern's
//! captures (a group that did not take part is empty), `$$` is a literal `$`; a leading
//! `/` is added if missing. The template's own text goes into the upstream's request line,
//! so a character a URL cannot carry as written is percent-encoded, as a browser encodes
//! a typed address: `/a b` is sent as `/a%20b`, `/é` as `/%C3%A9`.

use regex::{Captures, Regex};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Index(usize),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text` and checks every reference against `regex`'s groups.
    pub fn parse(text: &str, regex: &Regex) -> Result<Template, String> {
        let groups = regex.captures_len() - 1;
        let names: Vec<&str> = regex.capture_names().flatten().collect();
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '$' {
                push_url_char(&mut literal, c, chars.clone());
                continue;
            }
            let piece = match chars.peek().copied() {
                Some(d @ '1'..='9') => {
                    chars.next();
                    let n = d as usize - '0' as usize;
                    if n > groups {
                        return Err(format!(
                            "${n} refers to group {n} but the pattern has {groups} group{}",
                            if groups == 1 { "" } else { "s" }
                        ));
                    }
                    Piece::Index(n)
                }
                Some('{') => {
                    chars.next();
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => name.push(ch),
                            None => return Err("unclosed ${".into()),
                        }
                    }
                    match name.parse::<usize>() {
                        Ok(n) if n >= 1 && n <= groups => Piece::Index(n),
                        Ok(n) => {
                            return Err(format!(
                                "${{{n}}} refers to a group the pattern does not have"
                            ));
                        }
                        Err(_) if names.contains(&name.as_str()) => Piece::Name(name),
                        Err(_) => return Err(format!("${{{name}}} names no group of the pattern")),
                    }
                }
                // `$$` is a literal dollar, as is a `$` not followed by a reference.
                Some('$') => {
                    chars.next();
                    literal.push('$');
                    continue;
                }
                _ => {
                    literal.push('$');
                    continue;
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template { pieces })
    }

    /// The rewritten path for these captures, starting with `/`; or empty when the template
    /// wrote nothing (`$1` for `/api` under `^/api(/.*)?$`), so that the target's base path
    /// is asked for as written and `/api/` keeps its slash (`Target::join`).
    pub fn expand(&self, caps: &Captures<'_>) -> String {
        let mut out = String::with_capacity(64);
        for p in &self.pieces {
            match p {
                Piece::Literal(s) => out.push_str(s),
                Piece::Index(i) => out.push_str(caps.get(*i).map_or("", |m| m.as_str())),
                Piece::Name(n) => out.push_str(caps.name(n).map_or("", |m| m.as_str())),
            }
        }
        if !out.is_empty() && !out.starts_with('/') {
            out.insert(0, '/');
        }
        out
    }
}

/// Appends `c` as a request target carries it: as written when RFC 3986 allows it there
/// (unreserved, sub-delims, `:`, `@`, `/`, `?`, and `%` before two hex digits), else its
/// UTF-8 bytes percent-encoded. A `#` is encoded too: a fragment never reaches a server.
fn push_url_char(out: &mut String, c: char, mut after: impl Iterator<Item = char>) {
    let as_written = match c {
        '%' => (0..2).all(|_| after.next().is_some_and(|h| h.is_ascii_hexdigit())),
        _ => c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?".contains(c),
    };
    if as_written {
        out.push(c);
        return;
    }
    let mut utf8 = [0u8; 4];
    for b in c.encode_utf8(&mut utf8).bytes() {
        out.push_str(&format!("%{b:02X}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(pattern: &str, template: &str, path: &str) -> String {
        let re = Regex::new(pattern).unwrap();
        let t = Template::parse(template, &re).unwrap();
        t.expand(&re.captures(path).unwrap())
    }

    #[test]
    fn numbered_and_named_groups() {
        assert_eq!(
            rewrite("^/api/(.*)$", "/v1/$1", "/api/users/7"),
            "/v1/users/7"
        );
        assert_eq!(
            rewrite(r"^/u/(?P<id>\d+)/(\w+)$", "/users/${id}/$2", "/u/42/posts"),
            "/users/42/posts"
        );
        assert_eq!(rewrite(r"^/a/(\d+)$", "/b/${1}x", "/a/5"), "/b/5x");
    }

    #[test]
    fn empty_group_and_missing_slash() {
        assert_eq!(rewrite("^/api(/.*)?$", "/backend$1", "/api"), "/backend");
        assert_eq!(rewrite("^/api(/.*)?$", "$1", "/api"), "");
        assert_eq!(rewrite("^/api(/.*)?$", "$1", "/api/"), "/");
        assert_eq!(rewrite("^/old/(.*)$", "new/$1", "/old/x"), "/new/x");
        assert_eq!(rewrite("^/p$", "/cost$$5", "/p"), "/cost$5");
        assert_eq!(rewrite("^/p$", "/a$b", "/p"), "/a$b");
    }

    #[test]
    fn what_a_url_cannot_carry_is_percent_encoded() {
        assert_eq!(rewrite("^/p(/.*)$", "/a b$1", "/p/x"), "/a%20b/x");
        assert_eq!(rewrite("^/p$", "/café", "/p"), "/caf%C3%A9");
        assert_eq!(rewrite("^/p$", "/a#b", "/p"), "/a%23b");
        assert_eq!(rewrite("^/p$", "/100%", "/p"), "/100%25");
        assert_eq!(rewrite("^/p$", "/%zz%4", "/p"), "/%25zz%254");
        assert_eq!(rewrite("^/p$", "/\"<{|}>", "/p"), "/%22%3C%7B%7C%7D%3E");
        // As written: what a URL may carry, escapes included.
        let fine = "/a-b._~!$&'()*+,;=:@/x?q=%2F&r=1";
        assert_eq!(rewrite("^/p$", fine, "/p"), fine);
        // Captures are the client's path, already a valid request target: copied as they are.
        assert_eq!(rewrite("^/p/(.*)$", "/q/$1", "/p/%20x"), "/q/%20x");
    }

    #[test]
    fn references_are_checked_against_the_pattern() {
        let re = Regex::new("^/(a)/(b)$").unwrap();
        assert_eq!(
            Template::parse("/$3", &re).unwrap_err(),
            "$3 refers to group 3 but the pattern has 2 groups"
        );
        assert!(
            Template::parse("/${nope}", &re)
                .unwrap_err()
                .contains("nope")
        );
        assert!(
            Template::parse("/${1", &re)
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(Template::parse("/${0}", &re).is_err());
        assert!(Template::parse("/$2/$1", &re).is_ok());
    }
}
