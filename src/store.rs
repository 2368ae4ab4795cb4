//! The SQLite store: accounts, each keyed by its bare JID (`user@domain`,
//! so that every hosted domain has its own), and everything kept for
//! them, in one file, WAL mode.
//! [`SqliteStore`] is the blocking API (the CLI uses it directly);
//! [`SqliteStorage`] puts it behind a `SyncArbiter` of its own threads and
//! implements the actors' [`Storage`] trait, so no SQLite call ever runs on
//! an actor's event loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use shoal_actors::jid::{BareJid, Jid};
use shoal_actors::metrics::{StorageOp, StorageTimer};
use shoal_actors::muc::{Affiliation, StoredRoom};
use shoal_actors::roster::{
    ItemChange, Roster, RosterChange, RosterItem, RosterLimit, RosterLimits, RosterUpdate, SubState, Subscription,
};
use shoal_actors::sasl::{Credentials, ScramCredentials};
use shoal_actors::storage::{PairFn, Profile, RosterFn, Storage, StorageError, StorageFuture, StoredItem, StoredNode};
use shoal_actors::xep::blocking::Blocklist;
use shoal_actors::xep::mam::{self, ArchivePage, ArchiveQuery, ArchiveRow, ArchivedMessage, DefaultPolicy, MamPrefs};
use shoal_actors::xep::private;
use shoal_actors::xep::pubsub::{AccessModel, MaxItems, NodeConfig, SendLast};
use shoal_actors::xep::rsm::Cursor;

use crate::group_commit::ArchiveWriter;

/// One schema migration.
enum Migration {
    Sql(&'static str),
    /// Accounts keyed by bare JID: see [`key_accounts_by_jid`].
    AccountsByJid,
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[Migration] = &[
    // 1: accounts, with SCRAM keys per hash (never a password).
    Migration::Sql(
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
    ),
    // 2: rosters (RFC 6121) with per-item versions and removal records for
    // XEP-0237, and profiles (vCard, nickname, photo).
    Migration::Sql(
        "CREATE TABLE roster_items (
        username        TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        contact         TEXT NOT NULL,
        name            TEXT,
        groups          TEXT NOT NULL DEFAULT '',
        subscription    TEXT NOT NULL DEFAULT 'none',
        pending_out     INTEGER NOT NULL DEFAULT 0,
        pending_in      INTEGER NOT NULL DEFAULT 0,
        in_roster       INTEGER NOT NULL DEFAULT 0,
        pending_request TEXT,
        ver             INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (username, contact)
    ) WITHOUT ROWID;
    CREATE TABLE roster_removals (
        username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        contact  TEXT NOT NULL,
        ver      INTEGER NOT NULL,
        PRIMARY KEY (username, contact)
    ) WITHOUT ROWID;
    CREATE TABLE roster_versions (
        username TEXT PRIMARY KEY REFERENCES users(username) ON DELETE CASCADE,
        version  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE profiles (
        username   TEXT PRIMARY KEY REFERENCES users(username) ON DELETE CASCADE,
        nick       TEXT,
        photo_url  TEXT,
        photo_hash TEXT,
        vcard      TEXT
    ) WITHOUT ROWID;",
    ),
    // 3: secrets the server keeps across restarts (the key of the made-up
    // SCRAM salts of unknown users).
    Migration::Sql(
        "CREATE TABLE server_secrets (
        name  TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;",
    ),
    // 4: subscription pre-approvals (RFC 6121 §3.4).
    Migration::Sql("ALTER TABLE roster_items ADD COLUMN approved INTEGER NOT NULL DEFAULT 0;"),
    // 5: offline messages (XEP-0160), in arrival order per user.
    Migration::Sql(
        "CREATE TABLE offline_messages (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        stanza   TEXT NOT NULL
    );
    CREATE INDEX offline_messages_by_user ON offline_messages (username, seq);",
    ),
    // 6: blocklists (XEP-0191), normalised JIDs.
    Migration::Sql(
        "CREATE TABLE blocklist (
        username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        jid      TEXT NOT NULL,
        PRIMARY KEY (username, jid)
    ) WITHOUT ROWID;",
    ),
    // 7: message archives (XEP-0313), in commit order (`seq`, never
    // reused), with the owners' preferences. `ts_ms` never decreases
    // with `seq` (the archive writer keeps it so): a time bound is a
    // `seq` bound, found in `archive_by_time`, and every query walks one
    // owner's rows in `seq` order in an index.
    Migration::Sql(
        "CREATE TABLE archive (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        owner     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        id        TEXT NOT NULL,
        ts_ms     INTEGER NOT NULL,
        with_bare TEXT NOT NULL,
        with_full TEXT NOT NULL,
        direction TEXT NOT NULL,
        xml       TEXT NOT NULL
    );
    CREATE UNIQUE INDEX archive_by_id ON archive (owner, id);
    CREATE INDEX archive_by_owner ON archive (owner, seq);
    CREATE INDEX archive_by_with ON archive (owner, with_bare, seq);
    CREATE INDEX archive_by_time ON archive (ts_ms);
    CREATE TABLE mam_prefs (
        username     TEXT PRIMARY KEY REFERENCES users(username) ON DELETE CASCADE,
        default_mode TEXT NOT NULL,
        always       TEXT NOT NULL DEFAULT '',
        never        TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID;",
    ),
    // 8: accounts keyed by bare JID (several hosted domains).
    Migration::AccountsByJid,
    // 9: PEP (XEP-0163) nodes, their items (newest = highest `seq`; an id
    // published again gets a new one) and whitelists. `max_items` is kept
    // as written ('max' stays 'max'); roster groups are '\n'-separated.
    Migration::Sql(
        "CREATE TABLE pep_nodes (
        owner                 TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        node                  TEXT NOT NULL,
        access_model          TEXT NOT NULL,
        roster_groups         TEXT NOT NULL DEFAULT '',
        max_items             TEXT NOT NULL,
        persist_items         INTEGER NOT NULL,
        send_last             TEXT NOT NULL,
        notify_retract        INTEGER NOT NULL,
        notify_delete         INTEGER NOT NULL,
        deliver_notifications INTEGER NOT NULL,
        deliver_payloads      INTEGER NOT NULL,
        title                 TEXT,
        type                  TEXT,
        PRIMARY KEY (owner, node)
    ) WITHOUT ROWID;
    CREATE TABLE pep_items (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        owner        TEXT NOT NULL,
        node         TEXT NOT NULL,
        item_id      TEXT NOT NULL,
        publisher    TEXT,
        published_ms INTEGER NOT NULL,
        xml          TEXT NOT NULL,
        FOREIGN KEY (owner, node) REFERENCES pep_nodes(owner, node) ON DELETE CASCADE
    );
    CREATE UNIQUE INDEX pep_items_by_id ON pep_items (owner, node, item_id);
    CREATE INDEX pep_items_by_node ON pep_items (owner, node, seq);
    CREATE TABLE pep_whitelist (
        owner TEXT NOT NULL,
        node  TEXT NOT NULL,
        jid   TEXT NOT NULL,
        PRIMARY KEY (owner, node, jid),
        FOREIGN KEY (owner, node) REFERENCES pep_nodes(owner, node) ON DELETE CASCADE
    ) WITHOUT ROWID;",
    ),
    // 10: MUC (XEP-0045) persistent rooms and their affiliations: the
    // service's, not accounts' data (no key to users). `config` is a
    // submitted muc#roomconfig form. A user without affiliation has no row.
    Migration::Sql(
        "CREATE TABLE muc_rooms (
        service    TEXT NOT NULL,
        name       TEXT NOT NULL,
        config     TEXT NOT NULL,
        subject    TEXT,
        subject_by TEXT,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (service, name)
    ) WITHOUT ROWID;
    CREATE TABLE muc_affiliations (
        service     TEXT NOT NULL,
        name        TEXT NOT NULL,
        jid         TEXT NOT NULL,
        affiliation TEXT NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member', 'outcast')),
        reason      TEXT,
        PRIMARY KEY (service, name, jid),
        FOREIGN KEY (service, name) REFERENCES muc_rooms(service, name) ON DELETE CASCADE
    ) WITHOUT ROWID;",
    ),
    // 11: private XML (XEP-0049), one element per account and key
    // (`{namespace}name`, as `xep::private::key_of` makes it).
    Migration::Sql(
        "CREATE TABLE private_xml (
        username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        key      TEXT NOT NULL,
        xml      TEXT NOT NULL,
        PRIMARY KEY (username, key)
    ) WITHOUT ROWID;",
    ),
];

/// Every column that holds an account, by table: migration 8 rewrites
/// them all, or the foreign keys would not hold at its commit.
const ACCOUNT_COLUMNS: &[(&str, &str)] = &[
    ("users", "username"),
    ("scram_credentials", "username"),
    ("roster_items", "username"),
    ("roster_removals", "username"),
    ("roster_versions", "username"),
    ("profiles", "username"),
    ("offline_messages", "username"),
    ("blocklist", "username"),
    ("archive", "owner"),
    ("mam_prefs", "username"),
];

/// Migration 8: accounts keyed by bare JID, so that several hosted
/// domains each have their own. Until 7 they were keyed by username,
/// all of the one domain: each becomes `username@domain`, with `domain`
/// the first configured one, in every table at once. Without a domain, a
/// database that has such accounts is refused rather than guessed at.
fn key_accounts_by_jid(tx: &rusqlite::Transaction<'_>, path: &Path, domain: Option<&str>) -> Result<(), StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    // A localpart never holds '@' (RFC 7622 §3.3.1): a row without one is old.
    let old: i64 = tx
        .query_row("SELECT count(*) FROM users WHERE instr(username, '@') = 0", [], |r| {
            r.get(0)
        })
        .map_err(open_err)?;
    if old == 0 {
        return Ok(());
    }
    let Some(domain) = domain else {
        return Err(StoreError::NeedsDomain {
            path: path.to_owned(),
            accounts: old as u64,
        });
    };
    // Rosters tell which domain the accounts were of: a contact that is
    // one of them is `username@that-domain`. Moving them to another domain
    // (a command run without the server's --config) is refused: it cannot
    // be undone.
    let seen: Option<String> = tx
        .query_row(
            "SELECT substr(contact, instr(contact, '@') + 1) AS d FROM roster_items              WHERE instr(contact, '@') > 0                AND substr(contact, 1, instr(contact, '@') - 1) IN (SELECT username FROM users)              GROUP BY d ORDER BY count(*) DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(open_err)?;
    if let Some(seen) = seen.filter(|d| d != domain) {
        return Err(StoreError::OtherDomain {
            path: path.to_owned(),
            domain: domain.to_owned(),
            seen,
        });
    }
    // The accounts and the rows that refer to them change one statement at
    // a time: the foreign keys are checked at the commit instead.
    tx.pragma_update(None, "defer_foreign_keys", "ON").map_err(open_err)?;
    for (table, column) in ACCOUNT_COLUMNS {
        let sql = format!("UPDATE {table} SET {column} = {column} || '@' || ?1 WHERE instr({column}, '@') = 0");
        tx.execute(&sql, [domain]).map_err(open_err)?;
    }
    log::info!("{}: {old} account(s) moved to the domain {domain}", path.display());
    Ok(())
}

/// What one group of archived messages needs to know of each owner, read
/// once per group: whether the account exists, its preferences, and (once
/// needed) its blocklist.
type OwnerFacts = std::collections::HashMap<String, Owner>;

struct Owner {
    exists: bool,
    prefs: Option<MamPrefs>,
    blocklist: Option<Blocklist>,
}

/// How hard a commit tries to reach the disk (`[storage] durability`).
/// The database is in WAL mode either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous = NORMAL`: the WAL is synced at checkpoints, not at
    /// each commit. A committed transaction survives the server being
    /// killed (kill -9, a crash, the OOM killer), as it is in the OS's
    /// hands; the last commits may be lost if the machine loses power or
    /// the OS crashes (the database stays consistent).
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is synced (fsync) before it is
    /// acknowledged, and survives power loss. Archived messages are
    /// committed in groups, so that is one fsync per group, not per message.
    Full,
}

impl Durability {
    fn synchronous(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// Separates group names in one column; control characters cannot occur in
/// XML text, so no group name contains it.
const GROUP_SEPARATOR: char = '\u{1f}';

const ITEM_COLUMNS: &str =
    "contact, name, groups, subscription, pending_out, pending_in, in_roster, pending_request, approved";

fn item_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<RosterItem>> {
    let contact: String = r.get(0)?;
    let Ok(jid) = BareJid::parse(&contact) else {
        return Ok(None);
    };
    let groups: String = r.get(2)?;
    let subscription: String = r.get(3)?;
    Ok(Some(RosterItem {
        jid,
        name: r.get(1)?,
        groups: groups
            .split(GROUP_SEPARATOR)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect(),
        state: SubState {
            subscription: Subscription::parse(&subscription).unwrap_or_default(),
            pending_out: r.get(4)?,
            pending_in: r.get(5)?,
            approved: r.get(8)?,
        },
        in_roster: r.get(6)?,
        pending_request: r.get(7)?,
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("database {path} has schema version {found}, newer than this Shoal knows ({known})")]
    TooNew { path: PathBuf, found: i64, known: usize },
    #[error(
        "database {path} has {accounts} account(s) from before Shoal hosted several domains; \
         open it with the server's configuration (start the server, or run a `shoal user` command) \
         so that they become accounts of its first domain"
    )]
    NeedsDomain { path: PathBuf, accounts: u64 },
    #[error(
        "database {path} has accounts from before Shoal hosted several domains, and their rosters \
         say they are of {seen}, not {domain}: open it with the configuration that serves {seen} \
         first (--config, with `domain = \"{seen}\"` or {seen} first in `domains`)"
    )]
    OtherDomain {
        path: PathBuf,
        domain: String,
        seen: String,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot start the archive writer: {0}")]
    Thread(std::io::Error),
}

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> Self {
        StorageError::Backend(e.to_string())
    }
}

/// Removal records kept per user for XEP-0237 (see
/// [`SqliteStore::prune_removals`]). A client further behind gets the whole
/// roster, which costs about what that many removals would.
const KEPT_REMOVALS: usize = 1000;

/// The `roster_removals` row (an empty contact, which no JID has) holding the
/// newest version among a user's pruned removal records: a client at an
/// older version may have missed one of them.
const PRUNED_MARK: &str = "";

pub struct SqliteStore {
    conn: Connection,
    /// Caps checked in every roster update; none unless set (the CLI and
    /// tools are not limited, the server sets the configured ones).
    limits: RosterLimits,
    kept_removals: usize,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, with
    /// [`Durability::Normal`].
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, Durability::Normal)
    }

    /// Opens (creating if needed) and migrates the database; this
    /// connection commits with `durability`. A database with accounts from
    /// before several domains were hosted is refused
    /// ([`StoreError::NeedsDomain`]): [`SqliteStore::open_for_domain`]
    /// moves them.
    pub fn open_with(path: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        Self::open_migrating(path, durability, None)
    }

    /// [`SqliteStore::open_with`], for a server whose first domain is
    /// `default_domain`: accounts from before several domains were hosted
    /// become its accounts (migration 8).
    pub fn open_for_domain(
        path: &Path,
        durability: Durability,
        default_domain: &str,
    ) -> Result<SqliteStore, StoreError> {
        Self::open_migrating(path, durability, Some(default_domain))
    }

    /// Settings for the archive's writer connection: every group of
    /// messages touches a leaf page per owner in each archive index, so
    /// its cache holds the archive's working set (64 MiB), and the WAL is
    /// copied back mostly by another thread ([`SqliteStore::checkpoint`]).
    pub fn tune_for_archive(&mut self) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "cache_size", -65536)?;
        // Checkpoints run on a thread of their own (group_commit.rs); the
        // writer's own, past 16 MiB, finds the WAL copied already but for
        // the last groups, and lets the next group start it over.
        self.conn.pragma_update(None, "wal_autocheckpoint", 4096)?;
        self.conn.pragma_update(None, "journal_size_limit", 64 << 20)?;
        // Statement journals (should an insert need one) stay in memory.
        self.conn.pragma_update(None, "temp_store", "MEMORY")?;
        Ok(())
    }

    /// Copies what the WAL holds back into the database, as far as no
    /// reader needs it, without waiting for anyone (PASSIVE).
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn open_migrating(path: &Path, durability: Durability, domain: Option<&str>) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", durability.synchronous())
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
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
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(open_err)?;
            match migration {
                Migration::Sql(sql) => tx.execute_batch(sql).map_err(open_err)?,
                Migration::AccountsByJid => key_accounts_by_jid(&tx, path, domain)?,
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(open_err)?;
            tx.commit().map_err(open_err)?;
        }
        Ok(SqliteStore {
            conn,
            limits: RosterLimits::UNLIMITED,
            kept_removals: KEPT_REMOVALS,
        })
    }

    /// Caps rosters at `limits` from now on.
    pub fn set_roster_limits(&mut self, limits: RosterLimits) {
        self.limits = limits;
    }

    /// A write transaction. IMMEDIATE takes the write lock at once and waits
    /// for it (busy_timeout); a deferred one that read first fails at once
    /// with "database is locked" when another connection wrote meanwhile.
    fn write(&mut self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        Ok(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    pub fn credentials(&self, user: &BareJid) -> Result<Option<Credentials>, StoreError> {
        let username = user.as_str();
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
        // An account imported from another server may have one hash's keys.
        if sha1.is_none() && sha256.is_none() {
            return Ok(None);
        }
        Ok(Some(Credentials { sha1, sha256 }))
    }

    /// Stores the account's keys; a hash it has none for loses those it had.
    fn write_credentials(tx: &rusqlite::Transaction<'_>, username: &str, c: &Credentials) -> Result<(), StoreError> {
        for (hash, keys) in [("SHA-1", &c.sha1), ("SHA-256", &c.sha256)] {
            match keys {
                Some(k) => tx.execute(
                    "INSERT OR REPLACE INTO scram_credentials (username, hash, salt, iterations, stored_key, server_key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![username, hash, k.salt, k.iterations, k.stored_key, k.server_key],
                )?,
                None => tx.execute(
                    "DELETE FROM scram_credentials WHERE username = ?1 AND hash = ?2",
                    params![username, hash],
                )?,
            };
        }
        Ok(())
    }

    /// Creates an account; `false` when it exists.
    pub fn create_user(&mut self, user: &BareJid, credentials: &Credentials) -> Result<bool, StoreError> {
        let username = user.as_str();
        let tx = self.write()?;
        if tx.execute("INSERT OR IGNORE INTO users (username) VALUES (?1)", [username])? == 0 {
            return Ok(false);
        }
        Self::write_credentials(&tx, username, credentials)?;
        tx.commit()?;
        Ok(true)
    }

    /// Replaces an account's keys; `false` when there is no such account.
    pub fn set_credentials(&mut self, user: &BareJid, credentials: &Credentials) -> Result<bool, StoreError> {
        let username = user.as_str();
        let tx = self.write()?;
        let exists = tx
            .query_row("SELECT 1 FROM users WHERE username = ?1", [username], |_| Ok(()))
            .optional()?
            .is_some();
        if exists {
            Self::write_credentials(&tx, username, credentials)?;
            tx.commit()?;
        }
        Ok(exists)
    }

    /// Deletes an account and all its data; `false` when there was none.
    pub fn delete_user(&mut self, user: &BareJid) -> Result<bool, StoreError> {
        let tx = self.write()?;
        Self::forget_grants(&tx, user)?;
        let existed = tx.execute("DELETE FROM users WHERE username = ?1", [user.as_str()])? > 0;
        tx.commit()?;
        Ok(existed)
    }

    /// Access others gave the account (PEP whitelists), which an account
    /// later registered under the name must not inherit. Its own data
    /// goes with it by the foreign keys.
    fn forget_grants(tx: &rusqlite::Transaction<'_>, user: &BareJid) -> Result<(), StoreError> {
        tx.execute("DELETE FROM pep_whitelist WHERE jid = ?1", [user.as_str()])?;
        Ok(())
    }

    /// Deletes an account while no server runs (`shoal user del`): in the
    /// same transaction every other user's record of it loses its
    /// subscription and pending state (a record the user kept stays, as
    /// after an unsubscription; a bare request goes), with a new roster
    /// version, so an account later registered under the name inherits
    /// nobody. A running server does this through its actors instead, so
    /// that the contacts online are told.
    pub fn delete_account(&mut self, jid: &BareJid) -> Result<bool, StoreError> {
        let username = jid.as_str();
        let tx = self.write()?;
        let holders: Vec<String> = {
            // Only records with something to end: a second run changes nothing.
            let mut stmt = tx.prepare(
                "SELECT username FROM roster_items WHERE contact = ?1
                 AND (subscription != 'none' OR pending_out OR pending_in OR approved OR NOT in_roster)",
            )?;
            let rows = stmt.query_map([jid.as_str()], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for holder in holders {
            let version = Self::roster_version(&tx, &holder)? + 1;
            tx.execute(
                "INSERT INTO roster_versions (username, version) VALUES (?1, ?2)
                 ON CONFLICT (username) DO UPDATE SET version = excluded.version",
                params![holder, version as i64],
            )?;
            tx.execute(
                "DELETE FROM roster_items WHERE username = ?1 AND contact = ?2 AND NOT in_roster",
                params![holder, jid.as_str()],
            )?;
            tx.execute(
                "UPDATE roster_items SET subscription = 'none', pending_out = 0, pending_in = 0,
                     approved = 0, pending_request = NULL, ver = ?3
                 WHERE username = ?1 AND contact = ?2",
                params![holder, jid.as_str(), version as i64],
            )?;
        }
        Self::forget_grants(&tx, jid)?;
        let existed = tx.execute("DELETE FROM users WHERE username = ?1", [username])? > 0;
        tx.commit()?;
        Ok(existed)
    }

    /// The secret called `name`, stored as `fresh` the first time.
    pub fn secret(&mut self, name: &str, fresh: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let tx = self.write()?;
        tx.execute(
            "INSERT OR IGNORE INTO server_secrets (name, value) VALUES (?1, ?2)",
            params![name, fresh.as_slice()],
        )?;
        let value: Vec<u8> = tx.query_row("SELECT value FROM server_secrets WHERE name = ?1", [name], |r| r.get(0))?;
        tx.commit()?;
        // A value of another length was not written by this code: start anew.
        Ok(value.try_into().unwrap_or(fresh))
    }

    /// Every account, of every domain, sorted.
    pub fn list_users(&self) -> Result<Vec<BareJid>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT username FROM users ORDER BY username")?;
        let users: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        // Stored normalised by this code: a row that no longer parses is skipped.
        Ok(users.iter().filter_map(|u| BareJid::parse(u).ok()).collect())
    }

    fn roster_version(conn: &Connection, username: &str) -> Result<u64, StoreError> {
        let v: Option<i64> = conn
            .query_row(
                "SELECT version FROM roster_versions WHERE username = ?1",
                [username],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.unwrap_or(0) as u64)
    }

    fn items(&self, username: &str, filter: &str, arg: i64) -> Result<Vec<(RosterItem, i64)>, StoreError> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS}, ver FROM roster_items WHERE username = ?1 AND {filter} ORDER BY ver, contact"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![username, arg], |r| {
            Ok((item_from_row(r)?, r.get::<_, i64>("ver")?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            if let (Some(item), ver) = row? {
                out.push((item, ver));
            }
        }
        Ok(out)
    }

    pub fn roster(&self, user: &BareJid) -> Result<Roster, StoreError> {
        let username = user.as_str();
        let mut items: Vec<RosterItem> = self
            .items(username, "in_roster AND ?2 = ?2", 0)?
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        items.sort_by(|a, b| a.jid.cmp(&b.jid));
        Ok(Roster {
            version: Self::roster_version(&self.conn, username)?,
            items,
        })
    }

    pub fn roster_changes(&self, user: &BareJid, since: u64) -> Result<Option<(u64, Vec<RosterChange>)>, StoreError> {
        let username = user.as_str();
        // One read transaction: a snapshot, so that pruning in between
        // cannot take removals this diff needs after the mark was read.
        let _snapshot = self.conn.unchecked_transaction()?;
        let version = Self::roster_version(&self.conn, username)?;
        let pruned: Option<i64> = self
            .conn
            .query_row(
                "SELECT ver FROM roster_removals WHERE username = ?1 AND contact = ?2",
                params![username, PRUNED_MARK],
                |r| r.get(0),
            )
            .optional()?;
        if since > version || pruned.is_some_and(|p| (since as i64) < p) {
            return Ok(None);
        }
        let mut changes: Vec<(i64, RosterChange)> = self
            .items(username, "in_roster AND ver > ?2", since as i64)?
            .into_iter()
            .map(|(item, ver)| (ver, RosterChange::Updated(item)))
            .collect();
        let mut stmt = self.conn.prepare_cached(
            "SELECT contact, ver FROM roster_removals WHERE username = ?1 AND ver > ?2 AND contact <> ?3",
        )?;
        let removed = stmt.query_map(params![username, since as i64, PRUNED_MARK], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?))
        })?;
        for row in removed {
            let (contact, ver) = row?;
            if let Ok(jid) = BareJid::parse(&contact) {
                changes.push((ver, RosterChange::Removed(jid)));
            }
        }
        changes.sort_by_key(|(ver, _)| *ver);
        Ok(Some((version, changes.into_iter().map(|(_, c)| c).collect())))
    }

    pub fn roster_item(&self, user: &BareJid, contact: &BareJid) -> Result<Option<RosterItem>, StoreError> {
        let username = user.as_str();
        let sql = format!("SELECT {ITEM_COLUMNS} FROM roster_items WHERE username = ?1 AND contact = ?2");
        let item = self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![username, contact.as_str()], item_from_row)
            .optional()?;
        Ok(item.flatten())
    }

    /// Applies `change` to one record in one transaction; see
    /// [`Storage::update_roster_item`].
    pub fn update_roster_item(
        &mut self,
        user: &BareJid,
        contact: &BareJid,
        change: RosterFn,
    ) -> Result<RosterUpdate, StoreError> {
        let username = user.as_str();
        let (limits, kept) = (self.limits, self.kept_removals);
        let tx = self.write()?;
        let update = Self::update_in(&tx, username, contact, &limits, kept, change)?;
        tx.commit()?;
        Ok(update)
    }

    /// Both records of a local pair in one transaction; see
    /// [`Storage::update_roster_pair`].
    pub fn update_roster_pair(
        &mut self,
        user: &BareJid,
        contact: &BareJid,
        change_user: RosterFn,
        change_contact: PairFn,
    ) -> Result<(RosterUpdate, RosterUpdate), StoreError> {
        let (limits, kept) = (self.limits, self.kept_removals);
        let (un, cn) = (user.as_str(), contact.as_str());
        let tx = self.write()?;
        let first = Self::update_in(&tx, un, contact, &limits, kept, change_user)?;
        let second = Self::update_in(&tx, cn, user, &limits, kept, |item| change_contact(&first, item))?;
        // An error above drops `tx` uncommitted: neither side changes.
        tx.commit()?;
        Ok((first, second))
    }

    /// One record change inside the caller's transaction.
    fn update_in(
        tx: &rusqlite::Transaction<'_>,
        username: &str,
        contact: &BareJid,
        limits: &RosterLimits,
        kept_removals: usize,
        change: impl FnOnce(Option<RosterItem>) -> ItemChange,
    ) -> Result<RosterUpdate, StoreError> {
        let exists = tx
            .query_row("SELECT 1 FROM users WHERE username = ?1", [username], |_| Ok(()))
            .optional()?;
        if exists.is_none() {
            return Ok(RosterUpdate {
                before: None,
                after: None,
                version: 0,
                refused: None,
            });
        }
        let sql = format!("SELECT {ITEM_COLUMNS} FROM roster_items WHERE username = ?1 AND contact = ?2");
        let before = tx
            .query_row(&sql, params![username, contact.as_str()], item_from_row)
            .optional()?
            .flatten();
        let after = match change(before.clone()) {
            ItemChange::Keep => before.clone(),
            ItemChange::Put(item) => Some(item),
            ItemChange::Delete => None,
        };
        let count = |limit: RosterLimit| -> Result<usize, StoreError> {
            let sql = match limit {
                RosterLimit::Items => "SELECT count(*) FROM roster_items WHERE username = ?1 AND in_roster",
                RosterLimit::Pending => "SELECT count(*) FROM roster_items WHERE username = ?1 AND NOT in_roster",
            };
            let n: i64 = tx.query_row(sql, [username], |r| r.get(0))?;
            Ok(n as usize)
        };
        let refused = limits.exceeded(&before, &after, count)?;
        let mut update = RosterUpdate {
            after: if refused.is_some() { before.clone() } else { after },
            before,
            version: Self::roster_version(tx, username)?,
            refused,
        };
        if update.after == update.before {
            return Ok(update);
        }
        let visible = update.visible_change();
        if visible.is_some() {
            update.version += 1;
            tx.execute(
                "INSERT INTO roster_versions (username, version) VALUES (?1, ?2)
                 ON CONFLICT (username) DO UPDATE SET version = excluded.version",
                params![username, update.version as i64],
            )?;
        }
        match &update.after {
            Some(item) => {
                Self::put_item(tx, username, contact, item, update.version)?;
                if item.in_roster {
                    tx.execute(
                        "DELETE FROM roster_removals WHERE username = ?1 AND contact = ?2",
                        params![username, contact.as_str()],
                    )?;
                }
            }
            None => {
                tx.execute(
                    "DELETE FROM roster_items WHERE username = ?1 AND contact = ?2",
                    params![username, contact.as_str()],
                )?;
            }
        }
        if let Some(RosterChange::Removed(_)) = visible {
            tx.execute(
                "INSERT OR REPLACE INTO roster_removals (username, contact, ver) VALUES (?1, ?2, ?3)",
                params![username, contact.as_str(), update.version as i64],
            )?;
            Self::prune_removals(tx, username, kept_removals)?;
        }
        Ok(update)
    }

    /// Writes one record, at roster version `ver`.
    fn put_item(
        tx: &rusqlite::Transaction<'_>,
        username: &str,
        contact: &BareJid,
        item: &RosterItem,
        ver: u64,
    ) -> Result<(), StoreError> {
        let groups: Vec<&str> = item.groups.iter().map(String::as_str).collect();
        tx.execute(
            "INSERT OR REPLACE INTO roster_items (username, contact, name, groups, subscription,
                 pending_out, pending_in, in_roster, pending_request, ver, approved)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                username,
                contact.as_str(),
                item.name,
                groups.join(&GROUP_SEPARATOR.to_string()),
                item.state.subscription.as_str(),
                item.state.pending_out,
                item.state.pending_in,
                item.in_roster,
                item.pending_request,
                ver as i64,
                item.state.approved,
            ],
        )?;
        Ok(())
    }

    /// Keeps a user's newest `kept` removal records: without this they
    /// pile up forever, one per contact ever removed. The newest version
    /// among those dropped goes into the [`PRUNED_MARK`] row, so that
    /// [`SqliteStore::roster_changes`] sends the whole roster to a client
    /// older than that instead of a diff missing removals.
    fn prune_removals(tx: &rusqlite::Transaction<'_>, username: &str, kept: usize) -> Result<(), StoreError> {
        let cut: Option<i64> = tx
            .query_row(
                "SELECT ver FROM roster_removals WHERE username = ?1 AND contact <> ?2
                 ORDER BY ver DESC LIMIT 1 OFFSET ?3",
                params![username, PRUNED_MARK, kept as i64],
                |r| r.get(0),
            )
            .optional()?;
        let Some(cut) = cut else { return Ok(()) };
        tx.execute(
            "DELETE FROM roster_removals WHERE username = ?1 AND contact <> ?2 AND ver <= ?3",
            params![username, PRUNED_MARK, cut],
        )?;
        tx.execute(
            "INSERT INTO roster_removals (username, contact, ver) VALUES (?1, ?2, ?3)
             ON CONFLICT (username, contact) DO UPDATE SET ver = max(ver, excluded.ver)",
            params![username, PRUNED_MARK, cut],
        )?;
        Ok(())
    }

    pub fn pending_requests(&self, user: &BareJid) -> Result<Vec<RosterItem>, StoreError> {
        let username = user.as_str();
        Ok(self
            .items(username, "pending_in AND ?2 = ?2", 0)?
            .into_iter()
            .map(|(i, _)| i)
            .collect())
    }

    pub fn vcard(&self, user: &BareJid) -> Result<Option<String>, StoreError> {
        let username = user.as_str();
        let v = self
            .conn
            .query_row("SELECT vcard FROM profiles WHERE username = ?1", [username], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(v.flatten())
    }

    pub fn set_vcard(&mut self, user: &BareJid, vcard: &str, profile: &Profile) -> Result<(), StoreError> {
        let username = user.as_str();
        self.conn.execute(
            "INSERT INTO profiles (username, nick, photo_url, photo_hash, vcard)
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM users WHERE username = ?1)
             ON CONFLICT (username) DO UPDATE SET nick = excluded.nick, photo_url = excluded.photo_url,
                 photo_hash = excluded.photo_hash, vcard = excluded.vcard",
            params![username, profile.nick, profile.photo_url, profile.photo_hash, vcard],
        )?;
        Ok(())
    }

    pub fn profile(&self, user: &BareJid) -> Result<Profile, StoreError> {
        let username = user.as_str();
        let p = self
            .conn
            .query_row(
                "SELECT nick, photo_url, photo_hash FROM profiles WHERE username = ?1",
                [username],
                |r| {
                    Ok(Profile {
                        nick: r.get(0)?,
                        photo_url: r.get(1)?,
                        photo_hash: r.get(2)?,
                    })
                },
            )
            .optional()?;
        Ok(p.unwrap_or_default())
    }

    /// Stores a message for an offline user; `false` when there is no such
    /// user or `max` are stored (0: no limit). One transaction: the count
    /// and the insert cannot be split by another writer.
    pub fn store_offline(&mut self, user: &BareJid, message: &str, max: usize) -> Result<bool, StoreError> {
        let username = user.as_str();
        let tx = self.write()?;
        let exists = tx
            .query_row("SELECT 1 FROM users WHERE username = ?1", [username], |_| Ok(()))
            .optional()?
            .is_some();
        let stored: i64 = tx.query_row(
            "SELECT count(*) FROM offline_messages WHERE username = ?1",
            [username],
            |r| r.get(0),
        )?;
        if !exists || (max > 0 && stored as usize >= max) {
            return Ok(false);
        }
        insert_offline(&tx, username, message)?;
        tx.commit()?;
        Ok(true)
    }

    /// The user's offline messages, oldest first.
    pub fn offline_messages(&self, user: &BareJid) -> Result<Vec<(i64, String)>, StoreError> {
        let username = user.as_str();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, stanza FROM offline_messages WHERE username = ?1 ORDER BY seq")?;
        let rows = stmt.query_map([username], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_offline(&mut self, user: &BareJid, upto: i64) -> Result<(), StoreError> {
        let username = user.as_str();
        self.conn.execute(
            "DELETE FROM offline_messages WHERE username = ?1 AND seq <= ?2",
            params![username, upto],
        )?;
        Ok(())
    }

    /// The JIDs the user blocked (XEP-0191), sorted.
    pub fn blocklist(&self, user: &BareJid) -> Result<Vec<Jid>, StoreError> {
        let username = user.as_str();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT jid FROM blocklist WHERE username = ?1 ORDER BY jid")?;
        let rows = stmt.query_map([username], |r| r.get::<_, String>(0))?;
        let jids: Vec<String> = rows.collect::<Result<_, _>>()?;
        // Stored normalised by this code: a row that no longer parses is skipped.
        Ok(jids.iter().filter_map(|j| Jid::parse(j).ok()).collect())
    }

    /// Adds JIDs to the user's blocklist; `false` when there is no such user.
    pub fn block(&mut self, user: &BareJid, jids: &[Jid]) -> Result<bool, StoreError> {
        let username = user.as_str();
        let tx = self.write()?;
        let exists = tx
            .query_row("SELECT 1 FROM users WHERE username = ?1", [username], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            return Ok(false);
        }
        for jid in jids {
            tx.execute(
                "INSERT OR IGNORE INTO blocklist (username, jid) VALUES (?1, ?2)",
                params![username, jid.as_str()],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Removes JIDs from the user's blocklist (`None`: all); those removed.
    pub fn unblock(&mut self, user: &BareJid, jids: Option<&[Jid]>) -> Result<Vec<Jid>, StoreError> {
        let username = user.as_str();
        let tx = self.write()?;
        let removed = match jids {
            None => {
                let all: Vec<String> = {
                    let mut stmt = tx.prepare("SELECT jid FROM blocklist WHERE username = ?1")?;
                    let rows = stmt.query_map([username], |r| r.get(0))?;
                    rows.collect::<Result<_, _>>()?
                };
                tx.execute("DELETE FROM blocklist WHERE username = ?1", [username])?;
                all.iter().filter_map(|j| Jid::parse(j).ok()).collect()
            }
            Some(jids) => {
                let mut removed = Vec::new();
                for jid in jids {
                    let n = tx.execute(
                        "DELETE FROM blocklist WHERE username = ?1 AND jid = ?2",
                        params![username, jid.as_str()],
                    )?;
                    if n > 0 {
                        removed.push(jid.clone());
                    }
                }
                removed
            }
        };
        tx.commit()?;
        Ok(removed)
    }

    /// Sets nickname and photo URL; `false` when there is no such user.
    pub fn set_profile(
        &mut self,
        user: &BareJid,
        nick: Option<&str>,
        photo_url: Option<&str>,
    ) -> Result<bool, StoreError> {
        let username = user.as_str();
        let n = self.conn.execute(
            "INSERT INTO profiles (username, nick, photo_url)
             SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM users WHERE username = ?1)
             ON CONFLICT (username) DO UPDATE SET nick = excluded.nick, photo_url = excluded.photo_url",
            params![username, nick, photo_url],
        )?;
        Ok(n > 0)
    }
}

/// Private XML (XEP-0049).
impl SqliteStore {
    /// The user's element stored under `key`, as XML.
    pub fn private_xml(&self, user: &BareJid, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT xml FROM private_xml WHERE username = ?1 AND key = ?2")?
            .query_row(params![user.as_str(), key], |r| r.get(0))
            .optional()?)
    }

    /// Every element the user stored, by key.
    pub fn private_xml_all(&self, user: &BareJid) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, xml FROM private_xml WHERE username = ?1 ORDER BY key")?;
        let rows = stmt.query_map([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores (`Some`) or forgets (`None`) the user's element under `key`;
    /// `false`, storing nothing, when there is no such user or the user has
    /// [`private::MAX_KEYS`] other keys already. One transaction: the count
    /// and the write cannot be split by another writer.
    pub fn set_private_xml(&mut self, user: &BareJid, key: &str, xml: Option<&str>) -> Result<bool, StoreError> {
        let username = user.as_str();
        let tx = self.write()?;
        let Some(xml) = xml else {
            tx.execute(
                "DELETE FROM private_xml WHERE username = ?1 AND key = ?2",
                params![username, key],
            )?;
            tx.commit()?;
            return Ok(true);
        };
        let exists = tx
            .query_row("SELECT 1 FROM users WHERE username = ?1", [username], |_| Ok(()))
            .optional()?
            .is_some();
        let others: i64 = tx.query_row(
            "SELECT count(*) FROM private_xml WHERE username = ?1 AND key <> ?2",
            params![username, key],
            |r| r.get(0),
        )?;
        if !exists || others as usize >= private::MAX_KEYS {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO private_xml (username, key, xml) VALUES (?1, ?2, ?3)
             ON CONFLICT (username, key) DO UPDATE SET xml = excluded.xml",
            params![username, key, xml],
        )?;
        tx.commit()?;
        Ok(true)
    }
}

/// MUC rooms (XEP-0045): the persistent ones, with their affiliations.
impl SqliteStore {
    /// The persistent rooms of the service `service`, by name, each with
    /// its affiliations.
    pub fn muc_rooms(&self, service: &str) -> Result<Vec<StoredRoom>, StoreError> {
        let mut rooms: Vec<StoredRoom> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT name, config, subject, subject_by, created_ms FROM muc_rooms WHERE service = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map([service], |r| {
                Ok(StoredRoom {
                    name: r.get(0)?,
                    config: r.get(1)?,
                    subject: r.get(2)?,
                    subject_by: r.get(3)?,
                    created_ms: r.get(4)?,
                    affiliations: Vec::new(),
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let index: std::collections::HashMap<String, usize> =
            rooms.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect();
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, jid, affiliation, reason FROM muc_affiliations WHERE service = ?1 ORDER BY name, jid",
        )?;
        let rows = stmt.query_map([service], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        for row in rows {
            let (name, jid, affiliation, reason) = row?;
            // Stored normalised by this code: a row that no longer reads is skipped.
            let (Some(&i), Ok(jid), Some(affiliation)) =
                (index.get(&name), BareJid::parse(&jid), Affiliation::parse(&affiliation))
            else {
                continue;
            };
            rooms[i].affiliations.push((jid, affiliation, reason));
        }
        Ok(rooms)
    }

    /// Stores a room (or replaces its configuration and subject), and
    /// adds the affiliations it carries, in one transaction.
    pub fn muc_save_room(&mut self, service: &str, room: &StoredRoom) -> Result<(), StoreError> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO muc_rooms (service, name, config, subject, subject_by, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (service, name) DO UPDATE SET config = excluded.config, subject = excluded.subject,
                 subject_by = excluded.subject_by",
            params![
                service,
                room.name,
                room.config,
                room.subject,
                room.subject_by,
                room.created_ms
            ],
        )?;
        for (jid, affiliation, reason) in &room.affiliations {
            put_affiliation(&tx, service, &room.name, jid, Some((*affiliation, reason.as_deref())))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets a room; its affiliations go with it.
    pub fn muc_delete_room(&mut self, service: &str, name: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM muc_rooms WHERE service = ?1 AND name = ?2",
            params![service, name],
        )?;
        Ok(())
    }

    /// Sets (`None`, or `none`: removes) a user's affiliation with a
    /// stored room; for a room not stored, nothing changes.
    pub fn muc_set_affiliation(
        &mut self,
        service: &str,
        room: &str,
        jid: &BareJid,
        affiliation: Option<(Affiliation, Option<&str>)>,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        put_affiliation(&tx, service, room, jid, affiliation)?;
        tx.commit()?;
        Ok(())
    }
}

/// One affiliation row written (in the caller's transaction): none is no row.
fn put_affiliation(
    tx: &rusqlite::Transaction<'_>,
    service: &str,
    room: &str,
    jid: &BareJid,
    affiliation: Option<(Affiliation, Option<&str>)>,
) -> Result<(), StoreError> {
    match affiliation {
        Some((a, reason)) if a != Affiliation::None => {
            tx.execute(
                "INSERT INTO muc_affiliations (service, name, jid, affiliation, reason)
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM muc_rooms WHERE service = ?1 AND name = ?2)
                 ON CONFLICT (service, name, jid) DO UPDATE SET affiliation = excluded.affiliation,
                     reason = excluded.reason",
                params![service, room, jid.as_str(), a.as_str(), reason],
            )?;
        }
        _ => {
            tx.execute(
                "DELETE FROM muc_affiliations WHERE service = ?1 AND name = ?2 AND jid = ?3",
                params![service, room, jid.as_str()],
            )?;
        }
    }
    Ok(())
}

/// An account with what moves with it between servers (XEP-0227): what
/// `shoal import` writes and `shoal export` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountData {
    pub jid: BareJid,
    pub credentials: Credentials,
    /// The roster, and the requests waiting for the user's answer from
    /// contacts not in it (records with `in_roster` false).
    pub roster: Vec<RosterItem>,
    /// The vCard (XML) and the profile derived from it.
    pub vcard: Option<(String, Profile)>,
    /// Offline messages (XML, as stored), oldest first.
    pub offline: Vec<String>,
    /// Private XML (XEP-0049): (key, XML), by key.
    pub private: Vec<(String, String)>,
    /// PEP nodes (XEP-0163), by name, each with its items, oldest first.
    pub pep: Vec<(StoredNode, Vec<StoredItem>)>,
}

/// Whole accounts, for migrations (`shoal import`, `shoal export`).
impl SqliteStore {
    /// Creates an account with all it brings, in one transaction; `false`,
    /// with nothing written, when it exists and `replace` is not set. With
    /// `replace` an existing account is deleted first, with all it had
    /// (its archive too). The roster starts at version 1: a client that
    /// cached the old server's (a higher version, or not a number) gets it
    /// whole.
    pub fn import_account(&mut self, account: &AccountData, replace: bool) -> Result<bool, StoreError> {
        const VERSION: u64 = 1;
        let username = account.jid.as_str();
        let tx = self.write()?;
        if replace {
            tx.execute("DELETE FROM users WHERE username = ?1", [username])?;
        }
        if tx.execute("INSERT OR IGNORE INTO users (username) VALUES (?1)", [username])? == 0 {
            return Ok(false);
        }
        Self::write_credentials(&tx, username, &account.credentials)?;
        for item in &account.roster {
            Self::put_item(&tx, username, &item.jid, item, VERSION)?;
        }
        if !account.roster.is_empty() {
            tx.execute(
                "INSERT INTO roster_versions (username, version) VALUES (?1, ?2)",
                params![username, VERSION as i64],
            )?;
        }
        if let Some((vcard, profile)) = &account.vcard {
            tx.execute(
                "INSERT INTO profiles (username, nick, photo_url, photo_hash, vcard) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![username, profile.nick, profile.photo_url, profile.photo_hash, vcard],
            )?;
        }
        for message in &account.offline {
            insert_offline(&tx, username, message)?;
        }
        for (key, xml) in &account.private {
            tx.execute(
                "INSERT INTO private_xml (username, key, xml) VALUES (?1, ?2, ?3)",
                params![username, key, xml],
            )?;
        }
        for (node, items) in &account.pep {
            Self::write_node(&tx, username, node)?;
            // Oldest first: each a newer `seq` than the one before.
            for item in items {
                tx.execute(
                    "INSERT INTO pep_items (owner, node, item_id, publisher, published_ms, xml)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        username,
                        node.node,
                        item.id,
                        item.publisher.as_ref().map(|p| p.as_str()),
                        item.published_ms,
                        item.xml
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// A read transaction: what is read until it ends is one snapshot (an
    /// export sees every account as of one moment, whatever a running
    /// server writes meanwhile).
    pub fn snapshot(&self) -> Result<rusqlite::Transaction<'_>, StoreError> {
        Ok(self.conn.unchecked_transaction()?)
    }

    /// An account with all [`AccountData`] holds; `None` when there is no
    /// such account.
    pub fn account_data(&self, user: &BareJid) -> Result<Option<AccountData>, StoreError> {
        let Some(credentials) = self.credentials(user)? else {
            return Ok(None);
        };
        let mut roster: Vec<RosterItem> = self
            .items(user.as_str(), "?2 = ?2", 0)?
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        roster.sort_by(|a, b| a.jid.cmp(&b.jid));
        let vcard = match self.vcard(user)? {
            Some(xml) => Some((xml, self.profile(user)?)),
            None => None,
        };
        let offline = self.offline_messages(user)?.into_iter().map(|(_, xml)| xml).collect();
        let mut pep = Vec::new();
        for node in self.pep_nodes(user)? {
            let mut items = self.pep_items(user, &node.node, None, None)?;
            items.reverse();
            pep.push((node, items));
        }
        Ok(Some(AccountData {
            jid: user.clone(),
            credentials,
            roster,
            vcard,
            offline,
            private: self.private_xml_all(user)?,
            pep,
        }))
    }
}

/// The message archive (XEP-0313). Rows are written by the archive
/// writer ([`crate::group_commit`]) on its own connection, many messages
/// in one transaction; queries run on the store threads.
impl SqliteStore {
    /// The newest archived time: the archive writer's clock starts there.
    pub(crate) fn last_archive_ts(&self) -> Result<i64, StoreError> {
        let ts: Option<i64> = self
            .conn
            .query_row("SELECT max(ts_ms) FROM archive", [], |r| r.get(0))?;
        Ok(ts.unwrap_or(0))
    }

    /// Writes a group of jobs, each one message's rows, in one transaction:
    /// one commit (one fsync with [`Durability::Full`]) for all. Should a
    /// job fail, the group is written again one transaction per job, so
    /// that it fails alone (a savepoint per job would cost each job a
    /// statement journal of every page it touches); a failed commit fails
    /// them all. `clock` is the newest time written: a row's time is raised
    /// to it, so that times never decrease with `seq` (migration 7).
    pub(crate) fn archive_group(
        &mut self,
        clock: &mut i64,
        jobs: &[&[ArchiveRow]],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let before = *clock;
        let tx = self.write()?;
        let mut owners = OwnerFacts::default();
        let written = jobs.iter().try_for_each(|rows| {
            rows.iter()
                .try_for_each(|row| Self::archive_row(&tx, &mut owners, clock, row))
        });
        if written.is_ok() {
            tx.commit()?;
            return Ok(jobs.iter().map(|_| Ok(())).collect());
        }
        drop(tx);
        *clock = before;
        let mut results = Vec::with_capacity(jobs.len());
        for rows in jobs {
            let tx = self.write()?;
            let mut job_clock = *clock;
            let mut owners = OwnerFacts::default();
            let written = rows
                .iter()
                .try_for_each(|row| Self::archive_row(&tx, &mut owners, &mut job_clock, row));
            results.push(written.and_then(|()| {
                tx.commit()?;
                *clock = job_clock;
                Ok(())
            }));
        }
        Ok(results)
    }

    /// One row, if its owner exists and wants it ([`mam::keeps`], from the
    /// preferences, roster and blocklist as stored now).
    fn archive_row(
        conn: &Connection,
        owners: &mut OwnerFacts,
        clock: &mut i64,
        row: &ArchiveRow,
    ) -> Result<(), StoreError> {
        let owner = row.owner.as_str();
        let bare = row.with.to_bare();
        if !owners.contains_key(owner) {
            let exists = conn
                .prepare_cached("SELECT 1 FROM users WHERE username = ?1")?
                .exists([owner])?;
            let facts = Owner {
                exists,
                prefs: Self::prefs_in(conn, owner)?,
                blocklist: None,
            };
            owners.insert(owner.to_owned(), facts);
        }
        let Some(facts) = owners.get_mut(owner) else {
            return Ok(());
        };
        if !facts.exists {
            return Ok(());
        }
        let in_roster = || -> Result<bool, StoreError> {
            let found: Option<bool> = conn
                .prepare_cached("SELECT in_roster FROM roster_items WHERE username = ?1 AND contact = ?2")?
                .query_row(params![owner, bare.as_str()], |r| r.get(0))
                .optional()?;
            Ok(found.unwrap_or(false))
        };
        let cached = &mut facts.blocklist;
        let blocklist = || -> Result<Blocklist, StoreError> {
            if let Some(list) = cached {
                return Ok(list.clone());
            }
            let mut stmt = conn.prepare_cached("SELECT jid FROM blocklist WHERE username = ?1")?;
            let jids: Vec<String> = stmt.query_map([owner], |r| r.get(0))?.collect::<Result<_, _>>()?;
            let list = Blocklist::new(jids.iter().filter_map(|j| Jid::parse(j).ok()));
            *cached = Some(list.clone());
            Ok(list)
        };
        if !mam::keeps(row, facts.prefs.as_ref(), in_roster, blocklist)? {
            return Ok(());
        }
        let ts = row.ts_ms.max(*clock);
        // A plain insert (an INSERT … SELECT would open a statement journal).
        conn.prepare_cached(
            "INSERT INTO archive (owner, id, ts_ms, with_bare, with_full, direction, xml)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            owner,
            row.id,
            ts,
            bare.as_str(),
            row.with.as_str(),
            row.direction.as_str(),
            row.xml
        ])?;
        *clock = ts;
        Ok(())
    }

    fn prefs_in(conn: &Connection, username: &str) -> Result<Option<MamPrefs>, StoreError> {
        let row: Option<(String, String, String)> = conn
            .prepare_cached("SELECT default_mode, always, never FROM mam_prefs WHERE username = ?1")?
            .query_row([username], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let jids = |s: &str| -> Vec<Jid> {
            s.split(GROUP_SEPARATOR)
                .filter(|j| !j.is_empty())
                .filter_map(|j| Jid::parse(j).ok())
                .collect()
        };
        Ok(row.map(|(default, always, never)| MamPrefs {
            default: DefaultPolicy::parse(&default).unwrap_or_default(),
            always: jids(&always),
            never: jids(&never),
        }))
    }

    /// The user's archiving preferences; `None` when never set.
    pub fn mam_prefs(&self, user: &BareJid) -> Result<Option<MamPrefs>, StoreError> {
        let username = user.as_str();
        Self::prefs_in(&self.conn, username)
    }

    /// Stores the user's archiving preferences; `false` when there is no
    /// such user.
    pub fn set_mam_prefs(&mut self, user: &BareJid, prefs: &MamPrefs) -> Result<bool, StoreError> {
        let username = user.as_str();
        let join = |l: &[Jid]| {
            l.iter()
                .map(Jid::as_str)
                .collect::<Vec<_>>()
                .join(&GROUP_SEPARATOR.to_string())
        };
        let tx = self.write()?;
        let n = tx.execute(
            "INSERT INTO mam_prefs (username, default_mode, always, never)
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM users WHERE username = ?1)
             ON CONFLICT (username) DO UPDATE SET default_mode = excluded.default_mode,
                 always = excluded.always, never = excluded.never",
            params![
                username,
                prefs.default.as_str(),
                join(&prefs.always),
                join(&prefs.never)
            ],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Deletes up to `limit` archived messages received before
    /// `before_ms`, oldest first; how many. Done a chunk at a time so that
    /// a long-due purge never holds the write lock for long.
    pub(crate) fn purge_archive_chunk(&mut self, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        let tx = self.write()?;
        let n = tx.execute(
            "DELETE FROM archive WHERE seq IN
                 (SELECT seq FROM archive WHERE ts_ms < ?1 ORDER BY ts_ms LIMIT ?2)",
            params![before_ms, limit as i64],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// A page of the user's archive, as [`mam::page_of`] gives it; `None`
    /// when an id the query names is not there. Every step is an index
    /// look-up or an index range: the ids and times become bounds on
    /// `seq`, and the page is read in `seq` order from the cursor on. The
    /// count and the first index count entries of the owner's index range
    /// (of one correspondent's, with `with`), without reading messages.
    pub fn archive_query(&self, user: &BareJid, q: &ArchiveQuery) -> Result<Option<ArchivePage>, StoreError> {
        let username = user.as_str();
        // One snapshot: the count and the page agree.
        let _snapshot = self.conn.unchecked_transaction()?;
        let seq_of = |id: &str| -> Result<Option<i64>, StoreError> {
            Ok(self
                .conn
                .prepare_cached("SELECT seq FROM archive WHERE owner = ?1 AND id = ?2")?
                .query_row(params![username, id], |r| r.get(0))
                .optional()?)
        };
        let time_bound = |sql: &str, ms: i64| -> Result<Option<i64>, StoreError> {
            Ok(self
                .conn
                .prepare_cached(sql)?
                .query_row([ms], |r| r.get(0))
                .optional()?)
        };
        // Exclusive bounds on `seq`.
        let (mut lo, mut hi) = (0i64, i64::MAX);
        if let Some(id) = &q.after_id {
            match seq_of(id)? {
                Some(seq) => lo = lo.max(seq),
                None => return Ok(None),
            }
        }
        if let Some(id) = &q.before_id {
            match seq_of(id)? {
                Some(seq) => hi = hi.min(seq),
                None => return Ok(None),
            }
        }
        let cursor = match &q.cursor {
            Cursor::After(id) | Cursor::Before(id) => match seq_of(id)? {
                Some(seq) => Some(seq),
                None => return Ok(None),
            },
            _ => None,
        };
        if let Some(start) = q.start_ms {
            let first = "SELECT seq FROM archive WHERE ts_ms >= ?1 ORDER BY ts_ms, seq LIMIT 1";
            match time_bound(first, start)? {
                Some(seq) => lo = lo.max(seq - 1),
                None => hi = 0,
            }
        }
        if let Some(end) = q.end_ms {
            let last = "SELECT seq FROM archive WHERE ts_ms <= ?1 ORDER BY ts_ms DESC, seq DESC LIMIT 1";
            match time_bound(last, end)? {
                Some(seq) => hi = hi.min(seq + 1),
                None => hi = 0,
            }
        }
        let mut filter = String::from("FROM archive WHERE owner = ? AND seq > ? AND seq < ?");
        let mut args = vec![Value::Text(username.to_owned()), Value::Integer(lo), Value::Integer(hi)];
        if let Some(with) = &q.with {
            filter.push_str(" AND with_bare = ?");
            args.push(Value::Text(with.to_bare().as_str().to_owned()));
            if !with.is_bare() {
                filter.push_str(" AND with_full = ?");
                args.push(Value::Text(with.as_str().to_owned()));
            }
        }
        if let Some(ids) = &q.ids {
            if ids.is_empty() {
                filter.push_str(" AND 0");
            } else {
                filter.push_str(&format!(" AND id IN ({})", vec!["?"; ids.len()].join(", ")));
                args.extend(ids.iter().map(|id| Value::Text(id.clone())));
            }
        }
        let count = |extra: &str, more: &[Value]| -> Result<usize, StoreError> {
            let sql = format!("SELECT count(*) {filter}{extra}");
            let n: i64 = self
                .conn
                .prepare_cached(&sql)?
                .query_row(params_from_iter(args.iter().chain(more)), |r| r.get(0))?;
            Ok(n as usize)
        };
        let total = count("", &[])?;
        let (extra, order, offset) = match &q.cursor {
            Cursor::First => ("", "ASC", 0),
            Cursor::Index(n) => ("", "ASC", *n),
            Cursor::After(_) => (" AND seq > ?", "ASC", 0),
            Cursor::Before(_) => (" AND seq < ?", "DESC", 0),
            Cursor::Last => ("", "DESC", 0),
        };
        let mut page_args = args.clone();
        page_args.extend(cursor.map(Value::Integer));
        // One more than the page: whether there is more says `complete`.
        page_args.push(Value::Integer(q.max as i64 + 1));
        page_args.push(Value::Integer(offset as i64));
        let sql = format!("SELECT seq, id, ts_ms, xml {filter}{extra} ORDER BY seq {order} LIMIT ? OFFSET ?");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let found = stmt.query_map(params_from_iter(page_args.iter()), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                ArchivedMessage {
                    id: r.get(1)?,
                    ts_ms: r.get(2)?,
                    xml: r.get(3)?,
                },
            ))
        })?;
        let mut rows: Vec<(i64, ArchivedMessage)> = found.collect::<Result<_, _>>()?;
        let complete = rows.len() <= q.max;
        rows.truncate(q.max);
        if q.cursor.backwards() {
            rows.reverse();
        }
        let first_index = match (&q.cursor, rows.first()) {
            (Cursor::Index(n), _) => *n,
            (_, None) | (Cursor::First, _) => 0,
            (Cursor::Last, _) => total.saturating_sub(rows.len()),
            (_, Some((seq, _))) => count(" AND seq < ?", &[Value::Integer(*seq)])?,
        };
        Ok(Some(ArchivePage {
            messages: rows.into_iter().map(|(_, m)| m).collect(),
            count: total,
            first_index,
            complete,
        }))
    }
}

/// The columns of `pep_nodes` [`node_from_row`] reads, in its order.
const NODE_COLUMNS: &str = "node, access_model, roster_groups, max_items, persist_items, send_last, notify_retract, \
                            notify_delete, deliver_notifications, deliver_payloads, title, type";

/// A node's roster groups, as `pep_nodes` keeps them ('\n'-separated).
fn node_groups(column: &str) -> Vec<String> {
    column
        .split('\n')
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A node (without its whitelist) from a row of [`NODE_COLUMNS`]. Values
/// this code did not write fall back to the most closed ones.
fn node_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredNode> {
    let text = |i: usize| r.get::<_, String>(i);
    let groups = text(2)?;
    Ok(StoredNode {
        node: text(0)?,
        config: NodeConfig {
            access_model: AccessModel::parse(&text(1)?).unwrap_or(AccessModel::Whitelist),
            roster_groups: node_groups(&groups),
            max_items: MaxItems::parse(&text(3)?, u32::MAX).unwrap_or(MaxItems::Count(1)),
            persist_items: r.get(4)?,
            send_last: SendLast::parse(&text(5)?).unwrap_or(SendLast::Never),
            notify_retract: r.get(6)?,
            notify_delete: r.get(7)?,
            deliver_notifications: r.get(8)?,
            deliver_payloads: r.get(9)?,
            title: r.get(10)?,
            kind: r.get(11)?,
        },
        whitelist: Vec::new(),
    })
}

/// PEP (XEP-0163): nodes, items, whitelists.
impl SqliteStore {
    /// The owner's nodes with their whitelists, by name.
    pub fn pep_nodes(&self, owner: &BareJid) -> Result<Vec<StoredNode>, StoreError> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM pep_nodes WHERE owner = ?1 ORDER BY node");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut nodes: Vec<StoredNode> = stmt
            .query_map([owner.as_str()], node_from_row)?
            .collect::<Result<_, _>>()?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT node, jid FROM pep_whitelist WHERE owner = ?1 ORDER BY node, jid")?;
        let rows = stmt.query_map([owner.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (node, jid) = row?;
            // Stored normalised by this code: a row that no longer parses is skipped.
            if let (Some(n), Ok(jid)) = (nodes.iter_mut().find(|n| n.node == node), BareJid::parse(&jid)) {
                n.whitelist.push(jid);
            }
        }
        Ok(nodes)
    }

    /// Creates or reconfigures a node (in the caller's transaction); an
    /// owner that does not exist gets none.
    fn write_node(tx: &rusqlite::Transaction<'_>, owner: &str, n: &StoredNode) -> Result<(), StoreError> {
        let c = &n.config;
        let written = tx.execute(
            "INSERT INTO pep_nodes (owner, node, access_model, roster_groups, max_items, persist_items, send_last,
                 notify_retract, notify_delete, deliver_notifications, deliver_payloads, title, type)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13
             WHERE EXISTS (SELECT 1 FROM users WHERE username = ?1)
             ON CONFLICT (owner, node) DO UPDATE SET access_model = excluded.access_model,
                 roster_groups = excluded.roster_groups, max_items = excluded.max_items,
                 persist_items = excluded.persist_items, send_last = excluded.send_last,
                 notify_retract = excluded.notify_retract, notify_delete = excluded.notify_delete,
                 deliver_notifications = excluded.deliver_notifications,
                 deliver_payloads = excluded.deliver_payloads, title = excluded.title, type = excluded.type",
            params![
                owner,
                n.node,
                c.access_model.as_str(),
                c.roster_groups.join("\n"),
                c.max_items.to_string(),
                c.persist_items,
                c.send_last.as_str(),
                c.notify_retract,
                c.notify_delete,
                c.deliver_notifications,
                c.deliver_payloads,
                c.title,
                c.kind,
            ],
        )?;
        if written == 0 {
            return Ok(());
        }
        tx.execute(
            "DELETE FROM pep_whitelist WHERE owner = ?1 AND node = ?2",
            params![owner, n.node],
        )?;
        for jid in &n.whitelist {
            tx.execute(
                "INSERT OR IGNORE INTO pep_whitelist (owner, node, jid) VALUES (?1, ?2, ?3)",
                params![owner, n.node, jid.as_str()],
            )?;
        }
        Ok(())
    }

    pub fn pep_set_node(&mut self, owner: &BareJid, node: &StoredNode) -> Result<(), StoreError> {
        let tx = self.write()?;
        Self::write_node(&tx, owner.as_str(), node)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes a node, its items and whitelist; `false` when there was none.
    pub fn pep_delete_node(&mut self, owner: &BareJid, node: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM pep_nodes WHERE owner = ?1 AND node = ?2",
            params![owner.as_str(), node],
        )?;
        Ok(n > 0)
    }

    /// Stores an item (creating its node first if `create` is given) and
    /// removes the oldest past `keep`, in one transaction; their ids.
    pub fn pep_publish(
        &mut self,
        owner: &BareJid,
        node: &str,
        create: Option<&StoredNode>,
        item: &StoredItem,
        keep: u32,
    ) -> Result<Vec<String>, StoreError> {
        let owner = owner.as_str();
        let tx = self.write()?;
        if let Some(n) = create {
            Self::write_node(&tx, owner, n)?;
        }
        // Published again, an id is the newest: a new row, a new `seq`.
        tx.execute(
            "DELETE FROM pep_items WHERE owner = ?1 AND node = ?2 AND item_id = ?3",
            params![owner, node, item.id],
        )?;
        tx.execute(
            "INSERT INTO pep_items (owner, node, item_id, publisher, published_ms, xml)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                owner,
                node,
                item.id,
                item.publisher.as_ref().map(|p| p.as_str()),
                item.published_ms,
                item.xml
            ],
        )?;
        let trimmed: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT item_id FROM pep_items WHERE owner = ?1 AND node = ?2 ORDER BY seq DESC LIMIT -1 OFFSET ?3",
            )?;
            let rows = stmt.query_map(params![owner, node, i64::from(keep)], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in &trimmed {
            tx.execute(
                "DELETE FROM pep_items WHERE owner = ?1 AND node = ?2 AND item_id = ?3",
                params![owner, node, id],
            )?;
        }
        tx.commit()?;
        Ok(trimmed)
    }

    /// A node's items, newest first: those of `ids` if given, at most `max`.
    pub fn pep_items(
        &self,
        owner: &BareJid,
        node: &str,
        ids: Option<&[String]>,
        max: Option<u32>,
    ) -> Result<Vec<StoredItem>, StoreError> {
        let mut sql =
            "SELECT item_id, publisher, published_ms, xml FROM pep_items WHERE owner = ?1 AND node = ?2".to_owned();
        let mut args = vec![Value::Text(owner.as_str().to_owned()), Value::Text(node.to_owned())];
        if let Some(ids) = ids {
            let marks: Vec<String> = (0..ids.len()).map(|i| format!("?{}", i + 3)).collect();
            sql.push_str(&format!(" AND item_id IN ({})", marks.join(", ")));
            args.extend(ids.iter().map(|id| Value::Text(id.clone())));
        }
        sql.push_str(" ORDER BY seq DESC");
        if let Some(max) = max {
            sql.push_str(&format!(" LIMIT {max}"));
        }
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args.iter()), |r| pep_item_at(r, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes one item; `false` when there was none.
    pub fn pep_retract(&mut self, owner: &BareJid, node: &str, id: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM pep_items WHERE owner = ?1 AND node = ?2 AND item_id = ?3",
            params![owner.as_str(), node, id],
        )?;
        Ok(n > 0)
    }

    pub fn pep_purge(&mut self, owner: &BareJid, node: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM pep_items WHERE owner = ?1 AND node = ?2",
            params![owner.as_str(), node],
        )?;
        Ok(())
    }

    /// The newest item of each of `nodes` of each of `owners` that sends
    /// its last item on presence and that `viewer` may see: the access
    /// facts are read in the query, the rule applied by
    /// [`shoal_actors::storage::may_see`].
    pub fn pep_last_items(
        &self,
        viewer: &BareJid,
        owners: &[BareJid],
        nodes: &[String],
    ) -> Result<Vec<(BareJid, String, StoredItem)>, StoreError> {
        let mut out = Vec::new();
        if nodes.is_empty() {
            return Ok(out);
        }
        // Well under SQLite's limit on parameters, however many followees.
        for owners in owners.chunks(500) {
            let owner_marks: Vec<String> = (0..owners.len()).map(|i| format!("?{}", i + 2)).collect();
            let node_marks: Vec<String> = (0..nodes.len()).map(|i| format!("?{}", i + 2 + owners.len())).collect();
            let sql = format!(
                "SELECT n.owner, n.node, n.access_model, n.roster_groups,
                     EXISTS (SELECT 1 FROM pep_whitelist w WHERE w.owner = n.owner AND w.node = n.node AND w.jid = ?1),
                     (SELECT r.groups FROM roster_items r WHERE r.username = n.owner AND r.contact = ?1 AND r.in_roster),
                     i.item_id, i.publisher, i.published_ms, i.xml
                 FROM pep_nodes n JOIN pep_items i ON i.owner = n.owner AND i.node = n.node
                     AND i.seq = (SELECT max(m.seq) FROM pep_items m WHERE m.owner = n.owner AND m.node = n.node)
                 WHERE n.owner IN ({}) AND n.node IN ({}) AND n.send_last = 'on_sub_and_presence'
                 ORDER BY n.owner, n.node",
                owner_marks.join(", "),
                node_marks.join(", ")
            );
            let mut args = vec![Value::Text(viewer.as_str().to_owned())];
            args.extend(owners.iter().map(|o| Value::Text(o.as_str().to_owned())));
            args.extend(nodes.iter().map(|n| Value::Text(n.clone())));
            let mut stmt = self.conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
                let owner: String = r.get(0)?;
                let access: String = r.get(2)?;
                let groups: String = r.get(3)?;
                let whitelisted: bool = r.get(4)?;
                let viewer_groups: Option<String> = r.get(5)?;
                let node = StoredNode {
                    node: r.get(1)?,
                    config: NodeConfig {
                        access_model: AccessModel::parse(&access).unwrap_or(AccessModel::Whitelist),
                        roster_groups: node_groups(&groups),
                        ..NodeConfig::default()
                    },
                    whitelist: if whitelisted { vec![viewer.clone()] } else { Vec::new() },
                };
                let item = pep_item_at(r, 6)?;
                Ok((owner, node, viewer_groups, item))
            })?;
            for row in rows {
                let (owner, node, viewer_groups, item) = row?;
                let Ok(owner) = BareJid::parse(&owner) else { continue };
                let groups: Option<Vec<String>> = viewer_groups.map(|g| {
                    g.split(GROUP_SEPARATOR)
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect()
                });
                if owner == *viewer || shoal_actors::storage::may_see(&node, viewer, groups.as_deref()) {
                    out.push((owner, node.node, item));
                }
            }
        }
        Ok(out)
    }
}

/// A PEP item from the row's columns `item_id, publisher, published_ms,
/// xml`, the first at `at`.
fn pep_item_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<StoredItem> {
    let publisher: Option<String> = r.get(at + 1)?;
    Ok(StoredItem {
        id: r.get(at)?,
        publisher: publisher.and_then(|p| BareJid::parse(&p).ok()),
        published_ms: r.get(at + 2)?,
        xml: r.get(at + 3)?,
    })
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
    /// Jobs queued or running: the store threads' mailbox is unbounded,
    /// so callers wait here for a place instead of piling jobs up.
    queue: Arc<tokio::sync::Semaphore>,
    /// Archived messages are written by a thread of their own, in groups.
    writer: ArchiveWriter,
}

/// Most jobs queued for the store threads at once.
pub const STORE_QUEUE: usize = 1024;

impl SqliteStorage {
    /// Opens the database (migrating it: accounts from before several
    /// domains were hosted become `default_domain`'s) and starts `threads`
    /// store threads, which cap rosters at `limits`, and the archive
    /// writer, every connection committing with `durability`. Must run
    /// inside an actix System.
    pub fn start(
        path: &Path,
        threads: usize,
        limits: RosterLimits,
        default_domain: &str,
        durability: Durability,
    ) -> Result<SqliteStorage, StoreError> {
        let writer = ArchiveWriter::start(
            SqliteStore::open_for_domain(path, durability, default_domain)?,
            SqliteStore::open_with(path, durability)?,
        )?;
        let path = path.to_owned();
        let addr = SyncArbiter::start(threads.max(1), move || {
            let store = SqliteStore::open_with(&path, durability).map(|mut s| {
                s.set_roster_limits(limits);
                s
            });
            StoreActor(
                store
                    .map_err(|e| log::error!("store thread cannot open the database: {e}"))
                    .ok(),
            )
        });
        Ok(SqliteStorage {
            addr,
            queue: Arc::new(tokio::sync::Semaphore::new(STORE_QUEUE)),
            writer,
        })
    }

    /// Runs `f` on a store thread; timed as `op` from now until it is done.
    fn query<R: Send + 'static>(
        &self,
        op: StorageOp,
        f: impl FnOnce(&mut SqliteStore) -> Result<R, StoreError> + Send + 'static,
    ) -> StorageFuture<R> {
        let (addr, queue) = (self.addr.clone(), self.queue.clone());
        Box::pin(StorageTimer::start(op).time(async move {
            let _place = queue.acquire().await.map_err(|_| StorageError::Unavailable)?;
            addr.send(Query(Box::new(f)))
                .await
                .map_err(|_| StorageError::Unavailable)?
        }))
    }
}

impl Storage for SqliteStorage {
    fn credentials(&self, user: &BareJid) -> StorageFuture<Option<Credentials>> {
        let u = user.clone();
        self.query(StorageOp::Credentials, move |s| s.credentials(&u))
    }

    fn create_user(&self, user: &BareJid, credentials: Credentials) -> StorageFuture<bool> {
        let u = user.clone();
        self.query(StorageOp::CreateUser, move |s| s.create_user(&u, &credentials))
    }

    fn set_credentials(&self, user: &BareJid, credentials: Credentials) -> StorageFuture<bool> {
        let u = user.clone();
        self.query(StorageOp::SetCredentials, move |s| s.set_credentials(&u, &credentials))
    }

    /// Also clears what contacts still hold of the account (a pre-approval,
    /// say) that the running server's unsubscriptions did not end.
    fn delete_user(&self, user: &BareJid) -> StorageFuture<bool> {
        let u = user.clone();
        self.query(StorageOp::DeleteUser, move |s| s.delete_account(&u))
    }

    fn list_users(&self) -> StorageFuture<Vec<BareJid>> {
        self.query(StorageOp::ListUsers, |s| s.list_users())
    }

    fn roster(&self, user: &BareJid) -> StorageFuture<Roster> {
        let u = user.clone();
        self.query(StorageOp::Roster, move |s| s.roster(&u))
    }

    fn roster_changes(&self, user: &BareJid, since: u64) -> StorageFuture<Option<(u64, Vec<RosterChange>)>> {
        let u = user.clone();
        self.query(StorageOp::RosterChanges, move |s| s.roster_changes(&u, since))
    }

    fn roster_item(&self, user: &BareJid, contact: &BareJid) -> StorageFuture<Option<RosterItem>> {
        let (u, c) = (user.clone(), contact.clone());
        self.query(StorageOp::RosterItem, move |s| s.roster_item(&u, &c))
    }

    fn update_roster_item(&self, user: &BareJid, contact: &BareJid, change: RosterFn) -> StorageFuture<RosterUpdate> {
        let (u, c) = (user.clone(), contact.clone());
        self.query(StorageOp::UpdateRosterItem, move |s| {
            s.update_roster_item(&u, &c, change)
        })
    }

    fn update_roster_pair(
        &self,
        user: &BareJid,
        contact: &BareJid,
        change_user: RosterFn,
        change_contact: PairFn,
    ) -> StorageFuture<(RosterUpdate, RosterUpdate)> {
        let (u, c) = (user.clone(), contact.clone());
        self.query(StorageOp::UpdateRosterPair, move |s| {
            s.update_roster_pair(&u, &c, change_user, change_contact)
        })
    }

    fn pending_requests(&self, user: &BareJid) -> StorageFuture<Vec<RosterItem>> {
        let u = user.clone();
        self.query(StorageOp::PendingRequests, move |s| s.pending_requests(&u))
    }

    fn vcard(&self, user: &BareJid) -> StorageFuture<Option<String>> {
        let u = user.clone();
        self.query(StorageOp::Vcard, move |s| s.vcard(&u))
    }

    fn set_vcard(&self, user: &BareJid, vcard: String, profile: Profile) -> StorageFuture<()> {
        let u = user.clone();
        self.query(StorageOp::SetVcard, move |s| s.set_vcard(&u, &vcard, &profile))
    }

    fn profile(&self, user: &BareJid) -> StorageFuture<Profile> {
        let u = user.clone();
        self.query(StorageOp::Profile, move |s| s.profile(&u))
    }

    fn set_profile(&self, user: &BareJid, nick: Option<String>, photo_url: Option<String>) -> StorageFuture<bool> {
        let u = user.clone();
        self.query(StorageOp::SetProfile, move |s| {
            s.set_profile(&u, nick.as_deref(), photo_url.as_deref())
        })
    }

    fn store_offline(&self, user: &BareJid, message: String, max: usize) -> StorageFuture<bool> {
        let u = user.clone();
        self.query(StorageOp::StoreOffline, move |s| s.store_offline(&u, &message, max))
    }

    fn offline_messages(&self, user: &BareJid) -> StorageFuture<Vec<(i64, String)>> {
        let u = user.clone();
        self.query(StorageOp::OfflineMessages, move |s| s.offline_messages(&u))
    }

    fn delete_offline(&self, user: &BareJid, upto: i64) -> StorageFuture<()> {
        let u = user.clone();
        self.query(StorageOp::DeleteOffline, move |s| s.delete_offline(&u, upto))
    }

    fn blocklist(&self, user: &BareJid) -> StorageFuture<Vec<Jid>> {
        let u = user.clone();
        self.query(StorageOp::Blocklist, move |s| s.blocklist(&u))
    }

    fn block(&self, user: &BareJid, jids: Vec<Jid>) -> StorageFuture<bool> {
        let u = user.clone();
        self.query(StorageOp::Block, move |s| s.block(&u, &jids))
    }

    fn unblock(&self, user: &BareJid, jids: Option<Vec<Jid>>) -> StorageFuture<Vec<Jid>> {
        let u = user.clone();
        self.query(StorageOp::Unblock, move |s| s.unblock(&u, jids.as_deref()))
    }

    /// Queued for the archive writer at once (see [`ArchiveWriter`]).
    fn archive(&self, rows: Vec<ArchiveRow>) -> StorageFuture<()> {
        self.writer.archive(rows)
    }

    fn archive_query(&self, user: &BareJid, query: ArchiveQuery) -> StorageFuture<Option<ArchivePage>> {
        let u = user.clone();
        self.query(StorageOp::ArchiveQuery, move |s| s.archive_query(&u, &query))
    }

    fn mam_prefs(&self, user: &BareJid) -> StorageFuture<Option<MamPrefs>> {
        let u = user.clone();
        self.query(StorageOp::MamPrefs, move |s| s.mam_prefs(&u))
    }

    fn set_mam_prefs(&self, user: &BareJid, prefs: MamPrefs) -> StorageFuture<bool> {
        let u = user.clone();
        self.query(StorageOp::SetMamPrefs, move |s| s.set_mam_prefs(&u, &prefs))
    }

    /// Done by the archive writer, between groups.
    fn purge_archive(&self, before_ms: i64) -> StorageFuture<()> {
        self.writer.purge(before_ms)
    }

    fn muc_rooms(&self, service: &str) -> StorageFuture<Vec<StoredRoom>> {
        let service = service.to_owned();
        self.query(StorageOp::MucRooms, move |s| s.muc_rooms(&service))
    }

    fn muc_save_room(&self, service: &str, room: StoredRoom) -> StorageFuture<()> {
        let service = service.to_owned();
        self.query(StorageOp::MucSaveRoom, move |s| s.muc_save_room(&service, &room))
    }

    fn muc_delete_room(&self, service: &str, name: &str) -> StorageFuture<()> {
        let (service, name) = (service.to_owned(), name.to_owned());
        self.query(StorageOp::MucDeleteRoom, move |s| s.muc_delete_room(&service, &name))
    }

    fn muc_set_affiliation(
        &self,
        service: &str,
        room: &str,
        jid: &BareJid,
        affiliation: Option<(Affiliation, Option<String>)>,
    ) -> StorageFuture<()> {
        let (service, room, jid) = (service.to_owned(), room.to_owned(), jid.clone());
        self.query(StorageOp::MucSetAffiliation, move |s| {
            let affiliation = affiliation.as_ref().map(|(a, r)| (*a, r.as_deref()));
            s.muc_set_affiliation(&service, &room, &jid, affiliation)
        })
    }

    fn private_xml(&self, user: &BareJid, key: &str) -> StorageFuture<Option<String>> {
        let (u, k) = (user.clone(), key.to_owned());
        self.query(StorageOp::PrivateXml, move |s| s.private_xml(&u, &k))
    }

    fn set_private_xml(&self, user: &BareJid, key: &str, xml: Option<String>) -> StorageFuture<bool> {
        let (u, k) = (user.clone(), key.to_owned());
        self.query(StorageOp::SetPrivateXml, move |s| {
            s.set_private_xml(&u, &k, xml.as_deref())
        })
    }

    fn pep_nodes(&self, owner: &BareJid) -> StorageFuture<Vec<StoredNode>> {
        let o = owner.clone();
        self.query(StorageOp::PepNodes, move |s| s.pep_nodes(&o))
    }

    fn pep_set_node(&self, owner: &BareJid, node: StoredNode) -> StorageFuture<()> {
        let o = owner.clone();
        self.query(StorageOp::PepSetNode, move |s| s.pep_set_node(&o, &node))
    }

    fn pep_delete_node(&self, owner: &BareJid, node: &str) -> StorageFuture<bool> {
        let (o, n) = (owner.clone(), node.to_owned());
        self.query(StorageOp::PepDeleteNode, move |s| s.pep_delete_node(&o, &n))
    }

    fn pep_publish(
        &self,
        owner: &BareJid,
        node: &str,
        create: Option<StoredNode>,
        item: StoredItem,
        keep: u32,
    ) -> StorageFuture<Vec<String>> {
        let (o, n) = (owner.clone(), node.to_owned());
        self.query(StorageOp::PepPublish, move |s| {
            s.pep_publish(&o, &n, create.as_ref(), &item, keep)
        })
    }

    fn pep_items(
        &self,
        owner: &BareJid,
        node: &str,
        ids: Option<Vec<String>>,
        max: Option<u32>,
    ) -> StorageFuture<Vec<StoredItem>> {
        let (o, n) = (owner.clone(), node.to_owned());
        self.query(StorageOp::PepItems, move |s| s.pep_items(&o, &n, ids.as_deref(), max))
    }

    fn pep_retract(&self, owner: &BareJid, node: &str, id: &str) -> StorageFuture<bool> {
        let (o, n, i) = (owner.clone(), node.to_owned(), id.to_owned());
        self.query(StorageOp::PepRetract, move |s| s.pep_retract(&o, &n, &i))
    }

    fn pep_purge(&self, owner: &BareJid, node: &str) -> StorageFuture<()> {
        let (o, n) = (owner.clone(), node.to_owned());
        self.query(StorageOp::PepPurge, move |s| s.pep_purge(&o, &n))
    }

    fn pep_last_items(
        &self,
        viewer: &BareJid,
        owners: Vec<BareJid>,
        nodes: Vec<String>,
    ) -> StorageFuture<Vec<(BareJid, String, StoredItem)>> {
        let v = viewer.clone();
        self.query(StorageOp::PepLastItems, move |s| s.pep_last_items(&v, &owners, &nodes))
    }
}

/// Stores one offline message of `username`'s (in the caller's transaction).
fn insert_offline(tx: &rusqlite::Transaction<'_>, username: &str, stanza: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO offline_messages (username, stanza) VALUES (?1, ?2)",
        params![username, stanza],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(node: &str) -> BareJid {
        BareJid::new(node, "localhost").unwrap()
    }

    fn put(item: RosterItem) -> RosterFn {
        Box::new(move |_| ItemChange::Put(item))
    }

    fn visible(node: &str) -> RosterItem {
        RosterItem {
            in_roster: true,
            ..RosterItem::new(jid(node))
        }
    }

    fn hidden_request(node: &str) -> RosterItem {
        RosterItem {
            state: SubState {
                pending_in: true,
                ..SubState::default()
            },
            ..RosterItem::new(jid(node))
        }
    }

    fn store_with(users: &[&str]) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        for u in users {
            s.create_user(&jid(u), &Credentials::derive("pw", 4096)).unwrap();
        }
        (dir, s)
    }

    #[test]
    fn a_local_pair_changes_together_or_not_at_all() {
        let (dir, mut s) = store_with(&["a", "b"]);
        let (a, b) = (jid("a"), jid("b"));
        let (ua, ub) = s
            .update_roster_pair(
                &a,
                &b,
                put(visible("b")),
                Box::new(|first: &RosterUpdate, _| {
                    assert_eq!(first.after.as_ref().map(|i| i.in_roster), Some(true));
                    ItemChange::Put(hidden_request("a"))
                }),
            )
            .unwrap();
        assert_eq!((ua.version, ub.version), (1, 0));
        assert!(s.roster_item(&jid("a"), &b).unwrap().is_some());
        assert_eq!(s.roster_item(&jid("b"), &a).unwrap(), Some(hidden_request("a")));

        // The second change fails: the first is rolled back with it.
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.update_roster_pair(
                &a,
                &jid("b"),
                Box::new(|_| ItemChange::Delete),
                Box::new(|_, _| panic!("the contact's side fails")),
            )
        }));
        assert!(failed.is_err());
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        assert!(s.roster_item(&jid("a"), &b).unwrap().is_some(), "a's side is unchanged");
        assert_eq!(s.roster(&jid("a")).unwrap().version, 1);
        // And the store still works.
        let (ua, _) = s
            .update_roster_pair(
                &a,
                &b,
                Box::new(|_| ItemChange::Delete),
                Box::new(|_, _| ItemChange::Delete),
            )
            .unwrap();
        assert_eq!(ua.version, 2);
        assert_eq!(s.roster_item(&jid("b"), &a).unwrap(), None);
    }

    #[test]
    fn roster_limits_refuse_new_records_only() {
        let (_dir, mut s) = store_with(&["u"]);
        s.set_roster_limits(RosterLimits {
            max_items: 2,
            max_pending: 1,
        });
        for c in ["c1", "c2"] {
            assert_eq!(
                s.update_roster_item(&jid("u"), &jid(c), put(visible(c)))
                    .unwrap()
                    .refused,
                None
            );
        }
        let full = s.update_roster_item(&jid("u"), &jid("c3"), put(visible("c3"))).unwrap();
        assert_eq!(full.refused, Some(RosterLimit::Items));
        assert_eq!((full.before, full.after, full.version), (None, None, 2));
        assert_eq!(s.roster_item(&jid("u"), &jid("c3")).unwrap(), None);
        // Changing an item already there is not adding one.
        let renamed = RosterItem {
            name: Some("One".into()),
            ..visible("c1")
        };
        assert_eq!(
            s.update_roster_item(&jid("u"), &jid("c1"), put(renamed))
                .unwrap()
                .refused,
            None
        );
        // Hidden requests count apart from the roster.
        assert_eq!(
            s.update_roster_item(&jid("u"), &jid("r1"), put(hidden_request("r1")))
                .unwrap()
                .refused,
            None
        );
        let r2 = s
            .update_roster_item(&jid("u"), &jid("r2"), put(hidden_request("r2")))
            .unwrap();
        assert_eq!(r2.refused, Some(RosterLimit::Pending));
        // A hidden request turned into an item needs room in the roster.
        let accepted = s.update_roster_item(&jid("u"), &jid("r1"), put(visible("r1"))).unwrap();
        assert_eq!(accepted.refused, Some(RosterLimit::Items));
        assert_eq!(
            s.roster_item(&jid("u"), &jid("r1")).unwrap(),
            Some(hidden_request("r1"))
        );
    }

    #[test]
    fn old_removal_records_are_pruned_and_older_versions_get_the_whole_roster() {
        let (_dir, mut s) = store_with(&["u"]);
        s.kept_removals = 2;
        for c in ["x1", "x2", "x3", "x4"] {
            s.update_roster_item(&jid("u"), &jid(c), put(visible(c))).unwrap();
        }
        for c in ["x1", "x2", "x3", "x4"] {
            s.update_roster_item(&jid("u"), &jid(c), Box::new(|_| ItemChange::Delete))
                .unwrap();
        }
        // Removals at versions 5..8; those at 5 and 6 are gone.
        let rows: i64 = s
            .conn
            .query_row(
                "SELECT count(*) FROM roster_removals WHERE username = 'u@localhost'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 3, "two removals and the mark");
        assert_eq!(s.roster_changes(&jid("u"), 4).unwrap(), None);
        assert_eq!(
            s.roster_changes(&jid("u"), 5).unwrap(),
            None,
            "the removal at 6 is gone"
        );
        assert_eq!(
            s.roster_changes(&jid("u"), 6).unwrap(),
            Some((
                8,
                vec![RosterChange::Removed(jid("x3")), RosterChange::Removed(jid("x4"))]
            ))
        );
        assert_eq!(s.roster_changes(&jid("u"), 8).unwrap(), Some((8, vec![])));
        // Re-adding a contact whose removal was pruned is an ordinary update.
        s.update_roster_item(&jid("u"), &jid("x1"), put(visible("x1"))).unwrap();
        assert_eq!(
            s.roster_changes(&jid("u"), 8).unwrap(),
            Some((9, vec![RosterChange::Updated(visible("x1"))]))
        );
    }

    /// Found by the load driver: concurrent roster updates from two store
    /// threads failed with "database is locked" and lost a subscription.
    #[test]
    fn concurrent_writers_wait_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        SqliteStore::open(&path)
            .unwrap()
            .create_user(&jid("pub"), &Credentials::derive("pw", 4096))
            .unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut store = SqliteStore::open(&path).unwrap();
                    for i in 0..50 {
                        let contact = BareJid::new(&format!("f{t}x{i}"), "localhost").unwrap();
                        let item = RosterItem {
                            in_roster: true,
                            ..RosterItem::new(contact.clone())
                        };
                        store
                            .update_roster_item(&jid("pub"), &contact, Box::new(move |_| ItemChange::Put(item)))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let roster = SqliteStore::open(&path).unwrap().roster(&jid("pub")).unwrap();
        assert_eq!((roster.items.len(), roster.version), (200, 200));
    }

    /// `shoal user del` with no server running: the contacts' records of
    /// the account lose every subscription (the request-only one goes),
    /// with a new roster version, in the same transaction.
    #[test]
    fn deleting_an_account_offline_ends_the_contacts_subscriptions() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let creds = Credentials::derive("pw", 4096);
        for u in ["romeo", "juliet", "nurse"] {
            s.create_user(&jid(u), &creds).unwrap();
        }
        let romeo = BareJid::new("romeo", "localhost").unwrap();
        let state = |subscription, pending_in| SubState {
            subscription,
            pending_in,
            ..SubState::default()
        };
        for (holder, st, in_roster) in [
            ("juliet", state(Subscription::Both, false), true),
            ("nurse", state(Subscription::None, true), false),
        ] {
            let item = RosterItem {
                state: st,
                in_roster,
                ..RosterItem::new(romeo.clone())
            };
            s.update_roster_item(&jid(holder), &romeo, Box::new(move |_| ItemChange::Put(item)))
                .unwrap();
        }
        assert!(s.delete_account(&romeo).unwrap());
        assert!(!s.delete_account(&romeo).unwrap());
        let juliet = s.roster_item(&jid("juliet"), &romeo).unwrap().unwrap();
        assert_eq!((juliet.state, juliet.in_roster), (SubState::default(), true));
        assert_eq!(s.roster(&jid("juliet")).unwrap().version, 2);
        assert_eq!(s.roster_item(&jid("nurse"), &romeo).unwrap(), None);
        assert!(s.pending_requests(&jid("nurse")).unwrap().is_empty());
    }

    /// Migration 8: a database from before several domains were hosted,
    /// its accounts keyed by username alone, is read as the first
    /// configured domain's, every table along; without a domain it is
    /// refused rather than guessed at.
    #[test]
    fn single_domain_rows_become_the_first_domains_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let creds = Credentials::derive("pw", 4096);
        {
            let mut conn = Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..7] {
                let Migration::Sql(sql) = m else {
                    unreachable!("the first seven are SQL")
                };
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 7).unwrap();
            let tx = conn.transaction().unwrap();
            for u in ["juliet", "romeo"] {
                tx.execute("INSERT INTO users (username) VALUES (?1)", [u]).unwrap();
                SqliteStore::write_credentials(&tx, u, &creds).unwrap();
            }
            tx.execute_batch(
                "INSERT INTO roster_items (username, contact, subscription, in_roster, ver)
                     VALUES ('juliet', 'romeo@a.test', 'both', 1, 1);
                 INSERT INTO roster_versions (username, version) VALUES ('juliet', 1);
                 INSERT INTO roster_removals (username, contact, ver) VALUES ('juliet', 'tybalt@a.test', 1);
                 INSERT INTO profiles (username, nick) VALUES ('juliet', 'Jules');
                 INSERT INTO offline_messages (username, stanza) VALUES ('romeo', '<message/>');
                 INSERT INTO blocklist (username, jid) VALUES ('romeo', 'tybalt@a.test');
                 INSERT INTO archive (owner, id, ts_ms, with_bare, with_full, direction, xml)
                     VALUES ('juliet', 'x', 5, 'romeo@a.test', 'romeo@a.test/r', 'in', '<message/>');
                 INSERT INTO mam_prefs (username, default_mode) VALUES ('juliet', 'roster');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let refused = SqliteStore::open(&path).err().unwrap();
        assert!(
            matches!(refused, StoreError::NeedsDomain { accounts: 2, .. }),
            "{refused}"
        );
        // Nor moved to a domain its rosters say it was not of (a command run
        // without the server's configuration, say).
        let wrong = SqliteStore::open_for_domain(&path, Durability::Normal, "localhost")
            .err()
            .unwrap();
        assert!(
            matches!(&wrong, StoreError::OtherDomain { seen, .. } if seen == "a.test"),
            "{wrong}"
        );
        let mut s = SqliteStore::open_for_domain(&path, Durability::Normal, "a.test").unwrap();
        let at = |n: &str| BareJid::new(n, "a.test").unwrap();
        let (juliet, romeo) = (at("juliet"), at("romeo"));
        assert_eq!(s.list_users().unwrap(), [juliet.clone(), romeo.clone()]);
        assert_eq!(s.credentials(&juliet).unwrap(), Some(creds.clone()));
        assert_eq!(s.credentials(&jid("juliet")).unwrap(), None, "not at another domain");
        assert_eq!(s.roster(&juliet).unwrap().version, 1);
        assert_eq!(
            s.roster_item(&juliet, &romeo).unwrap().map(|i| i.state.subscription),
            Some(Subscription::Both)
        );
        assert_eq!(
            s.roster_changes(&juliet, 0).unwrap().map(|(v, c)| (v, c.len())),
            Some((1, 2)),
            "the item and the removal"
        );
        assert_eq!(s.profile(&juliet).unwrap().nick.as_deref(), Some("Jules"));
        assert_eq!(s.offline_messages(&romeo).unwrap().len(), 1);
        assert_eq!(s.blocklist(&romeo).unwrap(), [Jid::parse("tybalt@a.test").unwrap()]);
        assert_eq!(
            s.mam_prefs(&juliet).unwrap().map(|p| p.default),
            Some(DefaultPolicy::Roster)
        );
        let all = ArchiveQuery {
            max: 10,
            ..ArchiveQuery::default()
        };
        assert_eq!(s.archive_query(&juliet, &all).unwrap().unwrap().count, 1);
        let violations: i64 = s
            .conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(violations, 0);
        // The moved account goes with all it had.
        assert!(s.delete_user(&romeo).unwrap());
        assert!(s.offline_messages(&romeo).unwrap().is_empty() && s.blocklist(&romeo).unwrap().is_empty());
        // Later starts find nothing left to move.
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.list_users().unwrap(), [juliet]);
        let version: i64 = s.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
    }

    /// An imported account comes back whole, with keys for one hash only
    /// if that is all it brought; an existing one is refused, or replaced
    /// with all it had.
    #[test]
    fn imported_accounts_read_back_whole() {
        let (_dir, mut s) = store_with(&["juliet"]);
        let mut romeo = visible("romeo");
        romeo.name = Some("Romeo".into());
        romeo.groups = vec!["Montagues".into(), "Friends".into()];
        romeo.state.subscription = Subscription::Both;
        let mut nurse = hidden_request("nurse");
        nurse.pending_request =
            Some("<presence to='juliet@localhost' type='subscribe' from='nurse@localhost'/>".into());
        let sha1_only = Credentials {
            sha1: Credentials::derive("pw", 4096).sha1,
            sha256: None,
        };
        let data = AccountData {
            jid: jid("juliet"),
            credentials: sha1_only.clone(),
            roster: vec![nurse.clone(), romeo],
            vcard: Some((
                "<vCard xmlns='vcard-temp'><NICKNAME>Jules</NICKNAME></vCard>".into(),
                Profile {
                    nick: Some("Jules".into()),
                    ..Profile::default()
                },
            )),
            offline: vec!["<message to='juliet@localhost'><body>1</body></message>".into()],
            private: vec![(
                "{storage:bookmarks}storage".into(),
                "<storage xmlns='storage:bookmarks'><conference jid='r@c.localhost'/></storage>".into(),
            )],
            pep: vec![(
                pep_node("urn:xmpp:bookmarks:1", AccessModel::Whitelist, &["romeo"]),
                vec![pep_item("a", 2), pep_item("b", 1)],
            )],
        };
        assert!(!s.import_account(&data, false).unwrap(), "juliet exists");
        assert!(s.import_account(&data, true).unwrap());
        let mut expected = data.clone();
        expected.roster.sort_by(|a, b| a.jid.cmp(&b.jid));
        assert_eq!(s.account_data(&jid("juliet")).unwrap(), Some(expected));
        assert_eq!(s.credentials(&jid("juliet")).unwrap(), Some(sha1_only));
        assert_eq!(s.roster(&jid("juliet")).unwrap().version, 1);
        assert_eq!(s.pending_requests(&jid("juliet")).unwrap(), [nurse]);
        assert_eq!(s.profile(&jid("juliet")).unwrap().nick.as_deref(), Some("Jules"));
        assert_eq!(s.account_data(&jid("nobody")).unwrap(), None);
        // A password later gives it both hashes.
        let both = Credentials::derive("pw2", 4096);
        assert!(s.set_credentials(&jid("juliet"), &both).unwrap());
        assert_eq!(s.credentials(&jid("juliet")).unwrap(), Some(both));
    }

    #[test]
    fn accounts_round_trip_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let creds = Credentials::derive("pw", 4096);
        {
            let mut s = SqliteStore::open(&path).unwrap();
            assert!(s.create_user(&jid("alice"), &creds).unwrap());
            assert!(!s.create_user(&jid("alice"), &creds).unwrap());
            assert!(s.create_user(&jid("bob"), &creds).unwrap());
        }
        let mut s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.credentials(&jid("alice")).unwrap(), Some(creds.clone()));
        assert_eq!(s.list_users().unwrap(), [jid("alice"), jid("bob")]);
        let new = Credentials::derive("pw2", 4096);
        assert!(s.set_credentials(&jid("alice"), &new).unwrap());
        assert!(!s.set_credentials(&jid("carol"), &new).unwrap());
        assert_eq!(s.credentials(&jid("alice")).unwrap(), Some(new));
        assert!(s.delete_user(&jid("alice")).unwrap());
        assert!(!s.delete_user(&jid("alice")).unwrap());
        assert_eq!(s.credentials(&jid("alice")).unwrap(), None);
        let left: i64 = s
            .conn
            .query_row("SELECT count(*) FROM scram_credentials", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 2, "credentials of deleted users are deleted with them");
    }

    fn archive_row(owner: &str, id: &str, ts_ms: i64, with: &str) -> ArchiveRow {
        ArchiveRow {
            owner: jid(owner),
            id: id.into(),
            ts_ms,
            with: Jid::parse(with).unwrap(),
            direction: mam::Direction::In,
            xml: format!("<message><body>{id}</body></message>"),
            default: DefaultPolicy::Always,
        }
    }

    fn archived(s: &SqliteStore, owner: &str) -> Vec<String> {
        let all = ArchiveQuery {
            max: 100,
            ..ArchiveQuery::default()
        };
        let page = s.archive_query(&jid(owner), &all).unwrap().unwrap();
        page.messages.into_iter().map(|m| m.id).collect()
    }

    /// The SQLite archive answers every query as the reference in memory
    /// ([`mam::page_of`]) does.
    #[test]
    fn archive_queries_match_the_reference() {
        let (_dir, mut s) = store_with(&["juliet"]);
        let with = [
            "romeo@montague.lit/orchard",
            "nurse@capulet.lit/kitchen",
            "romeo@montague.lit/hall",
        ];
        // Times in pairs: two messages in one millisecond.
        let rows: Vec<ArchiveRow> = (0..12i64)
            .map(|i| archive_row("juliet", &format!("id{i}"), 1000 * (i / 2), with[i as usize % 3]))
            .collect();
        let jobs: Vec<&[ArchiveRow]> = rows.iter().map(std::slice::from_ref).collect();
        let mut clock = 0;
        assert!(s.archive_group(&mut clock, &jobs).unwrap().iter().all(Result::is_ok));
        let romeo = |j: &str| Some(Jid::parse(j).unwrap());
        let filters = [
            ArchiveQuery::default(),
            ArchiveQuery {
                with: romeo("romeo@montague.lit"),
                ..ArchiveQuery::default()
            },
            ArchiveQuery {
                with: romeo("romeo@montague.lit/hall"),
                ..ArchiveQuery::default()
            },
            ArchiveQuery {
                start_ms: Some(2000),
                end_ms: Some(4000),
                ..ArchiveQuery::default()
            },
            ArchiveQuery {
                start_ms: Some(2500),
                ..ArchiveQuery::default()
            },
            ArchiveQuery {
                end_ms: Some(-1),
                ..ArchiveQuery::default()
            },
            ArchiveQuery {
                start_ms: Some(99_000),
                ..ArchiveQuery::default()
            },
            ArchiveQuery {
                after_id: Some("id2".into()),
                before_id: Some("id9".into()),
                ..ArchiveQuery::default()
            },
            ArchiveQuery {
                ids: Some(vec!["id5".into(), "id1".into(), "nope".into()]),
                ..ArchiveQuery::default()
            },
            ArchiveQuery {
                after_id: Some("nope".into()),
                ..ArchiveQuery::default()
            },
        ];
        let cursors = [
            Cursor::First,
            Cursor::Last,
            Cursor::Index(3),
            Cursor::After("id4".into()),
            Cursor::Before("id7".into()),
            Cursor::After("id11".into()),
            Cursor::Before("id0".into()),
            Cursor::After("nope".into()),
        ];
        // Where an empty page starts means nothing.
        let norm = |p: Option<ArchivePage>| {
            p.map(|p| ArchivePage {
                first_index: if p.messages.is_empty() { 0 } else { p.first_index },
                ..p
            })
        };
        for filter in &filters {
            for cursor in &cursors {
                for max in [0, 1, 2, 5, 50] {
                    let q = ArchiveQuery {
                        cursor: cursor.clone(),
                        max,
                        ..filter.clone()
                    };
                    let got = s.archive_query(&jid("juliet"), &q).unwrap();
                    assert_eq!(norm(got), norm(mam::page_of(&rows, &q)), "{q:?}");
                }
            }
        }
        let others = ArchiveQuery {
            after_id: Some("id1".into()),
            ..ArchiveQuery::default()
        };
        assert_eq!(
            s.archive_query(&jid("romeo"), &others).unwrap(),
            None,
            "ids are per owner"
        );
    }

    #[test]
    fn archiving_follows_the_owners_choices_and_goes_with_the_account() {
        let (_dir, mut s) = store_with(&["juliet", "romeo"]);
        let tybalt = Jid::parse("tybalt@capulet.lit").unwrap();
        let prefs = MamPrefs {
            default: DefaultPolicy::Roster,
            always: vec![tybalt.clone()],
            never: vec![],
        };
        assert!(s.set_mam_prefs(&jid("juliet"), &prefs).unwrap());
        assert!(!s.set_mam_prefs(&jid("nobody"), &prefs).unwrap());
        assert_eq!(s.mam_prefs(&jid("juliet")).unwrap(), Some(prefs));
        assert_eq!(s.mam_prefs(&jid("romeo")).unwrap(), None);
        s.update_roster_item(&jid("juliet"), &jid("nurse"), put(visible("nurse")))
            .unwrap();
        assert!(s.block(&jid("romeo"), &[tybalt]).unwrap());
        let rows = [
            archive_row("juliet", "a", 5, "nurse@localhost/kitchen"),
            archive_row("juliet", "b", 5, "mercutio@localhost/square"),
            archive_row("juliet", "c", 5, "tybalt@capulet.lit/street"),
            archive_row("romeo", "d", 5, "tybalt@capulet.lit/street"),
            archive_row("romeo", "e", 5, "juliet@localhost/balcony"),
            archive_row("nobody", "f", 5, "juliet@localhost/balcony"),
        ];
        let jobs: Vec<&[ArchiveRow]> = rows.iter().map(std::slice::from_ref).collect();
        let mut clock = 0;
        assert!(s.archive_group(&mut clock, &jobs).unwrap().iter().all(Result::is_ok));
        assert_eq!(archived(&s, "juliet"), ["a", "c"], "in the roster, or always");
        assert_eq!(archived(&s, "romeo"), ["e"], "not from whom he blocked");
        // A job that fails is rolled back alone.
        let again = [
            archive_row("juliet", "g", 6, "nurse@localhost/kitchen"),
            archive_row("juliet", "a", 6, "nurse@localhost/kitchen"),
            archive_row("juliet", "h", 6, "nurse@localhost/kitchen"),
        ];
        let results = s.archive_group(&mut clock, &[&again[..2], &again[2..]]).unwrap();
        assert!(results[0].is_err() && results[1].is_ok());
        assert_eq!(archived(&s, "juliet"), ["a", "c", "h"]);
        assert!(s.delete_user(&jid("juliet")).unwrap());
        let left: (i64, i64) = s
            .conn
            .query_row(
                "SELECT (SELECT count(*) FROM archive WHERE owner = 'juliet@localhost'),
                        (SELECT count(*) FROM mam_prefs)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(left, (0, 0));
    }

    #[test]
    fn muc_rooms_round_trip_with_their_affiliations() {
        let (_dir, mut s) = store_with(&[]);
        let service = "conference.localhost";
        let (romeo, juliet) = (jid("romeo"), jid("juliet"));
        let room = StoredRoom {
            name: "balcony".into(),
            config: "<x xmlns='jabber:x:data' type='submit'/>".into(),
            subject: None,
            subject_by: None,
            created_ms: 7,
            affiliations: vec![
                (romeo.clone(), Affiliation::Owner, None),
                (juliet.clone(), Affiliation::None, None),
            ],
        };
        s.muc_save_room(service, &room).unwrap();
        s.muc_set_affiliation(service, "balcony", &juliet, Some((Affiliation::Outcast, Some("rude"))))
            .unwrap();
        // Not a stored room: nothing.
        s.muc_set_affiliation(service, "garden", &juliet, Some((Affiliation::Member, None)))
            .unwrap();
        let saved = StoredRoom {
            subject: Some("Fire".into()),
            subject_by: Some("Romeo".into()),
            affiliations: Vec::new(),
            ..room.clone()
        };
        s.muc_save_room(service, &saved).unwrap();
        let rooms = s.muc_rooms(service).unwrap();
        assert_eq!(
            rooms,
            [StoredRoom {
                affiliations: vec![
                    (juliet.clone(), Affiliation::Outcast, Some("rude".into())),
                    (romeo.clone(), Affiliation::Owner, None),
                ],
                ..saved.clone()
            }]
        );
        assert!(s.muc_rooms("other.localhost").unwrap().is_empty());
        s.muc_set_affiliation(service, "balcony", &juliet, None).unwrap();
        assert_eq!(s.muc_rooms(service).unwrap()[0].affiliations.len(), 1);
        s.muc_delete_room(service, "balcony").unwrap();
        assert!(s.muc_rooms(service).unwrap().is_empty());
        let left: i64 = s
            .conn
            .query_row("SELECT count(*) FROM muc_affiliations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0, "affiliations go with their room");
    }

    #[test]
    fn blocklists_round_trip_and_go_with_their_user() {
        let (_dir, mut s) = store_with(&["juliet"]);
        let j = |s: &str| Jid::parse(s).unwrap();
        assert!(s
            .block(&jid("juliet"), &[j("romeo@montague.lit"), j("capulet.lit")])
            .unwrap());
        // Blocking twice changes nothing.
        assert!(s.block(&jid("juliet"), &[j("romeo@montague.lit")]).unwrap());
        assert!(!s.block(&jid("nobody"), &[j("romeo@montague.lit")]).unwrap());
        assert_eq!(
            s.blocklist(&jid("juliet")).unwrap(),
            [j("capulet.lit"), j("romeo@montague.lit")]
        );
        let removed = s
            .unblock(&jid("juliet"), Some(&[j("capulet.lit"), j("tybalt@capulet.lit")]))
            .unwrap();
        assert_eq!(removed, [j("capulet.lit")], "only what was there");
        assert!(s.block(&jid("juliet"), &[j("nurse@capulet.lit")]).unwrap());
        assert_eq!(s.unblock(&jid("juliet"), None).unwrap().len(), 2);
        assert!(s.blocklist(&jid("juliet")).unwrap().is_empty());
        assert!(s.block(&jid("juliet"), &[j("romeo@montague.lit")]).unwrap());
        assert!(s.delete_user(&jid("juliet")).unwrap());
        let left: i64 = s
            .conn
            .query_row("SELECT count(*) FROM blocklist", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }

    fn pep_item(id: &str, ms: i64) -> StoredItem {
        StoredItem {
            id: id.into(),
            xml: format!("<tune xmlns='http://jabber.org/protocol/tune'><title>{id}</title></tune>"),
            publisher: Some(jid("juliet")),
            published_ms: ms,
        }
    }

    fn pep_node(name: &str, access: AccessModel, whitelist: &[&str]) -> StoredNode {
        StoredNode {
            node: name.into(),
            config: NodeConfig {
                access_model: access,
                roster_groups: vec!["Friends".into()],
                max_items: MaxItems::Count(2),
                ..NodeConfig::default()
            },
            whitelist: whitelist.iter().map(|w| jid(w)).collect(),
        }
    }

    #[test]
    fn pep_items_are_trimmed_and_last_items_follow_access() {
        let (_dir, mut s) = store_with(&["juliet", "romeo", "nurse"]);
        let (juliet, romeo, nurse) = (jid("juliet"), jid("romeo"), jid("nurse"));
        let tune = pep_node("tune", AccessModel::Presence, &[]);
        assert!(s
            .pep_publish(&juliet, "tune", Some(&tune), &pep_item("a", 1), 2)
            .unwrap()
            .is_empty());
        assert!(s
            .pep_publish(&juliet, "tune", None, &pep_item("b", 2), 2)
            .unwrap()
            .is_empty());
        // "a" again replaces "a" and is the newest, so "b" is the oldest.
        assert!(s
            .pep_publish(&juliet, "tune", None, &pep_item("a", 3), 2)
            .unwrap()
            .is_empty());
        assert_eq!(
            s.pep_publish(&juliet, "tune", None, &pep_item("c", 4), 2).unwrap(),
            ["b"]
        );
        let ids = |items: Vec<StoredItem>| items.into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(ids(s.pep_items(&juliet, "tune", None, None).unwrap()), ["c", "a"]);
        assert_eq!(ids(s.pep_items(&juliet, "tune", None, Some(1)).unwrap()), ["c"]);
        let wanted = ["a".to_owned(), "zz".to_owned()];
        assert_eq!(
            ids(s.pep_items(&juliet, "tune", Some(&wanted[..]), None).unwrap()),
            ["a"]
        );
        assert_eq!(s.pep_items(&juliet, "tune", None, None).unwrap()[0], pep_item("c", 4));

        let secret = pep_node("secret", AccessModel::Whitelist, &["romeo"]);
        s.pep_publish(&juliet, "secret", Some(&secret), &pep_item("s", 5), 2)
            .unwrap();
        let friends = pep_node("friends", AccessModel::Roster, &[]);
        s.pep_publish(&juliet, "friends", Some(&friends), &pep_item("f", 6), 2)
            .unwrap();
        // Romeo is in her Friends group.
        let friend = RosterItem {
            groups: vec!["Friends".into()],
            ..visible("romeo")
        };
        s.update_roster_item(&juliet, &romeo, put(friend)).unwrap();
        let nodes: Vec<String> = ["tune", "secret", "friends", "none"].map(String::from).to_vec();
        let seen = |s: &SqliteStore, viewer: &BareJid| -> Vec<(String, String)> {
            let rows = s.pep_last_items(viewer, std::slice::from_ref(&juliet), &nodes).unwrap();
            rows.into_iter().map(|(o, n, i)| (format!("{o}/{n}"), i.id)).collect()
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
        };
        assert_eq!(
            seen(&s, &romeo),
            pairs(&[
                ("juliet@localhost/friends", "f"),
                ("juliet@localhost/secret", "s"),
                ("juliet@localhost/tune", "c")
            ])
        );
        assert_eq!(seen(&s, &nurse), pairs(&[("juliet@localhost/tune", "c")]));
        assert_eq!(seen(&s, &juliet).len(), 3, "the owner sees all her nodes");

        // Configuration and whitelist round-trip; deleting a node takes its items.
        let mut nodes = s.pep_nodes(&juliet).unwrap();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        assert_eq!(nodes, [friends, secret.clone(), tune]);
        let open = StoredNode {
            whitelist: vec![jid("nurse"), jid("romeo")],
            ..secret
        };
        s.pep_set_node(&juliet, &open).unwrap();
        assert_eq!(
            s.pep_items(&juliet, "secret", None, None).unwrap().len(),
            1,
            "items stay"
        );
        assert!(s.pep_nodes(&juliet).unwrap().contains(&open));
        assert!(s.pep_retract(&juliet, "tune", "c").unwrap());
        assert!(!s.pep_retract(&juliet, "tune", "c").unwrap());
        s.pep_purge(&juliet, "tune").unwrap();
        assert!(s.pep_items(&juliet, "tune", None, None).unwrap().is_empty());
        assert!(s.pep_delete_node(&juliet, "secret").unwrap());
        assert!(!s.pep_delete_node(&juliet, "secret").unwrap());
        let left: i64 = s
            .conn
            .query_row("SELECT count(*) FROM pep_whitelist", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
        // The account takes everything with it.
        assert!(s.delete_user(&juliet).unwrap());
        let left: i64 = s
            .conn
            .query_row("SELECT count(*) FROM pep_items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn private_xml_round_trips_within_its_bound_and_goes_with_its_user() {
        let (_dir, mut s) = store_with(&["juliet"]);
        let juliet = jid("juliet");
        let key = "{exodus:prefs}exodus";
        assert_eq!(s.private_xml(&juliet, key).unwrap(), None);
        assert!(s
            .set_private_xml(&juliet, key, Some("<exodus xmlns='exodus:prefs'>1</exodus>"))
            .unwrap());
        assert!(s
            .set_private_xml(&juliet, key, Some("<exodus xmlns='exodus:prefs'>2</exodus>"))
            .unwrap());
        assert_eq!(
            s.private_xml(&juliet, key).unwrap().as_deref(),
            Some("<exodus xmlns='exodus:prefs'>2</exodus>")
        );
        assert!(!s
            .set_private_xml(&jid("nobody"), key, Some("<exodus xmlns='exodus:prefs'/>"))
            .unwrap());
        // Up to MAX_KEYS keys; a kept one still changes at the bound.
        for i in 1..private::MAX_KEYS {
            assert!(s
                .set_private_xml(&juliet, &format!("{{urn:t:{i}}}p"), Some("<p/>"))
                .unwrap());
        }
        assert!(!s.set_private_xml(&juliet, "{urn:t:more}p", Some("<p/>")).unwrap());
        assert!(s
            .set_private_xml(&juliet, key, Some("<exodus xmlns='exodus:prefs'>3</exodus>"))
            .unwrap());
        assert_eq!(s.private_xml_all(&juliet).unwrap().len(), private::MAX_KEYS);
        assert!(s.set_private_xml(&juliet, key, None).unwrap());
        assert_eq!(s.private_xml(&juliet, key).unwrap(), None);
        assert!(s.set_private_xml(&juliet, "{urn:t:more}p", Some("<p/>")).unwrap());
        assert!(s.delete_user(&juliet).unwrap());
        let left: i64 = s
            .conn
            .query_row("SELECT count(*) FROM private_xml", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }
}
