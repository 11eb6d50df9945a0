//! Stash behaviour over HTTP: stores, names, versions, patches, limits,
//! expiry and schema bindings, on each backend.

use std::time::Duration;

use crate::support::{Backend, Server};
use reqwest::Method;
use serde_json::json;

on_both_backends!(
    versions_etags_and_if_match,
    append_and_replace,
    json_patch_is_atomic_and_revalidated,
    names_privacy_and_ownership,
    ephemeral_expiry_and_renewal,
    size_limits,
    listing_own_stashes,
    reads_see_every_acknowledged_write,
);

async fn versions_etags_and_if_match(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let a = server.register("writer").await;
    let w = server.as_agent(&a);
    let created = w.put_text("/stash/notes", "one").await.expect(201);
    assert_eq!(created.header("etag"), Some("\"1\""));
    let body = created.json();
    assert_eq!((body["version"].as_i64(), body["size"].as_i64()), (Some(1), Some(3)));
    assert!(body["expires_at"].is_string(), "ephemeral stashes expire");

    let replaced = w.put_text("/stash/notes", "two!").await.expect(200).json();
    assert_eq!(replaced["version"], 2);

    // A stale If-Match changes nothing.
    let stale = w.send(w.req(Method::PUT, "/stash/notes").header("If-Match", "\"1\"").body("three")).await.expect(412);
    assert_eq!(stale.code(), "precondition_failed");
    assert_eq!(w.get("/stash/notes").await.expect(200).text, "two!");
    w.send(w.req(Method::PUT, "/stash/notes").header("If-Match", "\"2\"").body("three")).await.expect(200);
    w.send(w.req(Method::PATCH, "/stash/notes/append").header("If-Match", "\"2\"").body("x")).await.expect(412);
    w.send(w.req(Method::DELETE, "/stash/notes").header("If-Match", "\"9\"")).await.expect(412);
    // If-Match on a stash that does not exist fails too.
    w.send(w.req(Method::PUT, "/stash/ghost").header("If-Match", "\"1\"").body("x")).await.expect(412);
    w.send(w.req(Method::DELETE, "/stash/notes").header("If-Match", "\"3\"")).await.expect(204);
    w.get("/stash/notes").await.expect(404);

    // The stores are separate namespaces.
    w.put_text("/stash/both?persistent=true", "P").await.expect(201);
    w.put_text("/stash/both", "E").await.expect(201);
    let p = w.get("/stash/both?persistent=true").await.expect(200);
    assert_eq!((p.text.as_str(), p.header("x-stash-persistent")), ("P", Some("true")));
    assert!(p.header("x-stash-expires-at").is_none());
    assert_eq!(w.get("/stash/both").await.expect(200).text, "E");

    // Bytes and content type come back as sent.
    let bytes: Vec<u8> = (0u8..=255).collect();
    w.send(w.req(Method::PUT, "/stash/blob").header("Content-Type", "application/octet-stream").body(bytes.clone()))
        .await
        .expect(201);
    let r = w.req(Method::GET, "/stash/blob").send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
}

async fn append_and_replace(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let a = server.register("writer").await;
    let w = server.as_agent(&a);
    w.put_text("/stash/log", "a-b-").await.expect(201);
    let appended = w.patch_text("/stash/log/append", "a-b").await.expect(200).json();
    assert_eq!((appended["version"].as_i64(), appended["size"].as_i64()), (Some(2), Some(7)));
    let one = w.patch("/stash/log/replace", json!({"old": "a", "new": "X"})).await.expect(200).json();
    assert_eq!(one, json!({"replacements": 1, "version": 3}));
    assert_eq!(w.get("/stash/log").await.text, "X-b-a-b");
    let all = w.patch("/stash/log/replace?all=true", json!({"old": "b", "new": "YY"})).await.expect(200).json();
    assert_eq!(all, json!({"replacements": 2, "version": 4}));
    let none = w.patch("/stash/log/replace", json!({"old": "zzz", "new": "q"})).await.expect(200).json();
    assert_eq!(none, json!({"replacements": 0, "version": 4}), "no match, no new version");
    assert_eq!(w.get("/stash/log").await.text, "X-YY-a-YY");
    w.patch("/stash/log/replace", json!({"old": "", "new": "q"})).await.expect(400);
    w.patch("/stash/log/replace", json!({"old": 1})).await.expect(400);
    w.patch_text("/stash/missing/append", "x").await.expect(404);

    // Appending to a schema-bound stash must still validate.
    w.put_text("/stash/doc?persistent=true&schema=agent-contract", r#"{"objective":"o"}"#).await.expect(201);
    let broken = w.patch_text("/stash/doc/append?persistent=true", ",").await.expect(422);
    assert_eq!(broken.code(), "validation_failed");
    assert_eq!(w.get("/stash/doc?persistent=true").await.text, r#"{"objective":"o"}"#);
}

async fn json_patch_is_atomic_and_revalidated(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let a = server.register("creator").await;
    let w = server.as_agent(&a);
    let doc = json!({"objective": "o", "subtasks": [
        {"id": "a", "description": "d", "status": "open"},
        {"id": "b", "description": "d", "status": "open"}
    ]});
    w.put_text("/stash/c?persistent=true&schema=agent-contract", &doc.to_string()).await.expect(201);

    // The second item breaks the schema: neither is applied.
    let bad = w
        .patch(
            "/stash/c/json?persistent=true",
            json!({"update_items": [
                {"path": "subtasks", "match": {"id": "a"}, "set": {"status": "claimed"}},
                {"path": "subtasks", "match": {"id": "b"}, "set": {"status": "finished"}}
            ]}),
        )
        .await
        .expect(422)
        .json();
    assert_eq!(bad["error"]["details"][0]["path"], "/subtasks/1/status");
    let unchanged = w.get("/stash/c?persistent=true").await.expect(200);
    assert_eq!(unchanged.header("x-stash-version"), Some("1"));
    assert_eq!(unchanged.json(), doc);

    let path_err = w
        .patch("/stash/c/json?persistent=true", json!({"update_items": [{"path": "objective", "set": {}}]}))
        .await
        .expect(422)
        .json();
    assert_eq!(path_err["error"]["details"][0]["path"], "/objective");
    w.patch("/stash/c/json?persistent=true", json!({"update_items": []})).await.expect(400);
    w.patch("/stash/c/json?persistent=true", json!({"items": []})).await.expect(400);

    // Not JSON: 422.
    w.put_text("/stash/plain", "just text").await.expect(201);
    w.patch("/stash/plain/json", json!({"update_items": [{"path": "x", "set": {}}]})).await.expect(422);

    // Concurrent patches to different elements all land.
    let items: Vec<_> = (0..10).map(|i| json!({"id": i})).collect();
    w.put_text("/stash/counter", &json!({ "items": items }).to_string()).await.expect(201);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let key = a.key.clone();
        let http = server.http.clone();
        let url = server.url.clone();
        tasks.push(tokio::spawn(async move {
            http.patch(format!("{url}/stash/counter/json"))
                .header("X-API-KEY", key)
                .json(&json!({"update_items": [{"path": "items", "match": {"id": i}, "set": {"done": true}}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let after = w.get("/stash/counter").await.expect(200);
    assert!(after.json()["items"].as_array().unwrap().iter().all(|i| i["done"] == true), "{}", after.text);
}

async fn names_privacy_and_ownership(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (a, b) = (server.as_agent(&alice), server.as_agent(&bob));

    // Private names are per owner, and invisible to others (404, not 403).
    a.put_text("/stash/draft", "alice's").await.expect(201);
    b.get("/stash/draft").await.expect(404);
    b.put_text("/stash/draft", "bob's").await.expect(201);
    assert_eq!(a.get("/stash/draft").await.text, "alice's");
    assert_eq!(b.get("/stash/draft").await.text, "bob's");

    // A shared stash holds its name across agents.
    a.put_text("/stash/board?shared=true", "shared board").await.expect(201);
    assert_eq!(b.get("/stash/board").await.expect(200).text, "shared board");
    assert_eq!(b.put_text("/stash/board", "mine").await.expect(409).code(), "name_taken");
    assert_eq!(b.patch_text("/stash/board/append", "x").await.expect(403).code(), "forbidden");
    b.delete("/stash/board").await.expect(403);
    assert_eq!(a.get("/stash/board").await.text, "shared board");
    // Bob cannot share a name Alice's shared stash holds, even from his own private stash.
    a.put_text("/stash/draft?discoverable=true", "alice's, public").await.expect(200);
    assert_eq!(b.put_text("/stash/draft?shared=true", "x").await.expect(409).code(), "name_taken");
    assert_eq!(b.get("/stash/draft").await.text, "bob's", "own private stash first");

    // The admin may write anyone's stash.
    let admin = server.admin();
    server.as_agent(&admin).patch_text("/stash/board/append", "!").await.expect(200);
    assert_eq!(b.get("/stash/board").await.text, "shared board!");
    a.delete("/stash/board").await.expect(204);
    b.put_text("/stash/board", "now bob's").await.expect(201);
}

async fn ephemeral_expiry_and_renewal(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let agent = server.register("temp").await;
    let w = server.as_agent(&agent);
    w.put_text("/stash/short?ttl=1&shared=true", "soon gone").await.expect(201);
    w.put_text("/stash/renewed?ttl=5", "kept alive").await.expect(201);
    w.get("/stash/short").await.expect(200);
    // Reads renew: read "renewed" every second until well past its first
    // TTL. (Each read has 4 s to be answered before the stash could lapse.)
    let since = std::time::Instant::now();
    while since.elapsed() < Duration::from_secs(7) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.get("/stash/renewed").await.expect(200);
    }
    // "short" has not been read for over 6 s: it is gone, and its name is free.
    w.get("/stash/short").await.expect(404);
    w.patch_text("/stash/short/append", "x").await.expect(404);
    let other = server.register("other").await;
    server.as_agent(&other).put_text("/stash/short?shared=true", "reused").await.expect(201);
    w.put_text("/stash/bad-ttl?ttl=0", "x").await.expect(422);
    w.put_text("/stash/bad-ttl?persistent=true&ttl=5", "x").await.expect(400);
    w.put_text("/stash/bad-ttl?ttl=soon", "x").await.expect(400);
}

async fn size_limits(backend: Backend) {
    let Some(server) =
        Server::start_with(backend, &["--max-ephemeral-bytes", "1000", "--max-persistent-bytes", "5000"]).await
    else {
        return;
    };
    let agent = server.register("big").await;
    let w = server.as_agent(&agent);
    w.put_text("/stash/e", &"x".repeat(1000)).await.expect(201);
    assert_eq!(w.put_text("/stash/e", &"x".repeat(1001)).await.expect(413).code(), "payload_too_large");
    assert_eq!(w.patch_text("/stash/e/append", "y").await.expect(413).code(), "payload_too_large");
    assert_eq!(w.get("/stash/e").await.text.len(), 1000, "nothing stored");
    w.put_text("/stash/p?persistent=true", &"x".repeat(5000)).await.expect(201);
    w.put_text("/stash/p?persistent=true", &"x".repeat(5001)).await.expect(413);
    // Bodies far past every limit are refused before they are read whole.
    w.put_text("/stash/huge?persistent=true", &"x".repeat(2 << 20)).await.expect(413);
}

async fn listing_own_stashes(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let agent = server.register("lister").await;
    let other = server.register("other").await;
    let w = server.as_agent(&agent);
    for i in 0..5 {
        w.put_text(&format!("/stash/s{i}"), "x").await.expect(201);
    }
    w.put_text("/stash/p?persistent=true&schema=agent-contract&discoverable=true", r#"{"objective":"o"}"#)
        .await
        .expect(201);
    server.as_agent(&other).put_text("/stash/theirs", "x").await.expect(201);
    let all = w.get("/stashes").await.expect(200).json();
    let names: Vec<&str> = all["stashes"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4", "p"]);
    let p = &all["stashes"][5];
    assert_eq!((p["persistent"].as_bool(), p["discoverable"].as_bool()), (Some(true), Some(true)));
    assert_eq!(p["schema_id"], "sch_agent-contract");
    let page = w.get("/stashes?persistent=false&limit=2&offset=1").await.expect(200).json();
    let names: Vec<&str> = page["stashes"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["s1", "s2"]);
    w.get("/stashes?limit=1001").await.expect(400);
    w.get("/stashes?limit=0").await.expect(400);
}

/// Hot reads may be served from memory; they must still see every write
/// that was acknowledged before the read began.
async fn reads_see_every_acknowledged_write(backend: Backend) {
    let Some(server) = Server::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (a, b) = (server.as_agent(&alice), server.as_agent(&bob));
    a.put_text("/stash/board?shared=true", "v0").await.expect(201);
    for i in 1..=20 {
        assert_eq!(b.get("/stash/board").await.expect(200).text, format!("v{}", i - 1));
        a.put_text("/stash/board", &format!("v{i}")).await.expect(200);
        assert_eq!(b.get("/stash/board").await.text, format!("v{i}"), "bob sees alice's write {i}");
        assert_eq!(a.get("/stash/board").await.text, format!("v{i}"));
    }
    a.patch_text("/stash/board/append", "+").await.expect(200);
    assert_eq!(b.get("/stash/board").await.text, "v20+");
    // A known-absent name becomes present the moment it is written.
    b.get("/stash/later").await.expect(404);
    b.put_text("/stash/later", "here").await.expect(201);
    assert_eq!(b.get("/stash/later").await.expect(200).text, "here");
    // Bob's own stash shadows the shared one as soon as it exists...
    a.put_text("/stash/shadow?discoverable=true", "alice's").await.expect(201);
    assert_eq!(b.get("/stash/shadow").await.text, "alice's");
    b.put_text("/stash/shadow", "bob's").await.expect(409);
    a.delete("/stash/shadow").await.expect(204);
    b.get("/stash/shadow").await.expect(404);
    b.put_text("/stash/shadow", "bob's").await.expect(201);
    assert_eq!(b.get("/stash/shadow").await.text, "bob's");

    // Concurrent readers never see a version older than one already acknowledged.
    let (http, url) = (server.http.clone(), server.url.clone());
    let writer = {
        let (http, url, key) = (http.clone(), url.clone(), alice.key.clone());
        tokio::spawn(async move {
            for i in 0..200 {
                let r = http
                    .put(format!("{url}/stash/counter?shared=true"))
                    .header("X-API-KEY", &key)
                    .body(i.to_string())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
        })
    };
    let mut last = -1i64;
    while !writer.is_finished() {
        let r = http.get(format!("{url}/stash/counter")).header("X-API-KEY", &bob.key).send().await.unwrap();
        if r.status() == 200 {
            let v: i64 = r.text().await.unwrap().parse().unwrap();
            assert!(v >= last, "read went back in time: {v} after {last}");
            last = v;
        }
    }
    writer.await.unwrap();
    assert_eq!(b.get("/stash/counter").await.text, "199");
}
