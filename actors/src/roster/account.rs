//! Removing an account (XEP-0077 §3.3, `shoal user del`): its contacts
//! must not keep it. Every subscription ends as if the user had removed
//! each contact from the roster (RFC 6121 §2.5.2), so the contacts get
//! their `unsubscribe`/`unsubscribed`, their roster pushes and their
//! follower sets updated; only then is the account deleted. A new account
//! with the same name starts with nobody.

use super::{RosterItem, SubState};
use crate::error::StorageError;
use crate::jid::BareJid;
use crate::ns;
use crate::router::Router;
use crate::stanza::{Kind, PresenceType, Stanza};
use crate::xml::Element;

/// What a contact is told when the user's side of their subscription
/// ends (RFC 6121 §2.5.2, §3.2, §3.3).
pub fn ending_notices(state: SubState) -> Vec<PresenceType> {
    let mut notices = Vec::new();
    if state.subscription.has_to() || state.pending_out {
        notices.push(PresenceType::Unsubscribe);
    }
    if state.subscription.has_from() || state.pending_in {
        notices.push(PresenceType::Unsubscribed);
    }
    notices
}

/// Sends `user`'s ending notices for one contact, each processed to the
/// end for a local contact.
pub async fn end_subscriptions(router: &Router, user: &BareJid, contact: &BareJid, state: SubState) {
    for t in ending_notices(state) {
        let notice = Stanza::new(
            Kind::Presence(t),
            Some(user.clone().into()),
            Some(contact.clone().into()),
            Element::new("presence", ns::CLIENT),
        );
        super::presence::forward(router.clone(), notice).await;
    }
}

/// Ends every subscription of `user`, then deletes the account; `false`
/// when there was no such account. The caller ends its sessions.
pub async fn remove_account(router: Router, user: BareJid) -> Result<bool, StorageError> {
    let storage = router.storage().clone();
    let mut records: Vec<RosterItem> = storage.roster(&user).await?.items;
    for pending in storage.pending_requests(&user).await? {
        if !records.iter().any(|r| r.jid == pending.jid) {
            records.push(pending);
        }
    }
    for record in records {
        end_subscriptions(&router, &user, &record.jid, record.state).await;
    }
    let existed = storage.delete_user(&user).await?;
    if existed {
        log::info!("account {user} removed");
    }
    Ok(existed)
}
