//! JSON Schemas for policy configs: the bundled policies ship one, and any
//! policy may declare one in its settings (`config_schema`). A config is
//! checked against its schema whenever settings are stored, so a typo in a
//! key is refused then, not ignored at decision time.

use serde_json::Value;

use crate::error::{Error, Result, Violation};

/// At most this many problems are listed.
const MAX_DETAILS: usize = 50;

/// 422 naming each way `config` does not fit `schema` (`what` says whose
/// schema it is, and how to see it), or 422 if `schema` is not a usable
/// JSON Schema. Patterns run on the linear-time `regex` engine.
pub fn check(schema: &Value, config: &Value, what: &str) -> Result<()> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(invalid_schema("a JSON Schema is an object or a boolean".into()));
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        return Err(invalid_schema(format!("it is not a valid JSON Schema: {e}")));
    }
    let validator =
        jsonschema::options().with_pattern_options(jsonschema::PatternOptions::regex()).build(schema).map_err(|e| {
            invalid_schema(format!("it does not compile: {e} (patterns may not use backreferences or lookaround)"))
        })?;
    let details: Vec<Violation> = validator
        .iter_errors(config)
        .take(MAX_DETAILS)
        .map(|e| Violation { path: format!("/config{}", e.instance_path()), message: e.to_string() })
        .collect();
    if details.is_empty() {
        return Ok(());
    }
    Err(Error::validation(format!("this config does not fit {what}"), details).with_code("invalid_config"))
}

fn invalid_schema(why: String) -> Error {
    Error::validation(
        format!("config_schema is refused: {why}"),
        vec![Violation { path: "/config_schema".into(), message: why }],
    )
    .with_code("invalid_config_schema")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs_are_checked_and_schemas_must_be_usable() {
        let schema =
            json!({"type": "object", "properties": {"limit": {"type": "integer"}}, "additionalProperties": false});
        check(&schema, &json!({"limit": 2}), "x").unwrap();
        let e = check(&schema, &json!({"limt": 2}), "gate's config_schema").unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (422, "invalid_config"));
        assert_eq!(e.body()["error"]["details"][0]["path"], "/config");
        let e = check(&json!({"type": 5}), &json!({}), "x").unwrap_err();
        assert_eq!(e.code(), "invalid_config_schema");
        let e = check(&json!({"pattern": "^(a)\\1$"}), &json!({}), "x").unwrap_err();
        assert_eq!(e.code(), "invalid_config_schema");
        assert!(check(&json!("no"), &json!({}), "x").is_err());
    }
}
