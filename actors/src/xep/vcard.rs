//! XEP-0054: vcard-temp, stored per user, answered by the server for the
//! account. Setting it also sets the profile derived from it: NICKNAME,
//! PHOTO/EXTVAL (the photo URL of the bind extension) and the SHA-1 of
//! PHOTO/BINVAL, which XEP-0153 puts in the user's presence.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest};
use crate::presence::PresenceMsg;
use crate::router::Router;
use crate::storage::Profile;
use crate::xml::{parse_element, Element, NsBindings, ParseLimits};

pub const NS: &str = "vcard-temp";

pub struct VCard;

/// The profile a vCard describes.
pub fn profile_of(vcard: &Element) -> Profile {
    let text = |el: Option<&Element>| el.map(|e| e.text().trim().to_owned()).filter(|t| !t.is_empty());
    let photo = vcard.get_child("PHOTO", NS);
    let binval = text(photo.and_then(|p| p.get_child("BINVAL", NS)));
    let photo_hash = binval.and_then(|b| {
        let compact: String = b.split_whitespace().collect();
        B64.decode(compact).ok()
    });
    Profile {
        nick: text(vcard.get_child("NICKNAME", NS)),
        photo_url: text(photo.and_then(|p| p.get_child("EXTVAL", NS))),
        photo_hash: photo_hash.map(|bytes| Sha1::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()),
    }
}

impl IqHandler for VCard {
    fn handle(&self, router: &Router, req: IqRequest) -> IqFuture {
        let storage = router.storage().clone();
        let user = req.target.clone();
        if !req.is_set() {
            return Box::pin(async move {
                // RFC 6121 §8.5.1: nobody answers for an account that does not exist.
                if storage.credentials(&user).await?.is_none() {
                    return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
                }
                let stored = storage.vcard(&user).await?;
                let parsed = stored
                    .and_then(|xml| parse_element(xml.as_bytes(), &NsBindings::empty(), &ParseLimits::default()).ok());
                Ok(Some(parsed.unwrap_or_else(|| Element::new("vCard", NS))))
            });
        }
        if !req.from_owner() {
            return ready(Err(StanzaError::new(StanzaCondition::Forbidden)));
        }
        let vcard = req.payload().clone();
        if vcard.name() != "vCard" {
            return ready(Err(StanzaError::new(StanzaCondition::BadRequest)));
        }
        let profile = profile_of(&vcard);
        let router = router.clone();
        Box::pin(async move {
            let hash = profile.photo_hash.clone();
            // XEP-0398: the photo is published as the avatar too, with PEP.
            let pep = crate::xep::pep::enabled(&router);
            let had_photo = pep && storage.profile(&user).await?.photo_hash.is_some();
            storage.set_vcard(&user, vcard.to_string(), profile).await?;
            if pep {
                crate::xep::avatar::from_vcard(&router, &user, &vcard, had_photo).await;
            }
            // Awaited: the re-broadcast presence with the new hash (XEP-0153)
            // goes out before the result, as a publish's notifications do. A
            // stopped shard (shutting down) has no one to tell.
            let _ = router.presence().request(PresenceMsg::PhotoHash { user, hash }).await;
            Ok(None)
        })
    }

    fn features(&self) -> Vec<String> {
        vec![NS.to_owned()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_from_vcard() {
        let xml = "<vCard xmlns='vcard-temp'><NICKNAME>Jules</NICKNAME><PHOTO><TYPE>image/png</TYPE>\
                   <BINVAL>aGVs\nbG8=</BINVAL><EXTVAL>https://example.com/j.png</EXTVAL></PHOTO></vCard>";
        let el = parse_element(xml.as_bytes(), &NsBindings::empty(), &ParseLimits::default()).unwrap();
        let p = profile_of(&el);
        assert_eq!(p.nick.as_deref(), Some("Jules"));
        assert_eq!(p.photo_url.as_deref(), Some("https://example.com/j.png"));
        // sha1("hello")
        assert_eq!(
            p.photo_hash.as_deref(),
            Some("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")
        );
    }
}
