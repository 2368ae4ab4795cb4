//! XEP-0198 Stream Management (v1.6, `urn:xmpp:sm:3`): the elements on the
//! wire. Counting lives with the connection's outbound queue
//! ([`crate::c2s::Outbound`]), which sees every stanza written whoever
//! queued it; enabling, acknowledging and resuming are the c2s actor's
//! (`c2s/resume.rs`).

use bytes::Bytes;

use crate::error::StanzaCondition;
use crate::ns;
use crate::xml::Element;

pub const NS: &str = "urn:xmpp:sm:3";

/// The server's request for an acknowledgement, as written.
pub const REQUEST: &[u8] = b"<r xmlns='urn:xmpp:sm:3'/>";

/// What a client may send in the namespace.
#[derive(Debug, PartialEq, Eq)]
pub enum Nonza {
    /// `<enable/>`: `resume` asked for, and the longest wait it prefers.
    Enable { resume: bool, max: Option<u32> },
    /// `<resume/>` of session `previd`, which received `h` stanzas.
    Resume { previd: String, h: u32 },
    /// `<a h/>`: the client has handled `h` stanzas.
    Ack(u32),
    /// `<r/>`: the client asks how many of its stanzas were handled.
    Request,
}

/// Why an element in the namespace is not one of [`Nonza`]: answered with
/// `<failed/>` (a malformed enable or resume) or a stream error.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

impl Nonza {
    pub fn parse(el: &Element) -> Result<Nonza, Malformed> {
        let h = || el.attr("h").and_then(|h| h.parse::<u32>().ok()).ok_or(Malformed);
        match el.name() {
            "enable" => Ok(Nonza::Enable {
                resume: matches!(el.attr("resume"), Some("true" | "1")),
                max: el.attr("max").and_then(|m| m.parse().ok()),
            }),
            "resume" => Ok(Nonza::Resume {
                previd: el.attr("previd").filter(|p| !p.is_empty()).ok_or(Malformed)?.to_owned(),
                h: h()?,
            }),
            "a" => Ok(Nonza::Ack(h()?)),
            "r" => Ok(Nonza::Request),
            _ => Err(Malformed),
        }
    }
}

fn bytes(el: &Element) -> Bytes {
    let mut buf = Vec::with_capacity(96);
    el.write_to(&mut buf, ns::CLIENT);
    Bytes::from(buf)
}

/// `<enabled/>`, with the id and longest wait when resumable.
pub fn enabled(resume: Option<(&str, u64)>) -> Bytes {
    let mut el = Element::new("enabled", NS);
    if let Some((id, max)) = resume {
        el = el
            .with_attr("id", id)
            .with_attr("resume", "true")
            .with_attr("max", max.to_string());
    }
    bytes(&el)
}

pub fn resumed(previd: &str, h: u32) -> Bytes {
    bytes(
        &Element::new("resumed", NS)
            .with_attr("previd", previd)
            .with_attr("h", h.to_string()),
    )
}

/// `<failed/>` with a stanza error condition (§3, §5).
pub fn failed(condition: StanzaCondition) -> Bytes {
    bytes(&Element::new("failed", NS).with_child(Element::new(condition.as_str(), ns::STANZAS_ERRORS)))
}

pub fn ack(h: u32) -> Bytes {
    bytes(&Element::new("a", NS).with_attr("h", h.to_string()))
}

/// §4: the client acknowledged more than was sent. Sent as the stream's
/// error, with the close.
pub fn too_high(h: u32, sent: u32) -> Bytes {
    let error = Element::new("error", ns::STREAM)
        .with_child(Element::new("undefined-condition", ns::STREAMS_ERRORS))
        .with_child(
            Element::new("handled-count-too-high", NS)
                .with_attr("h", h.to_string())
                .with_attr("send-count", sent.to_string()),
        );
    let mut buf = Vec::new();
    error.write_to(&mut buf, ns::CLIENT);
    buf.extend_from_slice(b"</stream:stream>");
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::client_element;

    fn parse(xml: &str) -> Result<Nonza, Malformed> {
        let el = client_element(xml);
        Nonza::parse(&el)
    }

    #[test]
    fn nonzas_parse() {
        assert_eq!(
            parse("<enable xmlns='urn:xmpp:sm:3' resume='true' max='60'/>"),
            Ok(Nonza::Enable {
                resume: true,
                max: Some(60)
            })
        );
        assert_eq!(
            parse("<enable xmlns='urn:xmpp:sm:3'/>"),
            Ok(Nonza::Enable {
                resume: false,
                max: None
            })
        );
        assert_eq!(
            parse("<resume xmlns='urn:xmpp:sm:3' previd='x' h='4294967295'/>"),
            Ok(Nonza::Resume {
                previd: "x".into(),
                h: u32::MAX
            })
        );
        assert_eq!(parse("<a xmlns='urn:xmpp:sm:3' h='-1'/>"), Err(Malformed));
        assert_eq!(parse("<resume xmlns='urn:xmpp:sm:3' h='1'/>"), Err(Malformed));
        assert_eq!(parse("<r xmlns='urn:xmpp:sm:3'/>"), Ok(Nonza::Request));
    }

    #[test]
    fn elements_are_written_as_the_xep_shows_them() {
        assert_eq!(&ack(3)[..], b"<a xmlns='urn:xmpp:sm:3' h='3'/>");
        assert_eq!(
            &failed(StanzaCondition::ItemNotFound)[..],
            &b"<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"[..]
        );
    }
}
