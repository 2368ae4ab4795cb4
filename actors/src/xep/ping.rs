//! XEP-0199: XMPP Ping. A ping to the server is answered with an empty result.

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest};
use crate::ns;
use crate::router::Router;

pub struct Ping;

impl IqHandler for Ping {
    fn handle(&self, _: &Router, req: IqRequest) -> IqFuture {
        if req.is_set() {
            return ready(Err(StanzaError::new(StanzaCondition::NotAllowed)));
        }
        ready(Ok(None))
    }

    fn features(&self) -> Vec<String> {
        vec![ns::PING.to_owned()]
    }
}
