//! The `cairn` command.

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
    Policy(cairn_host::policy::cli::Command),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // rmcp logs two INFO lines for every stateless MCP request.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rmcp=warn")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: piped or redirected logs stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match Cli::parse().command {
        Command::Serve(config) => cairn_host::server::serve(config).await.map(|()| true),
        Command::Policy(command) => cairn_host::policy::cli::run(command).await,
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
