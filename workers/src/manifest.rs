//! App manifests (SPEC 8.2): `manifest.yaml` in the app folder, its defaults, the `.env`
//! overlay, and the environment a worker gets. An invalid manifest fails that app only.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use buntime_plugin_sdk::settings::invalid_yaml;
use buntime_plugin_sdk::{Problems, RateLimitSpec, RouteGlobs, Settings};
use serde_yaml::{Mapping, Value};

/// The only variables of the gateway's own environment a worker inherits. `NODE_ENV` as
/// the original passed it: outside `production`, Express's and Bun's error pages show
/// stack traces to clients.
pub const INHERITED: [&str; 5] = ["PATH", "HOME", "LANG", "TZ", "NODE_ENV"];
const MAX_BODY_LIMIT: u64 = 100 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// `PORT` on 127.0.0.1.
    Tcp,
    /// `BUNTIME_SOCKET`, a unix socket path.
    Unix,
}

#[derive(Debug, Clone)]
pub struct AppManifest {
    /// argv; `None` for a static app.
    pub command: Option<Vec<String>>,
    pub entrypoint: String,
    /// The manifest's `env`, then the folder's `.env` over it.
    pub env: BTreeMap<String, String>,
    /// Static apps: a `<base href>` of the app's base in its HTML pages (`inject.rs`).
    pub inject_base: bool,
    /// Static apps: variables starting with one of these go into its HTML pages as
    /// `window.__env__` (`inject.rs`); empty: none.
    pub env_prefix: Vec<String>,
    pub timeout: Duration,
    /// 0: one worker per request.
    pub ttl: Duration,
    pub idle_timeout: Duration,
    pub listen: Listen,
    pub preload: bool,
    pub max_requests: u64,
    pub max_body_size: u64,
    pub instances: usize,
    pub health_path: String,
    pub start_timeout: Duration,
    /// Paths relative to the app (`/x`, not `/app/x`).
    pub public: RouteGlobs,
    pub rate_limit: Option<RateLimitSpec>,
    /// Top-level keys the gateway does not read (the original's own, or a typo).
    pub ignored: Vec<String>,
}

/// The keys of SPEC 8.2.
const KEYS: &[&str] = &[
    "command",
    "entrypoint",
    "env",
    "injectBase",
    "envPrefix",
    "timeout",
    "ttl",
    "idleTimeout",
    "listen",
    "preload",
    "maxRequests",
    "maxBodySize",
    "instances",
    "healthPath",
    "startTimeout",
    "publicRoutes",
    "rateLimit",
];

/// Keys the original Buntime read that mean nothing here: `autoInstall` (`bun install`
/// before the start), `lowMemory` (a Bun flag), `visibility` (its deployments UI).
const ORIGINAL_ONLY: &[&str] = &["autoInstall", "lowMemory", "visibility"];

impl AppManifest {
    pub fn ephemeral(&self) -> bool {
        self.ttl.is_zero()
    }

    /// What to say of the keys the gateway does not read, if any: the original's own
    /// apart from the others, which are likely typos.
    pub fn ignored_warning(&self) -> Option<String> {
        let (original, unknown): (Vec<&str>, Vec<&str>) = self
            .ignored
            .iter()
            .map(String::as_str)
            .partition(|k| ORIGINAL_ONLY.contains(k));
        let mut parts = Vec::new();
        if !unknown.is_empty() {
            parts.push(format!(
                "manifest key(s) {} are not read by the gateway and are ignored (a typo?)",
                unknown.join(", ")
            ));
        }
        if !original.is_empty() {
            parts.push(format!(
                "manifest key(s) {} are the original Buntime's and have no effect here",
                original.join(", ")
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Reads `dir`'s manifest (absent: every default) and `.env`; the error is the detail of
/// `{"error":"Invalid app manifest: <detail>"}`.
pub fn load(dir: &Path) -> Result<AppManifest, String> {
    let file = ["manifest.yaml", "manifest.yml"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file());
    let map = match file {
        None => Mapping::new(),
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            match serde_yaml::from_str::<Value>(&text).map_err(|e| invalid_yaml(&e, &text))? {
                Value::Mapping(m) => m,
                Value::Null => Mapping::new(),
                _ => return Err("the manifest must be a mapping".into()),
            }
        }
    };
    let mut manifest = parse(&Settings::new("", map))?;
    // Without its entry, the original fell back to a script in the folder and ran it.
    if manifest.command.is_none()
        && !dir.join(&manifest.entrypoint).is_file()
        && let Some(script) = ORIGINAL_SCRIPTS.iter().find(|f| dir.join(f).is_file())
    {
        return Err(format!(
            "entrypoint: {} is not in the folder, but {script} is: {}",
            manifest.entrypoint,
            needs_command(script)
        ));
    }
    let dotenv = dir.join(".env");
    if dotenv.is_file() {
        let text =
            std::fs::read_to_string(&dotenv).map_err(|e| format!("cannot read .env: {e}"))?;
        // What a worker would see without the file: `PATH=./bin:$PATH` must work.
        let mut known: BTreeMap<String, String> = INHERITED
            .iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
            .collect();
        known.extend(manifest.env.clone());
        let from_file = parse_dotenv(&text, &known)?;
        manifest.env.extend(from_file);
    }
    Ok(manifest)
}

/// The entries the original Buntime looked for when its manifest named none or a missing
/// one, in its order after `index.html`.
const ORIGINAL_SCRIPTS: [&str; 3] = ["index.ts", "index.js", "index.mjs"];

/// Why a script entry cannot make a static app. The original imported it as the app's
/// server; served as a static app here, the folder gave out its source (and any
/// credential written in it).
fn needs_command(script: &str) -> String {
    format!(
        "the original Buntime ran it as the app's server, which here needs a command (for \
         a module whose default export has fetch: command: [bun, {script}] serves it on \
         PORT); without one the folder would be served as files, its source included"
    )
}

/// A JavaScript or TypeScript module: what the original ran, never a static app's page.
fn is_script(entrypoint: &str) -> bool {
    let ext = entrypoint.rsplit_once('.').map_or("", |(_, e)| e);
    ["js", "mjs", "cjs", "jsx", "ts", "mts", "cts", "tsx"]
        .iter()
        .any(|e| ext.eq_ignore_ascii_case(e))
}

fn parse(s: &Settings) -> Result<AppManifest, String> {
    let mut p = Problems::default();
    let command = match s.get("command") {
        None => None,
        Some(Value::Sequence(items)) if !items.is_empty() => {
            // A port or a count may be written bare (`[python3, -m, http.server, 8080]`).
            // A bad item is named by its place, not echoed: arguments can hold credentials
            // (`--db=postgres://user:pass@...`), and this message is an app's 500 body.
            let mut argv = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                match scalar(v) {
                    Some(arg) => argv.push(arg),
                    None => {
                        let why = format!("item {} must be a string, not {}", i + 1, kind(v));
                        p.push(s.name_of("command"), "", why);
                        break;
                    }
                }
            }
            (argv.len() == items.len()).then_some(argv)
        }
        Some(v) => {
            let why = format!(
                "must be a non-empty list of strings, e.g. [node, server.js], not {}",
                kind(v)
            );
            p.push(s.name_of("command"), "", why);
            None
        }
    };
    let entrypoint = s
        .string("entrypoint", &mut p)
        .unwrap_or_else(|| "index.html".into());
    if entrypoint.starts_with('/') || entrypoint.split('/').any(|seg| seg == "..") {
        s.problem(&mut p, "entrypoint", "must be a path inside the app folder");
    }
    if s.get("command").is_none() && is_script(&entrypoint) {
        let why = format!("{entrypoint} is a script: {}", needs_command(&entrypoint));
        s.problem(&mut p, "entrypoint", why);
    }
    let mut env = BTreeMap::new();
    match s.get("env") {
        None => {}
        // Values are never echoed in these problems: they are an app's secrets, and the
        // message is the body of its public 500 and a log line.
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let Some(k) = k.as_str() else {
                    p.push(s.name_of("env"), "", "variable names must be strings");
                    break;
                };
                match scalar(v) {
                    Some(v) => {
                        env.insert(k.to_string(), v);
                    }
                    None => {
                        let why = match v {
                            Value::Null => "has no value (write \"\" for an empty one)".into(),
                            v => format!("must be a string, not {}", kind(v)),
                        };
                        p.push(format!("{}.{k}", s.name_of("env")), "", why);
                    }
                }
            }
        }
        Some(_) => p.push(
            s.name_of("env"),
            "",
            "must be a mapping of variable names to values",
        ),
    }
    let listen = match s.string("listen", &mut p).as_deref() {
        None | Some("tcp") => Listen::Tcp,
        Some("unix") => Listen::Unix,
        Some(_) => {
            s.problem(&mut p, "listen", "must be tcp or unix");
            Listen::Tcp
        }
    };
    let max_body_size = s.size("maxBodySize", &mut p).unwrap_or(10 << 20);
    if max_body_size > MAX_BODY_LIMIT {
        s.problem(&mut p, "maxBodySize", "must be at most 100mb");
    }
    let health_path = s.string("healthPath", &mut p).unwrap_or_else(|| "/".into());
    if !health_path.starts_with('/') {
        s.problem(&mut p, "healthPath", "must start with /");
    }
    let public = match s.get("publicRoutes") {
        None => RouteGlobs::default(),
        Some(v) => serde_json::to_value(v)
            .map_err(|e| e.to_string())
            .and_then(|j| RouteGlobs::from_json(&j))
            .unwrap_or_else(|why| {
                s.problem(&mut p, "publicRoutes", why);
                RouteGlobs::default()
            }),
    };
    let rate_limit = match s.get("rateLimit") {
        None => None,
        Some(_) => {
            let (requests, window) = s.rate_limit_parts("rateLimit", &mut p);
            // An app's limit has no default count: a block without one is a mistake, not
            // "no limit" (a proxy rule's `rateLimit` is refused the same way).
            if s.get("rateLimit.requests").is_none() {
                s.problem(&mut p, "rateLimit.requests", "is required");
            }
            requests.map(|requests| RateLimitSpec { requests, window })
        }
    };
    // Recycling contains an app's leaks; the static worker is the gateway's own, and
    // recycling it every 1,000 requests cost a fifth of its throughput and tripled its p99
    // under load (`wrk -c32` on the demo app). It recycles when the manifest asks.
    let max_requests = s
        .u64_in("maxRequests", 1, u64::MAX, &mut p)
        .unwrap_or(if command.is_some() { 1000 } else { u64::MAX });
    let manifest = AppManifest {
        command,
        entrypoint,
        env,
        inject_base: s.bool("injectBase", &mut p).unwrap_or(false),
        // The original's default: the prefixes of variables a build tool exposes too.
        env_prefix: s
            .list("envPrefix", &mut p)
            .unwrap_or_else(|| vec!["PUBLIC_".into(), "VITE_".into()]),
        timeout: s
            .duration("timeout", &mut p)
            .unwrap_or(Duration::from_secs(30)),
        ttl: s.duration("ttl", &mut p).unwrap_or(Duration::ZERO),
        idle_timeout: s
            .duration("idleTimeout", &mut p)
            .unwrap_or(Duration::from_secs(60)),
        listen,
        preload: s.bool("preload", &mut p).unwrap_or(false),
        max_requests,
        max_body_size,
        instances: s.u64_in("instances", 1, 64, &mut p).unwrap_or(1) as usize,
        health_path,
        start_timeout: s
            .duration("startTimeout", &mut p)
            .unwrap_or(Duration::from_secs(30)),
        public,
        rate_limit,
        ignored: {
            // Not errors: manifests written for the original may carry keys of its own.
            let mut unknown = Problems::default();
            s.check_keys("", KEYS, &mut unknown);
            unknown.iter().map(|u| u.name.clone()).collect()
        },
    };
    for (key, d) in [
        ("timeout", manifest.timeout),
        ("startTimeout", manifest.start_timeout),
    ] {
        if d.is_zero() {
            s.problem(&mut p, key, "must be more than zero");
        }
    }
    if p.is_empty() {
        Ok(manifest)
    } else {
        Err(p
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// What a YAML value is, for a message that must not print it.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
        Value::Bool(_) | Value::Number(_) | Value::String(_) => "a scalar",
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A `.env` file as dotenv writes them (and Bun, the original's runtime, reads them):
/// `KEY=value` lines, `#` comments, blank lines, `export `. An unquoted value ends at a `#`
/// after whitespace. Single quotes and backticks are literal; double quotes turn `\n`,
/// `\r`, `\t`, `\"`, `\\` and `\$` into the character. A quoted value may span lines (a PEM
/// key). `$NAME` and `${NAME}` in unquoted and double-quoted values expand to a variable
/// defined above it in the file or in `known` (the manifest's `env` and the inherited
/// variables), else to nothing: never to the rest of the gateway's environment, whose
/// secrets the worker must not see.
pub fn parse_dotenv(
    text: &str,
    known: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, rest)) = line.split_once('=') else {
            return Err(format!(".env line {n}: expected KEY=value"));
        };
        let key = key.trim();
        let key_ok = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            // Not echoed: a line missing its name may be a bare secret (`https://...?token=...`).
            return Err(format!(
                ".env line {n}: the text before = is not a variable name (letters, digits and _, not starting with a digit)"
            ));
        }
        let lookup = |name: &str| out.get(name).or_else(|| known.get(name)).cloned();
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(quote @ ('"' | '\'' | '`')) => {
                let mut raw = rest[1..].to_string();
                let end = loop {
                    if let Some(end) = closing_quote(&raw, quote) {
                        break end;
                    }
                    let Some((_, more)) = lines.next() else {
                        return Err(format!(
                            ".env line {n}: the value of {key} has no closing {quote}"
                        ));
                    };
                    raw.push('\n');
                    raw.push_str(more);
                };
                let after = raw[end + 1..].trim();
                if !after.is_empty() && !after.starts_with('#') {
                    return Err(format!(
                        ".env line {n}: text after the closing {quote} of {key}'s value (not echoed: it may be part of a secret)"
                    ));
                }
                let inner = &raw[..end];
                if quote == '"' {
                    expand(inner, true, &lookup)
                } else {
                    inner.to_string()
                }
            }
            _ => {
                let end = rest
                    .char_indices()
                    .find(|&(j, c)| c == '#' && (j == 0 || rest[..j].ends_with([' ', '\t'])))
                    .map_or(rest.len(), |(j, _)| j);
                expand(rest[..end].trim_end(), false, &lookup)
            }
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// Where `quote` closes `text`; inside double quotes a backslash escapes the next character.
fn closing_quote(text: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote == '"' => escaped = true,
            c if c == quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// Expands `$NAME`, `${NAME}` and `\$`; in double quotes (`quoted`) also `\n`, `\r`, `\t`,
/// `\"` and `\\`. Any other backslash is kept as written.
fn expand(text: &str, quoted: bool, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('\\', Some('$')) => out.push(chars.next().unwrap_or('$')),
            ('\\', Some(e @ ('n' | 'r' | 't' | '"' | '\\'))) if quoted => {
                chars.next();
                out.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    other => other,
                });
            }
            ('$', Some('{')) => {
                chars.next();
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                out.push_str(&lookup(&name).unwrap_or_default());
            }
            ('$', Some(first)) if first.is_ascii_alphabetic() || first == '_' => {
                let mut name = String::new();
                while let Some(&c) = chars.peek().filter(|&&c| is_name(c)) {
                    name.push(c);
                    chars.next();
                }
                out.push_str(&lookup(&name).unwrap_or_default());
            }
            _ => out.push(c),
        }
    }
    out
}

/// What a `tcp` worker is told to bind unless its manifest says otherwise. Many servers
/// read `HOST` (SvelteKit's and Astro's node adapters, Nuxt, webpack's dev server) and
/// bind every address without it, which opens the app to the network past the gateway.
pub const TCP_HOST: (&str, &str) = ("HOST", "127.0.0.1");

/// The worker's whole environment: the inherited variables, `defaults`, the app's, then
/// the address.
pub fn worker_env(
    m: &AppManifest,
    own: &dyn Fn(&str) -> Option<String>,
    defaults: &[(&str, &str)],
    address: (&str, String),
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = INHERITED
        .iter()
        .filter_map(|k| own(k).map(|v| (k.to_string(), v)))
        .chain(defaults.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    env.extend(m.env.clone());
    env.insert(address.0.to_string(), address.1);
    env.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, manifest: &str) {
        std::fs::write(dir.join("manifest.yaml"), manifest).unwrap();
    }

    #[test]
    fn defaults() {
        let d = tempfile::tempdir().unwrap();
        let m = load(d.path()).unwrap();
        assert!(m.command.is_none());
        assert_eq!(m.entrypoint, "index.html");
        assert_eq!(m.timeout, Duration::from_secs(30));
        assert!(m.ephemeral());
        assert_eq!(m.idle_timeout, Duration::from_secs(60));
        assert_eq!(m.listen, Listen::Tcp);
        // The static worker is not recycled unless the manifest asks; a command app is.
        assert_eq!(
            (m.max_requests, m.max_body_size, m.instances),
            (u64::MAX, 10 << 20, 1)
        );
        write(d.path(), "maxRequests: 50\n");
        assert_eq!(load(d.path()).unwrap().max_requests, 50);
        assert_eq!(m.health_path, "/");
        assert_eq!(m.start_timeout, Duration::from_secs(30));
    }

    #[test]
    fn values_and_syntax() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "command: [node, server.js]\nenv: {A: '1', B: 2}\ntimeout: 500ms\nttl: 5m\nlisten: unix\nmaxBodySize: 1mb\ninstances: 3\npublicRoutes: [/health]\nrateLimit: {requests: 5, window: 1m}\nmenus: [ignored]\n",
        );
        std::fs::write(
            d.path().join(".env"),
            "# comment\nexport B=\"from env file\"\nC='c'\n\n",
        )
        .unwrap();
        let m = load(d.path()).unwrap();
        assert_eq!(
            m.command.as_deref(),
            Some(&["node".to_string(), "server.js".to_string()][..])
        );
        assert_eq!(m.timeout, Duration::from_millis(500));
        assert_eq!(m.ttl, Duration::from_secs(300));
        assert_eq!(m.listen, Listen::Unix);
        assert_eq!(m.max_body_size, 1 << 20);
        assert_eq!(m.max_requests, 1000);
        assert_eq!(m.instances, 3);
        assert_eq!(m.env["A"], "1");
        assert_eq!(m.env["B"], "from env file", ".env overrides the manifest");
        assert_eq!(m.env["C"], "c");
        assert!(m.public.is_match("GET", "/health"));
        assert_eq!(m.rate_limit.unwrap().requests, 5);
    }

    #[test]
    fn every_bad_value_is_in_the_detail() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "command: [x]\nrateLimit: {requests: 5, window: 1500ms}\n",
        );
        let err = load(d.path()).unwrap_err();
        assert!(
            err.contains("rateLimit.window: must be whole seconds"),
            "{err}"
        );
        write(
            d.path(),
            "command: node server.js\ntimeout: soon\nmaxBodySize: 200mb\ninstances: 0\nlisten: pipe\nhealthPath: health\nentrypoint: ../../etc/passwd\nrateLimit: {window: 1m}\n",
        );
        let err = load(d.path()).unwrap_err();
        for key in [
            "command",
            "timeout",
            "maxBodySize",
            "instances",
            "listen",
            "healthPath",
            "entrypoint",
            "rateLimit.requests: is required",
        ] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
        write(d.path(), "[not, a, mapping]");
        assert!(load(d.path()).unwrap_err().contains("mapping"));
        write(d.path(), "a: [");
        assert!(load(d.path()).unwrap_err().contains("invalid YAML"));
    }

    #[test]
    fn a_script_entry_without_a_command_is_refused() {
        let err = parse(&Settings::new(
            "",
            serde_yaml::from_str("entrypoint: src/Server.TS").unwrap(),
        ))
        .unwrap_err();
        assert!(
            err.contains("entrypoint: src/Server.TS is a script: the original Buntime ran it")
                && err.contains("command: [bun, src/Server.TS]"),
            "{err}"
        );
        // The original's fallback: no index.html, but an index.ts.
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "ttl: 5m");
        std::fs::write(d.path().join("index.ts"), "export default {}").unwrap();
        let err = load(d.path()).unwrap_err();
        assert!(
            err.starts_with(
                "entrypoint: index.html is not in the folder, but index.ts is: the original"
            ),
            "{err}"
        );
        std::fs::write(d.path().join("index.html"), "<html>").unwrap();
        assert!(load(d.path()).is_ok());
        // A page, or a script that a command runs, is fine.
        assert_eq!(
            parsed("entrypoint: dist/index.html").entrypoint,
            "dist/index.html"
        );
        assert!(
            parsed("entrypoint: index.ts\ncommand: [bun, index.ts]")
                .command
                .is_some()
        );
    }

    #[test]
    fn env_and_command_problems_never_echo_values() {
        // Bare numbers and booleans are strings to the worker (the original coerced them).
        let m =
            parsed("command: [python3, -m, http.server, 8080]\nenv: {PORT_X: 5, DEBUG: true}\n");
        assert_eq!(m.command.unwrap()[3], "8080");
        assert_eq!((&*m.env["PORT_X"], &*m.env["DEBUG"]), ("5", "true"));

        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "command: [./api, --db=postgres://u:hunter2@db/x, {a: 1}]\nenv:\n  DB_PASS: hunter2\n  EMPTY:\n  NESTED: {a: hunter2}\n",
        );
        let err = load(d.path()).unwrap_err();
        for needle in [
            "command: item 3 must be a string, not a mapping",
            "env.EMPTY: has no value (write \"\" for an empty one)",
            "env.NESTED: must be a string, not a mapping",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
        assert!(!err.contains("hunter2"), "a value was echoed: {err}");
        write(d.path(), "command: ./api --token=hunter2\nenv: [hunter2]\n");
        let err = load(d.path()).unwrap_err();
        assert!(err.contains("command: must be a non-empty list"), "{err}");
        assert!(err.contains("env: must be a mapping"), "{err}");
        assert!(!err.contains("hunter2"), "a value was echoed: {err}");
    }

    fn parsed(yaml: &str) -> AppManifest {
        parse(&Settings::new("", serde_yaml::from_str(yaml).unwrap())).unwrap()
    }

    #[test]
    fn the_worker_inherits_only_the_listed_variables() {
        let m = parsed("env: {APP: yes}");
        let own = |k: &str| match k {
            "PATH" => Some("/bin".to_string()),
            "RUNTIME_MASTER_KEY" => Some("secret".to_string()),
            _ => None,
        };
        let env = worker_env(&m, &own, &[], ("PORT", "4000".into()));
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, vec!["APP", "PATH", "PORT"]);
        // A default gives way to the app's own value.
        let m = parsed("env: {HOST: 0.0.0.0}");
        let env = worker_env(&m, &own, &[TCP_HOST, ("X", "1")], ("PORT", "4000".into()));
        let host = env.iter().find(|(k, _)| k == "HOST").unwrap();
        assert_eq!(host.1, "0.0.0.0");
        assert!(env.contains(&("X".to_string(), "1".to_string())));
    }

    #[test]
    fn keys_it_does_not_read_are_listed_not_refused() {
        let m = parsed("command: [x]\ntll: 5m\nname: shop\nttl: 1m");
        assert_eq!(m.ignored, ["tll", "name"]);
        assert_eq!(m.ttl, Duration::from_secs(60));
        assert_eq!(
            m.ignored_warning().unwrap(),
            "manifest key(s) tll, name are not read by the gateway and are ignored (a typo?)"
        );
        // The original's cpanel: its own keys are named as such, not as typos.
        let m = parsed("entrypoint: dist/index.html\nvisibility: protected\ninjectBase: true\n");
        assert_eq!(
            m.ignored_warning().unwrap(),
            "manifest key(s) visibility are the original Buntime's and have no effect here"
        );
        assert_eq!(parsed("ttl: 1m").ignored_warning(), None);
    }

    fn dotenv(text: &str) -> Result<Vec<(String, String)>, String> {
        let known = BTreeMap::from([("FROM_MANIFEST".to_string(), "m".to_string())]);
        parse_dotenv(text, &known).map(|m| m.into_iter().collect())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dotenv_reads_what_dotenv_files_hold() {
        let text = "# a comment\n\n\
            export PLAIN = value with spaces  # a comment\n\
            HASH=abc#def\n\
            EMPTY=\n\
            SINGLE='no $PLAIN \\n # here'  # comment\n\
            TICK=`a 'b' \"c\"`\n\
            DOUBLE=\"tab\\there\\n \\\"q\\\" \\\\ \\$PLAIN \\x\"\n\
            KEY=\"-----BEGIN KEY-----\nAAAA\n-----END KEY-----\"\n\
            URL=http://$FROM_MANIFEST:${PLAIN}@h/$UNKNOWN.x\n\
            QUOTED=\"${HASH}-$EMPTY-\"\n\
            CRLF=yes\r\n";
        assert_eq!(
            dotenv(text).unwrap(),
            pairs(&[
                ("CRLF", "yes"),
                ("DOUBLE", "tab\there\n \"q\" \\ $PLAIN \\x"),
                ("EMPTY", ""),
                ("HASH", "abc#def"),
                ("KEY", "-----BEGIN KEY-----\nAAAA\n-----END KEY-----"),
                ("PLAIN", "value with spaces"),
                ("QUOTED", "abc#def--"),
                ("SINGLE", "no $PLAIN \\n # here"),
                ("TICK", "a 'b' \"c\""),
                ("URL", "http://m:value with spaces@h/.x"),
            ])
        );
    }

    #[test]
    fn dotenv_errors_name_the_line() {
        for (text, needle) in [
            ("1BAD=x", "line 1: the text before = is not a variable name"),
            ("A=1\nnovalue", "line 2: expected KEY=value"),
            (
                "A=\"open\nstill open",
                "line 1: the value of A has no closing \"",
            ),
            ("A='x' y", "line 1: text after the closing ' of A's value"),
        ] {
            let err = dotenv(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
