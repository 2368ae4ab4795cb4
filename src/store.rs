//! The SQLite store: accounts (and later rosters) in one file, WAL mode.
//! [`SqliteStore`] is the blocking API (the CLI uses it directly);
//! [`SqliteStorage`] puts it behind a `SyncArbiter` of its own threads and
//! implements the actors' [`Storage`] trait, so no SQLite call ever runs on
//! an actor's event loop.

use std::path::{Path, PathBuf};

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use rusqlite::{params, Connection, OptionalExtension};
use shoal_actors::sasl::{Credentials, ScramCredentials};
use shoal_actors::storage::{Storage, StorageError, StorageFuture};

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, with SCRAM keys per hash (never a password).
    "CREATE TABLE users (
        username   TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL DEFAULT (unixepoch())
    ) WITHOUT ROWID;
    CREATE TABLE scram_credentials (
        username   TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        hash       TEXT NOT NULL,
        salt       BLOB NOT NULL,
        iterations INTEGER NOT NULL,
        stored_key BLOB NOT NULL,
        server_key BLOB NOT NULL,
        PRIMARY KEY (username, hash)
    ) WITHOUT ROWID;",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, newer than this Shoal knows ({known})")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> Self {
        StorageError::Backend(e.to_string())
    }
}

pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(open_err)?;
            tx.execute_batch(sql).map_err(open_err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(open_err)?;
            tx.commit().map_err(open_err)?;
        }
        Ok(SqliteStore { conn })
    }

    pub fn credentials(&self, username: &str) -> Result<Option<Credentials>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT hash, salt, iterations, stored_key, server_key FROM scram_credentials WHERE username = ?1",
        )?;
        let rows = stmt.query_map([username], |r| {
            Ok((
                r.get::<_, String>(0)?,
                ScramCredentials {
                    salt: r.get(1)?,
                    iterations: r.get(2)?,
                    stored_key: r.get(3)?,
                    server_key: r.get(4)?,
                },
            ))
        })?;
        let (mut sha1, mut sha256) = (None, None);
        for row in rows {
            match row? {
                (h, c) if h == "SHA-1" => sha1 = Some(c),
                (h, c) if h == "SHA-256" => sha256 = Some(c),
                _ => {}
            }
        }
        Ok(sha1
            .zip(sha256)
            .map(|(sha1, sha256)| Credentials { sha1, sha256 }))
    }

    fn write_credentials(
        tx: &rusqlite::Transaction<'_>,
        username: &str,
        c: &Credentials,
    ) -> Result<(), StoreError> {
        for (hash, k) in [("SHA-1", &c.sha1), ("SHA-256", &c.sha256)] {
            tx.execute(
                "INSERT OR REPLACE INTO scram_credentials (username, hash, salt, iterations, stored_key, server_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![username, hash, k.salt, k.iterations, k.stored_key, k.server_key],
            )?;
        }
        Ok(())
    }

    /// Creates an account; `false` when it exists.
    pub fn create_user(
        &mut self,
        username: &str,
        credentials: &Credentials,
    ) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        if tx.execute(
            "INSERT OR IGNORE INTO users (username) VALUES (?1)",
            [username],
        )? == 0
        {
            return Ok(false);
        }
        Self::write_credentials(&tx, username, credentials)?;
        tx.commit()?;
        Ok(true)
    }

    /// Replaces an account's keys; `false` when there is no such account.
    pub fn set_credentials(
        &mut self,
        username: &str,
        credentials: &Credentials,
    ) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM users WHERE username = ?1",
                [username],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists {
            Self::write_credentials(&tx, username, credentials)?;
            tx.commit()?;
        }
        Ok(exists)
    }

    /// Deletes an account and all its data; `false` when there was none.
    pub fn delete_user(&mut self, username: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM users WHERE username = ?1", [username])?
            > 0)
    }

    pub fn list_users(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT username FROM users ORDER BY username")?;
        let users = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(users)
    }
}

/// One store per thread of the SyncArbiter.
struct StoreActor(Option<SqliteStore>);

impl Actor for StoreActor {
    type Context = SyncContext<Self>;
}

type Job<R> = Box<dyn FnOnce(&mut SqliteStore) -> Result<R, StoreError> + Send>;

/// Runs a closure against the store on a store thread.
struct Query<R>(Job<R>);

impl<R: Send + 'static> Message for Query<R> {
    type Result = Result<R, StorageError>;
}

impl<R: Send + 'static> Handler<Query<R>> for StoreActor {
    type Result = Result<R, StorageError>;

    fn handle(&mut self, Query(f): Query<R>, _: &mut SyncContext<Self>) -> Self::Result {
        let store = self.0.as_mut().ok_or(StorageError::Unavailable)?;
        f(store).map_err(StorageError::from)
    }
}

/// The [`Storage`] implementation over SQLite.
#[derive(Clone)]
pub struct SqliteStorage {
    addr: Addr<StoreActor>,
}

impl SqliteStorage {
    /// Opens the database (migrating it) and starts `threads` store threads.
    /// Must run inside an actix System.
    pub fn start(path: &Path, threads: usize) -> Result<SqliteStorage, StoreError> {
        SqliteStore::open(path)?;
        let path = path.to_owned();
        let addr = SyncArbiter::start(threads.max(1), move || {
            StoreActor(
                SqliteStore::open(&path)
                    .map_err(|e| log::error!("store thread cannot open the database: {e}"))
                    .ok(),
            )
        });
        Ok(SqliteStorage { addr })
    }

    fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SqliteStore) -> Result<R, StoreError> + Send + 'static,
    ) -> StorageFuture<R> {
        let sent = self.addr.send(Query(Box::new(f)));
        Box::pin(async move { sent.await.map_err(|_| StorageError::Unavailable)? })
    }
}

impl Storage for SqliteStorage {
    fn credentials(&self, username: &str) -> StorageFuture<Option<Credentials>> {
        let u = username.to_owned();
        self.query(move |s| s.credentials(&u))
    }

    fn create_user(&self, username: &str, credentials: Credentials) -> StorageFuture<bool> {
        let u = username.to_owned();
        self.query(move |s| s.create_user(&u, &credentials))
    }

    fn set_credentials(&self, username: &str, credentials: Credentials) -> StorageFuture<bool> {
        let u = username.to_owned();
        self.query(move |s| s.set_credentials(&u, &credentials))
    }

    fn delete_user(&self, username: &str) -> StorageFuture<bool> {
        let u = username.to_owned();
        self.query(move |s| s.delete_user(&u))
    }

    fn list_users(&self) -> StorageFuture<Vec<String>> {
        self.query(|s| s.list_users())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_round_trip_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let creds = Credentials::derive("pw", 4096);
        {
            let mut s = SqliteStore::open(&path).unwrap();
            assert!(s.create_user("alice", &creds).unwrap());
            assert!(!s.create_user("alice", &creds).unwrap());
            assert!(s.create_user("bob", &creds).unwrap());
        }
        let mut s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.credentials("alice").unwrap(), Some(creds.clone()));
        assert_eq!(s.list_users().unwrap(), ["alice", "bob"]);
        let new = Credentials::derive("pw2", 4096);
        assert!(s.set_credentials("alice", &new).unwrap());
        assert!(!s.set_credentials("carol", &new).unwrap());
        assert_eq!(s.credentials("alice").unwrap(), Some(new));
        assert!(s.delete_user("alice").unwrap());
        assert!(!s.delete_user("alice").unwrap());
        assert_eq!(s.credentials("alice").unwrap(), None);
        let left: i64 = s
            .conn
            .query_row("SELECT count(*) FROM scram_credentials", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            left, 2,
            "credentials of deleted users are deleted with them"
        );
    }
}
