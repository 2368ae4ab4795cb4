//! XEP-0280: Message Carbons. A session that enables carbons gets a copy of
//! every `chat` message its account receives on another resource
//! (`<received/>`, §6) or sends from another resource (`<sent/>`, §7), each
//! wrapped in a XEP-0297 `<forwarded/>`, so that all of a user's devices
//! see both sides of every conversation.
//!
//! Not copied: a message with `<private/>` (§8; removed before the
//! recipient gets it) or a `<no-copy/>` hint (XEP-0334), a message that is
//! itself a carbon, and a MUC private message (there is no MUC yet: the
//! rule is for when there is). Copies go to available resources only, and
//! are best-effort: one a busy session refuses is dropped, never bounced.

use std::sync::Arc;

use bytes::Bytes;
use quick_xml::escape::escape;

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest};
use crate::jid::{BareJid, FullJid};
use crate::ns;
use crate::router::Router;
use crate::session::{Origin, Session, SessionTable};
use crate::stanza::{Kind, MessageType, Stanza};
use crate::xml::Element;

pub const NS: &str = "urn:xmpp:carbons:2";
/// XEP-0297: Stanza Forwarding.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334: Message Processing Hints.
pub const HINTS: &str = "urn:xmpp:hints";
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// `<enable/>` and `<disable/>` (§4, §5), for the session that asks: sent
/// to the server, or without `to` (as §4 shows it), which makes it the
/// account's. `advertise`: listed in disco#info, which is the server's.
pub struct Carbons {
    pub advertise: bool,
}

impl IqHandler for Carbons {
    fn handle(&self, router: &Router, req: IqRequest) -> IqFuture {
        // Nobody turns carbons on for another account.
        if req.target.node().is_some() && !req.from_owner() {
            return ready(Err(StanzaError::new(StanzaCondition::ServiceUnavailable)));
        }
        let enabled = match req.payload().name() {
            "enable" if req.is_set() => true,
            "disable" if req.is_set() => false,
            _ => return ready(Err(StanzaError::new(StanzaCondition::BadRequest))),
        };
        // A flag of the session: only a bound client has one to set. Set
        // before the result is sent, so that what the client sends or is
        // sent next is copied.
        let session = req
            .from
            .clone()
            .try_into_full()
            .ok()
            .and_then(|jid| router.sessions().get(&jid));
        match session {
            Some(session) => {
                session.set_carbons(enabled);
                ready(Ok(None))
            }
            None => ready(Err(StanzaError::new(StanzaCondition::NotAllowed))),
        }
    }

    fn features(&self) -> Vec<String> {
        if self.advertise {
            vec![NS.to_owned()]
        } else {
            Vec::new()
        }
    }
}

/// True when `message` is copied: a `chat` message (§6 leaves the choice;
/// `normal` ones are not, yet) that is not private, hinted `<no-copy/>`,
/// a carbon itself, or a MUC private message.
pub fn eligible(message: &Stanza) -> bool {
    message.kind == Kind::Message(MessageType::Chat)
        && !message.element().children().any(|c| match c.ns() {
            NS => matches!(c.name(), "private" | "received" | "sent"),
            HINTS => c.name() == "no-copy",
            MUC_USER => c.name() == "x",
            _ => false,
        })
}

fn is_private(el: &Element) -> bool {
    el.is("private", NS)
}

/// The bytes a local recipient gets for `stanza`: a message's `<private/>`
/// is for the servers, and is removed (§8).
pub fn delivered(stanza: &Stanza) -> Bytes {
    if matches!(stanza.kind, Kind::Message(_)) && stanza.element().children().any(is_private) {
        let mut stanza = stanza.clone();
        strip_private(&mut stanza);
        return stanza.to_bytes();
    }
    stanza.to_bytes()
}

/// Removes `<private/>` from a message kept for its recipient (§8).
pub fn strip_private(message: &mut Stanza) {
    message.remove_payloads(is_private);
}

/// The session `jid` names, and whether the account's other resources may
/// want a copy of `stanza` once that session has it: one look-up of the
/// account for both, on the path of every stanza to a full JID.
pub(crate) fn addressed(sessions: &SessionTable, jid: &FullJid, stanza: &Stanza) -> (Option<Arc<Session>>, bool) {
    let eligible = eligible(stanza);
    sessions.with_resources(&jid.to_bare(), |all| {
        let target = all.iter().find(|s| s.jid == *jid).cloned();
        let copies = eligible && target.is_some() && all.len() > 1 && all.iter().any(|s| s.carbons() && s.jid != *jid);
        (target, copies)
    })
}

/// Received copies of `message`, which the session `got` had as `original`
/// (addressed to its full JID).
pub(crate) fn received_by(sessions: &SessionTable, got: &Session, message: &Stanza, original: &[u8]) {
    let user = got.jid.to_bare();
    sessions.with_resources(&user, |all| received(all, &user, message, original, |s| s.id == got.id));
}

/// Received copies (§6) of `message`, delivered as `original`, for the
/// carbons-enabled available `sessions` of `user` that `got` says did not
/// get it. The sender is left out too when it is one of them: a message
/// to one's own other resource is not copied back.
pub(crate) fn received(
    sessions: &[Arc<Session>],
    user: &BareJid,
    message: &Stanza,
    original: &[u8],
    got: impl Fn(&Session) -> bool,
) {
    let from = message.from();
    let origin = Origin::of(from);
    for s in sessions {
        if s.carbons() && s.priority().is_some() && !got(s) && from.is_none_or(|f| f != s.jid.as_jid()) {
            // Refused by a busy session, it is dropped: the sender was
            // answered for the original already.
            let _ = s.deliver_from(origin, wrap("received", user, &s.jid, message, original));
        }
    }
}

/// Sent copies (§7) of `message`, which `sender` is sending, for its
/// account's other carbons-enabled available resources. Called before the
/// message is routed, wherever it goes.
pub fn sent(router: &Router, sender: &Session, message: &Stanza) {
    if !eligible(message) {
        return;
    }
    let user = sender.jid.to_bare();
    // To its own account: the resources there get it or a received copy.
    if message
        .to()
        .is_some_and(|to| to.node() == user.node() && to.domain() == user.domain())
    {
        return;
    }
    // To someone the user blocked: it is refused, so nothing was sent.
    if message
        .to()
        .is_some_and(|to| router.sessions().blocklists().blocks_outbound(sender.jid.as_jid(), to))
    {
        return;
    }
    router.sessions().with_resources(&user, |all| {
        if all.len() < 2 {
            return;
        }
        let mut copies = all
            .iter()
            .filter(|s| s.id != sender.id && s.carbons() && s.priority().is_some())
            .peekable();
        if copies.peek().is_none() {
            return;
        }
        let original = message.to_bytes();
        for s in copies {
            // The account's own traffic, as a roster push is.
            let _ = s.deliver(wrap("sent", &user, &s.jid, message, &original));
        }
    });
}

/// The copy of `message` (serialised as `original`) for `to`: from the
/// account, in `<received/>` or `<sent/>`. The original is spliced in as
/// it was serialised, not written again for each copy; inside
/// `<forwarded/>` it must name its namespace.
fn wrap(direction: &str, user: &BareJid, to: &FullJid, message: &Stanza, original: &[u8]) -> Bytes {
    let head = format!(
        "<message from='{}' to='{}' type='chat'><{direction} xmlns='{NS}'><forwarded xmlns='{FORWARD}'>",
        escape(user.as_str()),
        escape(to.as_str()),
    );
    let tail = format!("</forwarded></{direction}></message>");
    let mut out = Vec::with_capacity(head.len() + original.len() + tail.len() + 24);
    out.extend_from_slice(head.as_bytes());
    match original.strip_prefix(b"<message") {
        Some(rest) => {
            out.extend_from_slice(b"<message xmlns='");
            out.extend_from_slice(ns::CLIENT.as_bytes());
            out.push(b'\'');
            out.extend_from_slice(rest);
        }
        None => message.element().write_to(&mut out, FORWARD),
    }
    out.extend_from_slice(tail.as_bytes());
    Bytes::from(out)
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
    fn which_messages_are_copied() {
        assert!(eligible(&message("<message type='chat'><body>x</body></message>")));
        for xml in [
            "<message><body>x</body></message>",
            "<message type='headline'><body>x</body></message>",
            "<message type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>",
            "<message type='chat'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>",
            "<message type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>",
            "<message type='chat'><body>x</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
        ] {
            assert!(!eligible(&message(xml)), "{xml}");
        }
    }

    #[test]
    fn private_is_removed_for_the_recipient() {
        let m = message("<message type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>");
        assert_eq!(&delivered(&m)[..], b"<message type='chat'><body>x</body></message>");
    }

    #[test]
    fn the_copy_wraps_the_original_as_serialised() {
        let m = message(
            "<message from='romeo@localhost/o' to='juliet@localhost' type='chat'><body>a&amp;b</body></message>",
        );
        let user = BareJid::parse("juliet@localhost").unwrap();
        let to = FullJid::parse("juliet@localhost/h'all").unwrap();
        let copy = wrap("received", &user, &to, &m, &m.to_bytes());
        let expected = "<message from='juliet@localhost' to='juliet@localhost/h&apos;all' type='chat'>\
            <received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
            <message xmlns='jabber:client' from='romeo@localhost/o' to='juliet@localhost' type='chat'>\
            <body>a&amp;b</body></message></forwarded></received></message>";
        assert_eq!(std::str::from_utf8(&copy).unwrap(), expected);
        // What the splice gives is what writing the element would.
        let mut written = Vec::new();
        m.element().write_to(&mut written, FORWARD);
        assert!(expected.contains(std::str::from_utf8(&written).unwrap()));
    }
}
