//! JWKS: fetched at start (retried with backoff until it works), every `jwksRefresh`, and
//! at once when a token names an unknown kid, at most once per 30 s not counting the
//! start-up fetch. A failed refresh keeps the keys already loaded.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::verify::{JwkKey, Verifier};

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const KID_REFETCH_EVERY: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The signing keys of a JWKS document; keys that are not for signatures, or that the
/// crate cannot use, are skipped.
pub fn parse(body: &str) -> Result<Vec<JwkKey>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let items = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("no \"keys\" array")?;
    let mut keys = Vec::new();
    for item in items {
        let Ok(jwk) = serde_json::from_value::<Jwk>(item.clone()) else {
            log::warn!("auth-token: skipping a JWKS key that does not parse");
            continue;
        };
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            log::warn!(
                "auth-token: skipping JWKS key {:?}: unsupported",
                jwk.common.key_id
            );
            continue;
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| Algorithm::from_str(&a.to_string()).ok());
        keys.push(JwkKey {
            kid: jwk.common.key_id.clone(),
            key,
            alg,
        });
    }
    Ok(keys)
}

/// The JWKS client. It trusts what the proxy trusts for https upstreams: the system's
/// store, or `SSL_CERT_FILE`/`SSL_CERT_DIR` (an in-cluster identity provider behind a
/// private CA); Mozilla's roots only where the system has none (a scratch image).
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        let system = rustls_native_certs::load_native_certs().unwrap_or_else(|e| {
            log::warn!("auth-token: cannot read the system's CA certificates: {e}");
            Vec::new()
        });
        let roots = if system.is_empty() {
            RootCerts::WebPki
        } else {
            system
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .into()
        };
        ureq::Agent::config_builder()
            .timeout_global(Some(FETCH_TIMEOUT))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build()
            .into()
    })
}

/// One fetch, off the async threads (the HTTP client is blocking).
pub async fn fetch(url: &str) -> Result<Vec<JwkKey>, String> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let mut resp = agent().get(&url).call().map_err(|e| e.to_string())?;
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        parse(&body)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The refresher loop, run in the plugin's background task.
pub async fn refresh(verifier: Arc<Verifier>, url: String) {
    let mut backoff = Duration::from_secs(1);
    let mut last_kid_refetch: Option<Instant> = None;
    loop {
        match fetch(&url).await {
            Ok(keys) => {
                log::info!("auth-token: {} key(s) loaded from the JWKS", keys.len());
                verifier.jwks.store(Arc::new(keys));
                verifier.jwks_loaded.store(true, Ordering::Release);
                verifier.clear_cache();
                verifier.jwks_ok.fetch_add(1, Ordering::Relaxed);
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                verifier.jwks_failed.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "auth-token: JWKS fetch from {url} failed ({e}); keeping the keys already loaded"
                );
            }
        }
        let wait = if verifier.jwks_loaded.load(Ordering::Acquire) {
            verifier.config.load().jwks_refresh
        } else {
            backoff = (backoff * 2).min(BACKOFF_MAX);
            backoff
        };
        let deadline = Instant::now() + wait;
        // Wait for the next refresh, or for an unknown kid (rate limited).
        while Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            let kid_due = last_kid_refetch.is_none_or(|t| t.elapsed() >= KID_REFETCH_EVERY);
            if kid_due && verifier.unknown_kid.swap(false, Ordering::AcqRel) {
                log::info!("auth-token: a token names an unknown kid; refetching the JWKS");
                last_kid_refetch = Some(Instant::now());
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signing_keys_and_skips_the_rest() {
        let body = r#"{"keys":[
            {"kty":"oct","kid":"not-supported-here","k":"c2VjcmV0"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","alg":"EdDSA","use":"sig","x":"JwcvHO0pJzrwfXiQ4IqsmjpNOlXf3s6PzkiKy89GWrc"},
            {"kty":"OKP","crv":"Ed25519","kid":"enc","use":"enc","x":"JwcvHO0pJzrwfXiQ4IqsmjpNOlXf3s6PzkiKy89GWrc"},
            {"kty":"nonsense"}
        ]}"#;
        let keys = parse(body).unwrap();
        let kids: Vec<_> = keys
            .iter()
            .map(|k| k.kid.clone().unwrap_or_default())
            .collect();
        assert!(kids.contains(&"ed".to_string()));
        assert!(!kids.contains(&"enc".to_string()));
        assert_eq!(
            keys.iter()
                .find(|k| k.kid.as_deref() == Some("ed"))
                .unwrap()
                .alg,
            Some(Algorithm::EdDSA)
        );
        assert!(parse("[]").is_err());
        assert!(parse("nope").is_err());
    }
}
