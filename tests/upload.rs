//! XEP-0363 HTTP File Upload: a user asks `upload.localhost` for a slot
//! over XMPP, PUTs the file to the slot's URL on the HTTP listener and GETs
//! it back byte for byte; the declared size and type are enforced, each
//! slot is filled once, too large and over-quota requests get the XEP's
//! errors, files survive a restart and are deleted when they expire.

mod common;

use std::time::{Duration, Instant};

use common::{http, Client, TestServer};
use shoal::upload::NS;
use shoal::Config;
use shoal_actors::ns;

/// Uploads of at most 1000 bytes, 2000 per user.
fn server(edit: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::with_config(|c| {
        c.http.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.upload.enabled = true;
        c.upload.max_file_bytes = 1000;
        c.upload.quota_bytes = 2000;
        edit(c);
    })
}

fn login(server: &TestServer, user: &str) -> Client {
    server.add_user(user, "pw");
    server.login(user, "pw", "r")
}

/// Asks for a slot for the file `attrs` describe and checks the answer:
/// one URL for PUT and GET, on the HTTP listener, 32 hex digits and then
/// the file name as `encoded`. Returns the URL's path.
fn slot(server: &TestServer, c: &mut Client, attrs: &str, encoded: &str) -> String {
    let id = c.id();
    c.send(&format!(
        "<iq type='get' id='{id}' to='upload.localhost'><request xmlns='{NS}' {attrs}/></iq>"
    ));
    let reply = c.recv();
    let url = reply
        .get_child("slot", NS)
        .and_then(|s| s.get_child("put", NS))
        .and_then(|p| p.attr("url"))
        .unwrap_or_else(|| panic!("no slot: {reply}"))
        .to_owned();
    assert_eq!(
        reply.to_xml_in(ns::CLIENT),
        format!(
            "<iq id='{id}' type='result' from='upload.localhost' to='{}'>\
             <slot xmlns='{NS}'><put url='{url}'/><get url='{url}'/></slot></iq>",
            c.jid
        )
    );
    let base = format!("http://{}/upload/", server.http_addr());
    let rest = url
        .strip_prefix(&base)
        .unwrap_or_else(|| panic!("{url} is not under {base}"));
    let (slot, name) = rest.split_once('/').unwrap();
    let hex = slot.len() == 32 && slot.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    assert!(hex, "{url}");
    assert_eq!(name, encoded);
    format!("/upload/{rest}")
}

/// Replaces the `<retry/>` stamp with STAMP, checking it is a UTC time as
/// XEP-0082 writes it.
fn unstamp(xml: String) -> String {
    const MARK: &str = "stamp='";
    let Some(start) = xml.find(MARK).map(|i| i + MARK.len()) else {
        return xml;
    };
    let end = start + xml[start..].find('\'').unwrap();
    let stamp = &xml[start..end];
    assert!(
        stamp.len() == 24 && stamp.as_bytes()[10] == b'T' && stamp.ends_with('Z'),
        "{stamp}"
    );
    format!("{}STAMP{}", &xml[..start], &xml[end..])
}

#[test]
fn a_file_put_in_a_slot_comes_back_byte_identical() {
    let server = server(|_| {});
    let mut c = login(&server, "alice");
    c.send("<iq type='get' id='items' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='items' type='result' from='localhost' to='alice@localhost/r'>\
         <query xmlns='http://jabber.org/protocol/disco#items'>\
         <item jid='conference.localhost' name='Chatrooms'/>\
         <item jid='upload.localhost' name='HTTP File Upload'/></query></iq>"
    );
    c.send(
        "<iq type='get' id='info' to='upload.localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert_eq!(
        c.recv_xml(),
        format!(
            "<iq id='info' type='result' from='upload.localhost' to='alice@localhost/r'>\
             <query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='store' type='file' name='HTTP File Upload'/>\
             <feature var='http://jabber.org/protocol/disco#info'/><feature var='{NS}'/>\
             <x xmlns='jabber:x:data' type='result'>\
             <field type='hidden' var='FORM_TYPE'><value>{NS}</value></field>\
             <field var='max-file-size'><value>1000</value></field></x></query></iq>"
        )
    );

    // Every byte value, line ends and NULs included.
    let data: Vec<u8> = (0..600u32).map(|i| (i * 7 % 256) as u8).collect();
    let path = slot(
        &server,
        &mut c,
        "filename='très cool.bin' size='600' content-type='application/x-test'",
        "tr%C3%A8s%20cool.bin",
    );
    let addr = server.http_addr();
    let put = |length: &str, content_type: &str, body: &[u8]| {
        let headers = [("Content-Length", length), ("Content-Type", content_type)];
        http(addr, "PUT", &path, &headers, body).status
    };
    // The declared size and type, exactly; a refused PUT leaves the slot
    // for another try.
    assert_eq!(put("599", "application/x-test", &data[..599]), 400);
    assert_eq!(put("601", "application/x-test", &[&data[..], &b"x"[..]].concat()), 413);
    assert_eq!(put("600", "text/html", &data), 400);
    assert_eq!(put("600", "application/x-test", &data), 201);
    // Once.
    assert_eq!(put("600", "application/x-test", &data), 409);

    let got = http(addr, "GET", &path, &[], b"");
    assert_eq!(got.status, 200);
    assert!(
        got.body == data,
        "the file came back changed ({} bytes)",
        got.body.len()
    );
    for (name, value) in [
        ("content-type", "application/x-test"),
        ("content-length", "600"),
        (
            "content-disposition",
            "attachment; filename*=UTF-8''tr%C3%A8s%20cool.bin",
        ),
        ("x-content-type-options", "nosniff"),
        ("access-control-allow-origin", "*"),
    ] {
        assert_eq!(got.header(name), Some(value), "{name}");
    }
    let head = http(addr, "HEAD", &path, &[], b"");
    assert_eq!(
        (head.status, head.header("content-length"), head.body.len()),
        (200, Some("600"), 0)
    );

    // Nothing is found under another slot or another name.
    let unknown = format!("/upload/{}/tr%C3%A8s%20cool.bin", "0".repeat(32));
    assert_eq!(http(addr, "GET", &unknown, &[], b"").status, 404);
    assert_eq!(http(addr, "GET", &path.replace(".bin", ".exe"), &[], b"").status, 404);
    let headers = [("Content-Length", "600"), ("Content-Type", "application/x-test")];
    assert_eq!(http(addr, "PUT", &unknown, &headers, &data).status, 404);

    // A web client's page may PUT: the browser's preflight is answered.
    let preflight = http(
        addr,
        "OPTIONS",
        &path,
        &[
            ("Origin", "https://chat.example"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    );
    assert_eq!(
        (
            preflight.status,
            preflight.header("access-control-allow-origin"),
            preflight.header("access-control-allow-methods"),
            preflight.header("access-control-allow-headers"),
        ),
        (204, Some("*"), Some("GET, HEAD, PUT, OPTIONS"), Some("Content-Type"))
    );
}

#[test]
fn too_large_and_over_quota_requests_get_the_xeps_errors() {
    let server = server(|_| {});
    let mut c = login(&server, "alice");
    c.send(&format!(
        "<iq type='get' id='big' to='upload.localhost'><request xmlns='{NS}' filename='big.bin' size='1001'/></iq>"
    ));
    assert_eq!(
        c.recv_xml(),
        format!(
            "<iq id='big' type='error' from='upload.localhost' to='alice@localhost/r'>\
             <request xmlns='{NS}' filename='big.bin' size='1001'/><error type='modify'>\
             <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>\
             File too large: the maximum is 1000 bytes</text>\
             <file-too-large xmlns='{NS}'><max-file-size>1000</max-file-size></file-too-large></error></iq>"
        )
    );
    c.send(&format!(
        "<iq type='get' id='bad' to='upload.localhost'><request xmlns='{NS}' filename='a.bin' size='lots'/></iq>"
    ));
    assert_eq!(
        c.recv_xml(),
        format!(
            "<iq id='bad' type='error' from='upload.localhost' to='alice@localhost/r'>\
             <request xmlns='{NS}' filename='a.bin' size='lots'/><error type='modify'>\
             <bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>the request needs a size in bytes</text>\
             </error></iq>"
        )
    );

    // A slot counts against the quota from the moment it is given: two of
    // 1000 bytes take all 2000.
    slot(&server, &mut c, "filename='a.bin' size='1000'", "a.bin");
    slot(&server, &mut c, "filename='b.bin' size='1000'", "b.bin");
    c.send(&format!(
        "<iq type='get' id='more' to='upload.localhost'><request xmlns='{NS}' filename='c.bin' size='1'/></iq>"
    ));
    assert_eq!(
        unstamp(c.recv_xml()),
        format!(
            "<iq id='more' type='error' from='upload.localhost' to='alice@localhost/r'>\
             <request xmlns='{NS}' filename='c.bin' size='1'/><error type='wait'>\
             <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>\
             Quota reached: 2000 of 2000 bytes in use</text>\
             <retry xmlns='{NS}' stamp='STAMP'/></error></iq>"
        )
    );
    // Each user has a quota of their own.
    let mut bob = login(&server, "bob");
    slot(&server, &mut bob, "filename='c.bin' size='1000'", "c.bin");
}

#[test]
fn stored_files_survive_a_restart() {
    let mut server = server(|_| {});
    let mut c = login(&server, "alice");
    let path = slot(
        &server,
        &mut c,
        "filename='kept.txt' size='5' content-type='text/plain'",
        "kept.txt",
    );
    let headers = [("Content-Length", "5"), ("Content-Type", "text/plain")];
    assert_eq!(http(server.http_addr(), "PUT", &path, &headers, b"hello").status, 201);
    drop(c);
    server.restart();
    let got = http(server.http_addr(), "GET", &path, &[], b"");
    assert_eq!(
        (got.status, got.body.as_slice(), got.header("content-disposition")),
        (200, &b"hello"[..], Some("inline; filename*=UTF-8''kept.txt"))
    );
}

#[test]
fn expired_files_are_deleted() {
    let server = server(|c| c.upload.expire_after_secs = 3);
    let mut c = login(&server, "alice");
    let path = slot(&server, &mut c, "filename='brief.bin' size='3'", "brief.bin");
    let put = http(server.http_addr(), "PUT", &path, &[("Content-Length", "3")], b"abc");
    assert_eq!(put.status, 201);
    let id = path.split('/').nth(2).unwrap();
    let dir = server.db.with_extension("uploads");
    let (meta, file) = (dir.join(format!("{id}.meta")), dir.join(id).join("brief.bin"));
    assert!(meta.is_file() && file.is_file(), "stored in {}", dir.display());
    // Expired after 3 s, and swept every 3 s: gone well within 20.
    let deadline = Instant::now() + Duration::from_secs(20);
    while meta.exists() || file.exists() {
        assert!(Instant::now() < deadline, "the expired file is still there");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http(server.http_addr(), "GET", &path, &[], b"").status, 404);
}
