//! Links: one outbound stream per (local, remote) domain pair, as Prosody
//! and ejabberd keep them. Each is a [`Slot`] in a table the router's
//! callers write into directly (a stanza for a link that is up costs a
//! lock and a queue push, no actor hop), and, while it exists, a [`Link`]
//! actor that runs a [`ConnectionManager`] and moves the slot between its
//! states:
//!
//! - **connecting**: stanzas wait, up to `max_queued`;
//! - **up**: stanzas go on the stream's queue (fairly between senders);
//! - **failed**: the attempt failed; what waited went back to its senders
//!   (`<remote-server-not-found/>` when the domain has no server,
//!   `<remote-server-timeout/>` otherwise), and so does what comes until
//!   `reconnect_after` has passed;
//! - **idle**: no actor; the next stanza starts one.
//!
//! A stream that ends with stanzas still queued gives them back to the
//! slot, and the manager connects again: they go on the next stream, or
//! back to their senders if it cannot be made. A link silent for
//! `idle_timeout` is closed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;

use super::outbound::{self, CloseOnDrop, Mode};
use super::{sender_key, Auth, S2sContext, S2sError};
use crate::c2s::outbound::Outbound;
use crate::error::StanzaCondition;
use crate::outbound::{
    ConnectFuture, Connection, ConnectionEvent, ConnectionManager, Connector, ManagerSettings, Shutdown, Subscribe,
};
use bytes::Bytes;

use crate::jid::Jid;
use crate::services::delivered::{Delivered, Track};
use crate::stanza::{IqType, Kind, Stanza};

/// The links by remote domain, then by local domain: found without
/// allocating a key per stanza.
#[derive(Default)]
pub(super) struct Links {
    map: DashMap<String, Vec<Arc<Slot>>>,
}

/// Who opened a stream: we (a link, which carries our stanzas) or the
/// other server (which carries its).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One stream between servers as `shoal s2s list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub direction: Direction,
    pub local: String,
    /// The remote domain (inbound: every domain the stream authenticated,
    /// comma-separated).
    pub remote: String,
    /// "connecting", "up", "failed: WHY" or "idle".
    pub state: String,
    /// How the remote domain authenticated, once it has.
    pub auth: Option<Auth>,
    pub tls: bool,
    /// Stanzas waiting for the link, or bytes queued on it when up.
    pub queued: usize,
    /// Time in the current state.
    pub since: Duration,
}

/// A link that is up: its stream's queue, and how it authenticated.
#[derive(Clone)]
pub(super) struct Established {
    pub(super) out: Outbound,
    pub(super) auth: Auth,
    pub(super) tls: bool,
}

/// An inbound stream that authenticated a domain, as listed.
pub(super) struct InboundEntry {
    pub(super) local: String,
    pub(super) remotes: Vec<String>,
    pub(super) auth: Auth,
    pub(super) tls: bool,
    pub(super) since: Instant,
    pub(super) out: Outbound,
}

impl InboundEntry {
    pub(super) fn info(&self) -> LinkInfo {
        LinkInfo {
            direction: Direction::In,
            local: self.local.clone(),
            remote: self.remotes.join(","),
            state: "up".into(),
            auth: Some(self.auth),
            tls: self.tls,
            queued: self.out.queued(),
            since: self.since.elapsed(),
        }
    }
}

/// What goes on a link: a stanza, answered with an error if it cannot go,
/// or a copy written for its recipient already (a follower's presence, a
/// room's message for an occupant: never answered).
pub(super) enum Outgoing {
    Stanza(Stanza),
    Copy { sender: u64, bytes: Bytes },
}

impl Outgoing {
    /// Queues it on `slot`'s link, which is up (`out`); what the link
    /// refuses goes back. An IQ request is owed its answer from now on.
    fn send(self, cx: &S2sContext, slot: &Slot, out: &Outbound) {
        let (sender, bytes, kind) = match &self {
            Outgoing::Stanza(stanza) => {
                if stanza.is_iq_request() {
                    let tracked = crate::c2s::lock(&slot.pending).track(stanza, &cx.settings.requests);
                    if let Track::Refused(condition) = tracked {
                        return self.bounce(cx, condition);
                    }
                }
                let kind = crate::metrics::StanzaKind::from(stanza.kind);
                (sender_key(stanza.from()), stanza.to_bytes(), kind)
            }
            Outgoing::Copy { sender, bytes } => {
                let kind = crate::metrics::StanzaKind::of_bytes(bytes).unwrap_or(crate::metrics::StanzaKind::Presence);
                (*sender, bytes.clone(), kind)
            }
        };
        if out.send_routed(sender, bytes).is_ok() {
            crate::metrics::stanza(crate::metrics::Stream::S2s, crate::metrics::Direction::Out, kind);
        } else {
            if let (Outgoing::Stanza(s), true) = (&self, self.is_request()) {
                if let (Some(from), Some(id)) = (s.from(), s.id()) {
                    crate::c2s::lock(&slot.pending).answer(from, id);
                }
            }
            self.bounce(cx, StanzaCondition::ResourceConstraint);
        }
    }

    fn is_request(&self) -> bool {
        matches!(self, Outgoing::Stanza(s) if s.is_iq_request())
    }

    fn bounce(&self, cx: &S2sContext, condition: StanzaCondition) {
        if let Outgoing::Stanza(stanza) = self {
            bounce(cx, stanza, condition);
        }
    }
}

struct Slot {
    /// (local, remote).
    key: (String, String),
    state: Mutex<State>,
    since: Mutex<Instant>,
    /// Stanzas delivered so far: a link whose count stands still is idle.
    activity: AtomicU64,
    /// IQ requests sent on the link whose answers have not come (they come
    /// on the stream the other server opened).
    pending: Mutex<Delivered>,
}

enum State {
    Idle,
    Connecting(VecDeque<Outgoing>),
    Up(Established),
    Failed {
        until: Instant,
        condition: StanzaCondition,
        why: String,
    },
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::c2s::lock(&self.state)
    }

    fn set(&self, state: &mut State, next: State) {
        let up = matches!(next, State::Up(_));
        if matches!(state, State::Up(_)) != up {
            crate::metrics::s2s_stream(crate::metrics::Direction::Out, up);
        }
        *state = next;
        *crate::c2s::lock(&self.since) = Instant::now();
    }

    fn info(&self) -> LinkInfo {
        let state = self.lock();
        let (name, queued, up) = match &*state {
            State::Idle => ("idle".to_owned(), 0, None),
            State::Connecting(waiting) => ("connecting".to_owned(), waiting.len(), None),
            State::Up(link) => ("up".to_owned(), link.out.queued(), Some(link)),
            State::Failed { why, .. } => (format!("failed: {why}"), 0, None),
        };
        LinkInfo {
            direction: Direction::Out,
            local: self.key.0.clone(),
            remote: self.key.1.clone(),
            state: name,
            auth: up.map(|l| l.auth),
            tls: up.is_some_and(|l| l.tls),
            queued,
            since: crate::c2s::lock(&self.since).elapsed(),
        }
    }

    /// Sends `item` on the link, queues it while the link comes up (and
    /// starts the link if none is), or sends it back.
    fn push(self: &Arc<Self>, cx: &S2sContext, item: Outgoing) {
        self.activity.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        match &mut *state {
            State::Up(link) => {
                let out = link.out.clone();
                drop(state);
                item.send(cx, self, &out);
            }
            State::Connecting(waiting) if waiting.len() < cx.settings.max_queued => waiting.push_back(item),
            State::Connecting(_) => {
                drop(state);
                item.bounce(cx, StanzaCondition::ResourceConstraint);
            }
            State::Failed { until, condition, .. } if Instant::now() < *until => {
                let condition = *condition;
                drop(state);
                item.bounce(cx, condition);
            }
            State::Idle | State::Failed { .. } => {
                self.set(&mut state, State::Connecting(VecDeque::from([item])));
                drop(state);
                let Some(cx) = cx.this.upgrade() else { return };
                let (arbiter, slot) = (cx.arbiter.clone(), self.clone());
                Link::start_in_arbiter(&arbiter, move |_| Link {
                    cx,
                    slot,
                    manager: None,
                    seen: 0,
                    quiet_since: Instant::now(),
                });
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A link still up when the table goes (the server is stopping).
        if matches!(*self.lock(), State::Up(_)) {
            crate::metrics::s2s_stream(crate::metrics::Direction::Out, false);
        }
    }
}

impl Links {
    pub(super) fn list(&self) -> Vec<LinkInfo> {
        let mut links: Vec<LinkInfo> = self
            .map
            .iter()
            .flat_map(|s| s.iter().map(|s| s.info()).collect::<Vec<_>>())
            .collect();
        links.sort_by(|a, b| (&a.local, &a.remote).cmp(&(&b.local, &b.remote)));
        links
    }

    pub(super) fn close_all(&self) {
        for slots in self.map.iter() {
            for slot in slots.iter() {
                if let State::Up(link) = &*slot.lock() {
                    drop(CloseOnDrop(link.out.clone()));
                }
            }
        }
    }

    /// The link from `local` to `remote`, made if there is none; `Err`
    /// with what the sender gets when there can be none (`None`: nothing,
    /// the stanza is not ours to send).
    fn slot(&self, cx: &S2sContext, local: &str, remote: &str) -> Result<Arc<Slot>, Option<StanzaCondition>> {
        // Never relayed: only what our own domains send leaves.
        if !cx.is_ours(local) {
            log::debug!("not relaying a stanza from {local} to {remote}");
            return Err(None);
        }
        if cx.is_blocked(remote) {
            return Err(Some(StanzaCondition::PolicyViolation));
        }
        let find = |slots: &[Arc<Slot>]| slots.iter().find(|s| s.key.0 == local).cloned();
        if let Some(slot) = self.map.get(remote).and_then(|slots| find(&slots)) {
            return Ok(slot);
        }
        if self.map.len() >= cx.settings.max_links {
            return Err(Some(StanzaCondition::ResourceConstraint));
        }
        let mut slots = self.map.entry(remote.to_owned()).or_default();
        Ok(find(&slots).unwrap_or_else(|| {
            let slot = Arc::new(Slot {
                key: (local.to_owned(), remote.to_owned()),
                state: Mutex::new(State::Idle),
                since: Mutex::new(Instant::now()),
                activity: AtomicU64::new(0),
                pending: Mutex::default(),
            });
            slots.push(slot.clone());
            slot
        }))
    }

    /// An answer from `remote` to `requester` (at `local`) for request
    /// `id`: true if one of our requests waited for it (and no longer
    /// does). Others are not routed: late, repeated, or never asked for.
    pub(super) fn answered(&self, local: &str, remote: &str, requester: &Jid, id: &str) -> bool {
        let Some(slots) = self.map.get(remote) else {
            return false;
        };
        let slot = slots.iter().find(|s| s.key.0 == local);
        slot.is_some_and(|s| crate::c2s::lock(&s.pending).answer(requester, id))
    }

    /// Forgets `slot` if it is idle (its link has ended).
    fn forget_if_idle(&self, slot: &Arc<Slot>) {
        let remote = &slot.key.1;
        if let Some(mut slots) = self.map.get_mut(remote) {
            slots.retain(|s| !(Arc::ptr_eq(s, slot) && matches!(*s.lock(), State::Idle)));
        }
        self.map.remove_if(remote, |_, slots| slots.is_empty());
    }
}

/// The router's way out: `stanza` (from one of our domains, to a remote
/// one) goes on its link.
pub(super) fn deliver(cx: &S2sContext, stanza: Stanza) {
    let (Some(from), Some(to)) = (stanza.from(), stanza.to()) else {
        return;
    };
    match cx.links.slot(cx, from.domain(), to.domain()) {
        Ok(slot) => slot.push(cx, Outgoing::Stanza(stanza)),
        Err(Some(condition)) => bounce(cx, &stanza, condition),
        Err(None) => {}
    }
}

/// A stanza from `from`, written for `to` already (`bytes`), goes on its
/// link: a broadcast's copy for one remote recipient, serialised once.
pub(super) fn deliver_copy(cx: &S2sContext, from: &Jid, to: &Jid, bytes: Bytes) {
    if let Ok(slot) = cx.links.slot(cx, from.domain(), to.domain()) {
        slot.push(
            cx,
            Outgoing::Copy {
                sender: sender_key(Some(from)),
                bytes,
            },
        );
    }
}

/// RFC 6120 §8.3.3: what cannot go gets an error back, except what is
/// never answered (broadcast presence, errors, results).
fn bounce(cx: &S2sContext, stanza: &Stanza, condition: StanzaCondition) {
    match stanza.kind {
        Kind::Message(_) | Kind::Iq(IqType::Get | IqType::Set) => cx.router.bounce(stanza, condition),
        Kind::Presence(t) if t.is_subscription() => cx.router.bounce(stanza, condition),
        _ => {}
    }
}

/// Opens a link's streams for its connection manager.
struct S2sConnector {
    cx: Arc<S2sContext>,
    local: String,
    remote: String,
}

impl Connector for S2sConnector {
    type Handle = Established;

    fn connect(&self) -> ConnectFuture<Established> {
        let (cx, local, remote) = (self.cx.clone(), self.local.clone(), self.remote.clone());
        Box::pin(async move {
            let (tcp, peer) = outbound::dial(&cx, &remote).await.map_err(S2sError::into_io)?;
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let (out, closed) = outbound::spawn(cx, tcp, peer, local, remote.clone(), Mode::Link(Some(ready_tx)))
                .map_err(S2sError::into_io)?;
            // Dropped (the attempt timed out, or failed): the stream closes.
            let guard = CloseOnDrop(out.clone());
            match ready_rx.await {
                Ok(Ok((auth, tls))) => Ok(Connection {
                    handle: Established { out, auth, tls },
                    closed: Box::pin(async move {
                        let _guard = guard;
                        let _ = closed.await;
                    }),
                }),
                Ok(Err(e)) => Err(e.into_io()),
                Err(_) => Err(S2sError::Stream(format!("{remote} closed the connection")).into_io()),
            }
        })
    }

    fn target(&self) -> String {
        outbound::describe(&self.local, &self.remote)
    }
}

/// The actor of a link that is not idle.
struct Link {
    cx: Arc<S2sContext>,
    slot: Arc<Slot>,
    manager: Option<Addr<ConnectionManager<S2sConnector>>>,
    /// The slot's activity count at the last look, and since when it stood.
    seen: u64,
    quiet_since: Instant,
}

impl Link {
    fn name(&self) -> String {
        outbound::describe(&self.slot.key.0, &self.slot.key.1)
    }

    /// Ends the link: the manager closes its stream.
    fn shut(&mut self, ctx: &mut Context<Self>) {
        if let Some(manager) = self.manager.take() {
            manager.do_send(Shutdown);
        }
        ctx.stop();
    }

    fn on_connected(&mut self, link: Established) {
        let out = link.out.clone();
        let waiting = {
            let mut state = self.slot.lock();
            let waiting = match &mut *state {
                State::Connecting(waiting) => std::mem::take(waiting),
                _ => VecDeque::new(),
            };
            self.slot.set(&mut state, State::Up(link));
            waiting
        };
        log::info!("{}: up; {} waiting stanzas sent", self.name(), waiting.len());
        for item in waiting {
            item.send(&self.cx, &self.slot, &out);
        }
    }

    /// The stream ended: what it had not written waits for the next one
    /// (the manager connects again); with nothing waiting, the link ends.
    fn on_disconnected(&mut self, ctx: &mut Context<Self>) {
        let mut state = self.slot.lock();
        let unsent = match &*state {
            State::Up(link) => link.out.take_unsent(),
            State::Connecting(_) => return,
            _ => Vec::new(),
        };
        let waiting: VecDeque<Outgoing> = unsent
            .iter()
            .filter_map(|b| Stanza::reparse(b))
            .map(Outgoing::Stanza)
            .collect();
        if waiting.is_empty() {
            self.slot.set(&mut state, State::Idle);
            drop(state);
            log::info!("{}: closed", self.name());
            return self.shut(ctx);
        }
        log::info!(
            "{}: lost with {} stanzas unsent; connecting again",
            self.name(),
            waiting.len()
        );
        self.slot.set(&mut state, State::Connecting(waiting));
    }

    /// An attempt failed: what waits goes back to its senders, and so
    /// does what comes for a while.
    fn on_failed(&mut self, ctx: &mut Context<Self>, err: &std::io::Error) {
        let condition = S2sError::of(err).map_or(StanzaCondition::RemoteServerTimeout, S2sError::condition);
        let why = S2sError::of(err).map_or_else(|| err.to_string(), ToString::to_string);
        let waiting = {
            let mut state = self.slot.lock();
            let waiting = match &mut *state {
                State::Connecting(waiting) => std::mem::take(waiting),
                _ => VecDeque::new(),
            };
            let until = Instant::now() + self.cx.settings.reconnect_after;
            self.slot.set(
                &mut state,
                State::Failed {
                    until,
                    condition,
                    why: why.clone(),
                },
            );
            waiting
        };
        log::warn!(
            "{}: {why}; {} stanzas returned to their senders with <{}/>",
            self.name(),
            waiting.len(),
            condition.as_str()
        );
        crate::metrics::s2s_connect_failure(condition);
        for item in &waiting {
            item.bounce(&self.cx, condition);
        }
        self.shut(ctx);
    }

    /// Requests not answered in time go back to their senders.
    fn expire_requests(&mut self) {
        let expired = crate::c2s::lock(&self.slot.pending).expired(Instant::now());
        for waiting in expired {
            crate::metrics::s2s_iq_timeout();
            self.cx
                .router
                .route(waiting.error(StanzaCondition::RemoteServerTimeout));
        }
    }

    /// Closes the link once nothing has gone on it for `idle_timeout`.
    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        let now = self.slot.activity.load(Ordering::Relaxed);
        if now != self.seen {
            self.seen = now;
            self.quiet_since = Instant::now();
            return;
        }
        if self.quiet_since.elapsed() < self.cx.settings.idle_timeout {
            return;
        }
        let mut state = self.slot.lock();
        if let State::Up(link) = &*state {
            if link.out.queued() == 0 && crate::c2s::lock(&self.slot.pending).is_empty() {
                self.slot.set(&mut state, State::Idle);
                drop(state);
                log::info!("{}: idle; closed", self.name());
                self.shut(ctx);
            }
        }
    }
}

impl Actor for Link {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let settings = &self.cx.settings;
        let manager_settings = ManagerSettings {
            connect_timeout: settings.connect_timeout,
            reconnect_after: settings.reconnect_after,
            max_backoff: settings.reconnect_after * 8,
            jitter: 0.2,
        };
        let connector = S2sConnector {
            cx: self.cx.clone(),
            local: self.slot.key.0.clone(),
            remote: self.slot.key.1.clone(),
        };
        let manager = ConnectionManager::new(connector, manager_settings).start();
        manager.do_send(Subscribe(ctx.address().recipient()));
        self.manager = Some(manager);
        let tick = (settings.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        ctx.run_interval(tick, |act, ctx| act.check_idle(ctx));
        ctx.run_interval(Duration::from_millis(500), |act, _| act.expire_requests());
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(manager) = self.manager.take() {
            manager.do_send(Shutdown);
        }
        // An idle slot leaves the table; a failed one stays until it is
        // tried again (the table is bounded by max_links).
        // Answers cannot be waited for without the link: requests still
        // waiting go back to their senders.
        for waiting in crate::c2s::lock(&self.slot.pending).drain() {
            self.cx
                .router
                .route(waiting.error(StanzaCondition::RemoteServerTimeout));
        }
        self.cx.links.forget_if_idle(&self.slot);
    }
}

impl Handler<ConnectionEvent<Established>> for Link {
    type Result = ();

    fn handle(&mut self, event: ConnectionEvent<Established>, ctx: &mut Context<Self>) {
        match event {
            ConnectionEvent::Connected(out) => self.on_connected(out),
            ConnectionEvent::Disconnected => self.on_disconnected(ctx),
            ConnectionEvent::AttemptFailed(err) => self.on_failed(ctx, &err),
        }
    }
}
