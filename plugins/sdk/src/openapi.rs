//! Small builders for the OpenAPI 3.1 document at `{API}/openapi.json`: each plugin
//! describes its own routes with these, the gateway merges them.

use serde_json::{Map, Value, json};

/// Collects path items; `add` may be called several times for one path (one per method).
#[derive(Debug, Default)]
pub struct Paths(Map<String, Value>);

impl Paths {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `method path` with a summary and the status codes it answers.
    pub fn add(
        &mut self,
        method: &str,
        path: &str,
        summary: &str,
        admin: bool,
        statuses: &[u16],
    ) -> &mut Self {
        let mut responses = Map::new();
        for s in statuses {
            responses.insert(s.to_string(), json!({ "description": describe(*s) }));
        }
        let mut op = json!({ "summary": summary, "responses": responses });
        if admin {
            op["security"] = json!([{ "apiKey": [] }, { "bearer": [] }]);
        }
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        let item = self
            .0
            .entry(path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        item[method.to_ascii_lowercase()] = op;
        self
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

fn describe(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Invalid request",
        401 => "Missing or wrong credential",
        403 => "Not allowed",
        404 => "Not found",
        409 => "Conflict",
        413 => "Body too large",
        415 => "Body is not JSON",
        429 => "Too many requests",
        503 => "Unavailable",
        _ => "Response",
    }
}

/// The whole document around the merged paths.
pub fn document(version: &str, paths: Map<String, Value>) -> Value {
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Buntime Gateway", "version": version },
        "paths": paths,
        "components": { "securitySchemes": {
            "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" },
            "bearer": { "type": "http", "scheme": "bearer" }
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_and_security() {
        let mut p = Paths::new();
        p.add(
            "GET",
            "/redirects/api/rules/{id}",
            "Get a rule",
            true,
            &[200, 404],
        );
        p.add(
            "DELETE",
            "/redirects/api/rules/{id}",
            "Delete a rule",
            true,
            &[200],
        );
        let v = p.into_value();
        let item = &v["/redirects/api/rules/{id}"];
        assert_eq!(item["get"]["parameters"][0]["name"], "id");
        assert_eq!(item["get"]["responses"]["404"]["description"], "Not found");
        assert!(item["delete"]["security"].is_array());
    }
}
