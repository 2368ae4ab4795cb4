//! Test harness: a real Shoal server on an ephemeral loopback port with a
//! temporary database, and a blocking XMPP client that reads whole stanzas
//! with a timeout (never sleeps). Assertions compare the exact XML.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine;
use bytes::BytesMut;
use shoal::store::SqliteStore;
use shoal::{Config, ServerBuilder};
use shoal_actors::codec::{CodecLimits, Frame, StreamHeader, XmppCodec};
use shoal_actors::jid::BareJid;
use shoal_actors::ns;
use shoal_actors::sasl::{Credentials, ScramClient, ScramHash};
use shoal_actors::xml::Element;
use tokio_util::codec::Decoder;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The files of a real export in fixtures/migrate/ (made by its
/// make-exports.sh), sorted.
pub fn migration_fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/migrate")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// ejabberd's export (`ejabberdctl export_piefxis`): the file of
/// `<xi:include/>`s (the hosts' files beside it have the host in their
/// names, after a `_`).
pub fn ejabberd_export() -> PathBuf {
    let main: Vec<PathBuf> = migration_fixtures("ejabberd")
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().contains('_'))
        .collect();
    assert_eq!(main.len(), 1, "{main:?}");
    main[0].clone()
}

/// Runs `shoal --config CONFIG ARGS` as a user would, with `stdin` as its
/// input; returns (success, stdout, stderr).
pub fn run_shoal(
    config: &std::path::Path,
    args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
    stdin: Option<&str>,
) -> (bool, String, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The account a test names where no server says which domain: `alice`
/// is alice@localhost, `alice@a.test` itself ([`TestServer::account`]
/// takes the server's default domain).
pub fn account(name: &str) -> BareJid {
    if name.contains('@') {
        BareJid::parse(name).unwrap()
    } else {
        BareJid::new(name, "localhost").unwrap()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    at: Listening,
    pub db: PathBuf,
    config: Config,
    /// The file it was started from, if any ([`TestServer::from_file`]).
    config_file: Option<PathBuf>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Where a started server listens: clients, Direct TLS, components, HTTP.
struct Listening {
    c2s: SocketAddr,
    direct_tls: Option<SocketAddr>,
    component: Option<SocketAddr>,
    http: Option<SocketAddr>,
    http_tls: Option<SocketAddr>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::with_config(|_| {})
    }

    pub fn with_config(edit: impl FnOnce(&mut Config)) -> TestServer {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("shoal.db");
        let mut config = Config::default();
        config.storage.sqlite = db.clone();
        config.c2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
        // No HTTP unless the test asks (the default port is fixed).
        config.http.listen = Vec::new();
        edit(&mut config);
        let (at, stop, thread) = Self::spawn(config.clone(), None);
        TestServer {
            addr: at.c2s,
            at,
            db,
            config,
            config_file: None,
            _dir: dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A server started from a configuration file, `shoal.toml` in its
    /// temporary directory, with the text `text` makes (given the
    /// directory, where it may put other files first): the file a reload
    /// reads again. Its database and control socket are where it says.
    pub fn from_file(text: impl FnOnce(&Path) -> String) -> TestServer {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("shoal.toml");
        std::fs::write(&file, text(dir.path())).unwrap();
        let config = Config::load(&file).expect("the test's configuration");
        let (at, stop, thread) = Self::spawn(config.clone(), Some(file.clone()));
        TestServer {
            addr: at.c2s,
            at,
            db: config.storage.sqlite.clone(),
            config,
            config_file: Some(file),
            _dir: dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The file the server was started from ([`TestServer::from_file`]).
    pub fn config_file(&self) -> &Path {
        self.config_file.as_deref().expect("not started from a file")
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    fn spawn(
        config: Config,
        config_file: Option<PathBuf>,
    ) -> (Listening, tokio::sync::oneshot::Sender<()>, JoinHandle<()>) {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let mut builder = ServerBuilder::new(config).workers(2);
                if let Some(file) = config_file {
                    builder = builder.config_file(file);
                }
                let server = match builder.start().await {
                    Ok(s) => s,
                    Err(e) => return drop(addr_tx.send(Err(e.to_string()))),
                };
                let _ = addr_tx.send(Ok(Listening {
                    c2s: server.local_addrs()[0],
                    direct_tls: server.direct_tls_addrs().first().copied(),
                    component: server.component_addrs().first().copied(),
                    http: server.http_addrs().first().copied(),
                    http_tls: server.http_tls_addrs().first().copied(),
                }));
                let _ = stop_rx.await;
                server.shutdown().await;
            });
        });
        let addr = addr_rx
            .recv_timeout(TIMEOUT)
            .expect("server start")
            .expect("server start");
        (addr, stop_tx, thread)
    }

    /// Stops the server and starts it again on the same database (on a
    /// new port).
    pub fn restart(&mut self) {
        self.stop();
        let (at, stop, thread) = Self::spawn(self.config.clone(), self.config_file.clone());
        self.addr = at.c2s;
        self.at = at;
        self.stop = Some(stop);
        self.thread = Some(thread);
    }

    /// Adds many users sharing one password (one key derivation for all);
    /// see [`account`] for the names.
    pub fn add_users(&self, names: &[String], password: &str) {
        let mut store = SqliteStore::open(&self.db).unwrap();
        let creds = Credentials::derive(password, 4096);
        for name in names {
            assert!(store.create_user(&self.account(name), &creds).unwrap());
        }
    }

    /// The first HTTP listener, if the test configured one (`[http] listen`).
    pub fn http_addr(&self) -> SocketAddr {
        self.at.http.expect("no HTTP listener configured")
    }

    /// The first HTTPS listener, if the test configured one (`[http] tls_listen`).
    pub fn http_tls_addr(&self) -> SocketAddr {
        self.at.http_tls.expect("no HTTPS listener configured")
    }

    /// The first Direct TLS listener, if the test configured one.
    pub fn direct_tls_addr(&self) -> SocketAddr {
        self.at.direct_tls.expect("no Direct TLS listener configured")
    }

    /// The first component listener (XEP-0114), if the test configured a
    /// component.
    pub fn component_addr(&self) -> SocketAddr {
        self.at.component.expect("no component configured")
    }

    /// Adds an account; see [`account`] for the name.
    pub fn add_user(&self, name: &str, password: &str) {
        let mut store = SqliteStore::open(&self.db).unwrap();
        assert!(store
            .create_user(&self.account(name), &Credentials::derive(password, 4096))
            .unwrap());
    }

    /// Makes `a` and `b` subscribed to each other ('both'), through the
    /// store: setup for presence tests (the stanza path has its own tests).
    pub fn befriend(&self, a: &str, b: &str) {
        use shoal_actors::roster::{ItemChange, RosterItem, SubState, Subscription};
        let mut store = SqliteStore::open(&self.db).unwrap();
        for (user, contact) in [(a, b), (b, a)] {
            let (user, jid) = (self.account(user), self.account(contact));
            let item = RosterItem {
                state: SubState {
                    subscription: Subscription::Both,
                    ..SubState::default()
                },
                in_roster: true,
                ..RosterItem::new(jid.clone())
            };
            store
                .update_roster_item(&user, &jid, Box::new(move |_| ItemChange::Put(item)))
                .unwrap();
        }
    }

    pub fn connect(&self) -> Client {
        let mut c = Client::connect(self.addr);
        c.domain = self.config.default_domain().to_owned();
        c
    }

    /// A logged-in, bound client (SASL PLAIN), with initial presence sent
    /// only if `available`.
    pub fn login(&self, user: &str, password: &str, resource: &str) -> Client {
        self.login_at(self.config.default_domain(), user, password, resource)
    }

    /// The account a test names on this server: `alice` is alice at its
    /// default domain, `alice@a.test` itself.
    pub fn account(&self, name: &str) -> BareJid {
        if name.contains('@') {
            BareJid::parse(name).unwrap()
        } else {
            BareJid::new(name, self.config.default_domain()).unwrap()
        }
    }

    /// [`TestServer::login`] on a stream to `domain`: `user` is the
    /// localpart of an account there.
    pub fn login_at(&self, domain: &str, user: &str, password: &str, resource: &str) -> Client {
        let mut c = self.authenticated_at(domain, user, password);
        c.bind(Some(resource));
        c
    }

    /// A client that has authenticated (SASL PLAIN) and restarted the
    /// stream, but not bound a resource yet.
    pub fn authenticated(&self, user: &str, password: &str) -> Client {
        self.authenticated_at(self.config.default_domain(), user, password)
    }

    /// [`TestServer::authenticated`] on a stream to `domain`.
    pub fn authenticated_at(&self, domain: &str, user: &str, password: &str) -> Client {
        let mut c = self.connect();
        c.domain = domain.to_owned();
        c.open();
        c.auth_plain(user, password);
        let outcome = c.recv();
        assert!(outcome.is("success", ns::SASL), "{outcome}");
        c.open();
        c
    }

    /// Stops the server (streams get `<system-shutdown/>`).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client's connection: plain, or TLS after STARTTLS or from the start.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Gone,
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
            Stream::Gone => panic!("no connection"),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Gone => Ok(0),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Gone => Ok(()),
        }
    }
}

/// A TLS client trusting the fixture CA (fixtures/tls/), with the given
/// protocol versions and ALPN.
pub fn tls_client(versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let ca = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// Accepts any certificate: the test reads the one served instead.
#[derive(Debug)]
pub struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client that takes any certificate, sending SNI or not.
pub fn any_certificate(sni: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.enable_sni = sni;
    Arc::new(config)
}

/// Runs the `shoal` command, `shoal --config FILE ARGS`, with `stdin`;
/// returns (success, stdout, stderr).
pub fn shoal(config: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    run_shoal(config, args, stdin)
}

/// The fixture key. Git checks it out readable by everyone, which the
/// server refuses: it is made owner-only first (git records no such
/// mode, so the tree stays clean).
pub fn fixture_key() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let key = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

/// The fixture certificate and key, for a server that should use them.
pub fn fixture_tls(config: &mut Config) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    config.tls.cert = Some(dir.join("server.pem"));
    config.tls.key = Some(fixture_key());
}

pub struct Client {
    stream: Stream,
    codec: XmppCodec,
    buf: BytesMut,
    pub jid: String,
    pub header: Option<StreamHeader>,
    /// The domain the client's streams are to (their header's `to`), its
    /// SNI and the name its certificate is checked for.
    pub domain: String,
    next_id: u32,
    /// Stanzas read ahead (by [`Client::announce_caps`]) and not yet
    /// taken: [`Client::recv`] gives them first.
    held: VecDeque<Element>,
}

pub const OPEN: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::over(TcpStream::connect(addr).expect("connect"))
    }

    /// A client on a connected socket.
    fn over(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream: Stream::Plain(stream),
            codec: XmppCodec::new(CodecLimits::default()),
            buf: BytesMut::new(),
            jid: String::new(),
            header: None,
            domain: "localhost".to_owned(),
            next_id: 0,
            held: VecDeque::new(),
        }
    }

    /// Direct TLS (XEP-0368): TLS from the first byte.
    pub fn connect_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Client {
        Client::connect_tls_to(addr, config, "localhost")
    }

    /// Direct TLS to `domain`: its name in SNI (unless `config` turns SNI
    /// off), and the name the certificate is checked for.
    pub fn connect_tls_to(addr: SocketAddr, config: Arc<rustls::ClientConfig>, domain: &str) -> Client {
        let mut c = Client::connect(addr);
        c.domain = domain.to_owned();
        c.wrap_tls(config);
        c
    }

    fn wrap_tls(&mut self, config: Arc<rustls::ClientConfig>) {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            panic!("not plain")
        };
        let name = rustls::pki_types::ServerName::try_from(self.domain.clone()).unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
        }
        self.stream = Stream::Tls(Box::new(tls));
        // A new stream begins: forget the parser's state.
        self.codec = XmppCodec::new(CodecLimits::default());
        self.buf.clear();
    }

    /// RFC 6120 §5: `<starttls/>`, `<proceed/>`, the handshake.
    pub fn starttls(&mut self, config: Arc<rustls::ClientConfig>) {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        let proceed = self.recv();
        assert!(proceed.is("proceed", ns::TLS), "{proceed}");
        self.wrap_tls(config);
    }

    /// The TLS connection, once there is one.
    pub fn tls(&self) -> &rustls::ClientConnection {
        match &self.stream {
            Stream::Tls(s) => &s.conn,
            _ => panic!("not TLS"),
        }
    }

    /// Channel-binding data as the client sees it (RFC 9266, RFC 5929).
    pub fn channel_binding(&self, kind: &str) -> Vec<u8> {
        let conn = self.tls();
        match kind {
            "tls-exporter" => conn
                .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                .unwrap(),
            "tls-server-end-point" => {
                use sha2::Digest;
                sha2::Sha256::digest(&conn.peer_certificates().unwrap()[0]).to_vec()
            }
            other => panic!("unknown binding {other}"),
        }
    }

    /// The client's own address: the peer the server sees.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.tcp().local_addr().unwrap()
    }

    /// The connection, for tests that write in their own way.
    pub fn raw(&mut self) -> &mut Stream {
        &mut self.stream
    }

    pub fn set_write_timeout(&mut self, timeout: Duration) {
        self.stream.tcp().set_write_timeout(Some(timeout)).unwrap();
    }

    pub fn send(&mut self, xml: &str) {
        self.stream.write_all(xml.as_bytes()).expect("send");
    }

    /// Sends bytes, tolerating a server that has hung up already.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    pub fn id(&mut self) -> String {
        self.next_id += 1;
        format!("t{}", self.next_id)
    }

    /// The next frame, or `None` at end of stream. Panics after TIMEOUT.
    pub fn next_frame(&mut self) -> Option<Frame> {
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
                    panic!("timed out waiting for the server ({} bytes pending)", self.buf.len())
                }
                Err(_) => return None,
            }
        }
    }

    /// The next stanza (or stream-level element such as features).
    pub fn recv(&mut self) -> Element {
        if let Some(el) = self.held.pop_front() {
            return el;
        }
        match self.next_frame() {
            Some(Frame::Stanza(el)) => el,
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    /// The next stanza, serialised as on a client stream.
    pub fn recv_xml(&mut self) -> String {
        self.recv().to_xml_in(ns::CLIENT)
    }

    /// Opens (or restarts) the stream to [`Client::domain`]; returns the
    /// features.
    pub fn open(&mut self) -> Element {
        let header = OPEN.replacen("to='localhost'", &format!("to='{}'", self.domain), 1);
        self.send(&header);
        match self.next_frame() {
            Some(Frame::StreamOpen(h)) => self.header = Some(h),
            other => panic!("expected a stream header, got {other:?}"),
        }
        let features = self.recv();
        assert!(features.is("features", ns::STREAM), "{features}");
        features
    }

    pub fn auth_plain(&mut self, user: &str, password: &str) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{b64}</auth>"
        ));
    }

    /// Runs a SCRAM exchange; returns the final `<success/>` or `<failure/>`.
    pub fn auth_scram(&mut self, hash: ScramHash, user: &str, password: &str) -> Element {
        let mech = if hash == ScramHash::Sha1 {
            "SCRAM-SHA-1"
        } else {
            "SCRAM-SHA-256"
        };
        self.auth_scram_with(mech, ScramClient::new(hash, user, password))
    }

    /// Runs a SCRAM exchange with this client (for -PLUS and its variants).
    pub fn auth_scram_with(&mut self, mech: &str, mut scram: ScramClient) -> Element {
        let b64 = base64::engine::general_purpose::STANDARD;
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{}</auth>",
            b64.encode(scram.client_first())
        ));
        let challenge = self.recv();
        if !challenge.is("challenge", ns::SASL) {
            return challenge;
        }
        let server_first = String::from_utf8(b64.decode(challenge.text()).unwrap()).unwrap();
        let (client_final, _) = scram.client_final(&server_first).unwrap();
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            b64.encode(client_final)
        ));
        let outcome = self.recv();
        if outcome.is("success", ns::SASL) {
            let server_final = String::from_utf8(b64.decode(outcome.text()).unwrap()).unwrap();
            assert!(scram.verify_server_final(&server_final), "server signature must verify");
        }
        outcome
    }

    /// Binds a resource; returns the full JID.
    pub fn bind(&mut self, resource: Option<&str>) -> String {
        let res = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        self.send(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{res}</bind></iq>"
        ));
        let reply = self.recv();
        assert_eq!(reply.attr("type"), Some("result"), "{reply}");
        let jid = reply
            .get_child("bind", ns::BIND)
            .unwrap()
            .get_child("jid", ns::BIND)
            .unwrap()
            .text();
        self.jid = jid.clone();
        jid
    }

    /// Sends `presence` (initial, without `to`) and reads until the server
    /// reflects it (RFC 6121 §4.2.2): what came before is dropped.
    pub fn announce(&mut self, presence: &str) {
        self.send(presence);
        let me = self.jid.clone();
        let bare = &me[..me.find('/').unwrap()];
        self.recv_until(|e| {
            e.name() == "presence" && e.attr("from") == Some(me.as_str()) && e.attr("to") == Some(bare)
        });
    }

    /// A round trip to the server: everything queued for this client
    /// before it was answered has been received once this returns.
    pub fn sync(&mut self) -> Vec<Element> {
        let id = self.id();
        self.send(&format!(
            "<iq type='get' id='{id}' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
            self.domain
        ));
        let mut before = Vec::new();
        loop {
            let el = self.recv();
            if el.attr("id") == Some(id.as_str()) && el.attr("type") == Some("result") {
                return before;
            }
            before.push(el);
        }
    }

    /// Asserts nothing is pending for this client.
    pub fn expect_nothing(&mut self) {
        let pending = self.sync();
        assert!(
            pending.is_empty(),
            "unexpected: {:?}",
            pending.iter().map(|e| e.to_xml_in(ns::CLIENT)).collect::<Vec<_>>()
        );
    }

    /// The next `n` stanzas, serialised with roster push ids normalised,
    /// sorted: for deliveries whose relative order is not defined.
    pub fn recv_set(&mut self, n: usize) -> Vec<String> {
        let mut out: Vec<String> = (0..n).map(|_| normalise(self.recv_xml())).collect();
        out.sort();
        out
    }

    /// Sends a roster get and returns the result's query.
    pub fn roster(&mut self) -> String {
        let id = self.id();
        self.send(&format!(
            "<iq type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>"
        ));
        let reply = self.recv_until(|e| e.attr("id") == Some(id.as_str()));
        let query = reply.children().next().map(|q| q.to_xml_in(ns::CLIENT));
        query.unwrap_or_default()
    }

    /// Sends available presence with caps (XEP-0115) for
    /// [`caps_query`]`(features)` and reads until the server reflects it;
    /// what came meanwhile (the server's query about the caps, if it asks)
    /// is kept for the next reads. Returns the ver.
    pub fn announce_caps(&mut self, features: &[&str]) -> String {
        let ver = shoal_actors::xep::caps::ver_of(&caps_query(features));
        self.send(&format!(
            "<presence><c xmlns='{}' hash='sha-1' node='{CAPS_NODE}' ver='{ver}'/></presence>",
            ns::CAPS
        ));
        let me = self.jid.clone();
        let bare = &me[..me.find('/').unwrap()];
        let mut before = Vec::new();
        loop {
            let el = self.recv();
            let reflected = el.name() == "presence"
                && el.attr("from") == Some(me.as_str())
                && el.attr("to") == Some(bare)
                && el
                    .get_child("c", ns::CAPS)
                    .is_some_and(|c| c.attr("ver") == Some(ver.as_str()));
            if reflected {
                break;
            }
            before.push(el);
        }
        self.held.extend(before);
        ver
    }

    /// Takes the server's query about this client's caps (XEP-0115), read
    /// ahead or next (other stanzas before it are kept), checks that it
    /// comes from the server's domain about this client's node, and
    /// answers it with [`caps_query`]`(features)`: the features announced,
    /// or others to lie.
    pub fn answer_caps_query(&mut self, features: &[&str]) {
        let is_query = |e: &Element| {
            e.name() == "iq" && e.attr("type") == Some("get") && e.get_child("query", ns::DISCO_INFO).is_some()
        };
        let iq = match self.held.iter().position(is_query) {
            Some(i) => self.held.remove(i).unwrap(),
            None => loop {
                let el = match self.next_frame() {
                    Some(Frame::Stanza(el)) => el,
                    other => panic!("expected the server's caps query, got {other:?}"),
                };
                if is_query(&el) {
                    break el;
                }
                self.held.push_back(el);
            },
        };
        assert_eq!(iq.attr("from"), Some(self.domain.as_str()), "{iq}");
        assert_eq!(iq.attr("to"), Some(self.jid.as_str()), "{iq}");
        let node = iq
            .get_child("query", ns::DISCO_INFO)
            .and_then(|q| q.attr("node"))
            .unwrap_or_default();
        assert!(node.starts_with(&format!("{CAPS_NODE}#")), "{iq}");
        let mut answer = caps_query(features);
        answer.set_attr("node", node);
        let id = iq.attr("id").unwrap();
        self.send(&format!(
            "<iq type='result' to='{}' id='{id}'>{}</iq>",
            self.domain,
            answer.to_xml_in(ns::CLIENT)
        ));
    }

    /// Reads stanzas until one matches; returns it (the rest are dropped).
    pub fn recv_until(&mut self, pred: impl Fn(&Element) -> bool) -> Element {
        loop {
            let el = self.recv();
            if pred(&el) {
                return el;
            }
        }
    }

    /// Asserts no message is pending (presence may be).
    pub fn expect_no_messages(&mut self) {
        let messages: Vec<String> = self
            .sync()
            .iter()
            .filter(|e| e.name() == "message")
            .map(|e| e.to_xml_in(ns::CLIENT))
            .collect();
        assert!(messages.is_empty(), "unexpected: {messages:?}");
    }

    /// Reads a stream error, then the stream's close and the hang-up;
    /// returns the error's condition and text.
    pub fn expect_stream_error(&mut self) -> (String, Option<String>) {
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
            .unwrap();
        let text = el.get_child("text", ns::STREAMS_ERRORS).map(Element::text);
        let name = condition.name().to_owned();
        assert_eq!(
            self.next_frame(),
            Some(Frame::StreamClose),
            "the stream closes after the error"
        );
        self.expect_eof();
        (name, text)
    }

    /// Asserts the server hangs up (after any close tag).
    pub fn expect_eof(&mut self) {
        // Answer the server's close so it need not linger.
        self.send_raw(b"</stream:stream>");
        loop {
            match self.next_frame() {
                None => return,
                Some(Frame::StreamClose) => continue,
                Some(other) => panic!("expected the connection to close, got {other:?}"),
            }
        }
    }
}

/// The node of the test clients' caps (XEP-0115).
pub const CAPS_NODE: &str = "http://test";

/// A test client's disco#info `<query/>`: identity `client/pc` named
/// Test, and the features caps, disco#info and `features`.
pub fn caps_query(features: &[&str]) -> Element {
    let identity = Element::new("identity", ns::DISCO_INFO)
        .with_attr("category", "client")
        .with_attr("type", "pc")
        .with_attr("name", "Test");
    let mut query = Element::new("query", ns::DISCO_INFO).with_child(identity);
    for var in [ns::CAPS, ns::DISCO_INFO].iter().chain(features) {
        query.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *var));
    }
    query
}

/// The server's own caps among stream `features`, serialised, once
/// checked: SHA-1, Shoal's node, a ver of a SHA-1's length.
pub fn server_caps(features: &Element) -> String {
    let c = features.get_child("c", ns::CAPS).expect("the server's caps");
    assert_eq!(
        (c.attr("hash"), c.attr("node"), c.attr("ver").map(str::len)),
        (Some("sha-1"), Some("urn:xmpp:shoal"), Some(28)),
        "{c}"
    );
    c.to_xml_in(ns::CLIENT)
}

/// The `<pubsub/>` publishing `payload` as item `id` of `node` (XEP-0060
/// §7.1), with the publish-options `options` (§7.1.5) if any.
pub fn pubsub_publish(node: &str, id: &str, payload: &str, options: &[(&str, &str)]) -> String {
    let mut xml = format!(
        "<pubsub xmlns='{}'><publish node='{node}'><item id='{id}'>{payload}</item></publish>",
        ns::PUBSUB
    );
    if !options.is_empty() {
        xml.push_str(
            "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>http://jabber.org/protocol/pubsub#publish-options</value></field>",
        );
        for (var, value) in options {
            xml.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
        }
        xml.push_str("</x></publish-options>");
    }
    xml.push_str("</pubsub>");
    xml
}

/// A PEP node's configuration form as the server writes it (XEP-0060
/// §8.2): these `access_model`, `max_items` and `send_last_published_item`,
/// every boolean on, no roster groups, title or type.
pub fn node_config_form(access_model: &str, max_items: &str, send_last: &str) -> String {
    let boolean = |var: &str| format!("<field type='boolean' var='pubsub#{var}'><value>1</value></field>");
    let options = |values: &[&str]| {
        values
            .iter()
            .map(|v| format!("<option><value>{v}</value></option>"))
            .collect::<String>()
    };
    format!(
        "<x xmlns='jabber:x:data' type='form'><field type='hidden' var='FORM_TYPE'>\
         <value>http://jabber.org/protocol/pubsub#node_config</value></field>\
         <field type='list-single' var='pubsub#access_model'><value>{access_model}</value>{}</field>\
         <field type='list-multi' var='pubsub#roster_groups_allowed'/>\
         <field type='text-single' var='pubsub#max_items'><value>{max_items}</value></field>{}\
         <field type='list-single' var='pubsub#send_last_published_item'><value>{send_last}</value>{}</field>\
         {}{}{}{}<field type='text-single' var='pubsub#title'/><field type='text-single' var='pubsub#type'/></x>",
        options(&["open", "presence", "roster", "whitelist"]),
        boolean("persist_items"),
        options(&["never", "on_sub", "on_sub_and_presence"]),
        boolean("notify_retract"),
        boolean("notify_delete"),
        boolean("deliver_notifications"),
        boolean("deliver_payloads"),
    )
}

/// Replaces the server's counters in roster push ids (`push17` → `push`).
pub fn normalise(xml: String) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml.as_str();
    while let Some(i) = rest.find("id='push") {
        out.push_str(&rest[..i + 8]);
        rest = rest[i + 8..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Replaces the random id of each XEP-0359 `<stanza-id/>` the server wrote
/// (`id` first, as it writes them) with SID, checking its shape.
pub fn unsid(xml: String) -> String {
    const MARK: &str = "<stanza-id xmlns='urn:xmpp:sid:0' id='";
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml.as_str();
    while let Some(i) = rest.find(MARK) {
        let start = i + MARK.len();
        let end = start + rest[start..].find('\'').unwrap();
        let id = &rest[start..end];
        let shape = id.len() == 16 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        assert!(shape, "stanza id {id:?} in {xml}");
        out.push_str(&rest[..start]);
        out.push_str("SID");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `items` as strings, sorted: the expected side of [`Client::recv_set`].
pub fn sorted<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().map(Into::into).collect();
    v.sort();
    v
}

impl Client {
    /// Connects from `local` (127.0.0.2, say), so that the server sees
    /// another source address than 127.0.0.1.
    pub fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> Client {
        Client::connect_with(addr, |socket| socket.bind(SocketAddr::new(local, 0)))
    }

    /// Connects with a receive buffer of about `bytes` (the kernel doubles
    /// it), so that a client that stops reading soon fills its socket. Set
    /// before connecting: the window is agreed in the handshake.
    pub fn connect_with_recv_buffer(addr: SocketAddr, bytes: u32) -> Client {
        Client::connect_with(addr, |socket| socket.set_recv_buffer_size(bytes))
    }

    /// Connects a socket set up by `configure` first: std cannot set a
    /// socket up before connecting it; tokio's `TcpSocket` can.
    fn connect_with(addr: SocketAddr, configure: impl FnOnce(&tokio::net::TcpSocket) -> std::io::Result<()>) -> Client {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let stream = runtime
            .block_on(async {
                let socket = match addr {
                    SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                configure(&socket)?;
                socket.connect(addr).await?.into_std()
            })
            .expect("connect");
        // tokio hands it over non-blocking; the client reads with timeouts.
        stream.set_nonblocking(false).unwrap();
        Client::over(stream)
    }
}

/// An HTTP response, as [`http`] read it: header names in lower case.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`, so the
/// response ends where the connection does): `method target`, these
/// headers, this body (its Content-Length is the test's to give).
pub fn http(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    // A server refusing the request may answer without reading the body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("timed out waiting for the HTTP response ({} bytes read)", raw.len())
            }
            // A reset after the response: keep what came.
            Err(_) => break,
        }
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..end].to_vec()).expect("response head is not UTF-8");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let reply = HttpReply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    assert_ne!(reply.header("transfer-encoding"), Some("chunked"), "not decoded here");
    reply
}
