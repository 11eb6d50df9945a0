//! The served OpenAPI document, completed from what the routes declare: the
//! parts every route shares (the error body and the statuses any request
//! can meet, the two ways to send a key, which routes need none) are added
//! here once, so each route declares only what is its own.

use serde_json::{Map, Value, json};

/// Routes that take no key; `/register/agent` takes one optionally (an
/// admin's key registers reserved names).
const PUBLIC: &[&str] = &["/discover", "/healthz", "/metrics"];
const KEY_OPTIONAL: &[&str] = &["/register/agent"];

/// The error body every non-2xx answer carries.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "description": "What failed, for programs: not_found, claim_denied, ..."},
                "message": {"type": "string", "description": "What failed and what to do, for people"},
                "details": {
                    "type": "array",
                    "description": "For validation failures: each problem, with a JSON pointer to where it is",
                    "items": {"type": "object", "properties": {"path": {"type": "string"}, "message": {"type": "string"}}}
                },
                "decision_id": {"type": "string", "description": "The policy decision behind a refusal, in the decision log"}
            }
        }}
    })
}

/// What a status means where a route says no more.
fn describe(status: &str) -> &'static str {
    match status {
        "200" => "OK",
        "201" => "Created",
        "204" => "Done; no body",
        "400" => "The request is malformed: bad JSON, a bad parameter or header",
        "401" => "No API key, or one this host does not know",
        "403" => "The key is known but may not do this",
        "404" => "Not found, or not visible to this key",
        "408" => "The request body did not arrive in time",
        "409" => "Conflicts with the current state",
        "412" => "The If-Match version is not the current one",
        "413" => "The body, or what it would make, is over a limit",
        "415" => "The body's Content-Type is not one this route takes",
        "422" => "Well formed, but breaks a rule; details point at each problem",
        "423" => "Halted by an algedonic HALT until it is acknowledged",
        "429" => "Too many requests from this key; see Retry-After",
        "503" => "The host is shutting down or out of connections; see Retry-After",
        _ => "See the error body",
    }
}

/// Completes `doc` (utoipa's rendering of the routes) into a valid and true
/// OpenAPI 3.1 document.
pub fn finish(mut doc: Value) -> Value {
    let mut components = doc["components"].as_object_mut().map(std::mem::take).unwrap_or_default();
    let schemas = components.entry("schemas").or_insert_with(|| json!({}));
    schemas["Error"] = error_schema();
    let schemes = components.entry("securitySchemes").or_insert_with(|| json!({}));
    schemes["api_key"] = json!({"type": "apiKey", "in": "header", "name": "X-API-KEY",
        "description": "The agent's API key, from POST /register/agent"});
    schemes["bearer"] = json!({"type": "http", "scheme": "bearer", "description": "The same API key, as `Authorization: Bearer sk_...`"});
    doc["components"] = Value::Object(components);
    doc["security"] = json!([{"api_key": []}, {"bearer": []}]);

    let mut seen = std::collections::HashSet::new();
    let paths = doc["paths"].as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut done = Map::new();
    for (path, mut item) in paths {
        for (method, op) in item.as_object_mut().into_iter().flatten() {
            finish_operation(&path, method, op, &mut seen);
        }
        done.insert(path, item);
    }
    doc["paths"] = Value::Object(done);
    doc
}

fn finish_operation(path: &str, method: &str, op: &mut Value, seen: &mut std::collections::HashSet<String>) {
    // Unique operation ids: the tag and the handler's name (`stash_list`).
    let tag = op["tags"][0].as_str().unwrap_or("cairn").replace('-', "_");
    let name = op["operationId"].as_str().unwrap_or(method).to_string();
    let mut id = if name.starts_with(&tag) { name } else { format!("{tag}_{name}") };
    if !seen.insert(id.clone()) {
        id = format!("{id}_{method}");
        seen.insert(id.clone());
    }
    op["operationId"] = json!(id);

    let public = PUBLIC.contains(&path);
    if public {
        op["security"] = json!([]);
    } else if KEY_OPTIONAL.contains(&path) {
        op["security"] = json!([{}, {"api_key": []}, {"bearer": []}]);
    }

    // A body that is not JSON is bytes (utoipa renders Vec<u8> as an array
    // of integers).
    let has_body = op.get("requestBody").is_some();
    if let Some(content) = op.pointer_mut("/requestBody/content").and_then(Value::as_object_mut) {
        for (media, entry) in content.iter_mut() {
            if media != "application/json" {
                entry["schema"] = json!({"type": "string", "format": "binary"});
            }
        }
    }

    let mut responses = op["responses"].as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut shared = vec!["400", "429", "503"];
    if !public {
        shared.push("401");
    }
    if has_body {
        shared.extend(["413", "415"]);
    }
    for status in shared {
        responses.entry(status).or_insert_with(|| json!({}));
    }
    for (status, response) in responses.iter_mut() {
        if response.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
            response["description"] = json!(describe(status));
        }
        let error = status.starts_with('4') || status.starts_with('5');
        if error && response.get("content").is_none() {
            response["content"] = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
        }
    }
    op["responses"] = Value::Object(responses);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_errors_described_and_public_routes_open() {
        let doc = json!({
            "openapi": "3.1.0",
            "paths": {
                "/a": {"get": {"tags": ["stash"], "operationId": "list", "responses": {"200": {}}}},
                "/b": {"get": {"tags": ["stream"], "operationId": "list", "responses": {"404": {}}},
                       "put": {"tags": ["stream"], "operationId": "list", "requestBody": {"content": {"application/wasm": {"schema": {"type": "array"}}}}, "responses": {}}},
                "/healthz": {"get": {"tags": ["operations"], "operationId": "healthz", "responses": {"200": {"description": "up"}}}}
            },
            "components": {"schemas": {}, "securitySchemes": {"api_key": {"type": "apiKey"}}}
        });
        let done = finish(doc);
        let ids: Vec<&str> = ["/paths/~1a/get", "/paths/~1b/get", "/paths/~1b/put"]
            .iter()
            .map(|p| done.pointer(&format!("{p}/operationId")).and_then(Value::as_str).unwrap())
            .collect();
        assert_eq!(ids, ["stash_list", "stream_list", "stream_list_put"]);
        assert_eq!(done["paths"]["/a"]["get"]["responses"]["200"]["description"], "OK");
        assert_eq!(
            done["paths"]["/b"]["get"]["responses"]["404"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        assert!(done["paths"]["/b"]["put"]["responses"].get("415").is_some());
        assert_eq!(
            done["paths"]["/b"]["put"]["requestBody"]["content"]["application/wasm"]["schema"]["format"],
            "binary"
        );
        assert_eq!(done["paths"]["/healthz"]["get"]["security"], json!([]));
        assert!(done["paths"]["/healthz"]["get"]["responses"].get("401").is_none());
        assert_eq!(done["paths"]["/healthz"]["get"]["responses"]["200"]["description"], "up");
        assert_eq!(done["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }
}
