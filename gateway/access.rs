//! The admin check of SPEC 3: master key in `X-API-Key` or `Authorization: Bearer`
//! (constant-time compare), else loopback only when no credential source is configured.

use buntime_plugin_sdk::{ApiError, ApiResponse};
use http::{HeaderMap, HeaderName, StatusCode};
use pingora::http::RequestHeader;
use subtle::ConstantTimeEq;

/// Prebuilt: looking a header up by `&str` parses the name each time.
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No or wrong credential.
    Unauthorized,
    /// A valid token without the admin role.
    Forbidden,
}

impl Denied {
    pub fn response(self) -> ApiResponse {
        match self {
            Denied::Unauthorized => ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized")
                .with_code("AUTH_REQUIRED")
                .into(),
            Denied::Forbidden => ApiError::new(StatusCode::FORBIDDEN, "Admin role required")
                .with_code("PERMISSION_DENIED")
                .into(),
        }
    }
}

/// The auth-token plugin's verdict on a request's token: `Some(is_admin)` when it
/// verifies, `None` when there is none or it does not.
pub type TokenCheck<'a> = dyn Fn(&HeaderMap) -> Option<bool> + 'a;

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

    /// `jwt`: the auth-token plugin's check when it is on (`Some(is_admin)` for a verified
    /// token, `None` for no or a bad one); a token whose roles hold `admin` is then an admin
    /// credential too. The master key is compared first and is never parsed as a JWT.
    /// `from_loopback`: the client is on this host, as far as the gateway can tell.
    pub fn check(
        &self,
        headers: &HeaderMap,
        from_loopback: bool,
        jwt: Option<&TokenCheck<'_>>,
    ) -> Result<(), Denied> {
        if let Some(key) = &self.master_key {
            let presented = headers
                .get(&X_API_KEY)
                .map(|v| v.as_bytes())
                .or_else(|| bearer(headers));
            if presented.is_some_and(|p| bool::from(p.ct_eq(key))) {
                return Ok(());
            }
        }
        match jwt {
            Some(verify) => match verify(headers) {
                Some(true) => Ok(()),
                Some(false) => Err(Denied::Forbidden),
                None => Err(Denied::Unauthorized),
            },
            None if self.master_key.is_none() && from_loopback => Ok(()),
            None => Err(Denied::Unauthorized),
        }
    }

    /// Takes the master key off a request going to an upstream or a worker: it is the
    /// gateway's own credential, and apps get none of the gateway's secrets. A client that
    /// sends it with every request (an admin UI) would otherwise hand it to every app.
    pub fn strip_master_key(&self, up: &mut RequestHeader) {
        let Some(key) = &self.master_key else { return };
        let is_key = |v: &[u8]| bool::from(v.ct_eq(key));
        if up
            .headers
            .get(&X_API_KEY)
            .is_some_and(|v| is_key(v.as_bytes()))
        {
            up.remove_header(&X_API_KEY);
        }
        if bearer(&up.headers).is_some_and(is_key) {
            up.remove_header(&http::header::AUTHORIZATION);
        }
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

    #[test]
    fn loopback_only_without_credential_sources() {
        let a = AdminAccess::new(None);
        assert_eq!(a.check(&headers(&[]), true, None), Ok(()));
        assert_eq!(
            a.check(&headers(&[]), false, None),
            Err(Denied::Unauthorized)
        );
        // With auth-token on, loopback is no longer enough.
        let no_token = |_: &HeaderMap| None;
        assert_eq!(
            a.check(&headers(&[]), true, Some(&no_token)),
            Err(Denied::Unauthorized)
        );
    }

    #[test]
    fn admin_role_from_a_verified_token() {
        let a = AdminAccess::new(Some("mk"));
        let admin = |_: &HeaderMap| Some(true);
        let user = |_: &HeaderMap| Some(false);
        let ip = false;
        assert_eq!(a.check(&headers(&[]), ip, Some(&admin)), Ok(()));
        assert_eq!(
            a.check(&headers(&[]), ip, Some(&user)),
            Err(Denied::Forbidden)
        );
        // The master key wins before any token is looked at.
        let bearer = headers(&[("authorization", "Bearer mk")]);
        assert_eq!(a.check(&bearer, ip, Some(&user)), Ok(()));
    }

    #[test]
    fn master_key_in_either_header() {
        let a = AdminAccess::new(Some("s3cret"));
        let ip = false;
        assert_eq!(
            a.check(&headers(&[("x-api-key", "s3cret")]), ip, None),
            Ok(())
        );
        assert_eq!(
            a.check(&headers(&[("authorization", "Bearer s3cret")]), ip, None),
            Ok(())
        );
        assert_eq!(
            a.check(&headers(&[("authorization", "bearer  s3cret ")]), ip, None),
            Ok(())
        );
        assert_eq!(
            a.check(&headers(&[("x-api-key", "s3cre")]), ip, None),
            Err(Denied::Unauthorized)
        );
        assert_eq!(
            a.check(&headers(&[("authorization", "Basic s3cret")]), ip, None),
            Err(Denied::Unauthorized)
        );
        // A configured key means loopback alone is not admin.
        assert_eq!(
            a.check(&headers(&[]), true, None),
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
