//! `cairn policy ...`: `test` runs offline; `add`, `list` and `eval` talk
//! to a running host over HTTP (plain `http://`, as agents on the same
//! network do), with an admin key.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::Hook;

#[derive(Subcommand)]
pub enum Command {
    /// Upload a component as a policy (or its next version) with its
    /// settings, in one request: stored together, or not at all. A new
    /// policy needs `--scope`; a new version keeps the settings not given.
    Add {
        name: String,
        /// The component (.wasm).
        file: PathBuf,
        #[arg(long, value_enum)]
        hook: Hook,
        /// A JSON file with settings (the body of `PUT
        /// /policies/{name}/settings`: an agent's `run_as` and `subscribe`,
        /// say); the flags below override its fields.
        #[arg(long)]
        settings: Option<PathBuf>,
        /// A JSON file with the policy's config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A JSON Schema file the config must fit (`cairn policy new`
        /// writes config.schema.json), checked by the host on every change.
        #[arg(long)]
        config_schema: Option<PathBuf>,
        /// `global`, `stash:NAME` or `team:NAME`; required for a new policy.
        #[arg(long)]
        scope: Option<String>,
        /// Decide instead of the hook's bundled policy in this scope (by
        /// default both decide, and any deny wins).
        #[arg(long)]
        replaces_bundled: Option<bool>,
        /// A JSON pointer into the input to mask in the decision log
        /// (repeat for more); replaces the list in force.
        #[arg(long)]
        mask: Vec<String>,
        #[command(flatten)]
        server: Server,
    },
    /// List the host's policies.
    List {
        #[command(flatten)]
        server: Server,
    },
    /// Evaluate a policy on an input (a dry run), and print the decision.
    Eval {
        name: String,
        /// A JSON file with the hook's input.
        #[arg(long)]
        input: PathBuf,
        #[command(flatten)]
        server: Server,
    },
    /// Write out a bundled policy's component (claim-approval,
    /// handoff-validation, algedonic-escalation), to read, fork or upload.
    Export {
        name: String,
        /// Where to write it; NAME.wasm (NAME.schema.json with --schema) by default.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Write its config's JSON Schema instead.
        #[arg(long)]
        schema: bool,
    },
    /// Start a policy project from a template: its source, the WIT it
    /// builds against, a case file and a README with the commands.
    New {
        /// The policy's name: lowercase letters, digits and hyphens.
        name: String,
        #[arg(long, value_enum)]
        lang: super::scaffold::Lang,
        #[arg(long, value_enum)]
        hook: Hook,
        /// Where to write it; ./NAME by default.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run a policy against a case file, offline; exits 1 if any case fails.
    Test {
        /// The component (.wasm).
        file: PathBuf,
        #[arg(long, value_enum)]
        hook: Hook,
        /// The case file (JSON): {"cases": [{"name", "input", "expect", ...}]}.
        #[arg(long)]
        cases: PathBuf,
        /// Count fuel, as a host started with fuel on would.
        #[arg(long)]
        fuel: bool,
        /// Where compiled components are cached, as `cairn serve
        /// --policy-cache` does, so a second run does not compile again.
        #[arg(long = "policy-cache", env = "CAIRN_POLICY_CACHE")]
        policy_cache: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct Server {
    /// The host to talk to.
    #[arg(long, env = "CAIRN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin key.
    #[arg(long, env = "CAIRN_ADMIN_KEY", hide_env_values = true)]
    key: Option<String>,
}

/// Runs a command; `Ok(false)` means "ran, but the answer is a failure".
pub async fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        // On a blocking thread, as the server runs decisions: WASI's
        // blocking writes (a guest's print) wait on the runtime from there.
        Command::Test { file, hook, cases, fuel, policy_cache } => {
            let cache = policy_cache.unwrap_or_else(crate::config::shared_policy_cache_dir);
            tokio::task::spawn_blocking(move || test(&file, hook, &cases, fuel, cache))
                .await
                .map_err(|e| anyhow::anyhow!("the test run stopped: {e}"))?
        }
        Command::Export { name, out, schema } => export(&name, out, schema),
        Command::New { name, lang, hook, dir } => {
            let dir = super::scaffold::create(&name, lang, hook, dir)?;
            print!("{}", super::scaffold::next_steps(&dir, &name, lang, hook));
            Ok(true)
        }
        Command::Add { name, file, hook, settings, config, config_schema, scope, replaces_bundled, mask, server } => {
            // Everything local is checked before anything is sent.
            let wasm = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let from_file = settings.as_deref().map(read_json).transpose()?;
            if from_file.as_ref().is_some_and(|s| !s.is_object()) {
                bail!("--settings takes a JSON object, as PUT /policies/{{name}}/settings does");
            }
            let config = config.as_deref().map(read_json).transpose()?;
            let config_schema = config_schema.as_deref().map(read_json).transpose()?;
            let scope = scope.as_deref().map(parse_scope).transpose()?;
            let current = server.current(&name).await?;
            let scoped = scope.is_some() || from_file.as_ref().is_some_and(|s| s.get("scope").is_some());
            // An agent's reach is its subscriptions, not a scope.
            if current.is_none() && !scoped && hook != Hook::Agent {
                bail!(
                    "{name} is a new policy: say where it decides with --scope global, --scope team:NAME or --scope stash:NAME"
                );
            }
            // Changes apply to the settings in force (a new policy: the defaults).
            let path = format!("/policies/{name}?hook={}", hook.name());
            let changes = [
                ("config", config),
                ("config_schema", config_schema),
                ("scope", scope),
                ("replaces_bundled", replaces_bundled.map(Value::Bool)),
                ("mask", (!mask.is_empty()).then(|| json!(mask))),
            ];
            let headers = if changes.iter().all(|(_, v)| v.is_none()) && from_file.is_none() {
                Vec::new()
            } else {
                let mut settings = current.map_or_else(|| json!({}), |c| c["settings"].clone());
                for (key, value) in from_file.as_ref().and_then(Value::as_object).into_iter().flatten() {
                    settings[key] = value.clone();
                }
                for (key, value) in changes {
                    if let Some(v) = value {
                        settings[key] = v;
                    }
                }
                vec![(super::registry::SETTINGS_HEADER, ascii_json(&settings))]
            };
            let policy = server.call_with("PUT", &path, "application/wasm", &headers, wasm).await?;
            println!(
                "{} version {} ({} world, sha256 {})",
                policy["name"].as_str().unwrap_or_default(),
                policy["version"],
                policy["world"].as_str().unwrap_or_default(),
                policy["sha256"].as_str().unwrap_or_default()
            );
            let settings = &policy["settings"];
            if hook == Hook::Agent {
                let streams = settings["subscribe"].as_array().map_or(0, Vec::len);
                println!(
                    "runs as {} on {streams} stream(s), config {}",
                    settings["run_as"].as_str().unwrap_or("nobody"),
                    settings["config"]
                );
            } else {
                let beside = if settings["replaces_bundled"] == true { "instead of" } else { "beside" };
                println!(
                    "scope {}, config {}; decides {beside} the bundled policy",
                    scope_label(&settings["scope"]),
                    settings["config"]
                );
            }
            Ok(true)
        }
        Command::List { server } => {
            let list = server.call("GET", "/policies", "application/json", Vec::new()).await?;
            print!("{}", list_table(list["policies"].as_array().map(Vec::as_slice).unwrap_or_default()));
            print!("\n{}", deciding_table(list["deciding"].as_array().map(Vec::as_slice).unwrap_or_default()));
            Ok(true)
        }
        Command::Eval { name, input, server } => {
            let text = std::fs::read_to_string(&input).with_context(|| format!("cannot read {}", input.display()))?;
            let input: Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", input.display()))?;
            let body = json!({ "input": input }).to_string().into_bytes();
            let decision = server.call("POST", &format!("/policies/{name}/evaluate"), "application/json", body).await?;
            println!("{}", serde_json::to_string_pretty(&decision)?);
            Ok(decision["error"].is_null())
        }
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn parse_scope(s: &str) -> anyhow::Result<Value> {
    Ok(match s.split_once(':') {
        None if s == "global" => json!("global"),
        Some(("stash", name)) => json!({ "stash": name }),
        Some(("team", name)) => json!({ "team": name }),
        _ => bail!("--scope takes global, stash:NAME or team:NAME, not {s:?}"),
    })
}

/// A scope as `--scope` spells it (and decision records do); `none` for a
/// policy bound nowhere yet.
fn scope_label(s: &Value) -> String {
    match serde_json::from_value::<Option<super::registry::Scope>>(s.clone()) {
        Ok(Some(scope)) => super::decide::scope_label(&scope).unwrap_or_else(|| "global".to_string()),
        _ => "none".to_string(),
    }
}

/// JSON with every non-ASCII character escaped, to travel in a header.
fn ascii_json(v: &Value) -> String {
    let mut out = String::new();
    for c in v.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// `cairn policy list`: one row per policy, the last error at the end of
/// the row.
fn list_table(policies: &[Value]) -> String {
    let header = ["NAME", "HOOK", "VERSION", "ENABLED", "SCOPE", "DECISIONS", "FAILURES", "LAST ERROR"];
    let mut rows = vec![header.map(str::to_string).to_vec()];
    for p in policies {
        let error = p["load_error"].as_str().or(p["stats"]["last_error"]["message"].as_str()).unwrap_or("-");
        rows.push(vec![
            p["name"].as_str().unwrap_or_default().to_string(),
            p["hook"].as_str().unwrap_or_default().to_string(),
            p["version"].to_string(),
            p["settings"]["enabled"].to_string(),
            scope_label(&p["settings"]["scope"]),
            p["stats"]["decisions"].to_string(),
            p["stats"]["failures"].to_string(),
            error.to_string(),
        ]);
    }
    aligned(rows)
}

/// Who decides in each scope, the bundled baseline first.
fn deciding_table(deciding: &[Value]) -> String {
    let mut rows = vec![["HOOK", "SCOPE", "DECIDED BY"].map(str::to_string).to_vec()];
    for d in deciding {
        let mut by: Vec<String> = d["bundled"].as_str().map(|b| format!("{b} (bundled)")).into_iter().collect();
        by.extend(d["policies"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string));
        rows.push(vec![
            d["hook"].as_str().unwrap_or_default().to_string(),
            d["scope"].as_str().unwrap_or_default().to_string(),
            by.join(", "),
        ]);
    }
    aligned(rows)
}

/// Rows as text, each column as wide as its widest cell.
fn aligned(rows: Vec<Vec<String>>) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

impl Server {
    /// One request; a non-2xx answer becomes an error carrying the API's message.
    async fn call(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        self.call_with(method, path, content_type, &[], body).await
    }

    /// The policy `name` as the host shows it, or `None` if there is none.
    async fn current(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let (status, value) = self.send("GET", &format!("/policies/{name}"), "", &[], Vec::new()).await?;
        match status.as_u16() {
            404 => Ok(None),
            _ if status.is_success() => Ok(Some(value)),
            _ => Err(Self::refusal("GET", &format!("/policies/{name}"), status, &value)),
        }
    }

    /// [`Self::call`] with extra headers.
    async fn call_with(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.send(method, path, content_type, headers, body).await?;
        if !status.is_success() {
            return Err(Self::refusal(method, path, status, &value));
        }
        Ok(value)
    }

    /// One request, and the answer's status and JSON body.
    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<(hyper::StatusCode, Value)> {
        let authority = self
            .url
            .strip_prefix("http://")
            .context("--url must be an http:// address")?
            .trim_end_matches('/')
            .to_string();
        let key = self.key.as_deref().context("an admin key is needed: pass --key or set CAIRN_ADMIN_KEY")?;
        let tcp = tokio::net::TcpStream::connect(&authority).await.with_context(|| {
            format!("cannot reach {} (is `cairn serve` running there? pass --url or set CAIRN_URL)", self.url)
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &authority)
            .header("x-api-key", key)
            .header("content-type", content_type);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let res = sender.send_request(req).await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// The API's error body as an error: the message, then each detail.
    fn refusal(method: &str, path: &str, status: hyper::StatusCode, value: &Value) -> anyhow::Error {
        let message = value["error"]["message"].as_str().unwrap_or("no message");
        // Each detail on its own line: where (a JSON pointer) and what.
        let details: String = value["error"]["details"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let at = d["path"].as_str().unwrap_or("");
                let what = d["message"].as_str().map_or_else(|| d.to_string(), str::to_string);
                if at.is_empty() { format!("\n  {what}") } else { format!("\n  at {at}: {what}") }
            })
            .collect();
        anyhow::anyhow!("{method} {path}: {status}: {message}{details}")
    }
}

/// `cairn policy test`: true when every case passed.
fn test(file: &Path, hook: Hook, cases: &Path, fuel: bool, cache: PathBuf) -> anyhow::Result<bool> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read the policy {}", file.display()))?;
    let text = std::fs::read_to_string(cases).with_context(|| format!("cannot read the cases {}", cases.display()))?;
    let case_file: super::cases::CaseFile =
        serde_json::from_str(&text).with_context(|| format!("{} is not a case file", cases.display()))?;
    if let Err(why) = case_file.check() {
        bail!("{} cannot be used: {why}", cases.display());
    }
    let runtime = super::Runtime::new(super::Options {
        fuel,
        cache_dir: Some(cache),
        prepare: super::Prepare { per_policy: 0, ..Default::default() },
        ..Default::default()
    })?;
    // An agent is tested with every interface its world offers: its writes
    // are planned and shown, never made.
    let grants = match hook {
        Hook::Agent => super::Capability::ALL.into_iter().filter(|c| hook.offers(*c)).collect(),
        _ => hook.default_grants(),
    };
    let loaded = runtime
        .load(hook, &wasm, &grants)
        .with_context(|| format!("cannot load {} as a {hook:?} policy", file.display()))?;
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let results = super::cases::run(&runtime, &loaded, &name, case_file);
    print!("{}", super::cases::report(&results));
    Ok(results.iter().all(|r| r.failure.is_none()))
}

fn export(name: &str, out: Option<PathBuf>, schema: bool) -> anyhow::Result<bool> {
    let Some(bundled) = super::bundled::by_name(name) else {
        let names: Vec<&str> = super::bundled::ALL.iter().map(|b| b.name).collect();
        bail!("no bundled policy is called {name:?}; there are: {}", names.join(", "));
    };
    let (bytes, default) = if schema {
        (bundled.schema.as_bytes(), format!("{name}.schema.json"))
    } else {
        (bundled.wasm, format!("{name}.wasm"))
    };
    let out = out.unwrap_or_else(|| PathBuf::from(default));
    std::fs::write(&out, bytes).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "wrote {} ({} bytes): the bundled {} policy for the {} hook",
        out.display(),
        bytes.len(),
        name,
        bundled.hook.name()
    );
    Ok(true)
}
