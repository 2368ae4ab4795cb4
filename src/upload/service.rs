//! The XMPP side of HTTP upload: an actor publishes the upload domain and
//! answers its service discovery and slot requests (XEP-0363 §3–5). A
//! slot is given from memory alone; nothing here touches the disk.

use std::sync::Arc;

use actix::prelude::*;
use shoal_actors::error::{StanzaCondition, StanzaError};
use shoal_actors::ns;
use shoal_actors::router::Router;
use shoal_actors::services::{Publication, PublishError, PublishOptions, ServiceStanza};
use shoal_actors::stanza::{IqType, Kind, Stanza};
use shoal_actors::xep::forms;
use shoal_actors::xml::Element;

use super::{Refusal, SlotRequest, Upload, NS};

/// The service's name, in the server's listing and its identity.
const NAME: &str = "HTTP File Upload";

/// Stanzas waiting for the actor; past it, senders get
/// `<service-unavailable/>` rather than an unbounded queue.
const MAILBOX: usize = 1024;

/// Publishes the upload domain, served by a new actor; the domain is
/// taken before the actor runs, so that a refusal stops the start.
pub(super) fn publish(upload: Arc<Upload>, router: &Router) -> Result<(), PublishError> {
    let mut ctx = Context::<UploadService>::new();
    ctx.set_mailbox_capacity(MAILBOX);
    let sink = Box::new(ctx.address().recipient::<ServiceStanza>());
    let options = PublishOptions {
        name: Some(NAME.into()),
        ..PublishOptions::default()
    };
    let publication = router.publish(&upload.settings.domain, sink, options)?;
    ctx.run(UploadService {
        upload,
        router: router.clone(),
        publication,
    });
    Ok(())
}

struct UploadService {
    upload: Arc<Upload>,
    router: Router,
    publication: Publication,
}

impl Actor for UploadService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Once now (files may have expired while the server was down),
        // then periodically; the deleting runs on tokio's blocking pool.
        let sweep = |upload: Arc<Upload>| {
            actix_rt::spawn(async move { upload.sweep().await });
        };
        sweep(self.upload.clone());
        ctx.run_interval(self.upload.sweep_every(), move |act, _| sweep(act.upload.clone()));
    }
}

impl Handler<ServiceStanza> for UploadService {
    type Result = ();

    fn handle(&mut self, ServiceStanza(stanza): ServiceStanza, _: &mut Context<Self>) {
        let reply = match stanza.kind {
            Kind::Iq(IqType::Get | IqType::Set) => self.answer(&stanza),
            // Nothing to say to messages; presence is ignored.
            Kind::Message(_) => stanza.error_reply(&StanzaError::new(StanzaCondition::ServiceUnavailable)),
            _ => None,
        };
        if let Some(reply) = reply {
            if let Err(e) = self.publication.send(reply) {
                log::debug!("{}: reply not sent: {e}", self.upload.settings.domain);
            }
        }
    }
}

impl UploadService {
    /// The answer to an IQ request: a result or an error.
    fn answer(&self, request: &Stanza) -> Option<Stanza> {
        let error = |condition| request.error_reply(&StanzaError::new(condition));
        let Some(payload) = request.payload() else {
            return error(StanzaCondition::BadRequest);
        };
        match (request.kind, payload.name(), payload.ns()) {
            (Kind::Iq(IqType::Get), "query", ns::DISCO_INFO | ns::DISCO_ITEMS) => {
                if payload.attr("node").is_some() {
                    return error(StanzaCondition::ItemNotFound);
                }
                let query = if payload.ns() == ns::DISCO_INFO {
                    self.disco_info()
                } else {
                    Element::new("query", ns::DISCO_ITEMS)
                };
                Some(request.iq_result(Some(query)))
            }
            (Kind::Iq(IqType::Set), "query", ns::DISCO_INFO | ns::DISCO_ITEMS) => error(StanzaCondition::NotAllowed),
            // XEP-0363 asks with a get; a set is taken the same way.
            (_, "request", NS) => match self.slot(request, payload) {
                Ok(slot) => Some(request.iq_result(Some(slot))),
                Err(refusal) => request.error_reply(&refusal.error()),
            },
            _ => error(StanzaCondition::ServiceUnavailable),
        }
    }

    /// XEP-0030 with the XEP-0128 form that gives the largest file.
    fn disco_info(&self) -> Element {
        let value = |v: String| Element::new("value", forms::NS).with_text(v);
        let form = Element::new("x", forms::NS)
            .with_attr("type", "result")
            .with_child(forms::field("FORM_TYPE", "hidden").with_child(value(NS.to_owned())))
            .with_child(
                Element::new("field", forms::NS)
                    .with_attr("var", "max-file-size")
                    .with_child(value(self.upload.settings.max_file_bytes.to_string())),
            );
        let feature = |var: &str| Element::new("feature", ns::DISCO_INFO).with_attr("var", var);
        Element::new("query", ns::DISCO_INFO)
            .with_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "store")
                    .with_attr("type", "file")
                    .with_attr("name", NAME),
            )
            .with_child(feature(ns::DISCO_INFO))
            .with_child(feature(NS))
            .with_child(form)
    }

    /// A slot for the requester, if they are a user of this server.
    fn slot(&self, request: &Stanza, payload: &Element) -> Result<Element, Refusal> {
        let owner = request
            .from()
            .filter(|from| self.router.is_local_user(from))
            .ok_or(Refusal::NotLocal)?
            .to_bare();
        let wanted = SlotRequest::parse(payload)?;
        let size = wanted.size;
        let url = self.upload.request_slot(&owner, wanted)?;
        // The URL is the capability: not logged.
        log::debug!("{owner}: a slot for {size} bytes");
        let put = Element::new("put", NS).with_attr("url", url.clone());
        let get = Element::new("get", NS).with_attr("url", url);
        Ok(Element::new("slot", NS).with_child(put).with_child(get))
    }
}
