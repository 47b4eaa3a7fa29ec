//! Admin API requests and responses. Plugins answer their routes with these; the gateway
//! turns them into HTTP responses (always with Content-Length).

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::percent::{PercentError, percent_decode};

/// A request routed to a plugin's `base` (or to the runtime API), body already read.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    /// The path below the handler's base, always starting with `/` (`/api/rules/abc`).
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub client_ip: IpAddr,
}

/// A segment of `ApiRequest::segments`, percent-decoded; 400 naming it when it does not
/// decode.
pub fn decode_segment(raw: &str) -> Result<String, ApiError> {
    percent_decode(raw).map_err(|e| {
        ApiError::bad_request(match e {
            PercentError::BadEscape => format!("Path segment {raw:?} has an invalid % escape"),
            PercentError::NotUtf8 => format!("Path segment {raw:?} is not UTF-8"),
        })
    })
}

impl ApiRequest {
    /// Path segments below the base: `/api/rules/abc` -> `["api", "rules", "abc"]`.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// A query parameter, percent-decoded; the first one wins when repeated.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The body as JSON: 415 when the request says it is not JSON, 400 when it does not parse.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        self.require_json_content_type()?;
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))
    }

    /// The body as a JSON value; an empty body is `None`.
    pub fn json_or_empty(&self) -> Result<Option<serde_json::Value>, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        self.json().map(Some)
    }

    fn require_json_content_type(&self) -> Result<(), ApiError> {
        let Some(ct) = self.headers.get(http::header::CONTENT_TYPE) else {
            return Ok(());
        };
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        // `curl -d '{...}'` labels its body as a form; a JSON body is still accepted then.
        if essence == "application/json"
            || essence.ends_with("+json")
            || essence == "application/x-www-form-urlencoded"
        {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ))
        }
    }
}

/// A complete local response.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl ApiResponse {
    /// A JSON response with the given status.
    pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        Self {
            status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: Bytes::from(body),
        }
    }

    pub fn ok<T: Serialize + ?Sized>(value: &T) -> Self {
        Self::json(StatusCode::OK, value)
    }

    /// `{"error": message}` with the given status.
    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError::new(status, message).into()
    }

    pub fn not_found() -> Self {
        Self::error(StatusCode::NOT_FOUND, "Not Found")
    }

    /// `405 {"error":"Method Not Allowed"}` with `Allow` naming the methods that are.
    pub fn method_not_allowed(allow: HeaderValue) -> Self {
        Self::error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
            .with_header(http::header::ALLOW, allow)
    }

    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// An error that becomes `{"error": message}` (plus `"code"` when set) with its status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Option<&'static str>,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code: None,
            message: message.into(),
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<ApiError> for ApiResponse {
    fn from(e: ApiError) -> Self {
        let body = match e.code {
            Some(code) => serde_json::json!({ "code": code, "error": e.message }),
            None => serde_json::json!({ "error": e.message }),
        };
        ApiResponse::json(e.status, &body)
    }
}

/// Lets handlers use `?` on `Result<ApiResponse, ApiError>`.
pub type ApiResult = Result<ApiResponse, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn req(query: Option<&str>, ct: Option<&str>, body: &str) -> ApiRequest {
        let mut headers = HeaderMap::new();
        if let Some(ct) = ct {
            headers.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        }
        ApiRequest {
            method: Method::POST,
            path: "/api/rules/x".into(),
            query: query.map(String::from),
            headers,
            body: Bytes::from(body.to_string()),
            client_ip: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn query_params_are_decoded() {
        let r = req(Some("prefix=a%2Fb&limit=5&x"), None, "");
        assert_eq!(r.query_param("prefix").as_deref(), Some("a/b"));
        assert_eq!(r.query_param("limit").as_deref(), Some("5"));
        assert_eq!(r.query_param("x").as_deref(), Some(""));
        assert_eq!(r.query_param("missing"), None);
        assert_eq!(r.segments(), vec!["api", "rules", "x"]);
    }

    #[test]
    fn json_body_rules() {
        let ok = req(None, Some("application/json; charset=utf-8"), r#"{"a":1}"#);
        assert_eq!(ok.json::<serde_json::Value>().unwrap()["a"], 1);
        let text = req(None, Some("text/plain"), r#"{"a":1}"#);
        assert_eq!(
            text.json::<serde_json::Value>().unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let broken = req(None, Some("application/json"), "{");
        assert_eq!(
            broken.json::<serde_json::Value>().unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert!(req(None, None, "  ").json_or_empty().unwrap().is_none());
    }

    #[test]
    fn error_bodies() {
        let r: ApiResponse = ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized")
            .with_code("AUTH_REQUIRED")
            .into();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code":"AUTH_REQUIRED","error":"Unauthorized"})
        );
    }
}
