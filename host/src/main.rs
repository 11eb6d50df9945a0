//! The `cairn` command.

use anyhow::Context;
use cairn_host::policy::{self, Hook};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "cairn", version, about = "A coordination host for AI agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve(cairn_host::Config),
    /// Work with policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run a policy against a case file, offline; exits 1 if any case fails.
    Test {
        /// The policy component (.wasm).
        file: std::path::PathBuf,
        /// The hook the policy is for.
        #[arg(long, value_enum)]
        hook: Hook,
        /// The case file (JSON): {"cases": [{"name", "input", "expect", ...}]}.
        #[arg(long)]
        cases: std::path::PathBuf,
        /// Count fuel, as a host started with fuel on would.
        #[arg(long)]
        fuel: bool,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")))
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Serve(config) => cairn_host::server::serve(config).await.map(|()| true),
        Command::Policy(PolicyCommand::Test { file, hook, cases, fuel }) => policy_test(&file, hook, &cases, fuel),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            // The chain of contexts, one line: what failed and why.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `cairn policy test`: true when every case passed.
fn policy_test(file: &std::path::Path, hook: Hook, cases: &std::path::Path, fuel: bool) -> anyhow::Result<bool> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read the policy {}", file.display()))?;
    let text = std::fs::read_to_string(cases).with_context(|| format!("cannot read the cases {}", cases.display()))?;
    let case_file: policy::cases::CaseFile =
        serde_json::from_str(&text).with_context(|| format!("{} is not a case file", cases.display()))?;
    let runtime = policy::Runtime::new(policy::Options { fuel, cache_dir: None })?;
    let loaded = runtime
        .load(hook, &wasm, &hook.default_grants())
        .with_context(|| format!("cannot load {} as a {hook:?} policy", file.display()))?;
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let results = policy::cases::run(&runtime, &loaded, &name, case_file);
    print!("{}", policy::cases::report(&results));
    Ok(results.iter().all(|r| r.failure.is_none()))
}
