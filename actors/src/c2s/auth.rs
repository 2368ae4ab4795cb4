//! Before authentication: SASL (RFC 6120 §6) with PLAIN, SCRAM-SHA-1 and
//! SCRAM-SHA-256, and XEP-0077 registration. Storage look-ups and PBKDF2
//! run off the event loop; the stream waits (`ctx.wait`) so that nothing
//! the client pipelines is processed out of order.

use actix::prelude::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::actor::{C2s, State};
use super::io::{ChannelBindings, StartTls};
use std::time::Instant;

use super::limits::ConnectionLimits;
use crate::error::{SaslCondition, SaslFailure, StanzaCondition, StanzaError, StreamCondition, StreamError};
use crate::jid::{normalise_localpart, BareJid};
use crate::ns;
use crate::sasl::scram::{ChannelBindingRequest, ClientFirst};
use crate::sasl::{plain, Credentials, Mechanism, ScramHash, ScramServer};
use crate::session::Transport;
use crate::stanza::{IqType, Kind, Stanza};
use crate::xep::register;
use crate::xml::Element;

/// The registrations' key in their throttle, with the domain after it:
/// not an account (it has a character no localpart may hold).
const REGISTERING: &str = "\u{0}register@";

/// Where a SASL exchange stands.
pub(crate) enum Sasl {
    Idle,
    /// `<auth/>` came without an initial response; we sent an empty challenge.
    AwaitInitial(Mechanism),
    /// We sent the SCRAM server-first-message.
    AwaitScramFinal(Box<ScramServer>, BareJid, Mechanism),
}

impl C2s {
    /// STARTTLS must come first: TLS is required and not yet up.
    fn tls_required_first(&self) -> bool {
        let required = self
            .cx
            .config
            .tls
            .as_ref()
            .is_some_and(|t| t.starttls == StartTls::Required);
        required && self.starttls_possible()
    }

    /// A socket not yet encrypted; over a WebSocket, TLS is the HTTP
    /// server's business (RFC 7395 §3.4).
    fn starttls_possible(&self) -> bool {
        self.conn.transport() == Transport::Tcp
    }

    /// `bound`: the stream has TLS channel bindings (our own TLS).
    fn mechanism_offered(&self, m: Mechanism, bound: bool) -> bool {
        let encrypted = bound || self.conn.transport() == Transport::WebSocketTls;
        match m {
            _ if m.is_plus() => bound,
            Mechanism::Plain => encrypted || self.cx.config.allow_plain_without_tls,
            _ => true,
        }
    }

    /// A password may cross this stream in the clear (registration,
    /// password change): only where PLAIN would be offered.
    pub(super) fn passwords_allowed(&self) -> bool {
        self.mechanism_offered(Mechanism::Plain, self.conn.tls().is_some())
    }

    pub(super) fn pre_auth_features(&self) -> Element {
        let bindings = self.conn.tls();
        let mut features = Element::new("features", ns::STREAM);
        if let (Some(tls), true) = (&self.cx.config.tls, self.starttls_possible()) {
            if tls.starttls != StartTls::Off {
                let mut starttls = Element::new("starttls", ns::TLS);
                if tls.starttls == StartTls::Required {
                    starttls.push_child(Element::new("required", ns::TLS));
                    // RFC 6120 §5.3.1: nothing else until TLS is up.
                    return features.with_child(starttls);
                }
                features.push_child(starttls);
            }
        }
        let mut mechanisms = Element::new("mechanisms", ns::SASL);
        for m in Mechanism::ALL
            .into_iter()
            .filter(|m| self.mechanism_offered(*m, bindings.is_some()))
        {
            mechanisms.push_child(Element::new("mechanism", ns::SASL).with_text(m.name()));
        }
        features.push_child(mechanisms);
        if let Some(bindings) = &bindings {
            // XEP-0440: which bindings the -PLUS mechanisms can use here.
            let mut cb = Element::new("sasl-channel-binding", ns::SASL_CB);
            for kind in bindings.types() {
                cb.push_child(Element::new("channel-binding", ns::SASL_CB).with_attr("type", kind));
            }
            features.push_child(cb);
        }
        if self.host.registration && self.passwords_allowed() {
            features.push_child(Element::new("register", ns::REGISTER_FEATURE));
        }
        // XEP-0115's stream feature: the server's own caps (as ejabberd offers them).
        features.push_child(self.cx.server_caps(self.host.registration).clone());
        features
    }

    pub(super) fn on_pre_auth(&mut self, ctx: &mut Context<Self>, el: Element) {
        let offered = self.cx.config.tls.as_ref().is_some_and(|t| t.starttls != StartTls::Off);
        if el.is("starttls", ns::TLS) && offered && self.starttls_possible() {
            // RFC 6120 §5.4.2.3: proceed, then the handshake, then a new stream.
            self.send_element(&Element::new("proceed", ns::TLS));
            // The header's `to` picks the certificate when SNI does not.
            self.out.start_tls(self.host.clone());
            self.state = State::Start;
            return;
        }
        if self.tls_required_first() {
            return self.stream_error(
                ctx,
                StreamError::with_text(StreamCondition::PolicyViolation, "STARTTLS is required"),
            );
        }
        if el.ns() == ns::SASL {
            return self.on_sasl(ctx, el);
        }
        if el.is("starttls", ns::TLS) {
            // Not offered: RFC 6120 §5.4.2.2 says fail and close.
            self.send_element(&Element::new("failure", ns::TLS));
            return self.stream_error(
                ctx,
                StreamError::with_text(StreamCondition::UnsupportedFeature, "STARTTLS is not offered"),
            );
        }
        let is_register = el.is("iq", ns::CLIENT) && el.children().next().is_some_and(|p| p.is("query", ns::REGISTER));
        if is_register && self.host.registration {
            return match Stanza::from_element(el) {
                Ok(mut iq) => {
                    // Nothing from an unauthenticated client is trusted.
                    iq.set_from(None);
                    if !self.passwords_allowed() {
                        if let Some(reply) = iq.error_reply(&register::encryption_required()) {
                            self.send_stanza(&reply);
                        }
                        return;
                    }
                    self.register(ctx, iq)
                }
                Err(e) => self.reject(ctx, e),
            };
        }
        self.stream_error(
            ctx,
            StreamError::with_text(StreamCondition::NotAuthorized, "authenticate first"),
        )
    }

    /// XEP-0077 §3.1: the form, or the account it describes.
    fn register(&mut self, ctx: &mut Context<Self>, iq: Stanza) {
        match iq.kind {
            Kind::Iq(IqType::Get) => self.send_stanza(&iq.iq_result(Some(register::form(None)))),
            Kind::Iq(IqType::Set) => {
                // Registrations count as failures do for logins: a few per
                // source network and domain, then waits that double.
                let limits = ConnectionLimits {
                    failures_per_account: self.host.registrations_per_network,
                    failures_per_network: 0,
                    ..self.cx.limits().clone()
                };
                let (ip, now) = (self.peer.ip(), Instant::now());
                let key = format!("{REGISTERING}{}", self.domain());
                if self.cx.registrations.blocked(&key, ip, &limits, now) {
                    let err = StanzaError::with_text(
                        StanzaCondition::ResourceConstraint,
                        "too many registrations from your network; try again later",
                    );
                    if let Some(reply) = iq.error_reply(&err) {
                        self.send_stanza(&reply);
                    }
                    return;
                }
                // Every attempt counts, taken or not, and before the work:
                // parallel streams cannot all slip past the check.
                self.cx.registrations.failed(&key, ip, &limits, now);
                let storage = self.cx.router.storage().clone();
                let query = iq
                    .payload()
                    .cloned()
                    .unwrap_or_else(|| Element::new("query", ns::REGISTER));
                let iterations = self.cx.config.scram_iterations;
                let fut = register::register_account(storage, self.domain().clone(), query, iterations);
                ctx.wait(fut.into_actor(self).map(move |res, act, _| {
                    let reply = match res {
                        Ok(_) => Some(iq.iq_result(None)),
                        Err(e) => iq.error_reply(&e),
                    };
                    if let Some(reply) = reply {
                        act.send_stanza(&reply);
                    }
                }));
            }
            _ => {}
        }
    }

    fn on_sasl(&mut self, ctx: &mut Context<Self>, el: Element) {
        let State::PreAuth(sasl) = &mut self.state else {
            return;
        };
        let sasl = std::mem::replace(sasl, Sasl::Idle);
        // What a failure of this element is counted against.
        self.mechanism = match (el.name(), &sasl) {
            ("auth", _) => el.attr("mechanism").and_then(Mechanism::from_name),
            (_, Sasl::AwaitInitial(m) | Sasl::AwaitScramFinal(_, _, m)) => Some(*m),
            (_, Sasl::Idle) => None,
        };
        let data = match el.text().trim() {
            // "=" is an empty response; no text at all is no response.
            "=" => Some(Vec::new()),
            "" => None,
            t => match B64.decode(t) {
                Ok(d) => Some(d),
                Err(_) => return self.sasl_failure(ctx, SaslFailure::new(SaslCondition::IncorrectEncoding)),
            },
        };
        match (el.name(), sasl) {
            ("auth", _) => {
                let Some(mech) = el.attr("mechanism").and_then(Mechanism::from_name) else {
                    return self.sasl_failure(ctx, SaslFailure::new(SaslCondition::InvalidMechanism));
                };
                match data {
                    Some(data) => self.sasl_start(ctx, mech, data),
                    None => {
                        self.state = State::PreAuth(Sasl::AwaitInitial(mech));
                        self.send_element(&Element::new("challenge", ns::SASL));
                    }
                }
            }
            ("response", Sasl::AwaitInitial(mech)) => self.sasl_start(ctx, mech, data.unwrap_or_default()),
            ("response", Sasl::AwaitScramFinal(server, user, mech)) => match server.finish(&data.unwrap_or_default()) {
                Ok(server_final) => self.sasl_success(user, mech, Some(server_final)),
                Err(f) => {
                    if f.condition == SaslCondition::NotAuthorized {
                        self.login_failed(&user);
                    }
                    self.sasl_failure(ctx, f)
                }
            },
            ("abort", _) => self.sasl_failure(ctx, SaslFailure::new(SaslCondition::Aborted)),
            _ => self.sasl_failure(ctx, SaslFailure::new(SaslCondition::MalformedRequest)),
        }
    }

    /// The account a SASL identity names, at the stream's domain, checking
    /// the authorisation identity.
    fn sasl_user(&self, username: &str, authzid: Option<&str>) -> Result<BareJid, SaslFailure> {
        let not_authorized = || SaslFailure::new(SaslCondition::NotAuthorized);
        let node = normalise_localpart(&crate::sasl::saslprep(username)).map_err(|_| not_authorized())?;
        let user = BareJid::new(&node, self.domain().domain()).map_err(|_| not_authorized())?;
        match authzid {
            None => Ok(user),
            Some(a) if BareJid::parse(a).is_ok_and(|j| j == user) => Ok(user),
            Some(_) => Err(SaslFailure::new(SaslCondition::InvalidAuthzid)),
        }
    }

    fn fake_salt(&self, user: &BareJid) -> Vec<u8> {
        let mac = ScramHash::Sha256.hmac(&self.cx.secret, user.as_str().as_bytes());
        mac.into_iter().take(16).collect()
    }

    fn sasl_start(&mut self, ctx: &mut Context<Self>, mech: Mechanism, data: Vec<u8>) {
        let storage = self.cx.router.storage().clone();
        let bindings = self.conn.tls();
        if !self.mechanism_offered(mech, bindings.is_some()) {
            let condition = if mech == Mechanism::Plain {
                SaslCondition::EncryptionRequired
            } else {
                SaslCondition::InvalidMechanism
            };
            return self.sasl_failure(ctx, SaslFailure::new(condition));
        }
        match mech {
            Mechanism::Plain => {
                let msg = match plain::parse(&data) {
                    Ok(m) => m,
                    Err(f) => return self.sasl_failure(ctx, f),
                };
                let user = match self.sasl_user(&msg.username, msg.authzid.as_deref()) {
                    Ok(u) => u,
                    Err(f) => return self.sasl_failure(ctx, f),
                };
                if let Err(f) = self.not_throttled(&user) {
                    return self.sasl_failure(ctx, f);
                }
                let fake_salt = self.fake_salt(&user);
                // What new keys get, and what made-up ones claim.
                let iterations = self.cx.config.scram_iterations;
                let account = user.clone();
                let check = async move {
                    let creds = storage.credentials(&account).await?;
                    // An unknown user costs the same PBKDF2 as a wrong password.
                    // An account imported with keys for one hash gets both
                    // from the password it just proved (once).
                    let (ok, completed) = crate::sasl::derive_off_loop(move || match creds {
                        Some(c) => {
                            let ok = c.verify_password(&msg.password);
                            let completed =
                                (ok && !c.is_complete()).then(|| Credentials::derive(&msg.password, iterations));
                            (ok, completed)
                        }
                        None => {
                            ScramHash::Sha256.salted_password(&msg.password, &fake_salt, iterations);
                            (false, None)
                        }
                    })
                    .await
                    .unwrap_or((false, None));
                    if let Some(completed) = completed {
                        // The login stands either way: the keys it has still work.
                        if let Err(e) = storage.set_credentials(&account, completed).await {
                            log::warn!("{account}: cannot store the keys derived at login: {e}");
                        }
                    }
                    Ok::<bool, crate::error::StorageError>(ok)
                };
                ctx.wait(check.into_actor(self).map(move |res, act, ctx| match res {
                    Ok(true) => act.sasl_success(user, Mechanism::Plain, None),
                    Ok(false) => {
                        act.login_failed(&user);
                        act.sasl_failure(ctx, SaslFailure::new(SaslCondition::NotAuthorized))
                    }
                    Err(e) => act.sasl_failure(ctx, e.into()),
                }));
            }
            Mechanism::ScramSha1 | Mechanism::ScramSha256 | Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus => {
                let hash = mech.scram_hash().unwrap_or(ScramHash::Sha256);
                let first = match ClientFirst::parse(&data) {
                    Ok(f) => f,
                    Err(f) => return self.sasl_failure(ctx, f),
                };
                let binding = match channel_binding(mech, &first.channel_binding, bindings.as_ref(), self.plus_refused)
                {
                    Ok(b) => b,
                    Err(Refusal::UnsupportedType(f)) => {
                        // No password was tried: not a failed login. The
                        // client may now explain a `y` (see channel_binding).
                        self.plus_refused = true;
                        return self.sasl_failure_with(ctx, f, false);
                    }
                    Err(Refusal::Other(f)) => return self.sasl_failure(ctx, f),
                };
                let user = match self.sasl_user(&first.username, first.authzid.as_deref()) {
                    Ok(u) => u,
                    Err(f) => return self.sasl_failure(ctx, f),
                };
                if let Err(f) = self.not_throttled(&user) {
                    return self.sasl_failure(ctx, f);
                }
                let account = user.clone();
                let lookup = async move { storage.credentials(&account).await };
                ctx.wait(lookup.into_actor(self).map(move |res, act, ctx| match res {
                    Ok(creds) => {
                        let creds = match creds {
                            None => None,
                            Some(c) => match c.for_hash(hash) {
                                Some(keys) => Some(keys.clone()),
                                // Imported with the other hash's keys only: no
                                // password was tried (the login throttle does
                                // not count it); the client may try another
                                // mechanism.
                                None => return act.sasl_failure(ctx, no_keys_for(hash)),
                            },
                        };
                        let fake_salt = act.fake_salt(&user);
                        let fake_iterations = act.cx.config.scram_iterations;
                        let (server, server_first) =
                            ScramServer::start(hash, first, creds, &fake_salt, fake_iterations, binding.as_deref());
                        act.state = State::PreAuth(Sasl::AwaitScramFinal(Box::new(server), user, mech));
                        act.send_element(&Element::new("challenge", ns::SASL).with_text(B64.encode(server_first)));
                    }
                    Err(e) => act.sasl_failure(ctx, e.into()),
                }));
            }
        }
    }

    fn sasl_success(&mut self, user: BareJid, mech: Mechanism, additional: Option<Vec<u8>>) {
        log::info!("{}: authenticated as {user} with {}", self.peer, mech.name());
        crate::metrics::login(Some(mech), true);
        let mut success = Element::new("success", ns::SASL);
        if let Some(data) = additional {
            success.push_text(B64.encode(data));
        }
        self.send_element(&success);
        // The owner is in: their earlier typos from this network are forgiven.
        self.cx.throttle.succeeded(user.as_str(), self.peer.ip());
        self.conn.admitted.authenticated();
        self.conn
            .authenticated
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.state = State::AwaitRestart(user);
    }

    /// Refuses at once, without looking at the password, an account that
    /// must still wait after failing from the client's network, or a network
    /// that must wait after failing for many accounts. Elsewhere the account
    /// is not slowed down.
    fn not_throttled(&self, user: &BareJid) -> Result<(), SaslFailure> {
        let limits = self.cx.limits();
        // Keyed by bare JID: alice of one domain is not alice of another.
        if self
            .cx
            .throttle
            .blocked(user.as_str(), self.peer.ip(), limits, std::time::Instant::now())
        {
            log::warn!("{}: login for {user} refused: too many failures", self.peer);
            return Err(SaslFailure::with_text(
                SaslCondition::NotAuthorized,
                "too many failed attempts; try again later",
            ));
        }
        Ok(())
    }

    /// A wrong password: the account's count from the client's network, and
    /// the network's, go up (and with them the wait before the next try).
    fn login_failed(&self, user: &BareJid) {
        self.cx.throttle.failed(
            user.as_str(),
            self.peer.ip(),
            self.cx.limits(),
            std::time::Instant::now(),
        );
    }

    fn sasl_failure(&mut self, ctx: &mut Context<Self>, failure: SaslFailure) {
        self.sasl_failure_with(ctx, failure, true)
    }

    /// Sends a SASL failure; `counted` failures end the stream past
    /// `max_auth_failures`.
    fn sasl_failure_with(&mut self, ctx: &mut Context<Self>, failure: SaslFailure, counted: bool) {
        if let State::PreAuth(sasl) = &mut self.state {
            *sasl = Sasl::Idle;
        }
        self.send_element(&failure.to_element());
        if failure.condition == SaslCondition::Aborted || !counted {
            return;
        }
        self.auth_failures += 1;
        crate::metrics::login(self.mechanism, false);
        log::info!("{}: authentication failed: {}", self.peer, failure.condition);
        if self.auth_failures >= self.cx.config.max_auth_failures {
            self.stream_error(
                ctx,
                StreamError::with_text(
                    StreamCondition::PolicyViolation,
                    "too many failed authentication attempts",
                ),
            );
        }
    }
}

/// Why a SCRAM exchange cannot start on its channel-binding request.
enum Refusal {
    /// A -PLUS attempt with a binding type this connection cannot give
    /// (`tls-unique` on TLS 1.3, or from a TLS stack that hides it).
    UnsupportedType(SaslFailure),
    Other(SaslFailure),
}

/// An account imported from another server may have SCRAM keys for one
/// hash only (ejabberd's and Prosody's default, SHA-1): the other hash's
/// mechanisms cannot be verified until a password gives it both.
fn no_keys_for(hash: ScramHash) -> SaslFailure {
    let (missing, usable) = match hash {
        ScramHash::Sha1 => ("SCRAM-SHA-1", "SCRAM-SHA-256"),
        ScramHash::Sha256 => ("SCRAM-SHA-256", "SCRAM-SHA-1"),
    };
    SaslFailure::with_text(
        SaslCondition::InvalidMechanism,
        format!("this account has no {missing} keys yet: use {usable}, or PLAIN once to add them"),
    )
}

/// The channel-binding data a SCRAM exchange must carry (RFC 5802 §6), or
/// why it cannot go on. `plus_refused`: a -PLUS attempt on this stream
/// already failed on its binding type.
fn channel_binding(
    mech: Mechanism,
    request: &ChannelBindingRequest,
    bindings: Option<&ChannelBindings>,
    plus_refused: bool,
) -> Result<Option<Vec<u8>>, Refusal> {
    let refuse = |text: &'static str| {
        Err(Refusal::Other(SaslFailure::with_text(
            SaslCondition::NotAuthorized,
            text,
        )))
    };
    match (mech.is_plus(), request, bindings) {
        (true, ChannelBindingRequest::Type(kind), Some(b)) => match b.get(kind) {
            Some(data) => Ok(Some(data.to_vec())),
            None => Err(Refusal::UnsupportedType(SaslFailure::with_text(
                SaslCondition::NotAuthorized,
                "unsupported channel binding type",
            ))),
        },
        (true, _, _) => refuse("a -PLUS mechanism needs channel binding"),
        (false, ChannelBindingRequest::Type(_), _) => refuse("channel binding needs a -PLUS mechanism"),
        // RFC 5802 §6: `y` from a client that could bind while we offered
        // -PLUS means someone removed the offer on the way (a downgrade),
        // unless this very stream showed that the client's only binding
        // type is one we cannot do (Debian 12's slixmpp binds with
        // tls-unique alone, then falls back with `y`). That client did try
        // to bind, so nothing was stripped.
        (false, ChannelBindingRequest::ClientSupports, Some(_)) if !plus_refused => {
            refuse("channel binding was offered")
        }
        (false, _, _) => Ok(None),
    }
}
