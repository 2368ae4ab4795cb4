//! Subscription presence (RFC 6121 §3): outbound from a local user, and
//! inbound for one. Each is one storage transaction on the user's record
//! for the contact (the state machine runs inside it), then routing or
//! delivery, roster pushes, and the follower change for the PresenceActor.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use super::subscription::Direction;
use super::{push_query, ItemChange, RosterChange, RosterItem, RosterLimit, RosterUpdate, SubState};
use crate::error::{StanzaCondition, StanzaError};
use crate::jid::{BareJid, FullJid};
use crate::ns;
use crate::presence::{addressed, PresenceMsg};
use crate::router::Router;
use crate::session::{Origin, Session};
use crate::stanza::{Kind, PresenceType, Stanza};
use crate::storage::{PairFn, RosterFn};
use crate::xep::blocking;
use crate::xml::Element;

/// Applies one subscription stanza to a record.
fn transition(
    item: Option<RosterItem>,
    contact: BareJid,
    dir: Direction,
    kind: PresenceType,
    request: Option<String>,
) -> ItemChange {
    let mut item = item.unwrap_or_else(|| RosterItem::new(contact));
    let t = item.state.transition(dir, kind);
    if t.state == item.state {
        return ItemChange::Keep;
    }
    item.state = t.state;
    // A pre-approval creates the item too (RFC 6121 §3.4.2).
    let s = item.state;
    if s.subscription != super::Subscription::None || s.pending_out || s.approved {
        item.in_roster = true;
    }
    if !item.state.pending_in {
        item.pending_request = None;
    } else if request.is_some() {
        item.pending_request = request;
    }
    if !item.in_roster && !item.state.pending_in {
        ItemChange::Delete
    } else {
        ItemChange::Put(item)
    }
}

/// Runs one subscription stanza through `user`'s record for `contact`, in
/// one storage transaction.
async fn apply(
    router: &Router,
    user: &BareJid,
    contact: &BareJid,
    dir: Direction,
    kind: PresenceType,
    request: Option<String>,
) -> Option<RosterUpdate> {
    let c = contact.clone();
    let change = Box::new(move |item| transition(item, c, dir, kind, request));
    match router.storage().update_roster_item(user, contact, change).await {
        Ok(u) => Some(u),
        Err(e) => {
            log::error!("{user}: subscription update failed: {e}");
            None
        }
    }
}

/// Longest `<status/>` kept in a stored request, in bytes.
const MAX_REQUEST_STATUS: usize = 1024;
/// Longest XEP-0172 nickname kept in a stored request, in bytes.
const MAX_REQUEST_NICK: usize = 256;

/// The first `max` bytes of `s`, cut at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The inbound request (`<presence type='subscribe'/>` from `contact`) as
/// stored for redelivery at login: only what the user needs to decide
/// (who, their status text and XEP-0172 nickname), truncated. Storing the
/// whole stanza let anyone park up to a full stanza per request in the
/// account and have it sent at every login. Also what an import stores.
pub fn stored_request(el: &Element, user: &BareJid, contact: &BareJid) -> String {
    let mut request = Element::new("presence", ns::CLIENT)
        .with_attr("to", user.as_str())
        .with_attr("type", "subscribe")
        .with_attr("from", contact.as_str());
    if let Some(status) = el.get_child("status", ns::CLIENT) {
        let text = status.text();
        request.push_child(Element::new("status", ns::CLIENT).with_text(truncated(&text, MAX_REQUEST_STATUS)));
    }
    if let Some(nick) = el.get_child("nick", ns::NICK) {
        let text = nick.text();
        request.push_child(Element::new("nick", ns::NICK).with_text(truncated(&text, MAX_REQUEST_NICK)));
    }
    request.to_xml_in(ns::CLIENT)
}

/// Tells the user that their subscription stanza was refused because their
/// roster is full: the stanza went nowhere and nothing changed.
fn refuse(router: &Router, stanza: &Stanza) {
    // <not-allowed/> (cancel) rather than <resource-constraint/> (wait):
    // the cap is policy, and retrying will not help until items go.
    let err = StanzaError::with_text(StanzaCondition::NotAllowed, "your roster is full");
    if let Some(reply) = stanza.error_reply(&err) {
        router.route(reply);
    }
}

fn state(item: &Option<RosterItem>) -> SubState {
    item.as_ref().map(|i| i.state).unwrap_or_default()
}

/// Roster pushes and the follower change that follow a record update.
pub(crate) fn after_update(router: &Router, user: &BareJid, contact: &BareJid, update: &RosterUpdate) {
    if let Some(change) = update.visible_change() {
        push(router, user, &change, update.version);
    }
    relation_changed(router, user, contact, update);
}

/// Tells the PresenceActor of a subscription change, if there is one.
pub(crate) fn relation_changed(router: &Router, user: &BareJid, contact: &BareJid, update: &RosterUpdate) {
    let (before, after) = (state(&update.before), state(&update.after));
    if before.subscription != after.subscription {
        router.presence().send(PresenceMsg::Relation {
            user: user.clone(),
            contact: contact.clone(),
            before,
            after,
        });
    }
}

static PUSH_ID: AtomicU64 = AtomicU64::new(1);

/// Pushes one change to every interested resource of the user.
pub fn push(router: &Router, user: &BareJid, change: &RosterChange, version: u64) {
    for s in router.sessions().resources(user).iter().filter(|s| s.is_interested()) {
        push_to(s, change, version);
    }
}

/// Pushes one change to one session.
pub fn push_to(session: &Session, change: &RosterChange, version: u64) {
    let contact = match change {
        RosterChange::Updated(item) => &item.jid,
        RosterChange::Removed(jid) => jid,
    };
    if !session.roster_push_is_current(contact, version) {
        return;
    }
    let id = format!("push{}", PUSH_ID.fetch_add(1, Ordering::Relaxed));
    let iq = Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", id)
        .with_attr("to", session.jid.as_str())
        .with_child(push_query(change, version));
    let mut bytes = Vec::new();
    iq.write_to(&mut bytes, ns::CLIENT);
    session.deliver(bytes.into());
}

fn kind_of(stanza: &Stanza) -> Option<PresenceType> {
    match stanza.kind {
        Kind::Presence(t) if t.is_subscription() => Some(t),
        _ => None,
    }
}

/// A subscription stanza a local user sent (RFC 6121 §3.1.2, §3.2.2,
/// §3.3.2, §3.4.2). It leaves stamped with the user's bare JID. For a local
/// contact it is processed before the user's roster push goes out, so that
/// what the user is told has happened is stored on both sides.
pub async fn outbound(router: Router, user: FullJid, mut stanza: Stanza) {
    let Some(kind) = kind_of(&stanza) else { return };
    let Some(contact) = stanza.to().map(|t| t.to_bare()) else {
        return;
    };
    let bare = user.to_bare();
    if contact == bare {
        return;
    }
    // XEP-0191 §3.3: nothing goes to a JID the user blocked, and nothing changes.
    let lists = router.blocklists();
    if stanza.to().is_some_and(|to| lists.blocks_outbound(user.as_jid(), to)) {
        return;
    }
    // A contact who blocked the user takes the remote path: the user's side
    // changes as if it went, and `inbound` drops it.
    if router.is_local_user(contact.as_jid()) && !blocking::blocks(&router, &contact, user.as_jid()).await {
        return outbound_local(router, bare, contact, kind, stanza).await;
    }
    let Some(update) = apply(&router, &bare, &contact, Direction::Outbound, kind, None).await else {
        return;
    };
    if update.refused.is_some() {
        return refuse(&router, &stanza);
    }
    if state(&update.before).transition(Direction::Outbound, kind).forward {
        stanza.set_from(Some(bare.clone().into()));
        stanza.set_to(Some(contact.clone().into()));
        forward(router.clone(), stanza).await;
    }
    after_update(&router, &bare, &contact, &update);
}

/// [`outbound`] to a local contact: both records change in one storage
/// transaction, so that a crash cannot leave one side subscribed and the
/// other not. What follows (the contact's delivery and pushes, then the
/// user's push) goes out in the same order as for [`forward`].
async fn outbound_local(router: Router, user: BareJid, contact: BareJid, kind: PresenceType, mut stanza: Stanza) {
    let request = (kind == PresenceType::Subscribe).then(|| stored_request(stanza.element(), &contact, &user));
    let (c, u) = (contact.clone(), user.clone());
    let change_user: RosterFn = Box::new(move |item| transition(item, c, Direction::Outbound, kind, None));
    let change_contact: PairFn = Box::new(move |first: &RosterUpdate, item| {
        if first.refused.is_some() || !state(&first.before).transition(Direction::Outbound, kind).forward {
            return ItemChange::Keep;
        }
        transition(item, u, Direction::Inbound, kind, request)
    });
    let updates = router
        .storage()
        .update_roster_pair(&user, &contact, change_user, change_contact)
        .await;
    let (update, contact_update) = match updates {
        Ok(u) => u,
        Err(e) => return log::error!("{user}: subscription update failed: {e}"),
    };
    if update.refused.is_some() {
        return refuse(&router, &stanza);
    }
    if state(&update.before).transition(Direction::Outbound, kind).forward {
        stanza.set_from(Some(user.clone().into()));
        stanza.set_to(Some(contact.clone().into()));
        deliver_inbound(
            router.clone(),
            stanza,
            contact.clone(),
            user.clone(),
            kind,
            contact_update,
        );
    }
    after_update(&router, &user, &contact, &update);
}

/// Routes a subscription stanza; for a local contact, processes it to the
/// end before returning.
pub fn forward(router: Router, stanza: Stanza) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(async move {
        if stanza.to().is_some_and(|t| router.is_local_user(t)) {
            inbound(router, stanza).await
        } else {
            router.route(stanza)
        }
    })
}

/// A subscription stanza for a local user (RFC 6121 §3.1.3, §3.2.3,
/// §3.3.3, §3.4.3).
pub async fn inbound(router: Router, stanza: Stanza) {
    let Some(kind) = kind_of(&stanza) else { return };
    let (Some(user), Some(contact)) = (stanza.to().map(|t| t.to_bare()), stanza.from().map(|f| f.to_bare())) else {
        return;
    };
    // XEP-0191 §3.3: from a JID the user blocked, dropped without a word.
    if let Some(from) = stanza.from() {
        if blocking::blocks(&router, &user, from).await {
            return;
        }
    }
    let request = (kind == PresenceType::Subscribe).then(|| stored_request(stanza.element(), &user, &contact));
    let Some(update) = apply(&router, &user, &contact, Direction::Inbound, kind, request).await else {
        return;
    };
    deliver_inbound(router, stanza, user, contact, kind, update);
}

/// What follows the storage update of an inbound subscription stanza:
/// pushes, the follower change, and delivery or the automatic answer.
fn deliver_inbound(
    router: Router,
    stanza: Stanza,
    user: BareJid,
    contact: BareJid,
    kind: PresenceType,
    update: RosterUpdate,
) {
    if update.refused == Some(RosterLimit::Pending) {
        // Too many requests wait already: this one is neither stored nor
        // delivered, and the sender is told nothing, as ejabberd-like
        // servers do with abuse. An error would tell a flooder when the cap
        // is reached, and an `unsubscribed` would claim the user said no;
        // a real contact's request just stays pending, as if unanswered.
        return log::debug!("{user}: pending subscription requests at the limit; dropped one from {contact}");
    }
    if update.refused.is_some() {
        return;
    }
    let t = state(&update.before).transition(Direction::Inbound, kind);
    after_update(&router, &user, &contact, &update);
    if t.auto_approve {
        // Approved or pre-approved: answer for the user (§3.1.3, §3.4.3).
        let reply = Element::new("presence", ns::CLIENT);
        let subscribed = Stanza::new(
            Kind::Presence(PresenceType::Subscribed),
            Some(user.into()),
            Some(contact.into()),
            reply,
        );
        router.route(subscribed);
    } else if t.forward {
        let template = {
            let mut s = stanza;
            s.set_to(None);
            s.to_bytes()
        };
        // From the contact: a session too far behind drops it. A request
        // stays stored and comes again at the next login; the other kinds
        // reach the user as its roster push.
        let origin = Origin::of(Some(contact.as_jid()));
        for s in router
            .sessions()
            .resources(&user)
            .iter()
            .filter(|s| s.priority().is_some())
        {
            let _ = s.deliver_from(origin, addressed(&template, user.as_str()));
        }
    }
}
