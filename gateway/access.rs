//! The admin check of SPEC 3: master key in `X-API-Key` or `Authorization: Bearer`
//! (constant-time compare), else loopback only when no credential source is configured.

use buntime_plugin_sdk::net::is_loopback_host;
use buntime_plugin_sdk::request::bearer_token;
use buntime_plugin_sdk::{ApiError, ApiResponse};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
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
    /// `from_loopback`: the client is on this host, as far as the gateway can tell; it is
    /// admin when no credential source is configured, unless [`foreign_header`] finds a
    /// sign that a browser sent it for another site.
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
            None if self.master_key.is_none() && from_loopback => {
                let Some((name, value)) = foreign_header(headers) else {
                    return Ok(());
                };
                log::warn!(
                    "admin request from loopback refused: its {name} {:?} is not this host \
                     (a page of another site open in a browser here, or DNS rebinding); a \
                     browser page elsewhere needs RUNTIME_MASTER_KEY set, and sent",
                    String::from_utf8_lossy(value.as_bytes()),
                );
                Err(Denied::Unauthorized)
            }
            None => Err(Denied::Unauthorized),
        }
    }

    /// Takes the master key off a request going to an upstream or a worker: it is the
    /// gateway's own credential, and apps get none of the gateway's secrets. A client that
    /// sends it with every request (an admin UI) would otherwise hand it to every app.
    pub fn strip_master_key(&self, up: &mut RequestHeader) {
        let Some(key) = &self.master_key else { return };
        let is_key = |v: &[u8]| bool::from(v.ct_eq(key));
        // Each value: an admin UI's key can come next to the app's own in a second header.
        strip_values(up, &X_API_KEY, |v| is_key(v.as_bytes()));
        strip_values(up, &http::header::AUTHORIZATION, |v| {
            bearer_token(v).is_some_and(is_key)
        });
    }
}

/// Takes the values of `name` that `drop` picks off `req`, keeping the others in order.
fn strip_values(req: &mut RequestHeader, name: &HeaderName, drop: impl Fn(&HeaderValue) -> bool) {
    let values = req.headers.get_all(name);
    if !values.iter().any(&drop) {
        return;
    }
    let kept: Vec<HeaderValue> = values.iter().filter(|v| !drop(v)).cloned().collect();
    req.remove_header(name);
    for value in kept {
        // Cannot fail: the name is a valid header name already.
        let _ = req.append_header(name.clone(), value);
    }
}

/// What shows that a request from loopback was not addressed to this host by a program
/// on it, but sent by a browser for a page of another site: an `Origin` or a `Host` that
/// names no loopback host (`localhost`, `*.localhost`, 127.0.0.0/8, `[::1]`).
/// Without this, any web page open in a browser on the gateway's machine could use the
/// admin API that loopback opens when no master key is set: the gateway's CORS admits
/// every origin by default, so a page's `fetch` could write proxy rules or run SQL. The
/// `Host` check stops DNS rebinding (a page whose name the attacker re-points at
/// 127.0.0.1 is same-origin with the gateway, and sends no `Origin` on a GET).
fn foreign_header(headers: &HeaderMap) -> Option<(&'static str, &HeaderValue)> {
    let names_loopback = |authority: &[u8]| {
        std::str::from_utf8(authority)
            .ok()
            .and_then(|a| a.parse::<http::uri::Authority>().ok())
            .is_some_and(|a| is_loopback_host(a.host()))
    };
    let origin = headers.get(http::header::ORIGIN).filter(|o| {
        ![&b"http://"[..], b"https://"].iter().any(|scheme| {
            o.as_bytes()
                .strip_prefix(*scheme)
                .is_some_and(names_loopback)
        })
    });
    let host = || {
        headers
            .get(http::header::HOST)
            .filter(|h| !names_loopback(h.as_bytes()))
    };
    origin
        .map(|o| ("Origin", o))
        .or_else(|| host().map(|h| ("Host", h)))
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    bearer_token(headers.get(http::header::AUTHORIZATION)?)
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
    fn local_requests_name_this_host_from_no_other_site() {
        for (host, origin) in [
            ("localhost:8000", None),
            ("LOCALHOST", Some("http://localhost:3000")),
            ("app.localhost:8000", Some("https://app.localhost")),
            ("127.0.0.1:8000", Some("http://127.0.0.1:8000")),
            ("127.1.2.3", None),
            ("[::1]:8000", Some("http://[::1]:5173")),
            ("localhost.", None),
            ("0.0.0.0:8000", None),
            ("[::]:8000", Some("http://0.0.0.0:8000")),
        ] {
            let mut pairs = vec![("host", host)];
            pairs.extend(origin.map(|o| ("origin", o)));
            assert_eq!(foreign_header(&headers(&pairs)), None, "{pairs:?}");
        }
        assert_eq!(foreign_header(&headers(&[])), None, "HTTP/1.0 without Host");
        for (host, origin) in [
            ("evil.example:8000", None),
            ("localhost.evil.example", None),
            ("notlocalhost", None),
            ("10.0.0.1:8000", None),
            ("[::2]", None),
            ("localhost:8000", Some("https://evil.example")),
            ("localhost:8000", Some("null")),
            ("localhost:8000", Some("http://localhost.evil.example")),
            ("localhost:8000", Some("file://")),
            ("localhost:8000", Some("http://user@evil.example")),
        ] {
            let mut pairs = vec![("host", host)];
            pairs.extend(origin.map(|o| ("origin", o)));
            // The header named is the one at fault.
            let named = if origin.is_some() { "Origin" } else { "Host" };
            let found = foreign_header(&headers(&pairs)).map(|(name, _)| name);
            assert_eq!(found, Some(named), "{pairs:?}");
        }
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
