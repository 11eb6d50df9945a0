//! `cairn policy new`: a policy project from the templates in
//! `examples/policies/`, with the WIT it builds against and a case file, so
//! that it builds and passes `cairn policy test` as written.
//!
//! The templates are the examples themselves, compiled into the binary:
//! what the scaffolder writes is what CI builds and tests.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::Hook;

/// The languages a project can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

const WORLDS: &str = include_str!("../../../wit/worlds.wit");
const COORD: &str = include_str!("../../../wit/deps/coord@0.2.0/coord.wit");
const JS_PACKAGE: &str = include_str!("../../../examples/policies/js/package.json");
const JS_LOCK: &str = include_str!("../../../examples/policies/js/package-lock.json");
const JS_PROJECT: &str = "cairn-policy-examples";
/// Appended to a Rust template's manifest: a project of its own, built
/// small (about 200 KB instead of 3 MB; uploads and loads are faster).
const RUST_PROJECT: &str = "
[profile.release]
opt-level = \"s\"
lto = true
codegen-units = 1
strip = true

# Its own project, whatever folder it sits in.
[workspace]
";
/// An agent project's binding: who it acts as and what it follows.
const AGENT_SETTINGS: &str = r#"{
  "run_as": "triage-bot",
  "subscribe": [{"stream": "questions", "labels": ["question", "answer"], "from": "start"}],
  "grants": ["stash-read", "stash-write", "stream-read", "stream-write", "task-read", "contract-read", "log"],
  "max_attempts": 5,
  "on_dead_letter": "continue"
}
"#;
const PY_REQUIREMENTS: &str = include_str!("../../../examples/policies/python/requirements.txt");

/// One example per hook: its name in `examples/policies/`, its source in
/// each language, its Rust manifest, its case file and a starting config.
struct Template {
    name: &'static str,
    rust: &'static str,
    cargo: &'static str,
    python: &'static str,
    js: &'static str,
    cases: &'static str,
    config: &'static str,
    /// The config's JSON Schema, uploaded with the policy.
    config_schema: &'static str,
}

macro_rules! template {
    ($name:literal, $py:literal, $cases:literal, $config:literal) => {
        Template {
            name: $name,
            rust: include_str!(concat!("../../../examples/policies/rust/", $name, "/src/lib.rs")),
            cargo: include_str!(concat!("../../../examples/policies/rust/", $name, "/Cargo.toml")),
            python: include_str!(concat!("../../../examples/policies/python/", $py, ".py")),
            js: include_str!(concat!("../../../examples/policies/js/", $name, ".js")),
            cases: include_str!(concat!("../../../examples/policies/cases/", $cases, ".json")),
            config: $config,
            config_schema: include_str!(concat!("../../../examples/policies/config/", $name, ".schema.json")),
        }
    };
}

fn template(hook: Hook) -> anyhow::Result<Template> {
    Ok(match hook {
        Hook::Claim => {
            template!("budget-gate", "budget_gate", "claim", "{\"max_open_claims\": 3, \"max_budget_usdc\": 100}\n")
        }
        Hook::Handoff => {
            template!("handoff-gate", "handoff_gate", "handoff", "{\"require\": [\"produced\", \"uncertainty\"]}\n")
        }
        Hook::Escalation => {
            template!(
                "signal-router",
                "signal_router",
                "escalation",
                "{\"halt_on\": [\"SECURITY\"], \"runbook\": \"runbook\"}\n"
            )
        }
        Hook::Agent => {
            template!("triage", "triage", "agent", "{\"urgent\": [\"outage\", \"security\"], \"label\": \"triage\"}\n")
        }
    })
}

/// The commands a project's README gives, and `cairn policy new` prints.
struct Commands {
    build: Vec<String>,
    wasm: String,
}

fn commands(name: &str, lang: Lang, hook: Hook) -> Commands {
    let world = format!("cairn:policy/{}", hook.world());
    match lang {
        Lang::Rust => Commands {
            build: vec!["cargo build --release --target wasm32-wasip2".into()],
            wasm: format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_")),
        },
        Lang::Python => Commands {
            build: vec![
                "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt".into(),
                format!(".venv/bin/componentize-py -d wit -w {world} componentize app -o {name}.wasm"),
            ],
            wasm: format!("{name}.wasm"),
        },
        Lang::Js => {
            Commands { build: vec!["npm install".into(), "npm run build".into()], wasm: format!("{name}.wasm") }
        }
    }
}

fn lang_name(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    }
}

/// The policy's source, the file an author edits.
fn source_file(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "src/lib.rs",
        Lang::Python => "app.py",
        Lang::Js => "app.js",
    }
}

/// A project name: what the component, the package and the policy on the
/// host are called.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "{name:?} is not a usable policy name: use 1 to 64 lowercase letters, digits and hyphens, starting with a letter (e.g. budget-gate)"
        );
    }
    Ok(())
}

/// The files of a new project, as (relative path, contents).
fn files(name: &str, lang: Lang, hook: Hook) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let t = template(hook)?;
    let mut out = vec![
        (PathBuf::from("wit/worlds.wit"), WORLDS.to_string()),
        (PathBuf::from("wit/deps/coord@0.2.0/coord.wit"), COORD.to_string()),
        (PathBuf::from("cases.json"), t.cases.to_string()),
        (PathBuf::from("config.json"), t.config.to_string()),
        (PathBuf::from("config.schema.json"), t.config_schema.to_string()),
        (PathBuf::from("README.md"), readme(name, lang, hook, &t)),
    ];
    if hook == Hook::Agent {
        out.push((PathBuf::from("settings.json"), AGENT_SETTINGS.to_string()));
    }
    match lang {
        Lang::Rust => {
            let manifest = t.cargo.replacen(&format!("name = \"{}\"", t.name), &format!("name = \"{name}\""), 1);
            out.push((PathBuf::from("Cargo.toml"), format!("{manifest}{RUST_PROJECT}")));
            out.push((PathBuf::from(source_file(lang)), t.rust.to_string()));
            out.push((PathBuf::from(".gitignore"), "target/\n".into()));
        }
        Lang::Python => {
            out.push((PathBuf::from(source_file(lang)), t.python.to_string()));
            out.push((PathBuf::from("requirements.txt"), PY_REQUIREMENTS.to_string()));
            out.push((PathBuf::from(".gitignore"), "*.wasm\n.venv/\n__pycache__/\n".into()));
        }
        Lang::Js => {
            out.push((PathBuf::from(source_file(lang)), t.js.to_string()));
            out.push((PathBuf::from("package.json"), js_package(name, hook, t.name)?));
            let lock = JS_LOCK.replace(&format!("\"name\": \"{JS_PROJECT}\""), &format!("\"name\": \"{name}\""));
            out.push((PathBuf::from("package-lock.json"), lock));
            out.push((PathBuf::from(".gitignore"), "*.wasm\nnode_modules/\n".into()));
        }
    }
    Ok(out)
}

/// The examples' package.json, narrowed to this project: its name and one
/// build script for its world, with the same pinned dependencies.
fn js_package(name: &str, hook: Hook, template: &str) -> anyhow::Result<String> {
    let mut package: serde_json::Value = serde_json::from_str(JS_PACKAGE).context("the bundled package.json")?;
    let key = format!("build:{}", hook.name());
    let build = package["scripts"][&key]
        .as_str()
        .with_context(|| format!("the bundled package.json has no {key} script"))?
        .replace(&format!("{template}.js"), "app.js")
        .replace(&format!("-o {template}.wasm"), &format!("-o {name}.wasm"));
    package["name"] = name.into();
    package["description"] = format!("A Cairn {} policy in JavaScript.", hook.name()).into();
    package["scripts"] = serde_json::json!({ "build": build });
    Ok(serde_json::to_string_pretty(&package)? + "\n")
}

fn readme(name: &str, lang: Lang, hook: Hook, t: &Template) -> String {
    let c = commands(name, lang, hook);
    let hook = hook.name();
    let toolchain = match lang {
        Lang::Rust => "Rust with wit-bindgen (`rustup target add wasm32-wasip2` once)",
        Lang::Python => "Python with componentize-py, pinned in `requirements.txt`",
        Lang::Js => "JavaScript with componentize-js (SpiderMonkey), pinned in `package-lock.json`",
    };
    let source = source_file(lang);
    let (upload, binding) = if hook == "agent" {
        (
            format!(
                "cairn policy add {name} {wasm} --hook agent --settings settings.json \\\n    \
                 --config config.json --config-schema config.schema.json",
                wasm = c.wasm
            ),
            "`settings.json` binds it: `run_as` is the registered agent it acts as (register it \
             first), `subscribe` the streams it follows (an id, or a discoverable stream's name) \
             and their labels. The host calls it once per entry; its appends commit only when it \
             returns `ok`, so each entry's writes land once. `GET /policies/NAME` shows how far \
             it got, and `GET /policies/NAME/dead-letters` the entries that failed."
                .to_string(),
        )
    } else {
        (
            format!(
                "cairn policy add {name} {wasm} --hook {hook} --config config.json \\\n    \
                 --config-schema config.schema.json --scope global",
                wasm = c.wasm
            ),
            "`--scope team:NAME` or `--scope stash:CONTRACT` binds it to one team or contract \
             instead. The hook's bundled policy keeps deciding beside it, and any deny wins; add \
             `--replaces-bundled true` to decide instead of it in that scope."
                .to_string(),
        )
    };
    format!(
        "# {name}\n\n\
         A Cairn {hook} policy in {toolchain}. It starts as a copy of Cairn's \
         `{template}` example: edit `{source}`, and `cases.json` with it.\n\n\
         `wit/` holds the interfaces it is built against; `cairn policy new` wrote \
         them, and a newer Cairn writes newer ones.\n\n\
         ```sh\n\
         # build\n{build}\n\
         # test offline against the cases\n\
         cairn policy test {wasm} --hook {hook} --cases cases.json\n\
         # upload to a host (admin key in CAIRN_ADMIN_KEY, host in CAIRN_URL), with its\n\
         # config and the schema the host checks it against\n\
         {upload}\n\
         ```\n\n\
         {binding} `config.schema.json` is checked by the host whenever the \
         config changes: keep it in step with the keys `{source}` reads.\n\n\
         Log lines written through the `log` import show up in each decision's \
         record (`GET /policies/{name}/decisions`) and in the host's tracing \
         output (target `cairn::policy::guest`). The authors' guide is \
         `docs/writing-policies.md` in Cairn's repository.\n",
        template = t.name,
        build = c.build.join("\n"),
        wasm = c.wasm,
        upload = upload,
        binding = binding,
    )
}

/// Writes the project into `dir` (`./NAME` by default); refuses a folder
/// that already has files in it.
pub fn create(name: &str, lang: Lang, hook: Hook, dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} already exists and is not empty; choose another name or --dir", dir.display());
    }
    for (path, contents) in files(name, lang, hook)? {
        write(&dir.join(path), &contents)?;
    }
    Ok(dir)
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

/// What to run next, printed after the project is written.
pub fn next_steps(dir: &Path, name: &str, lang: Lang, hook: Hook) -> String {
    let c = commands(name, lang, hook);
    let hook = hook.name();
    format!(
        "wrote {dir}: the {hook} hook's template in {lang}. Next:\n  cd {dir}\n  {build}\n  cairn policy test {wasm} --hook {hook} --cases cases.json\n",
        dir = dir.display(),
        lang = lang_name(lang),
        build = c.build.join("\n  "),
        wasm = c.wasm,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_LANGS: [Lang; 3] = [Lang::Rust, Lang::Python, Lang::Js];
    const ALL_HOOKS: [Hook; 4] = [Hook::Claim, Hook::Handoff, Hook::Escalation, Hook::Agent];

    #[test]
    fn every_project_has_its_wit_cases_and_source() {
        for lang in ALL_LANGS {
            for hook in ALL_HOOKS {
                let files = files("my-gate", lang, hook).unwrap();
                let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
                for want in [
                    "wit/worlds.wit",
                    "wit/deps/coord@0.2.0/coord.wit",
                    "cases.json",
                    "config.json",
                    "config.schema.json",
                    "README.md",
                ] {
                    assert!(names.iter().any(|n| n == want), "{lang:?}/{hook:?} lacks {want}: {names:?}");
                }
                let readme = &files.iter().find(|(p, _)| p == Path::new("README.md")).unwrap().1;
                assert!(
                    readme.contains("cairn policy test") && readme.contains("cairn policy add my-gate"),
                    "{readme}"
                );
                let world = hook.world();
                let source = files.iter().find(|(p, _)| p == Path::new(source_file(lang))).unwrap();
                match lang {
                    // Python and JS take the world on the command line.
                    Lang::Rust => assert!(source.1.contains(world), "{world}"),
                    Lang::Python => assert!(readme.contains(world), "{readme}"),
                    Lang::Js => {}
                }
            }
        }
    }

    #[test]
    fn each_config_fits_its_schema_and_a_misspelt_key_does_not() {
        for hook in ALL_HOOKS {
            let t = template(hook).unwrap();
            let schema: serde_json::Value = serde_json::from_str(t.config_schema).unwrap();
            let config: serde_json::Value = serde_json::from_str(t.config).unwrap();
            super::super::config_schema::check(&schema, &config, t.name).unwrap();
            let mut typo = config.clone();
            typo["max_open_claim"] = 3.into();
            let e = super::super::config_schema::check(&schema, &typo, t.name).unwrap_err();
            assert_eq!(e.code(), "invalid_config", "{}", t.name);
        }
    }

    #[test]
    fn the_manifests_carry_the_new_name() {
        let rust = files("my-gate", Lang::Rust, Hook::Handoff).unwrap();
        let cargo = &rust.iter().find(|(p, _)| p == Path::new("Cargo.toml")).unwrap().1;
        assert!(cargo.contains("name = \"my-gate\"") && cargo.trim_end().ends_with("[workspace]"), "{cargo}");
        let js = files("my-gate", Lang::Js, Hook::Escalation).unwrap();
        let package: serde_json::Value =
            serde_json::from_str(&js.iter().find(|(p, _)| p == Path::new("package.json")).unwrap().1).unwrap();
        assert_eq!(package["name"], "my-gate");
        let build = package["scripts"]["build"].as_str().unwrap();
        assert!(
            build.contains("app.js")
                && build.contains("-n cairn:policy/escalation-policy")
                && build.contains("-o my-gate.wasm")
                && build.contains("--max-old-space-size"),
            "{build}"
        );
        assert_eq!(package["devDependencies"]["@bytecodealliance/componentize-js"], "0.23.0");
        let lock = &js.iter().find(|(p, _)| p == Path::new("package-lock.json")).unwrap().1;
        assert!(!lock.contains(JS_PROJECT) && lock.contains("\"name\": \"my-gate\""));
    }

    #[test]
    fn bad_names_and_full_folders_are_refused() {
        for bad in ["", "Gate", "1gate", "my_gate", "gate-", "a/b", &"a".repeat(65)] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("lowercase letters, digits and hyphens"), "{bad}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let err = create("gate", Lang::Rust, Hook::Claim, Some(dir.path().to_path_buf())).unwrap_err().to_string();
        assert!(err.contains("already exists and is not empty"), "{err}");
        let fresh = dir.path().join("gate");
        create("gate", Lang::Python, Hook::Claim, Some(fresh.clone())).unwrap();
        assert!(fresh.join("wit/deps/coord@0.2.0/coord.wit").is_file() && fresh.join("app.py").is_file());
    }
}
