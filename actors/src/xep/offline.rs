//! XEP-0160 offline messages (RFC 6121 §8.5.2.2.1) with XEP-0203 delay
//! stamps. A `chat` or `normal` message with something to keep (a body, a
//! subject, or a payload other than a chat state) for a local user with no
//! available resource is stored, up to a quota per user, and delivered in
//! order, stamped, at the user's next initial presence. Past the quota, or
//! for nobody, the sender gets `<service-unavailable/>`.

use bytes::Bytes;

use crate::error::StanzaCondition;
use crate::jid::BareJid;
use crate::ns;
use crate::router::Router;
use crate::stanza::Stanza;
use crate::xml::Element;

pub use crate::ns::DELAY;
pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

/// True when the message carries something worth keeping: a chat state or
/// a receipt request alone is not.
pub fn storable(message: &Stanza) -> bool {
    message.element().children().any(|c| match c.ns() {
        ns::CLIENT => matches!(c.name(), "body" | "subject"),
        // Stanza ids are the server's own (XEP-0359), `<private/>` a
        // carbons rule (XEP-0280): neither is content.
        CHATSTATES | "urn:xmpp:receipts" | "urn:xmpp:hints" | super::sid::NS | super::carbons::NS => false,
        _ => true,
    })
}

/// Now, as XEP-0082 writes it (UTC, seconds).
pub fn now_stamp() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Stores `message` for `user` (who has no available resource), or sends
/// the sender the error. Stores run one at a time, in the order they were
/// asked for, so messages from one sender keep their order.
pub fn store(router: &Router, user: &BareJid, mut message: Stanza) {
    if !storable(&message) {
        return router.bounce(&message, StanzaCondition::ServiceUnavailable);
    }
    super::carbons::strip_private(&mut message);
    // Stored again (a session ended without acknowledging it): it keeps
    // the time it first arrived. Stamped by the recipient's domain.
    let domain = user.domain();
    let stamped = message
        .element()
        .children()
        .any(|c| c.is("delay", DELAY) && c.attr("from") == Some(domain));
    if !stamped {
        let delay = Element::new("delay", DELAY)
            .with_attr("from", domain)
            .with_attr("stamp", now_stamp());
        message.push_payload(delay);
    }
    let (router, user) = (router.clone(), user.clone());
    let order = router.offline_order();
    actix_rt::spawn(async move {
        // Taken in spawn order (the lock is fair): a sender's messages are
        // stored as sent.
        let _turn = order.lock().await;
        // XEP-0191: the router checked the lists of users online; an
        // offline user's is read here, in turn.
        if let Some(from) = message.from() {
            if super::blocking::blocks(&router, &user, from).await {
                return super::blocking::refuse_inbound(&router, &message);
            }
        }
        let xml = String::from_utf8_lossy(&message.to_bytes()).into_owned();
        let stored = router.storage().store_offline(&user, xml, router.offline_quota()).await;
        match stored {
            Ok(true) => {}
            Ok(false) => router.bounce(&message, StanzaCondition::ServiceUnavailable),
            Err(e) => {
                log::error!("{user}: cannot store an offline message: {e}");
                router.bounce(&message, StanzaCondition::InternalServerError);
            }
        }
    });
}

/// The user's stored messages, oldest first, with their sequence numbers
/// (to forget them once delivered).
pub async fn waiting(router: &Router, user: &BareJid) -> Vec<(i64, Bytes)> {
    match router.storage().offline_messages(user).await {
        Ok(messages) => messages.into_iter().map(|(seq, xml)| (seq, Bytes::from(xml))).collect(),
        Err(e) => {
            log::error!("{user}: cannot read offline messages: {e}");
            Vec::new()
        }
    }
}
