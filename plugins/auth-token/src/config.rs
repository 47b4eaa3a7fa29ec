//! The auth-token plugin's settings (SPEC 6.1).

use std::str::FromStr;
use std::time::Duration;

use buntime_plugin_sdk::{Problems, RouteGlobs, Settings};
use jsonwebtoken::AlgorithmFamily as Family;
use jsonwebtoken::{Algorithm, DecodingKey};

pub const ALL_ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Clone)]
pub struct AuthConfig {
    pub secret: Option<DecodingKey>,
    /// Keys from `publicKey` (no kid).
    pub public_keys: Vec<DecodingKey>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Duration,
    pub algorithms: Vec<Algorithm>,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub leeway: Duration,
    /// A claim's name (`roles`, Auth0's namespaced `https://example.com/roles`), or a
    /// dotted path into the claims (Keycloak's `realm_access.roles`).
    pub roles_claim: String,
    pub cookie: Option<String>,
    pub public: RouteGlobs,
}

impl AuthConfig {
    /// Families the static keys can verify (JWKS keys are not known until fetched).
    fn static_families(&self) -> Vec<Family> {
        let mut f: Vec<Family> = self.public_keys.iter().map(|k| k.family()).collect();
        if self.secret.is_some() {
            f.push(Family::Hmac);
        }
        f
    }
}

/// Whether any key source is configured: the plugin is active only then.
pub fn has_key_source(s: &Settings) -> bool {
    ["secret", "publicKey", "jwksUrl"].iter().any(|k| {
        s.string(k, &mut Problems::default())
            .is_some_and(|v| !v.trim().is_empty())
    })
}

fn text(s: &Settings, key: &str, problems: &mut Problems) -> Option<String> {
    s.string(key, problems)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub fn parse(s: &Settings, problems: &mut Problems) -> Option<AuthConfig> {
    let before = problems.len();
    let secret = s
        .string("secret", problems)
        .filter(|v| !v.is_empty())
        .map(|v| DecodingKey::from_secret(v.as_bytes()));
    let public_keys = match text(s, "publicKey", problems) {
        None => Vec::new(),
        Some(v) => pem_keys(&v).unwrap_or_else(|why| {
            s.problem(problems, "publicKey", why);
            Vec::new()
        }),
    };
    let jwks_url = text(s, "jwksUrl", problems);
    if let Some(u) = &jwks_url {
        match url::Url::parse(u) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {}
            _ => s.problem(problems, "jwksUrl", "must be an http:// or https:// URL"),
        }
    }
    let jwks_refresh = s
        .duration("jwksRefresh", problems)
        .unwrap_or(Duration::from_secs(600));
    if jwks_refresh.is_zero() {
        s.problem(problems, "jwksRefresh", "must be more than zero");
    }
    let leeway = s
        .duration("leeway", problems)
        .unwrap_or(Duration::from_secs(30));
    let roles_claim = text(s, "rolesClaim", problems).unwrap_or_else(|| "roles".into());
    let public = public_routes(s, problems);
    let mut config = AuthConfig {
        secret,
        public_keys,
        jwks_url,
        jwks_refresh,
        algorithms: Vec::new(),
        issuers: s.list("issuer", problems).unwrap_or_default(),
        audiences: s.list("audience", problems).unwrap_or_default(),
        leeway,
        roles_claim,
        cookie: text(s, "cookie", problems),
        public,
    };
    config.algorithms = algorithms(s, &config, problems);
    (problems.len() == before).then_some(config)
}

/// The allow-list: as configured (every name known, never `none`, each verifiable by a
/// configured key), else every algorithm the keys can verify.
fn algorithms(s: &Settings, c: &AuthConfig, problems: &mut Problems) -> Vec<Algorithm> {
    let families = c.static_families();
    let configured = s.list("algorithms", problems).unwrap_or_default();
    if configured.is_empty() {
        let mut all: Vec<Algorithm> = families
            .iter()
            .flat_map(|f| f.algorithms().iter().copied())
            .collect();
        if c.jwks_url.is_some() {
            all.extend(ALL_ASYMMETRIC);
        }
        all.sort_by_key(|a| format!("{a:?}"));
        all.dedup();
        return all;
    }
    let mut out = Vec::new();
    for name in configured {
        if name.eq_ignore_ascii_case("none") {
            s.problem(problems, "algorithms", "\"none\" is never allowed");
            continue;
        }
        match Algorithm::from_str(&name) {
            Ok(a) if c.jwks_url.is_some() || families.contains(&a.family()) => out.push(a),
            Ok(_) => s.problem(
                problems,
                "algorithms",
                format!("{name}: no configured key can verify it"),
            ),
            Err(_) => s.problem(
                problems,
                "algorithms",
                format!("{name:?} is not a JWT algorithm"),
            ),
        }
    }
    out
}

/// One or more PEM public keys, inline or in a file; the type decides the family.
fn pem_keys(value: &str) -> Result<Vec<DecodingKey>, String> {
    let text = if value.contains("-----BEGIN") {
        value.replace("\\n", "\n")
    } else {
        std::fs::read_to_string(value).map_err(|e| format!("cannot read {value}: {e}"))?
    };
    let blocks: Vec<String> = text
        .split("-----BEGIN")
        .skip(1)
        .map(|b| format!("-----BEGIN{b}"))
        .collect();
    if blocks.is_empty() {
        return Err("no PEM block found".into());
    }
    blocks
        .iter()
        .map(|pem| {
            let bytes = pem.as_bytes();
            DecodingKey::from_rsa_pem(bytes)
                .or_else(|_| DecodingKey::from_ec_pem(bytes))
                .or_else(|_| DecodingKey::from_ed_pem(bytes))
                .map_err(|_| "not an RSA, EC or Ed25519 public key in PEM".to_string())
        })
        .collect()
}

/// `publicRoutes` / `AUTH_PUBLIC_ROUTES`: read also while the plugin is off, because the
/// rules' test endpoint reports them whether or not auth-token is on (SPEC 4.3).
pub fn public_routes(s: &Settings, problems: &mut Problems) -> RouteGlobs {
    match s.list("publicRoutes", problems) {
        None => RouteGlobs::default(),
        Some(list) => RouteGlobs::for_all(&list).unwrap_or_else(|why| {
            s.problem(problems, "publicRoutes", why);
            RouteGlobs::default()
        }),
    }
}
