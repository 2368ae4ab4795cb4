//! The components scenario: clients → server → an external component
//! (XEP-0114) → server → clients. The driver is the component itself: one
//! TCP connection on tokio that answers every IQ get/set with an empty
//! result and echoes every message, so that what is measured is the
//! server's routing to and from a component, not a component's work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use shoal_actors::codec::{CodecLimits, Frame, XmppCodec};
use shoal_actors::component::handshake_digest;
use shoal_actors::ns;
use shoal_actors::xml::Element;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use tokio_util::codec::FramedRead;

use super::client::{Conn, LoadError, Target, REPLY_TIMEOUT};
use super::scenarios::{json_num, Meter};
use super::Spread;

/// Replies gathered before one write: a burst of requests is answered in
/// one system call, but a reply never waits for more input.
const FLUSH_BYTES: usize = 64 * 1024;

/// Where the component connects, and as what.
#[derive(Clone, Debug)]
pub struct ComponentTarget {
    pub addr: SocketAddr,
    pub domain: String,
    pub secret: String,
}

/// What the clients send through the component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `<iq type='get'>` pings, answered with empty results.
    Iq,
    /// Chat messages, echoed back.
    Message,
}

impl Mode {
    /// Also the name of the stanzas sent, and of their answers.
    fn name(self) -> &'static str {
        match self {
            Mode::Iq => "iq",
            Mode::Message => "message",
        }
    }

    fn request(self, seq: usize, to: &str) -> String {
        match self {
            Mode::Iq => format!("<iq type='get' id='{seq}' to='{to}'><ping xmlns='urn:xmpp:ping'/></iq>"),
            Mode::Message => format!("<message type='chat' id='{seq}' to='{to}'><body>{seq}</body></message>"),
        }
    }
}

/// For the few values the driver writes into attributes by hand.
fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A component stream that has shaken hands.
struct Component {
    rx: FramedRead<OwnedReadHalf, XmppCodec>,
    tx: OwnedWriteHalf,
}

async fn next_frame(rx: &mut FramedRead<OwnedReadHalf, XmppCodec>, what: &'static str) -> Result<Frame, LoadError> {
    match tokio::time::timeout(REPLY_TIMEOUT, rx.next()).await {
        Ok(Some(Ok(f))) => Ok(f),
        Ok(Some(Err(e))) => Err(LoadError::Unexpected(e.to_string())),
        Ok(None) => Err(LoadError::Closed(what)),
        Err(_) => Err(LoadError::Timeout(what)),
    }
}

impl Component {
    /// Connects, opens a `jabber:component:accept` stream and shakes hands.
    async fn connect(target: &ComponentTarget) -> Result<Component, LoadError> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let (r, mut tx) = stream.into_split();
        // The component codec reads the stream's content namespace as
        // jabber:client, so stanzas serialise back without an xmlns.
        let mut rx = FramedRead::new(r, XmppCodec::new(CodecLimits::default()).for_component());
        tx.write_all(
            format!(
                "<stream:stream xmlns='{}' xmlns:stream='{}' to='{}'>",
                ns::COMPONENT_ACCEPT,
                ns::STREAM,
                escape_attr(&target.domain)
            )
            .as_bytes(),
        )
        .await?;
        let id = match next_frame(&mut rx, "the component stream header").await? {
            Frame::StreamOpen(h) => {
                h.id.ok_or_else(|| LoadError::Unexpected("the component stream header has no id".into()))?
            }
            other => return Err(LoadError::Unexpected(format!("component stream: {other:?}"))),
        };
        tx.write_all(format!("<handshake>{}</handshake>", handshake_digest(&id, &target.secret)).as_bytes())
            .await?;
        match next_frame(&mut rx, "the component handshake").await? {
            Frame::Stanza(el) if el.name() == "handshake" => Ok(Component { rx, tx }),
            Frame::Stanza(el) => Err(LoadError::Unexpected(format!("component handshake: {el}"))),
            other => Err(LoadError::Unexpected(format!("component handshake: {other:?}"))),
        }
    }

    /// Answers until `stop`, then closes the stream. Replies to everything
    /// already read go out in one write.
    async fn serve(mut self, mut stop: oneshot::Receiver<()>) -> Result<(), LoadError> {
        let mut out = Vec::with_capacity(FLUSH_BYTES);
        loop {
            let mut frame = tokio::select! {
                _ = &mut stop => break,
                f = self.rx.next() => f,
            };
            loop {
                match frame {
                    Some(Ok(f)) => answer(f, &mut out)?,
                    Some(Err(e)) => return Err(LoadError::Unexpected(format!("component stream: {e}"))),
                    None => return Err(LoadError::Closed("the component stream")),
                }
                if out.len() >= FLUSH_BYTES {
                    break;
                }
                // What is already read (or readable) is answered in the
                // same write; anything else would make replies wait.
                match self.rx.next().now_or_never() {
                    Some(f) => frame = f,
                    None => break,
                }
            }
            if !out.is_empty() {
                self.tx.write_all(&out).await?;
                out.clear();
            }
        }
        let _ = self.tx.write_all(b"</stream:stream>").await;
        Ok(())
    }
}

/// The component's reply to one frame, if any, appended to `out`.
fn answer(frame: Frame, out: &mut Vec<u8>) -> Result<(), LoadError> {
    let mut el = match frame {
        Frame::Stanza(el) => el,
        Frame::StreamClose => return Err(LoadError::Closed("the component stream")),
        Frame::StreamOpen(_) => return Ok(()),
    };
    if el.ns() == ns::STREAM {
        return Err(LoadError::Unexpected(format!("component stream: {el}")));
    }
    let (Some(from), Some(to)) = (el.attr("from"), el.attr("to")) else {
        return Ok(());
    };
    let (from, to) = (from.to_owned(), to.to_owned());
    match (el.name(), el.attr("type")) {
        ("iq", Some("get" | "set")) => {
            let mut reply = Element::new("iq", el.ns()).with_attr("type", "result");
            if let Some(id) = el.attr("id") {
                reply.set_attr("id", id);
            }
            reply.with_attr("from", to).with_attr("to", from).write_to(out, el.ns());
        }
        // An error is never echoed: two echoes would bounce forever.
        ("message", t) if t != Some("error") => {
            el.set_attr("from", to);
            el.set_attr("to", from);
            el.write_to(out, el.ns());
        }
        _ => {}
    }
    Ok(())
}

/// What each client sends: `count` requests of one kind, `window` in
/// flight, from each of `pairs` clients.
#[derive(Clone, Copy, Debug)]
pub struct Requests {
    pub mode: Mode,
    pub pairs: usize,
    pub window: usize,
    pub count: usize,
}

/// One client's results.
struct Outcome {
    latencies: Vec<Duration>,
    errors: usize,
    lost: usize,
    first_error: Option<String>,
}

/// Sends `count` requests to `to`, keeping `window` unanswered, and times
/// each round trip. A reply that does not come within `REPLY_TIMEOUT` ends
/// the client's run; the rest count as lost.
async fn drive(mut c: Conn, mode: Mode, to: String, window: usize, count: usize) -> Result<(Conn, Outcome), LoadError> {
    let mut sent_at: Vec<Option<Instant>> = vec![None; count];
    let mut next = window.min(count);
    let mut first = String::new();
    let t0 = Instant::now();
    for (seq, slot) in sent_at.iter_mut().enumerate().take(next) {
        first.push_str(&mode.request(seq, &to));
        *slot = Some(t0);
    }
    c.send(&first).await?;
    let mut outcome = Outcome {
        latencies: Vec::with_capacity(count),
        errors: 0,
        lost: 0,
        first_error: None,
    };
    let mut done = 0;
    while done < count {
        let frame = match c.next("a reply through the component").await {
            Ok(f) => f,
            Err(LoadError::Timeout(_)) => break,
            Err(e) => return Err(e),
        };
        let Frame::Stanza(el) = frame else { continue };
        if el.name() != mode.name() {
            continue;
        }
        // Only the answer to a request in flight counts, once.
        let Some(sent) = el
            .attr("id")
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|seq| sent_at.get_mut(seq))
            .and_then(Option::take)
        else {
            continue;
        };
        done += 1;
        if el.attr("type") == Some("error") {
            outcome.errors += 1;
            outcome.first_error.get_or_insert_with(|| el.to_string());
        } else {
            outcome.latencies.push(sent.elapsed());
        }
        if next < count {
            let request = mode.request(next, &to);
            sent_at[next] = Some(Instant::now());
            c.send(&request).await?;
            next += 1;
        }
    }
    outcome.lost = count - done;
    Ok((c, outcome))
}

/// P clients (accounts `prefix0 ..`) each send `count` requests to
/// `echo@DOMAIN` with `window` in flight; the driver's own component
/// answers. Reports round trips per second and per server CPU-second, and
/// the round-trip latency.
pub async fn components(
    target: &Target,
    component: &ComponentTarget,
    prefix: &str,
    requests: Requests,
    parallel: usize,
    server_pid: Option<u32>,
) -> Result<(), LoadError> {
    let Requests { mode, pairs, count, .. } = requests;
    let window = requests.window.max(1);
    // The component first: a request before it is connected would bounce.
    let (stop, stopped) = oneshot::channel();
    let serving = tokio::spawn(Component::connect(component).await?.serve(stopped));

    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut logins = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let (target, user, gate) = (target.clone(), format!("{prefix}{i}"), gate.clone());
        logins.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            // Available, so that every server delivers to the full JID.
            Conn::online(&target, i, &user, "c", false).await
        }));
    }
    let mut clients = Vec::with_capacity(pairs);
    for l in logins {
        clients.push(l.await.map_err(|e| LoadError::Unexpected(e.to_string()))??);
    }

    let to = escape_attr(&format!("echo@{}", component.domain));
    let meter = Meter::start(server_pid);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(drive(c, mode, to.clone(), window, count)))
        .collect();
    let mut latencies = Vec::with_capacity(pairs * count);
    let (mut errors, mut lost, mut first_error) = (0, 0, None);
    let mut keep = Vec::with_capacity(pairs);
    for t in tasks {
        let (c, outcome) = t.await.map_err(|e| LoadError::Unexpected(e.to_string()))??;
        keep.push(c);
        latencies.extend(outcome.latencies);
        errors += outcome.errors;
        lost += outcome.lost;
        first_error = first_error.or(outcome.first_error);
    }
    let (wall, driver_cpu, server_cpu) = meter.stop();
    let _ = stop.send(());
    serving.await.map_err(|e| LoadError::Unexpected(e.to_string()))??;
    drop(keep);

    if let Some(e) = first_error {
        eprintln!("components: {errors} error replies, the first: {e}");
    }
    let latency = Spread::of(&mut latencies);
    let requests = latencies.len();
    let rate = requests as f64 / wall;
    // CPU time comes in 10 ms ticks: 0.1 s is the least that says much.
    let per_cpu = server_cpu.filter(|s| *s >= 0.1).map(|s| requests as f64 / s);
    let kind = mode.name();
    println!(
        "components {kind:<7} P={pairs:<4} window={window:<3} {rate:>9.0} round trips/s  per server CPU-s {}  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  errors {errors}  lost {lost}   driver CPU {driver_cpu:.2}s  server CPU {}",
        per_cpu.map_or("n/a".into(), |v| format!("{v:.0}")),
        latency.p50,
        latency.p99,
        latency.max,
        server_cpu.map_or("n/a".into(), |s| format!("{s:.2}s")),
    );
    println!(
        "{{\"scenario\":\"components\",\"mode\":\"{kind}\",\"pairs\":{pairs},\"window\":{window},\"count\":{count},\"requests\":{requests},\"seconds\":{wall:.3},\"requests_per_s\":{rate:.1},\"per_server_cpu_s\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"errors\":{errors},\"lost\":{lost},\"driver_cpu_s\":{driver_cpu:.3},\"server_cpu_s\":{}}}",
        json_num(per_cpu),
        latency.p50,
        latency.p99,
        latency.max,
        json_num(server_cpu),
    );
    Ok(())
}
