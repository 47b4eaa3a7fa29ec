//! The admin check of SPEC 3: master key in `X-API-Key` or `Authorization: Bearer`
//! (constant-time compare), else loopback only when no credential source is configured.

use std::net::IpAddr;

use buntime_plugin_sdk::net::is_loopback;
use buntime_plugin_sdk::{ApiError, ApiResponse};
use http::{HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No or wrong credential.
    Unauthorized,
}

impl Denied {
    pub fn response(self) -> ApiResponse {
        match self {
            Denied::Unauthorized => ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized")
                .with_code("AUTH_REQUIRED")
                .into(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    master_key: Option<Vec<u8>>,
}

impl AdminAccess {
    pub fn new(master_key: Option<&str>) -> Self {
        Self {
            master_key: master_key.map(|k| k.as_bytes().to_vec()),
        }
    }

    /// `jwt_enabled`: the auth-token plugin is on (then it is a credential source too).
    pub fn check(
        &self,
        headers: &HeaderMap,
        client_ip: IpAddr,
        jwt_enabled: bool,
    ) -> Result<(), Denied> {
        if let Some(key) = &self.master_key {
            let presented = headers
                .get("x-api-key")
                .map(|v| v.as_bytes())
                .or_else(|| bearer(headers));
            if presented.is_some_and(|p| bool::from(p.ct_eq(key))) {
                return Ok(());
            }
        }
        if self.master_key.is_none() && !jwt_enabled {
            return if is_loopback(client_ip) {
                Ok(())
            } else {
                Err(Denied::Unauthorized)
            };
        }
        Err(Denied::Unauthorized)
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const LOCAL: &str = "127.0.0.1";
    const REMOTE: &str = "203.0.113.9";

    #[test]
    fn loopback_only_without_credential_sources() {
        let a = AdminAccess::new(None);
        assert_eq!(
            a.check(&headers(&[]), LOCAL.parse().unwrap(), false),
            Ok(())
        );
        assert_eq!(
            a.check(&headers(&[]), REMOTE.parse().unwrap(), false),
            Err(Denied::Unauthorized)
        );
        // With auth-token on, loopback is no longer enough.
        assert_eq!(
            a.check(&headers(&[]), LOCAL.parse().unwrap(), true),
            Err(Denied::Unauthorized)
        );
    }

    #[test]
    fn master_key_in_either_header() {
        let a = AdminAccess::new(Some("s3cret"));
        let ip = REMOTE.parse().unwrap();
        assert_eq!(
            a.check(&headers(&[("x-api-key", "s3cret")]), ip, false),
            Ok(())
        );
        assert_eq!(
            a.check(&headers(&[("authorization", "Bearer s3cret")]), ip, false),
            Ok(())
        );
        assert_eq!(
            a.check(&headers(&[("authorization", "bearer  s3cret ")]), ip, false),
            Ok(())
        );
        assert_eq!(
            a.check(&headers(&[("x-api-key", "s3cre")]), ip, false),
            Err(Denied::Unauthorized)
        );
        assert_eq!(
            a.check(&headers(&[("authorization", "Basic s3cret")]), ip, false),
            Err(Denied::Unauthorized)
        );
        // A configured key means loopback alone is not admin.
        assert_eq!(
            a.check(&headers(&[]), LOCAL.parse().unwrap(), false),
            Err(Denied::Unauthorized)
        );
    }

    #[test]
    fn body() {
        let r = Denied::Unauthorized.response();
        assert_eq!(r.status, 401);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code":"AUTH_REQUIRED","error":"Unauthorized"})
        );
    }
}
