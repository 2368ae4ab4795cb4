//! One bound session as the rest of the server sees it, and the table of
//! them. The [`SessionManager`](crate::session_manager::SessionManager) owns
//! the table's changes; routing reads it from any thread (ejabberd's
//! session table is an ETS table for the same reason: delivery must not
//! queue behind one process).
//!
//! Delivery is of two kinds. What the user caused (replies to its own
//! requests, roster pushes, answers to its probes) goes through
//! [`Session::deliver`], and a user that does not read it is disconnected.
//! What another entity routes here goes through [`Session::deliver_from`],
//! which refuses a sender's excess instead ([`Refused::Busy`]): a flood
//! costs the flooder its stanzas, never the recipient its connection.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::SystemTime;

use actix::{Message, Recipient};
use bytes::Bytes;
use dashmap::DashMap;

use crate::c2s::{Outbound, SendError};
use crate::error::StreamError;
use crate::jid::{BareJid, FullJid, Jid};
use crate::xep::caps::Features;

/// Orders to a connection from outside it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Control {
    /// Close the stream with this error (resource conflict, account
    /// removed, server shutdown).
    Kick(StreamError),
    /// A session waiting to be resumed (XEP-0198) has more queued than it
    /// may: end it, its stanzas going where they would without it.
    Expire,
}

const UNAVAILABLE: i32 = i32::MIN;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Seeded at random per process, so that nobody can pick a JID whose key
/// collides with another sender's and spend that sender's share.
static SENDER_KEYS: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// Where a stanza on its way to sessions comes from, hashed once however
/// many sessions it goes to.
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    /// `None`: the server itself.
    jid: Option<&'a Jid>,
    /// The sender's account (bare JID): its resources share one share.
    key: u64,
}

impl<'a> Origin<'a> {
    /// The sender of a stanza: its `from`, `None` for the server.
    pub fn of(from: Option<&'a Jid>) -> Origin<'a> {
        let key = from.map_or(0, |jid| SENDER_KEYS.hash_one((jid.node(), jid.domain())));
        Origin { jid: from, key }
    }

    /// The sender, `None` for the server.
    pub fn jid(&self) -> Option<&'a Jid> {
        self.jid
    }
}

/// Why [`Session::deliver_from`] did not queue a stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The session is gone or being closed.
    Gone,
    /// The session is behind, and this sender has its share of the queue
    /// (or routed traffic all of its share): try later. The session stays.
    Busy,
}

/// How a session's client is connected. More come as transports do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Transport {
    /// A TCP stream without TLS.
    Tcp,
    /// TLS, after STARTTLS or from the first byte (XEP-0368).
    Tls,
    /// XMPP over WebSocket (RFC 7395), in the clear...
    WebSocket,
    /// ...and over TLS.
    WebSocketTls,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::WebSocket,
        Transport::WebSocketTls,
    ];

    /// Its name in the server's listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::WebSocket => "websocket",
            Transport::WebSocketTls => "websocket-tls",
        }
    }
}

/// The connection that carries a session now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub transport: Transport,
    pub peer: SocketAddr,
}

/// Stream management (XEP-0198) as a session has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SmStatus {
    Off = 0,
    /// Acknowledgements, without resumption.
    Enabled = 1,
    Resumable = 2,
    /// The connection is gone; the session waits to be resumed.
    Detached = 3,
}

impl SmStatus {
    /// Its name in the server's listings.
    pub fn as_str(self) -> &'static str {
        match self {
            SmStatus::Off => "off",
            SmStatus::Enabled => "enabled",
            SmStatus::Resumable => "resumable",
            SmStatus::Detached => "detached",
        }
    }
}

pub struct Session {
    /// Tells this session apart from a later one with the same full JID.
    pub id: u64,
    pub jid: FullJid,
    /// When it was bound.
    pub since: SystemTime,
    /// Its connection, for the server's session list; `None` for a session
    /// the host program made without one.
    link: Mutex<Option<Link>>,
    /// An [`SmStatus`], as its number.
    sm: AtomicU8,
    out: Outbound,
    /// The connection's actor; another one after a resumption (XEP-0198).
    control: Mutex<Recipient<Control>>,
    /// The priority of the last available presence, or `UNAVAILABLE`.
    priority: AtomicI32,
    /// The last available presence, serialised without `to` (see
    /// [`crate::presence::addressed`]), to answer probes.
    presence: Mutex<Option<Bytes>>,
    /// Asked for the roster: gets roster pushes (RFC 6121 §2.1.6).
    interested: AtomicBool,
    /// Enabled Message Carbons (XEP-0280): gets copies of the account's
    /// chats with its other resources.
    carbons: AtomicBool,
    /// IQ requests to the server being answered (see the router).
    iqs_in_flight: AtomicU32,
    /// Told when the last request in flight is answered (XEP-0198: a
    /// request is handled once answered).
    iqs_answered: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// The account's blocklist (XEP-0191) is not empty: only then does
    /// delivery to this session look it up.
    blocking: AtomicBool,
    /// Asked for the blocklist: gets its pushes (XEP-0191 §3.3).
    wants_blocklist: AtomicBool,
    /// The client said it is inactive (XEP-0352): presence waits in `held`.
    inactive: AtomicBool,
    /// Something waits in `held`: the one thing delivery reads otherwise.
    holding: AtomicBool,
    held: Mutex<Option<Box<crate::xep::csi::Held>>>,
    /// The roster version of the last push of each of a few recent
    /// contacts (see [`Session::roster_push_is_current`]). Boxed: most
    /// sessions get no pushes.
    pushed: Mutex<Option<Box<Pushed>>>,
    /// Its entity capabilities (XEP-0115), once known.
    caps: Mutex<Caps>,
}

/// A session's caps: those known, and the ver it announced last while
/// the server asks what that one stands for.
#[derive(Default)]
struct Caps {
    known: Option<Arc<Features>>,
    awaited: Option<Box<str>>,
}

/// Contacts and the roster version last pushed of each, oldest first.
type Pushed = VecDeque<(BareJid, u64)>;

/// Contacts whose last pushed version a session remembers.
const PUSHES_REMEMBERED: usize = 32;

impl Session {
    /// True when a roster push of `contact`'s item at `version` is not
    /// older than the last one this session got for it (and notes it).
    /// Pushes come from several tasks (the user's own subscription
    /// stanzas, a contact's arriving from its server), each after its
    /// storage transaction: the older state of an item must not be the
    /// last the client sees.
    pub(crate) fn roster_push_is_current(&self, contact: &BareJid, version: u64) -> bool {
        let mut pushed = crate::c2s::lock(&self.pushed);
        let pushed = pushed.get_or_insert_with(Default::default);
        // The most recently pushed last: the least recent is forgotten.
        let entry = match pushed.iter().position(|(c, _)| c == contact) {
            Some(i) if pushed[i].1 > version => return false,
            Some(i) => pushed.remove(i).map(|(c, _)| c),
            None => None,
        };
        if entry.is_none() && pushed.len() == PUSHES_REMEMBERED {
            pushed.pop_front();
        }
        pushed.push_back((entry.unwrap_or_else(|| contact.clone()), version));
        true
    }

    pub fn new(jid: FullJid, out: Outbound, control: Recipient<Control>) -> Session {
        Session {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            jid,
            since: SystemTime::now(),
            link: Mutex::new(None),
            sm: AtomicU8::new(0),
            out,
            control: Mutex::new(control),
            priority: AtomicI32::new(UNAVAILABLE),
            presence: Mutex::new(None),
            interested: AtomicBool::new(false),
            carbons: AtomicBool::new(false),
            iqs_in_flight: AtomicU32::new(0),
            iqs_answered: Mutex::new(None),
            blocking: AtomicBool::new(false),
            wants_blocklist: AtomicBool::new(false),
            inactive: AtomicBool::new(false),
            holding: AtomicBool::new(false),
            held: Mutex::new(None),
            pushed: Mutex::new(None),
            caps: Mutex::new(Caps::default()),
        }
    }

    /// The connection that carries the session (the last one, while it
    /// waits to be resumed).
    pub fn link(&self) -> Option<Link> {
        *crate::c2s::lock(&self.link)
    }

    pub fn set_link(&self, link: Link) {
        *crate::c2s::lock(&self.link) = Some(link);
    }

    pub fn sm_status(&self) -> SmStatus {
        match self.sm.load(Ordering::Relaxed) {
            1 => SmStatus::Enabled,
            2 => SmStatus::Resumable,
            3 => SmStatus::Detached,
            _ => SmStatus::Off,
        }
    }

    pub(crate) fn set_sm_status(&self, status: SmStatus) {
        self.sm.store(status as u8, Ordering::Relaxed);
    }

    /// Counts one more request in flight, unless `max` are already.
    pub(crate) fn take_iq_slot(&self, max: u32) -> bool {
        self.iqs_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    pub(crate) fn release_iq_slot(&self) {
        if self.iqs_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(waiting) = crate::c2s::lock(&self.iqs_answered).take() {
                let _ = waiting.send(());
            }
        }
    }

    /// `None` when no request of this session is being answered; else a
    /// receiver told when none is.
    pub(crate) fn when_iqs_answered(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        if self.iqs_in_flight.load(Ordering::Acquire) == 0 {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut waiting = crate::c2s::lock(&self.iqs_answered);
        *waiting = Some(tx);
        // The last answer may have come before the sender was in place.
        if self.iqs_in_flight.load(Ordering::Acquire) == 0 {
            *waiting = None;
            return None;
        }
        Some(rx)
    }

    /// True while the account blocks someone (see [`crate::xep::blocking`]).
    pub fn is_blocking(&self) -> bool {
        self.blocking.load(Ordering::SeqCst)
    }

    pub(crate) fn set_blocking(&self, blocking: bool) {
        self.blocking.store(blocking, Ordering::SeqCst);
    }

    pub fn wants_blocklist(&self) -> bool {
        self.wants_blocklist.load(Ordering::Relaxed)
    }

    pub fn set_wants_blocklist(&self) {
        self.wants_blocklist.store(true, Ordering::Relaxed);
    }

    /// Queues serialised stanzas the user caused for this session's
    /// socket. False when the session is gone or its queue is over its
    /// limit (it is being closed).
    pub fn deliver(&self, bytes: Bytes) -> bool {
        self.release_held();
        let kind = crate::metrics::StanzaKind::of_bytes(&bytes);
        let sent = self.out.send(bytes).is_ok();
        if sent {
            delivered(kind);
        }
        sent
    }

    /// XEP-0352: the client is inactive (`true`) or active again; on
    /// becoming active, the presence that waited goes out.
    pub fn set_inactive(&self, inactive: bool) {
        self.inactive.store(inactive, Ordering::SeqCst);
        if !inactive {
            // Under the lock, whatever `holding` says: a presence held
            // just now by another thread goes out too.
            self.flush_held();
        }
    }

    /// Queues a contact's presence from `origin`, or keeps it while the
    /// client is inactive (the latest per sender).
    pub fn deliver_presence(&self, origin: Origin<'_>, bytes: Bytes) -> Result<(), Refused> {
        if self.inactive.load(Ordering::Relaxed) {
            if let Some(from) = origin.jid {
                let mut held = crate::c2s::lock(&self.held);
                // Checked again under the lock: `set_inactive(false)` takes
                // the lock after clearing the flag.
                if self.inactive.load(Ordering::SeqCst) {
                    let room = held.get_or_insert_default().hold(from, origin.key, bytes);
                    self.holding.store(true, Ordering::SeqCst);
                    drop(held);
                    if !room {
                        self.flush_held();
                    }
                    return Ok(());
                }
            }
        }
        self.deliver_from(origin, bytes)
    }

    /// Sends what waited for an inactive client, ahead of what comes now.
    fn release_held(&self) {
        if self.holding.load(Ordering::SeqCst) {
            self.flush_held();
        }
    }

    /// Queues what waited, under the lock (so that nothing delivered
    /// meanwhile overtakes it: a delivery that sees `holding` waits here),
    /// each with its sender's share. Presence a busy queue refuses is
    /// dropped, as it would have been then.
    fn flush_held(&self) {
        let mut held = crate::c2s::lock(&self.held);
        for (key, bytes) in held.take().map(|mut h| h.take()).unwrap_or_default() {
            let kind = crate::metrics::StanzaKind::of_bytes(&bytes);
            if self.out.send_routed(key, bytes).is_ok() {
                delivered(kind);
            }
        }
        self.holding.store(false, Ordering::SeqCst);
    }

    /// Queues a stanza from `origin`. From the user's own account or the
    /// server it is the user's own traffic ([`Session::deliver`]); from
    /// anyone else (including the server's answer on another account's
    /// behalf, such as a contact's vCard) it is refused rather than let
    /// overflow the queue.
    pub fn deliver_from(&self, origin: Origin<'_>, bytes: Bytes) -> Result<(), Refused> {
        self.release_held();
        let own = origin.jid.is_none_or(|from| {
            from.domain() == self.jid.domain() && (from.node().is_none() || from.node() == self.jid.node())
        });
        let kind = crate::metrics::StanzaKind::of_bytes(&bytes);
        let sent = if own {
            self.out.send(bytes)
        } else {
            self.out.send_routed(origin.key, bytes)
        };
        match sent {
            Ok(()) => {
                delivered(kind);
                Ok(())
            }
            Err(SendError::Busy) => Err(Refused::Busy),
            Err(SendError::Overfull) => {
                // Queued all the same, for where the session's leftovers go.
                delivered(kind);
                self.control(Control::Expire);
                Ok(())
            }
            Err(SendError::Closed | SendError::Overflow) => Err(Refused::Gone),
        }
    }

    pub fn control(&self, msg: Control) {
        // A full mailbox or a stopped actor both mean the session is ending.
        let _ = crate::c2s::lock(&self.control).try_send(msg);
    }

    /// The connection that carries this session now (a resumption).
    pub(crate) fn set_control(&self, control: Recipient<Control>) {
        *crate::c2s::lock(&self.control) = control;
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
        // Caps are announced in available presence: gone with it.
        self.set_caps(None);
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

    /// Its entity capabilities (XEP-0115), if known.
    pub fn caps(&self) -> Option<Arc<Features>> {
        crate::c2s::lock(&self.caps).known.clone()
    }

    /// Sets its caps (`None`: none known), forgetting any it waited for.
    pub fn set_caps(&self, caps: Option<Arc<Features>>) {
        let mut c = crate::c2s::lock(&self.caps);
        c.known = caps;
        c.awaited = None;
    }

    /// True when its caps ask for notifications of PEP node `node`
    /// (`node+notify`, XEP-0163): without caps, none.
    pub fn notifies(&self, node: &str) -> bool {
        crate::c2s::lock(&self.caps)
            .known
            .as_ref()
            .is_some_and(|f| f.notifies(node))
    }

    /// It announced `ver`, which the server is finding out about: its caps
    /// stay as they are until then.
    pub(crate) fn await_caps(&self, ver: &str) {
        crate::c2s::lock(&self.caps).awaited = Some(ver.into());
    }

    /// `features` are what `ver` stands for: its caps if it still awaits
    /// that ver. Gives the caps it had then, `None` if it does not.
    pub(crate) fn caps_learned(&self, ver: &str, features: &Arc<Features>) -> Option<Option<Arc<Features>>> {
        let mut c = crate::c2s::lock(&self.caps);
        if c.awaited.as_deref() != Some(ver) {
            return None;
        }
        c.awaited = None;
        Some(c.known.replace(features.clone()))
    }

    /// Nobody told what `ver` stands for: a session that awaits it has no
    /// caps.
    pub(crate) fn caps_failed(&self, ver: &str) {
        let mut c = crate::c2s::lock(&self.caps);
        if c.awaited.as_deref() == Some(ver) {
            *c = Caps::default();
        }
    }

    pub fn is_interested(&self) -> bool {
        self.interested.load(Ordering::Relaxed)
    }

    pub fn set_interested(&self) {
        self.interested.store(true, Ordering::Relaxed);
    }

    /// True when the session enabled Message Carbons (XEP-0280).
    pub fn carbons(&self) -> bool {
        self.carbons.load(Ordering::Relaxed)
    }

    pub fn set_carbons(&self, enabled: bool) {
        self.carbons.store(enabled, Ordering::Relaxed);
    }
}

/// A stanza of `kind` was queued for a client session.
fn delivered(kind: Option<crate::metrics::StanzaKind>) {
    if let Some(kind) = kind {
        crate::metrics::stanza(crate::metrics::Stream::C2s, crate::metrics::Direction::Out, kind);
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
    /// The blocklists (XEP-0191) of the accounts bound here: read wherever
    /// sessions are, by the router and the presence shards alike.
    blocklists: Arc<crate::xep::blocking::Blocklists>,
}

impl SessionTable {
    pub fn blocklists(&self) -> &crate::xep::blocking::Blocklists {
        &self.blocklists
    }

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

    /// Closes every session of `user` but `except` (a session id) with
    /// `error`; how many were told.
    pub fn kick(&self, user: &BareJid, error: &StreamError, except: Option<u64>) -> usize {
        self.with_resources(user, |sessions| {
            let closing = sessions.iter().filter(|s| Some(s.id) != except);
            closing.map(|s| s.control(Control::Kick(error.clone()))).count()
        })
    }

    pub(crate) fn count_for(&self, user: &BareJid) -> usize {
        self.users.get(user).map_or(0, |s| s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::Actor;

    /// An actor that takes control messages and does nothing.
    struct Nobody;

    impl Actor for Nobody {
        type Context = actix::Context<Self>;
    }

    impl actix::Handler<Control> for Nobody {
        type Result = ();

        fn handle(&mut self, _: Control, _: &mut actix::Context<Self>) {}
    }

    #[test]
    fn an_older_roster_push_of_an_item_does_not_follow_a_newer_one() {
        actix::System::new().block_on(async {
            let (out, _reader) = Outbound::detached(1 << 16);
            let jid = FullJid::parse("alice@localhost/r").unwrap();
            let session = Session::new(jid, out, Nobody.start().recipient());
            let (bob, carol) = (
                BareJid::parse("bob@b.test").unwrap(),
                BareJid::parse("carol@b.test").unwrap(),
            );
            assert!(session.roster_push_is_current(&bob, 7));
            // Another item's older change still goes; this one's does not.
            assert!(session.roster_push_is_current(&carol, 6));
            assert!(!session.roster_push_is_current(&bob, 6));
            assert!(session.roster_push_is_current(&bob, 7));
            assert!(session.roster_push_is_current(&bob, 8));
        });
    }
}
