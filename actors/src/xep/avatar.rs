//! XEP-0084 User Avatar's two PEP nodes, kept in step with the vCard's
//! PHOTO (XEP-0398, as Prosody's `mod_vcard_legacy` does): a vCard set
//! with a photo publishes its data and metadata, and a client's metadata
//! naming published data becomes the vCard's photo. Each direction writes
//! the other's storage directly, so nothing is converted back.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::jid::BareJid;
use crate::ns;
use crate::router::Router;
use crate::storage::{Profile, Storage, StorageError};
use crate::xep::pubsub::{Field, NodeConfigPatch};
use crate::xep::vcard;
use crate::xml::Element;

/// Advertised on accounts (XEP-0398 §3).
pub const CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

/// The SHA-1 of `bytes` in hex: XEP-0084's item id, XEP-0153's hash.
fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// XEP-0398 §4.1: publishes the photo of the vCard just stored (data
/// first, then metadata naming it), on nodes created `open` (as defaults
/// only: a client's own configuration stands). Without a photo where
/// there was one (`had_photo`), empty metadata says so (XEP-0084 §4.5).
/// Failures are logged: the vCard is stored either way.
pub(crate) async fn from_vcard(router: &Router, owner: &BareJid, card: &Element, had_photo: bool) {
    let defaults = || Some(NodeConfigPatch::default().with(Field::AccessModel, "open"));
    let photo = card.get_child("PHOTO", vcard::NS);
    let text = |name: &str| {
        photo
            .and_then(|p| p.get_child(name, vcard::NS))
            .map(|e| e.text().split_whitespace().collect::<String>())
            .filter(|t| !t.is_empty())
    };
    let binval = text("BINVAL");
    let bytes = binval.as_ref().and_then(|b| B64.decode(b).ok());
    let publish = move |node: &'static str, id: String, payload: Element| {
        super::pep::publish_as_server(router, owner, node, Some(id), payload, defaults())
    };
    let outcome = match (binval, bytes) {
        (Some(b64), Some(bytes)) => {
            let id = sha1_hex(&bytes);
            let info = Element::new("info", ns::AVATAR_METADATA)
                .with_attr("bytes", bytes.len().to_string())
                .with_attr("id", id.as_str())
                .with_attr("type", text("TYPE").unwrap_or_else(|| "image/png".to_owned()));
            let data = Element::new("data", ns::AVATAR_DATA).with_text(b64);
            match publish(ns::AVATAR_DATA, id.clone(), data).await {
                Ok(_) => {
                    let metadata = Element::new("metadata", ns::AVATAR_METADATA).with_child(info);
                    publish(ns::AVATAR_METADATA, id, metadata).await
                }
                Err(e) => Err(e),
            }
        }
        _ if had_photo => {
            let metadata = Element::new("metadata", ns::AVATAR_METADATA);
            publish(ns::AVATAR_METADATA, "current".to_owned(), metadata).await
        }
        _ => return,
    };
    if let Err(e) = outcome {
        log::warn!("{owner}: the vCard's photo is not published as an avatar: {e}");
    }
}

/// XEP-0398 §4.2: a client's avatar metadata, published and committed,
/// made the vCard's PHOTO: the first `<info/>` without `url` naming an
/// item of the data node, or no PHOTO for empty metadata. The new photo
/// hash (`Some(None)`: none), or `None` when nothing changed.
pub(crate) async fn to_vcard(
    storage: &dyn Storage,
    owner: &BareJid,
    metadata: &Element,
) -> Result<Option<Option<String>>, StorageError> {
    if !metadata.is("metadata", ns::AVATAR_METADATA) {
        return Ok(None);
    }
    let mut infos = metadata
        .children()
        .filter(|i| i.is("info", ns::AVATAR_METADATA))
        .peekable();
    let empty = infos.peek().is_none();
    let inline = infos.find(|i| i.attr("url").is_none()).and_then(|i| {
        let id = i.attr("id")?;
        Some((id.to_owned(), i.attr("type").unwrap_or("image/png").to_owned()))
    });
    let photo = match inline {
        Some((id, kind)) => {
            let data = storage
                .pep_items(owner, ns::AVATAR_DATA, Some(vec![id]), Some(1))
                .await?;
            let payload = data.first().and_then(|d| super::pep::parse_stored(&d.xml));
            match payload.filter(|p| p.is("data", ns::AVATAR_DATA)) {
                Some(data) => Some((kind, data.text().split_whitespace().collect::<String>())),
                // Not published here: nothing to convert.
                None => return Ok(None),
            }
        }
        None if empty => None,
        // Only images elsewhere (`url`): the vCard keeps its own.
        None => return Ok(None),
    };
    let stored = storage.vcard(owner).await?;
    let mut card = stored
        .and_then(|xml| super::pep::parse_stored(&xml))
        .filter(|c| c.is("vCard", vcard::NS))
        .unwrap_or_else(|| Element::new("vCard", vcard::NS));
    card.remove_children(|c| c.is("PHOTO", vcard::NS));
    if let Some((kind, b64)) = photo {
        let el = Element::new("PHOTO", vcard::NS)
            .with_child(Element::new("TYPE", vcard::NS).with_text(kind))
            .with_child(Element::new("BINVAL", vcard::NS).with_text(b64));
        card.push_child(el);
    }
    // The nickname and photo URL stay the profile's (they may not come
    // from this vCard: XEP-0172, `shoal user set`).
    let hash = vcard::profile_of(&card).photo_hash;
    let profile = Profile {
        photo_hash: hash.clone(),
        ..storage.profile(owner).await?
    };
    storage.set_vcard(owner, card.to_string(), profile).await?;
    Ok(Some(hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStorage, StoredItem, StoredNode};

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        futures_util::FutureExt::now_or_never(f).expect("memory storage is ready at once")
    }

    #[test]
    fn client_metadata_becomes_the_vcard_photo() {
        let storage = MemoryStorage::default();
        let juliet = BareJid::parse("juliet@localhost").unwrap();
        let creds = crate::sasl::Credentials::derive("pw", 4096);
        assert!(run(storage.create_user(&juliet, creds)).unwrap());
        let card = "<vCard xmlns='vcard-temp'><FN>Juliet</FN><PHOTO><EXTVAL>https://x/y.png</EXTVAL></PHOTO></vCard>";
        let profile = Profile {
            nick: Some("Jules".into()),
            ..Profile::default()
        };
        run(storage.set_vcard(&juliet, card.into(), profile)).unwrap();
        let data = StoredItem {
            id: "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d".into(),
            xml: "<data xmlns='urn:xmpp:avatar:data'>aGVsbG8=</data>".into(),
            publisher: None,
            published_ms: 0,
        };
        let node = StoredNode {
            node: ns::AVATAR_DATA.into(),
            config: Default::default(),
            whitelist: Vec::new(),
        };
        run(storage.pep_publish(&juliet, ns::AVATAR_DATA, Some(node), data, 1)).unwrap();
        let metadata = crate::xml::client_element(
            "<metadata xmlns='urn:xmpp:avatar:metadata'>\
             <info bytes='5' id='aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d' type='image/png'/></metadata>",
        );
        let hash = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d".to_owned();
        assert_eq!(
            run(to_vcard(&storage, &juliet, &metadata)).unwrap(),
            Some(Some(hash.clone()))
        );
        assert_eq!(
            run(storage.vcard(&juliet)).unwrap().unwrap(),
            "<vCard xmlns='vcard-temp'><FN>Juliet</FN><PHOTO><TYPE>image/png</TYPE>\
             <BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard>"
        );
        let profile = run(storage.profile(&juliet)).unwrap();
        assert_eq!(profile.photo_hash, Some(hash));
        assert_eq!(profile.nick.as_deref(), Some("Jules"), "the nickname stays");
        // Empty metadata: no photo.
        let empty = crate::xml::client_element("<metadata xmlns='urn:xmpp:avatar:metadata'/>");
        assert_eq!(run(to_vcard(&storage, &juliet, &empty)).unwrap(), Some(None));
        assert_eq!(
            run(storage.vcard(&juliet)).unwrap().unwrap(),
            "<vCard xmlns='vcard-temp'><FN>Juliet</FN></vCard>"
        );
        // An image elsewhere, or data not published here: unchanged.
        let elsewhere = crate::xml::client_element(
            "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='5' id='ab' type='image/png' url='https://x/a.png'/></metadata>",
        );
        assert_eq!(run(to_vcard(&storage, &juliet, &elsewhere)).unwrap(), None);
        let unknown = crate::xml::client_element(
            "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='5' id='ab' type='image/png'/></metadata>",
        );
        assert_eq!(run(to_vcard(&storage, &juliet, &unknown)).unwrap(), None);
    }
}
