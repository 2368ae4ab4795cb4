//! The MUC scenario (XEP-0045): N occupants in one room, T of them talking.
//!
//! Occupants `PREFIXo0 ..` log in and join `bench@conference.DOMAIN` as
//! `o0 ..`, each awaiting its self-presence (status 110). `o0` comes
//! first: a room it creates (201) it configures at once, which unlocks it
//! on the servers that lock new rooms (Prosody, Shoal) and raises its
//! occupant limit on those that have one. Then everyone waits to have seen
//! every occupant's presence, so that the joins' N²/2 presence stanzas are
//! behind before anything is timed. Each round, the T talkers send one
//! groupchat message each at once; the round is over when every occupant
//! has every message (talkers get their own echo). Measured: deliveries
//! (N·T per round) per second and per server CPU-second, and per message
//! the time from its sending to its last receipt.
//!
//! Afterwards everyone but `o0` leaves, and `o0` waits to see them go,
//! so that the server is done with the room before the next scenario.

use std::sync::Arc;
use std::time::Instant;

use shoal_actors::codec::Frame;
use shoal_actors::ns;
use shoal_actors::xep::forms;
use shoal_actors::xml::Element;
use tokio::sync::{mpsc, Semaphore};

use super::client::{close_all, Conn, LoadError, Target};
use super::rounds::{each, Driven, Event, Heard, Round};
use super::scenarios::{report_deliveries, Meter};

/// The room, on the server's MUC service at `conference.DOMAIN` (the
/// default of all three servers).
fn room_of(target: &Target) -> String {
    format!("bench@conference.{}", target.domain)
}

/// The body of talker `talker`'s message in round `round`.
fn body(round: usize, talker: usize) -> String {
    format!("r{round}t{talker}")
}

/// (round, talker) from a body written by [`body`].
fn parse_body(body: &str) -> Option<(usize, usize)> {
    let (round, talker) = body.strip_prefix('r')?.split_once('t')?;
    Some((round.parse().ok()?, talker.parse().ok()?))
}

/// The occupant number in `room/oN`.
fn occupant_of(from: &str, room: &str) -> Option<usize> {
    from.strip_prefix(room)?.strip_prefix("/o")?.parse().ok()
}

/// The status codes of a MUC presence's `<x xmlns='…muc#user'/>`.
fn status_codes(presence: &Element) -> Vec<String> {
    presence
        .get_child("x", ns::MUC_USER)
        .into_iter()
        .flat_map(|x| x.children())
        .filter(|c| c.is("status", ns::MUC_USER))
        .filter_map(|c| c.attr("code").map(str::to_owned))
        .collect()
}

/// The instant-room configuration `o0` submits to a room it created: it
/// unlocks the room (XEP-0045 §10.1.2) on Prosody and Shoal, and raises
/// ejabberd's default of 200 occupants (its service caps it at
/// `max_users`). Prosody 0.12 has no such field and ignores it. Temporary:
/// the room goes when the last occupant does.
fn unlock(room: &str, occupants: usize) -> String {
    let field = |var: &str, value: &str| {
        Element::new("field", forms::NS)
            .with_attr("var", var)
            .with_child(Element::new("value", forms::NS).with_text(value))
    };
    let form = Element::new("x", forms::NS)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig").with_attr("type", "hidden"))
        .with_child(field("muc#roomconfig_maxusers", &occupants.max(1000).to_string()))
        .with_child(field("muc#roomconfig_persistentroom", "0"));
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("to", room)
        .with_attr("id", "unlock")
        .with_child(Element::new("query", ns::MUC_OWNER).with_child(form))
        .to_xml_in(ns::CLIENT)
}

/// What an occupant has seen of the others: the presence of each (itself
/// included), until it has seen all.
struct Seen {
    by: Vec<bool>,
    count: usize,
}

impl Seen {
    fn new(occupants: usize) -> Seen {
        Seen {
            by: vec![false; occupants],
            count: 0,
        }
    }

    /// Marks occupant `j`: true when that makes everyone.
    fn mark(&mut self, j: usize) -> bool {
        match self.by.get_mut(j) {
            Some(seen) if !*seen => {
                *seen = true;
                self.count += 1;
                self.count == self.by.len()
            }
            _ => false,
        }
    }
}

/// Occupant `i`'s view of one stanza, once joined.
fn hear(i: usize, room: &str, seen: &mut Seen, el: &Element) -> Heard {
    let from = el.attr("from").unwrap_or_default();
    match (el.name(), el.attr("type")) {
        ("message", Some("groupchat")) => {
            // History (none asked for) and the subject carry no round's body.
            let text = el.get_child("body", ns::CLIENT).map(Element::text);
            match text.as_deref().and_then(parse_body) {
                Some((round, message)) if !el.has_child("delay", ns::DELAY) => Heard::Report(Event::Got {
                    round,
                    message,
                    by: i,
                    at: Instant::now(),
                }),
                _ => Heard::Nothing,
            }
        }
        ("message" | "presence", Some("error")) => Heard::Report(Event::Failed(el.to_string())),
        ("presence", None) => match occupant_of(from, room) {
            Some(j) if seen.mark(j) => Heard::Report(Event::Ready(i)),
            _ => Heard::Nothing,
        },
        ("presence", Some("unavailable")) => match occupant_of(from, room) {
            Some(j) => Heard::Report(Event::Left(j)),
            None => Heard::Nothing,
        },
        _ => Heard::Nothing,
    }
}

/// Occupant `i` logs in, joins, and is driven from its self-presence on;
/// `o0` also unlocks the room if it made it.
async fn join(
    target: &Target,
    prefix: &str,
    i: usize,
    occupants: usize,
    events: mpsc::UnboundedSender<Event>,
) -> Result<Driven, LoadError> {
    let room = room_of(target);
    let (mut c, _) = Conn::login(target, i, &format!("{prefix}o{i}"), "muc", None).await?;
    c.available().await?;
    // No history: messages of earlier runs are not this run's.
    c.send(&format!(
        "<presence to='{room}/o{i}'><x xmlns='{}'><history maxstanzas='0'/></x></presence>",
        ns::MUC
    ))
    .await?;
    let mut seen = Seen::new(occupants);
    let created = loop {
        let Frame::Stanza(el) = c.next("the room's self-presence").await? else {
            continue;
        };
        if el.name() != "presence" {
            continue;
        }
        if el.attr("type") == Some("error") {
            return Err(LoadError::Unexpected(format!("o{i} cannot join: {el}")));
        }
        let Some(j) = el.attr("from").and_then(|f| occupant_of(f, &room)) else {
            continue;
        };
        if el.attr("type").is_none() {
            seen.mark(j);
        }
        let codes = status_codes(&el);
        if j == i && codes.iter().any(|c| c == "110") {
            break codes.iter().any(|c| c == "201");
        }
    };
    if created {
        // Alone in the room: nothing else comes but the answer (and
        // perhaps a configuration-change message).
        c.send(&unlock(&room, occupants)).await?;
        loop {
            let Frame::Stanza(el) = c.next("the room configuration's answer").await? else {
                continue;
            };
            if el.name() == "iq" && el.attr("id") == Some("unlock") {
                if el.attr("type") != Some("result") {
                    return Err(LoadError::Unexpected(format!("the room was not configured: {el}")));
                }
                break;
            }
        }
    }
    let all = seen.count == occupants;
    let driven = Driven::spawn(c, events.clone(), move |el| hear(i, &room, &mut seen, el));
    if all {
        // The last to join may have seen everyone before its self-presence.
        let _ = events.send(Event::Ready(i));
    }
    Ok(driven)
}

/// N occupants, T talkers, R rounds (see the module's comment).
pub async fn muc(
    target: &Target,
    prefix: &str,
    occupants: usize,
    talkers: usize,
    rounds: usize,
    parallel: usize,
    server_pid: Option<u32>,
) -> Result<(), LoadError> {
    if occupants == 0 || talkers == 0 || talkers > occupants {
        return Err(LoadError::Unexpected(format!(
            "{talkers} talkers among {occupants} occupants: between 1 and the occupants"
        )));
    }
    let room = room_of(target);
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    // o0 first: it makes the room (and unlocks it) before anyone else comes.
    let mut clients = vec![join(target, prefix, 0, occupants, events_tx.clone()).await?];
    let gate = Arc::new(Semaphore::new(parallel));
    let joins: Vec<_> = (1..occupants)
        .map(|i| {
            let (target, prefix, gate, events) = (target.clone(), prefix.to_owned(), gate.clone(), events_tx.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                join(&target, &prefix, i, occupants, events).await
            })
        })
        .collect();
    drop(events_tx);
    for j in joins {
        clients.push(j.await.map_err(|e| LoadError::Unexpected(e.to_string()))??);
    }
    each(
        occupants,
        &mut events,
        "every occupant to see everyone's presence in the room",
        |e| match e {
            Event::Ready(i) => Some(*i),
            _ => None,
        },
    )
    .await?;

    let meter = Meter::start(server_pid);
    let mut to_last = Vec::with_capacity(talkers * rounds);
    let mut repeated = 0;
    for r in 0..rounds {
        let mut round = Round::new(r, talkers, occupants);
        for (t, talker) in clients.iter().take(talkers).enumerate() {
            let message = format!(
                "<message to='{room}' type='groupchat'><body>{}</body></message>",
                body(r, t)
            );
            talker.say(message, Some((r, t)))?;
        }
        round.complete(&mut events).await?;
        to_last.extend(round.to_last());
        repeated += round.repeated;
    }
    let (wall, driver_cpu, server_cpu) = meter.stop();

    report_deliveries(
        "muc",
        &[("occupants", occupants), ("talkers", talkers), ("rounds", rounds)],
        occupants * talkers * rounds,
        (wall, driver_cpu, server_cpu),
        &mut to_last,
        Some(repeated),
    );

    // Measured and reported: now the room empties for the next run.
    // Everyone but o0 leaves (by closing its stream, as a client that
    // quits does); o0 sees them go.
    let mut clients = clients.into_iter();
    let first = clients.next();
    let mut leaving = Vec::with_capacity(occupants - 1);
    for c in clients {
        leaving.push(c.stop().await?);
    }
    close_all(leaving).await?;
    each(occupants - 1, &mut events, "the occupants to leave", |e| match e {
        Event::Left(j) if *j >= 1 => Some(j - 1),
        _ => None,
    })
    .await?;
    if let Some(first) = first {
        close_all(vec![first.stop().await?]).await?;
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_their_round_and_talker() {
        assert_eq!(parse_body(&body(12, 3)), Some((12, 3)));
        assert_eq!(parse_body("hello"), None);
        assert_eq!(parse_body("r1"), None);
        assert_eq!(
            occupant_of("bench@conference.localhost/o17", "bench@conference.localhost"),
            Some(17)
        );
        assert_eq!(
            occupant_of("bench@conference.localhost", "bench@conference.localhost"),
            None
        );
        assert_eq!(
            occupant_of("other@conference.localhost/o1", "bench@conference.localhost"),
            None
        );
    }

    #[test]
    fn the_unlocking_form_is_an_instant_room_configuration() {
        assert_eq!(
            unlock("bench@conference.localhost", 50),
            "<iq type='set' to='bench@conference.localhost' id='unlock'>\
             <query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
             <field var='muc#roomconfig_maxusers'><value>1000</value></field>\
             <field var='muc#roomconfig_persistentroom'><value>0</value></field></x></query></iq>"
        );
    }

    #[test]
    fn an_occupant_is_ready_once_it_has_seen_everyone() {
        let room = "bench@conference.localhost";
        let mut seen = Seen::new(2);
        let presence = |from: &str| Element::new("presence", ns::CLIENT).with_attr("from", from);
        assert_eq!(
            hear(1, room, &mut seen, &presence(&format!("{room}/o1"))),
            Heard::Nothing
        );
        assert_eq!(
            hear(1, room, &mut seen, &presence(&format!("{room}/o1"))),
            Heard::Nothing
        );
        assert_eq!(
            hear(1, room, &mut seen, &presence(&format!("{room}/o0"))),
            Heard::Report(Event::Ready(1))
        );
        let left = presence(&format!("{room}/o0")).with_attr("type", "unavailable");
        assert_eq!(hear(1, room, &mut seen, &left), Heard::Report(Event::Left(0)));
        let subject = Element::new("message", ns::CLIENT)
            .with_attr("from", room)
            .with_attr("type", "groupchat")
            .with_child(Element::new("subject", ns::CLIENT));
        assert_eq!(hear(1, room, &mut seen, &subject), Heard::Nothing);
        let message = Element::new("message", ns::CLIENT)
            .with_attr("from", format!("{room}/o0"))
            .with_attr("type", "groupchat")
            .with_child(Element::new("body", ns::CLIENT).with_text("r4t0"));
        assert!(matches!(
            hear(1, room, &mut seen, &message),
            Heard::Report(Event::Got {
                round: 4,
                message: 0,
                ..
            })
        ));
    }
}
