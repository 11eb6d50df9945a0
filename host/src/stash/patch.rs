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
///
/// The document's size (as compact JSON) is accounted before each item is
/// applied, so a patch whose result would pass `max_bytes` is refused
/// (413) before any of its copies are made: one `set` matched by many
/// elements would otherwise take memory in their product.
pub fn apply(doc: &mut Value, items: &[UpdateItem], max_bytes: usize) -> Result<usize, Error> {
    if items.is_empty() {
        return Err(Error::bad_request("update_items is empty: give at least one {path, match, set}"));
    }
    let mut size = json_len(doc);
    let mut matched = 0;
    for (i, item) in items.iter().enumerate() {
        let array = walk(doc, &item.path).map_err(|(pointer, why)| {
            Error::validation(format!("update_items[{i}]: {why}"), vec![Violation { path: pointer, message: why }])
        })?;
        let set: Vec<(&String, &Value, usize, usize)> =
            item.set.iter().map(|(k, v)| (k, v, json_len(&Value::String(k.clone())), json_len(v))).collect();
        let hits = |fields: &Map<String, Value>| item.matches.iter().all(|(k, v)| fields.get(k) == Some(v));
        let mut grown = size;
        for fields in array.iter().filter_map(Value::as_object).filter(|f| hits(f)) {
            let mut added = 0usize;
            for (k, _, key_len, value_len) in &set {
                match fields.get(*k) {
                    Some(old) => grown = grown.saturating_sub(json_len(old)).saturating_add(*value_len),
                    None => {
                        grown = grown.saturating_add(key_len + 1 + value_len);
                        added += 1;
                    }
                }
            }
            // One comma between each pair of fields.
            grown = grown.saturating_add((fields.len() + added).saturating_sub(1) - fields.len().saturating_sub(1));
            if grown > max_bytes {
                return Err(Error::too_large(format!(
                    "update_items[{i}] would make this stash more than its {max_bytes}-byte limit; \
                     match fewer items or set less"
                )));
            }
        }
        for element in array.iter_mut() {
            let Some(fields) = element.as_object_mut() else { continue };
            if hits(fields) {
                fields.extend(set.iter().map(|(k, v, _, _)| ((*k).clone(), (*v).clone())));
                matched += 1;
            }
        }
        size = grown;
    }
    Ok(matched)
}

/// The length of `v` as compact JSON, counted without building it.
pub fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
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

    fn unbounded(doc: &mut Value, items: &[UpdateItem]) -> Result<usize, Error> {
        apply(doc, items, usize::MAX)
    }

    #[test]
    fn sizes_are_counted_exactly_and_limits_hold_before_copying() {
        let mut doc = json!({"subtasks": [{"id": "a", "n": 1}, {"id": "b"}, {}, 7], "x": "é\"q"});
        let patch = items(json!([{"path": "subtasks", "set": {"n": "longer", "new": [1, {"k": null}]}}]));
        let mut copy = doc.clone();
        unbounded(&mut copy, &patch).unwrap();
        let exact = serde_json::to_vec(&copy).unwrap().len();
        assert_eq!(json_len(&copy), exact);
        assert!(apply(&mut doc.clone(), &patch, exact).is_ok(), "a result of exactly the limit fits");
        let e = apply(&mut doc, &patch, exact - 1).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(doc["subtasks"][0]["n"], 1, "a refused patch changes nothing");
    }

    fn items(v: Value) -> Vec<UpdateItem> {
        serde_json::from_value::<JsonPatch>(json!({ "update_items": v })).unwrap().update_items
    }

    #[test]
    fn sets_fields_on_matching_elements_only() {
        let mut doc = json!({"objective": "x", "subtasks": [
            {"id": "research", "status": "open"}, {"id": "design", "status": "open"}
        ]});
        let n = unbounded(
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
        let n = unbounded(&mut doc, &items(json!([{"path": "a.b.items", "set": {"y": true}}]))).unwrap();
        assert_eq!(n, 2, "non-objects are skipped");
        assert_eq!(doc["a"]["b"]["items"][1], json!({"x": 2, "y": true}));
    }

    #[test]
    fn zero_matches_is_not_an_error() {
        let mut doc = json!({"subtasks": [{"id": "a"}]});
        assert_eq!(
            unbounded(&mut doc, &items(json!([{"path": "subtasks", "match": {"id": "zz"}, "set": {}}]))).unwrap(),
            0
        );
    }

    #[test]
    fn bad_paths_name_the_pointer() {
        let mut doc = json!({"subtasks": {"not": "array"}, "n": 1});
        for (path, pointer) in [("subtasks", "/subtasks"), ("missing", "/missing"), ("n.x", "/n/x")] {
            let err = unbounded(&mut doc, &items(json!([{"path": path, "set": {}}]))).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY, "{path}");
            assert!(err.message().contains(pointer), "{path}: {}", err.message());
        }
        assert_eq!(unbounded(&mut doc, &[]).unwrap_err().status(), axum::http::StatusCode::BAD_REQUEST);
    }
}
