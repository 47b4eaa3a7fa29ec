//! Layered configuration (SPEC 10, 11). A `Settings` is one block (the `server:` section
//! or one plugin's effective config) built from layers, each replacing the top-level keys
//! it names; an environment variable sets a single key inside its block. Typed readers
//! record every bad value as a `Problem` named by the variable or key that holds it, so
//! `buntime check` can list them all at once.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use crate::duration::{parse_duration, parse_size};

/// One invalid value: the variable or key holding it, the value, and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub name: String,
    pub value: String,
    pub why: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.name, self.why)
        } else {
            write!(f, "{}: {} (got {})", self.name, self.why, self.value)
        }
    }
}

/// Every problem found while reading a configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn push(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
        why: impl Into<String>,
    ) {
        self.0.push(Problem {
            name: name.into(),
            value: value.into(),
            why: why.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Words of keys whose values are never printed in a problem (see [`is_secret`]).
const SECRET_WORDS: [&str; 3] = ["secret", "token", "password"];

/// Whether the value at `path` may be a secret: its last key holds one of
/// [`SECRET_WORDS`] or ends in `key` (`masterKey`, `publicKey`), not merely starts with
/// it: `rateLimit.keyBy` is printed.
fn is_secret(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
    last.ends_with("key") || SECRET_WORDS.iter().any(|w| last.contains(w))
}

/// One block of layered configuration and the names its values go by.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// How keys are named in messages: `server`, `plugins.gateway`.
    scope: String,
    values: Mapping,
    /// Dotted key -> the environment variable that set it.
    env: BTreeMap<String, String>,
}

impl Settings {
    pub fn new(scope: impl Into<String>, values: Mapping) -> Self {
        Self {
            scope: scope.into(),
            values,
            env: BTreeMap::new(),
        }
    }

    /// Replaces the top-level keys that `layer` names, keeping the rest.
    pub fn overlay(&mut self, layer: &Mapping) {
        for (k, v) in layer {
            if let Some(key) = k.as_str() {
                self.env
                    .retain(|path, _| path != key && !path.starts_with(&format!("{key}.")));
            }
            self.values.insert(k.clone(), v.clone());
        }
    }

    /// Sets one key (dotted path) from an environment variable, creating blocks on the way.
    pub fn set_from_env(&mut self, path: &str, var: &str, value: String) {
        let mut map = &mut self.values;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let key = Value::String(part.to_string());
            if parts.peek().is_none() {
                map.insert(key, Value::String(value));
                break;
            }
            let entry = map
                .entry(key)
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if !entry.is_mapping() {
                *entry = Value::Mapping(Mapping::new());
            }
            map = entry.as_mapping_mut().expect("just made a mapping");
        }
        self.env.insert(path.to_string(), var.to_string());
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn values(&self) -> &Mapping {
        &self.values
    }

    /// The value at a dotted path, if set.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut cur = self.values.get(parts.next()?)?;
        for p in parts {
            cur = cur.as_mapping()?.get(p)?;
        }
        (!cur.is_null()).then_some(cur)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// The name a value goes by in messages: its environment variable, else `scope.path`.
    pub fn name_of(&self, path: &str) -> String {
        match self.env.get(path) {
            Some(var) => var.clone(),
            None if self.scope.is_empty() => path.to_string(),
            None => format!("{}.{}", self.scope, path),
        }
    }

    /// Whether the value was set by an environment variable.
    pub fn from_env(&self, path: &str) -> bool {
        self.env.contains_key(path)
    }

    /// Records a problem with the value at `path`.
    pub fn problem(&self, problems: &mut Problems, path: &str, why: impl Into<String>) {
        let value = match (is_secret(path), self.get(path)) {
            (true, Some(_)) => "<redacted>".to_string(),
            (false, Some(v)) => render(v),
            (_, None) => String::new(),
        };
        problems.push(self.name_of(path), value, why);
    }

    /// Reports keys of the mapping at `path` ("" = the top level) that are not in `allowed`.
    pub fn check_keys(&self, path: &str, allowed: &[&str], problems: &mut Problems) {
        let map = if path.is_empty() {
            Some(&self.values)
        } else {
            self.get(path).and_then(Value::as_mapping)
        };
        for key in map.into_iter().flat_map(|m| m.keys()) {
            let k = key.as_str().unwrap_or("");
            if !allowed.contains(&k) {
                let full = if path.is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                };
                problems.push(
                    self.name_of(&full),
                    "",
                    format!("unknown key (known keys: {})", allowed.join(", ")),
                );
            }
        }
    }

    /// A string (numbers and booleans are accepted as their text).
    pub fn string(&self, path: &str, problems: &mut Problems) -> Option<String> {
        match self.get(path)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.problem(problems, path, "must be a string");
                None
            }
        }
    }

    /// `true`/`false`, also `on`/`off`, `yes`/`no`, `1`/`0` in text.
    pub fn bool(&self, path: &str, problems: &mut Problems) -> Option<bool> {
        let v = self.get(path)?;
        let parsed = match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" | "1" => Some(true),
                "false" | "off" | "no" | "0" => Some(false),
                _ => None,
            },
            Value::Number(n) => match n.as_u64() {
                Some(1) => Some(true),
                Some(0) => Some(false),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.problem(problems, path, "must be true or false");
        }
        parsed
    }

    /// A whole number in `min..=max`.
    pub fn u64_in(&self, path: &str, min: u64, max: u64, problems: &mut Problems) -> Option<u64> {
        let v = self.get(path)?;
        let parsed = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let range = if max == u64::MAX {
                    format!("at least {min}")
                } else {
                    format!("from {min} to {max}")
                };
                self.problem(problems, path, format!("must be a whole number {range}"));
                None
            }
        }
    }

    /// The `requests` and `window` of the `rateLimit` block at `path`, as the gateway and an
    /// app manifest spell it: the count if given (1 to `RateLimitSpec::MAX_REQUESTS`), and
    /// the window, `RateLimitSpec::DEFAULT_WINDOW` if not given, held to
    /// `RateLimitSpec::valid_window`. Problems name `<path>.requests` or `<path>.window`.
    pub fn rate_limit_parts(&self, path: &str, problems: &mut Problems) -> (Option<u64>, Duration) {
        use crate::RateLimitSpec;
        let requests = self.u64_in(
            &format!("{path}.requests"),
            1,
            RateLimitSpec::MAX_REQUESTS,
            problems,
        );
        let window_key = format!("{path}.window");
        let window = self
            .duration(&window_key, problems)
            .unwrap_or(RateLimitSpec::DEFAULT_WINDOW);
        if !RateLimitSpec::valid_window(window) {
            self.problem(problems, &window_key, RateLimitSpec::WINDOW_RULE);
        }
        (requests, window)
    }

    /// A duration: seconds as a number, or `500ms`, `30s`, `1m`, `1h`, `1d`.
    pub fn duration(&self, path: &str, problems: &mut Problems) -> Option<Duration> {
        let text = self.scalar_text(path, problems)?;
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(why) => {
                self.problem(problems, path, format!("invalid duration: {why}"));
                None
            }
        }
    }

    /// A size: bytes as a number, or `10kb`, `10mb`, `1gb`.
    pub fn size(&self, path: &str, problems: &mut Problems) -> Option<u64> {
        let text = self.scalar_text(path, problems)?;
        match parse_size(&text) {
            Ok(n) => Some(n),
            Err(why) => {
                self.problem(problems, path, format!("invalid size: {why}"));
                None
            }
        }
    }

    /// A list of strings: a YAML sequence, or a comma-separated string (as env variables
    /// give them). Blank entries are dropped.
    pub fn list(&self, path: &str, problems: &mut Problems) -> Option<Vec<String>> {
        match self.get(path)? {
            Value::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => out.push(s.trim().to_string()),
                        Value::Number(n) => out.push(n.to_string()),
                        _ => {
                            self.problem(problems, path, "must be a list of strings");
                            return None;
                        }
                    }
                }
                Some(out.into_iter().filter(|s| !s.is_empty()).collect())
            }
            Value::String(s) => Some(split_list(s)),
            _ => {
                self.problem(problems, path, "must be a list or a comma-separated string");
                None
            }
        }
    }

    fn scalar_text(&self, path: &str, problems: &mut Problems) -> Option<String> {
        match self.get(path)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => {
                self.problem(problems, path, "must be a number or a string");
                None
            }
        }
    }
}

/// A YAML file's parse error as a problem: `invalid YAML: <why>`, and, when the character
/// it stopped at is a tab, that YAML indents with spaces only. serde_yaml's own words
/// ("found character that cannot start any token") do not name the tab, which an editor
/// set to indent with tabs puts in unseen.
pub fn invalid_yaml(e: &serde_yaml::Error, text: &str) -> String {
    let tab = e
        .location()
        .is_some_and(|l| text.as_bytes().get(l.index()) == Some(&b'\t'));
    let hint = if tab {
        " (a tab: YAML indents with spaces only)"
    } else {
        ""
    };
    format!("invalid YAML: {e}{hint}")
}

/// Splits a comma-separated list, trimming entries and dropping blank ones.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_json::to_string(other).unwrap_or_else(|_| "<value>".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tab_in_yaml_is_named() {
        let why =
            |text: &str| invalid_yaml(&serde_yaml::from_str::<Value>(text).unwrap_err(), text);
        let tabbed = why("server:\n\tport: 8000\n");
        assert!(
            tabbed.starts_with("invalid YAML: found character"),
            "{tabbed}"
        );
        assert!(
            tabbed.ends_with("(a tab: YAML indents with spaces only)"),
            "{tabbed}"
        );
        let other = why("a: [1\n");
        assert!(!other.contains("tab"), "{other}");
    }

    fn yaml(s: &str) -> Mapping {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn layers_replace_top_level_keys_and_env_sets_one_leaf() {
        let mut s = Settings::new(
            "plugins.gateway",
            yaml("cors: {origin: '*', maxAge: 10}\nrateLimit: {requests: 100}"),
        );
        s.overlay(&yaml("cors: {origin: 'https://a.com'}"));
        assert_eq!(
            s.get("cors.maxAge"),
            None,
            "a layer replaces the whole top-level key"
        );
        s.set_from_env("cors.maxAge", "GATEWAY_CORS_MAX_AGE", "600".into());
        assert_eq!(
            s.string("cors.origin", &mut Problems::default()).unwrap(),
            "https://a.com"
        );
        assert_eq!(
            s.u64_in("cors.maxAge", 0, 1000, &mut Problems::default()),
            Some(600)
        );
        assert_eq!(
            s.u64_in("rateLimit.requests", 1, 1000, &mut Problems::default()),
            Some(100)
        );
        assert_eq!(s.name_of("cors.maxAge"), "GATEWAY_CORS_MAX_AGE");
        assert_eq!(s.name_of("cors.origin"), "plugins.gateway.cors.origin");
    }

    #[test]
    fn problems_name_the_variable_and_value() {
        let mut s = Settings::new("server", Mapping::new());
        s.set_from_env("port", "PORT", "eighty".into());
        let mut p = Problems::default();
        assert_eq!(s.u64_in("port", 1, 65535, &mut p), None);
        assert_eq!(
            p.to_string(),
            "PORT: must be a whole number from 1 to 65535 (got \"eighty\")"
        );
        // No upper bound: none is printed (not 18446744073709551615).
        let mut p = Problems::default();
        assert_eq!(s.u64_in("port", 1, u64::MAX, &mut p), None);
        assert_eq!(
            p.to_string(),
            "PORT: must be a whole number at least 1 (got \"eighty\")"
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = Settings::new("server", yaml("masterKey: [1]"));
        let mut p = Problems::default();
        s.string("masterKey", &mut p);
        assert!(p.to_string().contains("<redacted>"), "{p}");
        for secret in [
            "masterKey",
            "auth.secret",
            "authToken",
            "db.password",
            "publicKey",
        ] {
            assert!(is_secret(secret), "{secret}");
        }
        for shown in ["rateLimit.keyBy", "keys", "cookie", "jwksUrl"] {
            assert!(!is_secret(shown), "{shown}");
        }
    }

    #[test]
    fn typed_readers() {
        let s = Settings::new(
            "x",
            yaml("a: on\nb: maybe\nd: 1m\ne: 10mb\nl: 'a, b,,c'\nm: [x, y]\nn: {k: 1}"),
        );
        let mut p = Problems::default();
        assert_eq!(s.bool("a", &mut p), Some(true));
        assert_eq!(s.bool("b", &mut p), None);
        assert_eq!(s.duration("d", &mut p), Some(Duration::from_secs(60)));
        assert_eq!(s.size("e", &mut p), Some(10 << 20));
        assert_eq!(s.list("l", &mut p).unwrap(), vec!["a", "b", "c"]);
        assert_eq!(s.list("m", &mut p).unwrap(), vec!["x", "y"]);
        assert_eq!(s.list("n", &mut p), None);
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let s = Settings::new("plugins.gateway", yaml("cors: {orign: x}\nbogus: 1"));
        let mut p = Problems::default();
        s.check_keys("", &["cors"], &mut p);
        s.check_keys("cors", &["origin"], &mut p);
        let text = p.to_string();
        assert!(
            text.contains("plugins.gateway.bogus: unknown key"),
            "{text}"
        );
        assert!(
            text.contains("plugins.gateway.cors.orign: unknown key"),
            "{text}"
        );
    }
}
