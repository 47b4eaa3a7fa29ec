//! `/redirects/api` (SPEC 4.3, admin). Error bodies are `{"error": "<text>"}`.

use std::borrow::Cow;

use buntime_plugin_sdk::openapi::Paths;
use buntime_plugin_sdk::path::has_dot_segment;
use buntime_plugin_sdk::percent::encode_non_ascii;
use buntime_plugin_sdk::{ApiError, ApiRequest, ApiResponse, ApiResult};
use http::{Method, StatusCode};
use pingora_http::authority::{RawTargetAuthority, is_http_family_scheme, raw_target_authority};
use serde_json::{Map, Value as Json, json};

use crate::PublicCheck;
use crate::store::RuleStore;

pub async fn handle(store: &RuleStore, public: &PublicCheck, req: &ApiRequest) -> ApiResult {
    let segs = req.segments();
    match (&req.method, segs.as_slice()) {
        (&Method::GET, ["api", "rules"]) => Ok(list(store)),
        (&Method::POST, ["api", "rules"]) => {
            let rule = store.create(&object(req)?).await?;
            Ok(ApiResponse::json(StatusCode::CREATED, &rule.to_json()))
        }
        (&Method::PUT, ["api", "rules", "reorder"]) => reorder(store, req).await,
        (&Method::POST, ["api", "rules", "test"]) => test(store, public, req),
        (&Method::GET, ["api", "rules", id]) => {
            let table = store.table().load();
            let rule = table
                .get(id)
                .ok_or_else(|| ApiError::not_found("Rule not found"))?;
            Ok(ApiResponse::ok(&rule.rule.to_json()))
        }
        (&Method::PUT, ["api", "rules", id]) => {
            let rule = store.update(id, &object(req)?).await?;
            Ok(ApiResponse::ok(&rule.to_json()))
        }
        (&Method::PATCH, ["api", "rules", id, "toggle"]) => {
            Ok(ApiResponse::ok(&store.toggle(id).await?.to_json()))
        }
        (&Method::DELETE, ["api", "rules", id]) => {
            store.delete(id).await?;
            Ok(ApiResponse::ok(&json!({"success": true})))
        }
        _ => Ok(ApiResponse::not_found()),
    }
}

pub fn openapi() -> Json {
    let mut p = Paths::new();
    p.add(
        "GET",
        "/redirects/api/rules",
        "All rules, static then dynamic",
        true,
        &[200, 401],
    )
    .add(
        "POST",
        "/redirects/api/rules",
        "Create a rule",
        true,
        &[201, 400, 401, 409, 415, 503],
    )
    .add(
        "GET",
        "/redirects/api/rules/{id}",
        "One rule",
        true,
        &[200, 401, 404],
    )
    .add(
        "PUT",
        "/redirects/api/rules/{id}",
        "Update a rule (partial)",
        true,
        &[200, 400, 401, 403, 404],
    )
    .add(
        "DELETE",
        "/redirects/api/rules/{id}",
        "Delete a rule",
        true,
        &[200, 401, 403, 404],
    )
    .add(
        "PATCH",
        "/redirects/api/rules/{id}/toggle",
        "Flip enabled",
        true,
        &[200, 401, 403, 404],
    )
    .add(
        "PUT",
        "/redirects/api/rules/reorder",
        "Set the order of every dynamic rule",
        true,
        &[200, 400, 401, 403, 404],
    )
    .add(
        "POST",
        "/redirects/api/rules/test",
        "What the gateway would do with a method and path",
        true,
        &[200, 400, 401],
    );
    p.into_value()
}

fn object(req: &ApiRequest) -> Result<Map<String, Json>, ApiError> {
    match req.json::<Json>()? {
        Json::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("The body must be a JSON object")),
    }
}

fn list(store: &RuleStore) -> ApiResponse {
    let table = store.table().load();
    let rules: Vec<Json> = table.all().iter().map(|r| r.rule.to_json()).collect();
    ApiResponse::ok(&rules)
}

async fn reorder(store: &RuleStore, req: &ApiRequest) -> ApiResult {
    let body = object(req)?;
    let ids: Vec<String> = body
        .get("ids")
        .and_then(Json::as_array)
        .filter(|a| !a.is_empty())
        .and_then(|a| a.iter().map(|v| v.as_str().map(String::from)).collect())
        .ok_or_else(|| ApiError::bad_request("ids must be a non-empty array"))?;
    let rules = store.reorder(&ids).await?;
    Ok(ApiResponse::ok(
        &rules.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
    ))
}

/// The path and query of a whole URL (`https://gw.example/x?y`), as written (dot segments
/// and all, which the gateway refuses), `/` when it has none: the target the gateway
/// routes an absolute-form request by, found by the same classification of Pingora's
/// (`admit::to_origin_form`). Any other text as it is, and so is a URL whose authority
/// Pingora refuses before the gateway sees it (ambiguous, or with userinfo): both are
/// refused below as no path.
fn url_target(text: &str) -> Cow<'_, str> {
    let RawTargetAuthority::Absolute {
        scheme,
        authority,
        path_and_query,
    } = raw_target_authority(text.as_bytes())
    else {
        return text.into();
    };
    if !is_http_family_scheme(scheme) || authority.contains(&b'@') {
        return text.into();
    }
    // The classifier splits at ASCII bytes, so the tail is a `str` boundary.
    let rest = &text[text.len() - path_and_query.len()..];
    let target = rest.split('#').next().unwrap_or_default();
    if target.starts_with('/') {
        target.into()
    } else {
        format!("/{target}").into()
    }
}

fn test(store: &RuleStore, public: &PublicCheck, req: &ApiRequest) -> ApiResult {
    let body = object(req)?;
    let text = |k: &str| body.get(k).and_then(Json::as_str).filter(|s| !s.is_empty());
    let (Some(method), Some(full)) = (text("method"), text("path")) else {
        return Err(ApiError::bad_request("method and path are required"));
    };
    // As a client sends it: `/café` arrives as `/caf%C3%A9`; a whole URL (the gateway
    // routes absolute-form targets by their path) is its path and query.
    let target = url_target(full);
    let full = encode_non_ascii(&target);
    let (path, query) = match full.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (full.as_ref(), None),
    };
    // What the gateway refuses before any rule is tried is refused here too, rather than
    // reported as a match the gateway would never make.
    if !path.starts_with('/') || has_dot_segment(path) {
        return Err(ApiError::bad_request(
            "Invalid path: it must start with / and have no . or .. segments \
             (the gateway answers such a request 400)",
        ));
    }
    if Method::from_bytes(method.as_bytes()).is_err() {
        return Err(ApiError::bad_request("Invalid method"));
    }
    let table = store.table().load();
    let Some(rule) = table.matching(path, false) else {
        return Ok(ApiResponse::ok(
            &json!({"matched": false, "public": public(method, path)}),
        ));
    };
    let t = &rule.target;
    let upstream = format!(
        "{}{}",
        t.url_prefix().trim_end_matches(&t.base_path),
        rule.upstream_uri(path, query)
    );
    Ok(ApiResponse::ok(&json!({
        "matched": true,
        "rule": rule.rule.to_json(),
        "captures": rule.captures(path),
        "upstreamUrl": upstream,
        "public": rule.public.is_match(method, path) || public(method, path),
    })))
}
