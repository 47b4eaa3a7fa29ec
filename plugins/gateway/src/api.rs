//! `/gateway/api` (SPEC 5.4, admin).

use buntime_keyval::{Check, Key, KeyVal, Mutation};
use buntime_plugin_sdk::api::decode_segment;
use buntime_plugin_sdk::openapi::Paths;
use buntime_plugin_sdk::{ApiError, ApiRequest, ApiResponse, ApiResult};
use http::Method;
use serde_json::{Value as Json, json};

use crate::GatewayPlugin;
use crate::config::valid_basename;
use crate::shell::{Shell, StoredExclude};

pub fn excludes_key() -> Key {
    Key::strings(&["gateway", "shell", "excludes"])
}

pub async fn handle(g: &GatewayPlugin, req: &ApiRequest) -> ApiResult {
    let segs = req.segments();
    match (&req.method, segs.as_slice()) {
        (&Method::GET, ["api", "config"]) => Ok(ApiResponse::ok(&g.config_json())),
        (&Method::GET, ["api", "stats"]) => Ok(ApiResponse::ok(&g.stats_json())),
        (&Method::GET, ["api", "rate-limit", "buckets"]) => {
            let limit = match req.query_param("limit") {
                None => 100,
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ApiError::bad_request("limit must be a positive integer"))?
                    .min(1000),
            };
            Ok(ApiResponse::ok(&g.limiter.buckets(limit)))
        }
        (&Method::DELETE, ["api", "rate-limit", "buckets", key]) => {
            let key = decode_segment(key)?;
            Ok(ApiResponse::ok(
                &json!({"deleted": g.limiter.delete(&key), "key": key}),
            ))
        }
        (&Method::POST, ["api", "rate-limit", "clear"]) => {
            Ok(ApiResponse::ok(&json!({"cleared": g.limiter.clear()})))
        }
        (&Method::GET, ["api", "shell", "excludes"]) => {
            Ok(ApiResponse::ok(&list_excludes(g.shell.as_deref())))
        }
        (&Method::POST, ["api", "shell", "excludes"]) => add_exclude(g, req).await,
        (&Method::DELETE, ["api", "shell", "excludes", name]) => {
            remove_exclude(g, &decode_segment(name)?).await
        }
        _ => Ok(ApiResponse::not_found()),
    }
}

pub fn openapi() -> Json {
    let mut p = Paths::new();
    p.add(
        "GET",
        "/gateway/api/config",
        "CORS, rate-limit and shell settings",
        true,
        &[200, 401],
    )
    .add(
        "GET",
        "/gateway/api/stats",
        "Rate-limit counters and feature switches",
        true,
        &[200, 401],
    )
    .add(
        "GET",
        "/gateway/api/rate-limit/buckets",
        "Clients counted in their current window",
        true,
        &[200, 400, 401],
    )
    .add(
        "DELETE",
        "/gateway/api/rate-limit/buckets/{key}",
        "Forget one client's count",
        true,
        &[200, 401],
    )
    .add(
        "POST",
        "/gateway/api/rate-limit/clear",
        "Forget every count",
        true,
        &[200, 401],
    )
    .add(
        "GET",
        "/gateway/api/shell/excludes",
        "Path segments the shell does not serve",
        true,
        &[200, 401],
    )
    .add(
        "POST",
        "/gateway/api/shell/excludes",
        "Exclude a segment from the shell",
        true,
        &[200, 400, 401, 503],
    )
    .add(
        "DELETE",
        "/gateway/api/shell/excludes/{basename}",
        "Stop excluding a segment",
        true,
        &[200, 400, 401, 503],
    );
    p.into_value()
}

fn list_excludes(shell: Option<&Shell>) -> Json {
    let Some(shell) = shell else {
        return json!([]);
    };
    let mut out: Vec<Json> = shell
        .configured()
        .iter()
        .map(|b| json!({"basename": b, "source": "env"}))
        .collect();
    out.extend(
        shell
            .stored()
            .iter()
            .map(|e| json!({"basename": e.basename, "source": "keyval", "addedAt": e.added_at})),
    );
    Json::Array(out)
}

fn shell_and_store(g: &GatewayPlugin) -> Result<(&Shell, &KeyVal), ApiError> {
    let shell = g
        .shell
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("Shell not configured"))?;
    let kv =
        g.kv.as_ref()
            .ok_or_else(|| ApiError::unavailable("Keyval is not loaded"))?;
    Ok((shell, kv))
}

async fn add_exclude(g: &GatewayPlugin, req: &ApiRequest) -> ApiResult {
    let (shell, kv) = shell_and_store(g)?;
    let body: Json = req.json()?;
    let name = body
        .get("basename")
        .and_then(Json::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("basename is required"))?;
    if !valid_basename(name) {
        return Err(ApiError::bad_request("Invalid basename format"));
    }
    if shell.configured().iter().any(|e| e == name) {
        return Err(ApiError::bad_request("Already excluded via environment"));
    }
    let added = update_stored(kv, shell, |list| {
        if list.iter().any(|e| e.basename == name) {
            return false;
        }
        list.push(StoredExclude {
            basename: name.to_string(),
            added_at: now_ms(),
        });
        true
    })
    .await?;
    Ok(ApiResponse::ok(
        &json!({"added": added, "basename": name, "source": "keyval"}),
    ))
}

async fn remove_exclude(g: &GatewayPlugin, name: &str) -> ApiResult {
    let (shell, kv) = shell_and_store(g)?;
    if shell.configured().iter().any(|e| e == name) {
        return Err(ApiError::bad_request(
            "Cannot remove an exclude set via environment",
        ));
    }
    let removed = update_stored(kv, shell, |list| {
        let before = list.len();
        list.retain(|e| e.basename != name);
        list.len() != before
    })
    .await?;
    Ok(ApiResponse::ok(
        &json!({"removed": removed, "basename": name}),
    ))
}

/// Read-modify-write of the stored list, retried if another writer got in between;
/// `edit` says whether it changed anything.
async fn update_stored(
    kv: &KeyVal,
    shell: &Shell,
    mut edit: impl FnMut(&mut Vec<StoredExclude>) -> bool,
) -> Result<bool, ApiError> {
    let kv = kv.primary();
    for _ in 0..8 {
        let current = kv.get(&excludes_key()).await?;
        let versionstamp = current.as_ref().map(|e| e.versionstamp.clone());
        let mut list: Vec<StoredExclude> = current
            .and_then(|e| serde_json::from_value(e.value).ok())
            .unwrap_or_default();
        if !edit(&mut list) {
            shell.set_stored(list);
            return Ok(false);
        }
        let committed = kv
            .atomic(
                &[Check {
                    key: excludes_key(),
                    versionstamp,
                }],
                &[Mutation::Set {
                    key: excludes_key(),
                    value: serde_json::to_value(&list).unwrap_or_default(),
                    expires_in: None,
                }],
            )
            .await?;
        if committed.is_some() {
            shell.set_stored(list);
            return Ok(true);
        }
    }
    Err(ApiError::unavailable(
        "Shell excludes are being changed concurrently; try again",
    ))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
