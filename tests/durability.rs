//! Fault injection: the proof that nothing acknowledged is ever lost.
//!
//! The promise. The server counts a client's stanza in a XEP-0198 `<a h/>`
//! only once its processing is durable: a chat message is committed to the
//! archive (XEP-0313), or to the offline store (XEP-0160), before it is
//! counted. So whatever happens to the server process or to the network
//! afterwards, every message the server acknowledged is delivered to its
//! recipient exactly once, or waits for him in his archive or offline store.
//!
//! How this proves it. The real `shoal` binary runs as a child process on a
//! database in a temporary directory. alice sends N messages to bob; both
//! use stream management with resumption, each through a TCP proxy of this
//! test. A seeded fault schedule (the seed is printed; SHOAL_SOAK_SEED
//! replays it) SIGKILLs the server at random moments and restarts it on the
//! same database and port, and cuts the clients' connections at random:
//! cleanly, or half-open (the proxy drops everything both ways and keeps both
//! sockets open, so the server believes the old connection alive and the
//! client finds out by its own ack timeout). The clients do what a real
//! client does: resume, or after a restart (`<failed/>`) bind a new session.
//! alice counts a message as acknowledged only once an `h` covers it, and
//! sends again only what a `<resumed h/>` says the server did not count, never
//! a message whose fate is unknown. bob answers every `<r/>` and records each
//! message delivered, with the session chain (one SM session and its
//! resumptions) it came on. At the end bob's whole archive is read over MAM.
//! Every acknowledged message must have been delivered to bob or be in his
//! archive (`lost=0`), and must be in his archive in any case (archived
//! before delivery); no message may be delivered twice on one session chain
//! (`duplicates=0`). A message delivered again on a new session after a
//! restart is reported as `redelivered`, not counted as a duplicate.
//!
//! `make test` runs a short version; `make soak` a long one. Environment:
//! SHOAL_SOAK_MESSAGES (3000), SHOAL_SOAK_KILLS (3), SHOAL_SOAK_CUTS (twice
//! the kills), SHOAL_SOAK_SEED (random), SHOAL_SOAK_DURABILITY ("normal":
//! a SIGKILL loses no committed transaction; "full" also survives power
//! loss, which this test cannot simulate), SHOAL_SOAK_DEADLINE_SECS, and
//! SHOAL_SOAK_LOG (the server's RUST_LOG, "warn").

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_actors::codec::{CodecLimits, Frame, XmppCodec};
use shoal_actors::ns;
use shoal_actors::xml::Element;
use tokio_util::codec::Decoder;

static START: OnceLock<Instant> = OnceLock::new();

/// A line on stderr, stamped with the seconds since the test began.
macro_rules! note {
    ($($arg:tt)*) => {
        eprintln!(
            "[{:9.3}s] {}",
            START.get_or_init(Instant::now).elapsed().as_secs_f64(),
            format_args!($($arg)*)
        )
    };
}

const OPEN: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
const SM: &str = "urn:xmpp:sm:3";
const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";
const FORWARD: &str = "urn:xmpp:forward:0";
const SID: &str = "urn:xmpp:sid:0";
const DELAY: &str = "urn:xmpp:delay";
const PASSWORD: &str = "soak-secret";
/// The resource both clients bind (a new session replaces a stale one).
const RESOURCE: &str = "soak";

/// One step of a login (a stream header, SASL, bind, enable, resume).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// An `<r/>` unanswered this long, with nothing else heard: the connection
/// is presumed dead (how a client finds a half-open connection).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle client asks for an acknowledgement this often (its liveness check).
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// alice, with stanzas unacknowledged, asks again this soon after an answer.
const EAGER_ASK: Duration = Duration::from_millis(50);
/// Messages alice has unacknowledged at most, and sends in one write.
const WINDOW: usize = 64;
const BATCH: usize = 16;
/// The server's start, until it accepts connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// bob is settled once he has been connected, answered and received nothing
/// for this long.
const QUIET: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Parameters

struct Params {
    messages: usize,
    kills: usize,
    cuts: usize,
    seed: u64,
    durability: String,
    deadline: Duration,
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

impl Params {
    fn from_env() -> Params {
        let messages: usize = env_or("SHOAL_SOAK_MESSAGES", 3000);
        let kills: usize = env_or("SHOAL_SOAK_KILLS", 3);
        let cuts: usize = env_or("SHOAL_SOAK_CUTS", 2 * kills);
        assert!(messages >= 20, "SHOAL_SOAK_MESSAGES must be at least 20");
        let deadline = 180 + messages as u64 / 100 + 30 * (kills + cuts) as u64;
        Params {
            messages,
            kills,
            cuts,
            seed: env_or("SHOAL_SOAK_SEED", rand::random::<u64>()),
            durability: env_or("SHOAL_SOAK_DURABILITY", "normal".to_owned()),
            deadline: Duration::from_secs(env_or("SHOAL_SOAK_DEADLINE_SECS", deadline)),
        }
    }
}

// ---------------------------------------------------------------------------
// Shared state

/// A value behind a mutex, with a condition variable told of every change.
struct Shared<T> {
    value: Mutex<T>,
    changed: Condvar,
}

impl<T> Shared<T> {
    fn new(value: T) -> Self {
        Shared {
            value: Mutex::new(value),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        self.value.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_all();
        r
    }

    fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.lock())
    }

    /// Waits until `pred` holds or `deadline` passes; whether it held. The
    /// predicate is checked at each change, and at least every 100 ms (for
    /// conditions on time).
    fn wait_until(&self, deadline: Instant, mut pred: impl FnMut(&T) -> bool) -> bool {
        let mut guard = self.lock();
        loop {
            if pred(&guard) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let slice = (deadline - now).min(Duration::from_millis(100));
            guard = match self.changed.wait_timeout(guard, slice) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// alice's progress, which the fault schedule follows.
#[derive(Clone, Copy, Debug, Default)]
struct ProgressState {
    /// Messages sent at least once.
    sent: usize,
    /// Messages acknowledged.
    acked: usize,
    sender_done: bool,
    /// Sessions started, fresh or resumed, by alice and by bob: a fault
    /// waits for the client it cut to be back before the next.
    starts: [usize; 2],
}

/// What every thread of the run shares.
struct Run {
    messages: usize,
    /// The time between two of alice's messages: the traffic is spread
    /// over the faults rather than over before the first.
    pace: Duration,
    deadline: Instant,
    failed: AtomicBool,
    progress: Shared<ProgressState>,
}

impl Run {
    fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.progress.update(|_| ());
    }

    /// Panics once another thread has failed, or past the deadline.
    fn check(&self, who: &str) {
        assert!(
            !self.failed.load(Ordering::SeqCst),
            "{who}: stopping, another part of the test failed"
        );
        assert!(
            Instant::now() < self.deadline,
            "{who}: out of time (SHOAL_SOAK_DEADLINE_SECS)"
        );
    }
}

/// Marks the run failed when the thread holding it panics, so the others
/// stop instead of waiting for their deadlines.
struct FailOnPanic<'a>(&'a Run);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.fail();
        }
    }
}

// ---------------------------------------------------------------------------
// The server process

struct ServerProc {
    config: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
    starts: usize,
}

impl ServerProc {
    fn new(config: PathBuf, log: PathBuf, addr: SocketAddr) -> ServerProc {
        ServerProc {
            config,
            log,
            addr,
            child: None,
            starts: 0,
        }
    }

    /// Starts `shoal --config FILE` and returns once it accepts connections.
    fn start(&mut self) {
        let begun = Instant::now();
        let deadline = begun + START_TIMEOUT;
        loop {
            self.starts += 1;
            let mut log_file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("open the server's log");
            let _ = writeln!(log_file, "=== start {} ===", self.starts);
            let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
                .arg("--config")
                .arg(&self.config)
                .env("RUST_LOG", env_or("SHOAL_SOAK_LOG", "warn".to_owned()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log_file))
                .spawn()
                .expect("start the shoal binary");
            let exited = loop {
                if let Some(status) = child.try_wait().expect("poll the server process") {
                    break Some(status);
                }
                if TcpStream::connect_timeout(&self.addr, Duration::from_millis(250)).is_ok() {
                    break None;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the server did not accept connections on {} within {START_TIMEOUT:?}:\n{}",
                        self.addr,
                        self.log_tail()
                    );
                }
                thread::sleep(Duration::from_millis(20));
            };
            let Some(status) = exited else {
                self.child = Some(child);
                note!(
                    "server: start {} accepts connections after {} ms",
                    self.starts,
                    begun.elapsed().as_millis()
                );
                return;
            };
            // The port may still be held a moment after a kill; anything
            // else is a real failure.
            let tail = self.log_tail();
            assert!(
                tail.contains("in use") && Instant::now() < deadline,
                "the server exited at start ({status}):\n{tail}"
            );
            note!("server: exited at start ({status}), the port in use; starting again");
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), and the zombie reaped.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- the end of the server's log ({}):\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        self.kill();
    }
}

/// A port that was free a moment ago (the server binds it by itself, at
/// every restart).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("its address").port()
}

fn write_config(dir: &Path, addr: SocketAddr, durability: &str) -> PathBuf {
    let path = dir.join("shoal.toml");
    let db = dir.join("shoal.db");
    let text = format!(
        "domain = \"localhost\"\n\
         \n\
         [storage]\n\
         sqlite = {db:?}\n\
         durability = {durability:?}\n\
         \n\
         [c2s]\n\
         listen = [\"{addr}\"]\n\
         \n\
         [http]\n\
         listen = []\n\
         \n\
         [offline]\n\
         max_messages = 0\n\
         \n\
         [sm]\n\
         enabled = true\n\
         resume_timeout_secs = 300\n\
         ack_request_stanzas = 10\n\
         \n\
         [mam]\n\
         enabled = true\n\
         default = \"always\"\n"
    );
    std::fs::write(&path, text).expect("write the configuration");
    path
}

/// `shoal --config FILE user add USER@localhost PASSWORD`, before the
/// server first starts.
fn add_user(config: &Path, user: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(config)
        .args(["user", "add", &format!("{user}@localhost"), PASSWORD])
        .output()
        .expect("run shoal user add");
    assert!(
        out.status.success(),
        "shoal user add {user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// The proxy

const FORWARDING: u8 = 0;
const FROZEN: u8 = 1;
const CLOSED: u8 = 2;

/// One proxied connection: the client's socket and the server's.
struct Link {
    client: TcpStream,
    server: TcpStream,
    state: AtomicU8,
}

impl Link {
    fn close(&self) {
        self.state.store(CLOSED, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

/// A TCP proxy in front of the server for one client, able to cut its
/// connections cleanly or half-open.
#[derive(Clone)]
struct Proxy {
    name: &'static str,
    addr: SocketAddr,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
}

impl Proxy {
    fn start(name: &'static str, upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy's port");
        let addr = listener.local_addr().expect("the proxy's address");
        let links: Arc<Mutex<Vec<Arc<Link>>>> = Arc::default();
        let proxy = Proxy {
            name,
            addr,
            links: links.clone(),
        };
        thread::Builder::new()
            .name(format!("proxy-{name}"))
            .spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    // The server down (being restarted): the client's
                    // connection is closed at once, as a refusal would be.
                    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (Ok(c1), Ok(c2), Ok(s1), Ok(s2)) = (
                        client.try_clone(),
                        client.try_clone(),
                        server.try_clone(),
                        server.try_clone(),
                    ) else {
                        continue;
                    };
                    let link = Arc::new(Link {
                        client,
                        server,
                        state: AtomicU8::new(FORWARDING),
                    });
                    {
                        let mut all = links.lock().unwrap_or_else(PoisonError::into_inner);
                        all.retain(|l| l.state.load(Ordering::SeqCst) != CLOSED);
                        all.push(link.clone());
                    }
                    let up = link.clone();
                    let _ = thread::Builder::new()
                        .name(format!("proxy-{name}-up"))
                        .spawn(move || pump(&up, c1, s1));
                    let _ = thread::Builder::new()
                        .name(format!("proxy-{name}-down"))
                        .spawn(move || pump(&link, s2, c2));
                }
            })
            .expect("the proxy's thread");
        proxy
    }

    /// Cuts the newest connection still forwarding: half-open (nothing
    /// passes any more either way, and neither socket is closed), or closed
    /// cleanly both ways. Whether there was one to cut.
    fn cut(&self, half_open: bool) -> bool {
        let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(link) = links
            .iter()
            .rev()
            .find(|l| l.state.load(Ordering::SeqCst) == FORWARDING)
        else {
            return false;
        };
        if half_open {
            link.state
                .compare_exchange(FORWARDING, FROZEN, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        } else {
            link.close();
            true
        }
    }

    fn shutdown(&self) {
        for link in self.links.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            link.close();
        }
    }
}

/// Copies one direction of a link. Frozen, what arrives is dropped, as by a
/// dead network. An end of stream or error closes the link both ways,
/// unless it is frozen: a half-open connection tells nobody anything.
fn pump(link: &Link, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        match link.state.load(Ordering::SeqCst) {
            FORWARDING => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            FROZEN => {}
            _ => break,
        }
    }
    if link.state.load(Ordering::SeqCst) == FORWARDING {
        link.close();
    }
}

// ---------------------------------------------------------------------------
// A client connection: frames read by a thread of its own, every wait bounded

enum Event {
    Frame(Frame),
    Ended(String),
}

struct Conn {
    stream: TcpStream,
    events: Receiver<Event>,
}

fn read_frames(mut stream: TcpStream, events: Sender<Event>) {
    let mut codec = XmppCodec::new(CodecLimits::default());
    let mut buf = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if events.send(Event::Frame(frame)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = events.send(Event::Ended(format!("the server sent bad XML: {e}")));
                    return;
                }
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                let _ = events.send(Event::Ended("the connection was closed".into()));
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = events.send(Event::Ended(format!("read: {e}")));
                return;
            }
        }
    }
}

impl Conn {
    fn connect(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect_timeout(&addr, STEP_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_write_timeout(Some(STEP_TIMEOUT))
            .map_err(|e| format!("socket: {e}"))?;
        let reader = stream.try_clone().map_err(|e| format!("socket: {e}"))?;
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("xmpp-reader".into())
            .spawn(move || read_frames(reader, tx))
            .map_err(|e| format!("reader thread: {e}"))?;
        Ok(Conn { stream, events: rx })
    }

    fn send(&mut self, xml: &str) -> Result<(), String> {
        self.stream.write_all(xml.as_bytes()).map_err(|e| format!("write: {e}"))
    }

    /// The next frame within `timeout`; `None` if none came.
    fn next(&mut self, timeout: Duration) -> Result<Option<Frame>, String> {
        match self.events.recv_timeout(timeout) {
            Ok(Event::Frame(frame)) => Ok(Some(frame)),
            Ok(Event::Ended(why)) => Err(why),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err("the reader stopped".into()),
        }
    }

    /// A frame that has arrived already, if any.
    fn poll(&mut self) -> Result<Option<Frame>, String> {
        match self.events.try_recv() {
            Ok(Event::Frame(frame)) => Ok(Some(frame)),
            Ok(Event::Ended(why)) => Err(why),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err("the reader stopped".into()),
        }
    }

    fn expect_header(&mut self) -> Result<(), String> {
        match self.next(STEP_TIMEOUT)? {
            Some(Frame::StreamOpen(_)) => Ok(()),
            Some(other) => Err(format!("expected a stream header, got {other:?}")),
            None => Err("timed out waiting for a stream header".into()),
        }
    }

    /// The next element, within `timeout`.
    fn expect_within(&mut self, what: &str, timeout: Duration) -> Result<Element, String> {
        match self.next(timeout)? {
            Some(Frame::Stanza(el)) if el.is("error", ns::STREAM) => {
                Err(format!("stream error while waiting for {what}: {el}"))
            }
            Some(Frame::Stanza(el)) => Ok(el),
            Some(Frame::StreamClose) => Err(format!("the stream was closed while waiting for {what}")),
            Some(Frame::StreamOpen(_)) => Err(format!("a stream header while waiting for {what}")),
            None => Err(format!("timed out waiting for {what}")),
        }
    }

    fn expect(&mut self, what: &str) -> Result<Element, String> {
        self.expect_within(what, STEP_TIMEOUT)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Ends the reader thread too.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Escapes an attribute value or text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Opens a stream, authenticates with SASL PLAIN and restarts the stream.
fn login(addr: SocketAddr, user: &str) -> Result<Conn, String> {
    let mut conn = Conn::connect(addr)?;
    conn.send(OPEN)?;
    conn.expect_header()?;
    let features = conn.expect("stream features")?;
    let plain = features
        .get_child("mechanisms", ns::SASL)
        .is_some_and(|m| m.children().any(|c| c.name() == "mechanism" && c.text() == "PLAIN"));
    assert!(plain, "no SASL PLAIN offered on loopback: {features}");
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
    conn.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
    ))?;
    let outcome = conn.expect("the SASL outcome")?;
    if !outcome.is("success", ns::SASL) {
        // Only a temporary failure is worth another try.
        assert!(
            outcome.has_child("temporary-auth-failure", ns::SASL),
            "{user} could not log in: {outcome}"
        );
        return Err(format!("authentication failed for now: {outcome}"));
    }
    conn.send(OPEN)?;
    conn.expect_header()?;
    let features = conn.expect("stream features after authentication")?;
    assert!(
        features.has_child("sm", SM),
        "the server offers no stream management (urn:xmpp:sm:3): {features}"
    );
    Ok(conn)
}

fn bind(conn: &mut Conn, resource: &str) -> Result<(), String> {
    conn.send(&format!(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>{resource}</resource></bind></iq>"
    ))?;
    let reply = conn.expect("the bind result")?;
    if reply.name() == "iq" && reply.attr("id") == Some("bind") && reply.attr("type") == Some("result") {
        Ok(())
    } else {
        Err(format!("bind failed: {reply}"))
    }
}

// ---------------------------------------------------------------------------
// Stream management, client side

/// A stanza sent on the SM session and not yet acknowledged.
struct Pending {
    xml: String,
    /// The message's number, for alice's messages.
    message: Option<usize>,
}

/// One XEP-0198 session as the client keeps it.
#[derive(Default)]
struct Sm {
    /// The resumption id, once enabled.
    id: Option<String>,
    /// Stanzas received on the session: the `h` the client reports.
    received: u32,
    /// Stanzas sent on the session, and the last `h` the server gave.
    sent: u32,
    acked: u32,
    /// What was sent after the last `h`, in order: numbers acked+1..=sent.
    unacked: VecDeque<Pending>,
}

impl Sm {
    fn send(&mut self, out: &mut String, xml: String, message: Option<usize>) {
        out.push_str(&xml);
        self.unacked.push_back(Pending { xml, message });
        self.sent = self.sent.wrapping_add(1);
    }

    /// Takes the server's `h`; returns the messages it newly acknowledges.
    fn ack(&mut self, who: &str, h: u32) -> Vec<usize> {
        let newly = h.wrapping_sub(self.acked) as usize;
        assert!(
            newly <= self.unacked.len(),
            "{who}: the server acknowledged h={h} after h={}, but was sent {} stanzas",
            self.acked,
            self.sent
        );
        self.acked = h;
        self.unacked.drain(..newly).filter_map(|p| p.message).collect()
    }

    fn answer(&self) -> String {
        format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", self.received)
    }

    /// The session is gone: the messages sent and never acknowledged have
    /// an unknown fate. Returns them.
    fn forget(&mut self) -> Vec<usize> {
        let unknown = self.unacked.iter().filter_map(|p| p.message).collect();
        *self = Sm::default();
        unknown
    }
}

fn parse_h(el: &Element) -> Result<u32, String> {
    el.attr("h")
        .and_then(|h| h.parse::<u32>().ok())
        .ok_or_else(|| format!("no valid h in {el}"))
}

/// A client's side of the protocol, common to alice and bob.
struct Peer {
    who: &'static str,
    sm: Sm,
    /// When the `<r/>` awaiting its `<a/>` was sent.
    asked: Option<Instant>,
    last_ask: Instant,
    /// When anything last came from the server.
    last_heard: Instant,
    /// When an `<a/>` last came.
    answered: Instant,
    /// Messages acknowledged since last taken.
    newly_acked: Vec<usize>,
    /// Messages whose fate became unknown (their session was lost).
    unknown: Vec<usize>,
}

impl Peer {
    fn new(who: &'static str) -> Peer {
        Peer {
            who,
            sm: Sm::default(),
            asked: None,
            last_ask: Instant::now(),
            last_heard: Instant::now(),
            answered: Instant::now(),
            newly_acked: Vec::new(),
            unknown: Vec::new(),
        }
    }

    /// A new connection: nothing is being waited for on it.
    fn connected(&mut self) {
        self.asked = None;
        self.last_ask = Instant::now();
        self.last_heard = Instant::now();
    }

    fn ask(&mut self, out: &mut String) {
        out.push_str("<r xmlns='urn:xmpp:sm:3'/>");
        self.asked = Some(Instant::now());
        self.last_ask = Instant::now();
    }

    /// Asks for an acknowledgement unless one is awaited or one was asked
    /// for less than `interval` ago.
    fn maybe_ask(&mut self, out: &mut String, interval: Duration) {
        if self.asked.is_none() && self.last_ask.elapsed() >= interval {
            self.ask(out);
        }
    }

    /// When the connection is presumed dead: an `<r/>` is awaited, and
    /// neither its `<a/>` nor anything else came for ACK_TIMEOUT (a server
    /// busy writing a backlog is heard before its answer comes).
    fn dead_at(&self) -> Option<Instant> {
        self.asked.map(|t| t.max(self.last_heard) + ACK_TIMEOUT)
    }

    fn check_alive(&self) -> Result<(), String> {
        match self.dead_at() {
            Some(at) if Instant::now() > at => Err(format!(
                "nothing heard within {ACK_TIMEOUT:?} of an <r/>: the connection is presumed dead"
            )),
            _ => Ok(()),
        }
    }

    /// How long to wait for a frame: at most `idle`, and not past the
    /// moment the connection would be presumed dead.
    fn wait_for(&self, idle: Duration) -> Duration {
        match self.dead_at() {
            Some(at) => at
                .saturating_duration_since(Instant::now())
                .min(idle)
                .max(Duration::from_millis(1)),
            None => idle,
        }
    }

    /// Handles a frame of an established session: acknowledgements and
    /// their requests, IQs; returns a message received.
    fn handle(&mut self, conn: &mut Conn, frame: Frame) -> Result<Option<Element>, String> {
        self.last_heard = Instant::now();
        let el = match frame {
            Frame::Stanza(el) => el,
            Frame::StreamClose => return Err("the server closed the stream".into()),
            Frame::StreamOpen(_) => return Err("an unexpected stream header".into()),
        };
        if el.ns() == SM {
            match el.name() {
                "a" => {
                    let h = parse_h(&el)?;
                    let newly = self.sm.ack(self.who, h);
                    self.newly_acked.extend(newly);
                    self.asked = None;
                    self.answered = Instant::now();
                }
                "r" => conn.send(&self.sm.answer())?,
                _ => return Err(format!("unexpected {el}")),
            }
            return Ok(None);
        }
        if el.is("error", ns::STREAM) {
            return Err(format!("stream error: {el}"));
        }
        if el.ns() != ns::CLIENT || !matches!(el.name(), "message" | "presence" | "iq") {
            note!("{}: ignoring {el}", self.who);
            return Ok(None);
        }
        self.sm.received = self.sm.received.wrapping_add(1);
        match el.name() {
            "message" => Ok(Some(el)),
            "iq" if matches!(el.attr("type"), Some("get" | "set")) => {
                let mut out = String::new();
                self.sm.send(&mut out, iq_reply(&el), None);
                conn.send(&out)?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

/// A ping's result; for anything else `<service-unavailable/>`.
fn iq_reply(iq: &Element) -> String {
    let id = esc(iq.attr("id").unwrap_or_default());
    let to = iq.attr("from").map(|f| format!(" to='{}'", esc(f))).unwrap_or_default();
    if iq.has_child("ping", ns::PING) {
        format!("<iq type='result' id='{id}'{to}/>")
    } else {
        format!(
            "<iq type='error' id='{id}'{to}><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// The SM session went on (`<resumed/>`).
    Resumed,
    /// A new session: bound, and SM enabled with resumption.
    Fresh,
}

/// Logs in; resumes the SM session if there is one, else (or if it is
/// gone: `<failed/>`) binds a new session and enables SM with resumption.
/// On `<resumed h/>` what the server counted is acknowledged and the rest
/// is sent again, in order.
fn establish(addr: SocketAddr, user: &str, peer: &mut Peer) -> Result<(Conn, Start), String> {
    let mut conn = login(addr, user)?;
    if let Some(previd) = peer.sm.id.clone() {
        conn.send(&format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{}' h='{}'/>",
            esc(&previd),
            peer.sm.received
        ))?;
        let answer = conn.expect("the answer to <resume/>")?;
        if answer.is("resumed", SM) {
            let h = parse_h(&answer)?;
            let newly = peer.sm.ack(peer.who, h);
            peer.newly_acked.extend(newly);
            let again: String = peer.sm.unacked.iter().map(|p| p.xml.as_str()).collect();
            if !again.is_empty() {
                conn.send(&again)?;
            }
            peer.connected();
            return Ok((conn, Start::Resumed));
        }
        if !answer.is("failed", SM) {
            return Err(format!("unexpected answer to <resume/>: {answer}"));
        }
        // XEP-0198 §5 lets <failed/> say what the old session handled.
        if let Some(h) = answer.attr("h").and_then(|h| h.parse::<u32>().ok()) {
            if h.wrapping_sub(peer.sm.acked) as usize <= peer.sm.unacked.len() {
                let newly = peer.sm.ack(peer.who, h);
                peer.newly_acked.extend(newly);
            }
        }
        let unknown = peer.sm.forget();
        note!(
            "{user}: resumption failed ({answer}); a new session, {} messages of unknown fate",
            unknown.len()
        );
        peer.unknown.extend(unknown);
    }
    bind(&mut conn, RESOURCE)?;
    conn.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")?;
    let enabled = conn.expect("<enabled/>")?;
    assert!(
        enabled.is("enabled", SM),
        "{user}: stream management could not be enabled: {enabled}"
    );
    let resumable = matches!(enabled.attr("resume"), Some("true" | "1"));
    let id = enabled
        .attr("id")
        .filter(|_| resumable)
        .unwrap_or_else(|| panic!("{user}: SM enabled without resumption: {enabled}"));
    peer.sm.id = Some(id.to_owned());
    peer.connected();
    Ok((conn, Start::Fresh))
}

/// A pause between connection attempts (the server may be restarting):
/// 12-25 ms doubling up to 400-800 ms.
fn backoff(rng: &mut StdRng, attempt: &mut u32) {
    let base = 25u64 << (*attempt).min(5);
    thread::sleep(Duration::from_millis(rng.random_range(base / 2..=base)));
    *attempt += 1;
}

// ---------------------------------------------------------------------------
// alice: the sender

fn message(i: usize) -> String {
    format!("<message type='chat' to='bob@localhost' id='m-{i}'><body>{i}</body></message>")
}

struct AliceReport {
    sent: usize,
    acked: Vec<bool>,
    unknown: usize,
    bounced: Vec<String>,
    sessions: usize,
    resumptions: usize,
}

struct Alice {
    peer: Peer,
    n: usize,
    /// The next message never sent yet.
    next: usize,
    acked: Vec<bool>,
    acked_count: usize,
    unknown: usize,
    bounced: Vec<String>,
    reported: usize,
    started: Instant,
}

impl Alice {
    /// Records what the peer learnt, and tells the fault schedule.
    fn settle(&mut self, run: &Run) {
        for i in std::mem::take(&mut self.peer.newly_acked) {
            if !self.acked[i] {
                self.acked[i] = true;
                self.acked_count += 1;
            }
        }
        self.unknown += std::mem::take(&mut self.peer.unknown).len();
        let (sent, acked) = (self.next, self.acked_count);
        run.progress.update(|p| {
            p.sent = sent;
            p.acked = acked;
        });
        let step = (self.n / 10).max(1);
        if sent / step > self.reported {
            self.reported = sent / step;
            note!(
                "alice: sent {sent}, acknowledged {acked}, unknown fate {}",
                self.unknown
            );
        }
    }

    fn take(&mut self, conn: &mut Conn, frame: Frame) -> Result<(), String> {
        if let Some(msg) = self.peer.handle(conn, frame)? {
            if msg.attr("type") == Some("error") {
                note!("alice: bounced: {msg}");
                self.bounced.push(msg.to_string());
            }
        }
        Ok(())
    }

    /// Sends until every message is sent and acknowledged (`Ok`), or the
    /// connection is lost.
    fn session(&mut self, conn: &mut Conn, run: &Run) -> Result<(), String> {
        loop {
            run.check("alice");
            while let Some(frame) = conn.poll()? {
                self.take(conn, frame)?;
            }
            self.settle(run);
            if self.next == self.n && self.peer.sm.unacked.is_empty() {
                return Ok(());
            }
            let mut out = String::new();
            let mut fresh = 0;
            // The next message's time, by the pace.
            let due = self.started + run.pace * self.next as u32;
            while self.next < self.n
                && self.peer.sm.unacked.len() < WINDOW
                && fresh < BATCH
                && Instant::now() >= self.started + run.pace * self.next as u32
            {
                let i = self.next;
                self.peer.sm.send(&mut out, message(i), Some(i));
                self.next += 1;
                fresh += 1;
            }
            if fresh > 0 && self.peer.asked.is_none() {
                self.peer.ask(&mut out);
            } else {
                self.peer.maybe_ask(&mut out, EAGER_ASK);
            }
            if !out.is_empty() {
                conn.send(&out)?;
            }
            if fresh > 0 {
                continue;
            }
            self.peer.check_alive()?;
            let wait = self.peer.wait_for(EAGER_ASK);
            let wait = if self.next < self.n {
                wait.min(due.saturating_duration_since(Instant::now()))
            } else {
                wait
            };
            if let Some(frame) = conn.next(wait)? {
                self.take(conn, frame)?;
            }
        }
    }
}

fn run_alice(addr: SocketAddr, run: Arc<Run>, seed: u64) -> AliceReport {
    let _guard = FailOnPanic(&run);
    let n = run.messages;
    let mut alice = Alice {
        peer: Peer::new("alice"),
        n,
        next: 0,
        acked: vec![false; n],
        acked_count: 0,
        unknown: 0,
        bounced: Vec::new(),
        reported: 0,
        started: Instant::now(),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut attempt = 0;
    let (mut sessions, mut resumptions) = (0, 0);
    loop {
        run.check("alice");
        let established = establish(addr, "alice", &mut alice.peer);
        alice.settle(&run);
        let (mut conn, start) = match established {
            Ok(x) => x,
            Err(e) => {
                note!("alice: {e}; connecting again");
                backoff(&mut rng, &mut attempt);
                continue;
            }
        };
        attempt = 0;
        match start {
            Start::Fresh => sessions += 1,
            Start::Resumed => resumptions += 1,
        }
        run.progress.update(|p| p.starts[0] += 1);
        match alice.session(&mut conn, &run) {
            Ok(()) => break,
            Err(e) => note!("alice: connection lost: {e}"),
        }
    }
    run.progress.update(|p| p.sender_done = true);
    note!(
        "alice: done: {} sent, {} acknowledged, {} of unknown fate",
        alice.next,
        alice.acked_count,
        alice.unknown
    );
    AliceReport {
        sent: alice.next,
        acked: alice.acked,
        unknown: alice.unknown,
        bounced: alice.bounced,
        sessions,
        resumptions,
    }
}

// ---------------------------------------------------------------------------
// bob: the recipient

#[derive(Clone, Debug)]
struct Delivery {
    n: usize,
    /// The session chain it came on: one SM session and its resumptions.
    chain: u32,
    /// Its `<stanza-id by='bob@localhost'/>`.
    stanza_id: Option<String>,
    /// Stamped with a delay (from the offline store, or resent).
    delayed: bool,
}

#[derive(Default)]
struct BobLog {
    deliveries: Vec<Delivery>,
    /// Other messages (errors, strangers).
    odd: Vec<String>,
    connected_since: Option<Instant>,
    answered: Option<Instant>,
    last_delivery: Option<Instant>,
    sessions: usize,
    resumptions: usize,
}

struct BobCtx {
    addr: SocketAddr,
    run: Arc<Run>,
    log: Arc<Shared<BobLog>>,
    stop: Arc<AtomicBool>,
    seed: u64,
}

fn message_number(msg: &Element) -> Option<usize> {
    msg.attr("id")?.strip_prefix("m-")?.parse().ok()
}

fn record(ctx: &BobCtx, chain: u32, msg: &Element) {
    let n = message_number(msg).filter(|n| *n < ctx.run.messages);
    let (Some(n), false) = (n, msg.attr("type") == Some("error")) else {
        note!("bob: an unexpected message: {msg}");
        ctx.log.update(|l| l.odd.push(msg.to_string()));
        return;
    };
    let stanza_id = msg
        .children()
        .find(|c| c.is("stanza-id", SID) && c.attr("by") == Some("bob@localhost"))
        .and_then(|c| c.attr("id"))
        .map(str::to_owned);
    let delivery = Delivery {
        n,
        chain,
        stanza_id,
        delayed: msg.has_child("delay", DELAY),
    };
    ctx.log.update(|l| {
        l.deliveries.push(delivery);
        l.last_delivery = Some(Instant::now());
    });
}

/// Receives until told to stop (`Ok`) or the connection is lost.
fn bob_session(conn: &mut Conn, peer: &mut Peer, chain: u32, ctx: &BobCtx) -> Result<(), String> {
    let mut answered = peer.answered;
    loop {
        if ctx.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        ctx.run.check("bob");
        let mut out = String::new();
        peer.maybe_ask(&mut out, PROBE_EVERY);
        if !out.is_empty() {
            conn.send(&out)?;
        }
        peer.check_alive()?;
        let Some(frame) = conn.next(peer.wait_for(Duration::from_millis(100)))? else {
            continue;
        };
        if let Some(msg) = peer.handle(conn, frame)? {
            record(ctx, chain, &msg);
        }
        if peer.answered != answered {
            answered = peer.answered;
            ctx.log.update(|l| l.answered = Some(answered));
        }
    }
}

fn run_bob(ctx: BobCtx) {
    let _guard = FailOnPanic(&ctx.run);
    let mut peer = Peer::new("bob");
    let mut rng = StdRng::seed_from_u64(ctx.seed);
    let mut attempt = 0;
    let mut chain = 0u32;
    while !ctx.stop.load(Ordering::SeqCst) {
        ctx.run.check("bob");
        let (mut conn, start) = match establish(ctx.addr, "bob", &mut peer) {
            Ok(x) => x,
            Err(e) => {
                note!("bob: {e}; connecting again");
                backoff(&mut rng, &mut attempt);
                continue;
            }
        };
        attempt = 0;
        // bob sends no messages: nothing of his has a fate to follow.
        peer.newly_acked.clear();
        peer.unknown.clear();
        if start == Start::Fresh {
            chain += 1;
            // Available: what waits in the offline store comes now.
            let mut out = String::new();
            peer.sm.send(&mut out, "<presence/>".to_owned(), None);
            if let Err(e) = conn.send(&out) {
                note!("bob: connection lost: {e}");
                continue;
            }
        }
        ctx.log.update(|l| {
            match start {
                Start::Fresh => l.sessions += 1,
                Start::Resumed => l.resumptions += 1,
            }
            l.connected_since = Some(Instant::now());
        });
        ctx.run.progress.update(|p| p.starts[1] += 1);
        let result = bob_session(&mut conn, &mut peer, chain, &ctx);
        ctx.log.update(|l| l.connected_since = None);
        if let Err(e) = result {
            note!("bob: connection lost: {e}");
        }
    }
}

// ---------------------------------------------------------------------------
// The fault schedule

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Cut { bob: bool, half_open: bool },
}

/// Each fault with the number of messages sent that it waits for, in order.
fn plan(rng: &mut StdRng, p: &Params) -> Vec<(usize, Fault)> {
    let lo = (p.messages / 20).max(1);
    let hi = (p.messages * 9 / 10).max(lo);
    let mut plan = Vec::new();
    for _ in 0..p.kills {
        plan.push((rng.random_range(lo..=hi), Fault::Kill));
    }
    for _ in 0..p.cuts {
        let at = rng.random_range(lo..=hi);
        let bob = rng.random_bool(0.5);
        let half_open = rng.random_bool(0.7);
        plan.push((at, Fault::Cut { bob, half_open }));
    }
    plan.sort_by_key(|(at, _)| *at);
    plan
}

#[derive(Debug, Default)]
struct FaultStats {
    kills: usize,
    half_open: usize,
    closed: usize,
    skipped: usize,
}

struct FaultCtx {
    server: ServerProc,
    proxies: [Proxy; 2],
    plan: Vec<(usize, Fault)>,
    run: Arc<Run>,
    seed: u64,
}

/// Carries out the plan: each fault once alice has sent its number of
/// messages and the server has acknowledged something since the last
/// fault, after a random delay. Returns the server, running.
fn run_faults(ctx: FaultCtx) -> (ServerProc, FaultStats) {
    let FaultCtx {
        mut server,
        proxies,
        plan,
        run,
        seed,
    } = ctx;
    let _guard = FailOnPanic(&run);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = FaultStats::default();
    let mut acked_before = 0;
    let starts = || run.progress.read(|s| s.starts);
    for (i, (at, fault)) in plan.into_iter().enumerate() {
        let reached = run.progress.wait_until(run.deadline, |s| {
            run.failed.load(Ordering::SeqCst) || s.sender_done || (s.sent >= at && s.acked > acked_before)
        });
        run.check("faults");
        assert!(
            reached,
            "fault {i}: no progress to {at} messages sent before the deadline"
        );
        thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        let state = run.progress.read(|s| *s);
        match fault {
            Fault::Kill => {
                note!(
                    "fault {i}: kill -9 the server (sent {}, acknowledged {})",
                    state.sent,
                    state.acked
                );
                let before = starts();
                server.kill();
                thread::sleep(Duration::from_millis(rng.random_range(0..500)));
                server.start();
                stats.kills += 1;
                // Both back (alice unless she is done) before the next fault.
                let back = run.progress.wait_until(run.deadline, |s| {
                    run.failed.load(Ordering::SeqCst)
                        || (s.starts[1] > before[1] && (s.sender_done || s.starts[0] > before[0]))
                });
                assert!(back, "fault {i}: the clients did not come back after the kill");
            }
            Fault::Cut { bob, half_open } => {
                let proxy = &proxies[usize::from(bob)];
                let how = if half_open { "half-open" } else { "closed" };
                let before = starts()[usize::from(bob)];
                if proxy.cut(half_open) {
                    note!(
                        "fault {i}: {}'s connection cut, {how} (sent {})",
                        proxy.name,
                        state.sent
                    );
                    if half_open {
                        stats.half_open += 1;
                    } else {
                        stats.closed += 1;
                    }
                    // The server is up: the client resumes (counted at the end).
                    let back = run.progress.wait_until(run.deadline, |s| {
                        run.failed.load(Ordering::SeqCst) || s.starts[usize::from(bob)] > before
                    });
                    assert!(back, "fault {i}: {} did not come back after the cut", proxy.name);
                } else {
                    note!("fault {i}: {} had no connection to cut", proxy.name);
                    stats.skipped += 1;
                }
            }
        }
        acked_before = run.progress.read(|s| s.acked);
    }
    (server, stats)
}

// ---------------------------------------------------------------------------
// The archive

#[derive(Default)]
struct Archive {
    /// Each message's archive ids (more than one: archived more than once).
    ids: HashMap<usize, Vec<String>>,
    entries: usize,
    others: usize,
    pages: usize,
}

/// bob's whole archive of messages with alice, page by page (RSM `after`).
fn fetch_archive(addr: SocketAddr, messages: usize) -> Archive {
    let mut conn = login(addr, "bob").unwrap_or_else(|e| panic!("logging in to read the archive: {e}"));
    bind(&mut conn, "archive").unwrap_or_else(|e| panic!("binding to read the archive: {e}"));
    let mut archive = Archive::default();
    let mut after: Option<String> = None;
    let max_pages = 2 * messages / 250 + 20;
    loop {
        archive.pages += 1;
        assert!(
            archive.pages <= max_pages,
            "MAM paging did not end after {max_pages} pages"
        );
        let page = archive.pages;
        let (iq_id, query_id) = (format!("q{page}"), format!("f{page}"));
        let after_el = after
            .as_deref()
            .map(|a| format!("<after>{}</after>", esc(a)))
            .unwrap_or_default();
        conn.send(&format!(
            "<iq type='set' id='{iq_id}'><query xmlns='urn:xmpp:mam:2' queryid='{query_id}'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             <field var='with'><value>alice@localhost</value></field></x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>250</max>{after_el}</set></query></iq>"
        ))
        .unwrap_or_else(|e| panic!("sending the MAM query: {e}"));
        let mut got = 0;
        let fin = loop {
            let el = conn
                .expect_within("MAM results", Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("reading the archive: {e}"));
            if el.name() == "iq" && el.attr("id") == Some(iq_id.as_str()) {
                assert_eq!(el.attr("type"), Some("result"), "the MAM query failed: {el}");
                break el;
            }
            let Some(result) = el.get_child("result", MAM) else {
                continue;
            };
            if result.attr("queryid") != Some(query_id.as_str()) {
                continue;
            }
            got += 1;
            archive.entries += 1;
            let id = result
                .attr("id")
                .unwrap_or_else(|| panic!("a MAM result without an id: {el}"))
                .to_owned();
            let original = result
                .get_child("forwarded", FORWARD)
                .and_then(|f| f.children().find(|c| c.name() == "message"));
            let n = original.and_then(|m| {
                message_number(m).or_else(|| m.get_child("body", ns::CLIENT).and_then(|b| b.text().parse().ok()))
            });
            match n {
                Some(n) if n < messages => archive.ids.entry(n).or_default().push(id),
                _ => archive.others += 1,
            }
        };
        let fin = fin
            .get_child("fin", MAM)
            .unwrap_or_else(|| panic!("no <fin/> in the MAM result: {fin}"));
        let complete = matches!(fin.attr("complete"), Some("true" | "1"));
        let last = fin
            .get_child("set", RSM)
            .and_then(|s| s.get_child("last", RSM))
            .map(|l| l.text());
        match last {
            Some(last) if !complete && got > 0 => {
                assert_ne!(after.as_deref(), Some(last.as_str()), "RSM paging does not advance");
                after = Some(last);
            }
            _ => break,
        }
    }
    archive
}

// ---------------------------------------------------------------------------
// The test

/// The first 20 of some message numbers, as their ids.
fn first_ids(numbers: &[usize]) -> String {
    let ids: Vec<String> = numbers.iter().take(20).map(|i| format!("m-{i}")).collect();
    ids.join(" ")
}

#[test]
fn acknowledged_messages_survive_kill_9_and_cut_connections() {
    START.get_or_init(Instant::now);
    let p = Params::from_env();
    note!(
        "durability: {} messages, {} kills, {} cuts, durability {:?}, seed {} (SHOAL_SOAK_SEED={} replays the schedule)",
        p.messages,
        p.kills,
        p.cuts,
        p.durability,
        p.seed,
        p.seed
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = write_config(dir.path(), addr, &p.durability);
    for user in ["alice", "bob"] {
        add_user(&config, user);
    }
    let mut server = ServerProc::new(config, dir.path().join("server.log"), addr);
    server.start();
    let proxies = [Proxy::start("alice", addr), Proxy::start("bob", addr)];
    // About 0.7 s of traffic per fault, 2 s at least.
    let spread = ((p.kills + p.cuts) as f64 * 0.7).max(2.0);
    let run = Arc::new(Run {
        messages: p.messages,
        pace: Duration::from_secs_f64(spread / p.messages.max(1) as f64),
        deadline: Instant::now() + p.deadline,
        failed: AtomicBool::new(false),
        progress: Shared::new(ProgressState::default()),
    });
    let mut rng = StdRng::seed_from_u64(p.seed);
    let schedule = plan(&mut rng, &p);

    // bob first, so that most messages find him online.
    let bob_log = Arc::new(Shared::new(BobLog::default()));
    let stop_bob = Arc::new(AtomicBool::new(false));
    let bob = {
        let ctx = BobCtx {
            addr: proxies[1].addr,
            run: run.clone(),
            log: bob_log.clone(),
            stop: stop_bob.clone(),
            seed: p.seed ^ 3,
        };
        thread::Builder::new()
            .name("bob".into())
            .spawn(move || run_bob(ctx))
            .expect("bob's thread")
    };
    let online = bob_log.wait_until(Instant::now() + START_TIMEOUT, |l| l.connected_since.is_some());
    if !online {
        run.fail();
        stop_bob.store(true, Ordering::SeqCst);
        let _ = bob.join();
        panic!("bob did not come online within {START_TIMEOUT:?}");
    }

    let alice = {
        let (addr, run) = (proxies[0].addr, run.clone());
        let seed = p.seed ^ 2;
        thread::Builder::new()
            .name("alice".into())
            .spawn(move || run_alice(addr, run, seed))
            .expect("alice's thread")
    };
    let faults = {
        let ctx = FaultCtx {
            server,
            proxies: proxies.clone(),
            plan: schedule,
            run: run.clone(),
            seed: p.seed ^ 1,
        };
        thread::Builder::new()
            .name("faults".into())
            .spawn(move || run_faults(ctx))
            .expect("the fault thread")
    };
    let alice = alice.join();
    if alice.is_err() {
        run.fail();
    }
    let faults = faults.join();
    let (alice, (server, stats)) = match (alice, faults) {
        (Ok(alice), Ok(faults)) => (alice, faults),
        _ => {
            run.fail();
            stop_bob.store(true, Ordering::SeqCst);
            let _ = bob.join();
            panic!("the sender or the fault schedule failed (see above)");
        }
    };

    // No more faults: bob receives whatever is still on its way.
    note!("waiting for bob to settle");
    let settled = bob_log.wait_until(Instant::now() + Duration::from_secs(120), |l| {
        let quiet = match l.last_delivery {
            Some(t) => t.elapsed() >= QUIET,
            None => true,
        };
        quiet
            && l.connected_since.is_some_and(|t| t.elapsed() >= QUIET)
            && l.answered.is_some_and(|t| t.elapsed() < QUIET)
    });
    if !settled {
        note!("bob did not settle within 120 s; checking anyway (the archive holds what did not come)");
    }
    stop_bob.store(true, Ordering::SeqCst);
    assert!(bob.join().is_ok(), "bob's thread failed (see above)");
    for proxy in &proxies {
        proxy.shutdown();
    }
    let bob = std::mem::take(&mut *bob_log.lock());
    let archive = fetch_archive(addr, p.messages);

    // The verdict.
    let n = p.messages;
    let mut live = vec![0usize; n];
    let mut seen: HashSet<(u32, usize)> = HashSet::new();
    let (mut duplicates, mut redelivered, mut delayed) = (Vec::new(), 0, 0);
    for d in &bob.deliveries {
        if !seen.insert((d.chain, d.n)) {
            duplicates.push(d.n);
        } else if live[d.n] > 0 {
            redelivered += 1;
        }
        live[d.n] += 1;
        if d.delayed {
            delayed += 1;
        }
    }
    let (mut acked, mut lost, mut acked_unarchived, mut delivered_unarchived) = (0, Vec::new(), Vec::new(), Vec::new());
    for (i, was_acked) in alice.acked.iter().enumerate() {
        let archived = archive.ids.contains_key(&i);
        if *was_acked {
            acked += 1;
            if live[i] == 0 && !archived {
                lost.push(i);
            }
            if !archived {
                acked_unarchived.push(i);
            }
        }
        if live[i] > 0 && !archived {
            delivered_unarchived.push(i);
        }
    }
    let stanza_id_mismatches: Vec<usize> = bob
        .deliveries
        .iter()
        .filter(|d| {
            d.stanza_id
                .as_ref()
                .is_some_and(|sid| !archive.ids.get(&d.n).is_some_and(|ids| ids.contains(sid)))
        })
        .map(|d| d.n)
        .collect();
    let delivered = live.iter().filter(|c| **c > 0).count();
    let archived = archive.ids.len();
    let archive_duplicates: usize = archive.ids.values().map(|ids| ids.len() - 1).sum();

    println!(
        "sent={} acked={acked} delivered={delivered} archived={archived} lost={} duplicates={}",
        alice.sent,
        lost.len(),
        duplicates.len()
    );
    println!(
        "unknown_fate={} redelivered={redelivered} delayed={delayed} archive_entries={} archive_duplicates={archive_duplicates} \
         archive_pages={} archive_others={} bounced={} odd={} | kills={} cuts: half-open={} closed={} skipped={} | \
         alice sessions={} resumptions={} | bob sessions={} resumptions={} | seed={}",
        alice.unknown,
        archive.entries,
        archive.pages,
        archive.others,
        alice.bounced.len(),
        bob.odd.len(),
        stats.kills,
        stats.half_open,
        stats.closed,
        stats.skipped,
        alice.sessions,
        alice.resumptions,
        bob.sessions,
        bob.resumptions,
        p.seed
    );
    for bounce in alice.bounced.iter().take(5) {
        println!("bounced: {bounce}");
    }
    for odd in bob.odd.iter().take(5) {
        println!("odd message to bob: {odd}");
    }
    assert_eq!(stats.kills, p.kills, "every planned kill happened");
    // Each cut came while the server was up, and was waited out: each one
    // ended in a resumption (XEP-0198), not a new session.
    assert!(
        alice.resumptions + bob.resumptions >= stats.half_open + stats.closed,
        "a cut connection's session was not resumed"
    );
    assert!(acked > 0 && delivered > 0, "nothing got through at all");
    assert!(
        lost.is_empty(),
        "{} acknowledged messages were neither delivered nor archived (seed {}): {}",
        lost.len(),
        p.seed,
        first_ids(&lost)
    );
    assert!(
        duplicates.is_empty(),
        "{} messages were delivered twice on one session chain (seed {}): {}",
        duplicates.len(),
        p.seed,
        first_ids(&duplicates)
    );
    assert!(
        acked_unarchived.is_empty(),
        "{} acknowledged messages are not in bob's archive (seed {}): {}",
        acked_unarchived.len(),
        p.seed,
        first_ids(&acked_unarchived)
    );
    assert!(
        delivered_unarchived.is_empty(),
        "{} messages were delivered but are not in bob's archive: not archived before delivery (seed {}): {}",
        delivered_unarchived.len(),
        p.seed,
        first_ids(&delivered_unarchived)
    );
    assert!(
        stanza_id_mismatches.is_empty(),
        "{} deliveries carry a stanza-id that is not the message's archive id (seed {}): {}",
        stanza_id_mismatches.len(),
        p.seed,
        first_ids(&stanza_id_mismatches)
    );
    drop(server);
}
