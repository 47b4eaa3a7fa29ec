//! The JWT check of SPEC 6.2. Checks run in the spec's order and the first failure names
//! the reason. The `jsonwebtoken` crate verifies signatures; parsing, key choice and
//! claims are ours so the order and the reasons are exact.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use buntime_plugin_sdk::Identity;
use buntime_plugin_sdk::request::bearer_token;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::{Map, Value as Json};

use crate::config::AuthConfig;

/// Tokens longer than this are malformed.
pub const MAX_TOKEN: usize = 16 * 1024;
/// Verified tokens remembered at most.
const CACHE_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingToken,
    Malformed,
    AlgorithmNotAllowed,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    BadIssuer,
    BadAudience,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::MissingToken,
        Reason::Malformed,
        Reason::AlgorithmNotAllowed,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::BadIssuer,
        Reason::BadAudience,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::Malformed => "malformed",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::BadIssuer => "bad_issuer",
            Reason::BadAudience => "bad_audience",
        }
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// A key from the JWKS document.
pub struct JwkKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub alg: Option<Algorithm>,
}

struct Cached {
    identity: Arc<Identity>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

pub struct Verifier {
    pub config: ArcSwap<AuthConfig>,
    pub jwks: ArcSwap<Vec<JwkKey>>,
    pub jwks_loaded: AtomicBool,
    /// Keyed by the whole token, hashed by the cache's own hasher (foldhash): over a token
    /// of ~150 bytes about 90 instructions, where std's SipHash ran about 460
    /// (benches/README.md). foldhash does not claim to resist chosen collisions, and need
    /// not here: only tokens whose signature verified are ever inserted, so nobody without
    /// a key can fill the table with colliding entries.
    cache: quick_cache::sync::Cache<Box<str>, Arc<Cached>>,
    failures: [AtomicU64; 9],
    /// Set when a token names a kid the JWKS does not have.
    pub unknown_kid: AtomicBool,
    pub jwks_ok: AtomicU64,
    pub jwks_failed: AtomicU64,
}

impl Verifier {
    pub fn new(config: AuthConfig) -> Verifier {
        Verifier {
            config: ArcSwap::from_pointee(config),
            jwks: ArcSwap::from_pointee(Vec::new()),
            jwks_loaded: AtomicBool::new(false),
            cache: quick_cache::sync::Cache::new(CACHE_ENTRIES),
            failures: Default::default(),
            unknown_kid: AtomicBool::new(false),
            jwks_ok: AtomicU64::new(0),
            jwks_failed: AtomicU64::new(0),
        }
    }

    /// Keys can be checked: a static key, or a JWKS that loaded at least once.
    pub fn available(&self) -> bool {
        let c = self.config.load();
        c.secret.is_some() || !c.public_keys.is_empty() || self.jwks_loaded.load(Ordering::Acquire)
    }

    /// New settings or keys: forget what was verified under the old ones.
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    pub fn failures(&self, r: Reason) -> u64 {
        self.failures[r.index()].load(Ordering::Relaxed)
    }

    /// Every token the request carries, the one that names the identity first: the bearer
    /// of each `Authorization` header, then each cookie named `cookie`; never the query
    /// string. Another `Authorization` scheme (`Basic`, from a proxy in front asking for a
    /// password) is no token, and leaves the cookie to be read.
    fn tokens<'h>(
        headers: &'h HeaderMap,
        cookie: Option<&'h str>,
    ) -> impl Iterator<Item = &'h str> {
        // Visible ASCII only, as before: a token of other bytes is no token.
        let bearers = headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter(|v| v.to_str().is_ok())
            .filter_map(bearer_token)
            .filter_map(|t| std::str::from_utf8(t).ok());
        let cookies = cookie.into_iter().flat_map(move |name| {
            headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|h| h.to_str().ok())
                .flat_map(|h| h.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .filter(move |(n, _)| *n == name)
                .map(|(_, v)| unquote(v.trim()))
        });
        bearers.chain(cookies).filter(|t| !t.is_empty())
    }

    /// The whole check for a request's headers. Every token present must verify, not just
    /// the first (as Envoy's jwt_authn): the gateway reads the first, but an app behind it
    /// may read another (the last of two `Authorization` headers, the last of two
    /// cookies in Python's parsers, its cookie rather than the bearer) and trust what it
    /// says unchecked, since the gateway checked "the" token.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, Reason> {
        let config = self.config.load();
        let mut tokens = Self::tokens(headers, config.cookie.as_deref());
        let result = match tokens.next() {
            None => Err(Reason::MissingToken),
            Some(first) => self.verify_with(first, &config).and_then(|id| {
                tokens
                    .try_for_each(|t| self.verify_with(t, &config).map(drop))
                    .map(|()| id)
            }),
        };
        if let Err(r) = result {
            self.failures[r.index()].fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Checks one token, using the cache when it was verified before.
    pub fn verify(&self, token: &str) -> Result<Arc<Identity>, Reason> {
        self.verify_with(token, &self.config.load())
    }

    /// [`Verifier::verify`] under settings already loaded.
    fn verify_with(&self, token: &str, config: &AuthConfig) -> Result<Arc<Identity>, Reason> {
        if token.len() > MAX_TOKEN {
            return Err(Reason::Malformed);
        }
        if let Some(hit) = self.cache.get(token) {
            check_times(hit.exp, hit.nbf, config)?;
            return Ok(hit.identity.clone());
        }
        let parsed = Parsed::from(token)?;
        let alg = self.algorithm(&parsed, config)?;
        let keys = self.keys(&parsed, alg, config)?;
        let message = &token[..token.rfind('.').unwrap_or(0)];
        let verified = keys.iter().any(|k| {
            jsonwebtoken::crypto::verify(parsed.signature, message.as_bytes(), k, alg)
                .unwrap_or(false)
        });
        if !verified {
            return Err(Reason::BadSignature);
        }
        check_times(parsed.exp, parsed.nbf, config)?;
        check_claims(&parsed.claims, config)?;
        let identity = Arc::new(identity(&parsed.claims, config));
        self.cache.insert(
            token.into(),
            Arc::new(Cached {
                identity: identity.clone(),
                exp: parsed.exp,
                nbf: parsed.nbf,
            }),
        );
        Ok(identity)
    }

    fn algorithm(&self, p: &Parsed<'_>, config: &AuthConfig) -> Result<Algorithm, Reason> {
        if p.alg.eq_ignore_ascii_case("none") {
            return Err(Reason::AlgorithmNotAllowed);
        }
        let alg = Algorithm::from_str(&p.alg).map_err(|_| Reason::AlgorithmNotAllowed)?;
        if !config.algorithms.contains(&alg) {
            return Err(Reason::AlgorithmNotAllowed);
        }
        Ok(alg)
    }

    /// The keys that may have signed this token. A family without any key (an HS token
    /// when only RSA keys exist) is not allowed: no HS/RS confusion.
    fn keys(
        &self,
        p: &Parsed<'_>,
        alg: Algorithm,
        config: &AuthConfig,
    ) -> Result<Vec<DecodingKey>, Reason> {
        let family = alg.family();
        if family == AlgorithmFamily::Hmac {
            return config
                .secret
                .clone()
                .map(|k| vec![k])
                .ok_or(Reason::AlgorithmNotAllowed);
        }
        let pem: Vec<DecodingKey> = config
            .public_keys
            .iter()
            .filter(|k| k.family() == family)
            .cloned()
            .collect();
        let jwks = self.jwks.load();
        if let Some(kid) = p.kid.as_deref() {
            if let Some(k) = jwks.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                if k.key.family() != family || k.alg.is_some_and(|a| a != alg) {
                    return Err(Reason::AlgorithmNotAllowed);
                }
                return Ok(vec![k.key.clone()]);
            }
            if pem.is_empty() {
                self.unknown_kid.store(true, Ordering::Release);
                return Err(
                    if jwks.iter().any(|k| k.key.family() == family) || config.jwks_url.is_some() {
                        Reason::UnknownKey
                    } else {
                        Reason::AlgorithmNotAllowed
                    },
                );
            }
            return Ok(pem);
        }
        let mut all = pem;
        all.extend(
            jwks.iter()
                .filter(|k| k.key.family() == family && k.alg.is_none_or(|a| a == alg))
                .map(|k| k.key.clone()),
        );
        if all.is_empty() {
            return Err(Reason::AlgorithmNotAllowed);
        }
        Ok(all)
    }
}

/// A token split and decoded: three base64url parts, the first two JSON objects.
struct Parsed<'t> {
    alg: String,
    kid: Option<String>,
    claims: Map<String, Json>,
    exp: Option<f64>,
    nbf: Option<f64>,
    signature: &'t str,
}

impl<'t> Parsed<'t> {
    fn from(token: &'t str) -> Result<Parsed<'t>, Reason> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reason::Malformed);
        };
        let json = |part: &str| -> Result<Map<String, Json>, Reason> {
            let bytes = URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .map_err(|_| Reason::Malformed)?;
            match serde_json::from_slice(&bytes) {
                Ok(Json::Object(m)) => Ok(m),
                _ => Err(Reason::Malformed),
            }
        };
        let mut header = json(h)?;
        let claims = json(c)?;
        URL_SAFE_NO_PAD
            .decode(sig.trim_end_matches('='))
            .map_err(|_| Reason::Malformed)?;
        let number = |k: &str| match claims.get(k) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(Reason::Malformed),
        };
        let (exp, nbf) = (number("exp")?, number("nbf")?);
        let alg = match header.remove("alg") {
            Some(Json::String(a)) => a,
            _ => return Err(Reason::Malformed),
        };
        let kid = match header.remove("kid") {
            None | Some(Json::Null) => None,
            Some(Json::String(k)) => Some(k),
            Some(_) => return Err(Reason::Malformed),
        };
        Ok(Parsed {
            alg,
            kid,
            claims,
            exp,
            nbf,
            signature: sig,
        })
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A cookie value without the double quotes RFC 6265 allows around it (some servers
/// write them; browsers send them back as they were set).
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

fn check_times(exp: Option<f64>, nbf: Option<f64>, config: &AuthConfig) -> Result<(), Reason> {
    let now = now();
    let leeway = config.leeway.as_secs_f64();
    if exp.is_some_and(|e| e + leeway < now) {
        return Err(Reason::Expired);
    }
    if nbf.is_some_and(|n| n - leeway > now) {
        return Err(Reason::NotYetValid);
    }
    Ok(())
}

fn check_claims(claims: &Map<String, Json>, config: &AuthConfig) -> Result<(), Reason> {
    if !config.issuers.is_empty() {
        let iss = claims.get("iss").and_then(Json::as_str);
        if !iss.is_some_and(|i| config.issuers.iter().any(|c| c == i)) {
            return Err(Reason::BadIssuer);
        }
    }
    if !config.audiences.is_empty() {
        let ok = match claims.get("aud") {
            Some(Json::String(a)) => config.audiences.contains(a),
            Some(Json::Array(list)) => list
                .iter()
                .filter_map(Json::as_str)
                .any(|a| config.audiences.iter().any(|c| c == a)),
            _ => false,
        };
        if !ok {
            return Err(Reason::BadAudience);
        }
    }
    Ok(())
}

/// JSON text with every character outside ASCII written as a `\uXXXX` escape (UTF-16,
/// as JSON spells it). Header bytes outside ASCII are read as Latin-1 by Node's and
/// Python's HTTP servers, so a claim `"name": "José"` reached such an app as `JosÃ©`;
/// escaped, any JSON parser reads it back whole.
fn ascii_json(text: &str) -> std::borrow::Cow<'_, str> {
    if text.is_ascii() {
        return text.into();
    }
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out.into()
}

/// `X-Identity: {"sub","roles":[],"claims":{...}}`, rendered once.
fn identity(claims: &Map<String, Json>, config: &AuthConfig) -> Identity {
    let sub = match claims.get("sub") {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    // The whole name first: a namespaced claim's name has dots of its own.
    let name = &config.roles_claim;
    let at = claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |v, part| v.get(part))
    });
    let roles: Vec<String> = match at {
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|r| r.as_str().map(String::from))
            .collect(),
        Some(Json::String(s)) => s
            .split([' ', ','])
            .filter(|r| !r.is_empty())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    };
    let body = serde_json::json!({"sub": sub, "roles": roles, "claims": claims});
    let header = HeaderValue::from_str(&ascii_json(&body.to_string()))
        .unwrap_or(HeaderValue::from_static("{}"));
    Identity {
        // Raw UTF-8 would be misread or refused as `X-Identity`'s was; such a `sub` is
        // read from `X-Identity` instead.
        subject_header: sub
            .is_ascii()
            .then(|| HeaderValue::from_str(&sub).ok())
            .flatten(),
        sub,
        roles,
        claims: claims.clone(),
        header,
    }
}
