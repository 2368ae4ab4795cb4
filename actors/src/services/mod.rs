//! Published services (after POEx::ProxySession): a program **publishes** a
//! domain and receives every stanza addressed to it, sends stanzas from
//! it, and **rescinds** it when done. Clients get a **listing** (disco#items
//! on the server) and learn a service's methods by asking the service
//! itself (disco#info, ad-hoc commands). Every IQ request **delivered** to
//! a service owes its requester exactly one answer: the [`delivered`]
//! store keeps it until the service answers, times out or goes away.
//!
//! External components (XEP-0114, [`crate::component`]) and in-process
//! services publish the same way, through [`Services::publish`]; the
//! router consults [`Services`] as its route table by domain.

pub mod delivered;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix::Recipient;
use bytes::Bytes;
use dashmap::DashMap;

use crate::error::{StanzaCondition, StanzaError};
use crate::jid::{FullJid, Jid};
use crate::router::Router;
use crate::session::{Origin, Refused, Session};
use crate::stanza::{IqType, Kind, Stanza};
use delivered::{Delivered, Track};

/// Where a published service's stanzas go: a component's connection, or
/// the embedder's own code.
pub trait ServiceSink: Send + Sync + 'static {
    /// A stanza addressed to the service. False when it cannot take it
    /// (its connection is gone or too far behind).
    fn deliver(&self, stanza: &Stanza) -> bool;

    /// A newer publication of the same domain took this one's place
    /// (policy `kick_old`): the service should go.
    fn replaced(&self) {}
}

/// What an actor service receives.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct ServiceStanza(pub Stanza);

/// An actix actor as a service: stanzas arrive as [`ServiceStanza`].
impl ServiceSink for Recipient<ServiceStanza> {
    fn deliver(&self, stanza: &Stanza) -> bool {
        self.try_send(ServiceStanza(stanza.clone())).is_ok()
    }
}

/// When a domain is published again while published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// The new one wins; the old one is told (`replaced`) and rescinded.
    #[default]
    KickOld,
    /// The new one is refused.
    KickNew,
}

/// How a service is published.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// Left out of the server's disco#items listing.
    pub hidden: bool,
    /// A name for the listing.
    pub name: Option<String>,
    pub conflict: ConflictPolicy,
    /// Time a service has to answer a request.
    pub iq_timeout: Duration,
    /// Requests waiting for this service, in all and from one requester.
    pub max_pending: usize,
    pub max_pending_per_requester: usize,
    /// "component" or "in-process", for the listing.
    pub kind: &'static str,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            hidden: false,
            name: None,
            conflict: ConflictPolicy::KickOld,
            iq_timeout: Duration::from_secs(30),
            max_pending: 1000,
            max_pending_per_requester: 100,
            kind: "in-process",
        }
    }
}

/// A published domain, as the route table holds it.
pub struct Published {
    pub domain: String,
    pub options: PublishOptions,
    pub since: SystemTime,
    /// Tells this publication from a later one of the same domain.
    id: u64,
    sink: Box<dyn ServiceSink>,
    pending: Mutex<Delivered>,
    rescinded: AtomicBool,
}

impl Published {
    /// Requests waiting for this service's answer.
    pub fn in_flight(&self) -> usize {
        crate::c2s::lock(&self.pending).len()
    }
}

/// One line of the listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSummary {
    pub domain: String,
    pub name: Option<String>,
    pub kind: &'static str,
    pub hidden: bool,
    pub since: SystemTime,
    pub in_flight: usize,
}

/// The route table's published part: domain → service. Read on every
/// stanza for another domain; written only by publish and rescind.
#[derive(Clone, Default)]
pub struct Services {
    table: Arc<DashMap<String, Arc<Published>>>,
    /// Domains configured but not necessarily connected (components): a
    /// stanza for one that is offline gets `<remote-server-timeout/>`,
    /// not `<remote-server-not-found/>`.
    known: Arc<DashMap<String, ()>>,
    sweeping: Arc<AtomicBool>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why a domain could not be published.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("{0} is published already")]
    Conflict(String),
    /// A domain the server hosts: its users' stanzas cannot go elsewhere.
    #[error("{0} is one of the server's own domains")]
    ServerDomain(String),
}

impl Services {
    /// The service for `domain`, if one is published.
    pub fn get(&self, domain: &str) -> Option<Arc<Published>> {
        self.table.get(domain).map(|p| p.clone())
    }

    /// True for a domain that is, or may come, online (a configured
    /// component).
    pub fn is_known(&self, domain: &str) -> bool {
        self.known.contains_key(domain) || self.table.contains_key(domain)
    }

    /// Declares a domain a service will publish (a configured component).
    pub fn expect(&self, domain: &str) {
        self.known.insert(domain.to_owned(), ());
    }

    /// Gives a copy that is never answered (directed presence, a
    /// broadcast's copy) to the service of its `to`'s domain; true when it
    /// took it. Nothing is bounced.
    pub fn deliver_copy(&self, stanza: &Stanza) -> bool {
        let Some(published) = stanza.to().and_then(|to| self.get(to.domain())) else {
            return false;
        };
        let taken = published.sink.deliver(stanza);
        if taken {
            let kind = stanza.kind.into();
            crate::metrics::stanza(crate::metrics::Stream::Services, crate::metrics::Direction::Out, kind);
        }
        taken
    }

    /// What is published, sorted by domain.
    pub fn list(&self) -> Vec<ServiceSummary> {
        let mut out: Vec<ServiceSummary> = self
            .table
            .iter()
            .map(|e| {
                let p = e.value();
                ServiceSummary {
                    domain: p.domain.clone(),
                    name: p.options.name.clone(),
                    kind: p.options.kind,
                    hidden: p.options.hidden,
                    since: p.since,
                    in_flight: p.in_flight(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        out
    }
}

/// A stanza from a service, serialised once without `to`, for many
/// recipients ([`Publication::broadcast`], [`Publication::deliver`]).
#[derive(Clone, Debug)]
pub struct Broadcast {
    template: Bytes,
    origin: Jid,
    kind: Kind,
}

impl Broadcast {
    /// Its sender.
    pub fn from(&self) -> &Jid {
        &self.origin
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its serialised length, without `to`.
    pub fn len(&self) -> usize {
        self.template.len()
    }

    pub fn is_empty(&self) -> bool {
        self.template.is_empty()
    }
}

/// A live publication: the service's handle to send from its domain. It
/// is rescinded when dropped (or by [`Publication::rescind`]); every
/// request still waiting on it is then answered `<service-unavailable/>`.
pub struct Publication {
    router: Router,
    published: Arc<Published>,
}

impl Router {
    /// Publishes `domain`: from now on every stanza addressed to it (or to
    /// a JID at it) goes to `sink`. Must run inside an actix System.
    pub fn publish(
        &self,
        domain: &str,
        sink: Box<dyn ServiceSink>,
        options: PublishOptions,
    ) -> Result<Publication, PublishError> {
        if self.is_local_domain(domain) {
            return Err(PublishError::ServerDomain(domain.to_owned()));
        }
        let services = self.services();
        let published = Arc::new(Published {
            domain: domain.to_owned(),
            pending: Mutex::new(Delivered::default()),
            options,
            since: SystemTime::now(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            sink,
            rescinded: AtomicBool::new(false),
        });
        let old = match services.table.entry(domain.to_owned()) {
            dashmap::Entry::Occupied(_) if published.options.conflict == ConflictPolicy::KickNew => {
                return Err(PublishError::Conflict(domain.to_owned()))
            }
            dashmap::Entry::Occupied(mut e) => Some(e.insert(published.clone())),
            dashmap::Entry::Vacant(e) => {
                e.insert(published.clone());
                None
            }
        };
        // Counted off once withdrawn (`withdraw`), as the old one is now.
        crate::metrics::service(published.options.kind, true);
        if let Some(old) = old {
            log::info!("{domain}: replaced by a new publication");
            old.sink.replaced();
            self.withdraw(&old);
        }
        self.start_sweeping();
        log::info!("{domain}: published ({})", published.options.kind);
        Ok(Publication {
            router: self.clone(),
            published,
        })
    }

    /// Answers and forgets requests waiting too long, once a second, on
    /// every published service.
    fn start_sweeping(&self) {
        if self.services().sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let router = self.clone();
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = std::time::Instant::now();
                let services: Vec<Arc<Published>> = router.services().table.iter().map(|e| e.clone()).collect();
                for p in services {
                    let expired = crate::c2s::lock(&p.pending).expired(now);
                    for waiting in expired {
                        crate::metrics::service_iq_timeout();
                        router.route(waiting.error(StanzaCondition::RemoteServerTimeout));
                    }
                }
            }
        });
    }

    /// A stanza for a domain that is not this server's: to its service,
    /// or an error. Gives the stanza back when no service has the domain.
    pub(crate) fn to_service(&self, domain: &str, stanza: Stanza) -> Option<Stanza> {
        let services = self.services();
        let Some(published) = services.get(domain) else {
            if !services.is_known(domain) {
                return Some(stanza);
            }
            // Configured, but not connected now.
            if !matches!(stanza.kind, Kind::Presence(_)) {
                self.bounce(&stanza, StanzaCondition::RemoteServerTimeout);
            }
            return None;
        };
        if stanza.is_iq_request() {
            let tracked = crate::c2s::lock(&published.pending).track(&stanza, &published.options);
            if let Track::Refused(condition) = tracked {
                self.bounce(&stanza, condition);
                return None;
            }
        }
        if published.sink.deliver(&stanza) {
            let kind = stanza.kind.into();
            crate::metrics::stanza(crate::metrics::Stream::Services, crate::metrics::Direction::Out, kind);
        } else {
            if let (true, Some(from), Some(id)) = (stanza.is_iq_request(), stanza.from(), stanza.id()) {
                crate::c2s::lock(&published.pending).answer(from, id);
            }
            // Presence to a service that cannot take it is dropped.
            if !matches!(stanza.kind, Kind::Presence(_)) {
                self.bounce(&stanza, StanzaCondition::ServiceUnavailable);
            }
        }
        None
    }

    /// Marks a publication gone: out of the table (if still there), and
    /// every request waiting on it answered `<service-unavailable/>`.
    fn withdraw(&self, published: &Published) {
        if published.rescinded.swap(true, Ordering::AcqRel) {
            return;
        }
        crate::metrics::service(published.options.kind, false);
        self.services()
            .table
            .remove_if(&published.domain, |_, p| p.id == published.id);
        let waiting = crate::c2s::lock(&published.pending).drain();
        for w in waiting {
            self.route(w.error(StanzaCondition::ServiceUnavailable));
        }
    }
}

impl Publication {
    pub fn domain(&self) -> &str {
        &self.published.domain
    }

    /// Sends a stanza from the service. Its `from` must be the service's
    /// domain or a JID at it (XEP-0114 §3.1): anything else is refused.
    pub fn send(&self, stanza: Stanza) -> Result<(), StanzaError> {
        self.sendable(&stanza)?;
        // An answer goes on only if it answers a request this service was
        // given and has not answered yet: late, repeated and unasked-for
        // answers are dropped.
        if matches!(stanza.kind, Kind::Iq(IqType::Result | IqType::Error)) {
            let answered = match (stanza.to(), stanza.id()) {
                (Some(to), Some(id)) => crate::c2s::lock(&self.published.pending).answer(to, id),
                _ => false,
            };
            if !answered {
                log::debug!(
                    "{}: dropping an answer to nothing ({:?})",
                    self.published.domain,
                    stanza.id()
                );
                return Ok(());
            }
        }
        let kind = stanza.kind.into();
        crate::metrics::stanza(crate::metrics::Stream::Services, crate::metrics::Direction::In, kind);
        self.router.route(stanza);
        Ok(())
    }

    /// The sender of `stanza`, if the service may send it now: its `from`
    /// is the service's domain or a JID at it (XEP-0114 §3.1).
    fn sendable<'s>(&self, stanza: &'s Stanza) -> Result<&'s Jid, StanzaError> {
        let Some(from) = stanza.from().filter(|f| f.domain() == self.published.domain) else {
            return Err(StanzaError::with_text(
                StanzaCondition::NotAllowed,
                "a service sends only from its own domain",
            ));
        };
        if self.published.rescinded.load(Ordering::Acquire) {
            return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
        }
        Ok(from)
    }

    /// Serialises `stanza` once, without its `to`, for
    /// [`Publication::deliver`] to many recipients: a room's message or
    /// presence for its occupants costs one serialisation, not one per
    /// occupant. Its `from` is checked as [`Publication::send`] checks it;
    /// an IQ is refused (`send` keeps track of requests and answers).
    pub fn broadcast(&self, stanza: &Stanza) -> Result<Broadcast, StanzaError> {
        let origin = self.sendable(stanza)?.clone();
        if matches!(stanza.kind, Kind::Iq(_)) {
            return Err(StanzaError::with_text(
                StanzaCondition::BadRequest,
                "an IQ goes to one recipient: send it",
            ));
        }
        let template = if stanza.to().is_some() {
            let mut stanza = stanza.clone();
            stanza.set_to(None);
            stanza.to_bytes()
        } else {
            stanza.to_bytes()
        };
        Ok(Broadcast {
            template,
            origin,
            kind: stanza.kind,
        })
    }

    /// Delivers one copy of `broadcast` to `to`. A local session (`session`
    /// when the caller holds it, else looked up) gets it directly, with the
    /// blocklist check presence has (XEP-0191: dropped, not refused);
    /// anything else goes where the router would send it (another
    /// service, another server). A copy is never answered: a session too
    /// far behind refuses it (`Busy`), and the caller decides what that
    /// costs (a room drops it for that occupant, as presence is dropped).
    pub fn deliver(&self, broadcast: &Broadcast, to: &FullJid, session: Option<&Arc<Session>>) -> Result<(), Refused> {
        if self.published.rescinded.load(Ordering::Acquire) {
            return Err(Refused::Gone);
        }
        let router = &self.router;
        let bytes = || crate::presence::addressed(&broadcast.template, to.as_str());
        let delivered = if router.is_local_domain(to.domain()) {
            let found;
            let session = match session {
                Some(s) => s,
                None => {
                    found = router.sessions().get(to).ok_or(Refused::Gone)?;
                    &found
                }
            };
            let lists = router.blocklists();
            let sender = Some(&broadcast.origin);
            if lists.any() && lists.blocks_inbound(&to.to_bare(), std::slice::from_ref(session), sender) {
                return Ok(());
            }
            let origin = Origin::of(sender);
            match broadcast.kind {
                Kind::Presence(_) => session.deliver_presence(origin, bytes()),
                _ => session.deliver_from(origin, bytes()),
            }
        } else if router.services().get(to.domain()).is_some() {
            // Rare (an occupant at another service): read back into the
            // stanza a service takes.
            match Stanza::reparse(&bytes()) {
                Some(copy) if router.services().deliver_copy(&copy) => Ok(()),
                _ => Err(Refused::Gone),
            }
        } else {
            match router.remote() {
                Some(remote) => {
                    remote.deliver_copy(&broadcast.origin, to.as_jid(), bytes());
                    Ok(())
                }
                None => Err(Refused::Gone),
            }
        };
        if delivered.is_ok() {
            let kind = broadcast.kind.into();
            crate::metrics::stanza(crate::metrics::Stream::Services, crate::metrics::Direction::In, kind);
        }
        delivered
    }

    /// Removes the service: stanzas for its domain get errors again, and
    /// every request waiting on it is answered `<service-unavailable/>`.
    pub fn rescind(self) {}

    /// Whether a newer publication took this one's place.
    pub fn is_current(&self) -> bool {
        self.router
            .services()
            .get(&self.published.domain)
            .is_some_and(|p| p.id == self.published.id)
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        if !self.published.rescinded.load(Ordering::Acquire) {
            self.router.withdraw(&self.published);
            log::info!("{}: rescinded", self.published.domain);
        }
    }
}
