//! XEP-0191 Blocking Command: a user's list of blocked JIDs, stored, and
//! enforced on every path a stanza takes between the user and them.
//!
//! The list is read on every stanza to or from a user who has one, so the
//! lists of users with a bound session are cached here ([`Blocklists`]),
//! loaded when a session binds and dropped when the last one goes. Each
//! session carries a flag, set while its account's list is non-empty:
//! delivery already holds the recipient's sessions, so a recipient who
//! blocks nobody costs no lookup at all. An offline user's list is read
//! from storage by the (already asynchronous) paths that reach offline
//! users: offline messages, subscriptions, IQs answered for the account.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::error::{StanzaCondition, StanzaError, StanzaErrorType};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest};
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::presence::PresenceMsg;
use crate::router::Router;
use crate::session::{Origin, Session, SessionTable};
use crate::stanza::{IqType, Kind, MessageType, Stanza};
use crate::storage::StorageError;
use crate::xml::Element;

pub const NS: &str = "urn:xmpp:blocking";
/// The application condition of `<not-acceptable/>` (§3.3).
pub const ERRORS: &str = "urn:xmpp:blocking:errors";

/// One user's blocked JIDs, as normalised strings: matching looks up
/// slices of the sender's JID without building new ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocklist {
    items: HashSet<Box<str>>,
}

impl Blocklist {
    pub fn new(items: impl IntoIterator<Item = Jid>) -> Blocklist {
        Blocklist {
            items: items.into_iter().map(|j| j.as_str().into()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The blocked JIDs, sorted.
    pub fn jids(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.items.iter().map(|s| &**s).collect();
        out.sort_unstable();
        out
    }

    /// True when `jid` matches an item (XEP-0191 §4, as XEP-0016): the full
    /// JID, the bare JID, `domain/resource`, or the domain, which also
    /// covers its subdomains.
    pub fn blocks(&self, jid: &Jid) -> bool {
        if self.items.is_empty() {
            return false;
        }
        let s = jid.as_str();
        // Nodes and domains hold no '/': the first one starts the resource.
        let bare = s.split('/').next().unwrap_or(s);
        if self.items.contains(s) || self.items.contains(bare) {
            return true;
        }
        if let (Some(_), Some(resource)) = (jid.node(), jid.resource()) {
            if self.items.contains(format!("{}/{resource}", jid.domain()).as_str()) {
                return true;
            }
        }
        let mut domain = jid.domain();
        loop {
            if self.items.contains(domain) {
                return true;
            }
            match domain.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => domain = parent,
                _ => return false,
            }
        }
    }

    fn with(&self, add: &[Jid]) -> Blocklist {
        let mut next = self.clone();
        next.items.extend(add.iter().map(|j| j.as_str().into()));
        next
    }

    fn without(&self, remove: &[Jid]) -> Blocklist {
        let mut next = self.clone();
        for j in remove {
            next.items.remove(j.as_str());
        }
        next
    }
}

struct Pinned {
    list: Arc<Blocklist>,
    /// Sessions bound or binding: the entry goes with the last one.
    pins: usize,
}

/// The lists of the users with a bound session.
#[derive(Default)]
pub struct Blocklists {
    users: DashMap<BareJid, Pinned, foldhash::fast::RandomState>,
    /// Cached lists that are not empty: while there is none, nothing a
    /// user sends pays a lookup.
    non_empty: AtomicUsize,
}

impl Blocklists {
    /// The cached list of `user`; `None` when no session of theirs is bound
    /// (read it from storage then, see [`blocks`]).
    pub fn get(&self, user: &BareJid) -> Option<Arc<Blocklist>> {
        self.users.get(user).map(|p| p.list.clone())
    }

    /// True when some user with a bound session blocks someone: until
    /// then, no stanza pays for blocking.
    pub fn any(&self) -> bool {
        self.non_empty.load(Ordering::Acquire) > 0
    }

    fn is_blocking(&self, user: &BareJid) -> bool {
        self.users.get(user).is_some_and(|p| !p.list.is_empty())
    }

    /// Sets a session's flag from its account's list. Read again after
    /// the store: a change made meanwhile is seen, and stored, by one side
    /// or the other.
    pub(crate) fn sync_flag(&self, session: &Session) {
        let user = session.jid.to_bare();
        loop {
            let blocking = self.is_blocking(&user);
            session.set_blocking(blocking);
            if self.is_blocking(&user) == blocking {
                return;
            }
        }
    }

    /// Keeps `user`'s list cached for one more session (loaded from storage
    /// for the first).
    pub(crate) async fn pin(&self, router: &Router, user: &BareJid) -> Result<(), StorageError> {
        if let Some(mut p) = self.users.get_mut(user) {
            p.pins += 1;
            return Ok(());
        }
        let items = router.storage().blocklist(user).await?;
        let list = Blocklist::new(items);
        match self.users.entry(user.clone()) {
            // Loaded by another session meanwhile, and kept current since.
            dashmap::Entry::Occupied(mut e) => e.get_mut().pins += 1,
            dashmap::Entry::Vacant(v) => {
                if !list.is_empty() {
                    self.non_empty.fetch_add(1, Ordering::AcqRel);
                }
                v.insert(Pinned {
                    list: Arc::new(list),
                    pins: 1,
                });
            }
        }
        Ok(())
    }

    /// One session of `user` went (or never bound).
    pub(crate) fn unpin(&self, user: &BareJid) {
        let last = match self.users.get_mut(user) {
            Some(mut p) => {
                p.pins = p.pins.saturating_sub(1);
                p.pins == 0
            }
            None => false,
        };
        if last {
            if let Some((_, p)) = self.users.remove_if(user, |_, p| p.pins == 0) {
                if !p.list.is_empty() {
                    self.non_empty.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Applies a stored change to the cached list, if cached, and to the
    /// flags of the user's sessions.
    fn update(&self, sessions: &SessionTable, user: &BareJid, change: impl FnOnce(&Blocklist) -> Blocklist) {
        if let Some(mut p) = self.users.get_mut(user) {
            let next = change(&p.list);
            match (p.list.is_empty(), next.is_empty()) {
                (true, false) => self.non_empty.fetch_add(1, Ordering::AcqRel),
                (false, true) => self.non_empty.fetch_sub(1, Ordering::AcqRel),
                _ => 0,
            };
            p.list = Arc::new(next);
        }
        for s in sessions.resources(user) {
            self.sync_flag(&s);
        }
    }

    /// True when `sender` may not reach `user`, whose bound sessions are
    /// `sessions`: free unless they block someone.
    pub fn blocks_inbound(&self, user: &BareJid, sessions: &[Arc<Session>], sender: Option<&Jid>) -> bool {
        if !self.any() || !sessions.first().is_some_and(|s| s.is_blocking()) {
            return false;
        }
        let Some(sender) = sender else { return false };
        !exempt(user, sender) && self.get(user).is_some_and(|l| l.blocks(sender))
    }

    /// True when the local user `from` has blocked `to`.
    pub fn blocks_outbound(&self, from: &Jid, to: &Jid) -> bool {
        if !self.any() || from.node().is_none() {
            return false;
        }
        let user = from.to_bare();
        !exempt(&user, to) && self.get(&user).is_some_and(|l| l.blocks(to))
    }
}

/// The account itself and its server are never blocked: a user blocking
/// their own domain still gets the server's answers.
fn exempt(user: &BareJid, other: &Jid) -> bool {
    other.domain() == user.domain() && (other.node().is_none() || other.node() == user.node())
}

/// True when `user` (online or not) has blocked `sender`.
pub async fn blocks(router: &Router, user: &BareJid, sender: &Jid) -> bool {
    if exempt(user, sender) {
        return false;
    }
    if let Some(list) = router.blocklists().get(user) {
        return list.blocks(sender);
    }
    match router.storage().blocklist(user).await {
        Ok(items) => Blocklist::new(items).blocks(sender),
        Err(e) => {
            log::error!("{user}: cannot read the blocklist: {e}");
            false
        }
    }
}

/// Sends `stanza`'s error reply straight to its sender's session, past
/// the blocking checks that would otherwise drop it (the reply comes from
/// the blocked JID, or goes to it).
fn reply_direct(router: &Router, stanza: &Stanza, err: StanzaError) {
    let Some(reply) = stanza.error_reply(&err) else {
        return;
    };
    let session = reply
        .to()
        .cloned()
        .and_then(|to| to.try_into_full().ok())
        .and_then(|full| router.sessions().get(&full));
    match session {
        Some(s) => {
            let _ = s.deliver_from(Origin::of(reply.from()), reply.to_bytes());
        }
        // Remote, or a host program's: routing gives the same answer.
        None => router.route(reply),
    }
}

/// A stanza from a JID its recipient blocked (§3.3): messages that expect
/// an answer and IQ requests get `<service-unavailable/>`, as if the user
/// were offline; everything else (presence of every kind, headlines,
/// errors, results) is dropped without a word.
pub fn refuse_inbound(router: &Router, stanza: &Stanza) {
    match stanza.kind {
        Kind::Message(MessageType::Chat | MessageType::Normal) | Kind::Iq(IqType::Get | IqType::Set) => {
            reply_direct(router, stanza, StanzaError::new(StanzaCondition::ServiceUnavailable))
        }
        _ => log::debug!("dropped a stanza from a blocked JID"),
    }
}

/// A stanza a user sent to a JID they blocked (§3.3): `<not-acceptable/>`
/// with `<blocked/>`, but presence, errors and results are only dropped
/// (as Prosody does: server-made presence would bounce otherwise).
pub fn refuse_outbound(router: &Router, stanza: &Stanza) {
    match stanza.kind {
        Kind::Message(MessageType::Error) | Kind::Iq(IqType::Result | IqType::Error) | Kind::Presence(_) => {}
        _ => {
            // `cancel`, as in the XEP's example: retrying will not help.
            let err = StanzaError {
                kind: StanzaErrorType::Cancel,
                ..StanzaError::new(StanzaCondition::NotAcceptable)
            }
            .with_app(Element::new("blocked", ERRORS));
            reply_direct(router, stanza, err)
        }
    }
}

pub struct Blocking;

fn items_of(payload: &Element) -> Result<Vec<Jid>, StanzaError> {
    payload
        .children()
        .filter(|c| c.is("item", NS))
        .map(|i| {
            let jid = i
                .attr("jid")
                .ok_or_else(|| StanzaError::with_text(StanzaCondition::BadRequest, "an item needs a jid"))?;
            Jid::parse(jid).map_err(StanzaError::from)
        })
        .collect()
}

static PUSH_ID: AtomicU64 = AtomicU64::new(1);

/// Pushes `payload` to the user's resources that asked for the list
/// (§3.3, §3.4), after the set's result, as roster pushes are.
fn push_after_result(router: &Router, user: &BareJid, payload: Element) {
    let (sessions, user) = (router.sessions().clone(), user.clone());
    actix_rt::spawn(async move {
        for s in sessions.resources(&user).iter().filter(|s| s.wants_blocklist()) {
            let iq = Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", format!("block{}", PUSH_ID.fetch_add(1, Ordering::Relaxed)))
                .with_attr("to", s.jid.as_str())
                .with_child(payload.clone());
            let mut bytes = Vec::new();
            iq.write_to(&mut bytes, ns::CLIENT);
            s.deliver(bytes.into());
        }
    });
}

impl IqHandler for Blocking {
    fn handle(&self, router: &Router, req: IqRequest) -> IqFuture {
        // Sent to the server's domain, it is still about the sender's account.
        let user = if req.target.node().is_none() && router.is_local_user(&req.from) {
            req.from.to_bare()
        } else {
            req.target.clone()
        };
        if req.from.to_bare() != user {
            return ready(Err(StanzaError::new(StanzaCondition::Forbidden)));
        }
        let payload = req.payload().clone();
        let router = router.clone();
        match (req.is_set(), payload.name()) {
            (false, "blocklist") => {
                let session = req
                    .from
                    .clone()
                    .try_into_full()
                    .ok()
                    .and_then(|f| router.sessions().get(&f));
                if let Some(s) = &session {
                    s.set_wants_blocklist();
                }
                Box::pin(async move {
                    let list = match router.blocklists().get(&user) {
                        Some(list) => list,
                        None => Arc::new(Blocklist::new(router.storage().blocklist(&user).await?)),
                    };
                    let mut out = Element::new("blocklist", NS);
                    for jid in list.jids() {
                        out.push_child(Element::new("item", NS).with_attr("jid", jid));
                    }
                    Ok(Some(out))
                })
            }
            (true, "block") => {
                let jids = match items_of(&payload) {
                    Ok(j) if !j.is_empty() => j,
                    Ok(_) => {
                        return ready(Err(StanzaError::with_text(
                            StanzaCondition::BadRequest,
                            "nothing to block",
                        )))
                    }
                    Err(e) => return ready(Err(e)),
                };
                Box::pin(async move {
                    if !router.storage().block(&user, jids.clone()).await? {
                        return Err(StanzaError::new(StanzaCondition::FeatureNotImplemented));
                    }
                    router.blocklists().update(router.sessions(), &user, |l| l.with(&jids));
                    // §3.3: followers among them see the user go offline.
                    router.presence().send(PresenceMsg::Blocked {
                        user: user.clone(),
                        jids,
                        blocked: true,
                    });
                    push_after_result(&router, &user, payload);
                    Ok(None)
                })
            }
            (true, "unblock") => {
                let jids = match items_of(&payload) {
                    Ok(j) => j,
                    Err(e) => return ready(Err(e)),
                };
                Box::pin(async move {
                    // An empty <unblock/> unblocks everyone (§3.5).
                    let all = jids.is_empty();
                    let removed = router.storage().unblock(&user, (!all).then_some(jids)).await?;
                    router.blocklists().update(router.sessions(), &user, |l| match all {
                        true => Blocklist::default(),
                        false => l.without(&removed),
                    });
                    // §3.4: followers among them get the user's presence again.
                    router.presence().send(PresenceMsg::Blocked {
                        user: user.clone(),
                        jids: removed,
                        blocked: false,
                    });
                    push_after_result(&router, &user, payload);
                    Ok(None)
                })
            }
            _ => ready(Err(StanzaError::new(StanzaCondition::BadRequest))),
        }
    }

    fn features(&self) -> Vec<String> {
        vec![NS.to_owned()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Blocklist {
        Blocklist::new(items.iter().map(|i| Jid::parse(i).unwrap()))
    }

    #[test]
    fn jid_matching_follows_xep_0016() {
        let j = |s: &str| Jid::parse(s).unwrap();
        let full = list(&["romeo@montague.lit/orchard"]);
        assert!(full.blocks(&j("romeo@montague.lit/orchard")));
        assert!(!full.blocks(&j("romeo@montague.lit/hall")));
        assert!(!full.blocks(&j("romeo@montague.lit")));
        let bare = list(&["romeo@montague.lit"]);
        assert!(bare.blocks(&j("romeo@montague.lit/hall")));
        assert!(bare.blocks(&j("romeo@montague.lit")));
        assert!(!bare.blocks(&j("benvolio@montague.lit")));
        let domain_resource = list(&["montague.lit/orchard"]);
        assert!(domain_resource.blocks(&j("montague.lit/orchard")));
        assert!(domain_resource.blocks(&j("romeo@montague.lit/orchard")));
        assert!(!domain_resource.blocks(&j("romeo@montague.lit/hall")));
        let domain = list(&["montague.lit"]);
        assert!(domain.blocks(&j("montague.lit")));
        assert!(domain.blocks(&j("romeo@montague.lit/hall")));
        assert!(domain.blocks(&j("chat.montague.lit")));
        assert!(!domain.blocks(&j("capulet.lit")));
        assert!(!domain.blocks(&j("notmontague.lit")));
        assert!(!Blocklist::default().blocks(&j("romeo@montague.lit")));
    }
}
