//! The delivered store: every IQ request routed to a service, until the
//! service answers it, times out, or goes away. An answer counts only if
//! it comes from the service that was asked (each service has its own
//! store), to the requester, with the request's id, and only once: a late,
//! repeated or unasked-for answer is dropped. Bounded per service and per
//! requester, so a flood of requests to a slow service cannot grow memory
//! without limit.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::PublishOptions;
use crate::error::{StanzaCondition, StanzaError};
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::stanza::{IqType, Kind, Stanza};
use crate::xml::Element;

/// A request waiting for its answer.
#[derive(Clone, Debug)]
pub struct Waiting {
    pub requester: Jid,
    /// The JID the request was sent to (the service's domain or a JID at it).
    pub service: Jid,
    pub id: String,
    seq: u64,
}

impl Waiting {
    /// The error the requester gets instead of an answer.
    pub fn error(&self, condition: StanzaCondition) -> Stanza {
        let el = Element::new("iq", ns::CLIENT)
            .with_attr("id", self.id.as_str())
            .with_child(StanzaError::new(condition).to_element());
        Stanza::new(
            Kind::Iq(IqType::Error),
            Some(self.service.clone()),
            Some(self.requester.clone()),
            el,
        )
    }
}

/// What became of a request offered to the store.
#[derive(Debug, PartialEq, Eq)]
pub enum Track {
    Tracked,
    /// Not delivered: the requester gets this error.
    Refused(StanzaCondition),
}

type Key = (Jid, String);

/// Hashed with foldhash (seeded per process), as the session table: this
/// map is touched twice per request to a service.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct Delivered {
    waiting: Map<Key, Waiting>,
    /// Deadlines in the order they were set (one timeout per service, so
    /// also in time order); answered entries are skipped when met.
    deadlines: VecDeque<(Key, u64, Instant)>,
    per_requester: Map<BareJid, usize>,
    next_seq: u64,
}

impl Delivered {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Records an IQ request about to be delivered.
    pub fn track(&mut self, request: &Stanza, options: &PublishOptions) -> Track {
        let (Some(requester), Some(service), Some(id)) = (request.from(), request.to(), request.id()) else {
            return Track::Refused(StanzaCondition::BadRequest);
        };
        let key = (requester.clone(), id.to_owned());
        if self.waiting.contains_key(&key) {
            // Its answer could not be told from the earlier one's.
            return Track::Refused(StanzaCondition::Conflict);
        }
        let bare = requester.to_bare();
        let mine = self.per_requester.get(&bare).copied().unwrap_or(0);
        if self.waiting.len() >= options.max_pending || mine >= options.max_pending_per_requester {
            return Track::Refused(StanzaCondition::ResourceConstraint);
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let deadline = Instant::now() + options.iq_timeout;
        self.deadlines.push_back((key.clone(), seq, deadline));
        self.waiting.insert(
            key,
            Waiting {
                requester: requester.clone(),
                service: service.clone(),
                id: id.to_owned(),
                seq,
            },
        );
        *self.per_requester.entry(bare).or_default() += 1;
        Track::Tracked
    }

    /// An answer to `requester`'s request `id`: true (and forgotten) if it
    /// was waiting.
    pub fn answer(&mut self, requester: &Jid, id: &str) -> bool {
        self.remove(&(requester.clone(), id.to_owned())).is_some()
    }

    fn remove(&mut self, key: &Key) -> Option<Waiting> {
        let waiting = self.waiting.remove(key)?;
        let bare = waiting.requester.to_bare();
        if let Some(n) = self.per_requester.get_mut(&bare) {
            *n -= 1;
            if *n == 0 {
                self.per_requester.remove(&bare);
            }
        }
        if self.waiting.is_empty() {
            // Nothing waits: no deadline left to keep.
            self.deadlines = VecDeque::new();
        }
        Some(waiting)
    }

    /// Requests whose time is up at `now`, forgotten.
    pub fn expired(&mut self, now: Instant) -> Vec<Waiting> {
        let mut out = Vec::new();
        while let Some((_, _, deadline)) = self.deadlines.front() {
            if *deadline > now {
                break;
            }
            let Some((key, seq, _)) = self.deadlines.pop_front() else {
                break;
            };
            if self.waiting.get(&key).is_some_and(|w| w.seq == seq) {
                out.extend(self.remove(&key));
            }
        }
        out
    }

    /// Every request still waiting, forgotten (the service went away).
    pub fn drain(&mut self) -> Vec<Waiting> {
        self.per_requester.clear();
        self.deadlines.clear();
        self.waiting.drain().map(|(_, w)| w).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn iq(from: &str, id: &str) -> Stanza {
        let el = Element::new("iq", ns::CLIENT)
            .with_attr("id", id)
            .with_child(Element::new("query", "urn:x"));
        Stanza::new(
            Kind::Iq(IqType::Get),
            Some(Jid::parse(from).unwrap()),
            Some(Jid::parse("bot.localhost").unwrap()),
            el,
        )
    }

    fn options() -> PublishOptions {
        PublishOptions {
            max_pending: 3,
            max_pending_per_requester: 2,
            iq_timeout: Duration::from_secs(10),
            ..PublishOptions::default()
        }
    }

    #[test]
    fn an_answer_counts_once_and_only_for_what_was_asked() {
        let mut d = Delivered::default();
        let alice = Jid::parse("alice@localhost/a").unwrap();
        assert_eq!(d.track(&iq("alice@localhost/a", "1"), &options()), Track::Tracked);
        assert_eq!(
            d.track(&iq("alice@localhost/a", "1"), &options()),
            Track::Refused(StanzaCondition::Conflict)
        );
        assert!(!d.answer(&alice, "2"), "never asked");
        assert!(
            !d.answer(&Jid::parse("bob@localhost/b").unwrap(), "1"),
            "asked by someone else"
        );
        assert!(d.answer(&alice, "1"));
        assert!(!d.answer(&alice, "1"), "answered already");
        assert!(d.is_empty());
    }

    #[test]
    fn bounded_per_requester_and_in_all() {
        let mut d = Delivered::default();
        let o = options();
        assert_eq!(d.track(&iq("alice@localhost/a", "1"), &o), Track::Tracked);
        assert_eq!(d.track(&iq("alice@localhost/b", "2"), &o), Track::Tracked);
        assert_eq!(
            d.track(&iq("alice@localhost/a", "3"), &o),
            Track::Refused(StanzaCondition::ResourceConstraint),
            "two per account"
        );
        assert_eq!(d.track(&iq("bob@localhost/b", "1"), &o), Track::Tracked);
        assert_eq!(
            d.track(&iq("carol@localhost/c", "1"), &o),
            Track::Refused(StanzaCondition::ResourceConstraint),
            "three in all"
        );
        assert!(d.answer(&Jid::parse("alice@localhost/a").unwrap(), "1"));
        assert_eq!(d.track(&iq("alice@localhost/a", "3"), &o), Track::Tracked);
    }

    #[test]
    fn expiry_in_order_skipping_what_was_answered() {
        let mut d = Delivered::default();
        let o = options();
        let t0 = Instant::now();
        for id in ["1", "2", "3"] {
            d.track(&iq(&format!("u{id}@localhost/r"), id), &o);
        }
        assert!(d.answer(&Jid::parse("u2@localhost/r").unwrap(), "2"));
        assert!(d.expired(t0).is_empty());
        let gone: Vec<String> = d
            .expired(t0 + Duration::from_secs(11))
            .into_iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(gone, ["1", "3"]);
        assert!(d.is_empty());
        let err = Waiting {
            requester: Jid::parse("u1@localhost/r").unwrap(),
            service: Jid::parse("bot.localhost").unwrap(),
            id: "1".into(),
            seq: 0,
        }
        .error(StanzaCondition::RemoteServerTimeout);
        assert_eq!(
            &err.to_bytes()[..],
            b"<iq id='1' type='error' from='bot.localhost' to='u1@localhost/r'><error type='wait'>\
<remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        );
    }
}
