//! JSON <-> SQL values for the query API.

use base64::Engine;
use libsql::Value;
use serde_json::Value as Json;

/// A JSON parameter as an SQL value; objects and arrays are not accepted.
pub fn to_sql(v: &Json) -> Result<Value, String> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().ok_or("number out of range")?),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(_) | Json::Object(_) => {
            return Err("parameters must be null, booleans, numbers or strings".into());
        }
    })
}

/// An SQL value as JSON; blobs become base64 strings.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => Json::from(*i),
        Value::Real(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Text(s) => Json::String(s.clone()),
        Value::Blob(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips() {
        assert_eq!(to_sql(&json!(true)).unwrap(), Value::Integer(1));
        assert_eq!(to_sql(&json!(1.5)).unwrap(), Value::Real(1.5));
        assert_eq!(to_sql(&json!("x")).unwrap(), Value::Text("x".into()));
        assert!(to_sql(&json!([1])).is_err());
        assert_eq!(to_json(&Value::Blob(vec![0, 255])), json!("AP8="));
        assert_eq!(to_json(&Value::Real(f64::NAN)), Json::Null);
    }
}
