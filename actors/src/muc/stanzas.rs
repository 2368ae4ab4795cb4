//! What a room sends, built as elements: the muc#user `<x/>` with its
//! `<item/>` and status codes (XEP-0045 §15.6.2), occupants' presence,
//! the subject, history's `<delay/>` (XEP-0203), status messages.
//! Attributes come in one order, `from` first (the `to` a copy gets is
//! spliced in before it): what the tests read.

use crate::error::StanzaError;
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::stanza::{Kind, Stanza};
use crate::xml::Element;

use super::{Affiliation, Role};

/// An occupant as one recipient sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item<'a> {
    pub affiliation: Affiliation,
    pub role: Role,
    /// The real JID, for those who may see it.
    pub jid: Option<&'a Jid>,
    /// A new nick (303).
    pub nick: Option<&'a str>,
    /// Who did it (kick, ban), by nick.
    pub actor: Option<&'a str>,
    pub reason: Option<&'a str>,
}

impl Item<'_> {
    fn element(&self) -> Element {
        let mut item = Element::new("item", ns::MUC_USER)
            .with_attr("affiliation", self.affiliation.as_str())
            .with_attr("role", self.role.as_str());
        if let Some(jid) = self.jid {
            item.set_attr("jid", jid.as_str());
        }
        if let Some(nick) = self.nick {
            item.set_attr("nick", nick);
        }
        if let Some(actor) = self.actor {
            item.push_child(Element::new("actor", ns::MUC_USER).with_attr("nick", actor));
        }
        if let Some(reason) = self.reason {
            item.push_child(Element::new("reason", ns::MUC_USER).with_text(reason));
        }
        item
    }
}

/// `codes` with `more`, in numeric order, each once: the order status
/// codes are written in.
pub(crate) fn codes(codes: &[u16], more: &[u16]) -> Vec<u16> {
    let mut all: Vec<u16> = codes.iter().chain(more).copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// `<x xmlns='http://jabber.org/protocol/muc#user'>`: the item, then
/// `extra` (a `<destroy/>`), then the status codes.
pub(crate) fn user_x(item: Option<&Item<'_>>, extra: Option<&Element>, codes: &[u16]) -> Element {
    let mut x = Element::new("x", ns::MUC_USER);
    if let Some(item) = item {
        x.push_child(item.element());
    }
    if let Some(extra) = extra {
        x.push_child(extra.clone());
    }
    for code in codes {
        x.push_child(Element::new("status", ns::MUC_USER).with_attr("code", code.to_string()));
    }
    x
}

/// An occupant's presence from `from` (`room/nick`): its own payload
/// (show, status, caps...), then `x`.
pub(crate) fn presence(from: &Jid, unavailable: bool, id: Option<&str>, payload: &[Element], x: Element) -> Element {
    let mut el = Element::new("presence", ns::CLIENT).with_attr("from", from.as_str());
    if unavailable {
        el.set_attr("type", "unavailable");
    }
    if let Some(id) = id {
        el.set_attr("id", id);
    }
    for p in payload {
        el.push_child(p.clone());
    }
    el.push_child(x);
    el
}

/// A groupchat message from `from` with these children.
pub(crate) fn groupchat(from: &Jid, id: Option<&str>, children: impl IntoIterator<Item = Element>) -> Element {
    let mut el = Element::new("message", ns::CLIENT)
        .with_attr("from", from.as_str())
        .with_attr("type", "groupchat");
    if let Some(id) = id {
        el.set_attr("id", id);
    }
    for c in children {
        el.push_child(c);
    }
    el
}

/// The subject message (`<subject/>` when there is none: a joiner always
/// gets one, XEP-0045 §7.2.15).
pub(crate) fn subject(from: &Jid, text: &str) -> Element {
    groupchat(from, None, [Element::new("subject", ns::CLIENT).with_text(text)])
}

/// A status message from the room itself (104: the configuration changed).
pub(crate) fn status_message(room: &BareJid, codes: &[u16]) -> Element {
    groupchat(room.as_jid(), None, [user_x(None, None, codes)])
}

/// XEP-0203 `<delay/>` on a message kept in history.
pub(crate) fn delay(room: &BareJid, stamp: String) -> Element {
    Element::new("delay", ns::DELAY)
        .with_attr("from", room.as_str())
        .with_attr("stamp", stamp)
}

/// `<destroy/>`, in the unavailable presence of a destroyed room (§10.9).
pub(crate) fn destroy(alternate: Option<&str>, reason: Option<&str>) -> Element {
    let mut el = Element::new("destroy", ns::MUC_USER);
    if let Some(jid) = alternate {
        el.set_attr("jid", jid);
    }
    if let Some(reason) = reason {
        el.push_child(Element::new("reason", ns::MUC_USER).with_text(reason));
    }
    el
}

/// A mediated invitation (§7.8.2), or a declined one relayed (§7.8.2.4):
/// `kind` is `invite` or `decline`, `who` the inviter's (decliner's) real
/// JID.
pub(crate) fn mediated(
    room: &BareJid,
    to: &Jid,
    kind: &str,
    who: &Jid,
    reason: Option<&Element>,
    password: Option<&str>,
) -> Element {
    let mut inner = Element::new(kind, ns::MUC_USER).with_attr("from", who.as_str());
    if let Some(reason) = reason {
        inner.push_child(reason.clone());
    }
    let mut x = Element::new("x", ns::MUC_USER).with_child(inner);
    if let Some(password) = password {
        x.push_child(Element::new("password", ns::MUC_USER).with_text(password));
    }
    Element::new("message", ns::CLIENT)
        .with_attr("from", room.as_str())
        .with_attr("to", to.as_str())
        .with_child(x)
}

/// The error answering `stanza`. A refused presence carries the muc
/// `<x/>` before the error, as XEP-0045's examples (§7.2) and ejabberd
/// have it: slixmpp 1.8 recognises a failed join by it.
pub(crate) fn error_reply(stanza: &Stanza, error: &StanzaError) -> Option<Stanza> {
    let mut reply = stanza.error_reply(error)?;
    if matches!(stanza.kind, Kind::Presence(_)) {
        reply.remove_payloads(|_| true);
        reply.push_payload(Element::new("x", ns::MUC));
        reply.push_payload(error.to_element());
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_presence_of_a_new_room_reads_as_the_xep_writes_it() {
        let from = Jid::parse("room@conference.localhost/Romeo").unwrap();
        let real = Jid::parse("romeo@localhost/orchard").unwrap();
        let item = Item {
            affiliation: Affiliation::Owner,
            role: Role::Moderator,
            jid: Some(&real),
            nick: None,
            actor: None,
            reason: None,
        };
        let el = presence(
            &from,
            false,
            None,
            &[],
            user_x(Some(&item), None, &codes(&[201], &[110])),
        );
        assert_eq!(
            el.to_xml_in(ns::CLIENT),
            "<presence from='room@conference.localhost/Romeo'><x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='owner' role='moderator' jid='romeo@localhost/orchard'/>\
             <status code='110'/><status code='201'/></x></presence>"
        );
    }

    #[test]
    fn a_kick_names_its_actor_and_reason() {
        let from = Jid::parse("room@conference.localhost/Juliet").unwrap();
        let item = Item {
            affiliation: Affiliation::None,
            role: Role::None,
            jid: None,
            nick: None,
            actor: Some("Romeo"),
            reason: Some("bye"),
        };
        let el = presence(&from, true, None, &[], user_x(Some(&item), None, &codes(&[307], &[])));
        assert_eq!(
            el.to_xml_in(ns::CLIENT),
            "<presence from='room@conference.localhost/Juliet' type='unavailable'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' role='none'>\
             <actor nick='Romeo'/><reason>bye</reason></item><status code='307'/></x></presence>"
        );
    }

    #[test]
    fn the_subject_is_sent_empty_when_there_is_none() {
        let room = BareJid::parse("room@conference.localhost").unwrap();
        assert_eq!(
            subject(room.as_jid(), "").to_xml_in(ns::CLIENT),
            "<message from='room@conference.localhost' type='groupchat'><subject/></message>"
        );
        assert_eq!(
            status_message(&room, &[104]).to_xml_in(ns::CLIENT),
            "<message from='room@conference.localhost' type='groupchat'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><status code='104'/></x></message>"
        );
    }
}
