//! The PEP scenario (XEP-0163): one publisher, F followers notified of
//! each publish.
//!
//! The publisher `PREFIXpub` and the followers `PREFIXf0 ..` have mutual
//! subscriptions ([`befriend`], with --register): ejabberd and Prosody
//! notify only contacts whose presence reaches the publisher. Followers
//! log in with entity capabilities (XEP-0115) saying they want
//! `http://jabber.org/protocol/tune` notifications, and answer the
//! server's disco#info query for them; the publisher is online without
//! caps. A warm-up publish, awaited at every follower (as a notification,
//! or as the last item once the server has learned the caps), makes sure
//! every server knows every follower's interest. Then each round publishes
//! one tune and is over when every follower has it. Measured:
//! notifications (F per round) per second and per server CPU-second, and
//! per publish the time from its sending to the last follower's receipt.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use shoal_actors::codec::Frame;
use shoal_actors::ns;
use shoal_actors::xep::caps;
use shoal_actors::xml::Element;
use tokio::sync::{mpsc, Semaphore};

use super::client::{close_all, Conn, LoadError, Target};
use super::rounds::{answer, each, Driven, Event, Heard, Round};
use super::scenarios::{report_deliveries, Meter};

/// XEP-0118: User Tune, the node published.
const TUNE: &str = "http://jabber.org/protocol/tune";
/// The followers' caps node (XEP-0115 §4: the software's URI).
const CAPS_NODE: &str = "urn:xmpp:shoal:load";

/// What a follower is (XEP-0030), for its caps: a client that wants tune
/// notifications (XEP-0163 §4.4).
fn follower_disco() -> Element {
    let feature = |var: &str| Element::new("feature", ns::DISCO_INFO).with_attr("var", var);
    Element::new("query", ns::DISCO_INFO)
        .with_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "client")
                .with_attr("type", "pc")
                .with_attr("name", "shoal-load"),
        )
        .with_child(feature(ns::CAPS))
        .with_child(feature(ns::DISCO_INFO))
        .with_child(feature(&format!("{TUNE}+notify")))
}

/// A follower's capabilities: its presence with `<c/>`, the node
/// `NODE#VER` they name, and what a disco#info query gets.
struct Caps {
    presence: String,
    node: String,
    info: Element,
}

impl Caps {
    fn new() -> Caps {
        let query = follower_disco();
        let ver = caps::ver_of(&query);
        let node = format!("{CAPS_NODE}#{ver}");
        let c = Element::new("c", ns::CAPS)
            .with_attr("hash", "sha-1")
            .with_attr("node", CAPS_NODE)
            .with_attr("ver", ver);
        Caps {
            presence: Element::new("presence", ns::CLIENT).with_child(c).to_xml_in(ns::CLIENT),
            info: query,
            node,
        }
    }

    /// The answer to a disco#info query, on our caps node or on none;
    /// other nodes we do not have.
    fn disco_reply(&self, iq: &Element) -> Option<String> {
        let query = iq.get_child("query", ns::DISCO_INFO)?;
        if iq.attr("type") != Some("get") {
            return None;
        }
        let reply = match query.attr("node") {
            Some(node) if node != self.node => {
                let error = Element::new("error", ns::CLIENT)
                    .with_attr("type", "cancel")
                    .with_child(Element::new("item-not-found", ns::STANZAS_ERRORS));
                answer(iq, "error").with_child(error)
            }
            node => {
                let mut info = self.info.clone();
                if let Some(node) = node {
                    info.set_attr("node", node);
                }
                answer(iq, "result").with_child(info)
            }
        };
        Some(reply.to_xml_in(ns::CLIENT))
    }
}

/// The titles published in one run: `RUNr{r}` and `RUNwarm`, so that an
/// item of an earlier run, sent as the last one at login, is never taken
/// for this run's.
struct Titles {
    run: String,
}

impl Titles {
    fn new() -> Titles {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Titles { run: format!("{ms}.") }
    }

    fn warm_up(&self) -> String {
        format!("{}warm", self.run)
    }

    fn round(&self, round: usize) -> String {
        format!("{}r{round}", self.run)
    }

    /// What follower `i` makes of a title: warm-up, a round, or nothing.
    fn event(&self, i: usize, title: &str) -> Option<Event> {
        let ours = title.strip_prefix(self.run.as_str())?;
        if ours == "warm" {
            return Some(Event::Ready(i));
        }
        let round = ours.strip_prefix('r')?.parse().ok()?;
        Some(Event::Got {
            round,
            message: 0,
            by: i,
            at: Instant::now(),
        })
    }
}

/// The title of a tune notification (the item itself or, at login, the
/// last one), if `el` is one.
fn tune_title(el: &Element) -> Option<String> {
    let items = el
        .get_child("event", ns::PUBSUB_EVENT)?
        .get_child("items", ns::PUBSUB_EVENT)?;
    if items.attr("node") != Some(TUNE) {
        return None;
    }
    let tune = items.get_child("item", ns::PUBSUB_EVENT)?.get_child("tune", TUNE)?;
    Some(tune.get_child("title", TUNE)?.text())
}

/// The publish of one tune, as in XEP-0163 §2.
fn publish(id: &str, title: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='{}'><publish node='{TUNE}'><item id='current'>\
         <tune xmlns='{TUNE}'><title>{title}</title></tune></item></publish></pubsub></iq>",
        ns::PUBSUB
    )
}

/// Follower `i`'s view of one stanza.
fn hear_follower(i: usize, caps: &Caps, titles: &Titles, el: &Element) -> Heard {
    match el.name() {
        "iq" => caps.disco_reply(el).map_or(Heard::Nothing, Heard::Answer),
        "message" => match tune_title(el).and_then(|t| titles.event(i, &t)) {
            Some(event) => Heard::Report(event),
            None => Heard::Nothing,
        },
        _ => Heard::Nothing,
    }
}

/// The publisher's view: only a refused publish matters.
fn hear_publisher(el: &Element) -> Heard {
    if el.name() == "iq" && el.attr("type") == Some("error") {
        return Heard::Report(Event::Failed(format!("a publish was refused: {el}")));
    }
    Heard::Nothing
}

/// F followers, R rounds (see the module's comment).
pub async fn pep(
    target: &Target,
    prefix: &str,
    followers: usize,
    rounds: usize,
    parallel: usize,
    server_pid: Option<u32>,
) -> Result<(), LoadError> {
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let (mut c, _) = Conn::login(target, 0, &format!("{prefix}pub"), "pub", None).await?;
    c.available().await?;
    let publisher = Driven::spawn(c, events_tx.clone(), hear_publisher);
    let (caps, titles) = (Arc::new(Caps::new()), Arc::new(Titles::new()));
    let gate = Arc::new(Semaphore::new(parallel));
    let logins: Vec<_> = (0..followers)
        .map(|i| {
            let (target, user, gate, events) =
                (target.clone(), format!("{prefix}f{i}"), gate.clone(), events_tx.clone());
            let (caps, titles) = (caps.clone(), titles.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                let (mut c, _) = Conn::login(&target, i + 1, &user, "f", None).await?;
                c.send(&caps.presence).await?;
                // Driven from here: the server's caps query comes any time.
                Ok::<_, LoadError>(Driven::spawn(c, events, move |el| hear_follower(i, &caps, &titles, el)))
            })
        })
        .collect();
    drop(events_tx);
    let mut clients = Vec::with_capacity(followers);
    for l in logins {
        clients.push(l.await.map_err(|e| LoadError::Unexpected(e.to_string()))??);
    }
    publisher.say(publish("warm", &titles.warm_up()), None)?;
    each(
        followers,
        &mut events,
        "every follower to have the warm-up item (mutual subscriptions are made with --register)",
        |e| match e {
            Event::Ready(i) => Some(*i),
            _ => None,
        },
    )
    .await?;

    let meter = Meter::start(server_pid);
    let mut to_last = Vec::with_capacity(rounds);
    let mut repeated = 0;
    for r in 0..rounds {
        let mut round = Round::new(r, 1, followers);
        publisher.say(publish(&format!("pub{r}"), &titles.round(r)), Some((r, 0)))?;
        round.complete(&mut events).await?;
        to_last.extend(round.to_last());
        repeated += round.repeated;
    }
    let (wall, driver_cpu, server_cpu) = meter.stop();
    let mut conns = vec![publisher.stop().await?];
    for c in clients {
        conns.push(c.stop().await?);
    }
    close_all(conns).await?;

    report_deliveries(
        "pep",
        &[("followers", followers), ("rounds", rounds)],
        followers * rounds,
        (wall, driver_cpu, server_cpu),
        &mut to_last,
        Some(repeated),
    );
    Ok(())
}

/// Makes the publisher's and the followers' subscriptions mutual, through
/// the stanza path (RFC 6121 §3): each follower asks the publisher, who
/// approves and asks back, and the follower approves. Done when every
/// follower's roster has the publisher with `both`. Safe to repeat: what
/// is mutual already is left alone, and what is half made is completed.
pub async fn befriend(target: &Target, prefix: &str, followers: usize, parallel: usize) -> Result<(), LoadError> {
    let publisher_jid = format!("{prefix}pub@{}", target.domain);
    let (mut publisher, _) = Conn::login(target, 0, &format!("{prefix}pub"), "setup", None).await?;
    publisher
        .send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq><presence/>")
        .await?;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let follower_prefix = format!("{prefix}f");
    let approver = tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                _ = &mut stop_rx => return Ok::<_, LoadError>(publisher),
                frame = publisher.next("subscription requests") => frame,
            };
            let el = match frame {
                Ok(Frame::Stanza(el)) => el,
                Ok(_) | Err(LoadError::Timeout(_)) => continue,
                Err(e) => return Err(e),
            };
            let from = el.attr("from").unwrap_or_default().to_owned();
            match (el.name(), el.attr("type")) {
                // Followers who approved the publisher before but were
                // never approved by it (a run cut short) are asked again.
                ("iq", Some("result")) if el.attr("id") == Some("roster") => {
                    let items = el.get_child("query", ns::ROSTER).into_iter().flat_map(|q| q.children());
                    let asks: String = items
                        .filter(|it| !matches!(it.attr("subscription"), Some("to" | "both")))
                        .filter_map(|it| it.attr("jid"))
                        .filter(|jid| jid.starts_with(follower_prefix.as_str()))
                        .map(|jid| format!("<presence to='{jid}' type='subscribe'/>"))
                        .collect();
                    if !asks.is_empty() {
                        publisher.send(&asks).await?;
                    }
                }
                ("iq", Some("set")) => publisher.send(&roster_push_result(&el)).await?,
                ("presence", Some("subscribe")) => {
                    publisher
                        .send(&format!(
                            "<presence to='{from}' type='subscribed'/><presence to='{from}' type='subscribe'/>"
                        ))
                        .await?;
                }
                _ => {}
            }
        }
    });
    let gate = Arc::new(Semaphore::new(parallel));
    let tasks: Vec<_> = (0..followers)
        .map(|i| {
            let (target, gate, publisher_jid) = (target.clone(), gate.clone(), publisher_jid.clone());
            let user = format!("{prefix}f{i}");
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                let (mut c, _) = Conn::login(&target, i + 1, &user, "setup", None).await?;
                c.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq><presence/>")
                    .await?;
                follow(&mut c, &publisher_jid).await?;
                Ok::<_, LoadError>(c)
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(followers + 1);
    for t in tasks {
        conns.push(t.await.map_err(|e| LoadError::Unexpected(e.to_string()))??);
    }
    let _ = stop_tx.send(());
    conns.push(approver.await.map_err(|e| LoadError::Unexpected(e.to_string()))??);
    close_all(conns).await
}

/// The publisher's subscription as one of `el`'s roster items (a roster
/// result or push) gives it.
fn subscription_to<'a>(el: &'a Element, publisher_jid: &str) -> Option<&'a str> {
    el.get_child("query", ns::ROSTER)?
        .children()
        .find(|it| it.attr("jid") == Some(publisher_jid))?
        .attr("subscription")
}

/// The result a roster push gets (RFC 6121 §2.1.6).
fn roster_push_result(push: &Element) -> String {
    answer(push, "result").to_xml_in(ns::CLIENT)
}

/// One follower, until its roster has the publisher with `both`: it asks
/// the publisher unless subscribed already, and approves its request.
async fn follow(c: &mut Conn, publisher_jid: &str) -> Result<(), LoadError> {
    loop {
        let Frame::Stanza(el) = c.next("a mutual subscription with the publisher").await? else {
            continue;
        };
        match (el.name(), el.attr("type")) {
            ("iq", Some("result" | "set")) => {
                if el.attr("type") == Some("set") {
                    c.send(&roster_push_result(&el)).await?;
                }
                match subscription_to(&el, publisher_jid) {
                    Some("both") => return Ok(()),
                    // Approved already: the publisher's own request comes.
                    Some("to") => {}
                    _ if el.attr("id") == Some("roster") => {
                        c.send(&format!("<presence to='{publisher_jid}' type='subscribe'/>"))
                            .await?;
                    }
                    _ => {}
                }
            }
            ("presence", Some("subscribe")) => {
                c.send(&format!("<presence to='{publisher_jid}' type='subscribed'/>"))
                    .await?;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_announce_tune_notifications() {
        let caps = Caps::new();
        // XEP-0115 §5.1 over client/pc//shoal-load, caps, disco#info and
        // tune+notify, computed independently.
        assert_eq!(caps.node, "urn:xmpp:shoal:load#pVaL7uyPR24mAvb+Jl0BhTCGxo0=");
        assert_eq!(
            caps.presence,
            "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:xmpp:shoal:load' \
             ver='pVaL7uyPR24mAvb+Jl0BhTCGxo0='/></presence>"
        );
        let ask = |node: Option<&str>| {
            let mut query = Element::new("query", ns::DISCO_INFO);
            if let Some(node) = node {
                query.set_attr("node", node);
            }
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("from", "localhost")
                .with_attr("id", "caps1")
                .with_child(query)
        };
        let info = "<identity category='client' type='pc' name='shoal-load'/>\
                    <feature var='http://jabber.org/protocol/caps'/>\
                    <feature var='http://jabber.org/protocol/disco#info'/>\
                    <feature var='http://jabber.org/protocol/tune+notify'/>";
        assert_eq!(
            caps.disco_reply(&ask(Some(caps.node.as_str()))),
            Some(format!(
                "<iq type='result' to='localhost' id='caps1'><query xmlns='http://jabber.org/protocol/disco#info' \
                 node='urn:xmpp:shoal:load#pVaL7uyPR24mAvb+Jl0BhTCGxo0='>{info}</query></iq>"
            ))
        );
        assert_eq!(
            caps.disco_reply(&ask(None)),
            Some(format!(
                "<iq type='result' to='localhost' id='caps1'>\
                 <query xmlns='http://jabber.org/protocol/disco#info'>{info}</query></iq>"
            ))
        );
        assert_eq!(
            caps.disco_reply(&ask(Some("urn:xmpp:shoal:load#other"))).as_deref(),
            Some(
                "<iq type='error' to='localhost' id='caps1'><error type='cancel'>\
                 <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            )
        );
    }

    #[test]
    fn only_this_runs_titles_count() {
        let titles = Titles { run: "7.".into() };
        let tune = |title: &str| {
            Element::new("message", ns::CLIENT).with_child(
                Element::new("event", ns::PUBSUB_EVENT).with_child(
                    Element::new("items", ns::PUBSUB_EVENT)
                        .with_attr("node", TUNE)
                        .with_child(
                            Element::new("item", ns::PUBSUB_EVENT)
                                .with_attr("id", "current")
                                .with_child(
                                    Element::new("tune", TUNE).with_child(Element::new("title", TUNE).with_text(title)),
                                ),
                        ),
                ),
            )
        };
        let caps = Caps::new();
        let hear = |el: &Element| hear_follower(3, &caps, &titles, el);
        assert_eq!(hear(&tune(&titles.warm_up())), Heard::Report(Event::Ready(3)));
        assert!(matches!(
            hear(&tune(&titles.round(41))),
            Heard::Report(Event::Got {
                round: 41,
                message: 0,
                ..
            })
        ));
        assert_eq!(hear(&tune("6.r41")), Heard::Nothing);
        assert_eq!(hear(&tune("7.rx")), Heard::Nothing);
    }

    #[test]
    fn a_roster_item_gives_the_subscription() {
        let item = |sub: &str| {
            Element::new("iq", ns::CLIENT).with_attr("type", "set").with_child(
                Element::new("query", ns::ROSTER).with_child(
                    Element::new("item", ns::ROSTER)
                        .with_attr("jid", "peppub@localhost")
                        .with_attr("subscription", sub),
                ),
            )
        };
        assert_eq!(subscription_to(&item("both"), "peppub@localhost"), Some("both"));
        assert_eq!(subscription_to(&item("both"), "other@localhost"), None);
    }
}
