//! The router: where every stanza goes once the c2s actor has stamped its
//! `from` (ejabberd_router → ejabberd_local / ejabberd_sm). It runs in the
//! caller's context and reads the session table directly, so one message
//! costs no actor hop: it is serialised once and queued on the recipient's
//! socket. Addressing rules follow RFC 6121 §8.5. A session that is far
//! behind refuses others' stanzas rather than be disconnected by them
//! ([`Session::deliver_from`]): messages and IQ requests go back to their
//! sender with `<resource-constraint/>`, presence is dropped.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock, Weak};

use futures_util::FutureExt;

use crate::error::{StanzaCondition, StanzaError};
use crate::hosts::Hosts;
use crate::iq_handler::{IqHandlerTable, IqRequest, IqScope};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::presence::PresenceHub;
use crate::requests::ServerRequests;
use crate::services::Services;
use crate::session::{Origin, Refused, Session, SessionTable};
use crate::stanza::{IqType, Kind, MessageType, PresenceType, Stanza};
use crate::storage::Storage;
use crate::xep::blocking::{self, Blocklists};
use crate::xep::caps::CapsCache;
use crate::xep::mam::{self, MamSettings};
use crate::xml::Element;

#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    /// The hosted domains (virtual hosts), the default first.
    hosts: Hosts,
    sessions: SessionTable,
    iq_handlers: IqHandlerTable,
    storage: Arc<dyn Storage>,
    presence: PresenceHub,
    /// The route table's other domains: published services.
    services: Services,
    /// Offline messages one user may have stored (0: no limit).
    offline_quota: usize,
    /// Offline messages are stored one at a time, in order.
    offline_order: Arc<tokio::sync::Mutex<()>>,
    /// XEP-0313: off unless the host program turns it on.
    mam: MamSettings,
    /// The route table's last entry: other servers (federation), once
    /// set. Weak: what it leads to holds the router.
    remote: OnceLock<Weak<dyn RemoteRoute>>,
    /// IQ requests the server sent, awaiting their answers.
    requests: ServerRequests,
    /// What clients' caps hashes (XEP-0115) stand for.
    caps: CapsCache,
}

/// Where stanzas for domains that are neither ours nor published services
/// go: other servers ([`crate::s2s`]).
pub trait RemoteRoute: Send + Sync {
    /// Sends `stanza` (its `to` in a remote domain) on its way; what cannot
    /// go is answered with an error to its sender.
    fn deliver(&self, stanza: Stanza);

    /// Sends a stanza from `from`, serialised for `to` already (`bytes`),
    /// on its way: a broadcast's copy for one recipient there (presence
    /// for a remote follower, a room's message for a remote occupant),
    /// which is never answered.
    fn deliver_copy(&self, from: &Jid, to: &Jid, bytes: bytes::Bytes);
}

impl Router {
    /// A router for the hosted domains `hosts` (one domain converts: a
    /// [`BareJid`] without node).
    pub fn new(
        hosts: impl Into<Hosts>,
        sessions: SessionTable,
        iq_handlers: IqHandlerTable,
        storage: Arc<dyn Storage>,
        presence: PresenceHub,
    ) -> Router {
        let hosts = hosts.into();
        let services = Services::default();
        presence.set_local(hosts.clone(), services.clone());
        Router {
            inner: Arc::new(Inner {
                hosts,
                sessions,
                iq_handlers,
                storage,
                presence,
                services,
                offline_quota: 1000,
                offline_order: Arc::default(),
                mam: MamSettings::default(),
                remote: OnceLock::new(),
                requests: ServerRequests::default(),
                caps: CapsCache::new(crate::xep::caps::DEFAULT_MAX_ENTRIES),
            }),
        }
    }

    /// Sets how many offline messages one user may have stored (0: no
    /// limit). Only while the router is being built.
    pub fn with_offline_quota(mut self, quota: usize) -> Router {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.offline_quota = quota;
        }
        self
    }

    /// Sets the message archive's settings (XEP-0313; off by default).
    /// Only while the router is being built.
    pub fn with_mam(mut self, settings: MamSettings) -> Router {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.mam = settings;
        }
        self
    }

    /// Sets how many verified caps hashes (XEP-0115) are kept. Only while
    /// the router is being built.
    pub fn with_caps(mut self, max_entries: usize) -> Router {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.caps = CapsCache::new(max_entries);
        }
        self
    }

    /// Routes stanzas for other domains through `remote` (federation).
    /// Set once; later calls change nothing.
    pub fn set_remote(&self, remote: Weak<dyn RemoteRoute>) {
        self.inner.presence.set_remote(remote.clone());
        let _ = self.inner.remote.set(remote);
    }

    /// The way out to other servers, while federation is on.
    pub(crate) fn remote(&self) -> Option<Arc<dyn RemoteRoute>> {
        self.inner.remote.get().and_then(Weak::upgrade)
    }

    /// The message archive's settings.
    pub fn mam(&self) -> &MamSettings {
        &self.inner.mam
    }

    pub(crate) fn offline_quota(&self) -> usize {
        self.inner.offline_quota
    }

    pub(crate) fn offline_order(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.offline_order.clone()
    }

    /// The server's own IQ requests awaiting answers.
    pub fn requests(&self) -> &ServerRequests {
        &self.inner.requests
    }

    /// Sends an IQ `get` or `set` from the server to `to` (from `to`'s
    /// domain if hosted, else from the default one) and resolves to its
    /// answer: the result, or the error (`<remote-server-timeout/>` when
    /// none comes within `timeout`).
    pub fn ask(
        &self,
        kind: IqType,
        to: Jid,
        payload: Element,
        timeout: std::time::Duration,
    ) -> impl std::future::Future<Output = crate::requests::Answer> + 'static {
        let from = self
            .hosts()
            .get(to.domain())
            .map_or_else(|| self.default_domain().clone(), |h| h.domain.clone());
        let asked = self.requests().ask(kind, from.into(), to, payload, timeout);
        let router = self.clone();
        async move {
            let (request, answer) = asked?;
            router.route(request);
            answer.await
        }
    }

    /// The caps cache (XEP-0115).
    pub fn caps(&self) -> &CapsCache {
        &self.inner.caps
    }

    /// Published services by domain (components, in-process services).
    pub fn services(&self) -> &Services {
        &self.inner.services
    }

    pub fn presence(&self) -> &PresenceHub {
        &self.inner.presence
    }

    /// The first hosted domain (a bare JID without node): what the server
    /// names itself where nothing says which hosted domain is meant. Where
    /// a stanza or stream names one, that one is meant instead.
    pub fn default_domain(&self) -> &BareJid {
        &self.inner.hosts.default_host().domain
    }

    /// The hosted domains, with their policies.
    pub fn hosts(&self) -> &Hosts {
        &self.inner.hosts
    }

    /// True when `domain` is one this server hosts.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.inner.hosts.contains(domain)
    }

    pub fn sessions(&self) -> &SessionTable {
        &self.inner.sessions
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    pub fn iq_handlers(&self) -> &IqHandlerTable {
        &self.inner.iq_handlers
    }

    /// The blocklists (XEP-0191) of users with a bound session.
    pub fn blocklists(&self) -> &Blocklists {
        self.inner.sessions.blocklists()
    }

    /// True when `jid` is an account of this server (of any hosted domain).
    pub fn is_local_user(&self, jid: &Jid) -> bool {
        jid.node().is_some() && self.is_local_domain(jid.domain())
    }

    /// Routes a stanza whose `from` the server has already stamped. A
    /// stanza without `to` is for the sender's own account.
    pub fn route(&self, stanza: Stanza) {
        self.route_checked(stanza, true)
    }

    /// [`Router::route`] for a stanza `mam::prepare` found nothing to
    /// archive in: it is not asked again.
    pub(crate) fn route_unarchived(&self, stanza: Stanza) {
        self.route_checked(stanza, false)
    }

    fn route_checked(&self, stanza: Stanza, archive: bool) {
        let Some(to) = self.destination(&stanza) else {
            return log::debug!("dropping a stanza with no addresses");
        };
        // XEP-0191 §3.3: nothing a user sends reaches a JID they blocked.
        let lists = self.blocklists();
        let blocker = |f: &Jid| lists.blocks_outbound(f, &to) && self.is_local_user(f);
        if stanza.from().is_some_and(blocker) {
            return blocking::refuse_outbound(self, &stanza);
        }
        // XEP-0313: archived first, routed once committed (`route_archived`).
        let stanza = match stanza.kind {
            Kind::Message(_) if archive && self.inner.mam.enabled => match mam::prepare(self, stanza) {
                Ok(pending) => {
                    actix_rt::spawn(pending.run());
                    return;
                }
                Err(stanza) => stanza,
            },
            _ => stanza,
        };
        self.route_to(to, stanza, false)
    }

    /// Where a stanza goes: its `to`, or the sender's own account.
    fn destination(&self, stanza: &Stanza) -> Option<Jid> {
        match (stanza.to(), stanza.from()) {
            (Some(to), _) => Some(to.clone()),
            (None, Some(from)) if self.is_local_user(from) => Some(from.to_bare().into()),
            (None, _) => None,
        }
    }

    /// Routes a message [`mam::Pending`] archived (past the checks of
    /// [`Router::route`], which `mam::prepare` made): `stamped` when it
    /// carries its recipient's stanza id already, which must not change.
    pub(crate) fn route_archived(&self, stanza: Stanza, stamped: bool) {
        if let Some(to) = self.destination(&stanza) {
            self.route_to(to, stanza, stamped)
        }
    }

    fn route_to(&self, to: Jid, stanza: Stanza, stamped: bool) {
        // Any hosted domain is this server: its users talk to another
        // hosted domain's without a server-to-server link.
        if !self.is_local_domain(to.domain()) {
            let Some(stanza) = self.to_service(to.domain(), stanza) else {
                return;
            };
            return match self.inner.remote.get().and_then(Weak::upgrade) {
                Some(remote) => remote.deliver(stanza),
                // Federation is off.
                None => self.bounce(&stanza, StanzaCondition::RemoteServerNotFound),
            };
        }
        match to.node() {
            None => self.to_server(&to, stanza),
            Some(_) => {
                // XEP-0359, once: the delivered message, its copies and the
                // stored one carry the same id (the archive's, when archived).
                let mut stanza = stanza;
                if !stamped {
                    crate::xep::sid::stamp(&mut stanza, &to);
                }
                match to.clone().try_into_full() {
                    Ok(full) => self.to_full(&full, stanza),
                    Err(_) => self.to_bare(&to.to_bare(), stanza),
                }
            }
        }
    }

    /// Sends the error reply of `stanza` back to its sender.
    pub fn bounce(&self, stanza: &Stanza, condition: StanzaCondition) {
        if let Some(reply) = stanza.error_reply(&StanzaError::new(condition)) {
            crate::metrics::bounce(condition);
            self.route(reply);
        }
    }

    /// A stanza for the hosted domain `to` names: answered as that domain.
    fn to_server(&self, to: &Jid, stanza: Stanza) {
        match stanza.kind {
            Kind::Iq(IqType::Get | IqType::Set) => self.dispatch_iq(IqScope::Server, to.to_bare(), stanza),
            // Answers to the server's own requests; others (a late one, an
            // answer to a ping) are dropped.
            Kind::Iq(_) => {
                self.inner.requests.answer(stanza);
            }
            // Messages and presence for the server itself have nobody to go to.
            _ => {}
        }
    }

    fn to_bare(&self, user: &BareJid, stanza: Stanza) {
        if self.blocked_inbound(user, &stanza) {
            return blocking::refuse_inbound(self, &stanza);
        }
        match stanza.kind {
            Kind::Iq(IqType::Get | IqType::Set) if self.blocklists().get(user).is_none() => {
                // Answered for an account with no session: its blocklist
                // is in storage (those of online users were checked above).
                let (router, user) = (self.clone(), user.clone());
                actix_rt::spawn(async move {
                    match stanza.from() {
                        Some(from) if blocking::blocks(&router, &user, from).await => {
                            blocking::refuse_inbound(&router, &stanza)
                        }
                        _ => router.dispatch_iq(IqScope::Account, user, stanza),
                    }
                });
            }
            Kind::Iq(IqType::Get | IqType::Set) => self.dispatch_iq(IqScope::Account, user.clone(), stanza),
            Kind::Iq(_) => {}
            Kind::Message(t) => self.message_to_bare(user, t, stanza),
            Kind::Presence(t) if t.is_subscription() => {
                actix_rt::spawn(crate::roster::presence::inbound(self.clone(), stanza));
            }
            // Probes are the server's business (RFC 6121 §4.3): a local
            // client's are answered from its c2s stream (through its
            // PresenceActor shard), another server's by the user's shard;
            // errors to a bare JID go nowhere.
            Kind::Presence(PresenceType::Probe) => {
                if let Some(from) = stanza.from().filter(|f| self.inner.presence.is_remote(&f.to_bare())) {
                    self.inner.presence.send(crate::presence::PresenceMsg::RemoteProbe {
                        from: from.clone(),
                        contact: user.clone(),
                    });
                }
            }
            Kind::Presence(PresenceType::Error) => {}
            Kind::Presence(_) => {
                // Presence to a bare JID reaches every available resource.
                let sessions = self.inner.sessions.resources(user);
                let bytes = stanza.to_bytes();
                let origin = Origin::of(stanza.from());
                for s in sessions.iter().filter(|s| s.priority().is_some()) {
                    // Presence a busy session refuses is dropped: it is
                    // never answered with an error, and the next one
                    // supersedes it.
                    let _ = s.deliver_presence(origin, bytes.clone());
                }
            }
        }
    }

    /// RFC 6121 §8.5.2: the available resources of highest non-negative
    /// priority get it; with none, the user is offline.
    fn message_to_bare(&self, user: &BareJid, kind: MessageType, stanza: Stanza) {
        if kind == MessageType::Error {
            return;
        }
        if kind == MessageType::Groupchat {
            return self.bounce(&stanza, StanzaCondition::ServiceUnavailable);
        }
        let sessions = self.inner.sessions.resources(user);
        let top = sessions.iter().filter_map(|s| s.priority()).filter(|p| *p >= 0).max();
        let targets: Vec<&Arc<Session>> = match (kind, top) {
            (_, None) => Vec::new(),
            (MessageType::Headline, Some(_)) => sessions
                .iter()
                .filter(|s| s.priority().is_some_and(|p| p >= 0))
                .collect(),
            (_, Some(top)) => sessions.iter().filter(|s| s.priority() == Some(top)).collect(),
        };
        let bytes = crate::xep::carbons::delivered(&stanza);
        let origin = Origin::of(stanza.from());
        let (mut delivered, mut busy) = (0usize, false);
        for s in &targets {
            match s.deliver_from(origin, bytes.clone()) {
                Ok(()) => delivered += 1,
                Err(Refused::Busy) => busy = true,
                Err(Refused::Gone) => {}
            }
        }
        // XEP-0280: the other resources get copies, unless the sender is
        // told to wait.
        if (delivered > 0 || !busy) && sessions.len() > targets.len() && crate::xep::carbons::eligible(&stanza) {
            let got = |s: &Session| targets.iter().any(|t| t.id == s.id);
            crate::xep::carbons::received(&sessions, user, &stanza, &bytes, got);
        }
        match (delivered, busy, kind) {
            (0, _, MessageType::Headline) | (1.., _, _) => {}
            // Online but too far behind: the sender learns to wait.
            (0, true, _) => self.bounce(&stanza, StanzaCondition::ResourceConstraint),
            // Offline (RFC 6121 §8.5.2.2.1): kept for the next login.
            (0, false, _) => crate::xep::offline::store(self, user, stanza),
        }
    }

    fn to_full(&self, jid: &FullJid, stanza: Stanza) {
        match stanza.kind {
            // Subscriptions are between accounts (RFC 6121 §3.1.3), and
            // probes are answered by the server (§4.3), whatever resource
            // they name.
            Kind::Presence(t) if t.is_subscription() || t == PresenceType::Probe => {
                return self.to_bare(&jid.to_bare(), stanza)
            }
            // Roster pushes come from the account itself (RFC 6121 §2.1.6):
            // one from anyone else would rewrite the client's roster.
            Kind::Iq(IqType::Set)
                if stanza.payload().is_some_and(|p| p.ns() == ns::ROSTER) && !is_same_account(&stanza, jid) =>
            {
                return self.bounce(&stanza, StanzaCondition::ServiceUnavailable)
            }
            _ => {}
        }
        if self.blocklists().any() && self.blocked_inbound(&jid.to_bare(), &stanza) {
            return blocking::refuse_inbound(self, &stanza);
        }
        let (session, copies) = crate::xep::carbons::addressed(&self.inner.sessions, jid, &stanza);
        if let Some(session) = session {
            let bytes = crate::xep::carbons::delivered(&stanza);
            let original = copies.then(|| bytes.clone());
            match session.deliver_from(Origin::of(stanza.from()), bytes) {
                Ok(()) => {
                    if let Some(original) = original {
                        crate::xep::carbons::received_by(&self.inner.sessions, &session, &stanza, &original);
                    }
                    return;
                }
                Err(Refused::Busy) => return self.refused(&stanza),
                Err(Refused::Gone) => {}
            }
        }
        // RFC 6121 §8.5.3.2: no such session.
        match stanza.kind {
            Kind::Message(t @ (MessageType::Normal | MessageType::Chat)) => {
                self.message_to_bare(&jid.to_bare(), t, stanza)
            }
            Kind::Message(MessageType::Groupchat) | Kind::Iq(IqType::Get | IqType::Set) => {
                self.bounce(&stanza, StanzaCondition::ServiceUnavailable)
            }
            _ => {}
        }
    }

    /// A session too far behind refused `stanza` from its sender: the
    /// sender learns to wait (RFC 6120 §8.3.3.18) rather than the
    /// recipient being disconnected. Presence, results and errors are
    /// dropped, as they are never answered with an error; headlines too,
    /// as when undeliverable (RFC 6121 §8.5.3.2.1), so that a flood of
    /// them brings the flooder nothing back.
    fn refused(&self, stanza: &Stanza) {
        match stanza.kind {
            Kind::Message(MessageType::Headline) => {}
            Kind::Message(_) | Kind::Iq(IqType::Get | IqType::Set) => {
                self.bounce(stanza, StanzaCondition::ResourceConstraint)
            }
            _ => {}
        }
    }

    /// Routes directed presence (RFC 6121 §4.6); true when its recipient
    /// is owed the sender's unavailable later (§4.6.3): a local session
    /// that received it, a published service that took it (a room the
    /// sender joined), or another server it was sent to.
    pub fn route_directed_presence(&self, stanza: Stanza) -> bool {
        let Some(to) = stanza.to().cloned() else { return false };
        // XEP-0191: dropped both ways, with no error.
        if stanza.from().is_some_and(|f| self.blocklists().blocks_outbound(f, &to))
            || (self.blocklists().any() && self.is_local_user(&to) && self.blocked_inbound(&to.to_bare(), &stanza))
        {
            return false;
        }
        if !self.is_local_domain(to.domain()) {
            let services = self.services();
            if services.get(to.domain()).is_some() {
                return services.deliver_copy(&stanza);
            }
            // A configured service that is not connected drops it.
            if services.is_known(to.domain()) {
                return false;
            }
            return match self.remote() {
                Some(remote) => {
                    remote.deliver(stanza);
                    true
                }
                None => false,
            };
        }
        if to.node().is_none() {
            // Presence for the server itself goes nowhere.
            return false;
        }
        let bytes = stanza.to_bytes();
        // Dropped by a busy session, as any presence (see `to_bare`).
        let origin = Origin::of(stanza.from());
        match to.clone().try_into_full() {
            Ok(full) => self
                .inner
                .sessions
                .get(&full)
                .is_some_and(|s| s.deliver_presence(origin, bytes).is_ok()),
            Err(_) => {
                let user = to.to_bare();
                let sessions = self.inner.sessions.resources(&user);
                let available = sessions.iter().filter(|s| s.priority().is_some());
                // Every available resource gets it: count, don't stop at the first.
                available
                    .filter(|s| s.deliver_presence(origin, bytes.clone()).is_ok())
                    .count()
                    > 0
            }
        }
    }

    fn dispatch_iq(&self, scope: IqScope, target: BareJid, stanza: Stanza) {
        let Some(from) = stanza.from().cloned() else {
            return;
        };
        let ns = stanza.payload().map(|p| p.ns().to_owned()).unwrap_or_default();
        let Some(handler) = self.inner.iq_handlers.get(scope, &ns).cloned() else {
            return self.bounce(&stanza, StanzaCondition::ServiceUnavailable);
        };
        let router = self.clone();
        // Each session has at most MAX_IQS_IN_FLIGHT requests being
        // answered: a client pipelining requests it never reads cannot
        // queue work (and storage jobs) without limit.
        let in_flight = match from
            .clone()
            .try_into_full()
            .ok()
            .and_then(|f| self.inner.sessions.get(&f))
        {
            Some(session) => match InFlight::take(session) {
                Some(slot) => Some(slot),
                None => return self.bounce(&stanza, StanzaCondition::ResourceConstraint),
            },
            None => None,
        };
        // Stanzas from clients are checked on parsing; the host program's
        // (RouteStanza) may lack the payload.
        let Some(request) = IqRequest::new(stanza.clone(), from, target) else {
            return self.bounce(&stanza, StanzaCondition::BadRequest);
        };
        let future = AssertUnwindSafe(handler.handle(self, request)).catch_unwind();
        actix_rt::spawn(async move {
            let _in_flight = in_flight;
            let reply = match future.await {
                Ok(Ok(payload)) => Some(stanza.iq_result(payload)),
                Ok(Err(err)) => stanza.error_reply(&err),
                Err(_) => {
                    log::error!("IQ handler for {ns} panicked");
                    stanza.error_reply(&StanzaError::new(StanzaCondition::InternalServerError))
                }
            };
            if let Some(reply) = reply {
                router.route(reply);
            }
        });
    }
}

impl Router {
    /// XEP-0191: `user`, who has a bound session, blocked the sender of
    /// `stanza`. Free while nobody online blocks anyone, then a flag read
    /// unless `user` does.
    fn blocked_inbound(&self, user: &BareJid, stanza: &Stanza) -> bool {
        let lists = self.blocklists();
        let sessions = &self.inner.sessions;
        lists.any() && sessions.with_resources(user, |s| lists.blocks_inbound(user, s, stanza.from()))
    }
}

/// True when `stanza` comes from the account `to` belongs to.
fn is_same_account(stanza: &Stanza, to: &FullJid) -> bool {
    stanza
        .from()
        .is_some_and(|f| f.node().is_some() && f.node() == to.node() && f.domain() == to.domain())
}

/// Requests one session may have in flight to the server's IQ handlers.
pub const MAX_IQS_IN_FLIGHT: u32 = 64;

/// One request's place among its session's requests in flight; given
/// back when dropped.
struct InFlight(Arc<Session>);

impl InFlight {
    fn take(session: Arc<Session>) -> Option<InFlight> {
        session.take_iq_slot(MAX_IQS_IN_FLIGHT).then(|| InFlight(session))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.release_iq_slot();
    }
}

impl Router {
    /// A stanza sent to `owner`, a session that ended without
    /// acknowledging it (XEP-0198 §5), goes where it would have gone had
    /// the session not been there: a message to the account's other
    /// resources, or offline storage; a request back to its sender with
    /// `<recipient-unavailable/>`. It was stamped (and archived) on its
    /// first way. What the server itself sent the account (carbon copies,
    /// archive results), presence, results and errors are dropped.
    pub(crate) fn reroute_unacked(&self, stanza: Stanza, owner: &FullJid) {
        let account = owner.to_bare();
        if stanza.from().is_some_and(|f| f.as_str() == account.as_str()) {
            return;
        }
        match stanza.kind {
            Kind::Message(t @ (MessageType::Chat | MessageType::Normal)) => self.message_to_bare(&account, t, stanza),
            Kind::Iq(IqType::Get | IqType::Set) => self.bounce(&stanza, StanzaCondition::RecipientUnavailable),
            _ => {}
        }
    }
}
