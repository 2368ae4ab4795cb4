//! A service published in-process: an actix actor takes the domain
//! `calc.localhost`, answers its own service discovery, adds numbers
//! (`<add xmlns='urn:example:calc'><n>1</n><n>2</n></add>` gives
//! `<sum xmlns='urn:example:calc'>3</sum>`) and echoes messages. It
//! appears in the server's disco#items listing, and every request to it
//! gets exactly one answer, even if it stops.
//!
//!     cargo run --example calculator_service
//!
//! then log in (register in-band on the printed port) and send
//! `<iq type='set' to='calc.localhost' id='1'><add xmlns='urn:example:calc'><n>2</n><n>3</n></add></iq>`.

use actix::prelude::*;
use shoal::{Config, ServerBuilder};
use shoal_actors::error::{StanzaCondition, StanzaError};
use shoal_actors::ns;
use shoal_actors::router::Router;
use shoal_actors::services::{Publication, PublishOptions, ServiceStanza};
use shoal_actors::stanza::{IqType, Kind, MessageType, Stanza};
use shoal_actors::xml::Element;

const CALC: &str = "urn:example:calc";

struct Calculator {
    router: Router,
    publication: Option<Publication>,
}

impl Actor for Calculator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let options = PublishOptions {
            name: Some("Calculator".into()),
            ..PublishOptions::default()
        };
        let sink = Box::new(ctx.address().recipient::<ServiceStanza>());
        match self.router.publish("calc.localhost", sink, options) {
            Ok(p) => self.publication = Some(p),
            Err(e) => {
                eprintln!("cannot publish: {e}");
                ctx.stop();
            }
        }
    }
}

impl Calculator {
    /// The answer to one request: its payload, or the error.
    fn answer(request: &Stanza) -> Result<Element, StanzaError> {
        let payload = request
            .payload()
            .ok_or_else(|| StanzaError::new(StanzaCondition::BadRequest))?;
        match (request.kind, payload.name(), payload.ns()) {
            (Kind::Iq(IqType::Get), "query", ns::DISCO_INFO) => Ok(Element::new("query", ns::DISCO_INFO)
                .with_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "automation")
                        .with_attr("type", "rpc")
                        .with_attr("name", "Calculator"),
                )
                .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_INFO))
                .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", CALC))),
            (Kind::Iq(IqType::Set), "add", CALC) => {
                let mut sum: i64 = 0;
                for n in payload.children().filter(|c| c.is("n", CALC)) {
                    let n: i64 = n
                        .text()
                        .trim()
                        .parse()
                        .map_err(|_| StanzaError::new(StanzaCondition::BadRequest))?;
                    sum = sum
                        .checked_add(n)
                        .ok_or_else(|| StanzaError::new(StanzaCondition::NotAcceptable))?;
                }
                Ok(Element::new("sum", CALC).with_text(sum.to_string()))
            }
            _ => Err(StanzaError::new(StanzaCondition::ServiceUnavailable)),
        }
    }
}

impl Handler<ServiceStanza> for Calculator {
    type Result = ();

    fn handle(&mut self, ServiceStanza(stanza): ServiceStanza, _: &mut Context<Self>) {
        let Some(publication) = &self.publication else { return };
        let reply = match stanza.kind {
            Kind::Iq(IqType::Get | IqType::Set) => match Self::answer(&stanza) {
                Ok(payload) => Some(stanza.iq_result(Some(payload))),
                Err(e) => stanza.error_reply(&e),
            },
            Kind::Message(MessageType::Chat | MessageType::Normal) => {
                let body = stanza
                    .element()
                    .children()
                    .find(|c| c.name() == "body")
                    .map(Element::text);
                body.map(|body| {
                    let el = Element::new("message", ns::CLIENT)
                        .with_child(Element::new("body", ns::CLIENT).with_text(format!("you said: {body}")));
                    Stanza::new(stanza.kind, stanza.to().cloned(), stanza.from().cloned(), el)
                })
            }
            _ => None,
        };
        if let Some(reply) = reply {
            let _ = publication.send(reply);
        }
    }
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut config = Config::default();
    config.c2s.listen = vec!["127.0.0.1:0".parse()?];
    config.storage.sqlite = std::env::temp_dir().join("shoal-calculator-example.db");
    let server = ServerBuilder::new(config).start().await?;
    println!("serving localhost on {}", server.local_addrs()[0]);
    let router = server.router().clone();
    Calculator::create(move |_| Calculator {
        router,
        publication: None,
    });
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
