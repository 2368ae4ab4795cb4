//! RFC 6121 rosters and subscriptions: the roster item, the subscription
//! state machine ([`subscription`]), the `jabber:iq:roster` IQ handler
//! ([`handler`]), and the processing of subscription presence
//! ([`presence`]).

pub mod account;
pub mod handler;
pub mod presence;
pub mod subscription;

use crate::jid::BareJid;
use crate::ns;
use crate::xml::Element;

pub use subscription::{SubState, Subscription};

/// One contact in a user's roster (or a pending inbound request from
/// someone who is not, yet: `in_roster` false).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    pub jid: BareJid,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub state: SubState,
    /// False for a contact known only by its pending subscription request:
    /// such a record is not part of the roster the client sees.
    pub in_roster: bool,
    /// The stored inbound `<presence type='subscribe'/>`, redelivered at login.
    pub pending_request: Option<String>,
}

impl RosterItem {
    pub fn new(jid: BareJid) -> RosterItem {
        RosterItem {
            jid,
            name: None,
            groups: Vec::new(),
            state: SubState::default(),
            in_roster: false,
            pending_request: None,
        }
    }

    /// `<item/>` as in a roster result or push.
    pub fn to_element(&self) -> Element {
        let mut item = Element::new("item", ns::ROSTER)
            .with_attr("jid", self.jid.as_str())
            .with_attr("subscription", self.state.subscription.as_str());
        if let Some(name) = &self.name {
            item.set_attr("name", name.as_str());
        }
        if self.state.pending_out {
            item.set_attr("ask", "subscribe");
        }
        // RFC 6121 §2.1.2.1: a pre-approval means nothing once the contact follows.
        if self.state.approved && !self.state.subscription.has_from() {
            item.set_attr("approved", "true");
        }
        for g in &self.groups {
            item.push_child(Element::new("group", ns::ROSTER).with_text(g.as_str()));
        }
        item
    }
}

/// A user's roster as the client sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster {
    pub version: u64,
    pub items: Vec<RosterItem>,
}

/// What changed in a roster since a version: items to push, and removals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterChange {
    Updated(RosterItem),
    Removed(BareJid),
}

/// What to do with one roster record, decided inside the storage
/// transaction from its current value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemChange {
    Keep,
    Put(RosterItem),
    Delete,
}

/// The outcome of one roster record update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterUpdate {
    pub before: Option<RosterItem>,
    pub after: Option<RosterItem>,
    /// The roster version after the update.
    pub version: u64,
    /// Set when the change was refused because it would take the user past
    /// a [`RosterLimits`] cap; nothing changed then (`after == before`).
    pub refused: Option<RosterLimit>,
}

/// Which cap of [`RosterLimits`] a change ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RosterLimit {
    /// The roster the user sees is full.
    Items,
    /// Too many requests wait from contacts not in the roster.
    Pending,
}

/// Caps on one user's roster records, checked by the store inside the
/// transaction that would exceed them. Together they bound what one account
/// stores and what it is sent at login: `max_items` visible items, plus
/// `max_pending` hidden records (a request from someone not in the roster).
/// 0 means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RosterLimits {
    pub max_items: usize,
    pub max_pending: usize,
}

impl Default for RosterLimits {
    fn default() -> Self {
        // Generous: real rosters rarely pass a few hundred items; ejabberd
        // and Prosody set no cap, which is what lets one account grow
        // without bound.
        RosterLimits {
            max_items: 2000,
            max_pending: 100,
        }
    }
}

impl RosterLimits {
    pub const UNLIMITED: RosterLimits = RosterLimits {
        max_items: 0,
        max_pending: 0,
    };

    /// Whether turning `before` into `after` takes the user past a cap.
    /// `count` counts the user's current records of that kind (visible
    /// items, or hidden requests); it is only called when a new one would
    /// be created.
    pub fn exceeded<E>(
        &self,
        before: &Option<RosterItem>,
        after: &Option<RosterItem>,
        mut count: impl FnMut(RosterLimit) -> Result<usize, E>,
    ) -> Result<Option<RosterLimit>, E> {
        let Some(after) = after else { return Ok(None) };
        let was_visible = before.as_ref().is_some_and(|b| b.in_roster);
        let check = if after.in_roster && !was_visible {
            Some((RosterLimit::Items, self.max_items))
        } else if !after.in_roster && before.is_none() {
            Some((RosterLimit::Pending, self.max_pending))
        } else {
            None
        };
        match check {
            Some((limit, max)) if max > 0 && count(limit)? >= max => Ok(Some(limit)),
            _ => Ok(None),
        }
    }
}

impl RosterUpdate {
    /// The push the client should see, if the visible roster changed.
    pub fn visible_change(&self) -> Option<RosterChange> {
        // What the client sees: pending-in and stored requests are not part of it.
        let visible = |i: &Option<RosterItem>| i.as_ref().filter(|i| i.in_roster).cloned();
        match (visible(&self.before), visible(&self.after)) {
            (Some(b), Some(a)) if b.to_element() == a.to_element() => None,
            (_, Some(a)) => Some(RosterChange::Updated(a)),
            (Some(b), None) => Some(RosterChange::Removed(b.jid)),
            (None, None) => None,
        }
    }
}

/// A `jabber:iq:roster` query holding one change, as pushed to clients.
pub fn push_query(change: &RosterChange, version: u64) -> Element {
    let item = match change {
        RosterChange::Updated(item) => item.to_element(),
        RosterChange::Removed(jid) => Element::new("item", ns::ROSTER)
            .with_attr("jid", jid.as_str())
            .with_attr("subscription", "remove"),
    };
    Element::new("query", ns::ROSTER)
        .with_attr("ver", version.to_string())
        .with_child(item)
}
