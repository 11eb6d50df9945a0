//! Tool schemas, derived from the OpenAPI document of the routes the tools
//! call, so that a tool takes and returns exactly what its route does.
//!
//! An input schema is one object: the route's path and query parameters
//! beside the properties of its JSON body. Component references become
//! `$defs` of each schema, so every schema stands alone.

use serde_json::{Map, Value, json};

/// Where an argument goes in the request a tool makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Path,
    Query,
    Body,
}

/// One argument a tool takes.
#[derive(Debug, Clone)]
pub struct Arg {
    pub name: String,
    pub place: Place,
}

/// What was derived for one route.
#[derive(Debug)]
pub struct Derived {
    pub input: Map<String, Value>,
    pub output: Option<Map<String, Value>>,
    pub args: Vec<Arg>,
}

/// Extra arguments a tool adds to its route's, and ones it leaves out.
pub struct Shape<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub omit: &'a [&'a str],
    pub extra: Vec<(&'a str, Value, bool)>,
    /// Whether the route's JSON body properties become arguments.
    pub body: bool,
}

/// The schemas and arguments of one route, or why they cannot be derived
/// (a route that is not in the document: a bug this module's tests catch).
/// `components` is the document's, from [`components`].
pub fn derive(openapi: &Value, components: &Map<String, Value>, shape: &Shape) -> Result<Derived, String> {
    let op = openapi
        .pointer(&format!("/paths/{}/{}", escape(shape.path), shape.method))
        .ok_or_else(|| format!("no {} {} in the OpenAPI document", shape.method, shape.path))?;
    let mut defs = Map::new();
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut args = Vec::new();

    for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        let (Some(name), Some(place)) = (p.get("name").and_then(Value::as_str), p.get("in").and_then(Value::as_str))
        else {
            continue;
        };
        let place = match place {
            "path" => Place::Path,
            "query" => Place::Query,
            _ => continue,
        };
        if shape.omit.contains(&name) {
            continue;
        }
        let mut schema = p.get("schema").cloned().unwrap_or_else(|| json!({}));
        if let (Some(d), Some(o)) = (p.get("description"), schema.as_object_mut()) {
            o.entry("description").or_insert_with(|| d.clone());
        }
        localize(&mut schema, components, &mut defs);
        if place == Place::Path || p.get("required").and_then(Value::as_bool) == Some(true) {
            required.push(Value::from(name));
        }
        properties.insert(name.to_string(), schema);
        args.push(Arg { name: name.to_string(), place });
    }

    if shape.body
        && let Some(body) = op.pointer("/requestBody/content/application~1json/schema")
    {
        let body = resolve(body, components);
        for (name, schema) in body.get("properties").and_then(Value::as_object).into_iter().flatten() {
            if shape.omit.contains(&name.as_str()) {
                continue;
            }
            if properties.contains_key(name) {
                return Err(format!("{} {}: body property {name:?} is also a parameter", shape.method, shape.path));
            }
            let mut schema = schema.clone();
            localize(&mut schema, components, &mut defs);
            properties.insert(name.clone(), schema);
            args.push(Arg { name: name.clone(), place: Place::Body });
        }
        for r in body.get("required").and_then(Value::as_array).into_iter().flatten() {
            if r.as_str().is_some_and(|r| !shape.omit.contains(&r)) {
                required.push(r.clone());
            }
        }
    }

    for (name, schema, is_required) in &shape.extra {
        if properties.contains_key(*name) {
            return Err(format!("{} {}: extra argument {name:?} is already taken", shape.method, shape.path));
        }
        let mut schema = schema.clone();
        localize(&mut schema, components, &mut defs);
        properties.insert(name.to_string(), schema);
        if *is_required {
            required.push(Value::from(*name));
        }
    }

    let mut input = Map::new();
    input.insert("type".into(), "object".into());
    input.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        input.insert("required".into(), Value::Array(required));
    }
    input.insert("additionalProperties".into(), false.into());
    if !defs.is_empty() {
        input.insert("$defs".into(), Value::Object(defs));
    }

    let output = ["200", "201"]
        .iter()
        .find_map(|status| op.pointer(&format!("/responses/{status}/content/application~1json/schema")))
        .map(|schema| standalone(schema, components));
    Ok(Derived { input, output, args })
}

/// A schema with its references carried along as `$defs`; the root is the
/// referenced schema itself, since MCP wants an object at the root.
pub fn standalone(schema: &Value, components: &Map<String, Value>) -> Map<String, Value> {
    let mut defs = Map::new();
    let mut root = resolve(schema, components);
    localize(&mut root, components, &mut defs);
    let mut out = root.as_object().cloned().unwrap_or_default();
    if !defs.is_empty() {
        out.insert("$defs".into(), Value::Object(defs));
    }
    out
}

/// The components of an OpenAPI document, for [`derive`] and [`standalone`].
pub fn components(openapi: &Value) -> Map<String, Value> {
    openapi.pointer("/components/schemas").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// A `$ref` at the top, followed once.
fn resolve(schema: &Value, components: &Map<String, Value>) -> Value {
    match schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => components.get(name).cloned().unwrap_or_else(|| json!({})),
        None => schema.clone(),
    }
}

/// Rewrites component references to `#/$defs/NAME`, collecting each
/// referenced component (and what it references) into `defs`.
fn localize(schema: &mut Value, components: &Map<String, Value>, defs: &mut Map<String, Value>) {
    match schema {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/").map(str::to_string)
            {
                *r = format!("#/$defs/{name}");
                if !defs.contains_key(&name) {
                    // Inserted before it is walked, so a type that refers
                    // to itself ends the walk.
                    defs.insert(name.clone(), Value::Null);
                    let mut def = components.get(&name).cloned().unwrap_or_else(|| json!({}));
                    localize(&mut def, components, defs);
                    defs.insert(name, def);
                }
            }
            for v in o.values_mut() {
                localize(v, components, defs);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| localize(v, components, defs)),
        _ => {}
    }
}

/// A path as a JSON pointer token.
fn escape(path: &str) -> String {
    path.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({
            "paths": {"/teams/{team}/tasks/{id}": {"patch": {
                "parameters": [
                    {"name": "team", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}},
                    {"name": "x-trace", "in": "header", "schema": {"type": "string"}}
                ],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Update"}}}},
                "responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/View"}}}}}
            }}},
            "components": {"schemas": {
                "Update": {"type": "object", "required": ["status"], "properties": {
                    "status": {"$ref": "#/components/schemas/Status"}, "note": {"type": "string"}}},
                "View": {"type": "object", "properties": {"status": {"$ref": "#/components/schemas/Status"},
                    "parent": {"$ref": "#/components/schemas/View"}}},
                "Status": {"type": "string", "enum": ["a", "b"]}
            }}
        })
    }

    #[test]
    fn parameters_and_body_become_one_object_with_local_refs() {
        let shape =
            Shape { method: "patch", path: "/teams/{team}/tasks/{id}", omit: &["note"], extra: vec![], body: true };
        let d = derive(&doc(), &components(&doc()), &shape).unwrap();
        let input = Value::Object(d.input);
        assert_eq!(input["required"], json!(["team", "id", "status"]));
        assert_eq!(input["properties"]["status"], json!({"$ref": "#/$defs/Status"}));
        assert!(input["properties"].get("note").is_none() && input["properties"].get("x-trace").is_none());
        assert_eq!(input["$defs"]["Status"]["enum"], json!(["a", "b"]));
        let places: Vec<_> = d.args.iter().map(|a| (a.name.as_str(), a.place)).collect();
        assert_eq!(places, [("team", Place::Path), ("id", Place::Path), ("status", Place::Body)]);
        let output = Value::Object(d.output.unwrap());
        assert_eq!(output["type"], "object");
        assert_eq!(output["properties"]["parent"], json!({"$ref": "#/$defs/View"}));
        assert_eq!(output["$defs"]["View"]["properties"]["status"], json!({"$ref": "#/$defs/Status"}));
    }

    #[test]
    fn a_name_taken_twice_is_refused() {
        let shape = Shape {
            method: "patch",
            path: "/teams/{team}/tasks/{id}",
            omit: &[],
            extra: vec![("team", json!({}), false)],
            body: false,
        };
        assert!(derive(&doc(), &components(&doc()), &shape).unwrap_err().contains("already taken"));
        let missing = Shape { method: "get", path: "/nowhere", omit: &[], extra: vec![], body: false };
        assert!(derive(&doc(), &components(&doc()), &missing).is_err());
    }
}
