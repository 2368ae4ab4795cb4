//! What the muc and pep scenarios share: clients each read by a task of
//! their own, and the to-last tally of a round.
//!
//! In both, every client receives every round (a room's messages, a
//! publisher's notifications) while some of them also send: a client that
//! stopped reading would stall the server's writes to it. So each
//! connection is read all the time by its task ([`Driven`]), which writes
//! what the scenario tells it to and reports what it sees as [`Event`]s on
//! one channel.

use std::time::{Duration, Instant};

use shoal_actors::codec::Frame;
use shoal_actors::ns;
use shoal_actors::xml::Element;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::{Conn, LoadError, REPLY_TIMEOUT};

/// What a client's task reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Client `n` is ready: it has seen everyone in the room (muc), or has
    /// the warm-up item (pep). Repeats are harmless.
    Ready(usize),
    /// Message `message` of round `round` was written at `at`.
    Sent { round: usize, message: usize, at: Instant },
    /// Message `message` of round `round` reached client `by` at `at`.
    Got {
        round: usize,
        message: usize,
        by: usize,
        at: Instant,
    },
    /// Occupant `n` was seen leaving the room (muc).
    Left(usize),
    /// The server refused something (the stanza, as received), or a
    /// client's connection failed.
    Failed(String),
}

/// What a client does with one stanza.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    Nothing,
    Report(Event),
    /// A stanza to write back (an IQ answered).
    Answer(String),
}

/// A stanza for a client's task to write; with `sent`, (round, message),
/// its writing is reported as [`Event::Sent`].
struct Say {
    stanza: String,
    sent: Option<(usize, usize)>,
}

/// A client whose connection its own task reads, until [`Driven::stop`].
pub struct Driven {
    say: mpsc::UnboundedSender<Say>,
    task: JoinHandle<Result<Conn, LoadError>>,
}

impl Driven {
    /// Runs `conn`: each stanza goes to `hear`, whose reports go to
    /// `events`. An IQ request `hear` leaves alone is answered with
    /// `<service-unavailable/>` (RFC 6120 §8.4), as a client does.
    pub fn spawn<H>(mut conn: Conn, events: mpsc::UnboundedSender<Event>, mut hear: H) -> Driven
    where
        H: FnMut(&Element) -> Heard + Send + 'static,
    {
        let (say, mut told) = mpsc::unbounded_channel::<Say>();
        let task = tokio::spawn(async move {
            match drive(&mut conn, &mut told, &events, &mut hear).await {
                Ok(()) => Ok(conn),
                Err(e) => {
                    // Said at once, so that the scenario does not wait out a timeout.
                    let _ = events.send(Event::Failed(e.to_string()));
                    Err(e)
                }
            }
        });
        Driven { say, task }
    }

    /// Has the task write `stanza`; with `sent`, (round, message), it
    /// reports when it did.
    pub fn say(&self, stanza: String, sent: Option<(usize, usize)>) -> Result<(), LoadError> {
        self.say
            .send(Say { stanza, sent })
            .map_err(|_| LoadError::Closed("a client's task"))
    }

    /// Ends the task, which hands the connection back.
    pub async fn stop(self) -> Result<Conn, LoadError> {
        drop(self.say);
        self.task.await.map_err(|e| LoadError::Unexpected(e.to_string()))?
    }
}

/// A [`Driven`] client's task: until `told` closes, writes what it is
/// told and reads what comes.
async fn drive<H>(
    conn: &mut Conn,
    told: &mut mpsc::UnboundedReceiver<Say>,
    events: &mpsc::UnboundedSender<Event>,
    hear: &mut H,
) -> Result<(), LoadError>
where
    H: FnMut(&Element) -> Heard,
{
    loop {
        tokio::select! {
            said = told.recv() => {
                let Some(Say { stanza, sent }) = said else { return Ok(()) };
                let at = Instant::now();
                conn.send(&stanza).await?;
                if let Some((round, message)) = sent {
                    let _ = events.send(Event::Sent { round, message, at });
                }
            }
            frame = conn.next("the server's stanzas") => match frame {
                Ok(Frame::Stanza(el)) => match hear(&el) {
                    Heard::Report(event) => {
                        let _ = events.send(event);
                    }
                    Heard::Answer(answer) => conn.send(&answer).await?,
                    Heard::Nothing => {
                        if let Some(refusal) = unsupported(&el) {
                            conn.send(&refusal).await?;
                        }
                    }
                },
                // Quiet is no failure here: the scenario times its own waits.
                Ok(_) | Err(LoadError::Timeout(_)) => {}
                Err(e) => return Err(e),
            },
        }
    }
}

/// The error answer to an IQ request nobody handles, or `None` for any
/// other stanza.
fn unsupported(el: &Element) -> Option<String> {
    if el.name() != "iq" || !matches!(el.attr("type"), Some("get" | "set")) {
        return None;
    }
    let error = Element::new("error", ns::CLIENT)
        .with_attr("type", "cancel")
        .with_child(Element::new("service-unavailable", ns::STANZAS_ERRORS));
    Some(answer(el, "error").with_child(error).to_xml_in(ns::CLIENT))
}

/// The answer of type `kind` (`result`, `error`) to IQ `iq`, still empty.
pub fn answer(iq: &Element, kind: &str) -> Element {
    let mut reply = Element::new("iq", ns::CLIENT).with_attr("type", kind);
    if let Some(from) = iq.attr("from") {
        reply.set_attr("to", from);
    }
    reply.with_attr("id", iq.attr("id").unwrap_or_default())
}

/// The next event, failing after [`REPLY_TIMEOUT`] without one.
pub async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>, what: &'static str) -> Result<Event, LoadError> {
    match tokio::time::timeout(REPLY_TIMEOUT, events.recv()).await {
        Ok(Some(Event::Failed(why))) => Err(LoadError::Unexpected(why)),
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err(LoadError::Closed("every client's task")),
        Err(_) => Err(LoadError::Timeout(what)),
    }
}

/// Waits until each of clients `0..n` has reported what `pick` finds in an
/// event (its number); repeats count once, other events are passed over.
pub async fn each(
    n: usize,
    events: &mut mpsc::UnboundedReceiver<Event>,
    what: &'static str,
    pick: impl Fn(&Event) -> Option<usize>,
) -> Result<(), LoadError> {
    let mut seen = vec![false; n];
    let mut count = 0;
    while count < n {
        let event = next_event(events, what).await?;
        if let Some(i) = pick(&event).filter(|&i| i < n) {
            if !std::mem::replace(&mut seen[i], true) {
                count += 1;
            }
        }
    }
    Ok(())
}

/// One round: `messages` messages, each to reach `recipients` clients. The
/// to-last latency of a message is its first receipt by its last recipient
/// less its sending.
pub struct Round {
    round: usize,
    recipients: usize,
    sent: Vec<Option<Instant>>,
    last: Vec<Option<Instant>>,
    /// Whether recipient `r` has message `m`, at `m * recipients + r`.
    got: Vec<bool>,
    /// Sendings and receipts still to come.
    outstanding: usize,
    /// Receipts of a message its recipient had already, counted apart
    /// (Prosody notifies the first follower whose caps it learns twice,
    /// once at its bare JID).
    pub repeated: usize,
}

impl Round {
    pub fn new(round: usize, messages: usize, recipients: usize) -> Round {
        Round {
            round,
            recipients,
            sent: vec![None; messages],
            last: vec![None; messages],
            got: vec![false; messages * recipients],
            outstanding: messages * (1 + recipients),
            repeated: 0,
        }
    }

    /// Takes one event. A repeated receipt, this round's or a late one of
    /// an earlier round's, is counted in `repeated`; one of a later round
    /// or of a message or recipient there is not is an error.
    pub fn take(&mut self, event: Event) -> Result<(), LoadError> {
        match event {
            Event::Sent { round, message, at } if round == self.round && message < self.sent.len() => {
                if self.sent[message].is_none() {
                    self.sent[message] = Some(at);
                    self.outstanding -= 1;
                }
                Ok(())
            }
            Event::Got { round, .. } if round < self.round => {
                self.repeated += 1;
                Ok(())
            }
            Event::Got { round, message, by, at }
                if round == self.round && message < self.sent.len() && by < self.recipients =>
            {
                if std::mem::replace(&mut self.got[message * self.recipients + by], true) {
                    self.repeated += 1;
                    return Ok(());
                }
                self.outstanding -= 1;
                let last = self.last[message].get_or_insert(at);
                *last = (*last).max(at);
                Ok(())
            }
            Event::Got { round, message, by, .. } => Err(LoadError::Unexpected(format!(
                "client {by} has message {message} of round {round}, during round {}",
                self.round
            ))),
            Event::Failed(why) => Err(LoadError::Unexpected(why)),
            _ => Ok(()),
        }
    }

    /// Every message sent and received by every recipient.
    pub fn done(&self) -> bool {
        self.outstanding == 0
    }

    /// The to-last latency of each message (once [`Round::done`]).
    pub fn to_last(&self) -> impl Iterator<Item = Duration> + '_ {
        self.sent
            .iter()
            .zip(&self.last)
            .filter_map(|(sent, last)| Some((*last)?.saturating_duration_since((*sent)?)))
    }

    /// Waits for every event of the round.
    pub async fn complete(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) -> Result<(), LoadError> {
        while !self.done() {
            self.take(next_event(events, "a round's deliveries").await?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(round: usize, message: usize, at: Instant) -> Event {
        Event::Sent { round, message, at }
    }

    fn got(round: usize, message: usize, by: usize, at: Instant) -> Event {
        Event::Got { round, message, by, at }
    }

    #[test]
    fn to_last_runs_from_each_sending_to_its_last_receipt() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut round = Round::new(3, 2, 2);
        // Receipts may come before the sender's own report of its sending.
        for event in [
            got(3, 1, 0, ms(9)),
            sent(3, 0, ms(1)),
            got(3, 0, 1, ms(4)),
            Event::Ready(7),
            sent(3, 1, ms(2)),
            got(3, 1, 1, ms(5)),
            // A repeat counts apart, and its time not at all.
            got(3, 1, 1, ms(20)),
        ] {
            round.take(event).unwrap();
        }
        assert!(!round.done());
        round.take(got(3, 0, 0, ms(3))).unwrap();
        assert!(round.done());
        assert_eq!(round.repeated, 1);
        let to_last: Vec<Duration> = round.to_last().collect();
        assert_eq!(to_last, [Duration::from_millis(3), Duration::from_millis(7)]);
    }

    #[test]
    fn a_late_repeat_is_counted_and_a_stray_receipt_is_an_error() {
        let at = Instant::now();
        let mut round = Round::new(1, 1, 2);
        round.take(got(0, 0, 1, at)).unwrap();
        assert_eq!(round.repeated, 1);
        assert!(round.take(got(2, 0, 0, at)).is_err());
        assert!(round.take(got(1, 5, 0, at)).is_err());
        assert!(round.take(got(1, 0, 2, at)).is_err());
        assert!(round.take(Event::Failed("<message type='error'/>".into())).is_err());
        assert!(!round.done());
    }

    #[test]
    fn unanswered_requests_get_service_unavailable() {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("from", "localhost")
            .with_attr("id", "a'1");
        assert_eq!(
            unsupported(&iq).as_deref(),
            Some(
                "<iq type='error' to='localhost' id='a&apos;1'><error type='cancel'>\
                 <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            )
        );
        let result = iq.clone().with_attr("type", "result");
        assert_eq!(unsupported(&result), None);
        assert_eq!(unsupported(&Element::new("message", ns::CLIENT)), None);
    }
}
