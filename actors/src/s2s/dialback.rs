//! Server Dialback (XEP-0220) with the key of XEP-0185: the key, its
//! constant-time check, and the `<db:result/>` and `<db:verify/>` elements,
//! parsed into [`Dialback`] and written back as text.
//!
//! The four steps, for an initiating server `capulet.example` and a
//! receiving server `montague.example`:
//!
//! 1. The initiating server sends `<db:result from='capulet.example'
//!    to='montague.example'>KEY</db:result>` on its outbound stream, KEY
//!    being [`key`] over the id of the receiving server's latest header.
//! 2. The receiving server asks the authoritative server of
//!    `capulet.example`, on a connection of its own: `<db:verify
//!    from='montague.example' to='capulet.example' id='ID'>KEY</db:verify>`.
//! 3. The authoritative server recomputes the key from its secret and
//!    answers statelessly ([`answer_verify`]): `type='valid'` or
//!    `'invalid'`, `from` and `to` swapped.
//! 4. The receiving server relays the verdict on the first stream:
//!    `<db:result from='montague.example' to='capulet.example'
//!    type='valid'/>`.
//!
//! Either answer may instead be `type='error'` with a stanza error
//! condition (XEP-0220 §2.5), which is not fatal to the stream.
//!
//! The elements are written as literal text with the `db:` prefix, not
//! with [`Element::write_to`]: the prefix is the one the stream header
//! declares (`xmlns:db='jabber:server:dialback'`), and some peers accept
//! no other (XEP-0220 §2.4.1). What remains to be built here (the
//! verifier's table of pending requests, its caps and timeouts) is
//! described in the [module documentation](super).

use std::fmt;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::StanzaCondition;
use crate::ns;
use crate::xml::{escape_attr, escape_text, Element};

/// The dialback key of XEP-0185 §3:
/// `hex(HMAC-SHA256(hex(SHA-256(secret)), receiving ' ' originating ' ' stream_id))`,
/// in lowercase hex. The HMAC's key is the *hex text* of the secret's
/// digest, not the digest itself.
///
/// `receiving` is the domain the key is presented to (the `to` of a
/// `<db:result/>` request), `originating` the domain that vouches for it
/// (its `from`), and `stream_id` the id of the receiving server's latest
/// stream header (after TLS).
pub fn key(secret: &[u8], receiving: &str, originating: &str, stream_id: &str) -> String {
    let hmac_key = hex(&Sha256::digest(secret));
    // HMAC takes keys of any length, so this never fails; if it did, the
    // empty key matches nothing (`keys_match`): failing closed.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(hmac_key.as_bytes()) else {
        return String::new();
    };
    mac.update(receiving.as_bytes());
    mac.update(b" ");
    mac.update(originating.as_bytes());
    mac.update(b" ");
    mac.update(stream_id.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Compares a key received with the one expected, in time independent of
/// where they differ. An empty expected key matches nothing.
pub fn keys_match(expected: &str, received: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(received.as_bytes()))
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Step 3, the authoritative server's part: the answer to a `<db:verify/>`
/// request naming one of our domains in its `to`, whose dialback secret
/// is `secret`. Stateless: the key is recomputed from the request and
/// compared in constant time. `None` for anything but a verify request
/// (answers that already carry a `type` are ignored, as Prosody does).
///
/// Whether `to` is hosted at all is the caller's question: if not, the
/// answer is `request.answer(Body::Error(StanzaCondition::ItemNotFound))`.
pub fn answer_verify(secret: &[u8], request: &Dialback) -> Option<Dialback> {
    let Dialback::Verify {
        from,
        to,
        id,
        body: Body::Key(received),
    } = request
    else {
        return None;
    };
    // The receiving server asks (`from`) about a key our domain (`to`) made
    // for it on the stream it gave the id.
    let expected = key(secret, from, to, id);
    let verdict = if keys_match(&expected, received) {
        Body::Valid
    } else {
        Body::Invalid
    };
    Some(request.answer(verdict))
}

/// What a dialback element carries besides its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A request (no `type`): the key, as text.
    Key(String),
    /// `type='valid'`: the key checked out.
    Valid,
    /// `type='invalid'`: it did not. On a `<db:result/>`, the stream is
    /// then closed by the receiving server.
    Invalid,
    /// `type='error'`: the key could not be checked (XEP-0220 §2.5). Not
    /// fatal to the stream. A condition that is missing or unknown reads
    /// as `undefined-condition`.
    Error(StanzaCondition),
}

impl Body {
    /// True for a request, false for an answer.
    pub fn is_key(&self) -> bool {
        matches!(self, Body::Key(_))
    }

    /// The stanza error for the stanzas an initiating server holds for the
    /// domain pair, when this is the answer to its `<db:result/>`:
    /// `invalid` gives `<internal-server-error/>` (XEP-0220 §2.1.1), an
    /// error gives `<remote-server-timeout/>` (§2.5). `None`: nothing to
    /// bounce.
    pub fn bounce_condition(&self) -> Option<StanzaCondition> {
        match self {
            Body::Key(_) | Body::Valid => None,
            Body::Invalid => Some(StanzaCondition::InternalServerError),
            Body::Error(_) => Some(StanzaCondition::RemoteServerTimeout),
        }
    }

    fn type_attr(&self) -> Option<&'static str> {
        match self {
            Body::Key(_) => None,
            Body::Valid => Some("valid"),
            Body::Invalid => Some("invalid"),
            Body::Error(_) => Some("error"),
        }
    }
}

/// A `<db:result/>` or `<db:verify/>` element. The domains are kept as
/// sent: whether they are hosted, authenticated or well-formed is for the
/// stream to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dialback {
    /// `<db:result/>`: the request of step 1, or the answer of step 4.
    Result { from: String, to: String, body: Body },
    /// `<db:verify/>`: the request of step 2, or the answer of step 3. `id`
    /// is the id of the receiving server's stream that the key was
    /// presented on.
    Verify {
        from: String,
        to: String,
        id: String,
        body: Body,
    },
}

/// Why an element is no dialback element one can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DialbackParseError {
    #[error("not a dialback element")]
    NotDialback,
    #[error("<db:{element}/> has no '{attr}' attribute")]
    MissingAttribute { element: &'static str, attr: &'static str },
    #[error("<db:{element}/> with an unknown type {value:?}")]
    UnknownType { element: &'static str, value: String },
    #[error("<db:{element}/> request without a key")]
    NoKey { element: &'static str },
}

impl Dialback {
    /// Step 1: the initiating server asks to send from `from` to `to`.
    pub fn result_request(from: impl Into<String>, to: impl Into<String>, key: impl Into<String>) -> Dialback {
        Dialback::Result {
            from: from.into(),
            to: to.into(),
            body: Body::Key(key.into()),
        }
    }

    /// Step 2: the receiving server (`from`) asks the authoritative server
    /// of `to` about a key presented on its stream `id`.
    pub fn verify_request(
        from: impl Into<String>,
        to: impl Into<String>,
        id: impl Into<String>,
        key: impl Into<String>,
    ) -> Dialback {
        Dialback::Verify {
            from: from.into(),
            to: to.into(),
            id: id.into(),
            body: Body::Key(key.into()),
        }
    }

    /// The answer to this element: the same kind, `from` and `to` swapped,
    /// `id` kept, with `body` (steps 3 and 4, and errors).
    pub fn answer(&self, body: Body) -> Dialback {
        match self {
            Dialback::Result { from, to, .. } => Dialback::Result {
                from: to.clone(),
                to: from.clone(),
                body,
            },
            Dialback::Verify { from, to, id, .. } => Dialback::Verify {
                from: to.clone(),
                to: from.clone(),
                id: id.clone(),
                body,
            },
        }
    }

    pub fn from(&self) -> &str {
        match self {
            Dialback::Result { from, .. } | Dialback::Verify { from, .. } => from,
        }
    }

    pub fn to(&self) -> &str {
        match self {
            Dialback::Result { to, .. } | Dialback::Verify { to, .. } => to,
        }
    }

    /// The stream id of a `<db:verify/>`; `None` for a `<db:result/>`.
    pub fn id(&self) -> Option<&str> {
        match self {
            Dialback::Result { .. } => None,
            Dialback::Verify { id, .. } => Some(id),
        }
    }

    pub fn body(&self) -> &Body {
        match self {
            Dialback::Result { body, .. } | Dialback::Verify { body, .. } => body,
        }
    }

    /// The element's local name: `result` or `verify`.
    pub fn name(&self) -> &'static str {
        match self {
            Dialback::Result { .. } => "result",
            Dialback::Verify { .. } => "verify",
        }
    }

    /// True for `<db:result/>` and `<db:verify/>`, in the dialback
    /// namespace whatever their prefix.
    pub fn is_dialback(el: &Element) -> bool {
        el.ns() == ns::DIALBACK && matches!(el.name(), "result" | "verify")
    }

    /// Reads a `<db:result/>` or `<db:verify/>`, as the codec framed it
    /// (the prefix resolved through the stream header's bindings).
    ///
    /// A request's key is its text, white space around it dropped (the
    /// XEP's examples wrap it in new lines). An error's condition is the
    /// first child of its `<error/>` in the stanza errors' namespace;
    /// missing or unknown, it reads as `undefined-condition`.
    pub fn parse(el: &Element) -> Result<Dialback, DialbackParseError> {
        if el.ns() != ns::DIALBACK {
            return Err(DialbackParseError::NotDialback);
        }
        let element = match el.name() {
            "result" => "result",
            "verify" => "verify",
            _ => return Err(DialbackParseError::NotDialback),
        };
        let required = |attr: &'static str| match el.attr(attr) {
            Some(v) if !v.is_empty() => Ok(v.to_owned()),
            _ => Err(DialbackParseError::MissingAttribute { element, attr }),
        };
        let from = required("from")?;
        let to = required("to")?;
        let body = match el.attr("type") {
            None => {
                let text = el.text();
                let key = text.trim();
                if key.is_empty() {
                    return Err(DialbackParseError::NoKey { element });
                }
                Body::Key(key.to_owned())
            }
            Some("valid") => Body::Valid,
            Some("invalid") => Body::Invalid,
            Some("error") => Body::Error(error_condition(el)),
            Some(other) => {
                return Err(DialbackParseError::UnknownType {
                    element,
                    value: other.to_owned(),
                })
            }
        };
        if element == "result" {
            return Ok(Dialback::Result { from, to, body });
        }
        let id = required("id")?;
        Ok(Dialback::Verify { from, to, id, body })
    }

    /// Writes the element as text with the `db:` prefix, for a stream whose
    /// header declares `xmlns:db='jabber:server:dialback'`. An error's
    /// `<error/>` is in the stream's default namespace, as XEP-0220 §2.5
    /// has it, and always of type `cancel`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let name = self.name();
        out.extend_from_slice(b"<db:");
        out.extend_from_slice(name.as_bytes());
        write_attr(out, "from", self.from());
        write_attr(out, "to", self.to());
        if let Some(id) = self.id() {
            write_attr(out, "id", id);
        }
        let body = self.body();
        if let Some(kind) = body.type_attr() {
            write_attr(out, "type", kind);
        }
        match body {
            Body::Valid | Body::Invalid => {
                out.extend_from_slice(b"/>");
                return;
            }
            Body::Key(key) => {
                out.push(b'>');
                out.extend_from_slice(escape_text(key).as_bytes());
            }
            Body::Error(condition) => {
                out.extend_from_slice(b"><error type='cancel'><");
                out.extend_from_slice(condition.as_str().as_bytes());
                out.extend_from_slice(b" xmlns='");
                out.extend_from_slice(ns::STANZAS_ERRORS.as_bytes());
                out.extend_from_slice(b"'/></error>");
            }
        }
        out.extend_from_slice(b"</db:");
        out.extend_from_slice(name.as_bytes());
        out.push(b'>');
    }

    /// The element as bytes to queue on a stream.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(160);
        self.write_to(&mut out);
        Bytes::from(out)
    }
}

/// The text [`Dialback::write_to`] writes.
impl fmt::Display for Dialback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(160);
        self.write_to(&mut out);
        // The writer only ever writes UTF-8.
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

fn write_attr(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"='");
    out.extend_from_slice(escape_attr(value).as_bytes());
    out.push(b'\'');
}

/// The condition of a `type='error'` element.
fn error_condition(el: &Element) -> StanzaCondition {
    el.children()
        .find(|c| c.name() == "error")
        .and_then(|e| {
            e.children()
                .find(|c| c.ns() == ns::STANZAS_ERRORS && c.name() != "text")
        })
        .and_then(|c| StanzaCondition::from_name(c.name()))
        .unwrap_or(StanzaCondition::UndefinedCondition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{parse_element, NsBindings, ParseLimits};

    const SECRET: &[u8] = b"s3cr3tf0rd14lb4ck";
    const EXAMPLE_1: &str = "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3";

    /// Parses as the codec would on a server stream whose header declared
    /// `xmlns='jabber:server' xmlns:db='jabber:server:dialback'`.
    fn element(xml: &str) -> Element {
        let mut bindings = NsBindings::empty();
        bindings.bind(None, ns::SERVER);
        bindings.bind(Some("stream"), ns::STREAM);
        bindings.bind(Some("db"), ns::DIALBACK);
        parse_element(xml.as_bytes(), &bindings, &ParseLimits::default()).unwrap()
    }

    fn parse(xml: &str) -> Result<Dialback, DialbackParseError> {
        Dialback::parse(&element(xml))
    }

    #[test]
    fn the_key_is_xep_0220_example_1() {
        assert_eq!(
            key(SECRET, "montague.example", "capulet.example", "D60000229F"),
            EXAMPLE_1
        );
        // The example of §2.2.2, the other way round.
        assert_eq!(
            key(b"d14lb4ck43v3r", "capulet.example", "montague.example", "417GAF25"),
            "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d"
        );
        // Every input counts, and the order of the domains too.
        assert_ne!(
            key(SECRET, "capulet.example", "montague.example", "D60000229F"),
            EXAMPLE_1
        );
        assert_ne!(
            key(SECRET, "montague.example", "capulet.example", "D60000229G"),
            EXAMPLE_1
        );
        assert_ne!(
            key(b"another", "montague.example", "capulet.example", "D60000229F"),
            EXAMPLE_1
        );
    }

    #[test]
    fn keys_are_compared_exactly() {
        assert!(keys_match(EXAMPLE_1, EXAMPLE_1));
        assert!(!keys_match(EXAMPLE_1, &EXAMPLE_1.to_uppercase()));
        assert!(!keys_match(EXAMPLE_1, &EXAMPLE_1[..63]));
        assert!(!keys_match(EXAMPLE_1, ""));
        assert!(!keys_match("", ""));
    }

    #[test]
    fn the_four_steps_are_written_with_the_db_prefix() {
        let step1 = Dialback::result_request("capulet.example", "montague.example", EXAMPLE_1);
        assert_eq!(
            step1.to_string(),
            format!("<db:result from='capulet.example' to='montague.example'>{EXAMPLE_1}</db:result>")
        );
        let step2 = Dialback::verify_request("montague.example", "capulet.example", "D60000229F", EXAMPLE_1);
        assert_eq!(
            step2.to_string(),
            format!("<db:verify from='montague.example' to='capulet.example' id='D60000229F'>{EXAMPLE_1}</db:verify>")
        );
        assert_eq!(
            step2.answer(Body::Valid).to_string(),
            "<db:verify from='capulet.example' to='montague.example' id='D60000229F' type='valid'/>"
        );
        assert_eq!(
            step1.answer(Body::Invalid).to_string(),
            "<db:result from='montague.example' to='capulet.example' type='invalid'/>"
        );
        assert_eq!(
            step1.answer(Body::Error(StanzaCondition::ItemNotFound)).to_string(),
            "<db:result from='montague.example' to='capulet.example' type='error'>\
             <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>\
             </db:result>"
        );
        assert_eq!(&step1.to_bytes()[..], step1.to_string().as_bytes());
    }

    #[test]
    fn every_form_survives_a_round_trip() {
        let request = Dialback::verify_request("a.test", "b.test", "id-1", "abc123");
        let result = Dialback::result_request("a.test", "b.test", "abc123");
        let mut all = vec![request.clone(), result.clone()];
        for body in [Body::Valid, Body::Invalid] {
            all.push(request.answer(body.clone()));
            all.push(result.answer(body));
        }
        // The conditions of XEP-0220 §2.5 (and its 1.1 addition).
        for condition in [
            StanzaCondition::ItemNotFound,
            StanzaCondition::RemoteConnectionFailed,
            StanzaCondition::RemoteServerNotFound,
            StanzaCondition::RemoteServerTimeout,
            StanzaCondition::PolicyViolation,
            StanzaCondition::NotAuthorized,
            StanzaCondition::Forbidden,
            StanzaCondition::NotAcceptable,
            StanzaCondition::ResourceConstraint,
        ] {
            all.push(request.answer(Body::Error(condition)));
            all.push(result.answer(Body::Error(condition)));
        }
        // What must be escaped is.
        all.push(Dialback::verify_request("a'b.test", "c&d.test", "<id\t>", "k&<>"));
        for db in all {
            let text = db.to_string();
            assert_eq!(parse(&text), Ok(db), "{text}");
        }
    }

    #[test]
    fn the_xep_examples_parse() {
        let step1 = parse(&format!(
            "<db:result\n          from='capulet.example'\n          to='montague.example'>\n        \
             {EXAMPLE_1}\n      </db:result>"
        ))
        .unwrap();
        assert_eq!(
            step1,
            Dialback::result_request("capulet.example", "montague.example", EXAMPLE_1)
        );
        assert!(step1.body().is_key());
        assert_eq!(step1.id(), None);

        let error = parse(
            "<db:verify from='montague.example' id='417GAF25' to='capulet.example' type='error'>\n\
             <error type='cancel'>\n<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\n</error>\n\
             </db:verify>",
        )
        .unwrap();
        assert_eq!(error.from(), "montague.example");
        assert_eq!(error.to(), "capulet.example");
        assert_eq!(error.id(), Some("417GAF25"));
        assert_eq!(error.body(), &Body::Error(StanzaCondition::ItemNotFound));

        // Any prefix bound to the namespace will do, and a text in the
        // error is no condition.
        let other_prefix = parse(
            "<dbk:result xmlns:dbk='jabber:server:dialback' from='b.test' to='a.test' type='error'>\
             <error type='cancel'><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>no</text>\
             <remote-connection-failed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></dbk:result>",
        )
        .unwrap();
        assert_eq!(
            other_prefix.body(),
            &Body::Error(StanzaCondition::RemoteConnectionFailed)
        );
    }

    #[test]
    fn malformed_elements_are_refused_with_the_reason() {
        use DialbackParseError::*;
        let missing = |element: &'static str, attr: &'static str| -> Result<Dialback, DialbackParseError> {
            Err(MissingAttribute { element, attr })
        };
        assert_eq!(parse("<db:result to='b.test'>k</db:result>"), missing("result", "from"));
        assert_eq!(parse("<db:result from='a.test'>k</db:result>"), missing("result", "to"));
        assert_eq!(
            parse("<db:result from='' to='b.test'>k</db:result>"),
            missing("result", "from")
        );
        assert_eq!(
            parse("<db:verify from='a.test' to='b.test'>k</db:verify>"),
            missing("verify", "id")
        );
        assert_eq!(
            parse("<db:verify from='a.test' to='b.test' type='valid'/>"),
            missing("verify", "id")
        );
        assert_eq!(
            parse("<db:result from='a.test' to='b.test'/>"),
            Err(NoKey { element: "result" })
        );
        assert_eq!(
            parse("<db:verify from='a.test' to='b.test' id='x'>  \n </db:verify>"),
            Err(NoKey { element: "verify" })
        );
        assert_eq!(
            parse("<db:result from='a.test' to='b.test' type='maybe'/>"),
            Err(UnknownType {
                element: "result",
                value: "maybe".into()
            })
        );
        assert_eq!(parse("<result from='a.test' to='b.test'>k</result>"), Err(NotDialback));
        assert_eq!(
            parse("<db:proceed from='a.test' to='b.test'>k</db:proceed>"),
            Err(NotDialback)
        );
        assert!(!Dialback::is_dialback(&element(
            "<result from='a.test' to='b.test'>k</result>"
        )));
        assert!(Dialback::is_dialback(&element("<db:verify/>")));
        let said = MissingAttribute {
            element: "verify",
            attr: "id",
        }
        .to_string();
        assert_eq!(said, "<db:verify/> has no 'id' attribute");
    }

    #[test]
    fn errors_without_a_known_condition_are_still_errors() {
        for inner in [
            "",
            "<error type='cancel'/>",
            "<error type='cancel'><no-such-thing xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            "<error type='cancel'><forbidden xmlns='urn:example'/></error>",
        ] {
            let db = parse(&format!(
                "<db:result from='b.test' to='a.test' type='error'>{inner}</db:result>"
            ))
            .unwrap();
            assert_eq!(db.body(), &Body::Error(StanzaCondition::UndefinedCondition), "{inner}");
        }
        // An answer's text is no key.
        let valid = parse("<db:result from='b.test' to='a.test' type='valid'>stray</db:result>").unwrap();
        assert_eq!(valid.body(), &Body::Valid);
    }

    #[test]
    fn the_authoritative_server_answers_verify_requests_statelessly() {
        let secret = b"d14lb4ck43v3r";
        let good = Dialback::verify_request(
            "capulet.example",
            "montague.example",
            "417GAF25",
            "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d",
        );
        assert_eq!(
            answer_verify(secret, &good).unwrap().to_string(),
            "<db:verify from='montague.example' to='capulet.example' id='417GAF25' type='valid'/>"
        );
        let other_stream = Dialback::verify_request(
            "capulet.example",
            "montague.example",
            "417GAF26",
            "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d",
        );
        assert_eq!(answer_verify(secret, &other_stream).unwrap().body(), &Body::Invalid);
        assert_eq!(answer_verify(b"wrong", &good).unwrap().body(), &Body::Invalid);
        // Not a request, or not a verify: nothing to answer.
        assert_eq!(answer_verify(secret, &good.answer(Body::Valid)), None);
        let result = Dialback::result_request("capulet.example", "montague.example", "k");
        assert_eq!(answer_verify(secret, &result), None);
    }

    #[test]
    fn answers_say_what_to_bounce_with() {
        assert_eq!(Body::Valid.bounce_condition(), None);
        assert_eq!(Body::Key("k".into()).bounce_condition(), None);
        assert_eq!(
            Body::Invalid.bounce_condition(),
            Some(StanzaCondition::InternalServerError)
        );
        assert_eq!(
            Body::Error(StanzaCondition::ItemNotFound).bounce_condition(),
            Some(StanzaCondition::RemoteServerTimeout)
        );
    }
}
