//! XEP-0045 Multi-User Chat, as a published service (the second after
//! HTTP upload): the service's domain (`conference.localhost` by default)
//! is published on the router, and every stanza for it or a JID at it
//! comes to [`MucSink`].
//!
//! One actor per room ([`room::Room`]), started round robin on the worker
//! arbiters: a stanza for a loaded room goes straight to it from the
//! routing thread, one actor hop, as a stanza for a session does. The
//! [`MucService`] actor sees the rest (the domain itself, rooms not
//! loaded, new rooms), and decides every room's life: it creates rooms,
//! loads persistent ones at their next stanza and takes back the empty
//! ones, so that racing joins make one room. A room delivers with
//! [`crate::services::Broadcast`]: a message or presence is serialised
//! once, whatever the number of occupants.

mod admin;
pub mod config;
mod room;
mod stanzas;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix::prelude::*;

use crate::error::{StanzaCondition, StanzaError};
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::router::Router;
use crate::services::{Publication, PublishError, PublishOptions, ServiceSink};
use crate::stanza::{IqType, Kind, MessageType, PresenceType, Stanza};
use crate::storage::StorageError;
use crate::xml::Element;

pub use config::{Limits, RoomConfig, Whois};
use room::{Room, RoomStanza};

/// The service's name, in the server's listing and its identity.
const NAME: &str = "Chatrooms";

/// Stanzas waiting for the service actor, and for one room; past it,
/// senders get `<service-unavailable/>` (presence is dropped).
const SERVICE_MAILBOX: usize = 4096;
pub(crate) const ROOM_MAILBOX: usize = 1024;

/// Who may create rooms (`[muc] create`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CreatePolicy {
    /// Users of this server.
    #[default]
    Local,
    /// Anyone, other servers' users included.
    Anyone,
    /// Nobody: only rooms that exist are joined.
    Nobody,
}

/// The service's settings (`[muc]`).
#[derive(Clone, Debug)]
pub struct MucSettings {
    /// The service's domain: not a hosted one.
    pub domain: String,
    pub create: CreatePolicy,
    /// Rooms one account may own at once (0: no limit).
    pub max_rooms_per_user: u32,
    /// The largest `maxusers` a room may have (new rooms: 200 at most).
    pub max_occupants: u32,
    /// The largest `historylength` a room may have (new rooms: 20 at most).
    pub max_history: u32,
    /// Groupchat messages per second per occupant, and burst (0: no limit).
    pub message_rate: u32,
    pub message_burst: u32,
    /// An empty persistent room's actor stops after this.
    pub idle_unload: Duration,
}

impl Default for MucSettings {
    fn default() -> Self {
        MucSettings {
            domain: "conference.localhost".into(),
            create: CreatePolicy::Local,
            max_rooms_per_user: 20,
            max_occupants: 5000,
            max_history: 100,
            message_rate: 5,
            message_burst: 20,
            idle_unload: Duration::from_secs(600),
        }
    }
}

impl MucSettings {
    /// What rooms' settings may be.
    pub fn limits(&self) -> Limits {
        Limits {
            max_users: self.max_occupants.max(1),
            max_history: self.max_history,
        }
    }
}

/// An occupant's standing in a room, kept across visits (XEP-0045 §5.2),
/// lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// An occupant's role for one visit (XEP-0045 §5.1), lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// A persistent room as storage keeps it (history is not kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRoom {
    /// The room's localpart.
    pub name: String,
    /// Its configuration: a submitted `muc#roomconfig` form, as XML.
    pub config: String,
    pub subject: Option<String>,
    /// The nick of who set the subject.
    pub subject_by: Option<String>,
    pub created_ms: i64,
    /// Owners, admins, members and outcasts, with the reason given. What
    /// [`crate::storage::Storage::muc_save_room`] is given here is added
    /// to what is stored; later changes come one by one.
    pub affiliations: Vec<(BareJid, Affiliation, Option<String>)>,
}

/// What the sink, the service and the rooms share.
pub(crate) struct MucShared {
    pub(crate) settings: MucSettings,
    pub(crate) router: Router,
    /// The service's domain, as a JID.
    pub(crate) domain: BareJid,
    pub(crate) publication: OnceLock<Publication>,
    /// Loaded rooms by name: the sink's way straight to a room.
    rooms: dashmap::DashMap<String, Addr<Room>>,
    /// Public rooms, loaded or not, with their names: disco#items.
    listing: Mutex<BTreeMap<String, String>>,
    arbiters: Vec<ArbiterHandle>,
    next: AtomicUsize,
}

impl MucShared {
    /// Lists a room (public and unlocked) under `title`, or takes it off.
    pub(crate) fn list(&self, name: &str, title: Option<String>) {
        let Ok(mut listing) = self.listing.lock() else { return };
        match title {
            Some(t) => {
                listing.insert(name.to_owned(), t);
            }
            None => {
                listing.remove(name);
            }
        }
    }

    /// Starts a room's actor on the next worker arbiter. Its mailbox has
    /// the room's capacity from the first stanza on (`start_in_arbiter`
    /// sets it only once the actor runs, a burst could find it full).
    fn start_room(&self, room: Room) -> Addr<Room> {
        let (tx, rx) = actix::dev::channel::channel(ROOM_MAILBOX);
        let run = move || {
            let ctx = Context::with_receiver(rx);
            actix_rt::spawn(ctx.into_future(room));
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len().max(1);
        match self.arbiters.get(i) {
            Some(arbiter) => {
                arbiter.spawn_fn(run);
            }
            None => run(),
        }
        // The caller makes it reachable once it has sent the first
        // stanza: the join that creates a room comes before any other.
        Addr::new(tx)
    }
}

/// The running service.
#[derive(Clone)]
pub struct MucHandle {
    shared: Arc<MucShared>,
}

impl MucHandle {
    pub fn domain(&self) -> &str {
        &self.shared.settings.domain
    }

    /// Rooms whose actor runs now.
    pub fn loaded_rooms(&self) -> usize {
        self.shared.rooms.len()
    }
}

/// Publishes the MUC domain, served by a new [`MucService`] actor (on the
/// current arbiter) and room actors on `arbiters` (the current one if
/// none). The domain is taken before anything runs, so that a refusal
/// (a hosted domain, or one published already) stops the start. Must run
/// inside an actix System.
pub fn start(router: &Router, settings: MucSettings, arbiters: &[ArbiterHandle]) -> Result<MucHandle, PublishError> {
    let domain =
        BareJid::domain_jid(&settings.domain).map_err(|_| PublishError::ServerDomain(settings.domain.clone()))?;
    let arbiters = if arbiters.is_empty() {
        vec![Arbiter::current()]
    } else {
        arbiters.to_vec()
    };
    let shared = Arc::new(MucShared {
        settings,
        router: router.clone(),
        domain,
        publication: OnceLock::new(),
        rooms: dashmap::DashMap::new(),
        listing: Mutex::new(BTreeMap::new()),
        arbiters,
        next: AtomicUsize::new(0),
    });
    let mut ctx = Context::<MucService>::new();
    ctx.set_mailbox_capacity(SERVICE_MAILBOX);
    let sink = MucSink {
        shared: shared.clone(),
        service: ctx.address(),
    };
    let options = PublishOptions {
        name: Some(NAME.into()),
        // Every room's requests are counted together: more than a
        // component's (their answers are immediate, but for IQs
        // forwarded to occupants).
        max_pending: 10_000,
        ..PublishOptions::default()
    };
    let publication = router.publish(shared.domain.as_str(), Box::new(sink), options)?;
    let _ = shared.publication.set(publication);
    ctx.run(MucService {
        shared: shared.clone(),
        slots: HashMap::new(),
        waiting: Some(Vec::new()),
        owners: HashMap::new(),
    });
    Ok(MucHandle { shared })
}

/// Where the router puts stanzas for the MUC domain.
struct MucSink {
    shared: Arc<MucShared>,
    service: Addr<MucService>,
}

impl ServiceSink for MucSink {
    fn deliver(&self, stanza: &Stanza) -> bool {
        if let Some(name) = stanza.to().and_then(Jid::node) {
            // Cloned out: the map's shard is not held while sending.
            let room = self.shared.rooms.get(name).map(|r| r.value().clone());
            if let Some(room) = room {
                // An occupant's leaving is never refused for a full
                // mailbox: dropped, it would stay in the room for good.
                // A flood of them is held to its sender's read rate, and
                // a room passes over one from a stranger at once.
                if stanza.kind == Kind::Presence(PresenceType::Unavailable) && room.connected() {
                    room.do_send(RoomStanza(stanza.clone()));
                    return true;
                }
                match room.try_send(RoomStanza(stanza.clone())) {
                    Ok(()) => return true,
                    Err(SendError::Full(_)) => return false,
                    // Stopped meanwhile: the service loads it again.
                    Err(SendError::Closed(_)) => {}
                }
            }
        }
        self.service.try_send(ServiceMsg::Stanza(stanza.clone())).is_ok()
    }
}

/// Messages to the service actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum ServiceMsg {
    /// For the domain, or a room that is not loaded (or being unloaded).
    Stanza(Stanza),
    /// A room is done: empty and persistent (`stored`: to be loaded again
    /// from it), or gone (`None`: destroyed, or temporary and empty). It
    /// forwards what it receives from now on, and stops when told.
    Idle {
        name: String,
        addr: Addr<Room>,
        stored: Option<Box<StoredRoom>>,
    },
    /// A room's owners changed (for `max_rooms_per_user`).
    Owners { name: String, owners: Vec<BareJid> },
}

/// A room as the service knows it.
enum Slot {
    Loaded(Addr<Room>),
    /// Persistent, not loaded: what it is loaded from.
    Stored(Box<StoredRoom>),
}

/// Decides rooms' lives, and answers for the domain.
pub(crate) struct MucService {
    shared: Arc<MucShared>,
    slots: HashMap<String, Slot>,
    /// Stanzas that came before the persistent rooms were read.
    waiting: Option<Vec<Stanza>>,
    /// Each room's owners.
    owners: HashMap<String, Vec<BareJid>>,
}

impl Actor for MucService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let rooms = self.shared.router.storage().muc_rooms(self.shared.domain.as_str());
        ctx.wait(rooms.into_actor(self).map(|rooms, act, ctx| act.loaded(rooms, ctx)));
    }
}

impl MucService {
    /// The persistent rooms are read: what waited goes on.
    fn loaded(&mut self, rooms: Result<Vec<StoredRoom>, StorageError>, ctx: &mut Context<Self>) {
        let rooms = rooms.unwrap_or_else(|e| {
            log::error!("{}: cannot read the persistent rooms: {e}", self.shared.domain);
            Vec::new()
        });
        log::info!("{}: {} persistent rooms", self.shared.domain, rooms.len());
        let limits = self.shared.settings.limits();
        for stored in rooms {
            let owners = stored
                .affiliations
                .iter()
                .filter(|(_, a, _)| *a == Affiliation::Owner)
                .map(|(j, _, _)| j.clone())
                .collect();
            self.owners.insert(stored.name.clone(), owners);
            let config = RoomConfig::from_stored(&stored.config, limits);
            self.shared.list(&stored.name, config.listed_as(&stored.name));
            self.slots.insert(stored.name.clone(), Slot::Stored(Box::new(stored)));
        }
        for stanza in self.waiting.take().unwrap_or_default() {
            self.stanza(stanza, ctx);
        }
    }

    fn publication(&self) -> Option<&Publication> {
        self.shared.publication.get()
    }

    fn refuse(&self, stanza: &Stanza, error: StanzaError) {
        if let (Some(reply), Some(p)) = (stanzas::error_reply(stanza, &error), self.publication()) {
            if let Err(e) = p.send(reply) {
                log::debug!("{}: error not sent: {e}", self.shared.domain);
            }
        }
    }

    fn stanza(&mut self, stanza: Stanza, ctx: &mut Context<Self>) {
        if let Some(waiting) = &mut self.waiting {
            return waiting.push(stanza);
        }
        let Some(room) = stanza.to().filter(|to| to.node().is_some()).map(Jid::to_bare) else {
            return self.for_domain(&stanza);
        };
        let name = room.node().unwrap_or_default().to_owned();
        let (addr, started) = match self.slots.remove(&name) {
            Some(Slot::Loaded(addr)) if addr.connected() => (addr, false),
            Some(Slot::Stored(stored)) if !is_leaving(&stanza) => {
                let room = Room::from_stored(self.shared.clone(), ctx.address(), room, *stored);
                (self.shared.start_room(room), true)
            }
            Some(Slot::Stored(stored)) => {
                self.slots.insert(name, Slot::Stored(stored));
                return;
            }
            // A room that stopped without saying so: gone.
            Some(Slot::Loaded(_)) | None => match self.create(room, &stanza, ctx) {
                Some(addr) => (addr, true),
                None => return,
            },
        };
        self.slots.insert(name.clone(), Slot::Loaded(addr.clone()));
        if addr.try_send(RoomStanza(stanza.clone())).is_err() {
            self.refuse_busy(&stanza);
        }
        if started {
            self.shared.rooms.insert(name, addr);
        }
    }

    /// Presence is dropped, anything else refused, as the router does for
    /// a service that cannot take a stanza.
    fn refuse_busy(&self, stanza: &Stanza) {
        if !matches!(stanza.kind, Kind::Presence(_)) {
            self.refuse(stanza, StanzaError::new(StanzaCondition::ServiceUnavailable));
        }
    }

    /// A room that does not exist: a join creates it, if allowed.
    fn create(&mut self, room: BareJid, stanza: &Stanza, ctx: &mut Context<Self>) -> Option<Addr<Room>> {
        let not_found = || StanzaError::new(StanzaCondition::ItemNotFound);
        match stanza.kind {
            Kind::Presence(PresenceType::Available) => {}
            Kind::Presence(_) | Kind::Message(MessageType::Error) | Kind::Iq(IqType::Result | IqType::Error) => {
                return None
            }
            _ => {
                self.refuse(stanza, not_found());
                return None;
            }
        }
        let from = stanza.from()?;
        // XEP-0045 §7.2.1: a nick is needed, even to create.
        if stanza.to().and_then(Jid::resource).is_none() {
            self.refuse(stanza, StanzaError::new(StanzaCondition::JidMalformed));
            return None;
        }
        let settings = &self.shared.settings;
        let allowed = match settings.create {
            CreatePolicy::Anyone => true,
            CreatePolicy::Local => self.shared.router.is_local_user(from),
            CreatePolicy::Nobody => false,
        };
        if !allowed {
            let error = StanzaError::with_text(StanzaCondition::NotAllowed, "rooms are not created here");
            self.refuse(stanza, error);
            return None;
        }
        let creator = from.to_bare();
        let owned = self.owners.values().filter(|o| o.contains(&creator)).count();
        if settings.max_rooms_per_user > 0 && owned >= settings.max_rooms_per_user as usize {
            let error = StanzaError::with_text(StanzaCondition::ResourceConstraint, "you own too many rooms");
            self.refuse(stanza, error);
            return None;
        }
        // XEP-0045 §10.1.1: a room made by a MUC join is locked until its
        // owner configures it (Prosody's lock.lib.lua); one made by an
        // older client's plain presence is not.
        let locked = stanza.element().has_child("x", ns::MUC);
        let name = room.node().unwrap_or_default().to_owned();
        self.owners.insert(name, vec![creator.clone()]);
        log::debug!("{room}: created");
        let room = Room::new(self.shared.clone(), ctx.address(), room, creator, locked);
        Some(self.shared.start_room(room))
    }

    /// The domain itself: service discovery (XEP-0045 §6.1, §6.3).
    fn for_domain(&self, stanza: &Stanza) {
        let error = |condition| self.refuse(stanza, StanzaError::new(condition));
        match stanza.kind {
            Kind::Iq(IqType::Get | IqType::Set) => {}
            Kind::Message(MessageType::Error) | Kind::Presence(_) | Kind::Iq(_) => return,
            Kind::Message(_) => return error(StanzaCondition::ServiceUnavailable),
        }
        let Some(payload) = stanza.payload() else {
            return error(StanzaCondition::BadRequest);
        };
        let get = stanza.kind == Kind::Iq(IqType::Get);
        let answer = match (payload.name(), payload.ns()) {
            ("query", ns::DISCO_INFO | ns::DISCO_ITEMS) if !get => return error(StanzaCondition::NotAllowed),
            ("query", ns::DISCO_INFO | ns::DISCO_ITEMS) if payload.attr("node").is_some() => {
                return error(StanzaCondition::ItemNotFound)
            }
            ("query", ns::DISCO_INFO) => Some(service_info()),
            ("query", ns::DISCO_ITEMS) => Some(self.public_rooms()),
            ("ping", ns::PING) if get => None,
            _ => return error(StanzaCondition::ServiceUnavailable),
        };
        if let Some(p) = self.publication() {
            if let Err(e) = p.send(stanza.iq_result(answer)) {
                log::debug!("{}: answer not sent: {e}", self.shared.domain);
            }
        }
    }

    /// disco#items: the public rooms.
    fn public_rooms(&self) -> Element {
        let mut query = Element::new("query", ns::DISCO_ITEMS);
        let Ok(listing) = self.shared.listing.lock() else {
            return query;
        };
        for (name, title) in listing.iter() {
            let Ok(jid) = BareJid::new(name, self.shared.domain.as_str()) else {
                continue;
            };
            let item = Element::new("item", ns::DISCO_ITEMS)
                .with_attr("jid", jid.as_str())
                .with_attr("name", title.as_str());
            query.push_child(item);
        }
        query
    }
}

/// Presence that asks nothing of a room that is not loaded.
fn is_leaving(stanza: &Stanza) -> bool {
    matches!(
        stanza.kind,
        Kind::Presence(PresenceType::Unavailable | PresenceType::Error)
    )
}

/// disco#info of the service (XEP-0045 §6.1).
fn service_info() -> Element {
    let feature = |var: &str| Element::new("feature", ns::DISCO_INFO).with_attr("var", var);
    Element::new("query", ns::DISCO_INFO)
        .with_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr("name", NAME),
        )
        .with_child(feature(ns::DISCO_INFO))
        .with_child(feature(ns::DISCO_ITEMS))
        .with_child(feature(ns::MUC))
        .with_child(feature(ns::PING))
}

impl Handler<ServiceMsg> for MucService {
    type Result = ();

    fn handle(&mut self, msg: ServiceMsg, ctx: &mut Context<Self>) {
        match msg {
            ServiceMsg::Stanza(stanza) => self.stanza(stanza, ctx),
            ServiceMsg::Idle { name, addr, stored } => {
                if matches!(self.slots.get(&name), Some(Slot::Loaded(a)) if *a == addr) {
                    self.shared.rooms.remove_if(&name, |_, a| *a == addr);
                    match stored {
                        Some(stored) => {
                            self.slots.insert(name, Slot::Stored(stored));
                        }
                        None => {
                            self.slots.remove(&name);
                            self.owners.remove(&name);
                            self.shared.list(&name, None);
                        }
                    }
                }
                addr.do_send(room::Stop);
            }
            ServiceMsg::Owners { name, owners } => {
                self.owners.insert(name, owners);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affiliations_and_roles_are_ranked_and_named() {
        assert!(Affiliation::Owner > Affiliation::Admin && Affiliation::Admin > Affiliation::Member);
        assert!(Affiliation::Member > Affiliation::None && Affiliation::None > Affiliation::Outcast);
        assert!(Role::Moderator > Role::Participant && Role::Visitor > Role::None);
        for a in ["owner", "admin", "member", "none", "outcast"] {
            assert_eq!(Affiliation::parse(a).map(Affiliation::as_str), Some(a));
        }
        for r in ["moderator", "participant", "visitor", "none"] {
            assert_eq!(Role::parse(r).map(Role::as_str), Some(r));
        }
        assert_eq!(Affiliation::parse("Owner"), None);
    }
}
