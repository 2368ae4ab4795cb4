//! # shoal-actors
//!
//! The embeddable core of the Shoal XMPP server: protocol types (JIDs,
//! stanzas, the XML stream codec), the actors (one [`c2s::C2s`] per client
//! connection, the [`session_manager::SessionManager`]), the [`router`],
//! and the traits an embedder implements ([`storage::Storage`],
//! [`iq_handler::IqHandler`]).
//!
//! The path of one stanza: [`codec`] → [`c2s`] → [`router`] →
//! [`session`] table / [`iq_handler`] table → [`storage`] → delivery into
//! the recipient connection's outbound queue.

mod bucket;
pub mod c2s;
pub mod codec;
pub mod component;
pub mod current;
pub mod error;
pub mod hosts;
pub mod iq_handler;
pub mod jid;
pub mod metrics;
pub mod muc;
pub mod ns;
pub mod outbound;
pub mod presence;
pub mod requests;
pub mod roster;
pub mod router;
pub mod s2s;
pub mod sasl;
pub mod services;
pub mod session;
pub mod session_manager;
pub mod stanza;
pub mod storage;
pub mod xep;
pub mod xml;
