//! Every error a peer can be told about, and the one place where Shoal's
//! failures become RFC 6120 conditions: stream errors (§4.9), stanza errors
//! (§8.3) and SASL failures (§6.5).

use std::borrow::Cow;

use crate::ns;
use crate::xml::Element;

/// An enum of names on the wire: RFC conditions here, metric label values
/// in [`crate::metrics`].
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }
        impl $name {
            /// Every value, in declaration order (`value as usize` is its index).
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            /// Its name on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $wire),+ }
            }
            /// Looks a value up by its name on the wire.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($wire => Some(Self::$variant),)+ _ => None }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_enum;

wire_enum! {
    /// RFC 6120 §4.9.3 stream error conditions.
    StreamCondition {
        BadFormat => "bad-format",
        BadNamespacePrefix => "bad-namespace-prefix",
        Conflict => "conflict",
        ConnectionTimeout => "connection-timeout",
        HostGone => "host-gone",
        HostUnknown => "host-unknown",
        ImproperAddressing => "improper-addressing",
        InternalServerError => "internal-server-error",
        InvalidFrom => "invalid-from",
        InvalidNamespace => "invalid-namespace",
        InvalidXml => "invalid-xml",
        NotAuthorized => "not-authorized",
        NotWellFormed => "not-well-formed",
        PolicyViolation => "policy-violation",
        RemoteConnectionFailed => "remote-connection-failed",
        Reset => "reset",
        ResourceConstraint => "resource-constraint",
        RestrictedXml => "restricted-xml",
        SeeOtherHost => "see-other-host",
        SystemShutdown => "system-shutdown",
        UndefinedCondition => "undefined-condition",
        UnsupportedEncoding => "unsupported-encoding",
        UnsupportedFeature => "unsupported-feature",
        UnsupportedStanzaType => "unsupported-stanza-type",
        UnsupportedVersion => "unsupported-version",
    }
}

wire_enum! {
    /// RFC 6120 §8.3.3 stanza error conditions.
    StanzaCondition {
        BadRequest => "bad-request",
        Conflict => "conflict",
        FeatureNotImplemented => "feature-not-implemented",
        Forbidden => "forbidden",
        Gone => "gone",
        InternalServerError => "internal-server-error",
        ItemNotFound => "item-not-found",
        JidMalformed => "jid-malformed",
        NotAcceptable => "not-acceptable",
        NotAllowed => "not-allowed",
        NotAuthorized => "not-authorized",
        PolicyViolation => "policy-violation",
        RecipientUnavailable => "recipient-unavailable",
        Redirect => "redirect",
        RegistrationRequired => "registration-required",
        // Not in RFC 6120 §8.3.3: a dialback error (XEP-0220 §2.5), in the
        // stanza errors' namespace.
        RemoteConnectionFailed => "remote-connection-failed",
        RemoteServerNotFound => "remote-server-not-found",
        RemoteServerTimeout => "remote-server-timeout",
        ResourceConstraint => "resource-constraint",
        ServiceUnavailable => "service-unavailable",
        SubscriptionRequired => "subscription-required",
        UndefinedCondition => "undefined-condition",
        UnexpectedRequest => "unexpected-request",
    }
}

wire_enum! {
    /// RFC 6120 §6.5 SASL failure conditions.
    SaslCondition {
        Aborted => "aborted",
        AccountDisabled => "account-disabled",
        CredentialsExpired => "credentials-expired",
        EncryptionRequired => "encryption-required",
        IncorrectEncoding => "incorrect-encoding",
        InvalidAuthzid => "invalid-authzid",
        InvalidMechanism => "invalid-mechanism",
        MalformedRequest => "malformed-request",
        MechanismTooWeak => "mechanism-too-weak",
        NotAuthorized => "not-authorized",
        TemporaryAuthFailure => "temporary-auth-failure",
    }
}

wire_enum! {
    /// RFC 6120 §8.3.2 error types: what the sender should do about it.
    StanzaErrorType {
        Auth => "auth",
        Cancel => "cancel",
        Continue => "continue",
        Modify => "modify",
        Wait => "wait",
    }
}

/// A stream-level error: fatal, the stream is closed after it is sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream error <{condition}/>{}", text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StreamError {
    pub condition: StreamCondition,
    pub text: Option<Cow<'static, str>>,
}

impl StreamError {
    pub fn new(condition: StreamCondition) -> Self {
        StreamError { condition, text: None }
    }

    pub fn with_text(condition: StreamCondition, text: impl Into<Cow<'static, str>>) -> Self {
        StreamError {
            condition,
            text: Some(text.into()),
        }
    }

    /// `<stream:error>`, as sent right before `</stream:stream>`.
    pub fn to_element(&self) -> Element {
        let mut el =
            Element::new("error", ns::STREAM).with_child(Element::new(self.condition.as_str(), ns::STREAMS_ERRORS));
        if let Some(text) = &self.text {
            el.push_child(
                Element::new("text", ns::STREAMS_ERRORS)
                    .with_attr("xml:lang", "en")
                    .with_text(text.as_ref()),
            );
        }
        el
    }
}

/// A stanza-level error: returned to the sender, the stream goes on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stanza error <{condition}/> ({kind}){}", text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StanzaError {
    pub kind: StanzaErrorType,
    pub condition: StanzaCondition,
    pub text: Option<Cow<'static, str>>,
    /// An application-specific condition (RFC 6120 §8.3.2), such as
    /// XEP-0191's `<blocked/>` or XEP-0060's `<precondition-not-met/>`.
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    /// An error with the type RFC 6120 §8.3.3 gives its condition.
    pub fn new(condition: StanzaCondition) -> Self {
        use StanzaCondition::*;
        let kind = match condition {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation | Redirect => StanzaErrorType::Modify,
            Forbidden | NotAuthorized | RegistrationRequired | SubscriptionRequired => StanzaErrorType::Auth,
            RecipientUnavailable | RemoteServerTimeout | ResourceConstraint | UnexpectedRequest => {
                StanzaErrorType::Wait
            }
            _ => StanzaErrorType::Cancel,
        };
        StanzaError {
            kind,
            condition,
            text: None,
            app: None,
        }
    }

    pub fn with_text(condition: StanzaCondition, text: impl Into<Cow<'static, str>>) -> Self {
        StanzaError {
            text: Some(text.into()),
            ..StanzaError::new(condition)
        }
    }

    /// Reads the `<error/>` child of an error stanza another entity sent:
    /// an unknown or missing condition is `<undefined-condition/>`, an
    /// unknown type the condition's own.
    pub fn from_element(error: &Element) -> StanzaError {
        let condition = error
            .children()
            .filter(|c| c.ns() == ns::STANZAS_ERRORS && c.name() != "text")
            .find_map(|c| StanzaCondition::from_name(c.name()))
            .unwrap_or(StanzaCondition::UndefinedCondition);
        let mut err = StanzaError::new(condition);
        if let Some(kind) = error.attr("type").and_then(StanzaErrorType::from_name) {
            err.kind = kind;
        }
        if let Some(text) = error.get_child("text", ns::STANZAS_ERRORS) {
            err.text = Some(text.text().into());
        }
        err.app = error
            .children()
            .find(|c| c.ns() != ns::STANZAS_ERRORS)
            .cloned()
            .map(Box::new);
        err
    }

    /// Adds the application-specific condition element.
    pub fn with_app(mut self, app: Element) -> Self {
        self.app = Some(Box::new(app));
        self
    }

    /// The `<error>` child of an error stanza: the condition, the text,
    /// then the application condition (RFC 6120 §8.3.2's order).
    pub fn to_element(&self) -> Element {
        let mut el = Element::new("error", ns::CLIENT)
            .with_attr("type", self.kind.as_str())
            .with_child(Element::new(self.condition.as_str(), ns::STANZAS_ERRORS));
        if let Some(text) = &self.text {
            el.push_child(
                Element::new("text", ns::STANZAS_ERRORS)
                    .with_attr("xml:lang", "en")
                    .with_text(text.as_ref()),
            );
        }
        if let Some(app) = &self.app {
            el.push_child(app.as_ref().clone());
        }
        el
    }
}

/// A SASL `<failure/>`: the client may try again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("SASL failure <{condition}/>")]
pub struct SaslFailure {
    pub condition: SaslCondition,
    pub text: Option<Cow<'static, str>>,
}

impl SaslFailure {
    pub fn new(condition: SaslCondition) -> Self {
        SaslFailure { condition, text: None }
    }

    pub fn with_text(condition: SaslCondition, text: impl Into<Cow<'static, str>>) -> Self {
        SaslFailure {
            condition,
            text: Some(text.into()),
        }
    }

    pub fn to_element(&self) -> Element {
        let mut el = Element::new("failure", ns::SASL).with_child(Element::new(self.condition.as_str(), ns::SASL));
        if let Some(text) = &self.text {
            el.push_child(
                Element::new("text", ns::SASL)
                    .with_attr("xml:lang", "en")
                    .with_text(text.as_ref()),
            );
        }
        el
    }
}

/// Failures of a storage backend. They never reach a peer as such: they
/// become `<internal-server-error/>` or `<temporary-auth-failure/>`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("storage is unavailable")]
    Unavailable,
}

impl From<StorageError> for StanzaError {
    fn from(err: StorageError) -> Self {
        log::error!("{err}");
        StanzaError::new(StanzaCondition::InternalServerError)
    }
}

impl From<StorageError> for SaslFailure {
    fn from(err: StorageError) -> Self {
        log::error!("{err}");
        SaslFailure::new(SaslCondition::TemporaryAuthFailure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_application_condition_follows_the_text() {
        let err = StanzaError::with_text(StanzaCondition::Conflict, "pubsub#access_model is presence").with_app(
            Element::new("precondition-not-met", "http://jabber.org/protocol/pubsub#errors"),
        );
        assert_eq!(
            err.to_element().to_xml_in(ns::CLIENT),
            "<error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>pubsub#access_model is presence</text>\
             <precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/></error>"
        );
        let bare = StanzaError::new(StanzaCondition::NotAcceptable)
            .with_app(Element::new("blocked", "urn:xmpp:blocking:errors"));
        assert_eq!(
            bare.to_element().to_xml_in(ns::CLIENT),
            "<error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <blocked xmlns='urn:xmpp:blocking:errors'/></error>"
        );
        // Read back as written.
        assert_eq!(StanzaError::from_element(&err.to_element()), err);
        assert_eq!(StanzaError::from_element(&bare.to_element()), bare);
        let odd = StanzaError::from_element(&Element::new("error", ns::CLIENT).with_attr("type", "wait"));
        assert_eq!(
            (odd.condition, odd.kind),
            (StanzaCondition::UndefinedCondition, StanzaErrorType::Wait)
        );
    }
}
