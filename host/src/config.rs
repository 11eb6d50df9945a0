//! Server settings. Each flag of `cairn serve` also reads an environment
//! variable, so the same binary runs from a shell, a unit file or a container.

use std::net::SocketAddr;
use std::time::Duration;

/// `--policy-snapshot-reset`: how snapshot guests' memory slots are reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SnapshotReset {
    /// The first 16 MiB copied back: no page faults in decisions.
    Whole,
    /// Only the pages written: less memory, and for JS under saturation a
    /// shorter tail.
    Dirty,
}

/// Who may call `POST /register/agent`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Anyone may register an agent.
    Open,
    /// Only an admin key may register agents.
    Admin,
}

#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port; the bound address is
    /// printed on stdout as `cairn listening on http://ADDR`.
    #[arg(long, env = "CAIRN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// `sqlite://FILE` (created if missing, WAL mode) or `postgres://...`.
    #[arg(long = "database", env = "CAIRN_DATABASE_URL", default_value = "sqlite://cairn.db")]
    pub database_url: String,

    /// The admin key. When unset, one is made and printed once, at the first
    /// start on an empty database.
    #[arg(long, env = "CAIRN_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Whether anyone may register agents, or only an admin.
    #[arg(long, env = "CAIRN_REGISTRATION", value_enum, default_value = "open")]
    pub registration: Registration,

    /// Largest ephemeral stash body, in bytes.
    #[arg(long, env = "CAIRN_MAX_EPHEMERAL_BYTES", default_value_t = 1 << 20)]
    pub max_ephemeral_bytes: usize,

    /// Largest persistent stash body, in bytes.
    #[arg(long, env = "CAIRN_MAX_PERSISTENT_BYTES", default_value_t = 25 << 20)]
    pub max_persistent_bytes: usize,

    /// Largest JSON body for every other endpoint (stream entries, schemas,
    /// patches), in bytes.
    #[arg(long, env = "CAIRN_MAX_JSON_BYTES", default_value_t = 1 << 20)]
    pub max_json_bytes: usize,

    /// Requests per second allowed to each agent (burst: twice that).
    /// 0 turns rate limiting off.
    #[arg(long, env = "CAIRN_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,

    /// Seconds between keep-alive comments on idle SSE responses, 1–15
    /// (the API promises one at least every 15 s).
    #[arg(long = "sse-keep-alive", env = "CAIRN_SSE_KEEP_ALIVE", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=15))]
    pub sse_keep_alive_secs: u64,

    /// Seconds between a live reader's re-reads of storage when nothing woke
    /// it (a lost wake-up, or an entry written by another host before its
    /// NOTIFY arrives).
    #[arg(long = "sse-recheck", env = "CAIRN_SSE_RECHECK", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub sse_recheck_secs: u64,

    /// A config file whose `[[policy]]` entries are installed at start.
    /// Without this, `cairn.toml` in the working directory is read if it
    /// exists; a file named here must exist.
    #[arg(long = "config", env = "CAIRN_CONFIG")]
    pub config_file: Option<std::path::PathBuf>,

    /// Count fuel in every policy decision (a policy's `limits.fuel`
    /// then applies). Costs roughly 6–35% of guest speed.
    #[arg(long, env = "CAIRN_POLICY_FUEL")]
    pub policy_fuel: bool,

    /// Where compiled policies are cached. Default: beside a SQLite
    /// database (`FILE.policy-cache`), or in the temp directory.
    #[arg(long, env = "CAIRN_POLICY_CACHE")]
    pub policy_cache: Option<std::path::PathBuf>,

    /// Instances each policy keeps made ahead of its fresh decisions, so a
    /// decision does not wait for instantiation. 0 turns this off.
    #[arg(long = "policy-prepared", env = "CAIRN_POLICY_PREPARED", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(0..=64))]
    pub policy_prepared: u64,

    /// Instances made ahead across all policies.
    #[arg(long = "policy-prepared-total", env = "CAIRN_POLICY_PREPARED_TOTAL", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(0..=64))]
    pub policy_prepared_total: u64,

    /// Seconds without a decision after which a policy gives back the
    /// instances made for it.
    #[arg(long = "policy-prepared-idle", env = "CAIRN_POLICY_PREPARED_IDLE", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub policy_prepared_idle_secs: u64,

    /// How freed instance slots of Python and JS policies (guests with a
    /// pre-initialised heap) are made clean: `whole` copies their first 16
    /// MiB back (decisions without page faults, the lowest latency), `dirty`
    /// only the pages written (less memory resident; when JS decisions
    /// saturate the host, a somewhat shorter tail and up to a third more
    /// decisions per second, where Python ones decide fewer; see
    /// docs/benchmarks.md).
    #[arg(long = "policy-snapshot-reset", env = "CAIRN_POLICY_SNAPSHOT_RESET", value_enum,
          default_value_t = SnapshotReset::Whole)]
    pub policy_snapshot_reset: SnapshotReset,

    /// How often expired stashes, expired streams and entries past their
    /// retention are deleted, in seconds. Reads never serve expired data,
    /// whatever this is.
    #[arg(long = "sweep-interval", env = "CAIRN_SWEEP_INTERVAL", default_value_t = 30)]
    pub sweep_interval_secs: u64,

    /// Days a policy decision record is kept; the sweeper deletes older ones.
    #[arg(long = "decision-log-days", env = "CAIRN_DECISION_LOG_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub decision_log_days: u64,

    /// Decision records kept per policy; the sweeper deletes the oldest
    /// beyond this.
    #[arg(long = "decision-log-max", env = "CAIRN_DECISION_LOG_MAX", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub decision_log_max: u64,

    /// Seconds a client has to send a request's headers, and the longest a
    /// kept-alive connection may sit idle before the next request.
    #[arg(long = "header-read-timeout", env = "CAIRN_HEADER_READ_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_secs: u64,

    /// Seconds a request's body has to arrive in full, from the moment the
    /// host starts reading it. A late body gets 408 `request_timeout`.
    #[arg(long = "body-read-timeout", env = "CAIRN_BODY_READ_TIMEOUT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_read_timeout_secs: u64,

    /// Most client connections open at once. At the cap a new connection
    /// closes the one idle longest (no request in progress); when none is
    /// idle it gets 503 `unavailable`. Lowered to fit the process's open
    /// file limit if that is smaller.
    #[arg(long = "max-connections", env = "CAIRN_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Host names (or `host:port`) that `/mcp` answers besides loopback and
    /// the `--listen` address, comma-separated: the names clients use to
    /// reach this host. Requests with another `Host` or `Origin` get 403,
    /// which keeps DNS rebinding away from the MCP endpoint.
    #[arg(long = "mcp-allowed-hosts", env = "CAIRN_MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub mcp_allowed_hosts: Vec<String>,
}

impl Config {
    /// Settings for tests and embedding: everything at its default.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.into(),
            admin_key: None,
            registration: Registration::Open,
            max_ephemeral_bytes: 1 << 20,
            max_persistent_bytes: 25 << 20,
            max_json_bytes: 1 << 20,
            rate_limit: 0,
            sse_keep_alive_secs: 10,
            sse_recheck_secs: 5,
            config_file: None,
            policy_fuel: false,
            policy_cache: None,
            sweep_interval_secs: 30,
            decision_log_days: 30,
            decision_log_max: 100_000,
            mcp_allowed_hosts: Vec::new(),
            policy_prepared: 2,
            policy_prepared_total: 16,
            policy_prepared_idle_secs: 60,
            policy_snapshot_reset: SnapshotReset::Whole,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 60,
            max_connections: 4096,
        }
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_secs(self.sweep_interval_secs.max(1))
    }

    pub fn policy_cache_dir(&self) -> std::path::PathBuf {
        if let Some(dir) = &self.policy_cache {
            return dir.clone();
        }
        match self.database_url.strip_prefix("sqlite://").or_else(|| self.database_url.strip_prefix("sqlite:")) {
            Some(path) if !path.contains(":memory:") => {
                let path = path.split('?').next().unwrap_or(path);
                std::path::PathBuf::from(format!("{path}.policy-cache"))
            }
            _ => shared_policy_cache_dir(),
        }
    }

    pub fn max_stash_bytes(&self, persistent: bool) -> usize {
        if persistent { self.max_persistent_bytes } else { self.max_ephemeral_bytes }
    }
}

/// Where compiled policies are cached when nothing says otherwise and no
/// SQLite file sits beside it: one directory for every host and for
/// `cairn policy test`.
pub fn shared_policy_cache_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("cairn-policy-cache")
}
