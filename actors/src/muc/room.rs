//! One room (XEP-0045), one actor: its occupants and their roles, the
//! affiliations, the subject, the history. Whatever the room sends to its
//! occupants is serialised once per view and delivered with
//! [`Publication::deliver`]: a groupchat message is one serialisation, a
//! presence change at most three (without real JIDs, with them for those
//! who may see them, and the occupant's own with 110).
//!
//! The checks a join goes through ([`JoinCheck`]) and the history a
//! joiner asks for ([`select`]) are plain functions, tested here; the rate
//! of an occupant's messages is a [`Bucket`].

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use subtle::ConstantTimeEq;

use super::config::Whois;
use super::stanzas::{self, Item};
use super::{Affiliation, MucService, MucShared, Role, RoomConfig, ServiceMsg, StoredRoom};
use crate::bucket::Bucket;
use crate::error::{StanzaCondition, StanzaError, StanzaErrorType};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::services::{Broadcast, Publication};
use crate::session::{Refused, Session};
use crate::stanza::{IqType, Kind, MessageType, PresenceType, Stanza};
use crate::storage::StorageError;
use crate::xep::mam::{format_stamp, now_ms, parse_datetime};
use crate::xep::sid;
use crate::xml::Element;

/// A locked room nobody configured is destroyed after this (Prosody's
/// `muc_room_lock_timeout`).
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// IQs forwarded to occupants and not answered yet, at most: the oldest
/// is forgotten (its requester is answered by the service's timeout).
const MAX_FORWARDED: usize = 100;
/// How long a room told to stop still forwards what reaches it.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often copies held for sessions behind ([`Held`]) are offered again.
const RETRY_HELD: Duration = Duration::from_millis(5);
/// Copies held for one session beyond a whole welcome (the occupants, the
/// history and the subject) at most; past that the newest are dropped.
const HELD_SLACK: usize = 64;

/// A stanza for the room or one of its occupants.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RoomStanza(pub Stanza);

/// From the service, once it has taken the room back.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Stop;

/// What a join is checked against, in the order XEP-0045 §7.2 and the
/// peers check (the first failure answers).
#[derive(Clone, Copy, Debug)]
pub(crate) struct JoinCheck<'a> {
    pub nick: Option<&'a str>,
    pub locked: bool,
    pub affiliation: Affiliation,
    pub members_only: bool,
    /// The room's password, if it has one.
    pub password: Option<&'a str>,
    /// The one the joiner gave.
    pub given: Option<&'a str>,
    /// The room holds `maxusers` occupants.
    pub full: bool,
    /// The nick is another user's.
    pub nick_taken: bool,
}

impl JoinCheck<'_> {
    pub fn run(&self) -> Result<(), StanzaError> {
        use StanzaCondition::*;
        let owner = self.affiliation == Affiliation::Owner;
        if self.nick.is_none() {
            return Err(StanzaError::with_text(JidMalformed, "a nick is needed"));
        }
        // Prosody's lock.lib.lua: to all but its owner, as if not there.
        if self.locked && !owner {
            return Err(StanzaError::new(ItemNotFound));
        }
        if self.affiliation == Affiliation::Outcast {
            return Err(StanzaError::new(Forbidden));
        }
        if self.members_only && self.affiliation < Affiliation::Member {
            return Err(StanzaError::new(RegistrationRequired));
        }
        // ejabberd's check_password: owners need none.
        if let Some(password) = self.password {
            let right = self
                .given
                .is_some_and(|g| bool::from(g.as_bytes().ct_eq(password.as_bytes())));
            if !owner && !right {
                return Err(StanzaError::new(NotAuthorized));
            }
        }
        if self.full && self.affiliation < Affiliation::Admin {
            return Err(StanzaError {
                kind: StanzaErrorType::Wait,
                ..StanzaError::new(ServiceUnavailable)
            });
        }
        if self.nick_taken {
            return Err(StanzaError::new(Conflict));
        }
        Ok(())
    }
}

/// A message kept for joiners: as sent, with its `<delay/>`.
#[derive(Clone, Debug)]
pub(crate) struct HistoryEntry {
    pub el: Element,
    pub from: Jid,
    pub at_ms: i64,
    /// Its serialised length (XEP-0045 §7.2.14's characters, as Prosody
    /// counts them).
    pub chars: usize,
}

/// What a joiner asks of the history (`<history/>`, §7.2.14); nothing
/// asked: all the room keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HistoryRequest {
    pub max_stanzas: Option<usize>,
    pub max_chars: Option<usize>,
    pub seconds: Option<u64>,
    pub since_ms: Option<i64>,
}

impl HistoryRequest {
    /// Reads `<history/>`; an attribute that does not read is left out.
    pub fn parse(history: Option<&Element>) -> HistoryRequest {
        let Some(h) = history else {
            return HistoryRequest::default();
        };
        HistoryRequest {
            max_stanzas: h.attr("maxstanzas").and_then(|v| v.parse().ok()),
            max_chars: h.attr("maxchars").and_then(|v| v.parse().ok()),
            seconds: h.attr("seconds").and_then(|v| v.parse().ok()),
            since_ms: h.attr("since").and_then(parse_datetime),
        }
    }
}

/// The history a joiner gets, oldest first: the newest messages that fit
/// every limit asked for.
pub(crate) fn select<'a>(
    history: &'a VecDeque<HistoryEntry>,
    wanted: &HistoryRequest,
    now_ms: i64,
) -> Vec<&'a HistoryEntry> {
    let oldest = [
        wanted
            .seconds
            .map(|s| now_ms.saturating_sub((s as i64).saturating_mul(1000))),
        wanted.since_ms,
    ]
    .into_iter()
    .flatten()
    .max();
    let (mut chars, mut out) = (0usize, Vec::new());
    for entry in history.iter().rev() {
        if wanted.max_stanzas.is_some_and(|m| out.len() >= m) || oldest.is_some_and(|o| entry.at_ms < o) {
            break;
        }
        chars += entry.chars;
        if wanted.max_chars.is_some_and(|m| chars > m) {
            break;
        }
        out.push(entry);
    }
    out.reverse();
    out
}

/// The subject, and who set it.
pub(crate) struct Subject {
    pub text: String,
    /// `room/nick` of who set it, or the room.
    pub from: Jid,
    pub by: Option<String>,
}

/// One nick in the room: one user, with one or more sessions.
pub(crate) struct Occupant {
    pub nick: String,
    /// `room@service/nick`.
    pub jid: Jid,
    pub bare: BareJid,
    pub role: Role,
    /// The newest last: its presence is the one shown.
    pub sessions: Vec<OccSession>,
    bucket: Bucket,
}

pub(crate) struct OccSession {
    pub jid: FullJid,
    /// Its presence's payload (show, status, caps...), without the MUC
    /// elements.
    pub presence: Vec<Element>,
    /// A local session, looked up once at join; one found gone is not
    /// looked up again (its unavailable is on its way).
    pub session: Option<Arc<Session>>,
}

/// Copies for a session that was too far behind to take them when sent, in
/// order. A joiner of a big room is shown every occupant at once, more
/// than one sender may queue for a session (an eighth of `[c2s]
/// max_outbound_bytes`, about 500 presences by default): what does not fit
/// waits here and is offered again as the session reads, and whatever the
/// room sends that session meanwhile goes behind it, so that nothing
/// overtakes its self-presence. A copy shares its bytes with the other
/// occupants' (one serialisation), so holding it costs little; a session
/// gone takes its copies with it.
struct Held {
    session: Option<Arc<Session>>,
    copies: VecDeque<Broadcast>,
}

/// An IQ forwarded to an occupant (vCards in rooms): its answer goes back
/// to the requester under the request's id.
struct Forwarded {
    requester: Jid,
    id: String,
    target: FullJid,
    nick: String,
}

/// One occupant's presence as others are shown it.
pub(crate) struct View<'a> {
    pub from: &'a Jid,
    pub unavailable: bool,
    pub payload: &'a [Element],
    /// With the occupant's real JID, shown only to those who may see it.
    pub item: Item<'a>,
    /// Everyone's status codes.
    pub codes: &'a [u16],
    pub destroy: Option<&'a Element>,
    /// The role that decides whether others see it (`presencebroadcast`).
    pub role: Role,
}

pub(crate) struct Room {
    pub(super) shared: Arc<MucShared>,
    service: Addr<MucService>,
    pub(super) name: String,
    pub(super) jid: BareJid,
    pub(super) config: RoomConfig,
    /// New, and not configured by its owner yet.
    pub(super) locked: bool,
    /// Created by the join being handled (its self-presence gets 201).
    fresh: bool,
    created_ms: i64,
    pub(super) subject: Option<Subject>,
    pub(super) affiliations: HashMap<BareJid, (Affiliation, Option<String>)>,
    /// In the order they joined.
    pub(super) occupants: Vec<Occupant>,
    by_nick: HashMap<String, usize>,
    by_real: HashMap<Jid, usize>,
    history: VecDeque<HistoryEntry>,
    forwarded: HashMap<String, Forwarded>,
    forwarded_order: VecDeque<String>,
    /// Handed back to the service: what comes is forwarded to it.
    unloading: bool,
    pub(super) destroyed: bool,
    idle: Option<SpawnHandle>,
    /// Sessions behind, and what waits for them. A cell: copies are
    /// delivered while the occupants are being walked.
    held: RefCell<HashMap<FullJid, Held>>,
    retrying: Option<SpawnHandle>,
}

impl Room {
    /// A room created by `creator`'s join: its owner.
    pub(super) fn new(
        shared: Arc<MucShared>,
        service: Addr<MucService>,
        jid: BareJid,
        creator: BareJid,
        locked: bool,
    ) -> Room {
        let config = RoomConfig::new(shared.settings.limits());
        let mut room = Room::empty(shared, service, jid, config);
        room.affiliations.insert(creator, (Affiliation::Owner, None));
        room.locked = locked;
        room.fresh = true;
        room
    }

    /// A persistent room, as stored.
    pub(super) fn from_stored(
        shared: Arc<MucShared>,
        service: Addr<MucService>,
        jid: BareJid,
        stored: StoredRoom,
    ) -> Room {
        let config = RoomConfig::from_stored(&stored.config, shared.settings.limits());
        let mut room = Room::empty(shared, service, jid, config);
        room.created_ms = stored.created_ms;
        room.affiliations = stored
            .affiliations
            .into_iter()
            .map(|(jid, a, reason)| (jid, (a, reason)))
            .collect();
        if let Some(text) = stored.subject {
            let from = stored
                .subject_by
                .as_deref()
                .and_then(|nick| room.jid.with_resource(nick).ok())
                .map_or_else(|| room.jid.as_jid().clone(), Jid::from);
            room.subject = Some(Subject {
                text,
                from,
                by: stored.subject_by,
            });
        }
        room
    }

    fn empty(shared: Arc<MucShared>, service: Addr<MucService>, jid: BareJid, config: RoomConfig) -> Room {
        Room {
            name: jid.node().unwrap_or_default().to_owned(),
            shared,
            service,
            jid,
            config,
            locked: false,
            fresh: false,
            created_ms: now_ms(),
            subject: None,
            affiliations: HashMap::new(),
            occupants: Vec::new(),
            by_nick: HashMap::new(),
            by_real: HashMap::new(),
            history: VecDeque::new(),
            forwarded: HashMap::new(),
            forwarded_order: VecDeque::new(),
            unloading: false,
            destroyed: false,
            idle: None,
            held: RefCell::default(),
            retrying: None,
        }
    }

    /// The room as storage keeps it (`affiliations`: with them all).
    pub(super) fn stored(&self, affiliations: bool) -> StoredRoom {
        StoredRoom {
            name: self.name.clone(),
            config: self.config.submitted().to_string(),
            subject: self.subject.as_ref().map(|s| s.text.clone()),
            subject_by: self.subject.as_ref().and_then(|s| s.by.clone()),
            created_ms: self.created_ms,
            affiliations: if affiliations {
                self.affiliations
                    .iter()
                    .map(|(j, (a, r))| (j.clone(), *a, r.clone()))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    pub(super) fn affiliation(&self, user: &BareJid) -> Affiliation {
        self.affiliations.get(user).map_or(Affiliation::None, |(a, _)| *a)
    }

    /// XEP-0045 §5.1.2: the role an affiliation brings.
    pub(super) fn default_role(&self, affiliation: Affiliation) -> Role {
        match affiliation {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// True when an occupant in `role` sees others' real JIDs.
    pub(super) fn sees_jids(&self, role: Role) -> bool {
        self.config.whois == Whois::Anyone || role == Role::Moderator
    }

    /// The occupant a stanza comes from, by the sender's real JID.
    pub(super) fn sender(&self, stanza: &Stanza) -> Option<usize> {
        stanza.from().and_then(|f| self.by_real.get(f)).copied()
    }

    pub(super) fn by_nick(&self, nick: &str) -> Option<usize> {
        self.by_nick.get(nick).copied()
    }

    pub(super) fn reindex(&mut self) {
        self.by_nick.clear();
        self.by_real.clear();
        for (i, o) in self.occupants.iter().enumerate() {
            self.by_nick.insert(o.nick.clone(), i);
            for s in &o.sessions {
                self.by_real.insert(s.jid.clone().into(), i);
            }
        }
    }

    fn publication(&self) -> Option<&Publication> {
        self.shared.publication.get()
    }

    /// Sends one stanza from the room (routed).
    pub(super) fn send(&self, stanza: Stanza) {
        if let Some(p) = self.publication() {
            if let Err(e) = p.send(stanza) {
                log::debug!("{}: not sent: {e}", self.jid);
            }
        }
    }

    pub(super) fn refuse(&self, stanza: &Stanza, error: StanzaError) {
        if let Some(reply) = stanzas::error_reply(stanza, &error) {
            self.send(reply);
        }
    }

    pub(super) fn refuse_with(&self, stanza: &Stanza, condition: StanzaCondition, text: &'static str) {
        self.refuse(stanza, StanzaError::with_text(condition, text));
    }

    /// `el` (from `from`, without `to`) serialised once, for many.
    pub(super) fn broadcast(&self, el: Element, kind: Kind, from: &Jid) -> Option<Broadcast> {
        let stanza = Stanza::new(kind, Some(from.clone()), None, el);
        match self.publication()?.broadcast(&stanza) {
            Ok(b) => Some(b),
            Err(e) => {
                log::debug!("{}: not sent: {e}", self.jid);
                None
            }
        }
    }

    /// One copy to one session, or held for it ([`Held`]) behind what it
    /// has not taken yet. A session that stays behind for longer than a
    /// whole welcome loses copies: more would let one slow reader grow
    /// the room.
    pub(super) fn deliver(&self, b: &Broadcast, to: &OccSession) {
        let Some(p) = self.publication() else { return };
        let mut held = self.held.borrow_mut();
        if let Some(h) = held.get_mut(&to.jid) {
            let settings = &self.shared.settings;
            if h.copies.len() < (settings.max_occupants + settings.max_history) as usize + HELD_SLACK {
                h.copies.push_back(b.clone());
            } else {
                crate::metrics::muc_dropped();
            }
        } else if p.deliver(b, &to.jid, to.session.as_ref()) == Err(Refused::Busy) {
            let h = Held {
                session: to.session.clone(),
                copies: VecDeque::from([b.clone()]),
            };
            held.insert(to.jid.clone(), h);
        }
    }

    /// Offers held copies again, in order, until each session is behind
    /// again or has them all; again shortly while any are left.
    fn retry_held(&mut self, ctx: &mut Context<Self>) {
        if self.retrying.is_some() || self.held.get_mut().is_empty() {
            return;
        }
        self.retrying = Some(ctx.run_later(RETRY_HELD, |act, ctx| {
            act.retrying = None;
            if let Some(p) = act.shared.publication.get() {
                act.held.get_mut().retain(|jid, h| {
                    while let Some(b) = h.copies.front() {
                        match p.deliver(b, jid, h.session.as_ref()) {
                            Ok(()) => drop(h.copies.pop_front()),
                            Err(Refused::Busy) => return true,
                            Err(Refused::Gone) => return false,
                        }
                    }
                    false
                });
            }
            act.retry_held(ctx);
        }));
    }

    /// To every session of every occupant.
    pub(super) fn to_all(&self, b: &Broadcast) {
        for occ in &self.occupants {
            for s in &occ.sessions {
                self.deliver(b, s);
            }
        }
    }

    /// A copy of an occupant's presence, `jid` in its item.
    fn presence_copy(&self, v: &View<'_>, jid: Option<&Jid>, codes: &[u16], id: Option<&str>) -> Option<Broadcast> {
        let item = Item { jid, ..v.item };
        let x = stanzas::user_x(Some(&item), v.destroy, codes);
        let el = stanzas::presence(v.from, v.unavailable, id, v.payload, x);
        let kind = if v.unavailable {
            PresenceType::Unavailable
        } else {
            PresenceType::Available
        };
        self.broadcast(el, Kind::Presence(kind), v.from)
    }

    /// Shows `v` to every occupant but `skip`: with the real JID to those
    /// who may see it. Each of the two copies is made at most once.
    pub(super) fn show_others(&self, v: &View<'_>, skip: Option<usize>) {
        if !self.config.broadcasts(v.role) {
            return;
        }
        let (mut anonymous, mut full) = (None, None);
        for (i, occ) in self.occupants.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            let copy = if self.sees_jids(occ.role) {
                full.get_or_insert_with(|| self.presence_copy(v, v.item.jid, v.codes, None))
            } else {
                anonymous.get_or_insert_with(|| self.presence_copy(v, None, v.codes, None))
            };
            if let Some(b) = copy {
                for s in &occ.sessions {
                    self.deliver(b, s);
                }
            }
        }
    }

    /// Shows `v` to the occupant's own `sessions`: each with its real JID,
    /// and 110 (and `more`).
    pub(super) fn show_own(&self, v: &View<'_>, sessions: &[OccSession], more: &[u16], id: Option<&str>) {
        let mut own = vec![110];
        own.extend_from_slice(more);
        let codes = stanzas::codes(v.codes, &own);
        for s in sessions {
            if let Some(b) = self.presence_copy(v, Some(s.jid.as_jid()), &codes, id) {
                self.deliver(&b, s);
            }
        }
    }

    /// An occupant's presence as it is now.
    pub(super) fn view_of<'a>(&'a self, occ: &'a Occupant, codes: &'a [u16]) -> View<'a> {
        let primary = occ.sessions.last();
        View {
            from: &occ.jid,
            unavailable: false,
            payload: primary.map_or(&[][..], |s| &s.presence[..]),
            item: Item {
                affiliation: self.affiliation(&occ.bare),
                role: occ.role,
                jid: primary.map(|s| s.jid.as_jid()),
                nick: None,
                actor: None,
                reason: None,
            },
            codes,
            destroy: None,
            role: occ.role,
        }
    }

    /// Occupant `idx`'s presence to everyone: the others, then its own
    /// sessions (110).
    pub(super) fn announce(&self, idx: usize, codes: &[u16]) {
        let Some(occ) = self.occupants.get(idx) else { return };
        let v = self.view_of(occ, codes);
        self.show_others(&v, Some(idx));
        self.show_own(&v, &occ.sessions, &[], None);
    }

    /// Takes occupant `idx` out, every session: it gets its unavailable
    /// first (110 and `code`), then the others (`code`): XEP-0045 §8.2's
    /// order, for kicks (307), bans (301), membership lost (321, 322).
    pub(super) fn expel(&mut self, idx: usize, code: u16, actor: Option<&str>, reason: Option<&str>) {
        if idx >= self.occupants.len() {
            return;
        }
        let occ = self.occupants.remove(idx);
        self.reindex();
        self.show_gone(&occ, &occ.sessions, &[code], actor, reason, &[]);
    }

    /// An occupant that is out: `sessions` get its unavailable (110), then
    /// the others.
    fn show_gone(
        &self,
        occ: &Occupant,
        sessions: &[OccSession],
        codes: &[u16],
        actor: Option<&str>,
        reason: Option<&str>,
        payload: &[Element],
    ) {
        let v = View {
            from: &occ.jid,
            unavailable: true,
            payload,
            item: Item {
                affiliation: self.affiliation(&occ.bare),
                role: Role::None,
                jid: occ.sessions.last().map(|s| s.jid.as_jid()),
                nick: None,
                actor,
                reason,
            },
            codes,
            destroy: None,
            role: occ.role,
        };
        self.show_own(&v, sessions, &[], None);
        self.show_others(&v, None);
    }

    /// Takes one session out of occupant `idx` (a leave, 333): it gets its
    /// unavailable; the others see the occupant go if that was its last
    /// session, else its presence as it is now.
    fn remove_session(&mut self, idx: usize, real: &Jid, codes: &[u16], payload: &[Element]) {
        let Some(occ) = self.occupants.get_mut(idx) else { return };
        let Some(pos) = occ.sessions.iter().position(|s| s.jid.as_jid() == real) else {
            return;
        };
        let shown = pos + 1 == occ.sessions.len();
        if occ.sessions.len() == 1 {
            let occ = self.occupants.remove(idx);
            self.reindex();
            return self.show_gone(&occ, &occ.sessions, codes, None, None, payload);
        }
        let gone = occ.sessions.remove(pos);
        self.by_real.remove(real);
        let occ = &self.occupants[idx];
        let v = View {
            unavailable: true,
            payload,
            item: Item {
                role: Role::None,
                ..self.view_of(occ, codes).item
            },
            ..self.view_of(occ, codes)
        };
        self.show_own(&v, std::slice::from_ref(&gone), &[], None);
        if shown {
            let now = self.view_of(occ, &[]);
            self.show_others(&now, Some(idx));
        }
    }

    fn local_session(&self, real: &FullJid) -> Option<Arc<Session>> {
        let router = &self.shared.router;
        if router.is_local_domain(real.domain()) {
            router.sessions().get(real)
        } else {
            None
        }
    }

    /// The room's owners changed: the service counts rooms per owner.
    pub(super) fn owners_changed(&self) {
        let owners = self
            .affiliations
            .iter()
            .filter(|(_, (a, _))| *a == Affiliation::Owner)
            .map(|(j, _)| j.clone())
            .collect();
        self.service.do_send(ServiceMsg::Owners {
            name: self.name.clone(),
            owners,
        });
    }

    /// Lists the room in the service's disco#items, or takes it off.
    pub(super) fn relist(&self) {
        let title = if self.locked || self.destroyed {
            None
        } else {
            self.config.listed_as(&self.name)
        };
        self.shared.list(&self.name, title);
    }

    /// Runs `work` (storage) before anything else reaches the room, then
    /// `then` with its outcome: what the room says after a change follows
    /// the change being stored.
    pub(super) fn after<F>(
        &mut self,
        ctx: &mut Context<Self>,
        work: F,
        then: impl FnOnce(&mut Room, Result<(), StorageError>, &mut Context<Room>) + 'static,
    ) where
        F: Future<Output = Result<(), StorageError>> + 'static,
    {
        ctx.wait(work.into_actor(self).map(move |res, act, ctx| {
            if let Err(e) = &res {
                log::error!("{}: not stored: {e}", act.jid);
            }
            then(act, res, ctx);
            act.retry_held(ctx);
        }));
    }

    /// Empty now: a temporary room goes, a persistent one is unloaded
    /// once it has been empty for `[muc] idle_unload_secs`.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        if self.unloading || !self.occupants.is_empty() {
            return;
        }
        if self.destroyed || !self.config.persistent {
            return self.unload(false, ctx);
        }
        if self.idle.is_none() {
            let idle = self.shared.settings.idle_unload;
            self.idle = Some(ctx.run_later(idle, |act, ctx| {
                act.idle = None;
                if act.occupants.is_empty() && !act.unloading {
                    act.unload(true, ctx);
                }
            }));
        }
    }

    /// Hands the room back to the service: to be loaded again from what it
    /// is now (`keep`), or gone.
    fn unload(&mut self, keep: bool, ctx: &mut Context<Self>) {
        self.unloading = true;
        let stored = (keep && !self.destroyed).then(|| Box::new(self.stored(true)));
        if stored.is_none() {
            self.shared.list(&self.name, None);
        }
        self.service.do_send(ServiceMsg::Idle {
            name: self.name.clone(),
            addr: ctx.address(),
            stored,
        });
    }
}

/// A presence's payload as an occupant's: without MUC elements (its join
/// `<x/>`, or a forged muc#user one).
fn payload_of(stanza: &Stanza) -> Vec<Element> {
    stanza
        .element()
        .children()
        .filter(|c| !(c.name() == "x" && (c.ns() == ns::MUC || c.ns() == ns::MUC_USER)))
        .cloned()
        .collect()
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::metrics::muc_room(true);
        self.relist();
        if self.locked {
            ctx.run_later(LOCK_TIMEOUT, |act, ctx| {
                if act.locked && !act.destroyed {
                    log::debug!("{}: never configured, destroyed", act.jid);
                    act.destroy(None, None, None, ctx);
                    act.settle(ctx);
                }
            });
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        crate::metrics::muc_room(false);
    }
}

impl Handler<Stop> for Room {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        // What the sink sent here before the service took the room back
        // is still forwarded for a while.
        ctx.run_later(STOP_GRACE, |_, ctx| ctx.stop());
    }
}

impl Handler<RoomStanza> for Room {
    type Result = ();

    fn handle(&mut self, RoomStanza(stanza): RoomStanza, ctx: &mut Context<Self>) {
        if self.unloading {
            self.service.do_send(ServiceMsg::Stanza(stanza));
            return;
        }
        let to_occupant = stanza.to().is_some_and(|t| t.resource().is_some());
        match stanza.kind {
            Kind::Presence(_) => self.on_presence(&stanza, ctx),
            Kind::Message(MessageType::Error) => self.kickable(&stanza),
            Kind::Message(_) if to_occupant => self.on_private(&stanza),
            Kind::Message(MessageType::Groupchat) => self.on_groupchat(&stanza, ctx),
            Kind::Message(_) => self.on_message(&stanza, ctx),
            Kind::Iq(_) if to_occupant => self.on_occupant_iq(&stanza),
            Kind::Iq(_) => self.on_room_iq(&stanza, ctx),
        }
        self.retry_held(ctx);
        self.settle(ctx);
    }
}

impl Room {
    fn on_presence(&mut self, stanza: &Stanza, ctx: &mut Context<Self>) {
        let Some(real) = stanza.from().cloned().and_then(|f| f.try_into_full().ok()) else {
            return;
        };
        let current = self.by_real.get(real.as_jid()).copied();
        let Kind::Presence(kind) = stanza.kind else { return };
        match (kind, current) {
            // Prosody's handle_kickable, ejabberd's expulse_participant.
            (PresenceType::Error, Some(i)) if kicks(stanza) => self.remove_session(i, real.as_jid(), &[333], &[]),
            (PresenceType::Unavailable, Some(i)) => self.remove_session(i, real.as_jid(), &[], &payload_of(stanza)),
            (PresenceType::Available, Some(i)) => match stanza.to().and_then(Jid::resource) {
                None => self.refuse_with(stanza, StanzaCondition::JidMalformed, "a nick is needed"),
                Some(nick) if nick == self.occupants[i].nick && stanza.element().has_child("x", ns::MUC) => {
                    self.rejoin(i, real.as_jid(), stanza)
                }
                Some(nick) if nick == self.occupants[i].nick => self.update(i, real.as_jid(), stanza),
                Some(nick) => self.change_nick(i, real.as_jid(), stanza, nick),
            },
            (PresenceType::Available, None) => self.join(stanza, real, ctx),
            // Unavailable or errors from one not here, errors that do not
            // say the session is gone, subscriptions, probes.
            _ => {}
        }
    }

    /// XEP-0045 §7.2: a join, checked, then (ejabberd's
    /// send_initial_presences_and_messages) the others' presence to the
    /// joiner, the joiner's to the others, its self-presence, the
    /// history, and the subject, always last.
    fn join(&mut self, stanza: &Stanza, real: FullJid, ctx: &mut Context<Self>) {
        let Some(to) = stanza.to() else { return };
        let nick = to.resource();
        let x = stanza.element().get_child("x", ns::MUC);
        let given = x.and_then(|x| x.get_child("password", ns::MUC)).map(Element::text);
        let bare = real.to_bare();
        let affiliation = self.affiliation(&bare);
        let holder = nick.and_then(|n| self.by_nick(n));
        let check = JoinCheck {
            nick,
            locked: self.locked,
            affiliation,
            members_only: self.config.members_only,
            password: self.config.password(),
            given: given.as_deref(),
            full: holder.is_none() && self.occupants.len() >= self.config.max_users as usize,
            nick_taken: holder.is_some_and(|i| self.occupants[i].bare != bare),
        };
        if let Err(e) = check.run() {
            return self.refuse(stanza, e);
        }
        let Some(nick) = nick else { return };
        let session = OccSession {
            jid: real.clone(),
            presence: payload_of(stanza),
            session: self.local_session(&real),
        };
        let idx = match holder {
            // Another session of the same user: the same occupant.
            Some(i) => {
                self.occupants[i].sessions.push(session);
                i
            }
            None => {
                let role = self.default_role(affiliation);
                let bucket = Bucket::new(self.shared.settings.message_burst, Instant::now());
                self.occupants.push(Occupant {
                    nick: nick.to_owned(),
                    jid: to.clone(),
                    bare,
                    role,
                    sessions: vec![session],
                    bucket,
                });
                let i = self.occupants.len() - 1;
                self.by_nick.insert(nick.to_owned(), i);
                i
            }
        };
        self.by_real.insert(real.into(), idx);
        if let Some(idle) = self.idle.take() {
            ctx.cancel_future(idle);
        }
        self.welcome(idx, holder.is_none(), stanza);
        self.fresh = false;
    }

    /// A join from a session that is an occupant already (its client lost
    /// track, or reconnected with the same resource): it gets the join's
    /// stanzas again, and its session is looked up again.
    fn rejoin(&mut self, idx: usize, real: &Jid, stanza: &Stanza) {
        let session = stanza
            .from()
            .cloned()
            .and_then(|f| f.try_into_full().ok())
            .and_then(|f| self.local_session(&f));
        let occ = &mut self.occupants[idx];
        let Some(pos) = occ.sessions.iter().position(|s| s.jid.as_jid() == real) else {
            return;
        };
        let mut s = occ.sessions.remove(pos);
        s.presence = payload_of(stanza);
        s.session = session;
        occ.sessions.push(s);
        self.welcome(idx, false, stanza);
    }

    /// What a joining session (occupant `idx`'s newest) gets (ejabberd's
    /// send_initial_presences_and_messages): the others' presence, its own
    /// shown to the others (a new occupant's), its self-presence, the
    /// history asked for, then the subject, always last.
    fn welcome(&self, idx: usize, new_occupant: bool, stanza: &Stanza) {
        let occ = &self.occupants[idx];
        let Some(joined) = occ.sessions.last() else { return };
        let sees = self.sees_jids(occ.role);
        for (i, other) in self.occupants.iter().enumerate() {
            if i == idx || !self.config.broadcasts(other.role) {
                continue;
            }
            let v = self.view_of(other, &[]);
            let jid = if sees { v.item.jid } else { None };
            if let Some(b) = self.presence_copy(&v, jid, &[], None) {
                self.deliver(&b, joined);
            }
        }
        let v = self.view_of(occ, &[]);
        if new_occupant {
            self.show_others(&v, Some(idx));
        }
        let mut own = Vec::new();
        if self.config.whois == Whois::Anyone {
            own.push(100);
        }
        if self.fresh {
            own.push(201);
        }
        self.show_own(&v, std::slice::from_ref(joined), &own, stanza.id());
        let x = stanza.element().get_child("x", ns::MUC);
        let wanted = HistoryRequest::parse(x.and_then(|x| x.get_child("history", ns::MUC)));
        for entry in select(&self.history, &wanted, now_ms()) {
            let kind = Kind::Message(MessageType::Groupchat);
            if let Some(b) = self.broadcast(entry.el.clone(), kind, &entry.from) {
                self.deliver(&b, joined);
            }
        }
        let (from, text) = match &self.subject {
            Some(s) => (&s.from, s.text.as_str()),
            None => (self.jid.as_jid(), ""),
        };
        let subject = stanzas::subject(from, text);
        if let Some(b) = self.broadcast(subject, Kind::Message(MessageType::Groupchat), from) {
            self.deliver(&b, joined);
        }
    }

    /// New presence of an occupant's session (show, status): everyone is
    /// shown it.
    fn update(&mut self, idx: usize, real: &Jid, stanza: &Stanza) {
        let occ = &mut self.occupants[idx];
        let Some(pos) = occ.sessions.iter().position(|s| s.jid.as_jid() == real) else {
            return;
        };
        let mut s = occ.sessions.remove(pos);
        s.presence = payload_of(stanza);
        occ.sessions.push(s);
        self.announce(idx, &[]);
    }

    /// XEP-0045 §7.6: unavailable from the old nick with the new one and
    /// 303, then presence from the new nick, to everyone.
    fn change_nick(&mut self, idx: usize, real: &Jid, stanza: &Stanza, nick: &str) {
        let Some(new_jid) = stanza.to().cloned() else { return };
        if self.by_nick(nick).is_some_and(|holder| holder != idx) {
            return self.refuse(stanza, StanzaError::new(StanzaCondition::Conflict));
        }
        let occ = &self.occupants[idx];
        let v = View {
            unavailable: true,
            payload: &[],
            item: Item {
                nick: Some(nick),
                ..self.view_of(occ, &[303]).item
            },
            ..self.view_of(occ, &[303])
        };
        self.show_others(&v, Some(idx));
        self.show_own(&v, &occ.sessions, &[], None);
        let occ = &mut self.occupants[idx];
        occ.nick = nick.to_owned();
        occ.jid = new_jid;
        if let Some(pos) = occ.sessions.iter().position(|s| s.jid.as_jid() == real) {
            let mut s = occ.sessions.remove(pos);
            s.presence = payload_of(stanza);
            occ.sessions.push(s);
        }
        self.reindex();
        self.announce(idx, &[]);
    }

    /// An error from an occupant saying it is no longer there (its
    /// client or server refused what the room sent): that session is
    /// taken out, 333.
    fn kickable(&mut self, stanza: &Stanza) {
        if !kicks(stanza) {
            return;
        }
        if let (Some(i), Some(from)) = (self.sender(stanza), stanza.from().cloned()) {
            self.remove_session(i, &from, &[333], &[]);
        }
    }

    /// XEP-0045 §7.4: a message to everyone, the sender included, with
    /// the room's stanza id (XEP-0359), kept for history.
    fn on_groupchat(&mut self, stanza: &Stanza, ctx: &mut Context<Self>) {
        let Some(idx) = self.sender(stanza) else {
            return self.refuse_with(stanza, StanzaCondition::NotAcceptable, "only occupants may speak here");
        };
        let settings = &self.shared.settings;
        let occ = &mut self.occupants[idx];
        if occ.role < Role::Participant {
            return self.refuse_with(stanza, StanzaCondition::Forbidden, "visitors may not speak here");
        }
        if !occ
            .bucket
            .take(settings.message_rate, settings.message_burst, Instant::now())
        {
            let error = StanzaError::with_text(StanzaCondition::ResourceConstraint, "too many messages: wait");
            return self.refuse(stanza, error);
        }
        let el = stanza.element();
        if let (Some(subject), false) = (el.get_child("subject", ns::CLIENT), el.has_child("body", ns::CLIENT)) {
            return self.change_subject(idx, subject.text(), stanza, ctx);
        }
        let occ = &self.occupants[idx];
        let id = sid::new_id();
        let stanza_id = Element::new("stanza-id", sid::NS)
            .with_attr("id", id)
            .with_attr("by", self.jid.as_str());
        // Ids the sender wrote are not the room's to vouch for.
        let children = el
            .children()
            .filter(|c| !c.is("stanza-id", sid::NS))
            .cloned()
            .chain(std::iter::once(stanza_id));
        let message = stanzas::groupchat(&occ.jid, stanza.id(), children);
        let from = occ.jid.clone();
        let Some(b) = self.broadcast(message.clone(), Kind::Message(MessageType::Groupchat), &from) else {
            return;
        };
        self.to_all(&b);
        // Chat states and receipts alone would push messages out of the
        // history (as in Prosody's muc-message-is-historic).
        if crate::xep::mam::worth_keeping(stanza) {
            self.remember(message, from, b.len());
        }
    }

    /// Keeps a message for joiners, stamped now.
    fn remember(&mut self, mut message: Element, from: Jid, len: usize) {
        let keep = self.config.history_length as usize;
        if keep == 0 {
            self.history.clear();
            return;
        }
        let at_ms = now_ms();
        let delay = stanzas::delay(&self.jid, format_stamp(at_ms));
        let chars = len + delay.to_xml_in(ns::CLIENT).len();
        message.push_child(delay);
        self.history.push_back(HistoryEntry {
            el: message,
            from,
            at_ms,
            chars,
        });
        while self.history.len() > keep {
            self.history.pop_front();
        }
    }

    /// XEP-0045 §8.1: moderators, and participants if `changesubject`.
    fn change_subject(&mut self, idx: usize, text: String, stanza: &Stanza, ctx: &mut Context<Self>) {
        let occ = &self.occupants[idx];
        let allowed = occ.role == Role::Moderator || (self.config.change_subject && occ.role >= Role::Participant);
        if !allowed {
            return self.refuse_with(stanza, StanzaCondition::Forbidden, "you may not change the subject");
        }
        let from = occ.jid.clone();
        let message = stanzas::groupchat(
            &from,
            stanza.id(),
            [Element::new("subject", ns::CLIENT).with_text(text.as_str())],
        );
        self.subject = Some(Subject {
            text,
            from: from.clone(),
            by: Some(occ.nick.clone()),
        });
        if let Some(b) = self.broadcast(message, Kind::Message(MessageType::Groupchat), &from) {
            self.to_all(&b);
        }
        if self.config.persistent {
            let save = self.shared.router.storage();
            let save = save.muc_save_room(self.shared.domain.as_str(), self.stored(false));
            self.after(ctx, save, |_, _, _| {});
        }
    }

    /// XEP-0045 §7.5: a private message to `room/nick`, to every session
    /// of that occupant, from the sender's occupant JID (routed: archived
    /// and copied as any chat, `carbons::eligible` aside).
    fn on_private(&mut self, stanza: &Stanza) {
        if stanza.kind == Kind::Message(MessageType::Groupchat) {
            return self.refuse_with(stanza, StanzaCondition::BadRequest, "groupchat goes to the room");
        }
        let Some(sender) = self.sender(stanza) else {
            return self.refuse_with(stanza, StanzaCondition::NotAcceptable, "only occupants may send here");
        };
        let Some(target) = stanza.to().and_then(Jid::resource).and_then(|n| self.by_nick(n)) else {
            return self.refuse(stanza, StanzaError::new(StanzaCondition::ItemNotFound));
        };
        let from = self.occupants[sender].jid.clone();
        let mut el = stanza.element().clone();
        el.remove_children(|c| c.is("x", ns::MUC_USER));
        el.push_child(Element::new("x", ns::MUC_USER));
        for s in &self.occupants[target].sessions {
            let to = Some(s.jid.clone().into());
            self.send(Stanza::new(stanza.kind, Some(from.clone()), to, el.clone()));
        }
    }

    /// IQs to `room/nick`: a self-ping (XEP-0410) is answered here, the
    /// rest go to that occupant's newest session and their answers back.
    fn on_occupant_iq(&mut self, stanza: &Stanza) {
        let Some(nick) = stanza.to().and_then(Jid::resource) else {
            return;
        };
        match stanza.kind {
            Kind::Iq(IqType::Get | IqType::Set) => {}
            _ => return self.answered(stanza),
        }
        let sender = self.sender(stanza);
        if stanza.payload().is_some_and(|p| p.is("ping", ns::PING)) {
            return match sender {
                Some(i) if self.occupants[i].nick == nick => self.send(stanza.iq_result(None)),
                _ => self.refuse_with(stanza, StanzaCondition::NotAcceptable, "not an occupant of this nick"),
            };
        }
        let Some(sender) = sender else {
            return self.refuse_with(stanza, StanzaCondition::NotAcceptable, "only occupants may ask here");
        };
        let Some(target) = self.by_nick(nick) else {
            return self.refuse(stanza, StanzaError::new(StanzaCondition::ItemNotFound));
        };
        let (Some(requester), Some(id)) = (stanza.from(), stanza.id()) else {
            return;
        };
        let Some(session) = self.occupants[target].sessions.last() else {
            return;
        };
        let fresh = sid::new_id();
        let mut el = stanza.element().clone();
        el.set_attr("id", fresh.as_str());
        let from = Some(self.occupants[sender].jid.clone());
        let forwarded = Stanza::new(stanza.kind, from, Some(session.jid.clone().into()), el);
        while self.forwarded_order.len() >= MAX_FORWARDED {
            if let Some(old) = self.forwarded_order.pop_front() {
                self.forwarded.remove(&old);
            }
        }
        self.forwarded.insert(
            fresh.clone(),
            Forwarded {
                requester: requester.clone(),
                id: id.to_owned(),
                target: session.jid.clone(),
                nick: nick.to_owned(),
            },
        );
        self.forwarded_order.push_back(fresh);
        self.send(forwarded);
    }

    /// An answer to an IQ forwarded to an occupant: back to its requester.
    fn answered(&mut self, stanza: &Stanza) {
        let Some(id) = stanza.id() else { return };
        let Some(f) = self.forwarded.get(id) else { return };
        if stanza.from() != Some(f.target.as_jid()) {
            return;
        }
        let Some(f) = self.forwarded.remove(id) else { return };
        self.forwarded_order.retain(|i| i != id);
        let from = match self.by_nick(&f.nick) {
            Some(i) => self.occupants[i].jid.clone(),
            None => self
                .jid
                .with_resource(&f.nick)
                .map_or_else(|_| self.jid.clone().into(), Jid::from),
        };
        let mut el = stanza.element().clone();
        el.set_attr("id", f.id);
        self.send(Stanza::new(stanza.kind, Some(from), Some(f.requester), el));
    }

    /// A message to the room that is not groupchat: a mediated invitation
    /// or a declined one (XEP-0045 §7.8.2); nothing else is taken.
    fn on_message(&mut self, stanza: &Stanza, ctx: &mut Context<Self>) {
        let Some(x) = stanza.element().get_child("x", ns::MUC_USER) else {
            return self.refuse_with(
                stanza,
                StanzaCondition::NotAcceptable,
                "only groupchat is sent to a room",
            );
        };
        let Some(from) = stanza.from() else { return };
        if let Some(decline) = x.get_child("decline", ns::MUC_USER) {
            let Some(to) = decline.attr("to").and_then(|t| Jid::parse(t).ok()) else {
                return self.refuse_with(stanza, StanzaCondition::JidMalformed, "whom is it declined to?");
            };
            let reason = decline.get_child("reason", ns::MUC_USER);
            let el = stanzas::mediated(&self.jid, &to, "decline", from, reason, None);
            return self.send(Stanza::new(
                Kind::Message(MessageType::Normal),
                Some(self.jid.clone().into()),
                Some(to),
                el,
            ));
        }
        let invites: Vec<&Element> = x.children().filter(|c| c.is("invite", ns::MUC_USER)).collect();
        if invites.is_empty() {
            return self.refuse_with(
                stanza,
                StanzaCondition::BadRequest,
                "neither an invitation nor a decline",
            );
        }
        let Some(sender) = self.sender(stanza) else {
            return self.refuse_with(stanza, StanzaCondition::NotAcceptable, "only occupants may invite");
        };
        let inviter = self.affiliation(&self.occupants[sender].bare);
        if !self.config.allow_invites && inviter < Affiliation::Admin {
            return self.refuse_with(stanza, StanzaCondition::Forbidden, "only admins and owners invite here");
        }
        let mut sent = Vec::new();
        for invite in invites {
            let Some(to) = invite.attr("to").and_then(|t| Jid::parse(t).ok()) else {
                return self.refuse_with(stanza, StanzaCondition::JidMalformed, "whom is it for?");
            };
            let reason = invite.get_child("reason", ns::MUC_USER);
            let el = stanzas::mediated(&self.jid, &to, "invite", from, reason, self.config.password());
            sent.push((to, el));
        }
        // §7.8.2: in a members-only room the invitee becomes a member
        // (as in Prosody), so that the invitation can be taken.
        let mut granted = Vec::new();
        if self.config.members_only {
            for (to, _) in &sent {
                let invitee = to.to_bare();
                if self.affiliation(&invitee) == Affiliation::None {
                    self.affiliations.insert(invitee.clone(), (Affiliation::Member, None));
                    granted.push(invitee);
                }
            }
        }
        let room: Jid = self.jid.clone().into();
        let deliver = move |act: &mut Room, _: Result<(), StorageError>, _: &mut Context<Room>| {
            for (to, el) in sent {
                act.send(Stanza::new(
                    Kind::Message(MessageType::Normal),
                    Some(room.clone()),
                    Some(to),
                    el,
                ));
            }
        };
        if granted.is_empty() || !self.config.persistent {
            return deliver(self, Ok(()), ctx);
        }
        let (storage, domain, name) = (
            self.shared.router.storage().clone(),
            self.shared.domain.to_string(),
            self.name.clone(),
        );
        let work = async move {
            for jid in granted {
                storage
                    .muc_set_affiliation(&domain, &name, &jid, Some((Affiliation::Member, None)))
                    .await?;
            }
            Ok::<(), StorageError>(())
        };
        self.after(ctx, work, deliver);
    }

    /// IQs to the room itself.
    fn on_room_iq(&mut self, stanza: &Stanza, ctx: &mut Context<Self>) {
        let Kind::Iq(t @ (IqType::Get | IqType::Set)) = stanza.kind else {
            return;
        };
        let Some(payload) = stanza.payload() else {
            return self.refuse(stanza, StanzaError::new(StanzaCondition::BadRequest));
        };
        let owner = stanza
            .from()
            .is_some_and(|f| self.affiliation(&f.to_bare()) == Affiliation::Owner);
        match (t, payload.name(), payload.ns()) {
            (IqType::Get, "query", ns::DISCO_INFO | ns::DISCO_ITEMS) => {
                // A locked room is not there but for its owner (§10.1.1).
                if payload.attr("node").is_some() || (self.locked && !owner) {
                    return self.refuse(stanza, StanzaError::new(StanzaCondition::ItemNotFound));
                }
                let answer = if payload.ns() == ns::DISCO_INFO {
                    self.disco_info()
                } else {
                    Element::new("query", ns::DISCO_ITEMS)
                };
                self.send(stanza.iq_result(Some(answer)));
            }
            (_, "query", ns::MUC_ADMIN) => self.on_admin(stanza, payload, ctx),
            (_, "query", ns::MUC_OWNER) => self.on_owner(stanza, payload, ctx),
            (IqType::Get, "ping", ns::PING) => self.send(stanza.iq_result(None)),
            _ => self.refuse(stanza, StanzaError::new(StanzaCondition::ServiceUnavailable)),
        }
    }

    /// XEP-0045 §6.4: identity, features, the `muc#roominfo` form.
    fn disco_info(&self) -> Element {
        let feature = |var: &str| Element::new("feature", ns::DISCO_INFO).with_attr("var", var);
        let mut query = Element::new("query", ns::DISCO_INFO).with_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr("name", self.config.title(&self.name)),
        );
        query.push_child(feature(ns::DISCO_INFO));
        query.push_child(feature(ns::MUC));
        for f in self.config.features() {
            query.push_child(feature(f));
        }
        query.push_child(feature(sid::NS));
        query.push_child(feature("http://jabber.org/protocol/muc#self-ping-optimization"));
        let subject = self.subject.as_ref().map_or("", |s| s.text.as_str());
        query.push_child(self.config.info_form(self.occupants.len(), subject));
        query
    }

    /// XEP-0045 §10.9: everyone leaves with `<destroy/>`, storage forgets
    /// the room, then the request (if any) is answered and the room goes.
    pub(super) fn destroy(
        &mut self,
        reason: Option<String>,
        alternate: Option<String>,
        request: Option<Stanza>,
        ctx: &mut Context<Self>,
    ) {
        let destroy = stanzas::destroy(alternate.as_deref(), reason.as_deref());
        for occ in &self.occupants {
            let v = View {
                from: &occ.jid,
                unavailable: true,
                payload: &[],
                item: Item {
                    affiliation: Affiliation::None,
                    role: Role::None,
                    jid: None,
                    nick: None,
                    actor: None,
                    reason: None,
                },
                codes: &[],
                destroy: Some(&destroy),
                role: occ.role,
            };
            if let Some(b) = self.presence_copy(&v, None, &[], None) {
                for s in &occ.sessions {
                    self.deliver(&b, s);
                }
            }
        }
        self.occupants.clear();
        self.reindex();
        self.destroyed = true;
        self.relist();
        let done = move |act: &mut Room, _: Result<(), StorageError>, _: &mut Context<Room>| {
            if let Some(request) = request {
                act.send(request.iq_result(None));
            }
        };
        if !self.config.persistent {
            return done(self, Ok(()), ctx);
        }
        let delete = self
            .shared
            .router
            .storage()
            .muc_delete_room(self.shared.domain.as_str(), &self.name);
        self.after(ctx, delete, done);
    }
}

/// True when an error from an occupant means its session is gone, so
/// that it leaves (Prosody's `muc/util.lib.lua` list, which ejabberd's
/// resembles): a client answering `<feature-not-implemented/>` to a
/// private message stays. An error without a condition counts as gone.
fn kicks(stanza: &Stanza) -> bool {
    use StanzaCondition::*;
    let Some(error) = stanza.element().get_child("error", ns::CLIENT) else {
        return true;
    };
    matches!(
        StanzaError::from_element(error).condition,
        Gone | InternalServerError
            | ItemNotFound
            | JidMalformed
            | RecipientUnavailable
            | Redirect
            | RemoteServerNotFound
            | RemoteServerTimeout
            | ServiceUnavailable
            | UndefinedCondition
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> JoinCheck<'static> {
        JoinCheck {
            nick: Some("Juliet"),
            locked: false,
            affiliation: Affiliation::None,
            members_only: false,
            password: None,
            given: None,
            full: false,
            nick_taken: false,
        }
    }

    fn refusal(c: JoinCheck<'_>) -> (StanzaCondition, StanzaErrorType) {
        let e = c.run().unwrap_err();
        (e.condition, e.kind)
    }

    #[test]
    fn a_join_is_checked_in_the_stated_order() {
        use StanzaCondition::*;
        use StanzaErrorType::*;
        check().run().unwrap();
        // Everything wrong at once: the nick answers first, then each
        // check as it is taken away.
        let mut c = JoinCheck {
            nick: None,
            locked: true,
            affiliation: Affiliation::Outcast,
            members_only: true,
            password: Some("secret"),
            given: Some("wrong"),
            full: true,
            nick_taken: true,
        };
        assert_eq!(refusal(c), (JidMalformed, Modify));
        c.nick = Some("Juliet");
        assert_eq!(refusal(c), (ItemNotFound, Cancel));
        c.locked = false;
        assert_eq!(refusal(c), (Forbidden, Auth));
        c.affiliation = Affiliation::None;
        assert_eq!(refusal(c), (RegistrationRequired, Auth));
        c.members_only = false;
        assert_eq!(refusal(c), (NotAuthorized, Auth));
        c.given = None;
        assert_eq!(refusal(c), (NotAuthorized, Auth));
        c.given = Some("secret");
        assert_eq!(refusal(c), (ServiceUnavailable, Wait));
        c.full = false;
        assert_eq!(refusal(c), (Conflict, Cancel));
        c.nick_taken = false;
        c.run().unwrap();
    }

    #[test]
    fn owners_pass_the_lock_and_the_password_and_admins_a_full_room() {
        let owner = JoinCheck {
            affiliation: Affiliation::Owner,
            locked: true,
            password: Some("secret"),
            full: true,
            ..check()
        };
        owner.run().unwrap();
        let admin = JoinCheck {
            affiliation: Affiliation::Admin,
            full: true,
            members_only: true,
            ..check()
        };
        admin.run().unwrap();
        let member = JoinCheck {
            affiliation: Affiliation::Member,
            full: true,
            members_only: true,
            ..check()
        };
        assert_eq!(refusal(member).0, StanzaCondition::ServiceUnavailable);
    }

    fn history(at: &[i64]) -> VecDeque<HistoryEntry> {
        let from = Jid::parse("room@conference.localhost/Romeo").unwrap();
        at.iter()
            .enumerate()
            .map(|(i, at_ms)| HistoryEntry {
                el: Element::new("message", ns::CLIENT).with_attr("id", i.to_string()),
                from: from.clone(),
                at_ms: *at_ms,
                chars: 100,
            })
            .collect()
    }

    fn ids(selected: Vec<&HistoryEntry>) -> Vec<String> {
        selected
            .iter()
            .filter_map(|e| e.el.attr("id"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn history_is_the_newest_that_fit_every_limit_oldest_first() {
        let h = history(&[1_000, 2_000, 3_000, 4_000]);
        let now = 10_000;
        let all = HistoryRequest::default();
        assert_eq!(ids(select(&h, &all, now)), ["0", "1", "2", "3"]);
        let two = HistoryRequest {
            max_stanzas: Some(2),
            ..all
        };
        assert_eq!(ids(select(&h, &two, now)), ["2", "3"]);
        let none = HistoryRequest {
            max_chars: Some(0),
            ..all
        };
        assert!(select(&h, &none, now).is_empty());
        let chars = HistoryRequest {
            max_chars: Some(250),
            ..all
        };
        assert_eq!(ids(select(&h, &chars, now)), ["2", "3"]);
        let recent = HistoryRequest {
            seconds: Some(7),
            ..all
        };
        assert_eq!(ids(select(&h, &recent, now)), ["2", "3"]);
        let since = HistoryRequest {
            since_ms: Some(2_000),
            max_stanzas: Some(10),
            ..all
        };
        assert_eq!(ids(select(&h, &since, now)), ["1", "2", "3"]);
    }

    #[test]
    fn a_history_request_reads_what_it_can() {
        let el = crate::xml::client_element(
            "<history xmlns='http://jabber.org/protocol/muc' maxstanzas='2' maxchars='x' \
             since='1970-01-01T00:00:02Z'/>",
        );
        assert_eq!(
            HistoryRequest::parse(Some(&el)),
            HistoryRequest {
                max_stanzas: Some(2),
                max_chars: None,
                seconds: None,
                since_ms: Some(2_000),
            }
        );
        assert_eq!(HistoryRequest::parse(None), HistoryRequest::default());
    }
}
