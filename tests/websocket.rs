//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket`, with a real
//! WebSocket client library: the framing (`<open/>`, `<close/>`, one
//! element per text frame, each declaring its namespace), login, a
//! message to a TCP user and back, the close handshake, frames too large,
//! and the HTTP checks (subprotocol, Origin); then XEP-0156 discovery and
//! the chat page.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use base64::Engine;
use common::{fixture_tls, tls_client, unsid, Stream, TestServer, TIMEOUT};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

fn server() -> TestServer {
    let server = TestServer::with_config(|c| c.http.listen = vec!["127.0.0.1:0".parse().unwrap()]);
    server.add_user("alice", "wonderland");
    server.add_user("bob", "builder");
    server
}

struct Ws {
    ws: WebSocket<Stream>,
}

/// Opens a WebSocket to `/xmpp-websocket` with these extra headers; the
/// HTTP status when the server refuses.
fn connect_with(addr: SocketAddr, headers: &[(&'static str, &str)]) -> Result<Ws, u16> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    handshake(format!("ws://{addr}/xmpp-websocket"), Stream::Plain(tcp), headers)
}

/// `wss://`: TLS to `localhost` with the fixture CA, then the WebSocket.
fn connect_tls(addr: SocketAddr) -> Ws {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(tls_client(rustls::ALL_VERSIONS, &["http/1.1"]), name).unwrap();
    let tls = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
    handshake(
        format!("wss://localhost:{}/xmpp-websocket", addr.port()),
        tls,
        &[("sec-websocket-protocol", "xmpp")],
    )
    .expect("accepted")
}

fn handshake(url: String, stream: Stream, headers: &[(&'static str, &str)]) -> Result<Ws, u16> {
    let mut req = url.into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(*name, HeaderValue::from_str(value).unwrap());
    }
    match tungstenite::client(req, stream) {
        Ok((ws, response)) => {
            // §3.1: the subprotocol echoed.
            assert_eq!(response.headers()["sec-websocket-protocol"], "xmpp");
            Ok(Ws { ws })
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => Err(r.status().as_u16()),
        Err(e) => panic!("WebSocket handshake: {e}"),
    }
}

impl Ws {
    fn connect(addr: SocketAddr) -> Ws {
        connect_with(addr, &[("sec-websocket-protocol", "xmpp")]).expect("accepted")
    }

    fn send(&mut self, xml: &str) {
        self.ws.send(Message::text(xml)).expect("send");
    }

    /// The next text frame.
    fn recv(&mut self) -> String {
        match self.ws.read().expect("a frame") {
            Message::Text(t) => t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next text frame, the stream's random id replaced.
    fn recv_open(&mut self) -> String {
        let open = self.recv();
        let start = open.find(" id='").expect("an id") + 5;
        let end = start + open[start..].find('\'').unwrap();
        format!("{}ID{}", &open[..start], &open[end..])
    }

    fn open(&mut self) {
        self.send(&format!("<open xmlns=\"{FRAMING}\" to=\"localhost\" version=\"1.0\"/>"));
        assert_eq!(
            self.recv_open(),
            format!("<open xmlns='{FRAMING}' id='ID' from='localhost' version='1.0' xml:lang='en'/>")
        );
    }

    /// Logs in as `user` and binds `resource`, asserting each frame.
    fn login(&mut self, user: &str, password: &str, resource: &str) {
        self.open();
        let features = self.recv();
        // No STARTTLS over a WebSocket (§3.4); PLAIN on loopback.
        assert!(features.starts_with("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>"));
        assert!(!features.contains("starttls"), "{features}");
        assert!(features.contains("<mechanism>PLAIN</mechanism>"), "{features}");
        self.auth_and_bind(user, password, resource);
    }

    fn auth_and_bind(&mut self, user: &str, password: &str, resource: &str) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">{b64}</auth>"
        ));
        assert_eq!(self.recv(), "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        self.open();
        let features = self.recv();
        assert!(
            features.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
            "{features}"
        );
        self.send(&format!(
            "<iq xmlns=\"jabber:client\" type=\"set\" id=\"b1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\">\
             <resource>{resource}</resource></bind></iq>"
        ));
        assert_eq!(
            self.recv(),
            format!(
                "<iq xmlns='jabber:client' id='b1' type='result'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                 <jid>{user}@localhost/{resource}</jid></bind></iq>"
            )
        );
    }

    /// The WebSocket's close frame (after any text frames, returned).
    fn expect_close(&mut self) -> (Vec<String>, Option<CloseCode>) {
        let mut texts = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => texts.push(t.to_string()),
                Ok(Message::Close(frame)) => return (texts, frame.map(|f| f.code)),
                Ok(other) => panic!("unexpected {other:?}"),
                // Closed, or dropped (reset) without a close frame.
                Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Io(_)
                    | tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake),
                ) => return (texts, None),
                Err(e) => panic!("waiting for the close: {e}"),
            }
        }
    }
}

#[test]
fn a_websocket_user_logs_in_and_chats_with_a_tcp_user() {
    let server = server();
    let mut alice = Ws::connect(server.http_addr());
    alice.login("alice", "wonderland", "web");
    let mut bob = server.login("bob", "builder", "tcp");

    alice.send(
        "<message xmlns=\"jabber:client\" to=\"bob@localhost/tcp\" type=\"chat\" id=\"m1\"><body>hi from the web</body></message>",
    );
    assert_eq!(
        unsid(bob.recv_xml()),
        "<message to='bob@localhost/tcp' type='chat' id='m1' from='alice@localhost/web'><body>hi from the web</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='bob@localhost'/></message>"
    );
    bob.send("<message to='alice@localhost/web' type='chat' id='m2'><body>hi from TCP &amp; more</body></message>");
    assert_eq!(
        unsid(alice.recv()),
        "<message xmlns='jabber:client' to='alice@localhost/web' type='chat' id='m2' from='bob@localhost/tcp'>\
         <body>hi from TCP &amp; more</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='alice@localhost'/></message>"
    );

    // §3.6: the client's <close/> is answered with ours, then the close.
    alice.send(&format!("<close xmlns=\"{FRAMING}\"/>"));
    let (texts, code) = alice.expect_close();
    assert_eq!(texts, [format!("<close xmlns='{FRAMING}'/>")]);
    assert_eq!(code, Some(CloseCode::Normal));
}

#[test]
fn presence_flows_between_websocket_and_tcp_sessions() {
    let server = server();
    server.befriend("alice", "bob");
    let mut bob = server.login("bob", "builder", "tcp");
    bob.announce("<presence/>");
    let mut alice = Ws::connect(server.http_addr());
    alice.login("alice", "wonderland", "web");
    alice.send("<presence xmlns=\"jabber:client\"/>");
    // Bob's presence, probed for alice, and alice's own, reflected.
    let mut got = vec![alice.recv(), alice.recv()];
    got.sort();
    assert_eq!(
        got,
        [
            "<presence xmlns='jabber:client' to='alice@localhost' from='alice@localhost/web'/>",
            "<presence xmlns='jabber:client' to='alice@localhost/web' from='bob@localhost/tcp'/>",
        ]
    );
    assert_eq!(
        bob.recv_xml(),
        "<presence to='bob@localhost' from='alice@localhost/web'/>"
    );
}

#[test]
fn a_stanza_too_large_gets_the_stream_error_and_a_larger_frame_the_close_code() {
    let server = server();
    let max = shoal::Config::default().c2s.max_stanza_bytes;
    let mut alice = Ws::connect(server.http_addr());
    alice.login("alice", "wonderland", "web");
    let body = "x".repeat(max);
    alice.send(&format!(
        "<message xmlns=\"jabber:client\" to=\"bob@localhost\"><body>{body}</body></message>"
    ));
    let (texts, code) = alice.expect_close();
    assert_eq!(
        texts,
        [
            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>\
             <policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>stanza exceeds 262144 bytes</text>\
             </stream:error>"
                .to_owned(),
            format!("<close xmlns='{FRAMING}'/>"),
        ]
    );
    assert_eq!(code, Some(CloseCode::Normal));

    // Far larger: not even read, the WebSocket says why.
    let mut bob = Ws::connect(server.http_addr());
    bob.open();
    bob.recv();
    bob.send(&"y".repeat(max * 2));
    let (_, code) = bob.expect_close();
    assert_eq!(code, Some(CloseCode::Size));
}

#[test]
fn the_websocket_needs_the_xmpp_subprotocol_and_an_allowed_origin() {
    let server = TestServer::with_config(|c| {
        c.http.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.http.allowed_origins = vec!["https://chat.example.com".into()];
    });
    let addr = server.http_addr();
    assert_eq!(connect_with(addr, &[]).err(), Some(400));
    assert_eq!(
        connect_with(addr, &[("sec-websocket-protocol", "chat")]).err(),
        Some(400)
    );
    let evil = [("sec-websocket-protocol", "xmpp"), ("origin", "https://evil.example")];
    assert_eq!(connect_with(addr, &evil).err(), Some(403));
    // The configured origin, and the server's own pages.
    let listed = [
        ("sec-websocket-protocol", "xmpp"),
        ("origin", "https://chat.example.com"),
    ];
    assert!(connect_with(addr, &listed).is_ok());
    let own = format!("http://{addr}");
    assert!(connect_with(addr, &[("sec-websocket-protocol", "xmpp"), ("origin", own.as_str())]).is_ok());
}

/// A GET over HTTP/1.1: status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn host_meta_advertises_the_websocket_endpoint() {
    let server = TestServer::with_config(|c| c.http.listen = vec!["127.0.0.1:0".parse().unwrap()]);
    let addr = server.http_addr();
    let (status, head, body) = get(addr, "/.well-known/host-meta");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/xrd+xml"), "{head}");
    assert!(head.contains("access-control-allow-origin: *"), "{head}");
    assert_eq!(
        body,
        format!(
            "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  \
             <Link rel='urn:xmpp:alt-connections:websocket' href='ws://{addr}/xmpp-websocket'/>\n</XRD>\n"
        )
    );
    let (status, _, body) = get(addr, "/.well-known/host-meta.json");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!("{{\"links\":[{{\"rel\":\"urn:xmpp:alt-connections:websocket\",\"href\":\"ws://{addr}/xmpp-websocket\"}}]}}\n")
    );
}

#[test]
fn the_chat_page_serves_converse_or_says_how_to_install_it() {
    let dist = tempfile::tempdir().unwrap();
    let dir = dist.path().to_owned();
    let server = TestServer::with_config(move |c| {
        c.http.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.http.conversejs_dir = dir;
    });
    let addr = server.http_addr();
    let (status, _, body) = get(addr, "/chat");
    assert_eq!(status, 200);
    assert!(body.contains("Converse.js is not installed"), "{body}");

    std::fs::write(dist.path().join("converse.min.js"), "/* converse */").unwrap();
    let (status, _, body) = get(addr, "/chat");
    assert_eq!(status, 200);
    assert!(
        body.contains("<script type=\"module\" src=\"/chat/dist/converse.min.js\""),
        "{body}"
    );
    assert!(body.contains("+ '/xmpp-websocket'"), "{body}");
    assert!(body.contains("default_domain: 'localhost'"), "{body}");
    let (status, head, body) = get(addr, "/chat/dist/converse.min.js");
    assert_eq!((status, body.as_str()), (200, "/* converse */"));
    assert!(head.contains("javascript"), "{head}");
    // Nothing outside the directory.
    assert_eq!(get(addr, "/chat/dist/../Cargo.toml").0, 404);
    assert_eq!(get(addr, "/chat/dist/%2e%2e/Cargo.toml").0, 404);
}

#[test]
fn shoal_session_list_shows_websocket_and_tcp_sessions() {
    let server = TestServer::from_file(|dir| {
        format!(
            "[storage]\nsqlite = {:?}\n[c2s]\nlisten = ['127.0.0.1:0']\n[http]\nlisten = ['127.0.0.1:0']\n",
            dir.join("shoal.db")
        )
    });
    server.add_user("alice", "wonderland");
    server.add_user("bob", "builder");
    let mut alice = Ws::connect(server.http_addr());
    alice.login("alice", "wonderland", "web");
    let _bob = server.login("bob", "builder", "tcp");
    let (ok, out, err) = common::shoal(server.config_file(), &["session", "list"], None);
    assert!(ok, "{err}");
    let Stream::Plain(tcp) = alice.ws.get_ref() else {
        panic!("plain")
    };
    let web_peer = tcp.local_addr().unwrap().to_string();
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(rows[0], ["alice@localhost/web", "websocket", web_peer.as_str()]);
    assert_eq!(rows[1][..2], ["bob@localhost/tcp", "tcp"]);
    assert_eq!(rows.len(), 2, "{out}");
}

#[test]
fn wss_on_the_tls_listener_is_encrypted_enough_for_plain() {
    let server = TestServer::with_config(|c| {
        fixture_tls(c);
        c.http.listen = Vec::new();
        c.http.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        // PLAIN only where the stream is encrypted.
        c.c2s.allow_plain_without_tls = Some(false);
    });
    server.add_user("alice", "wonderland");
    let addr = server.http_tls_addr();
    let mut alice = connect_tls(addr);
    alice.open();
    let features = alice.recv();
    assert!(!features.contains("starttls"), "{features}");
    assert!(features.contains("<mechanism>PLAIN</mechanism>"), "{features}");
    // No channel bindings from the HTTP server's TLS: no -PLUS.
    assert!(!features.contains("-PLUS"), "{features}");
    alice.auth_and_bind("alice", "wonderland", "secure");
    alice.send("<iq xmlns=\"jabber:client\" type=\"get\" id=\"p\"><ping xmlns=\"urn:xmpp:ping\"/></iq>");
    assert_eq!(
        alice.recv(),
        "<iq xmlns='jabber:client' id='p' type='result' to='alice@localhost/secure'/>"
    );
}

#[test]
fn a_websocket_session_resumes_over_a_new_websocket() {
    let server = server();
    let mut alice = Ws::connect(server.http_addr());
    alice.login("alice", "wonderland", "web");
    alice.send("<enable xmlns=\"urn:xmpp:sm:3\" resume=\"true\"/>");
    let enabled = alice.recv();
    let start = enabled.find("id='").expect("an id") + 4;
    let id = enabled[start..start + enabled[start..].find('\'').unwrap()].to_owned();
    assert_eq!(
        enabled,
        format!("<enabled xmlns='urn:xmpp:sm:3' id='{id}' resume='true' max='300'/>")
    );
    let mut bob = server.login("bob", "builder", "tcp");
    let chat =
        |id: &str| format!("<message to='alice@localhost/web' type='chat' id='{id}'><body>{id}</body></message>");
    bob.send(&chat("m1"));
    bob.send(&chat("m2"));
    for m in ["m1", "m2"] {
        assert!(alice.recv().contains(&format!("id='{m}'")));
    }
    // The connection is lost (no close frame, no <close/>), having
    // handled one of the two.
    drop(alice);
    bob.send(&chat("m3"));
    bob.sync();

    let mut alice = Ws::connect(server.http_addr());
    alice.open();
    alice.recv();
    let b64 = base64::engine::general_purpose::STANDARD.encode("\0alice\0wonderland");
    alice.send(&format!(
        "<auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">{b64}</auth>"
    ));
    assert_eq!(alice.recv(), "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    alice.open();
    alice.recv();
    alice.send(&format!("<resume xmlns=\"urn:xmpp:sm:3\" previd=\"{id}\" h=\"1\"/>"));
    assert_eq!(
        alice.recv(),
        format!("<resumed xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>")
    );
    for m in ["m2", "m3"] {
        let frame = unsid(alice.recv());
        assert_eq!(
            frame,
            format!(
                "<message xmlns='jabber:client' to='alice@localhost/web' type='chat' id='{m}' from='bob@localhost/tcp'>\
                 <body>{m}</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='alice@localhost'/></message>"
            )
        );
    }
}

#[test]
fn a_websocket_client_that_stops_reading_is_cut_off_not_buffered() {
    let server = TestServer::with_config(|c| {
        c.http.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.c2s.max_stanza_bytes = 16 * 1024;
        c.c2s.max_outbound_bytes = 64 * 1024;
        c.limits.rate_bytes_per_sec = 1 << 30;
        c.limits.burst_bytes = 1 << 30;
        c.limits.write_timeout_secs = 1;
    });
    server.add_user("slow", "s");
    let mut slow = Ws::connect(server.http_addr());
    slow.login("slow", "s", "r");
    // Its own other resource floods it (the user's own traffic overflows
    // the queue rather than being refused), while it reads nothing.
    let mut flood = server.login("slow", "s", "flood");
    let stanza = format!(
        "<message to='slow@localhost/r' type='headline'><body>{}</body></message>",
        "x".repeat(8 * 1024)
    );
    let mut sent = 0;
    while sent < 64 * 1024 * 1024 {
        flood.send(&stanza);
        sent += stanza.len();
    }
    flood.sync();
    // What fitted in the buffers on the way, then the end.
    let (texts, _) = slow.expect_close();
    let delivered = texts.iter().filter(|t| t.starts_with("<message")).count();
    assert!(
        delivered * stanza.len() < sent / 2,
        "most of the flood was not queued: {delivered} delivered"
    );
}
