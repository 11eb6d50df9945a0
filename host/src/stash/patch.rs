//! `PATCH /stash/{name}/json`: set fields on the elements of an array that
//! match given values. Pure functions over `serde_json::Value`; the handler
//! wraps them in one versioned write.

use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::{Error, Violation};

#[derive(Debug, Deserialize, ToSchema)]
pub struct JsonPatch {
    pub update_items: Vec<UpdateItem>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateItem {
    /// Dot path to an array, e.g. `subtasks` or `a.b.items`.
    pub path: String,
    /// Elements whose fields equal all of these are updated (all when empty).
    #[serde(default, rename = "match")]
    pub matches: Map<String, Value>,
    /// Fields merged into each matched element.
    pub set: Map<String, Value>,
}

/// Applies every item in order; returns how many elements matched in all.
pub fn apply(doc: &mut Value, items: &[UpdateItem]) -> Result<usize, Error> {
    if items.is_empty() {
        return Err(Error::bad_request("update_items is empty: give at least one {path, match, set}"));
    }
    let mut matched = 0;
    for (i, item) in items.iter().enumerate() {
        let array = walk(doc, &item.path).map_err(|(pointer, why)| {
            Error::validation(format!("update_items[{i}]: {why}"), vec![Violation { path: pointer, message: why }])
        })?;
        for element in array.iter_mut() {
            let Some(fields) = element.as_object_mut() else { continue };
            if item.matches.iter().all(|(k, v)| fields.get(k) == Some(v)) {
                fields.extend(item.set.iter().map(|(k, v)| (k.clone(), v.clone())));
                matched += 1;
            }
        }
    }
    Ok(matched)
}

/// Follows a dot path to an array. The error carries the JSON pointer
/// reached and why it stopped there.
fn walk<'a>(doc: &'a mut Value, path: &str) -> Result<&'a mut Vec<Value>, (String, String)> {
    if path.is_empty() {
        return Err((String::new(), "path is empty: name the array, e.g. \"subtasks\"".into()));
    }
    let mut pointer = String::new();
    let mut at = doc;
    for segment in path.split('.') {
        pointer.push('/');
        pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
        at = match at {
            Value::Object(map) => {
                map.get_mut(segment).ok_or_else(|| (pointer.clone(), format!("no field {segment:?} at {pointer}")))?
            }
            _ => return Err((pointer.clone(), format!("cannot descend into {pointer}: not an object"))),
        };
    }
    match at {
        Value::Array(items) => Ok(items),
        _ => Err((pointer.clone(), format!("{pointer} is not an array"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items(v: Value) -> Vec<UpdateItem> {
        serde_json::from_value::<JsonPatch>(json!({ "update_items": v })).unwrap().update_items
    }

    #[test]
    fn sets_fields_on_matching_elements_only() {
        let mut doc = json!({"objective": "x", "subtasks": [
            {"id": "research", "status": "open"}, {"id": "design", "status": "open"}
        ]});
        let n = apply(
            &mut doc,
            &items(json!([{"path": "subtasks", "match": {"id": "research"},
                           "set": {"status": "claimed", "assigned_agent": "research-bot"}}])),
        )
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            doc["subtasks"][0],
            json!({"id": "research", "status": "claimed", "assigned_agent": "research-bot"})
        );
        assert_eq!(doc["subtasks"][1], json!({"id": "design", "status": "open"}));
    }

    #[test]
    fn nested_paths_and_empty_match() {
        let mut doc = json!({"a": {"b": {"items": [{"x": 1}, {"x": 2}, 3]}}});
        let n = apply(&mut doc, &items(json!([{"path": "a.b.items", "set": {"y": true}}]))).unwrap();
        assert_eq!(n, 2, "non-objects are skipped");
        assert_eq!(doc["a"]["b"]["items"][1], json!({"x": 2, "y": true}));
    }

    #[test]
    fn zero_matches_is_not_an_error() {
        let mut doc = json!({"subtasks": [{"id": "a"}]});
        assert_eq!(
            apply(&mut doc, &items(json!([{"path": "subtasks", "match": {"id": "zz"}, "set": {}}]))).unwrap(),
            0
        );
    }

    #[test]
    fn bad_paths_name_the_pointer() {
        let mut doc = json!({"subtasks": {"not": "array"}, "n": 1});
        for (path, pointer) in [("subtasks", "/subtasks"), ("missing", "/missing"), ("n.x", "/n/x")] {
            let err = apply(&mut doc, &items(json!([{"path": path, "set": {}}]))).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY, "{path}");
            assert!(err.message().contains(pointer), "{path}: {}", err.message());
        }
        assert_eq!(apply(&mut doc, &[]).unwrap_err().status(), axum::http::StatusCode::BAD_REQUEST);
    }
}
