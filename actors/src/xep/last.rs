//! XEP-0012: Last Activity. Asked of the server, it answers the server's
//! uptime (§5); accounts' last logout is not recorded.

use std::time::Instant;

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest};
use crate::ns;
use crate::router::Router;
use crate::xml::Element;

pub struct Last {
    /// Counted from when the handler table is built, which is at start.
    started: Instant,
}

impl Last {
    pub fn new() -> Last {
        Last {
            started: Instant::now(),
        }
    }
}

impl Default for Last {
    fn default() -> Self {
        Last::new()
    }
}

impl IqHandler for Last {
    fn handle(&self, _: &Router, req: IqRequest) -> IqFuture {
        if req.is_set() {
            return ready(Err(StanzaError::new(StanzaCondition::NotAllowed)));
        }
        let seconds = self.started.elapsed().as_secs();
        let query = Element::new("query", ns::LAST).with_attr("seconds", seconds.to_string());
        ready(Ok(Some(query)))
    }

    fn features(&self) -> Vec<String> {
        vec![ns::LAST.to_owned()]
    }
}
