//! Subscription presence (RFC 6121 §3): outbound from a local user, and
//! inbound for one. Each is one storage transaction on the user's record
//! for the contact (the state machine runs inside it), then routing or
//! delivery, roster pushes, and the follower change for the PresenceActor.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use super::subscription::Direction;
use super::{push_query, ItemChange, RosterChange, RosterItem, RosterUpdate, SubState};
use crate::jid::{BareJid, FullJid};
use crate::ns;
use crate::presence::{addressed, PresenceMsg};
use crate::router::Router;
use crate::session::Session;
use crate::stanza::{Kind, PresenceType, Stanza};
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
    if item.state.subscription != super::Subscription::None || item.state.pending_out {
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
    match router
        .storage()
        .update_roster_item(user.node().unwrap_or_default(), contact, change)
        .await
    {
        Ok(u) => Some(u),
        Err(e) => {
            log::error!("{user}: subscription update failed: {e}");
            None
        }
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
    let Some(update) = apply(&router, &bare, &contact, Direction::Outbound, kind, None).await else {
        return;
    };
    if state(&update.before).transition(Direction::Outbound, kind).forward {
        stanza.set_from(Some(bare.clone().into()));
        stanza.set_to(Some(contact.clone().into()));
        forward(router.clone(), stanza).await;
    }
    after_update(&router, &bare, &contact, &update);
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
    let request = (kind == PresenceType::Subscribe).then(|| String::from_utf8_lossy(&stanza.to_bytes()).into_owned());
    let Some(update) = apply(&router, &user, &contact, Direction::Inbound, kind, request).await else {
        return;
    };
    let t = state(&update.before).transition(Direction::Inbound, kind);
    after_update(&router, &user, &contact, &update);
    if t.auto_approve {
        // Already approved: answer for the user (§3.1.3).
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
        for s in router
            .sessions()
            .resources(&user)
            .iter()
            .filter(|s| s.priority().is_some())
        {
            s.deliver(addressed(&template, user.as_str()));
        }
    }
}
