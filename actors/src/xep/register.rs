//! XEP-0077: In-Band Registration. Before authentication a client may
//! create an account (the c2s actor calls [`register_account`]); once
//! logged in it may change its password or cancel its account through the
//! [`Register`] IQ handler.

use std::sync::Arc;

use crate::error::{StanzaCondition, StanzaError, StreamCondition, StreamError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest};
use crate::jid::{normalise_localpart, BareJid};
use crate::ns;
use crate::router::Router;
use crate::sasl::Credentials;
use crate::storage::Storage;
use crate::xml::Element;

/// The registration form: what a client must fill in.
pub fn form(registered_as: Option<&str>) -> Element {
    let mut query = Element::new("query", ns::REGISTER);
    if let Some(user) = registered_as {
        query.push_child(Element::new("registered", ns::REGISTER));
        query.push_child(Element::new("username", ns::REGISTER).with_text(user));
    } else {
        query.push_child(
            Element::new("instructions", ns::REGISTER)
                .with_text("Choose a username and password for use with this service."),
        );
        query.push_child(Element::new("username", ns::REGISTER));
    }
    query.push_child(Element::new("password", ns::REGISTER));
    query
}

fn field(query: &Element, name: &str) -> Option<String> {
    query
        .get_child(name, ns::REGISTER)
        .map(Element::text)
        .filter(|s| !s.is_empty())
}

fn not_acceptable(text: &'static str) -> StanzaError {
    StanzaError::with_text(StanzaCondition::NotAcceptable, text)
}

/// A password sent where it would cross the network in the clear (as
/// Prosody answers it).
pub fn encryption_required() -> StanzaError {
    StanzaError::with_text(StanzaCondition::PolicyViolation, "encryption is required")
}

/// Derives SCRAM keys from a password on the blocking pool: PBKDF2 must
/// never run on an event loop.
pub async fn derive_credentials(password: String, iterations: u32) -> Result<Credentials, StanzaError> {
    crate::sasl::derive_off_loop(move || Credentials::derive(&password, iterations))
        .await
        .ok_or_else(|| StanzaError::new(StanzaCondition::InternalServerError))
}

/// Creates the account a registration form describes (XEP-0077 §3.1)
/// at `domain`, the hosted domain the client's stream is for.
pub async fn register_account(
    storage: Arc<dyn Storage>,
    domain: BareJid,
    query: Element,
    iterations: u32,
) -> Result<BareJid, StanzaError> {
    let (Some(username), Some(password)) = (field(&query, "username"), field(&query, "password")) else {
        return Err(not_acceptable("username and password are required"));
    };
    let account = BareJid::new(&username, domain.domain())
        .map_err(|_| StanzaError::with_text(StanzaCondition::JidMalformed, "invalid username"))?;
    // Checked before the key derivation: a taken name costs no PBKDF2.
    // (create_user still refuses a name taken meanwhile.)
    if storage.credentials(&account).await?.is_some() {
        return Err(taken());
    }
    let credentials = derive_credentials(password, iterations).await?;
    if storage.create_user(&account, credentials).await? {
        log::info!("registered account {account}");
        Ok(account)
    } else {
        Err(taken())
    }
}

fn taken() -> StanzaError {
    StanzaError::with_text(StanzaCondition::Conflict, "the username is taken")
}

/// The stream error of a session whose account was removed.
pub fn account_removed() -> StreamError {
    StreamError::with_text(StreamCondition::NotAuthorized, "account removed")
}

/// The stream error of a session whose account's password changed
/// elsewhere (RFC 6120 §4.9.3.16: authenticate again).
pub fn password_changed() -> StreamError {
    StreamError::with_text(StreamCondition::Reset, "password changed")
}

/// Password change and cancellation for a logged-in user (§3.2, §3.3),
/// where the domain's policy allows registration.
pub struct Register {
    pub iterations: u32,
}

impl IqHandler for Register {
    fn handle(&self, router: &Router, req: IqRequest) -> IqFuture {
        // Asked of the user's own domain, which must let its users register.
        if !router.hosts().get(req.target.domain()).is_some_and(|h| h.registration) {
            return ready(Err(StanzaError::new(StanzaCondition::ServiceUnavailable)));
        }
        let Some(user) = req.from.node().map(str::to_owned) else {
            return ready(Err(StanzaError::new(StanzaCondition::NotAllowed)));
        };
        if req.from.domain() != req.target.domain() {
            return ready(Err(StanzaError::with_text(
                StanzaCondition::NotAllowed,
                "not your account",
            )));
        }
        if !req.is_set() {
            return ready(Ok(Some(form(Some(&user)))));
        }
        let query = req.payload().clone();
        let storage = router.storage().clone();
        if query.has_child("remove", ns::REGISTER) {
            let router = router.clone();
            let account = req.from.to_bare();
            return Box::pin(async move {
                crate::roster::account::remove_account(router.clone(), account.clone()).await?;
                // The result is queued before the kick, so it arrives first.
                actix_rt::spawn(async move {
                    router.sessions().kick(&account, &account_removed(), None);
                });
                Ok(None)
            });
        }
        let iterations = self.iterations;
        let (router, from) = (router.clone(), req.from.clone());
        Box::pin(async move {
            let (Some(username), Some(password)) = (field(&query, "username"), field(&query, "password")) else {
                return Err(not_acceptable("username and password are required"));
            };
            if normalise_localpart(&username).ok().as_deref() != Some(user.as_str()) {
                return Err(StanzaError::with_text(StanzaCondition::NotAllowed, "not your account"));
            }
            let credentials = derive_credentials(password, iterations).await?;
            let account = from.to_bare();
            storage.set_credentials(&account, credentials).await?;
            log::info!("password of {account} changed");
            // Whoever else holds a session of this account (a stolen one,
            // say) must log in again with the new password.
            let asking = from
                .clone()
                .try_into_full()
                .ok()
                .and_then(|f| router.sessions().get(&f));
            router
                .sessions()
                .kick(&account, &password_changed(), asking.map(|s| s.id));
            Ok(None)
        })
    }

    fn features(&self) -> Vec<String> {
        vec![ns::REGISTER.to_owned()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn form(user: &str) -> Element {
        Element::new("query", ns::REGISTER)
            .with_child(Element::new("username", ns::REGISTER).with_text(user))
            .with_child(Element::new("password", ns::REGISTER).with_text("pw"))
    }

    /// A taken name is refused before the key derivation: with a count of
    /// iterations that would take hours, the answer still comes at once.
    #[actix_rt::test]
    async fn a_taken_name_costs_no_key_derivation() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let romeo = BareJid::new("romeo", "a.test").unwrap();
        assert!(storage
            .create_user(&romeo, Credentials::derive("pw", 4096))
            .await
            .unwrap());
        let domain = BareJid::domain_jid("a.test").unwrap();
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            register_account(storage, domain, form("romeo"), u32::MAX),
        )
        .await
        .expect("answered without deriving keys");
        assert_eq!(answer.unwrap_err().condition, StanzaCondition::Conflict);
    }
}
