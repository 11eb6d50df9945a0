//! Databases for storage tests: a fresh SQLite file always, and a fresh
//! PostgreSQL database when `CAIRN_TEST_POSTGRES_URL` names a server. Without
//! it the Postgres half is skipped with a message, except under `CI=true`,
//! where it fails.

use rand::RngCore;
use sqlx::Connection;

use crate::db::Db;

/// A test database; for SQLite, with the directory that holds its files,
/// removed when this is dropped.
pub struct TestDb {
    db: Db,
    _dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for TestDb {
    type Target = Db;
    fn deref(&self) -> &Db {
        &self.db
    }
}

pub async fn databases() -> Vec<TestDb> {
    let mut dbs = vec![sqlite().await];
    if let Some(db) = postgres().await {
        dbs.push(db);
    }
    dbs
}

fn unique(prefix: &str) -> String {
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

async fn sqlite() -> TestDb {
    let dir = tempfile::Builder::new().prefix("cairn-unit-").tempdir().expect("create a scratch directory");
    let url = format!("sqlite://{}", dir.path().join("cairn.db").display());
    TestDb { db: Db::connect(&url).await.expect("open a SQLite test database"), _dir: Some(dir) }
}

async fn postgres() -> Option<TestDb> {
    let Ok(base) = std::env::var("CAIRN_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CAIRN_TEST_POSTGRES_URL is not set, and CI=true requires the PostgreSQL half of every storage test"
        );
        eprintln!("skipping PostgreSQL: set CAIRN_TEST_POSTGRES_URL=postgres://... to run it");
        return None;
    };
    let name = unique("cairn_unit_");
    let mut admin = sqlx::PgConnection::connect(&base).await.expect("connect to CAIRN_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create a test database");
    let db = Db::connect(&crate::db::with_database(&base, &name)).await.expect("open the PostgreSQL test database");
    Some(TestDb { db, _dir: None })
}
