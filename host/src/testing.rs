//! Databases for storage tests: a fresh SQLite file always, and a fresh
//! PostgreSQL database when `CAIRN_TEST_POSTGRES_URL` names a server. Without
//! it the Postgres half is skipped with a message, except under `CI=true`,
//! where it fails.

use rand::RngCore;
use sqlx::Connection;

use crate::db::Db;

pub async fn databases() -> Vec<Db> {
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

async fn sqlite() -> Db {
    let path = std::env::temp_dir().join(format!("{}.db", unique("cairn-unit-")));
    Db::connect(&format!("sqlite://{}", path.display())).await.expect("open a SQLite test database")
}

async fn postgres() -> Option<Db> {
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
    Some(Db::connect(&crate::db::with_database(&base, &name)).await.expect("open the PostgreSQL test database"))
}
