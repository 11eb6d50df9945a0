//! Schemas: JSON Schema documents that stashes and streams bind to.
//!
//! A schema has a stable `schema_id` and numbered versions. Posting a name
//! the caller already owns adds a version under the same id. A binding pins
//! the version current at bind time, so a new version never turns stored
//! documents invalid behind their owners' backs.
//!
//! Definitions are checked against their meta-schema on upload (drafts 7 and
//! 2020-12; 2020-12 when `$schema` is absent) and compiled once per version,
//! then cached: versions never change, so the cache is safe across processes.
//! No `$ref` is ever fetched from the network or the file system.

mod api;
mod store;

pub use api::routes;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::agent::{Caller, SYSTEM};
use crate::db::Db;
use crate::error::{Error, Json, Path, Query, Result, Violation};
use crate::{clock, name};

pub use store::SchemaRow;

pub const AGENT_CONTRACT: &str = "agent-contract";
pub const AGENT_CONTRACT_ID: &str = "sch_agent-contract";
const AGENT_CONTRACT_DEFINITION: &str = include_str!("agent-contract.json");

const DRAFT7: &str = "http://json-schema.org/draft-07/schema";
const DRAFT2020: &str = "https://json-schema.org/draft/2020-12/schema";
/// Details listed in one 422; more than this is noise.
const MAX_DETAILS: usize = 50;

/// Documents with more JSON values than this are validated on the blocking
/// pool, so that a large one never holds up an async worker.
const INLINE_VALUES: usize = 2_000;

/// The longest a validation may take before the write is refused.
const VALIDATION_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

/// What a schema may be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Stash,
    Stream,
    Both,
}

impl Target {
    fn allows(self, want: Target) -> bool {
        self == Target::Both || self == want
    }
}

/// A pinned binding, as stashes and streams store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub schema_id: String,
    pub version: i64,
    pub name: String,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateSchema {
    name: String,
    #[serde(default)]
    description: String,
    definition: Value,
    #[serde(default = "default_visibility")]
    visibility: Visibility,
    #[serde(default = "default_target")]
    target_type: Target,
}

fn default_visibility() -> Visibility {
    Visibility::Private
}

fn default_target() -> Target {
    Target::Both
}

#[derive(Serialize, ToSchema)]
pub struct Created {
    schema_id: String,
    name: String,
    version: i64,
}

#[derive(Serialize, ToSchema)]
pub struct SchemaSummary {
    schema_id: String,
    name: String,
    description: String,
    visibility: Visibility,
    target_type: Target,
    version: i64,
    owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    definition: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct SchemaList {
    schemas: Vec<SchemaSummary>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    /// Words that must all appear in the name or description.
    q: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
pub struct ShowParams {
    /// A version other than the latest.
    version: Option<i64>,
}

impl SchemaRow {
    fn summary(self, definition: Option<Value>) -> SchemaSummary {
        SchemaSummary {
            schema_id: self.schema_id,
            name: self.name,
            description: self.description,
            visibility: self.visibility,
            target_type: self.target_type,
            version: self.latest_version,
            owner: self.owner,
            definition,
        }
    }
}

/// Finds a schema the caller may see: by `sch_` id, or by name (the
/// caller's own first, then a public one).
pub async fn resolve(db: &Db, caller: &Caller, id_or_name: &str) -> Result<SchemaRow> {
    let row = if id_or_name.starts_with("sch_") {
        store::by_id(db, id_or_name).await?
    } else {
        name::check("schema", id_or_name)?;
        store::by_name(db, &caller.name, id_or_name).await?
    };
    row.filter(|r| r.visibility == Visibility::Public || r.owner == caller.name || caller.admin).ok_or_else(|| {
        Error::not_found(format!("schema {id_or_name:?} (list the ones you can use with GET /schemas)"))
            .with_code("unknown_schema")
    })
}

/// Resolves a schema for binding to a stash or stream, pinning its latest version.
pub async fn bind(db: &Db, caller: &Caller, id_or_name: &str, target: Target) -> Result<Binding> {
    let row = resolve(db, caller, id_or_name).await.map_err(|e| {
        // At bind time an unknown schema is bad input, not a missing resource.
        Error::validation(e.message().to_string(), vec![]).with_code("unknown_schema")
    })?;
    if !row.target_type.allows(target) {
        return Err(Error::validation(
            format!("schema {:?} is for {:?} resources only", row.name, row.target_type),
            vec![],
        ));
    }
    Ok(Binding { schema_id: row.schema_id, version: row.latest_version, name: row.name })
}

/// The schema ids that a public schema name (or an id) stands for, for
/// discovery. Unknown names give an empty list.
pub async fn public_ids(db: &Db, id_or_name: &str) -> Result<Vec<String>> {
    store::public_ids(db, id_or_name).await
}

/// Checks the definition against its draft's meta-schema and compiles it.
pub fn meta_validate(definition: &Value) -> Result<()> {
    let draft = definition.get("$schema").and_then(Value::as_str).map(|s| s.trim_end_matches('#'));
    if let Some(uri) = draft
        && uri != DRAFT7
        && uri != DRAFT2020
    {
        return Err(Error::validation(
            format!("unsupported $schema {uri:?}: use {DRAFT7}# or {DRAFT2020}, or leave it out for 2020-12"),
            vec![Violation { path: "/$schema".into(), message: "unsupported draft".into() }],
        ));
    }
    if !definition.is_object() && !definition.is_boolean() {
        return Err(Error::validation(
            "a JSON Schema definition must be an object or a boolean",
            vec![Violation { path: "".into(), message: "not an object".into() }],
        ));
    }
    let with_default = if draft.is_none() && definition.is_object() {
        let mut d = definition.clone();
        d["$schema"] = Value::String(DRAFT2020.into());
        d
    } else {
        definition.clone()
    };
    if let Err(e) = jsonschema::meta::validate(&with_default) {
        return Err(Error::validation(
            format!("the definition is not a valid JSON Schema: {e}"),
            vec![Violation { path: e.instance_path().to_string(), message: e.to_string() }],
        ));
    }
    compile(&with_default).map(|_| ())
}

/// Patterns run on the `regex` engine, which matches in linear time: a
/// pattern that needs backtracking (backreferences, lookaround) is refused
/// here, so no document can make validation take exponential time.
fn compile(definition: &Value) -> Result<jsonschema::Validator> {
    jsonschema::options().with_pattern_options(jsonschema::PatternOptions::regex()).build(definition).map_err(|e| {
        Error::validation(
            format!(
                "the definition does not compile: {e} (patterns may not use backreferences or lookaround, \
                 which need a backtracking engine)"
            ),
            vec![Violation { path: e.instance_path().to_string(), message: e.to_string() }],
        )
    })
}

/// Whether `doc` holds more than `n` JSON values, counted until it does.
fn larger_than(doc: &Value, n: usize) -> bool {
    let mut stack = vec![doc];
    let mut seen = 0;
    while let Some(v) = stack.pop() {
        seen += 1;
        if seen > n {
            return true;
        }
        match v {
            Value::Array(a) => stack.extend(a),
            Value::Object(o) => stack.extend(o.values()),
            _ => {}
        }
    }
    false
}

fn violations(validator: &jsonschema::Validator, doc: &Value) -> Vec<Violation> {
    validator
        .iter_errors(doc)
        .take(MAX_DETAILS)
        .map(|e| Violation { path: e.instance_path().to_string(), message: e.to_string() })
        .collect()
}

/// Compiled validators by (schema id, version).
pub struct Validators {
    compiled: RwLock<HashMap<(String, i64), Arc<jsonschema::Validator>>>,
    /// Large validations are CPU-bound: at most one fewer than the cores
    /// run at once, so the async workers (and `/healthz`) keep a core.
    heavy: Arc<tokio::sync::Semaphore>,
}

impl Default for Validators {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            compiled: RwLock::default(),
            heavy: Arc::new(tokio::sync::Semaphore::new(cores.saturating_sub(1).max(1))),
        }
    }
}

impl Validators {
    /// Validates `doc` against the pinned binding: 422 listing each violation
    /// with its JSON pointer.
    pub async fn check(&self, db: &Db, binding: &Binding, doc: &Value) -> Result<()> {
        let validator = self.get(db, &binding.schema_id, binding.version).await?;
        let violations = if larger_than(doc, INLINE_VALUES) {
            let doc = doc.clone();
            let heavy = self.heavy.clone();
            // The wait for a turn counts against the budget. The permit goes
            // with the job: one abandoned at the budget still holds its turn
            // until it ends.
            let job = async move {
                let turn = heavy.acquire_owned().await.map_err(|e| e.to_string())?;
                tokio::task::spawn_blocking(move || {
                    let _turn = turn;
                    violations(&validator, &doc)
                })
                .await
                .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(VALIDATION_BUDGET, job).await {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => return Err(Error::internal(format!("validation failed to run: {e}"))),
                Err(_) => {
                    return Err(Error::too_large(format!(
                        "validating this document against schema {:?} took over {} s; send a smaller one",
                        binding.name,
                        VALIDATION_BUDGET.as_secs()
                    )));
                }
            }
        } else {
            violations(&validator, doc)
        };
        if violations.is_empty() {
            return Ok(());
        }
        Err(Error::validation(
            format!(
                "the document does not match schema {:?} (version {}): {} violation(s), first at {:?}: {}",
                binding.name,
                binding.version,
                violations.len(),
                violations[0].path,
                violations[0].message
            ),
            violations,
        )
        .with_code("schema_violation"))
    }

    async fn get(&self, db: &Db, id: &str, version: i64) -> Result<Arc<jsonschema::Validator>> {
        let key = (id.to_string(), version);
        if let Some(v) = self.compiled.read().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(v);
        }
        let Some(text) = store::definition(db, id, version).await? else {
            return Err(Error::internal(format!("schema {id} version {version} is bound but missing")));
        };
        let definition: Value = serde_json::from_str(&text).map_err(|e| Error::internal(e.to_string()))?;
        let validator = Arc::new(compile(&definition)?);
        if let Ok(mut m) = self.compiled.write() {
            m.insert(key, validator.clone());
        }
        Ok(validator)
    }

    fn forget(&self, id: &str) {
        if let Ok(mut m) = self.compiled.write() {
            m.retain(|(k, _), _| k != id);
        }
    }
}

/// Installs the built-in public `agent-contract` schema, or a new version of
/// it when the shipped definition changed.
pub async fn install_builtin(db: &Db) -> anyhow::Result<()> {
    let definition: Value = serde_json::from_str(AGENT_CONTRACT_DEFINITION)?;
    let text = serde_json::to_string(&definition)?;
    let current = match store::by_id(db, AGENT_CONTRACT_ID).await? {
        Some(row) => store::definition(db, AGENT_CONTRACT_ID, row.latest_version).await?,
        None => None,
    };
    if current.as_deref() != Some(text.as_str()) {
        store::install(
            db,
            AGENT_CONTRACT_ID,
            SYSTEM,
            AGENT_CONTRACT,
            "Multi-agent contract: objective, success criteria, subtasks, budget and deadline",
            &text,
            clock::now_ms(),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_that_need_backtracking_are_refused() {
        let backref = serde_json::json!({"anyOf": [{"type": "string", "pattern": "^(a|a)*(\\1)b$"}]});
        let e = compile(&backref).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message().contains("backreferences"), "{}", e.message());
        let lookahead = serde_json::json!({"type": "string", "pattern": "^(?=a)a$"});
        assert!(compile(&lookahead).is_err());
        let linear = serde_json::json!({"type": "string", "pattern": "^(a|aa)*b$"});
        let v = compile(&linear).unwrap();
        assert!(!v.is_valid(&Value::String("a".repeat(40_000))), "linear time, whatever the input");
    }

    #[test]
    fn sizes_are_counted_only_as_far_as_needed() {
        let small = serde_json::json!({"a": [1, 2, {"b": 3}]});
        assert!(!larger_than(&small, 6) && larger_than(&small, 5), "six values");
        let wide = Value::Array(vec![Value::Null; 1_000_000]);
        assert!(larger_than(&wide, INLINE_VALUES));
    }
    use serde_json::json;

    #[test]
    fn the_builtin_contract_schema_is_valid_and_lenient() {
        let def: Value = serde_json::from_str(AGENT_CONTRACT_DEFINITION).unwrap();
        meta_validate(&def).unwrap();
        let v = compile(&def).unwrap();
        assert!(v.is_valid(&json!({"objective": "x"})));
        assert!(v.is_valid(&json!({"objective": "x", "subtasks": [
            {"id": "a", "description": "d", "status": "open", "budget_usdc": 10.0, "success_criteria": ["s"]}
        ]})));
        assert!(!v.is_valid(&json!({"subtasks": []})));
        assert!(
            !v.is_valid(&json!({"objective": "x", "subtasks": [{"id": "a", "description": "d", "status": "done"}]}))
        );
    }

    #[test]
    fn meta_validation_rejects_broken_and_foreign_drafts() {
        meta_validate(&json!({"type": "object"})).unwrap();
        meta_validate(&json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"})).unwrap();
        assert!(meta_validate(&json!({"type": "not-a-type"})).is_err());
        assert!(meta_validate(&json!({"type": "string", "pattern": "(unclosed"})).is_err());
        assert!(meta_validate(&json!({"$schema": "http://json-schema.org/draft-04/schema#"})).is_err());
        assert!(meta_validate(&json!(42)).is_err());
    }

    #[tokio::test]
    async fn versions_share_an_id_and_bindings_pin_one() {
        for db in crate::testing::databases().await {
            install_builtin(&db).await.unwrap();
            install_builtin(&db).await.unwrap();
            let row = store::by_id(&db, AGENT_CONTRACT_ID).await.unwrap().unwrap();
            assert_eq!(row.latest_version, 1, "reinstalling the same definition adds no version");

            let alice = Caller { name: "alice".into(), admin: false };
            let (id1, v1) =
                store::upsert(&db, "alice", "s", "", Visibility::Private, Target::Stash, r#"{"type":"object"}"#)
                    .await
                    .unwrap();
            let (id2, v2) =
                store::upsert(&db, "alice", "s", "", Visibility::Private, Target::Stash, r#"{"type":"array"}"#)
                    .await
                    .unwrap();
            assert_eq!((id1.as_str(), v1, v2), (id2.as_str(), 1, 2));
            let binding = bind(&db, &alice, "s", Target::Stash).await.unwrap();
            assert_eq!(binding.version, 2);
            assert!(bind(&db, &alice, "s", Target::Stream).await.is_err());
            let bob = Caller { name: "bob".into(), admin: false };
            assert_eq!(resolve(&db, &bob, "s").await.unwrap_err().status(), StatusCode::NOT_FOUND);
            assert_eq!(resolve(&db, &bob, AGENT_CONTRACT).await.unwrap().schema_id, AGENT_CONTRACT_ID);

            let validators = Validators::default();
            let err = validators.check(&db, &binding, &json!({"a": 1})).await.unwrap_err();
            assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
            validators.check(&db, &binding, &json!([1])).await.unwrap();
        }
    }
}
