//! One bound session as the rest of the server sees it, and the table of
//! them. The [`SessionManager`](crate::session_manager::SessionManager) owns
//! the table's changes; routing reads it from any thread (ejabberd's
//! session table is an ETS table for the same reason: delivery must not
//! queue behind one process).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::{Message, Recipient};
use bytes::Bytes;
use dashmap::DashMap;

use crate::c2s::Outbound;
use crate::error::StreamError;
use crate::jid::{BareJid, FullJid};

/// Orders to a connection from outside it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Control {
    /// Close the stream with this error (resource conflict, account
    /// removed, server shutdown).
    Kick(StreamError),
}

const UNAVAILABLE: i32 = i32::MIN;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub struct Session {
    /// Tells this session apart from a later one with the same full JID.
    pub id: u64,
    pub jid: FullJid,
    out: Outbound,
    control: Recipient<Control>,
    /// The priority of the last available presence, or `UNAVAILABLE`.
    priority: AtomicI32,
    /// The last available presence, serialised without `to` (see
    /// [`crate::presence::addressed`]), to answer probes.
    presence: Mutex<Option<Bytes>>,
    /// Asked for the roster: gets roster pushes (RFC 6121 §2.1.6).
    interested: AtomicBool,
}

impl Session {
    pub fn new(jid: FullJid, out: Outbound, control: Recipient<Control>) -> Session {
        Session {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            jid,
            out,
            control,
            priority: AtomicI32::new(UNAVAILABLE),
            presence: Mutex::new(None),
            interested: AtomicBool::new(false),
        }
    }

    /// Queues serialised stanzas for this session's socket. False when the
    /// session is gone or its queue is over its limit (it is being closed).
    pub fn deliver(&self, bytes: Bytes) -> bool {
        self.out.send(bytes).is_ok()
    }

    pub fn control(&self, msg: Control) {
        // A full mailbox or a stopped actor both mean the session is ending.
        let _ = self.control.try_send(msg);
    }

    /// The priority of an available session; `None` before initial presence
    /// and after unavailable.
    pub fn priority(&self) -> Option<i8> {
        match self.priority.load(Ordering::Acquire) {
            UNAVAILABLE => None,
            p => Some(p as i8),
        }
    }

    pub fn set_available(&self, priority: i8) {
        self.priority.store(i32::from(priority), Ordering::Release);
    }

    pub fn set_unavailable(&self) {
        self.priority.store(UNAVAILABLE, Ordering::Release);
        if let Ok(mut p) = self.presence.lock() {
            *p = None;
        }
    }

    /// The last available presence (without `to`), if any.
    pub fn last_presence(&self) -> Option<Bytes> {
        self.presence.lock().ok().and_then(|p| p.clone())
    }

    pub(crate) fn set_last_presence(&self, template: Bytes) {
        if let Ok(mut p) = self.presence.lock() {
            *p = Some(template);
        }
    }

    pub fn is_interested(&self) -> bool {
        self.interested.load(Ordering::Relaxed)
    }

    pub fn set_interested(&self) {
        self.interested.store(true, Ordering::Relaxed);
    }
}

/// Bound sessions by bare JID. Cloning shares the table.
///
/// Hashed with foldhash (randomly seeded per process) rather than SipHash:
/// fan-out looks up every follower here, and SipHash was a sixth of its
/// instructions.
#[derive(Clone, Default)]
pub struct SessionTable {
    users: Arc<DashMap<BareJid, Vec<Arc<Session>>, foldhash::fast::RandomState>>,
}

impl SessionTable {
    pub fn get(&self, jid: &FullJid) -> Option<Arc<Session>> {
        let bare = jid.to_bare();
        let sessions = self.users.get(&bare)?;
        sessions.iter().find(|s| s.jid == *jid).cloned()
    }

    /// The sessions of one account (empty when it has none).
    pub fn resources(&self, user: &BareJid) -> Vec<Arc<Session>> {
        self.users.get(user).map(|s| s.clone()).unwrap_or_default()
    }

    /// Runs `f` on one account's sessions without copying them: fan-out's
    /// hot path. The table's shard stays read-locked meanwhile, so `f`
    /// must be short and must not change the table.
    pub fn with_resources<R>(&self, user: &BareJid, f: impl FnOnce(&[Arc<Session>]) -> R) -> R {
        match self.users.get(user) {
            Some(sessions) => f(&sessions),
            None => f(&[]),
        }
    }

    /// Number of bound sessions.
    pub fn len(&self) -> usize {
        self.users.iter().map(|e| e.value().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.users.iter().flat_map(|e| e.value().clone()).collect()
    }

    /// Adds a session; returns the one it replaces (same full JID).
    pub(crate) fn insert(&self, session: Arc<Session>) -> Option<Arc<Session>> {
        let mut entry = self.users.entry(session.jid.to_bare()).or_default();
        let old = entry
            .iter()
            .position(|s| s.jid == session.jid)
            .map(|i| entry.swap_remove(i));
        entry.push(session);
        old
    }

    /// Removes the session `id` if it is still the one bound to `jid`.
    pub(crate) fn remove(&self, jid: &FullJid, id: u64) -> Option<Arc<Session>> {
        let bare = jid.to_bare();
        let mut removed = None;
        self.users.remove_if_mut(&bare, |_, sessions| {
            if let Some(i) = sessions.iter().position(|s| s.id == id) {
                removed = Some(sessions.swap_remove(i));
            }
            sessions.is_empty()
        });
        removed
    }

    pub(crate) fn count_for(&self, user: &BareJid) -> usize {
        self.users.get(user).map_or(0, |s| s.len())
    }
}
