//! The storage interface the actors use. Shoal's server ships a SQLite
//! implementation; embedders can plug in their own. Every method returns a
//! future so that a backend never blocks an actor's event loop.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

pub use crate::error::StorageError;
use crate::sasl::Credentials;

pub type StorageFuture<T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'static>>;

/// Accounts. Usernames are normalised JID localparts.
pub trait Storage: Send + Sync + 'static {
    /// The stored keys of a user, or `None` when there is no such user.
    fn credentials(&self, username: &str) -> StorageFuture<Option<Credentials>>;

    /// Creates an account; `false` when it exists already.
    fn create_user(&self, username: &str, credentials: Credentials) -> StorageFuture<bool>;

    /// Replaces an account's keys; `false` when there is no such user.
    fn set_credentials(&self, username: &str, credentials: Credentials) -> StorageFuture<bool>;

    /// Deletes an account and everything stored for it; `false` when there
    /// was no such user.
    fn delete_user(&self, username: &str) -> StorageFuture<bool>;

    /// All usernames, sorted.
    fn list_users(&self) -> StorageFuture<Vec<String>>;
}

/// Accounts in memory: for tests and for embedders that keep nothing.
#[derive(Default)]
pub struct MemoryStorage {
    users: Mutex<BTreeMap<String, Credentials>>,
}

impl MemoryStorage {
    fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, Credentials>) -> T,
    ) -> StorageFuture<T> {
        let out = match self.users.lock() {
            Ok(mut users) => Ok(f(&mut users)),
            Err(_) => Err(StorageError::Unavailable),
        };
        Box::pin(std::future::ready(out))
    }
}

impl Storage for MemoryStorage {
    fn credentials(&self, username: &str) -> StorageFuture<Option<Credentials>> {
        let username = username.to_owned();
        self.with(move |u| u.get(&username).cloned())
    }

    fn create_user(&self, username: &str, credentials: Credentials) -> StorageFuture<bool> {
        let username = username.to_owned();
        self.with(move |u| match u.entry(username) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(credentials);
                true
            }
        })
    }

    fn set_credentials(&self, username: &str, credentials: Credentials) -> StorageFuture<bool> {
        let username = username.to_owned();
        self.with(move |u| match u.get_mut(&username) {
            Some(c) => {
                *c = credentials;
                true
            }
            None => false,
        })
    }

    fn delete_user(&self, username: &str) -> StorageFuture<bool> {
        let username = username.to_owned();
        self.with(move |u| u.remove(&username).is_some())
    }

    fn list_users(&self) -> StorageFuture<Vec<String>> {
        self.with(|u| u.keys().cloned().collect())
    }
}
