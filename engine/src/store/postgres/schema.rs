//! Versioned schema migrations: the `.sql` files of `migrations/`, embedded in the binary and
//! applied in order; `schema_version` holds one row per version applied. A database whose schema
//! is newer than this build knows is refused ([`StoreError::NewerSchema`]), never written to.
//! Migrating takes a transaction-scoped advisory lock, so workers starting together apply each
//! migration once.

use super::Postgres;
use crate::store::StoreError;

/// The migrations, `(version, SQL)`, in order.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_tokens.sql")),
    (3, include_str!("migrations/0003_watches_reminders.sql")),
    (4, include_str!("migrations/0004_workers.sql")),
];

/// The schema version this build reads and writes.
pub const VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The advisory lock key migrations hold (`blockyard` in ASCII).
const MIGRATION_LOCK: i64 = 0x0062_6c6f_636b_7961;

/// What [`migrate`] did: the schema version found and the one left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// Brings the schema to [`VERSION`], applying each missing migration in one transaction with
/// its `schema_version` row; refuses a newer schema.
pub async fn migrate(pg: &Postgres) -> Result<Migrated, StoreError> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await.map_err(|err| pg.error(err))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|err| pg.error(err))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(|err| pg.error(err))?;
    let from: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(|err| pg.error(err))?
        .get(0);
    if from > VERSION {
        return Err(StoreError::NewerSchema {
            url: pg.url().to_owned(),
            found: from,
            supported: VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
        tx.batch_execute(sql).await.map_err(|err| {
            pg.failed(format!(
                "schema migration {version} failed: {}",
                super::causes(&err)
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(|err| pg.error(err))?;
    }
    tx.commit().await.map_err(|err| pg.error(err))?;
    Ok(Migrated { from, to: VERSION })
}

/// The schema version of the database (0: none yet), without migrating.
pub async fn version(pg: &Postgres) -> Result<i32, StoreError> {
    let client = pg.client().await?;
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(|err| pg.error(err))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(|err| pg.error(err))?
        .get(0))
}
