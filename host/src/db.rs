//! The storage boundary. Cairn runs on SQLite (embedded, the default) or on
//! PostgreSQL (shared by several host processes). Both go through sqlx, and
//! every query is written once: the SQL uses `$1`-style placeholders, which
//! both drivers accept, and column types that mean the same thing in both
//! (BIGINT, TEXT, BOOLEAN, BYTEA). The [`with_db!`] macro expands one body for
//! each backend, so a resource module holds one copy of each query.
//!
//! SQLite gets a single writer connection and a pool of readers. WAL lets the
//! readers run beside the writer, and one writer means writes queue inside
//! the host in FIFO order instead of spinning in SQLite's busy handler.
//! `synchronous = NORMAL` in WAL mode keeps every committed transaction
//! across a process crash (not across power loss, which needs FULL).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Clone, Debug)]
pub struct Db {
    backend: Backend,
    /// SQLite only: held while the process runs, so a second host cannot
    /// open the same file (the host caches what it alone writes).
    _owner_lock: Option<std::sync::Arc<std::fs::File>>,
}

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite { write: SqlitePool, read: SqlitePool },
    Postgres(PgPool),
}

/// Runs `$body` with `$conn` bound to the pool that fits: `read` for queries
/// that only read, `write` for the rest. The body is compiled once per
/// backend, so it must not name a backend's types.
#[macro_export]
macro_rules! with_db {
    ($db:expr, read, |$conn:ident| $body:expr) => {
        match $db.backend() {
            $crate::db::Backend::Sqlite { read: $conn, .. } => $body,
            $crate::db::Backend::Postgres($conn) => $body,
        }
    };
    ($db:expr, write, |$conn:ident| $body:expr) => {
        match $db.backend() {
            $crate::db::Backend::Sqlite { write: $conn, .. } => $body,
            $crate::db::Backend::Postgres($conn) => $body,
        }
    };
}

/// A bind value for queries built at run time (filters, searches).
#[derive(Debug, Clone)]
pub enum Arg {
    Text(String),
    Int(i64),
    Bool(bool),
}

/// Binds every [`Arg`] in order; expands once per backend like [`with_db!`].
#[macro_export]
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for arg in $args {
            q = match arg {
                $crate::db::Arg::Text(s) => q.bind(s.clone()),
                $crate::db::Arg::Int(i) => q.bind(*i),
                $crate::db::Arg::Bool(b) => q.bind(*b),
            };
        }
        q
    }};
}

/// Builds `WHERE ... AND ...` clauses with numbered placeholders.
#[derive(Debug, Default)]
pub struct Filter {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Filter {
    /// Adds a clause; each `?` in it becomes the next `$n` and takes the next arg.
    pub fn and(&mut self, clause: &str, args: impl IntoIterator<Item = Arg>) -> &mut Self {
        let mut args = args.into_iter();
        let mut sql = String::with_capacity(clause.len() + 8);
        for ch in clause.chars() {
            if ch == '?' {
                let arg = args.next().expect("Filter::and needs one arg per `?`");
                sql.push_str(&self.placeholder(arg));
            } else {
                sql.push(ch);
            }
        }
        self.clauses.push(sql);
        self
    }

    /// Appends the next placeholder for a trailing LIMIT/OFFSET and the like.
    pub fn placeholder(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    pub fn where_sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!(" WHERE {}", self.clauses.join(" AND ")) }
    }

    pub fn args(&self) -> &[Arg] {
        &self.args
    }
}

/// A LIKE pattern that matches `needle` anywhere, lower-cased; use with
/// `LOWER(col) LIKE $n ESCAPE '\'`. Names may contain `_`, a LIKE wildcard.
pub fn contains_pattern(needle: &str) -> String {
    let mut p = String::from("%");
    for ch in needle.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

/// Labels are stored as `,a,b,` so one LIKE finds a whole label.
pub fn encode_labels(labels: &[String]) -> String {
    if labels.is_empty() { String::new() } else { format!(",{},", labels.join(",")) }
}

pub fn decode_labels(stored: &str) -> Vec<String> {
    crate::name::split_labels(stored)
}

pub fn label_pattern(label: &str) -> String {
    let mut p = String::from("%,");
    for ch in label.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push_str(",%");
    p
}

pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|e| e.is_unique_violation())
}

impl Db {
    /// Opens `url` (`sqlite://path` or `postgres://...`) and runs migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut owner_lock = None;
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .with_context(|| format!("could not connect to PostgreSQL at {}", redact(url)))?;
            Backend::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .with_context(|| format!("bad SQLite URL {url:?}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            if !in_memory {
                owner_lock = Some(std::sync::Arc::new(lock_owner(opts.get_filename())?));
            }
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts.clone())
                .await
                .with_context(|| format!("could not open SQLite database {url:?}"))?;
            // An in-memory database exists once per connection: share the writer.
            let read = if in_memory {
                write.clone()
            } else {
                SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts.read_only(true))
                    .await
                    .with_context(|| format!("could not open SQLite database {url:?} for reading"))?
            };
            Backend::Sqlite { write, read }
        } else {
            anyhow::bail!("unsupported database URL {:?}: use sqlite://FILE or postgres://...", redact(url));
        };
        let db = Self { backend, _owner_lock: owner_lock };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sqlite { write, .. } => MIGRATOR.run(write).await,
            Backend::Postgres(pool) => MIGRATOR.run(pool).await,
        }
        .context("database migration failed")
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn postgres(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Postgres(pool) => Some(pool),
            Backend::Sqlite { .. } => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_db!(self, read, |pool| sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// Waits for queued writes, then closes every connection (SQLite
    /// checkpoints its WAL on the last close).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { write, read } => {
                read.close().await;
                write.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

/// Listens on a PostgreSQL notification channel until `shutdown` fires,
/// calling `on` with each payload, and with `None` whenever the connection
/// was re-established: notifications sent while it was down are lost, so
/// the caller should re-read whatever it follows.
pub async fn listen(
    pool: PgPool,
    channel: &'static str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut on: impl FnMut(Option<&str>),
) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(channel, "listener cannot connect, retrying: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        if let Err(e) = listener.listen(channel).await {
            tracing::warn!(channel, "cannot LISTEN, retrying: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        on(None);
        loop {
            tokio::select! {
                msg = listener.try_recv() => match msg {
                    Ok(Some(n)) => on(Some(n.payload())),
                    Ok(None) => on(None), // reconnected inside sqlx
                    Err(e) => {
                        tracing::warn!(channel, "listener lost its connection: {e}");
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Sends one notification on a PostgreSQL channel.
pub async fn notify(pool: &PgPool, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(pool).await.map(|_| ())
}

/// Takes `<database>.lock` exclusively, or explains who holds it.
fn lock_owner(db_path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut path = db_path.as_os_str().to_owned();
    path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create the lock file {}", std::path::Path::new(&path).display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another cairn process is serving {}: a SQLite database belongs to one host; \
             use PostgreSQL (--database postgres://...) to run several",
            db_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).context("cannot lock the SQLite database"),
    }
}

/// A PostgreSQL URL with its database name replaced (for test databases).
pub fn with_database(base: &str, name: &str) -> String {
    let (head, query) = base.split_once('?').map_or((base, None), |(h, q)| (h, Some(q)));
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let head = match head[after_scheme..].find('/') {
        Some(slash) => &head[..after_scheme + slash],
        None => head,
    };
    match query {
        Some(q) => format!("{head}/{name}?{q}"),
        None => format!("{head}/{name}"),
    }
}

/// Hides the password in a database URL for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Stores an enum as its name in a TEXT column on both backends, so rows
/// carry the enum and not a string. The type needs `as_str(self) ->
/// &'static str` and `parse(&str) -> Option<Self>`.
#[macro_export]
macro_rules! text_column {
    ($ty:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $ty
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $ty
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, DB>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $ty
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(value: <DB as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<'r, DB>>::decode(value)?;
                <$ty>::parse(s).ok_or_else(|| format!("{s:?} is not a {}", stringify!($ty)).into())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_numbers_placeholders_in_order() {
        let mut f = Filter::default();
        f.and("a = ?", [Arg::Int(1)]).and("(b = ? OR c = ?)", [Arg::Text("x".into()), Arg::Bool(true)]);
        let limit = f.placeholder(Arg::Int(10));
        assert_eq!(f.where_sql(), " WHERE a = $1 AND (b = $2 OR c = $3)");
        assert_eq!(limit, "$4");
        assert!(matches!(f.args()[1], Arg::Text(ref s) if s == "x"));
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("A_b%"), "%a\\_b\\%%");
        assert_eq!(label_pattern("x_y"), "%,x\\_y,%");
        assert_eq!(encode_labels(&["a".into(), "b".into()]), ",a,b,");
        assert_eq!(decode_labels(",a,b,"), vec!["a", "b"]);
    }

    #[test]
    fn replaces_database_names() {
        assert_eq!(with_database("postgres://u@h:5/postgres", "t1"), "postgres://u@h:5/t1");
        assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "t2"), "postgres://u@h/t2?sslmode=disable");
        assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
