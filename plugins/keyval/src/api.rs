//! `/keyval/api` (SPEC 7.2, admin only): a thin HTTP layer over `KeyVal`.

use std::time::Duration;

use buntime_plugin_sdk::openapi::Paths;
use buntime_plugin_sdk::{ApiError, ApiRequest, ApiResponse, ApiResult};
use http::Method;
use serde_json::{Value as Json, json};

use crate::key::Key;
use crate::store::{Check, KeyVal, Mutation, Selector, number_operand};

pub const MAX_BATCH: usize = 1000;
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub async fn handle(kv: &KeyVal, req: &ApiRequest) -> ApiResult {
    let path = req.path.trim_end_matches('/');
    let Some(rest) = path.strip_prefix("/api") else {
        return Ok(ApiResponse::not_found());
    };
    match (&req.method, rest) {
        (&Method::GET, "/keys") => list(kv, req).await,
        (&Method::GET, "/keys/count") => count(kv, req).await,
        (&Method::GET, "/keys/paginate") => paginate(kv, req).await,
        (&Method::POST, "/keys/batch") => batch(kv, req).await,
        (&Method::POST, "/atomic") => atomic(kv, req).await,
        (method, rest) => match rest.strip_prefix("/keys/") {
            Some(key_path) => {
                let key = Key::from_path(key_path).map_err(ApiError::bad_request)?;
                match *method {
                    Method::GET => get(kv, &key).await,
                    Method::PUT => put(kv, req, &key).await,
                    Method::DELETE => delete(kv, req, &key).await,
                    _ => Ok(ApiResponse::method_not_allowed(
                        http::HeaderValue::from_static("GET, HEAD, PUT, DELETE"),
                    )),
                }
            }
            None => Ok(ApiResponse::not_found()),
        },
    }
}

pub fn openapi() -> Json {
    let mut p = Paths::new();
    p.add(
        "GET",
        "/keyval/api/keys",
        "List entries (prefix, start, end, limit, reverse)",
        true,
        &[200, 400, 401],
    )
    .add(
        "GET",
        "/keyval/api/keys/count",
        "Count entries under a prefix",
        true,
        &[200, 400, 401],
    )
    .add(
        "GET",
        "/keyval/api/keys/paginate",
        "A page of entries after a cursor",
        true,
        &[200, 400, 401],
    )
    .add(
        "POST",
        "/keyval/api/keys/batch",
        "Get up to 1000 keys at once",
        true,
        &[200, 400, 401],
    )
    .add(
        "GET",
        "/keyval/api/keys/{path}",
        "Get one entry",
        true,
        &[200, 400, 401, 404],
    )
    .add(
        "PUT",
        "/keyval/api/keys/{path}",
        "Set an entry (expiresIn ms)",
        true,
        &[200, 400, 401, 503],
    )
    .add(
        "DELETE",
        "/keyval/api/keys/{path}",
        "Delete a key and everything below it, or only it (exact)",
        true,
        &[200, 400, 401],
    )
    .add(
        "POST",
        "/keyval/api/atomic",
        "Checks and mutations, all or nothing",
        true,
        &[200, 400, 401, 503],
    );
    p.into_value()
}

/// `limit`: default 100, above 1000 capped, zero/negative/non-numeric refused.
fn limit(req: &ApiRequest) -> Result<usize, ApiError> {
    match req.query_param("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n > 0 => Ok((n as usize).min(MAX_LIMIT)),
            _ => Err(ApiError::bad_request(format!(
                "limit must be a positive integer (got {v:?})"
            ))),
        },
    }
}

fn key_param(req: &ApiRequest, name: &str) -> Result<Option<Key>, ApiError> {
    req.query_param(name)
        .filter(|p| !p.is_empty())
        .map(|p| Key::from_path(&p).map_err(|e| ApiError::bad_request(format!("{name}: {e}"))))
        .transpose()
}

fn entries_json(entries: &[crate::store::Entry]) -> Json {
    Json::Array(entries.iter().map(|e| e.to_json()).collect())
}

async fn list(kv: &KeyVal, req: &ApiRequest) -> ApiResult {
    let sel = Selector {
        prefix: key_param(req, "prefix")?.unwrap_or_default(),
        start: key_param(req, "start")?,
        end: key_param(req, "end")?,
        limit: limit(req)?,
        reverse: req.query_param("reverse").as_deref() == Some("true"),
    };
    let found = kv.list(&sel).await?;
    Ok(ApiResponse::ok(&entries_json(&found)))
}

async fn count(kv: &KeyVal, req: &ApiRequest) -> ApiResult {
    let prefix = key_param(req, "prefix")?.unwrap_or_default();
    Ok(ApiResponse::ok(
        &json!({ "count": kv.count(&prefix).await? }),
    ))
}

async fn paginate(kv: &KeyVal, req: &ApiRequest) -> ApiResult {
    let prefix = key_param(req, "prefix")?.unwrap_or_default();
    let reverse = req.query_param("reverse").as_deref() == Some("true");
    let page = kv
        .paginate(
            &prefix,
            req.query_param("cursor").as_deref(),
            limit(req)?,
            reverse,
        )
        .await?;
    Ok(ApiResponse::ok(&json!({
        "entries": entries_json(&page.entries),
        "cursor": page.cursor,
        "hasMore": page.has_more,
    })))
}

async fn batch(kv: &KeyVal, req: &ApiRequest) -> ApiResult {
    let body: Json = req.json()?;
    let keys = body
        .get("keys")
        .and_then(Json::as_array)
        .ok_or_else(|| ApiError::bad_request("keys must be an array of keys"))?;
    if keys.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "Too many keys: {} (at most {MAX_BATCH} per batch)",
            keys.len()
        )));
    }
    let keys = keys
        .iter()
        .map(|k| Key::from_json(k).map_err(ApiError::bad_request))
        .collect::<Result<Vec<Key>, _>>()?;
    let found = kv.get_many(&keys).await?;
    let out: Vec<Json> = keys
        .iter()
        .zip(found)
        .map(|(k, e)| match e {
            Some(e) => e.to_json(),
            None => json!({"key": k.to_json(), "value": null, "versionstamp": null}),
        })
        .collect();
    Ok(ApiResponse::ok(&out))
}

async fn get(kv: &KeyVal, key: &Key) -> ApiResult {
    match kv.get(key).await? {
        Some(e) => Ok(ApiResponse::ok(&e.to_json())),
        None => Err(ApiError::not_found("Key not found")),
    }
}

async fn put(kv: &KeyVal, req: &ApiRequest, key: &Key) -> ApiResult {
    let value = req
        .json_or_empty()?
        .ok_or_else(|| ApiError::bad_request("Request body must be a JSON value"))?;
    let expires_in = match req.query_param("expiresIn") {
        None => None,
        Some(v) => Some(expires_in(&Json::String(v))?),
    }
    .flatten();
    let vs = kv.set(key, &value, expires_in).await?;
    Ok(ApiResponse::ok(&json!({ "ok": true, "versionstamp": vs })))
}

async fn delete(kv: &KeyVal, req: &ApiRequest, key: &Key) -> ApiResult {
    let exact = match req.json_or_empty()? {
        None => false,
        Some(body) => match body.get("exact") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(_) => return Err(ApiError::bad_request("exact must be a boolean")),
        },
    };
    let n = kv.delete(key, exact).await?;
    Ok(ApiResponse::ok(&json!({ "deletedCount": n })))
}

/// Milliseconds, as a number or a numeric string; 0 means no expiry.
fn expires_in(v: &Json) -> Result<Option<Duration>, ApiError> {
    let ms = match v {
        Json::Null => return Ok(None),
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match ms {
        Some(ms) if ms.is_finite() && ms >= 0.0 => {
            Ok((ms > 0.0).then(|| Duration::from_millis(ms as u64)))
        }
        _ => Err(ApiError::bad_request(format!(
            "expiresIn must be a non-negative number of milliseconds (got {v})"
        ))),
    }
}

async fn atomic(kv: &KeyVal, req: &ApiRequest) -> ApiResult {
    let body: Json = req.json()?;
    let checks = match body.get("checks") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items.iter().map(check).collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ApiError::bad_request("checks must be an array")),
    };
    let mutations = match body.get("mutations") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items.iter().map(mutation).collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ApiError::bad_request("mutations must be an array")),
    };
    if checks.len() + mutations.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "Too many checks and mutations (at most {MAX_BATCH})"
        )));
    }
    Ok(match kv.atomic(&checks, &mutations).await? {
        Some(vs) => ApiResponse::ok(&json!({ "ok": true, "versionstamp": vs })),
        None => ApiResponse::ok(&json!({ "ok": false })),
    })
}

fn check(v: &Json) -> Result<Check, ApiError> {
    let key = Key::from_json(v.get("key").unwrap_or(&Json::Null))
        .map_err(|e| ApiError::bad_request(format!("check key: {e}")))?;
    let versionstamp = match v.get("versionstamp") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "check versionstamp must be a string or null",
            ));
        }
    };
    Ok(Check { key, versionstamp })
}

fn mutation(v: &Json) -> Result<Mutation, ApiError> {
    let kind = v.get("type").and_then(Json::as_str).unwrap_or("");
    let key = Key::from_json(v.get("key").unwrap_or(&Json::Null))
        .map_err(|e| ApiError::bad_request(format!("{kind} mutation key: {e}")))?;
    let value = v.get("value").cloned().unwrap_or(Json::Null);
    let number = |what: &str| -> Result<f64, ApiError> {
        number_operand(&value)
            .ok_or_else(|| ApiError::bad_request(format!("{what} value must be a number")))
    };
    let array = |what: &str| -> Result<Vec<Json>, ApiError> {
        value
            .as_array()
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("{what} value must be an array")))
    };
    Ok(match kind {
        "set" => Mutation::Set {
            key,
            expires_in: expires_in(v.get("expiresIn").unwrap_or(&Json::Null))?,
            value,
        },
        "delete" => Mutation::Delete { key },
        "sum" => Mutation::Sum {
            key,
            value: number("sum")?,
        },
        "max" => Mutation::Max {
            key,
            value: number("max")?,
        },
        "min" => Mutation::Min {
            key,
            value: number("min")?,
        },
        "append" => Mutation::Append {
            key,
            values: array("append")?,
        },
        "prepend" => Mutation::Prepend {
            key,
            values: array("prepend")?,
        },
        other => {
            return Err(ApiError::bad_request(format!(
                "Unknown mutation type {other:?} (use set, delete, sum, max, min, append or prepend)"
            )));
        }
    })
}
