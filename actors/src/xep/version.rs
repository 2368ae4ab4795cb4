//! XEP-0092: Software Version. The operating system is not disclosed.

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest};
use crate::ns;
use crate::router::Router;
use crate::xml::Element;

pub struct Version;

impl IqHandler for Version {
    fn handle(&self, _: &Router, req: IqRequest) -> IqFuture {
        if req.is_set() {
            return ready(Err(StanzaError::new(StanzaCondition::NotAllowed)));
        }
        let query = Element::new("query", ns::VERSION)
            .with_child(Element::new("name", ns::VERSION).with_text("Shoal"))
            .with_child(Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")));
        ready(Ok(Some(query)))
    }

    fn features(&self) -> Vec<String> {
        vec![ns::VERSION.to_owned()]
    }
}
