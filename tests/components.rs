//! External components (XEP-0114): the handshake, conflicts, stanzas both
//! ways, and what a requester gets when a component does not answer.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;
use common::{unsid, Client, TestServer, TIMEOUT};
use shoal::config::{ComponentConflict, ComponentServiceConfig, ComponentsConfig};
use shoal_actors::codec::{CodecLimits, Frame, StreamHeader, XmppCodec};
use shoal_actors::component::handshake_digest;
use shoal_actors::ns;
use shoal_actors::xml::Element;
use tokio_util::codec::Decoder;

const BOT: &str = "bot.localhost";
const SECRET: &str = "sausages";

/// A server with one component, `bot.localhost`, configured, and the
/// components section edited by `edit`.
fn server_with(edit: impl FnOnce(&mut ComponentsConfig)) -> TestServer {
    let server = TestServer::with_config(|c| {
        c.components.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.components.services = vec![ComponentServiceConfig {
            domain: BOT.into(),
            secret: SECRET.into(),
            name: Some("Echo bot".into()),
            ..ComponentServiceConfig::default()
        }];
        edit(&mut c.components);
    });
    server.add_user("alice", "pw");
    server
}

fn alice(server: &TestServer) -> Client {
    server.login("alice", "pw", "phone")
}

/// A component's end of the connection, read with the same codec as the
/// server's: stanzas come out in jabber:client.
struct Component {
    stream: TcpStream,
    codec: XmppCodec,
    buf: BytesMut,
    header: Option<StreamHeader>,
    next_id: u32,
}

impl Component {
    /// Connects and sends the stream header for `domain`.
    fn connect(server: &TestServer, domain: &str) -> Component {
        let stream = TcpStream::connect(server.component_addr()).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut c = Component {
            stream,
            codec: XmppCodec::new(CodecLimits::default()).for_component(),
            buf: BytesMut::new(),
            header: None,
            next_id: 0,
        };
        c.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
        ));
        c
    }

    /// Connects, reads the server's header and sends the handshake for
    /// `secret`.
    fn shake_hands(server: &TestServer, domain: &str, secret: &str) -> Component {
        let mut c = Component::connect(server, domain);
        let header = c.read_header();
        assert_eq!(header.default_ns.as_deref(), Some(ns::COMPONENT_ACCEPT));
        assert_eq!(header.from.as_deref(), Some(domain));
        let id = header.id.expect("a stream id");
        c.send(&format!("<handshake>{}</handshake>", handshake_digest(&id, secret)));
        c
    }

    /// A connected component for `bot.localhost`.
    fn login(server: &TestServer) -> Component {
        let mut c = Component::shake_hands(server, BOT, SECRET);
        assert_eq!(c.recv_xml(), "<handshake/>");
        c
    }

    fn send(&mut self, xml: &str) {
        self.stream.write_all(xml.as_bytes()).expect("send");
    }

    fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => panic!("server sent bad XML: {e}"),
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    panic!("timed out waiting for the server")
                }
                Err(_) => return None,
            }
        }
    }

    fn read_header(&mut self) -> StreamHeader {
        match self.next_frame() {
            Some(Frame::StreamOpen(h)) => {
                self.header = Some(h.clone());
                h
            }
            other => panic!("expected a stream header, got {other:?}"),
        }
    }

    fn recv(&mut self) -> Element {
        match self.next_frame() {
            Some(Frame::Stanza(el)) => el,
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    fn recv_xml(&mut self) -> String {
        self.recv().to_xml_in(ns::CLIENT)
    }

    /// A round trip through the server: everything this component sent
    /// before has been routed (or dropped) once this returns.
    fn sync(&mut self) {
        self.next_id += 1;
        let id = format!("sync{}", self.next_id);
        self.send(&format!(
            "<iq type='get' id='{id}' from='{BOT}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        let reply = self.recv();
        assert_eq!(reply.attr("id"), Some(id.as_str()), "{reply}");
        assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    }

    /// Reads a stream error, the close and the hang-up; returns the
    /// error's condition.
    fn expect_stream_error(&mut self) -> String {
        let el = loop {
            match self.next_frame() {
                Some(Frame::StreamOpen(h)) => self.header = Some(h),
                Some(Frame::Stanza(el)) if el.is("error", ns::STREAM) => break el,
                other => panic!("expected a stream error, got {other:?}"),
            }
        };
        let condition = el
            .children()
            .find(|c| c.ns() == ns::STREAMS_ERRORS && c.name() != "text")
            .unwrap()
            .name()
            .to_owned();
        assert_eq!(self.next_frame(), Some(Frame::StreamClose));
        let _ = self.stream.write_all(b"</stream:stream>");
        assert_eq!(self.next_frame(), None, "the server hangs up");
        condition
    }

    /// Closes the stream and waits for the server's close.
    fn close(mut self) {
        self.send("</stream:stream>");
        assert_eq!(self.next_frame(), Some(Frame::StreamClose));
        assert_eq!(self.next_frame(), None);
    }
}

const VERSION_GET: &str = "<iq type='get' id='q1' to='bot.localhost'><query xmlns='jabber:iq:version'/></iq>";
const VERSION_GET_DELIVERED: &str =
    "<iq type='get' id='q1' to='bot.localhost' from='alice@localhost/phone'><query xmlns='jabber:iq:version'/></iq>";

fn iq_error(id: &str, error: &str) -> String {
    format!("<iq id='{id}' type='error' from='bot.localhost' to='alice@localhost/phone'>{error}</iq>")
}

#[test]
fn the_right_secret_is_answered_with_an_empty_handshake() {
    let server = server_with(|_| {});
    let bot = Component::login(&server);
    let header = bot.header.clone().unwrap();
    assert_eq!(header.from.as_deref(), Some(BOT));
    assert_eq!(header.version, None, "XEP-0114 streams have no version");
    bot.close();
}

#[test]
fn a_wrong_secret_is_not_authorized() {
    let server = server_with(|_| {});
    let mut bot = Component::shake_hands(&server, BOT, "bacon");
    assert_eq!(bot.expect_stream_error(), "not-authorized");
    // And the domain was not published.
    let mut alice = alice(&server);
    alice.send(VERSION_GET);
    assert_eq!(
        alice.recv_xml(),
        iq_error(
            "q1",
            "<query xmlns='jabber:iq:version'/><error type='wait'>\
             <remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        )
    );
}

#[test]
fn an_unknown_domain_is_host_unknown() {
    let server = server_with(|_| {});
    let mut c = Component::connect(&server, "nobody.localhost");
    assert_eq!(c.expect_stream_error(), "host-unknown");
}

#[test]
fn kick_old_the_new_connection_wins() {
    let server = server_with(|c| c.conflict = ComponentConflict::KickOld);
    let mut old = Component::login(&server);
    let mut new = Component::login(&server);
    assert_eq!(old.expect_stream_error(), "conflict");
    let mut alice = alice(&server);
    alice.send("<message to='echo@bot.localhost' id='m1'><body>hi</body></message>");
    assert_eq!(
        new.recv_xml(),
        "<message to='echo@bot.localhost' id='m1' from='alice@localhost/phone'><body>hi</body></message>"
    );
}

#[test]
fn kick_new_the_old_connection_stays() {
    let server = server_with(|c| c.conflict = ComponentConflict::KickNew);
    let mut old = Component::login(&server);
    let mut new = Component::shake_hands(&server, BOT, SECRET);
    assert_eq!(new.expect_stream_error(), "conflict");
    let mut alice = alice(&server);
    alice.send("<message to='echo@bot.localhost' id='m1'><body>hi</body></message>");
    assert_eq!(
        old.recv_xml(),
        "<message to='echo@bot.localhost' id='m1' from='alice@localhost/phone'><body>hi</body></message>"
    );
}

#[test]
fn messages_go_both_ways() {
    let server = server_with(|_| {});
    let mut bot = Component::login(&server);
    let mut alice = alice(&server);
    alice.send("<message to='echo@bot.localhost' id='m1' type='chat'><body>hi</body></message>");
    assert_eq!(
        bot.recv_xml(),
        "<message to='echo@bot.localhost' id='m1' type='chat' from='alice@localhost/phone'><body>hi</body></message>"
    );
    let reply = "<message from='echo@bot.localhost' to='alice@localhost/phone' id='r1' type='chat'>\
                 <body>hi yourself</body></message>";
    bot.send(reply);
    // With the id the server gives every chat it delivers (XEP-0359).
    assert_eq!(
        unsid(alice.recv_xml()),
        reply.replace(
            "</body>",
            "</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='alice@localhost'/>"
        )
    );
}

#[test]
fn a_component_sends_only_from_its_own_domain() {
    let server = server_with(|_| {});
    let mut bot = Component::login(&server);
    bot.send("<message from='other.localhost' to='alice@localhost'><body>x</body></message>");
    assert_eq!(bot.expect_stream_error(), "invalid-from");
}

#[test]
fn a_request_to_a_component_not_connected_times_out_at_once() {
    let server = server_with(|_| {});
    let mut alice = alice(&server);
    alice.send(VERSION_GET);
    assert_eq!(
        alice.recv_xml(),
        iq_error(
            "q1",
            "<query xmlns='jabber:iq:version'/><error type='wait'>\
             <remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        )
    );
}

#[test]
fn requests_waiting_when_the_component_goes_are_answered() {
    let server = server_with(|_| {});
    let mut bot = Component::login(&server);
    let mut alice = alice(&server);
    alice.send(VERSION_GET);
    assert_eq!(bot.recv_xml(), VERSION_GET_DELIVERED);
    bot.close();
    assert_eq!(
        alice.recv_xml(),
        iq_error(
            "q1",
            "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        )
    );
}

#[test]
fn an_unanswered_request_times_out_and_a_late_answer_is_dropped() {
    let server = server_with(|c| c.iq_timeout_secs = 1);
    let mut bot = Component::login(&server);
    let mut alice = alice(&server);
    alice.send(VERSION_GET);
    assert_eq!(bot.recv_xml(), VERSION_GET_DELIVERED);
    // The sweep answers within a second or two; recv waits up to 10 s.
    assert_eq!(
        alice.recv_xml(),
        iq_error(
            "q1",
            "<error type='wait'><remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        )
    );
    bot.send("<iq type='result' id='q1' from='bot.localhost' to='alice@localhost/phone'/>");
    bot.sync();
    alice.expect_nothing();
}

#[test]
fn an_answer_counts_once_and_only_if_asked_for() {
    let server = server_with(|_| {});
    let mut bot = Component::login(&server);
    let mut alice = alice(&server);
    alice.send(VERSION_GET);
    assert_eq!(bot.recv_xml(), VERSION_GET_DELIVERED);
    let answer = "<iq type='result' id='q1' from='bot.localhost' to='alice@localhost/phone'>\
                  <query xmlns='jabber:iq:version'><name>bot</name></query></iq>";
    bot.send(answer);
    assert_eq!(alice.recv_xml(), answer);
    // The same answer again, and one to a request never made.
    bot.send(answer);
    bot.send("<iq type='result' id='never' from='bot.localhost' to='alice@localhost/phone'/>");
    bot.sync();
    alice.expect_nothing();
}

#[test]
fn requests_waiting_per_requester_are_bounded() {
    let server = server_with(|c| c.max_pending_per_requester = 2);
    let mut bot = Component::login(&server);
    let mut alice = alice(&server);
    for id in ["q1", "q2", "q3"] {
        alice.send(&format!(
            "<iq type='get' id='{id}' to='bot.localhost'><query xmlns='jabber:iq:version'/></iq>"
        ));
    }
    assert_eq!(
        alice.recv_xml(),
        iq_error(
            "q3",
            "<query xmlns='jabber:iq:version'/><error type='wait'>\
             <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        )
    );
    assert_eq!(bot.recv().attr("id"), Some("q1"));
    assert_eq!(bot.recv().attr("id"), Some("q2"));
}
