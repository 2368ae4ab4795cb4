//! Server features, one module per specification, each with its payload
//! types and its IQ handler. [`standard_iq_handlers`] is the declarative
//! list of what the server answers (ejabberd's module list).

use std::sync::Arc;

use crate::iq_handler::{IqHandlerTable, IqScope};
use crate::ns;

pub mod avatar;
pub mod blocking;
pub mod bookmarks;
pub mod caps;
pub mod carbons;
pub mod csi;
pub mod disco;
pub mod forms;
pub mod last;
pub mod mam;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod private;
pub mod pubsub;
pub mod register;
pub mod rsm;
pub mod sid;
pub mod sm;
pub mod vcard;
pub mod version;

/// What the standard handlers need to know about the server.
#[derive(Clone, Debug)]
pub struct ServerFeatures {
    /// XEP-0077 in-band registration (and password change / cancellation)
    /// on some hosted domain; each domain's own policy is its
    /// [`crate::hosts::Host`]'s.
    pub registration: bool,
    /// PBKDF2 iterations for newly set passwords.
    pub scram_iterations: u32,
}

/// The handlers of a standard server.
pub fn standard_iq_handlers(features: &ServerFeatures) -> IqHandlerTable {
    let mut table = IqHandlerTable::new();
    table.register(IqScope::Server, ns::DISCO_INFO, Arc::new(disco::DiscoInfo));
    table.register(IqScope::Server, ns::DISCO_ITEMS, Arc::new(disco::DiscoItems));
    table.register(IqScope::Account, ns::DISCO_INFO, Arc::new(disco::DiscoInfo));
    table.register(IqScope::Account, ns::DISCO_ITEMS, Arc::new(disco::DiscoItems));
    table.register(
        IqScope::Account,
        ns::ROSTER,
        Arc::new(crate::roster::handler::RosterHandler),
    );
    table.register(IqScope::Account, vcard::NS, Arc::new(vcard::VCard));
    table.register(IqScope::Account, ns::PRIVATE, Arc::new(private::Private));
    // Sent without `to` (XEP-0191 §3), so to the account; the server's
    // entry is what disco#info to the domain advertises (§3.1).
    table.register(IqScope::Account, blocking::NS, Arc::new(blocking::Blocking));
    table.register(IqScope::Server, blocking::NS, Arc::new(blocking::Blocking));
    table.register(IqScope::Server, ns::PING, Arc::new(ping::Ping));
    // As ejabberd does: the server answers a ping to an account for it.
    table.register(IqScope::Account, ns::PING, Arc::new(ping::Ping));
    table.register(IqScope::Server, ns::VERSION, Arc::new(version::Version));
    table.register(IqScope::Server, ns::LAST, Arc::new(last::Last::new()));
    // XEP-0280 §4 enables carbons with no `to`, which is for the account:
    // answered there too, but advertised by the server only.
    table.register(
        IqScope::Server,
        carbons::NS,
        Arc::new(carbons::Carbons { advertise: true }),
    );
    table.register(
        IqScope::Account,
        carbons::NS,
        Arc::new(carbons::Carbons { advertise: false }),
    );
    // The account is the `by` of its stanza ids.
    table.register(IqScope::Account, sid::NS, Arc::new(sid::Advertised));
    if features.registration {
        table.register(
            IqScope::Server,
            ns::REGISTER,
            Arc::new(register::Register {
                iterations: features.scram_iterations,
            }),
        );
    }
    table
}
