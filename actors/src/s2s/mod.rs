//! Server-to-server federation (RFC 6120, XEP-0220, XEP-0178, XEP-0368):
//! stanzas for a domain that is neither ours nor a published service go
//! to that domain's server, over a stream of our own; its server's
//! stanzas for us arrive on streams it opens.
//!
//! **In progress.** Only the pieces without I/O exist so far, with their
//! tests; nothing routes through here yet, and no configuration reaches
//! it. The plan, one file per piece:
//!
//! - `mod.rs` (here): `S2sConfig` and `S2sContext` (the router, each
//!   domain's TLS settings, the registry of links, the verifier, admission
//!   counts, the blocked domains, the dialback secret), and `accept()` /
//!   `spawn()` as in [`crate::component`]. Streams run on the client
//!   transport through `StreamSettings`, with small pre-authentication
//!   limits until a domain authenticates, then `[s2s] max_stanza_bytes`.
//! - `inbound.rs`: the `S2sIn` actor on the client transport task, as
//!   [`crate::component`]'s actor is: STARTTLS, SASL EXTERNAL when the
//!   peer's certificate is valid for its `from`, dialback for the rest;
//!   the set of domains authenticated on the stream; stream errors checked
//!   per domain pair.
//! - `outbound.rs`: the `S2sConnector` (a [`crate::outbound::Connector`])
//!   and one `Link` actor per (local, remote) domain pair, which runs a
//!   [`crate::outbound::ConnectionManager`], queues what is sent while the
//!   link comes up, bounces it when an attempt fails
//!   ([`crate::outbound::ConnectionEvent::AttemptFailed`]), and closes the
//!   link when idle.
//! - `negotiate.rs`: the initiating side's dialogue: header, STARTTLS, then
//!   SASL EXTERNAL or `<db:result/>`.
//! - [`dialback`]: the key, the elements, and (to come) the `Verifier`
//!   with its table of pending requests, caps and timeouts.
//! - [`resolve`]: where a domain's server is: `[s2s.hosts]`, SRV records,
//!   then A/AAAA.
//! - `tls.rs`: the client configuration, whose verifier records its verdict
//!   rather than refusing (dialback still works with a certificate that
//!   does not verify); a client-certificate verifier that accepts any chain
//!   so that the check for EXTERNAL can be made afterwards.

pub mod dialback;
pub mod resolve;

pub use dialback::{Body, Dialback, DialbackParseError};
pub use resolve::{Dns, Resolve, ResolveError, StaticHosts, StaticThen, StaticThenDns, Target};
