//! `jabber:iq:roster` (RFC 6121 §2, XEP-0237 versioning): get, set and
//! remove, each answered after its storage transaction commits, then
//! pushed to every interested resource.

use std::collections::HashSet;

use super::presence::{push, push_to, relation_changed};
use super::{ItemChange, RosterItem, RosterUpdate};
use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest};
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::router::Router;
use crate::xml::Element;

/// Longest name or group accepted (RFC 6121 §2.3.3 lets the server choose).
const MAX_TEXT: usize = 1023;

pub struct RosterHandler;

/// Pushes a roster set's change after the set's result, as Prosody and
/// ejabberd do, so the requesting resource sees its answer first. The
/// router routes the result as soon as the handler's future completes, on
/// this same single-threaded arbiter (`Router::dispatch_iq`): a task
/// spawned just before completing runs after the result is queued.
fn push_after_result(router: &Router, user: &BareJid, update: &RosterUpdate) {
    if let Some(change) = update.visible_change() {
        let (router, user, version) = (router.clone(), user.clone(), update.version);
        actix_rt::spawn(async move { push(&router, &user, &change, version) });
    }
}

fn bad(condition: StanzaCondition, text: &'static str) -> StanzaError {
    StanzaError::with_text(condition, text)
}

/// A validated roster set.
enum RosterSet {
    Update {
        jid: BareJid,
        name: Option<String>,
        groups: Vec<String>,
    },
    Remove(BareJid),
}

fn parse_set(user: &BareJid, query: &Element) -> Result<RosterSet, StanzaError> {
    let mut items = query.children().filter(|c| c.is("item", ns::ROSTER));
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(bad(StanzaCondition::BadRequest, "a roster set holds exactly one item"));
    };
    let jid = item
        .attr("jid")
        .ok_or_else(|| bad(StanzaCondition::BadRequest, "the item needs a jid"))?;
    let jid = Jid::parse(jid).map_err(StanzaError::from)?;
    if !jid.is_bare() {
        return Err(bad(StanzaCondition::BadRequest, "roster items are bare JIDs"));
    }
    let jid = jid.to_bare();
    if jid == *user {
        return Err(bad(
            StanzaCondition::NotAllowed,
            "your own JID cannot be in your roster",
        ));
    }
    match item.attr("subscription") {
        Some("remove") => return Ok(RosterSet::Remove(jid)),
        None | Some("none") => {}
        Some(_) => {
            return Err(bad(
                StanzaCondition::BadRequest,
                "subscription may only be 'remove' in a roster set",
            ))
        }
    }
    let name = item.attr("name").filter(|n| !n.is_empty()).map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > MAX_TEXT) {
        return Err(bad(StanzaCondition::NotAcceptable, "name too long"));
    }
    let mut groups = Vec::new();
    let mut seen = HashSet::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let g = g.text();
        if g.is_empty() || g.len() > MAX_TEXT {
            return Err(bad(StanzaCondition::NotAcceptable, "a group name is empty or too long"));
        }
        if !seen.insert(g.clone()) {
            return Err(bad(StanzaCondition::BadRequest, "duplicate group"));
        }
        groups.push(g);
    }
    Ok(RosterSet::Update { jid, name, groups })
}

impl IqHandler for RosterHandler {
    fn handle(&self, router: &Router, req: IqRequest) -> IqFuture {
        if !req.from_owner() {
            return ready(Err(StanzaError::new(StanzaCondition::Forbidden)));
        }
        let router = router.clone();
        let user = req.target.clone();
        let storage = router.storage().clone();
        if !req.is_set() {
            let session = req
                .from
                .clone()
                .try_into_full()
                .ok()
                .and_then(|f| router.sessions().get(&f));
            if let Some(s) = &session {
                s.set_interested();
            }
            let since = req.payload().attr("ver").and_then(|v| v.parse::<u64>().ok());
            return Box::pin(async move {
                if let Some(since) = since {
                    if let Some((version, changes)) = storage.roster_changes(&user, since).await? {
                        // Up to date, or close: an empty result, then the
                        // changes as pushes (XEP-0237 §4), after the result.
                        if let (Some(s), false) = (session, changes.is_empty()) {
                            actix_rt::spawn(async move {
                                for c in &changes {
                                    push_to(&s, c, version);
                                }
                            });
                        }
                        return Ok(None);
                    }
                }
                let roster = storage.roster(&user).await?;
                let mut query = Element::new("query", ns::ROSTER).with_attr("ver", roster.version.to_string());
                for item in &roster.items {
                    query.push_child(item.to_element());
                }
                Ok(Some(query))
            });
        }
        let set = match parse_set(&user, req.payload()) {
            Ok(s) => s,
            Err(e) => return ready(Err(e)),
        };
        Box::pin(async move {
            match set {
                RosterSet::Update { jid, name, groups } => {
                    let contact = jid.clone();
                    let change = Box::new(move |item: Option<RosterItem>| {
                        let mut item = item.unwrap_or_else(|| RosterItem::new(contact));
                        item.name = name;
                        item.groups = groups;
                        item.in_roster = true;
                        ItemChange::Put(item)
                    });
                    let update = storage.update_roster_item(&user, &jid, change).await?;
                    if update.refused.is_some() {
                        // RFC 6121 §2.3.3 leaves the roster's size to the
                        // server and names no condition for it: <not-allowed/>
                        // (cancel), as for other things the server's policy
                        // forbids; not <resource-constraint/>, whose type
                        // (wait) tells the client to retry.
                        return Err(bad(StanzaCondition::NotAllowed, "the roster is full"));
                    }
                    relation_changed(&router, &user, &jid, &update);
                    push_after_result(&router, &user, &update);
                    Ok(None)
                }
                RosterSet::Remove(jid) => {
                    let change = Box::new(|item: Option<RosterItem>| match item {
                        Some(_) => ItemChange::Delete,
                        None => ItemChange::Keep,
                    });
                    let update = storage.update_roster_item(&user, &jid, change).await?;
                    let Some(before) = update.before.clone().filter(|i| i.in_roster || i.state.pending_in) else {
                        return Err(StanzaError::new(StanzaCondition::ItemNotFound));
                    };
                    relation_changed(&router, &user, &jid, &update);
                    // RFC 6121 §2.5.2: the contact learns the subscriptions ended.
                    super::account::end_subscriptions(&router, &user, &jid, before.state).await;
                    // Last: the notices above await, and the pushes must
                    // not run before the result.
                    push_after_result(&router, &user, &update);
                    Ok(None)
                }
            }
        })
    }
}
