//! Typed stanzas (RFC 6120 §8): the three kinds with their types and
//! addresses parsed once. The element is kept whole, so extensions pass
//! through untouched; the typed fields and its attributes change together.

use bytes::Bytes;

use crate::error::{StanzaCondition, StanzaError, StreamCondition, StreamError};
use crate::jid::Jid;
use crate::ns;
use crate::xml::Element;

macro_rules! types {
    ($(#[$m:meta])* $name:ident, default $default:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $wire),+ }
            }
            fn parse(t: Option<&str>) -> Option<Self> {
                match t {
                    None => Some(Self::$default),
                    $(Some($wire) => Some(Self::$variant),)+
                    Some(_) => None,
                }
            }
        }
    };
}

types!(
    /// RFC 6121 §5.2.2.
    MessageType, default Normal {
        Normal => "normal", Chat => "chat", Groupchat => "groupchat",
        Headline => "headline", Error => "error",
    }
);
types!(
    /// RFC 6121 §4.7.1; no type attribute means available.
    PresenceType, default Available {
        Available => "available", Unavailable => "unavailable", Subscribe => "subscribe",
        Subscribed => "subscribed", Unsubscribe => "unsubscribe",
        Unsubscribed => "unsubscribed", Probe => "probe", Error => "error",
    }
);
types!(
    /// RFC 6120 §8.2.3; the attribute is required.
    IqType, default Get {
        Get => "get", Set => "set", Result => "result", Error => "error",
    }
);

impl PresenceType {
    /// `subscribe`, `subscribed`, `unsubscribe` or `unsubscribed` (RFC 6121 §3).
    pub fn is_subscription(self) -> bool {
        matches!(
            self,
            PresenceType::Subscribe | PresenceType::Subscribed | PresenceType::Unsubscribe | PresenceType::Unsubscribed
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Message(MessageType),
    Presence(PresenceType),
    Iq(IqType),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stanza {
    pub kind: Kind,
    from: Option<Jid>,
    to: Option<Jid>,
    el: Element,
}

/// Why an element is not a stanza we can route.
#[derive(Debug)]
pub enum StanzaParseError {
    /// Not a stanza at all: a stream error.
    Stream(StreamError),
    /// A stanza with bad content: answer it with this error.
    Stanza(StanzaError, Box<Element>),
}

impl Stanza {
    pub fn from_element(el: Element) -> Result<Stanza, StanzaParseError> {
        if el.ns() != ns::CLIENT {
            return Err(StanzaParseError::Stream(StreamError::new(
                StreamCondition::UnsupportedStanzaType,
            )));
        }
        let t = el.attr("type");
        let kind = match el.name() {
            "message" => MessageType::parse(t).map(Kind::Message),
            "presence" => match t {
                // "available" is not a wire value: only its absence is.
                Some("available") => None,
                _ => PresenceType::parse(t).map(Kind::Presence),
            },
            "iq" if t.is_some() => IqType::parse(t).map(Kind::Iq),
            "iq" => None,
            _ => {
                return Err(StanzaParseError::Stream(StreamError::new(
                    StreamCondition::UnsupportedStanzaType,
                )))
            }
        };
        let bad = |text: &'static str, el: Element| {
            StanzaParseError::Stanza(StanzaError::with_text(StanzaCondition::BadRequest, text), Box::new(el))
        };
        let Some(kind) = kind else {
            return Err(bad("invalid type attribute", el));
        };
        if let Kind::Iq(t) = kind {
            if el.attr("id").is_none() {
                return Err(bad("an IQ needs an id", el));
            }
            if matches!(t, IqType::Get | IqType::Set) && el.children().count() != 1 {
                return Err(bad("an IQ get or set has exactly one child", el));
            }
        }
        let jid = |name: &str| el.attr(name).map(Jid::parse).transpose();
        let to = match jid("to") {
            Ok(to) => to,
            Err(e) => return Err(StanzaParseError::Stanza(e.into(), Box::new(el))),
        };
        // A bad 'from' from a client is replaced by stamping; elsewhere it is
        // an addressing error.
        let from = jid("from").ok().flatten();
        Ok(Stanza { kind, from, to, el })
    }

    /// A new stanza around an element built by the server.
    pub fn new(kind: Kind, from: Option<Jid>, to: Option<Jid>, mut el: Element) -> Stanza {
        let t = match kind {
            Kind::Message(MessageType::Normal) | Kind::Presence(PresenceType::Available) => None,
            Kind::Message(t) => Some(t.as_str()),
            Kind::Presence(t) => Some(t.as_str()),
            Kind::Iq(t) => Some(t.as_str()),
        };
        match t {
            Some(t) => el.set_attr("type", t),
            None => {
                el.remove_attr("type");
            }
        }
        let mut s = Stanza {
            kind,
            from: None,
            to: None,
            el,
        };
        s.set_from(from);
        s.set_to(to);
        s
    }

    /// An IQ result (`payload` may be empty) answering this IQ.
    pub fn iq_result(&self, payload: Option<Element>) -> Stanza {
        let mut el = Element::new("iq", ns::CLIENT);
        if let Some(id) = self.id() {
            el.set_attr("id", id);
        }
        if let Some(p) = payload {
            el.push_child(p);
        }
        Stanza::new(Kind::Iq(IqType::Result), self.to.clone(), self.from.clone(), el)
    }

    /// The error reply to this stanza, or `None` for an error stanza: errors
    /// are never answered with errors (RFC 6120 §8.3.1).
    pub fn error_reply(&self, err: &StanzaError) -> Option<Stanza> {
        let kind = match self.kind {
            Kind::Message(MessageType::Error)
            | Kind::Presence(PresenceType::Error)
            | Kind::Iq(IqType::Error | IqType::Result) => return None,
            Kind::Message(_) => Kind::Message(MessageType::Error),
            Kind::Presence(_) => Kind::Presence(PresenceType::Error),
            Kind::Iq(_) => Kind::Iq(IqType::Error),
        };
        let mut el = Element::new(self.el.name(), ns::CLIENT);
        if let Some(id) = self.id() {
            el.set_attr("id", id);
        }
        // Returning the payload lets the sender see what failed (§8.3.1).
        if matches!(kind, Kind::Iq(_)) {
            if let Some(p) = self.payload() {
                el.push_child(p.clone());
            }
        }
        el.push_child(err.to_element());
        Some(Stanza::new(kind, self.to.clone(), self.from.clone(), el))
    }

    pub fn from(&self) -> Option<&Jid> {
        self.from.as_ref()
    }

    pub fn to(&self) -> Option<&Jid> {
        self.to.as_ref()
    }

    pub fn set_from(&mut self, from: Option<Jid>) {
        match &from {
            Some(j) => self.el.set_attr("from", j.as_str()),
            None => {
                self.el.remove_attr("from");
            }
        }
        self.from = from;
    }

    pub fn set_to(&mut self, to: Option<Jid>) {
        match &to {
            Some(j) => self.el.set_attr("to", j.as_str()),
            None => {
                self.el.remove_attr("to");
            }
        }
        self.to = to;
    }

    pub fn id(&self) -> Option<&str> {
        self.el.attr("id")
    }

    pub fn element(&self) -> &Element {
        &self.el
    }

    /// Mutable access to the children; addresses and type stay typed.
    pub fn payloads_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.el.children_mut()
    }

    pub fn push_payload(&mut self, child: Element) {
        self.el.push_child(child);
    }

    /// Removes the children `pred` matches.
    pub fn remove_payloads(&mut self, pred: impl FnMut(&Element) -> bool) {
        self.el.remove_children(pred);
    }

    pub fn into_element(self) -> Element {
        self.el
    }

    /// The first child element: an IQ's query.
    pub fn payload(&self) -> Option<&Element> {
        self.el.children().next()
    }

    /// The stanza as sent on a client stream.
    /// A stanza read back from what [`Stanza::to_bytes`] (or a presence
    /// template) wrote; `None` if it does not read as one.
    pub(crate) fn reparse(bytes: &[u8]) -> Option<Stanza> {
        let limits = crate::xml::ParseLimits::default();
        let el = crate::xml::parse_element(bytes, &crate::xml::NsBindings::client(), &limits).ok()?;
        Stanza::from_element(el).ok()
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(256);
        self.el.write_to(&mut out, ns::CLIENT);
        Bytes::from(out)
    }

    pub fn is_iq_request(&self) -> bool {
        matches!(self.kind, Kind::Iq(IqType::Get | IqType::Set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{parse_element, NsBindings, ParseLimits};

    fn stanza(s: &str) -> Result<Stanza, StanzaParseError> {
        Stanza::from_element(parse_element(s.as_bytes(), &NsBindings::client(), &ParseLimits::default()).unwrap())
    }

    #[test]
    fn kinds_and_addresses() {
        let s = stanza("<message to='Romeo@Example.net' type='chat'><body>hi</body></message>").unwrap();
        assert_eq!(s.kind, Kind::Message(MessageType::Chat));
        assert_eq!(s.to().unwrap().as_str(), "romeo@example.net");
        let p = stanza("<presence/>").unwrap();
        assert_eq!(p.kind, Kind::Presence(PresenceType::Available));
    }

    #[test]
    fn rejects_bad_stanzas() {
        assert!(
            matches!(stanza("<iq type='get' id='1'/>"), Err(StanzaParseError::Stanza(e, _)) if e.condition == StanzaCondition::BadRequest)
        );
        assert!(matches!(
            stanza("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>"),
            Err(StanzaParseError::Stanza(..))
        ));
        assert!(
            matches!(stanza("<message to='a@b@c'/>"), Err(StanzaParseError::Stanza(e, _)) if e.condition == StanzaCondition::JidMalformed)
        );
        assert!(matches!(
            stanza("<presence type='available'/>"),
            Err(StanzaParseError::Stanza(..))
        ));
        assert!(
            matches!(stanza("<foo/>"), Err(StanzaParseError::Stream(e)) if e.condition == StreamCondition::UnsupportedStanzaType)
        );
    }

    #[test]
    fn error_replies_swap_addresses_and_never_answer_errors() {
        let mut s = stanza("<iq type='get' id='7' to='example.com'><q xmlns='urn:q'/></iq>").unwrap();
        s.set_from(Some(Jid::parse("a@example.com/r").unwrap()));
        let e = s
            .error_reply(&StanzaError::new(StanzaCondition::ServiceUnavailable))
            .unwrap();
        assert_eq!(
            e.element().to_xml_in(ns::CLIENT),
            "<iq id='7' type='error' from='example.com' to='a@example.com/r'><q xmlns='urn:q'/>\
             <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        );
        assert!(e.error_reply(&StanzaError::new(StanzaCondition::BadRequest)).is_none());
    }
}
