//! The `auth-token` plugin (SPEC 6): JWT verification with a shared secret, PEM public
//! keys or a JWKS, public routes, and the identity forwarded upstream. Active only when a
//! key source is configured.
#![forbid(unsafe_code)]

pub mod config;
pub mod jwks;
pub mod verify;

use std::sync::Arc;

use async_trait::async_trait;
use buntime_plugin_sdk::{
    ApiError, ApiResponse, Identity, Plugin, PluginError, PluginSpec, Problems, Readiness,
    RouteGlobs, Settings, Tasks,
};
use http::{HeaderMap, HeaderValue, StatusCode};

pub use config::AuthConfig;
pub use verify::{Reason, Verifier};

pub const SPEC: PluginSpec = PluginSpec {
    name: "auth-token",
    manifest: include_str!("../manifest.yaml"),
    keys: &[
        "secret",
        "publicKey",
        "jwksUrl",
        "jwksRefresh",
        "algorithms",
        "issuer",
        "audience",
        "leeway",
        "rolesClaim",
        "cookie",
        "publicRoutes",
    ],
    env: &[
        ("AUTH_JWT_SECRET", "secret"),
        ("AUTH_JWT_PUBLIC_KEY", "publicKey"),
        ("AUTH_JWT_JWKS_URL", "jwksUrl"),
        ("AUTH_JWT_JWKS_REFRESH", "jwksRefresh"),
        ("AUTH_JWT_ALGORITHMS", "algorithms"),
        ("AUTH_JWT_ISSUER", "issuer"),
        ("AUTH_JWT_AUDIENCE", "audience"),
        ("AUTH_JWT_LEEWAY", "leeway"),
        ("AUTH_JWT_ROLES_CLAIM", "rolesClaim"),
        ("AUTH_JWT_COOKIE", "cookie"),
        ("AUTH_PUBLIC_ROUTES", "publicRoutes"),
    ],
    env_numbered: &[],
};

pub struct AuthPlugin {
    verifier: Arc<Verifier>,
    tasks: Tasks,
}

impl AuthPlugin {
    pub fn parse(s: &Settings, problems: &mut Problems) -> Option<AuthConfig> {
        config::parse(s, problems)
    }

    /// The public routes the settings name, for when the plugin is not loaded.
    pub fn public_routes(s: &Settings, problems: &mut Problems) -> RouteGlobs {
        config::public_routes(s, problems)
    }

    /// Whether the settings name a key source; without one the plugin stays unloaded.
    pub fn has_key_source(s: &Settings) -> bool {
        config::has_key_source(s)
    }

    /// What to say when the plugin stays unloaded for want of a key: no route then asks
    /// for a token. The settings that have no default but are set (an issuer, a cookie
    /// ...) are named: they say authentication was meant, and a key's variable may be
    /// misspelled.
    pub fn off_warning(s: &Settings) -> String {
        let set_here = |k: &str| {
            let ignore = &mut Problems::default();
            match k {
                "algorithms" | "publicRoutes" => s.list(k, ignore).is_some_and(|v| !v.is_empty()),
                _ => s.string(k, ignore).is_some_and(|v| !v.trim().is_empty()),
            }
        };
        let set: Vec<String> = ["issuer", "audience", "cookie", "algorithms", "publicRoutes"]
            .into_iter()
            .filter(|k| set_here(k))
            .map(|k| s.name_of(k))
            .collect();
        let mut why = "auth-token is off: no key source is set (AUTH_JWT_SECRET, \
                       AUTH_JWT_PUBLIC_KEY or AUTH_JWT_JWKS_URL), so no route asks for a token"
            .to_string();
        if !set.is_empty() {
            why += &format!(
                ", although {} {} set",
                set.join(", "),
                if set.len() == 1 { "is" } else { "are" }
            );
        }
        why
    }

    /// What to say of a shared secret shorter than RFC 7518 3.2 asks (at least the hash's
    /// size: 32 bytes for HS256, 48 for HS384, 64 for HS512): whoever holds one token can
    /// try to guess a short secret offline, then sign tokens of their own. A warning, not a
    /// problem: refusing it would stop an existing deployment from starting.
    pub fn weak_secret_warning(s: &Settings) -> Option<String> {
        let len = s.string("secret", &mut Problems::default())?.len();
        (len > 0 && len < 32).then(|| {
            format!(
                "{}: the JWT secret is {len} bytes; RFC 7518 3.2 asks at least 32 for HS256 \
                 (48 for HS384, 64 for HS512): whoever holds a token can try to guess a short \
                 secret offline and sign tokens of their own",
                s.name_of("secret")
            )
        })
    }

    /// What to say of a JWKS fetched over plain `http` from another host: whoever can
    /// answer for that address on the way (a spoofed DNS name, a shared network) serves
    /// keys of their own and signs any token. A warning, not a problem: inside a cluster
    /// an `http` identity provider is common, and a mesh may encrypt the hop.
    pub fn plain_jwks_warning(s: &Settings) -> Option<String> {
        let url = url::Url::parse(&s.string("jwksUrl", &mut Problems::default())?).ok()?;
        let host = url.host_str()?;
        (url.scheme() == "http" && !buntime_plugin_sdk::net::is_loopback_host(host)).then(|| {
            format!(
                "{}: the JWKS is fetched over plain http, so whoever can answer for {host} on \
                 the way can hand out keys of their own and sign any token; use https",
                s.name_of("jwksUrl"),
            )
        })
    }

    pub fn new(config: AuthConfig) -> AuthPlugin {
        AuthPlugin {
            verifier: Arc::new(Verifier::new(config)),
            tasks: Tasks::default(),
        }
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Keys are there to check tokens with (a JWKS-only setup waits for its first fetch).
    pub fn available(&self) -> bool {
        self.verifier.available()
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, Reason> {
        self.verifier.authenticate(headers)
    }

    /// `AUTH_PUBLIC_ROUTES` and the manifest's `publicRoutes`.
    pub fn is_public(&self, method: &str, path: &str) -> bool {
        self.verifier.config.load().public.is_match(method, path)
    }
}

/// `401 {"error":"Unauthorized","reason"}` with the WWW-Authenticate of SPEC 6.2.
pub fn rejection(reason: Reason) -> ApiResponse {
    let challenge = match reason {
        Reason::MissingToken => HeaderValue::from_static("Bearer"),
        _ => HeaderValue::from_static("Bearer error=\"invalid_token\""),
    };
    ApiResponse::json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": "Unauthorized", "reason": reason.as_str()}),
    )
    .with_header(http::header::WWW_AUTHENTICATE, challenge)
}

/// While a JWKS-only setup has never loaded a key.
pub fn unavailable() -> ApiResponse {
    ApiError::unavailable("Authentication unavailable").into()
}

#[async_trait]
impl Plugin for AuthPlugin {
    fn name(&self) -> &'static str {
        "auth-token"
    }

    async fn start(&self) -> Result<(), PluginError> {
        if let Some(url) = self.verifier.config.load().jwks_url.clone() {
            self.tasks.spawn(jwks::refresh(self.verifier.clone(), url));
        }
        Ok(())
    }

    async fn stop(&self) {
        self.tasks.stop();
    }

    fn readiness(&self) -> Readiness {
        if self.available() {
            Readiness::Ready
        } else {
            Readiness::Waiting("no JWKS key loaded yet".into())
        }
    }

    /// SIGHUP: new secret, keys, issuer, audience, leeway, public routes. (A new JWKS URL
    /// needs a restart; the refresher keeps the one it started with.)
    fn reload(&self, settings: &Settings, problems: &mut Problems) {
        if let Some(config) = config::parse(settings, problems) {
            self.verifier.config.store(Arc::new(config));
            self.verifier.clear_cache();
        }
    }
}
