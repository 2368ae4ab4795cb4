//! Presence (RFC 6121 §4): the PresenceActor and the connection handlers
//! an embedder can replace.
//!
//! A user's *followers* get the user's presence (contacts whose
//! subscription is `from` or `both`); the user's *followees* are those
//! whose presence the user gets (`to` or `both`). Where they come from is a
//! [`FollowerSource`]: the roster by default, an application's own social
//! graph when embedded.
//!
//! The PresenceActor is sharded, one per worker arbiter, by bare JID. A
//! shard caches the follower sets of its users that are online, loaded
//! once at their first presence and kept current by subscription changes,
//! so a presence change costs one message to the shard and then work in
//! proportion to the followers, never to the sessions on the server. Each
//! session's last presence lives in the shared session table, so probes
//! are answered without asking the followee's shard.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};

use actix::prelude::*;
use bytes::Bytes;
use quick_xml::escape::escape;

use crate::error::StanzaError;
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::roster::SubState;
use crate::router::RemoteRoute;
use crate::services::Services;
use crate::session::{Origin, Session, SessionTable};
use crate::stanza::Stanza;
use crate::storage::{Storage, StorageFuture};
use crate::xep::blocking::Blocklist;
use crate::xep::caps::Features;
use crate::xep::pep::{PepJob, PepSettings, PepState};
use crate::xml::{parse_element, Element, NsBindings, ParseLimits};

pub const VCARD_UPDATE: &str = "vcard-temp:x:update";

/// Who follows a user and whom the user follows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relations {
    pub followers: Vec<BareJid>,
    pub followees: Vec<BareJid>,
}

/// Where the follower graph comes from.
pub trait FollowerSource: Send + Sync + 'static {
    fn relations(&self, user: &BareJid) -> StorageFuture<Relations>;
}

/// The standard source: RFC 6121 subscriptions in the user's roster.
pub struct RosterFollowers(pub Arc<dyn Storage>);

impl FollowerSource for RosterFollowers {
    fn relations(&self, user: &BareJid) -> StorageFuture<Relations> {
        let (storage, user) = (self.0.clone(), user.clone());
        Box::pin(async move {
            let roster = storage.roster(&user).await?;
            let pick = |f: fn(&SubState) -> bool| {
                roster
                    .items
                    .iter()
                    .filter(|i| f(&i.state))
                    .map(|i| i.jid.clone())
                    .collect()
            };
            Ok(Relations {
                followers: pick(|s| s.subscription.has_from()),
                followees: pick(|s| s.subscription.has_to()),
            })
        })
    }
}

/// A one-way follow graph in memory, the shape of an application's own
/// social graph: following someone gives you their presence, with no
/// request and no approval. For embedders and tests; a real application
/// implements [`FollowerSource`] over its own store.
#[derive(Default)]
pub struct FollowGraph {
    /// followee → followers
    followers: std::sync::RwLock<HashMap<BareJid, HashSet<BareJid>>>,
    /// follower → followees
    followees: std::sync::RwLock<HashMap<BareJid, HashSet<BareJid>>>,
}

impl FollowGraph {
    /// `follower` gets `followee`'s presence from their next login on.
    pub fn follow(&self, follower: &BareJid, followee: &BareJid) {
        if let (Ok(mut f), Ok(mut t)) = (self.followers.write(), self.followees.write()) {
            f.entry(followee.clone()).or_default().insert(follower.clone());
            t.entry(follower.clone()).or_default().insert(followee.clone());
        }
    }
}

impl FollowerSource for FollowGraph {
    fn relations(&self, user: &BareJid) -> StorageFuture<Relations> {
        let get = |m: &std::sync::RwLock<HashMap<BareJid, HashSet<BareJid>>>| {
            m.read()
                .ok()
                .and_then(|m| m.get(user).map(|s| s.iter().cloned().collect()))
                .unwrap_or_default()
        };
        let relations = Relations {
            followers: get(&self.followers),
            followees: get(&self.followees),
        };
        Box::pin(std::future::ready(Ok(relations)))
    }
}

/// What a bind request yields (Ocean's bind extension).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindInfo {
    pub nick: Option<String>,
    pub photo_url: Option<String>,
}

pub type BindFuture = Pin<Box<dyn Future<Output = Result<BindInfo, StanzaError>>>>;

/// The hooks of a connection's life, after the Ocean framework. Each
/// default is the standard behaviour; an embedder overrides what it needs
/// and can still call the standard operations on [`PresenceEvent`].
pub trait ConnectionHandler: Send + Sync + 'static {
    /// A client binds a resource. May refuse it; supplies the nickname and
    /// photo URL returned to clients that ask for the bind extension
    /// (`extval`; the standard handler looks them up only then).
    fn on_bind_request(&self, storage: &Arc<dyn Storage>, user: &BareJid, _resource: &str, extval: bool) -> BindFuture {
        if !extval {
            return Box::pin(std::future::ready(Ok(BindInfo::default())));
        }
        let (storage, user) = (storage.clone(), user.clone());
        Box::pin(async move {
            let profile = storage.profile(&user).await?;
            Ok(BindInfo {
                nick: profile.nick,
                photo_url: profile.photo_url,
            })
        })
    }

    /// The first available presence of a session: broadcast it, and get
    /// the presence of everyone the user follows.
    fn on_initial_presence(&self, event: &PresenceEvent<'_>) {
        event.broadcast();
        event.probe_followees();
    }

    /// A later available presence (a new show or status).
    fn on_presence(&self, event: &PresenceEvent<'_>) {
        event.broadcast();
    }

    /// Unavailable, sent or because the connection ended.
    fn on_unavailable_presence(&self, event: &PresenceEvent<'_>) {
        event.broadcast();
    }

    /// A session that never sent presence ended: nobody is told.
    fn on_silent_disconnection(&self, _session: &Session) {}
}

/// The standard behaviour, unchanged.
pub struct StandardHandler;

impl ConnectionHandler for StandardHandler {}

/// `template` (a stanza serialised without `to`) addressed to `to`.
pub fn addressed(template: &[u8], to: &str) -> Bytes {
    let name_end = template
        .iter()
        .skip(1)
        .position(|b| matches!(b, b' ' | b'/' | b'>'))
        .map_or(0, |i| i + 1);
    // JIDs rarely need escaping (only a resource may hold & < > ' "):
    // look before calling the escaper, which was a tenth of fan-out's work.
    let to = if to.bytes().any(|b| matches!(b, b'&' | b'<' | b'>' | b'\'' | b'"')) {
        escape(to)
    } else {
        std::borrow::Cow::Borrowed(to)
    };
    let mut out = Vec::with_capacity(template.len() + to.len() + 6);
    out.extend_from_slice(&template[..name_end]);
    out.extend_from_slice(b" to='");
    out.extend_from_slice(to.as_bytes());
    out.push(b'\'');
    out.extend_from_slice(&template[name_end..]);
    Bytes::from(out)
}

/// A stanza serialised without `to`, to be [`addressed`] per recipient.
pub(crate) fn template_of(presence: &Element) -> Bytes {
    let mut out = Vec::with_capacity(128);
    presence.write_to(&mut out, ns::CLIENT);
    Bytes::from(out)
}

/// Queues `bytes` from `origin` for every available resource of `user`,
/// serialising nothing when there is none; how many took it. A session
/// too far behind drops it ([`Session::deliver_from`]): under
/// backpressure a contact's presence may be lost, which the next change
/// repairs, but it never disconnects the follower nor errors back to the
/// sender.
fn to_available(sessions: &SessionTable, user: &BareJid, origin: Origin<'_>, bytes: impl FnOnce() -> Bytes) -> usize {
    sessions.with_resources(user, |all| {
        // XEP-0191: not from someone the user blocked (a flag read, if anyone online blocks).
        if sessions.blocklists().blocks_inbound(user, all, origin.jid()) {
            return 0;
        }
        let mut available = all.iter().filter(|s| s.priority().is_some()).peekable();
        if available.peek().is_none() {
            return 0;
        }
        let bytes = bytes();
        let mut reached = 0;
        while let Some(s) = available.next() {
            if available.peek().is_none() {
                // The last (usually the only) one takes the bytes: a clone
                // would allocate a shared header.
                return reached + usize::from(s.deliver_presence(origin, bytes).is_ok());
            }
            reached += usize::from(s.deliver_presence(origin, bytes.clone()).is_ok());
        }
        reached
    })
}

/// Where presence goes for JIDs at domains this server does not host: a
/// published service (a MUC room, a gateway), or another server once
/// federation is on (one stanza per contact there: their server fans it
/// out to their resources). The router that uses this hub sets it up.
#[derive(Clone, Default)]
pub struct Elsewhere(Arc<ElsewhereInner>);

#[derive(Default)]
struct ElsewhereInner {
    /// The hosted domains and the published services (`Router::new`).
    local: OnceLock<(crate::hosts::Hosts, Services)>,
    /// Other servers (`Router::set_remote`).
    remote: OnceLock<Weak<dyn RemoteRoute>>,
}

/// Where presence for one domain goes.
pub(crate) enum Route<'a> {
    /// A hosted domain (or the hub serves no router yet): local sessions.
    Local,
    /// A published service's domain.
    Service(&'a Services),
    /// Another server's.
    Remote(Arc<dyn RemoteRoute>),
    /// A configured service that is not connected, or another server
    /// while federation is off: nowhere.
    Nowhere,
}

impl Elsewhere {
    pub(crate) fn route(&self, domain: &str) -> Route<'_> {
        let Some((hosts, services)) = self.0.local.get() else {
            return Route::Local;
        };
        if hosts.contains(domain) {
            return Route::Local;
        }
        if services.get(domain).is_some() {
            return Route::Service(services);
        }
        if services.is_known(domain) {
            return Route::Nowhere;
        }
        match self.0.remote.get().and_then(Weak::upgrade) {
            Some(remote) => Route::Remote(remote),
            None => Route::Nowhere,
        }
    }

    /// True when `contact` is another server's user (whether or not it
    /// can be reached), federation being on.
    fn is_remote(&self, contact: &BareJid) -> bool {
        self.0.remote.get().is_some()
            && self.0.local.get().is_some_and(|(hosts, services)| {
                !hosts.contains(contact.domain()) && !services.is_known(contact.domain())
            })
    }
}

impl Route<'_> {
    fn is_local(&self) -> bool {
        matches!(self, Route::Local)
    }

    /// Sends presence from `from` (a template, as written for local
    /// sessions) to `to`, at a domain this server does not host; true
    /// when it went.
    fn send(&self, from: &Jid, template: &[u8], to: &Jid) -> bool {
        match self {
            Route::Local | Route::Nowhere => false,
            // Rare (a room joined, a gateway): read back into the stanza
            // a service takes.
            Route::Service(services) => {
                Stanza::reparse(&addressed(template, to.as_str())).is_some_and(|s| services.deliver_copy(&s))
            }
            Route::Remote(remote) => {
                remote.deliver_copy(from, to, addressed(template, to.as_str()));
                true
            }
        }
    }
}

/// One presence change of one session, with the standard operations.
pub struct PresenceEvent<'a> {
    pub session: &'a Arc<Session>,
    /// The presence as broadcast (`from` stamped, no `to`).
    pub presence: &'a Element,
    pub followers: &'a HashSet<BareJid>,
    pub followees: &'a HashSet<BareJid>,
    /// Those who got directed presence from this session (for unavailable).
    pub directed: &'a [Jid],
    /// The session sent this unavailable itself: it gets it too, though no
    /// longer available (RFC 6121 §4.5.2).
    reflect: bool,
    /// A newer session with the same full JID is available: followers and
    /// the user's own resources see the newcomer, so only those who got
    /// directed presence from this one are told it is gone.
    replaced: bool,
    template: Bytes,
    sessions: &'a SessionTable,
    /// The session's account, hashed once for the whole fan-out.
    origin: Origin<'a>,
    elsewhere: &'a Elsewhere,
}

impl<'a> PresenceEvent<'a> {
    /// `session`'s available presence (`template`: serialised, without
    /// `to`) for its followers and resources.
    fn of(
        session: &'a Arc<Session>,
        presence: &'a Element,
        state: &'a UserState,
        template: Bytes,
        sessions: &'a SessionTable,
        elsewhere: &'a Elsewhere,
    ) -> PresenceEvent<'a> {
        PresenceEvent {
            session,
            presence,
            followers: &state.followers,
            followees: &state.followees,
            directed: &[],
            reflect: false,
            replaced: false,
            template,
            sessions,
            origin: Origin::of(Some(session.jid.as_jid())),
            elsewhere,
        }
    }

    /// Sends the presence to every available resource of every follower,
    /// to the user's own available resources and the sender (RFC 6121
    /// §4.2.2, §4.4.2, §4.5.2), and to those that got directed presence.
    pub fn broadcast(&self) {
        let fanout = crate::metrics::Fanout::start();
        let mut reached = 0;
        let user = self.session.jid.to_bare();
        if !self.replaced {
            for follower in self.followers {
                reached += self.send_to(follower);
            }
            reached += self.send_to(&user);
            // An available sender got it above; one that sent unavailable
            // is no longer among the available resources.
            if self.reflect && self.session.priority().is_none() {
                reached += usize::from(self.session.deliver(addressed(&self.template, user.as_str())));
            }
        }
        for jid in self.directed {
            let bare = jid.to_bare();
            if bare == user || self.followers.contains(&bare) {
                continue;
            }
            // A room, a gateway, another server's user: owed this too
            // (a dropped connection leaves the rooms it joined).
            let route = self.elsewhere.route(bare.domain());
            if !route.is_local() {
                reached += usize::from(route.send(self.session.jid.as_jid(), &self.template, jid));
                continue;
            }
            match jid.clone().try_into_full() {
                Ok(full) => {
                    let lists = self.sessions.blocklists();
                    if let Some(s) = self.sessions.get(&full) {
                        let me = self.session.jid.as_jid();
                        if lists.blocks_outbound(me, full.as_jid())
                            || lists.blocks_inbound(&bare, std::slice::from_ref(&s), Some(me))
                        {
                            continue;
                        }
                        let delivered = s.deliver_presence(self.origin, addressed(&self.template, full.as_str()));
                        reached += usize::from(delivered.is_ok());
                    }
                }
                Err(_) => reached += self.send_to(&bare),
            }
        }
        fanout.done(reached);
    }

    /// Sends the presence to the available resources of one contact; how
    /// many got it (a contact on another server counts once).
    pub fn send_to(&self, contact: &BareJid) -> usize {
        // XEP-0191 §3.3: never to someone the user blocked.
        let lists = self.sessions.blocklists();
        if self.session.is_blocking() && lists.blocks_outbound(self.session.jid.as_jid(), contact.as_jid()) {
            return 0;
        }
        let route = self.elsewhere.route(contact.domain());
        if !route.is_local() {
            return usize::from(route.send(self.session.jid.as_jid(), &self.template, contact.as_jid()));
        }
        to_available(self.sessions, contact, self.origin, || {
            addressed(&self.template, contact.as_str())
        })
    }

    /// Delivers to this session the last presence of every available
    /// resource of every followee, and of the user's other resources.
    pub fn probe_followees(&self) {
        let me = &self.session.jid;
        let own = me.to_bare();
        let lists = self.sessions.blocklists();
        for followee in self.followees.iter().chain(std::iter::once(&own)) {
            let route = self.elsewhere.route(followee.domain());
            if !route.is_local() {
                // RFC 6121 §4.3.1: the followee's server (or service)
                // answers, from the user's bare JID.
                let probe = Element::new("presence", ns::CLIENT)
                    .with_attr("type", "probe")
                    .with_attr("from", own.as_str());
                route.send(own.as_jid(), &template_of(&probe), followee.as_jid());
                continue;
            }
            for s in self.sessions.resources(followee) {
                if s.id == self.session.id || s.priority().is_none() {
                    continue;
                }
                // XEP-0191: nothing between the user and whom either blocked.
                if lists.blocks_inbound(&own, std::slice::from_ref(self.session), Some(s.jid.as_jid()))
                    || lists.blocks_inbound(followee, std::slice::from_ref(&s), Some(me.as_jid()))
                {
                    continue;
                }
                if let Some(t) = s.last_presence() {
                    self.session.deliver(addressed(&t, me.as_str()));
                }
            }
        }
    }
}

/// Messages to a PresenceActor shard.
#[derive(Message)]
#[rtype(result = "()")]
pub enum PresenceMsg {
    /// A session's available presence (`initial`: its first).
    Available {
        session: Arc<Session>,
        presence: Element,
        initial: bool,
        /// The session's caps (XEP-0115) before this presence: the same
        /// as its current ones when it did not change them.
        caps_before: Option<Arc<Features>>,
    },
    /// A session's caps became known or changed after its presence (a
    /// query answered); `before`: those it had.
    CapsLearned {
        session: Arc<Session>,
        before: Option<Arc<Features>>,
    },
    /// A session's unavailable presence, sent or on disconnection.
    Unavailable {
        session: Arc<Session>,
        presence: Element,
        directed: Vec<Jid>,
        /// The session sent it (and gets it back); false when its
        /// connection ended.
        sent: bool,
    },
    /// A session ended without ever being available.
    Silent { session: Arc<Session> },
    /// `user`'s subscription with `contact` changed from `before` to `after`.
    Relation {
        user: BareJid,
        contact: BareJid,
        before: SubState,
        after: SubState,
    },
    /// `user`'s vCard photo changed (XEP-0153): if the hash differs, each
    /// available session's last presence goes out again with it.
    PhotoHash { user: BareJid, hash: Option<String> },
    /// `from` probes `contact`'s presence (RFC 6121 §4.3.2). Handled by
    /// the prober's shard, where the prober's followees are cached (and
    /// loaded once if not).
    Probe { from: Jid, contact: BareJid },
    /// `from`, on another server, probes `contact`'s presence (RFC 6121
    /// §4.3.2). Handled by the contact's shard, where its followers are.
    RemoteProbe { from: Jid, contact: BareJid },
    /// `user` blocked (or unblocked) `jids` (XEP-0191), stored and cached
    /// already: whoever among them follows the user is told.
    Blocked {
        user: BareJid,
        jids: Vec<Jid>,
        blocked: bool,
    },
    /// An operation on `owner`'s PEP nodes (XEP-0163), run in the owner's
    /// shard, where the followers its notifications go to are.
    Pep { owner: BareJid, job: PepJob },
}

impl PresenceMsg {
    fn user(&self) -> BareJid {
        match self {
            PresenceMsg::Available { session, .. }
            | PresenceMsg::CapsLearned { session, .. }
            | PresenceMsg::Unavailable { session, .. }
            | PresenceMsg::Silent { session } => session.jid.to_bare(),
            PresenceMsg::Relation { user, .. }
            | PresenceMsg::PhotoHash { user, .. }
            | PresenceMsg::Blocked { user, .. } => user.clone(),
            PresenceMsg::Pep { owner, .. } => owner.clone(),
            PresenceMsg::Probe { from, .. } => from.to_bare(),
            PresenceMsg::RemoteProbe { contact, .. } => contact.clone(),
        }
    }
}

#[derive(Default)]
struct UserState {
    followers: HashSet<BareJid>,
    followees: HashSet<BareJid>,
    photo_hash: Option<String>,
    /// The user's PEP nodes, from the first operation on them.
    pep: Option<Box<PepState>>,
}

enum Entry {
    /// Relations are being loaded; messages wait here, in order.
    Loading(Vec<PresenceMsg>),
    Ready(UserState),
}

pub struct PresenceActor {
    sessions: SessionTable,
    source: Arc<dyn FollowerSource>,
    storage: Arc<dyn Storage>,
    hooks: Arc<dyn ConnectionHandler>,
    users: HashMap<BareJid, Entry>,
    elsewhere: Elsewhere,
    /// `[pep]`, shared by the shards (set once, by the host program).
    pep: Arc<OnceLock<PepSettings>>,
}

impl Actor for PresenceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(16 * 1024);
    }
}

impl PresenceActor {
    fn load(&mut self, user: BareJid, first: PresenceMsg, ctx: &mut Context<Self>) {
        self.users.insert(user.clone(), Entry::Loading(vec![first]));
        let relations = self.source.relations(&user);
        let profile = self.storage.profile(&user);
        let loading = async move { (relations.await, profile.await) };
        ctx.spawn(loading.into_actor(self).map(move |(relations, profile), act, ctx| {
            let relations = relations.unwrap_or_else(|e| {
                log::error!("{user}: cannot load followers: {e}");
                Relations::default()
            });
            let state = UserState {
                followers: relations.followers.into_iter().collect(),
                followees: relations.followees.into_iter().collect(),
                photo_hash: profile.ok().and_then(|p| p.photo_hash),
                pep: None,
            };
            let queued = match act.users.insert(user.clone(), Entry::Ready(state)) {
                Some(Entry::Loading(q)) => q,
                _ => Vec::new(),
            };
            for msg in queued {
                act.apply(&user, msg, ctx);
            }
        }));
    }

    fn apply(&mut self, user: &BareJid, msg: PresenceMsg, ctx: &mut Context<Self>) {
        let empty = UserState::default();
        let state = match self.users.get_mut(user) {
            Some(Entry::Ready(s)) => s,
            _ => &empty,
        };
        match msg {
            PresenceMsg::Available {
                session,
                mut presence,
                initial,
                caps_before,
            } => {
                // A client's own <x/> stands (as in Prosody's mod_vcard_legacy):
                // it may say "not ready yet" (XEP-0153 §4.2).
                if state.photo_hash.is_some() && !presence.has_child("x", VCARD_UPDATE) {
                    presence.push_child(photo_update(state.photo_hash.as_deref()));
                }
                let template = template_of(&presence);
                // Unless the session went unavailable since it sent this.
                if session.priority().is_some() {
                    session.set_last_presence(template.clone());
                }
                let event = PresenceEvent::of(&session, &presence, state, template, &self.sessions, &self.elsewhere);
                if initial {
                    self.hooks.on_initial_presence(&event);
                } else {
                    self.hooks.on_presence(&event);
                }
                if initial || !same_caps(&caps_before, &session.caps()) {
                    self.caps_changed(&session, caps_before, ctx);
                }
            }
            PresenceMsg::CapsLearned { session, before } => {
                self.caps_changed(&session, before, ctx);
                self.forget_if_offline(user);
            }
            PresenceMsg::Unavailable {
                session,
                presence,
                directed,
                sent,
            } => {
                // A session replaced by a newer one with the same full JID
                // (RFC 6120 §7.7.2.2) must not show the newcomer offline
                // once it is available: its unavailable may be processed
                // after the newcomer's presence.
                let replaced = self
                    .sessions
                    .get(&session.jid)
                    .is_some_and(|s| s.id != session.id && s.priority().is_some());
                let event = PresenceEvent {
                    directed: &directed,
                    reflect: sent,
                    replaced,
                    ..PresenceEvent::of(
                        &session,
                        &presence,
                        state,
                        template_of(&presence),
                        &self.sessions,
                        &self.elsewhere,
                    )
                };
                self.hooks.on_unavailable_presence(&event);
                self.forget_if_offline(user);
            }
            PresenceMsg::Silent { session } => {
                self.hooks.on_silent_disconnection(&session);
                self.forget_if_offline(user);
            }
            PresenceMsg::Relation {
                user,
                contact,
                before,
                after,
            } => {
                if let Some(Entry::Ready(state)) = self.users.get_mut(&user) {
                    if after.subscription.has_from() {
                        state.followers.insert(contact.clone());
                    } else {
                        state.followers.remove(&contact);
                    }
                    if after.subscription.has_to() {
                        state.followees.insert(contact.clone());
                    } else {
                        state.followees.remove(&contact);
                    }
                }
                let (was, is) = (before.subscription.has_from(), after.subscription.has_from());
                if was == is {
                    return;
                }
                // RFC 6121 §3.1.5: a new follower gets the user's presence;
                // §3.2.2, §3.3.3: one that leaves gets unavailable.
                for s in self.sessions.resources(&user).iter().filter(|s| s.priority().is_some()) {
                    let template = if is {
                        match s.last_presence() {
                            Some(t) => t,
                            None => continue,
                        }
                    } else {
                        let unavailable = Element::new("presence", ns::CLIENT)
                            .with_attr("type", "unavailable")
                            .with_attr("from", s.jid.as_str());
                        template_of(&unavailable)
                    };
                    let lists = self.sessions.blocklists();
                    if is && lists.blocks_outbound(s.jid.as_jid(), contact.as_jid()) {
                        continue;
                    }
                    let route = self.elsewhere.route(contact.domain());
                    if !route.is_local() {
                        route.send(s.jid.as_jid(), &template, contact.as_jid());
                        continue;
                    }
                    let origin = Origin::of(Some(s.jid.as_jid()));
                    to_available(&self.sessions, &contact, origin, || {
                        addressed(&template, contact.as_str())
                    });
                }
            }
            PresenceMsg::PhotoHash { hash, .. } => {
                let Some(Entry::Ready(state)) = self.users.get_mut(user) else {
                    return;
                };
                if state.photo_hash == hash {
                    return;
                }
                state.photo_hash = hash;
                let state = &*state;
                // Each available session's last presence again, with the new
                // hash, as ejabberd's mod_vcard_xupdate does on a vCard set
                // (ejabberd_sm:force_update_presence): vCard-avatar clients see
                // the change at once instead of at the next presence. It goes
                // where a later presence of the session goes: followers and the
                // user's own available resources (the session included, as RFC
                // 6121 §4.4.2 reflects a presence to its sender).
                for session in self.sessions.resources(user).iter().filter(|s| s.priority().is_some()) {
                    let Some(template) = session.last_presence() else {
                        continue;
                    };
                    let Some(presence) = with_photo(&template, state.photo_hash.as_deref()) else {
                        log::warn!("{}: the last presence does not read back", session.jid);
                        continue;
                    };
                    let template = template_of(&presence);
                    // Probes answered from now on carry the new hash too
                    // (unless the session went unavailable meanwhile).
                    if session.priority().is_some() {
                        session.set_last_presence(template.clone());
                    }
                    let event = PresenceEvent::of(session, &presence, state, template, &self.sessions, &self.elsewhere);
                    self.hooks.on_presence(&event);
                }
            }
            PresenceMsg::Probe { from, contact } => {
                let follows = *user == contact || state.followees.contains(&contact);
                answer_probe(&self.sessions, &from, &contact, follows);
                self.forget_if_offline(user);
            }
            PresenceMsg::RemoteProbe { from, contact } => {
                let follows = state.followers.contains(&from.to_bare());
                self.answer_remote_probe(&from, &contact, follows);
                self.forget_if_offline(user);
            }
            PresenceMsg::Blocked { user, jids, blocked } => {
                let changed = crate::xep::blocking::Blocklist::new(jids);
                blocking_changed(&self.sessions, &user, state, &changed, blocked);
            }
            PresenceMsg::Pep { owner, job } => self.pep_job(owner, job, ctx),
        }
    }

    /// `[pep]`, or its defaults when the host program set none.
    fn pep_settings(&self) -> PepSettings {
        self.pep.get().copied().unwrap_or_default()
    }

    /// Queues a PEP operation on `owner`'s nodes: they run one at a time
    /// per owner, so that notifications go out in commit order.
    fn pep_job(&mut self, owner: BareJid, job: PepJob, ctx: &mut Context<Self>) {
        let settings = self.pep_settings();
        if let Some(Entry::Ready(state)) = self.users.get_mut(&owner) {
            let pep = state.pep.get_or_insert_with(|| Box::new(PepState::new(&settings)));
            pep.push(job, &settings);
        }
        self.pep_next(owner, ctx);
    }

    /// Starts `owner`'s next PEP operation unless one runs; once none is
    /// left, the owner's state goes if the owner is offline.
    fn pep_next(&mut self, owner: BareJid, ctx: &mut Context<Self>) {
        let settings = self.pep_settings();
        let running = match self.users.get_mut(&owner) {
            Some(Entry::Ready(state)) => match state.pep.as_mut() {
                Some(pep) => pep.start(&owner, &self.storage, &state.followers, settings),
                None => None,
            },
            _ => None,
        };
        let Some(running) = running else {
            return self.forget_if_offline(&owner);
        };
        ctx.spawn(running.into_actor(self).map(move |done, act, ctx| {
            let finished = match act.users.get_mut(&owner) {
                Some(Entry::Ready(state)) => state
                    .pep
                    .as_mut()
                    .map(|pep| pep.finish(&owner, done, &act.sessions, &state.followers)),
                _ => None,
            };
            if let Some((photo, answer)) = finished {
                // A client's avatar became the vCard's photo (XEP-0398): its
                // hash is in the presence re-broadcast before the result, as
                // after a vCard set.
                if let Some(hash) = photo {
                    let user = owner.clone();
                    act.apply(&owner, PresenceMsg::PhotoHash { user, hash }, ctx);
                }
                answer.send();
            }
            act.pep_next(owner, ctx);
        }));
    }

    /// PEP: last items for newly advertised +notify nodes (design §2.3):
    /// for the nodes this session's caps name with `+notify` and `before`
    /// did not, the last item of each the user and the user's local
    /// followees have, in one storage query. Clients that want no
    /// notifications cost nothing here.
    fn caps_changed(&mut self, session: &Arc<Session>, before: Option<Arc<Features>>, ctx: &mut Context<Self>) {
        let Some(after) = session.caps() else { return };
        let new: Vec<String> = after
            .notify_nodes()
            .filter(|n| !before.as_ref().is_some_and(|b| b.notifies(n)))
            .map(str::to_owned)
            .collect();
        if new.is_empty() || session.priority().is_none() || !self.pep_settings().enabled {
            return;
        }
        let user = session.jid.to_bare();
        let mut owners = vec![user.clone()];
        if let Some(Entry::Ready(state)) = self.users.get(&user) {
            let local = state.followees.iter().filter(|f| !self.elsewhere.is_remote(f));
            owners.extend(local.cloned());
        }
        let (storage, sessions) = (self.storage.clone(), self.sessions.clone());
        let send = crate::xep::pep::last_items(storage, sessions, session.clone(), owners, new);
        ctx.spawn(send.into_actor(self));
    }

    /// Answers a probe from another server's user: a follower gets the last
    /// presence of each available resource, or unavailable; anyone else
    /// `unsubscribed` (as [`answer_probe`] does for local probers).
    fn answer_remote_probe(&self, from: &Jid, contact: &BareJid, follows: bool) {
        let route = self.elsewhere.route(from.domain());
        if route.is_local() {
            return;
        }
        let lists = self.sessions.blocklists();
        if lists.any()
            && self
                .sessions
                .with_resources(contact, |s| lists.blocks_inbound(contact, s, Some(from)))
        {
            return;
        }
        let mut available = false;
        if follows {
            for s in self
                .sessions
                .resources(contact)
                .iter()
                .filter(|s| s.priority().is_some())
            {
                if let Some(template) = s.last_presence() {
                    available = true;
                    route.send(s.jid.as_jid(), &template, from);
                }
            }
        }
        if !available {
            let kind = if follows { "unavailable" } else { "unsubscribed" };
            let reply = Element::new("presence", ns::CLIENT)
                .with_attr("type", kind)
                .with_attr("from", contact.as_str());
            route.send(contact.as_jid(), &template_of(&reply), from);
        }
    }

    /// Drops a user's cached relations once none of their sessions is
    /// available (a prober that never sent presence loaded them), unless a
    /// PEP operation of theirs runs or waits.
    fn forget_if_offline(&mut self, user: &BareJid) {
        if let Some(Entry::Ready(state)) = self.users.get(user) {
            if state.pep.as_ref().is_some_and(|p| p.busy()) {
                return;
            }
        }
        if !self.sessions.resources(user).iter().any(|s| s.priority().is_some()) {
            self.users.remove(user);
        }
    }
}

/// XEP-0153's `<x/>` naming the photo's hash; empty `<photo/>` when there
/// is no photo (§4.1: the user has none).
fn photo_update(hash: Option<&str>) -> Element {
    let mut photo = Element::new("photo", VCARD_UPDATE);
    if let Some(hash) = hash {
        photo.push_text(hash);
    }
    Element::new("x", VCARD_UPDATE).with_child(photo)
}

/// A presence template read back, with `hash` as its XEP-0153 photo in
/// place of any `<x/>` the client sent: that one names the old photo.
fn with_photo(template: &[u8], hash: Option<&str>) -> Option<Element> {
    let mut presence = parse_element(template, &NsBindings::client(), &ParseLimits::default()).ok()?;
    presence.remove_children(|c| c.is("x", VCARD_UPDATE));
    presence.push_child(photo_update(hash));
    Some(presence)
}

/// True when two sessions' caps are the same ones (the same ver).
fn same_caps(a: &Option<Arc<Features>>, b: &Option<Arc<Features>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.ver() == b.ver(),
        (None, None) => true,
        _ => false,
    }
}

/// XEP-0191 §3.3, §3.4: the user's followers among the JIDs `changed`
/// get unavailable from each available resource once blocked, and its
/// current presence once unblocked (if nothing else still blocks it
/// either way); once unblocked, the user gets theirs too.
fn blocking_changed(sessions: &SessionTable, user: &BareJid, state: &UserState, changed: &Blocklist, blocked: bool) {
    let lists = sessions.blocklists();
    let mine: Vec<Arc<Session>> = sessions
        .resources(user)
        .into_iter()
        .filter(|s| s.priority().is_some())
        .collect();
    if mine.is_empty() {
        return;
    }
    for follower in &state.followers {
        for t in sessions.resources(follower).iter().filter(|t| t.priority().is_some()) {
            if !changed.blocks(t.jid.as_jid()) {
                continue;
            }
            if !blocked
                && (lists.blocks_outbound(user.as_jid(), t.jid.as_jid())
                    || lists.blocks_inbound(follower, std::slice::from_ref(t), Some(user.as_jid())))
            {
                continue;
            }
            for s in &mine {
                let template = if blocked {
                    let unavailable = Element::new("presence", ns::CLIENT)
                        .with_attr("type", "unavailable")
                        .with_attr("from", s.jid.as_str());
                    template_of(&unavailable)
                } else {
                    match s.last_presence() {
                        Some(t) => t,
                        None => continue,
                    }
                };
                let _ = t.deliver_from(Origin::of(Some(s.jid.as_jid())), addressed(&template, t.jid.as_str()));
            }
        }
    }
    if blocked {
        return;
    }
    for followee in &state.followees {
        for t in sessions.resources(followee).iter().filter(|t| t.priority().is_some()) {
            if !changed.blocks(t.jid.as_jid())
                || lists.blocks_outbound(user.as_jid(), t.jid.as_jid())
                || lists.blocks_inbound(followee, std::slice::from_ref(t), Some(user.as_jid()))
            {
                continue;
            }
            if let Some(template) = t.last_presence() {
                for s in &mine {
                    let _ = s.deliver_from(Origin::of(Some(t.jid.as_jid())), addressed(&template, s.jid.as_str()));
                }
            }
        }
    }
}

/// Answers a probe from a local session (RFC 6121 §4.3.2): a follower gets
/// the last presence of each available resource, or unavailable when
/// there is none; anyone else learns nothing but `unsubscribed`, whether
/// or not the account exists (as Prosody answers).
fn answer_probe(sessions: &SessionTable, from: &Jid, contact: &BareJid, follows: bool) {
    let Some(prober) = from.clone().try_into_full().ok().and_then(|f| sessions.get(&f)) else {
        return;
    };
    // XEP-0191 §3.3: a probe between the user and whom either blocked is
    // not answered (for a contact offline, as usual: they look offline anyway).
    let lists = sessions.blocklists();
    if lists.any()
        && (lists.blocks_inbound(&from.to_bare(), std::slice::from_ref(&prober), Some(contact.as_jid()))
            || sessions.with_resources(contact, |s| lists.blocks_inbound(contact, s, Some(from))))
    {
        return;
    }
    let to = prober.jid.as_str();
    let mut available = false;
    if follows {
        for s in sessions.resources(contact) {
            if s.priority().is_none() || s.id == prober.id {
                continue;
            }
            if let Some(template) = s.last_presence() {
                available = true;
                prober.deliver(addressed(&template, to));
            }
        }
    }
    if !available {
        let kind = if follows { "unavailable" } else { "unsubscribed" };
        let reply = Element::new("presence", ns::CLIENT)
            .with_attr("type", kind)
            .with_attr("from", contact.as_str());
        prober.deliver(addressed(&template_of(&reply), to));
    }
}

impl Handler<PresenceMsg> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: PresenceMsg, ctx: &mut Context<Self>) {
        let user = msg.user();
        match self.users.get_mut(&user) {
            Some(Entry::Loading(queue)) => queue.push(msg),
            Some(Entry::Ready(_)) => self.apply(&user, msg, ctx),
            None => match msg {
                PresenceMsg::Available { .. }
                | PresenceMsg::CapsLearned { .. }
                | PresenceMsg::Unavailable { .. }
                | PresenceMsg::Probe { .. }
                | PresenceMsg::RemoteProbe { .. }
                | PresenceMsg::Pep { .. } => self.load(user, msg, ctx),
                other => self.apply(&user, other, ctx),
            },
        }
    }
}

/// The shards, addressed by user.
#[derive(Clone)]
pub struct PresenceHub {
    shards: Arc<Vec<Addr<PresenceActor>>>,
    elsewhere: Elsewhere,
    pep: Arc<OnceLock<PepSettings>>,
}

impl PresenceHub {
    /// Starts one shard on each arbiter (on the current one if none given).
    pub fn start(
        arbiters: &[ArbiterHandle],
        sessions: SessionTable,
        source: Arc<dyn FollowerSource>,
        storage: Arc<dyn Storage>,
        hooks: Arc<dyn ConnectionHandler>,
    ) -> PresenceHub {
        let elsewhere = Elsewhere::default();
        let pep: Arc<OnceLock<PepSettings>> = Arc::default();
        let make = {
            let (sessions, source, storage, hooks, elsewhere) = (sessions, source, storage, hooks, elsewhere.clone());
            let pep = pep.clone();
            move || PresenceActor {
                sessions: sessions.clone(),
                source: source.clone(),
                storage: storage.clone(),
                hooks: hooks.clone(),
                users: HashMap::new(),
                elsewhere: elsewhere.clone(),
                pep: pep.clone(),
            }
        };
        let shards = if arbiters.is_empty() {
            vec![make().start()]
        } else {
            arbiters
                .iter()
                .map(|a| {
                    let actor = make();
                    PresenceActor::start_in_arbiter(a, move |_| actor)
                })
                .collect()
        };
        PresenceHub {
            shards: Arc::new(shards),
            elsewhere,
            pep,
        }
    }

    /// Sets `[pep]` for every shard (XEP-0163). Set once, before any PEP
    /// operation; later calls change nothing. Unset: the defaults.
    pub fn set_pep(&self, settings: PepSettings) {
        let _ = self.pep.set(settings);
    }

    /// `[pep]`, or its defaults when the host program set none.
    pub fn pep_settings(&self) -> PepSettings {
        self.pep.get().copied().unwrap_or_default()
    }

    /// Presence for domains other than `hosts` goes to the services
    /// published in `services`, if any has it. Set once (by
    /// [`crate::router::Router::new`]).
    pub(crate) fn set_local(&self, hosts: crate::hosts::Hosts, services: Services) {
        let _ = self.elsewhere.0.local.set((hosts, services));
    }

    /// Presence for other servers' users goes through `remote` from now
    /// on. Set once (by [`crate::router::Router::set_remote`]).
    pub(crate) fn set_remote(&self, remote: Weak<dyn RemoteRoute>) {
        let _ = self.elsewhere.0.remote.set(remote);
    }

    /// True when `user` is on another server, federation being on.
    pub(crate) fn is_remote(&self, user: &BareJid) -> bool {
        self.elsewhere.is_remote(user)
    }

    fn shard(&self, user: &BareJid) -> &Addr<PresenceActor> {
        let mut h = DefaultHasher::new();
        user.hash(&mut h);
        &self.shards[(h.finish() as usize) % self.shards.len()]
    }

    /// Sends without waiting: for rare events (subscription changes, a
    /// session's last unavailable).
    pub fn send(&self, msg: PresenceMsg) {
        self.shard(&msg.user()).do_send(msg);
    }

    /// Sends and resolves once the shard has handled it: a session's own
    /// presence changes wait for this, so that a flood from a session is
    /// slowed at its socket instead of queueing in the shard.
    pub fn request(&self, msg: PresenceMsg) -> actix::dev::Request<PresenceActor, PresenceMsg> {
        self.shard(&msg.user()).send(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressing_a_template() {
        assert_eq!(
            &addressed(b"<presence from='a@b/c'/>", "d@e")[..],
            b"<presence to='d@e' from='a@b/c'/>"
        );
        assert_eq!(
            &addressed(b"<presence>x</presence>", "d@e/it's")[..],
            b"<presence to='d@e/it&apos;s'>x</presence>"
        );
    }
}
