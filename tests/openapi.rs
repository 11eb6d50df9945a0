//! The served OpenAPI document: valid, as `openapi-spec-validator` (pinned
//! in `.ci/openapi-requirements.txt`) checks it, and true about what each
//! route takes and answers.

use crate::support::{self, Backend, Server, guests};
use reqwest::Method;

/// A concrete path for a templated one.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|part| match part {
            "{id}" => "1",
            p if p.starts_with('{') => "x",
            p => p,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_and_true() {
    let Some(server) = Server::start(Backend::Sqlite).await else { return };
    let served = server.anonymous().get("/openapi.json").await.expect(200);

    let validator = guests::toolchains_dir().join("python/bin/openapi-spec-validator");
    if validator.is_file() {
        let scratch = support::scratch();
        let file = scratch.path().join("openapi.json");
        std::fs::write(&file, &served.text).unwrap();
        let out = std::process::Command::new(&validator).arg(&file).output().unwrap();
        let (stdout, stderr) = support::text(&out);
        assert!(out.status.success() && stdout.trim_end().ends_with(": OK"), "{stdout}{stderr}");
    } else {
        support::skip(&format!("{} is missing: run .ci/toolchains", validator.display()));
    }

    let doc = served.json();
    let mut ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            for (status, response) in op["responses"].as_object().unwrap() {
                assert!(response["description"].as_str().is_some_and(|d| !d.is_empty()), "{method} {path} {status}");
            }
            // Which routes need a key is what the host does: an anonymous
            // request is 401 exactly where the document asks for a key.
            let security = op.get("security").unwrap_or(&doc["security"]);
            // `[]` needs nothing; `{}` among the choices makes a key optional.
            let choices = security.as_array().unwrap();
            let open = choices.is_empty() || choices.iter().any(|s| s.as_object().is_some_and(|o| o.is_empty()));
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = server.request(method.clone(), &concrete(path), None);
            if op.pointer("/requestBody/content/application~1json").is_some() {
                request = request.json(&serde_json::json!({}));
            }
            let status = request.send().await.unwrap().status().as_u16();
            if open {
                assert_ne!(status, 401, "{method} {path} is documented as open");
            } else {
                assert_eq!(status, 401, "{method} {path} is documented as needing a key");
                assert!(op["responses"].get("401").is_some(), "{method} {path} does not document its 401");
            }
        }
    }
    for public in ["/discover", "/healthz", "/metrics"] {
        assert_eq!(doc["paths"][public]["get"]["security"], serde_json::json!([]), "{public}");
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        (schemes["api_key"]["name"].as_str(), schemes["bearer"]["scheme"].as_str()),
        (Some("X-API-KEY"), Some("bearer"))
    );
    // The component upload is bytes, and an entry's data is any JSON.
    let upload = &doc["paths"]["/policies/{name}"]["put"]["requestBody"]["content"]["application/wasm"]["schema"];
    assert_eq!(upload, &serde_json::json!({"type": "string", "format": "binary"}));
    let data = &doc["components"]["schemas"]["AppendRequest"]["properties"]["data"];
    assert!(data.get("type").is_none(), "data is any JSON, not {data}");
    let s = served.text.as_str();
    let missing: Vec<&str> = s
        .match_indices("\"#/components/schemas/")
        .filter_map(|(i, _)| s[i + 22..].split('"').next())
        .filter(|name| doc["components"]["schemas"].get(*name).is_none())
        .collect();
    assert!(missing.is_empty(), "references to missing schemas: {missing:?}");
}
