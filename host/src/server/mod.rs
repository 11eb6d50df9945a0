//! Starting and stopping. `serve` opens the database (migrating it), makes
//! sure an admin exists, binds the socket, runs the background sweeper and,
//! on PostgreSQL, the cross-process stream listener. On SIGTERM or ctrl-c it
//! stops accepting, ends live (SSE) responses, lets in-flight requests
//! finish, then closes the database so every acknowledged write is on disk.
//! The listener itself, with its timeouts and connection cap, is [`http`].

mod http;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{App, AppState, Config, agent, clock, db, policy, router, schema, signal, stash, stream};

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let db = db::Db::connect(&config.database_url).await?;
    schema::install_builtin(&db).await.context("installing built-in schemas")?;
    let rekeyed = signal::rekey_contract_signals(&db).await.context("re-keying contract signals")?;
    if rekeyed > 0 {
        tracing::info!(signals = rekeyed, "contract signals re-keyed by creator and name");
    }
    if let Some(key) = agent::bootstrap_admin(&db, config.admin_key.as_deref()).await? {
        println!("cairn admin key (shown once; set CAIRN_ADMIN_KEY to choose your own): {key}");
    }
    let limits = http::Limits {
        header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
        body_read_timeout: Duration::from_secs(config.body_read_timeout_secs),
        max_connections: http::fit_connections(usize::try_from(config.max_connections).unwrap_or(usize::MAX)),
    };
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;

    let (stop, stopping) = watch::channel(false);
    let app: AppState = Arc::new(App::new(db.clone(), config.clone(), stopping.clone())?);
    app.policies.load_all(&db).await.context("loading policies")?;
    let (config_file, required) = match &config.config_file {
        Some(path) => (path.clone(), true),
        None => (std::path::PathBuf::from("cairn.toml"), false),
    };
    if required && !config_file.is_file() {
        anyhow::bail!(
            "the config file {} (--config or CAIRN_CONFIG) does not exist; fix the path, or leave it out to read ./cairn.toml if present",
            config_file.display()
        );
    }
    let declared = policy::file::install(&config_file, &app.policies, &db).await?;
    if declared > 0 {
        tracing::info!(file = %config_file.display(), policies = declared, "policies from the config file");
    }
    // The bundled defaults decide wherever nothing is bound: load them now
    // (from the compiled cache, usually), not on the first claim.
    let registry = app.policies.clone();
    tokio::task::spawn_blocking(move || {
        [policy::Hook::Claim, policy::Hook::Handoff, policy::Hook::Escalation]
            .into_iter()
            .try_for_each(|hook| registry.default_blocking(hook).map(drop))
    })
    .await
    .context("loading the bundled policies")??;
    let sweeper = tokio::spawn(sweep(app.clone(), stopping.clone()));
    let listener_task =
        db.postgres().map(|pool| tokio::spawn(stream::events::listen(pool.clone(), app.bus.clone(), stopping.clone())));
    let policy_follower = tokio::spawn(app.policies.clone().follow(db.clone(), stopping.clone()));
    let agents = tokio::spawn(app.agents.clone().run(app.policies.clone(), stopping.clone()));

    let metrics = app.metrics.clone();
    let routes = router(app).context("building the routes")?;
    let stop_signal = shutdown_signal()?;
    tracing::info!(%addr, database = db.kind(), "cairn serving");
    // Tests and scripts read this line to learn the port.
    println!("cairn listening on http://{addr}");

    http::serve(listener, routes, limits, metrics, stop_signal, stop).await;

    sweeper.abort();
    policy_follower.abort();
    // Agents stop at once: an entry whose commit did not land is handled
    // again after the restart, so none is lost or doubled.
    agents.abort();
    if let Some(t) = listener_task {
        t.abort();
    }
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c. The handlers are installed here, before
/// the server announces its address, so a signal sent as soon as the
/// address is known still shuts down gracefully.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for ctrl-c")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Deletes what has expired, every `sweep_interval`.
async fn sweep(app: AppState, mut stopping: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(app.config.sweep_interval());
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stopping.changed() => return,
        }
        match stash::sweep(&app).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(stashes = n, "swept expired stashes"),
            Err(e) => tracing::warn!("stash sweep failed: {e}"),
        }
        match stream::sweep(&app.db).await {
            Ok((0, 0)) => {}
            Ok((streams, entries)) => tracing::info!(streams, entries, "swept expired streams and entries"),
            Err(e) => tracing::warn!("stream sweep failed: {e}"),
        }
        let before = clock::now_ms().saturating_sub(clock::secs_to_ms(app.config.decision_log_days as i64 * 86_400));
        let keep = i64::try_from(app.config.decision_log_max).unwrap_or(i64::MAX);
        match policy::store::sweep_decisions(&app.db, before, keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(decisions = n, "swept old policy decision records"),
            Err(e) => tracing::warn!("decision log sweep failed: {e}"),
        }
    }
}
