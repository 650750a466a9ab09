//! The store on PostgreSQL: the behaviour suite ([`super::suite::suite`]) on a real server, each
//! case in a fresh schema, and what the backend itself promises (migrations, a redacted URL).
//!
//! They need a server: `BLOCKYARD_TEST_POSTGRES=postgres://…` (`scripts/pg test` starts a
//! throwaway cluster and sets it; `.ci/run` runs every test inside one). Without it each test
//! says on stderr that it was skipped and how to run it, and passes.

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use blockyard::store::postgres::{redact, schema, Postgres};
use blockyard::store::StoreError;

use super::suite::suite;

/// The test server's URL, or `None` after saying (past the test harness's capture) that `test`
/// was skipped and how to run it.
fn server(test: &str) -> Option<String> {
    match std::env::var("BLOCKYARD_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let line = format!("skipped {test}: no PostgreSQL (BLOCKYARD_TEST_POSTGRES is not set); run `scripts/pg test` to run it on a throwaway cluster\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

/// A schema name for one test directory (its path hashed: FNV-1a 64).
fn schema_for(dir: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in dir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("blockyard_test_{hash:016x}")
}

/// Drops the schemas a test made, when it ends (passed or not).
struct Schemas {
    url: String,
    names: Mutex<Vec<String>>,
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap());
        if names.is_empty() {
            return;
        }
        let url = self.url.clone();
        // A thread of its own: the test's runtime may be gone or busy.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                for name in names {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_promise_of_the_store() {
    let Some(url) = server("store::postgres::postgres_keeps_every_promise_of_the_store") else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    suite(|dir| {
        // The suite opens a backend synchronously (sled opens so); this one connects and
        // migrates on the test's runtime.
        let name = schema_for(dir);
        let pg = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(Postgres::open_in_schema(&url, &name))
        })
        .unwrap();
        let mut names = schemas.names.lock().unwrap();
        if !names.contains(&name) {
            names.push(name);
        }
        pg
    })
    .await;
}

/// A URL with its schema set (the tests' own, dropped at the end).
async fn open_fresh(url: &str, schemas: &Schemas) -> Postgres {
    let dir = tempfile::tempdir().unwrap();
    let name = schema_for(dir.path());
    schemas.names.lock().unwrap().push(name.clone());
    Postgres::open_in_schema(url, &name).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_a_newer_schema_is_refused() {
    let Some(url) = server("store::postgres::migrations_apply_once_and_a_newer_schema_is_refused")
    else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let pg = open_fresh(&url, &schemas).await;
    assert_eq!(schema::version(&pg).await.unwrap(), schema::VERSION);
    let again = schema::migrate(&pg).await.unwrap();
    assert_eq!((again.from, again.to), (schema::VERSION, schema::VERSION));

    // A later release migrated this database: this one refuses it, naming no password.
    let name = schemas.names.lock().unwrap()[0].clone();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "INSERT INTO {name}.schema_version (version) VALUES (99)"
        ))
        .await
        .unwrap();
    let err = Postgres::open_in_schema(&url, &name).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the PostgreSQL database at `{}` has schema version 99, newer than this blockyard knows (version {}); run the blockyard release that migrated it",
            redact(&url),
            schema::VERSION
        )
    );
    assert!(matches!(err, StoreError::NewerSchema { found: 99, .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_not_in_the_error() {
    let Some(url) = server("store::postgres::a_refused_password_is_not_in_the_error") else {
        return;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let mut wrong = parsed.clone();
    wrong.set_password(Some("wrong-s3cret-pw")).unwrap();
    let err = Postgres::open(wrong.as_str())
        .await
        .unwrap_err()
        .to_string();
    let shown = format!(
        "postgres://{}:***@{}:{}{}",
        parsed.username(),
        parsed.host_str().unwrap(),
        parsed.port().unwrap(),
        parsed.path()
    );
    assert_eq!(
        err,
        format!("the PostgreSQL store at `{shown}` failed: db error: FATAL: password authentication failed for user \"{}\"", parsed.username())
    );
    assert!(!err.contains("wrong-s3cret-pw"), "{err}");
    assert!(!err.contains(parsed.password().unwrap()), "{err}");
}

/// Needs no server: the URL is refused before any connection.
#[test]
fn a_url_blockyard_cannot_use_is_refused_without_its_password() {
    let err = Postgres::connect("mysql://root:hunter2@db/app", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the PostgreSQL URL `mysql://root:***@db/app` is not usable: it does not start with `postgres://` (or `postgresql://`); write it as `postgres://USER:PASSWORD@HOST:PORT/DATABASE`"
    );
    let err = Postgres::connect("postgres://u:hunter2@db/app?sslmode=require", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the PostgreSQL URL `postgres://u:***@db/app?sslmode=require` is not usable: `sslmode=require` asks for TLS, which blockyard's PostgreSQL store does not speak yet; connect over loopback, a private network or a tunnel with `sslmode=disable`; write it as `postgres://USER:PASSWORD@HOST:PORT/DATABASE`"
    );
    let err = Postgres::connect("postgres://u:hunter2@db:notaport/app", None).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// Needs no server: `serve` (and every command on the store) refuses `store: postgres` until
/// the engine runs on it, instead of serving from the sled data dir behind the user's back.
#[test]
fn serve_with_store_postgres_refuses_and_does_not_fall_back_to_sled() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("blockyard.yaml"),
        "data_dir: data\nstore:\n  postgres:\n    url: ${PG_URL}\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("workflows")).unwrap();
    let refused = |args: &[&str], what: &str| {
        let out = crate::support::command_in(dir.path(), args)
            .env("PG_URL", "postgres://u:hunter2@127.0.0.1:1/db")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert_eq!(
            crate::support::stderr(&out),
            format!("error: `blockyard.yaml` sets `store: postgres`, but {what} cannot run on PostgreSQL yet: this release runs the engine on the sled data dir only, and will not fall back to it; remove `store:` to use the data dir `data`, or prepare the database meanwhile with `blockyard store migrate` and `blockyard store copy`\n")
        );
    };
    refused(&["serve", "--listen", "127.0.0.1:0"], "`blockyard serve`");
    refused(&["history", "list"], "this command");
    // Nothing was made in the data dir: no sled store behind the user's back.
    assert!(!dir.path().join("data").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_applies_the_schema_once_and_prints_its_version() {
    let Some(url) =
        server("store::postgres::store_migrate_applies_the_schema_once_and_prints_its_version")
    else {
        return;
    };
    let schemas = Schemas {
        url: url.clone(),
        names: Mutex::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let name = schema_for(dir.path());
    schemas.names.lock().unwrap().push(name.clone());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .unwrap();
    // The URL puts the tables in the test's schema.
    let in_schema = format!("{url}?options=-c%20search_path%3D{name}");
    std::fs::write(
        dir.path().join("blockyard.yaml"),
        "store:\n  postgres:\n    url: ${PG_URL}\n",
    )
    .unwrap();
    let migrate = || {
        let out = crate::support::command_in(dir.path(), &["store", "migrate"])
            .env("PG_URL", &in_schema)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let printed = crate::support::stdout(&out);
        assert!(
            !printed.contains(url::Url::parse(&url).unwrap().password().unwrap()),
            "{printed}"
        );
        printed
    };
    let shown = redact(&in_schema);
    assert_eq!(
        migrate(),
        format!(
            "migrated the PostgreSQL store at `{shown}` from schema version 0 to {}\n",
            schema::VERSION
        )
    );
    assert_eq!(
        migrate(),
        format!(
            "the PostgreSQL store at `{shown}` is at schema version {} already\n",
            schema::VERSION
        )
    );
}
