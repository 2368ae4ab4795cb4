//! IQ requests the server itself sends and awaits the answer of (a
//! disco#info query for entity capabilities, XEP-0115): each is kept here
//! by id until its answer comes back to the server's domain, or its time
//! runs out. An answer counts only from the JID asked: anyone else
//! guessing an id changes nothing.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::error::{StanzaCondition, StanzaError};
use crate::jid::Jid;
use crate::ns;
use crate::stanza::{IqType, Kind, Stanza};
use crate::xml::Element;

/// Requests waiting for an answer, at most.
pub const MAX_PENDING: usize = 10_000;

/// How long a request waits when its sender has no reason to choose.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often requests past their time are answered with a timeout.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What a request's sender is told once: the `result` stanza, or the
/// error its answer carried (`<remote-server-timeout/>` when none came).
pub type Answer = Result<Stanza, StanzaError>;

/// Called with the answer, on whichever thread it arrived (`Sync` as the
/// router, which holds it, is shared by all threads).
pub type OnAnswer = Box<dyn FnOnce(Answer) + Send + Sync>;

struct Waiting {
    asked: Jid,
    deadline: Instant,
    then: OnAnswer,
}

/// The server's requests in flight. Cloning shares them.
#[derive(Clone, Default)]
pub struct ServerRequests {
    pending: Arc<DashMap<String, Waiting>>,
    sweeping: Arc<AtomicBool>,
}

impl ServerRequests {
    /// Registers a `get` or `set` from `from` (a hosted domain) to `to`
    /// carrying `payload`; `then` is called with its answer, or with
    /// `<remote-server-timeout/>` after `timeout`. Returns the stanza to
    /// send, which the caller sends its own way (routed, or straight to a
    /// session); `<resource-constraint/>` when too many wait already.
    /// Must run inside an actix System (the timeouts' sweeper runs there).
    pub fn register(
        &self,
        kind: IqType,
        from: Jid,
        to: Jid,
        payload: Element,
        timeout: Duration,
        then: OnAnswer,
    ) -> Result<Stanza, StanzaError> {
        if self.pending.len() >= MAX_PENDING {
            return Err(StanzaError::with_text(
                StanzaCondition::ResourceConstraint,
                "too many requests of the server wait for answers",
            ));
        }
        self.start_sweeping();
        let id = crate::xep::sid::new_id();
        let el = Element::new("iq", ns::CLIENT)
            .with_attr("type", kind.as_str())
            .with_attr("from", from.as_str())
            .with_attr("to", to.as_str())
            .with_attr("id", id.as_str())
            .with_child(payload);
        let stanza = Stanza::new(Kind::Iq(kind), Some(from), Some(to.clone()), el);
        let waiting = Waiting {
            asked: to,
            deadline: Instant::now() + timeout,
            then,
        };
        self.pending.insert(id, waiting);
        Ok(stanza)
    }

    /// [`ServerRequests::register`] with the answer as a future instead of
    /// a callback.
    pub fn ask(
        &self,
        kind: IqType,
        from: Jid,
        to: Jid,
        payload: Element,
        timeout: Duration,
    ) -> Result<(Stanza, impl Future<Output = Answer> + 'static), StanzaError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let then: OnAnswer = Box::new(move |answer| {
            let _ = tx.send(answer);
        });
        let stanza = self.register(kind, from, to, payload, timeout, then)?;
        let answer = async move {
            rx.await
                .unwrap_or_else(|_| Err(StanzaError::new(StanzaCondition::InternalServerError)))
        };
        Ok((stanza, answer))
    }

    /// An IQ result or error addressed to a hosted domain: true when it
    /// answered a request waiting here (sent to its sender).
    pub(crate) fn answer(&self, stanza: Stanza) -> bool {
        if !matches!(stanza.kind, Kind::Iq(IqType::Result | IqType::Error)) {
            return false;
        }
        let (Some(id), Some(from)) = (stanza.id(), stanza.from()) else {
            return false;
        };
        let Some((_, waiting)) = self.pending.remove_if(id, |_, w| w.asked == *from) else {
            return false;
        };
        let answer = match stanza.kind {
            Kind::Iq(IqType::Error) => Err(stanza
                .element()
                .get_child("error", ns::CLIENT)
                .map(StanzaError::from_element)
                .unwrap_or_else(|| StanzaError::new(StanzaCondition::UndefinedCondition))),
            _ => Ok(stanza),
        };
        (waiting.then)(answer);
        true
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Answers the requests past their deadline with a timeout.
    fn sweep(pending: &DashMap<String, Waiting>, now: Instant) {
        // Collected first: an answer's callback may register a request
        // (and must not find a shard of the map locked).
        let expired: Vec<String> = pending
            .iter()
            .filter(|e| e.deadline <= now)
            .map(|e| e.key().clone())
            .collect();
        for id in expired {
            if let Some((_, waiting)) = pending.remove_if(&id, |_, w| w.deadline <= now) {
                (waiting.then)(Err(StanzaError::new(StanzaCondition::RemoteServerTimeout)));
            }
        }
    }

    /// Starts the sweeper at the first request; it ends with the table.
    fn start_sweeping(&self) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let pending: Weak<DashMap<String, Waiting>> = Arc::downgrade(&self.pending);
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                let Some(pending) = pending.upgrade() else { return };
                Self::sweep(&pending, Instant::now());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn answer_from(from: &str, id: &str, kind: &str) -> Stanza {
        let mut el = Element::new("iq", ns::CLIENT)
            .with_attr("type", kind)
            .with_attr("id", id)
            .with_attr("to", "localhost");
        if kind == "error" {
            el.push_child(StanzaError::new(StanzaCondition::ItemNotFound).to_element());
        }
        let mut stanza = Stanza::from_element(el).unwrap();
        stanza.set_from(Some(jid(from)));
        stanza
    }

    #[test]
    fn answers_count_only_from_the_jid_asked_and_once() {
        actix::System::new().block_on(async {
            let requests = ServerRequests::default();
            let got: Arc<Mutex<Vec<Answer>>> = Arc::default();
            let sink = got.clone();
            let sent = requests
                .register(
                    IqType::Get,
                    jid("localhost"),
                    jid("romeo@localhost/a"),
                    Element::new("query", ns::DISCO_INFO),
                    DEFAULT_TIMEOUT,
                    Box::new(move |a| sink.lock().unwrap().push(a)),
                )
                .unwrap();
            let id = sent.id().unwrap().to_owned();
            assert_eq!(
                sent.element().to_xml_in(ns::CLIENT),
                format!(
                    "<iq type='get' from='localhost' to='romeo@localhost/a' id='{id}'>\
                     <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
                )
            );
            assert!(!requests.answer(answer_from("tybalt@localhost/x", &id, "result")));
            assert!(!requests.answer(answer_from("romeo@localhost/a", "other", "result")));
            assert!(requests.answer(answer_from("romeo@localhost/a", &id, "error")));
            assert!(!requests.answer(answer_from("romeo@localhost/a", &id, "result")));
            let got = got.lock().unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].as_ref().unwrap_err().condition, StanzaCondition::ItemNotFound);
            assert!(requests.is_empty());
        });
    }

    #[test]
    fn requests_past_their_time_are_answered_with_a_timeout() {
        actix::System::new().block_on(async {
            let requests = ServerRequests::default();
            let (_, answer) = requests
                .ask(
                    IqType::Get,
                    jid("localhost"),
                    jid("romeo@localhost/a"),
                    Element::new("query", ns::DISCO_INFO),
                    Duration::ZERO,
                )
                .unwrap();
            ServerRequests::sweep(&requests.pending, Instant::now());
            let err = answer.await.unwrap_err();
            assert_eq!(err.condition, StanzaCondition::RemoteServerTimeout);
            assert!(requests.is_empty());
        });
    }
}
