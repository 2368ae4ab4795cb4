//! XEP-0359: Unique and Stable Stanza IDs. Every `chat` or `normal` message
//! routed to a local account gets a `<stanza-id/>` `by` the account's bare
//! JID, once, before it is serialised for any session or stored offline:
//! the delivered message, its carbon copies and the stored one carry the
//! same id, which the archive will key on. A `<stanza-id/>` the sender wrote
//! with that `by` is replaced (§4: the generating entity overrides it), as
//! the recipient trusts such ids; the client's `<origin-id/>` and ids by
//! others pass through untouched.

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest};
use crate::jid::Jid;
use crate::router::Router;
use crate::stanza::{Kind, MessageType, Stanza};
use crate::xml::Element;

pub const NS: &str = "urn:xmpp:sid:0";

/// Stamps a message routed to the local account of `to` (bare or full);
/// the new id, which the account's archive (XEP-0313) files it under.
pub fn stamp(stanza: &mut Stanza, to: &Jid) -> Option<String> {
    let Kind::Message(kind) = stanza.kind else { return None };
    let full = to.as_str();
    let by = to.resource().map_or(full, |r| &full[..full.len() - r.len() - 1]);
    if stanza.element().children().any(|c| c.is("stanza-id", NS)) {
        stanza.remove_payloads(|c| c.is("stanza-id", NS) && c.attr("by").is_some_and(|b| names(b, by)));
    }
    if !matches!(kind, MessageType::Chat | MessageType::Normal) {
        return None;
    }
    let id = new_id();
    let el = Element::new("stanza-id", NS)
        .with_attr("id", id.as_str())
        .with_attr("by", by);
    stanza.push_payload(el);
    Some(id)
}

/// True when `by` names `user` as a client would read it: JIDs compare
/// normalised, so `Juliet@localhost` is a claim to be by juliet too.
fn names(by: &str, user: &str) -> bool {
    by == user || Jid::parse(by).is_ok_and(|j| j.as_str() == user)
}

/// A new id: 96 random bits in 16 URL-safe characters. Random rather than
/// counted, as ids must not tell anything, such as an archive's size
/// (§6); at this length they are unique in practice.
pub fn new_id() -> String {
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u128 = rand::random();
    let mut id = String::with_capacity(16);
    for _ in 0..16 {
        id.push(char::from(DIGITS[(bits & 63) as usize]));
        bits >>= 6;
    }
    id
}

/// Lists the feature in an account's disco#info, the `by` of its ids. The
/// protocol has no IQ: a request gets what an unknown one would.
pub struct Advertised;

impl IqHandler for Advertised {
    fn handle(&self, _: &Router, _: IqRequest) -> IqFuture {
        ready(Err(StanzaError::new(StanzaCondition::ServiceUnavailable)))
    }

    fn features(&self) -> Vec<String> {
        vec![NS.to_owned()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::client_element;

    fn message(xml: &str) -> Stanza {
        let el = client_element(xml);
        Stanza::from_element(el).unwrap()
    }

    #[test]
    fn chat_gets_an_id_by_the_bare_jid_and_claims_to_it_are_replaced() {
        let mut m = message(
            "<message to='juliet@localhost/balcony' type='chat'><body>hi</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='Juliet@localhost'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='kept' by='room@muc.example'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='mine'/></message>",
        );
        let to = m.to().unwrap().clone();
        stamp(&mut m, &to);
        let ids: Vec<_> = m.element().children().filter(|c| c.ns() == NS).collect();
        assert_eq!(ids.len(), 3, "{:?}", m.element());
        assert_eq!(ids[0].attr("id"), Some("kept"));
        assert!(ids[1].is("origin-id", NS));
        assert_eq!(ids[2].attr("by"), Some("juliet@localhost"));
        let id = ids[2].attr("id").unwrap();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn only_chat_and_normal_are_stamped_but_claims_go_from_all() {
        let to = Jid::parse("juliet@localhost").unwrap();
        let mut headline = message(
            "<message to='juliet@localhost' type='headline'>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='juliet@localhost'/></message>",
        );
        stamp(&mut headline, &to);
        assert_eq!(headline.element().children().count(), 0);
        let mut normal = message("<message to='juliet@localhost'><body>x</body></message>");
        stamp(&mut normal, &to);
        assert!(normal.element().has_child("stanza-id", NS));
    }

    #[test]
    fn ids_differ() {
        assert_ne!(new_id(), new_id());
    }
}
