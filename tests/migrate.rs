//! Migration from ejabberd and Prosody: their real XEP-0227 exports
//! (fixtures/migrate/, made by make-exports.sh from accounts made through
//! each server's own paths) imported with `shoal import`; then the users
//! log in with their old passwords and find their rosters, vCards, waiting
//! subscription requests, offline messages, private XML and PEP nodes.
//! `shoal export` gives back what it took; bad files are refused saying
//! where and why, with nothing imported.

mod common;

use std::ffi::OsString;
use std::path::PathBuf;

use common::{ejabberd_export, migration_fixtures, run_shoal, Client, TestServer};
use shoal::store::{AccountData, SqliteStore};
use shoal_actors::jid::BareJid;
use shoal_actors::ns;
use shoal_actors::sasl::ScramHash;
use shoal_actors::xml::Element;

/// Command-line arguments of mixed kinds: words and paths (borrowed).
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        vec![$(OsString::from(std::ffi::OsStr::new(&$arg))),*]
    };
}

const DOMAINS: [&str; 3] = ["ejabberd.test", "plain.ejabberd.test", "prosody.test"];
const NOT_AUTHORIZED: &str = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>";
const NO_SHA256: &str = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/>\
    <text xml:lang='en'>this account has no SCRAM-SHA-256 keys yet: use SCRAM-SHA-1, or PLAIN once to add them</text>\
    </failure>";
const ONE_HASH: &str = "with keys for one SCRAM hash only (SCRAM-SHA-1 from ejabberd and Prosody): they log in with \
    that mechanism or PLAIN until their first PLAIN login or password change adds the other";

/// Prosody's export: a file per account.
fn prosody_export() -> Vec<PathBuf> {
    migration_fixtures("prosody")
}

/// A server hosting the exports' domains, and the `shoal` command for it.
struct Setup {
    server: TestServer,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let server = TestServer::with_config(|c| {
            c.domain = None;
            c.domains = DOMAINS.iter().map(|d| d.to_string()).collect();
        });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("shoal.toml");
        let toml = format!("domains = {DOMAINS:?}\n[storage]\nsqlite = {:?}\n", server.db);
        std::fs::write(&config, toml).unwrap();
        Setup { server, config, dir }
    }

    fn shoal(&self, args: Vec<OsString>) -> (bool, String, String) {
        run_shoal(&self.config, args, None)
    }

    /// A file in this setup's directory.
    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A SCRAM exchange at `domain`; the `<success/>` or `<failure/>`.
    fn scram(&self, domain: &str, hash: ScramHash, user: &str, password: &str) -> Element {
        let mut c = self.server.connect();
        c.domain = domain.to_owned();
        c.open();
        c.auth_scram(hash, user, password)
    }

    /// Logged in with SCRAM-SHA-1 (the keys ejabberd and Prosody kept), bound.
    fn login(&self, account: &str, password: &str, resource: &str) -> Client {
        let (user, domain) = account.split_once('@').unwrap();
        let mut c = self.server.connect();
        c.domain = domain.to_owned();
        c.open();
        let outcome = c.auth_scram(ScramHash::Sha1, user, password);
        assert!(outcome.is("success", ns::SASL), "{account}: {outcome}");
        c.open();
        c.bind(Some(resource));
        c
    }
}

/// The account's vCard, as its owner fetches it.
fn vcard(c: &mut Client) -> String {
    c.send("<iq type='get' id='vc'><vCard xmlns='vcard-temp'/></iq>");
    let reply = c.recv_until(|e| e.attr("id") == Some("vc"));
    assert_eq!(reply.attr("type"), Some("result"), "{reply}");
    reply.get_child("vCard", "vcard-temp").unwrap().to_string()
}

/// An account as stored, but for its PEP items' publication times: an
/// import stamps them (XEP-0227 carries none).
fn timeless(mut data: AccountData) -> AccountData {
    for (_, items) in &mut data.pep {
        for item in items {
            item.published_ms = 0;
        }
    }
    data
}

/// Initial presence; the waiting subscription request that comes then.
fn waiting_request(c: &mut Client) -> String {
    c.send("<presence/>");
    c.recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .to_xml_in(ns::CLIENT)
}

#[test]
fn ejabberd_users_log_in_with_their_old_passwords_and_find_their_rosters() {
    let s = Setup::new();
    assert_eq!(
        s.shoal(args!["import", ejabberd_export()]),
        (
            true,
            format!(
                "imported 4 account(s)\n1 from passwords in the clear (Shoal keeps SCRAM keys derived from them)\n\
                 3 {ONE_HASH}\n"
            ),
            String::new()
        )
    );
    assert_eq!(
        s.shoal(args!["user", "list"]).1,
        "juliet@ejabberd.test\nmercutio@plain.ejabberd.test\nnurse@ejabberd.test\nromeo@ejabberd.test\n"
    );

    // ejabberd kept SCRAM-SHA-1 keys: they check the old password, and
    // only it; SCRAM-SHA-256 is refused, saying what to use instead.
    let success = s.scram("ejabberd.test", ScramHash::Sha1, "romeo", "romeo-pw");
    assert!(success.is("success", ns::SASL), "{success}");
    let wrong = s.scram("ejabberd.test", ScramHash::Sha1, "romeo", "nurse-pw");
    assert_eq!(wrong.to_xml_in(ns::CLIENT), NOT_AUTHORIZED);
    let sha256 = s.scram("ejabberd.test", ScramHash::Sha256, "romeo", "romeo-pw");
    assert_eq!(sha256.to_xml_in(ns::CLIENT), NO_SHA256);
    // A password in the clear (ejabberd's plain host) gave both hashes.
    let mercutio = s.scram("plain.ejabberd.test", ScramHash::Sha256, "mercutio", "mercutio-pw");
    assert!(mercutio.is("success", ns::SASL), "{mercutio}");

    let mut romeo = s.login("romeo@ejabberd.test", "romeo-pw", "orchard");
    assert_eq!(
        romeo.roster(),
        "<query xmlns='jabber:iq:roster' ver='1'>\
         <item jid='benvolio@montague.example' subscription='none' name='Benvolio'><group>Friends</group><group>Montagues</group></item>\
         <item jid='juliet@ejabberd.test' subscription='both' name='Juliet'><group>Capulets</group></item>\
         <item jid='nurse@ejabberd.test' subscription='to'/></query>"
    );
    assert_eq!(
        vcard(&mut romeo),
        "<vCard xmlns='vcard-temp'><FN>Romeo Montague</FN><URL>https://montague.example/romeo</URL>\
         <NICKNAME>Romeo</NICKNAME></vCard>"
    );
    romeo.announce("<presence/>");

    // The subscriptions are live: juliet and romeo see each other.
    let mut juliet = s.login("juliet@ejabberd.test", "bälcony-pw", "balcony");
    assert_eq!(
        juliet.roster(),
        "<query xmlns='jabber:iq:roster' ver='1'>\
         <item jid='nurse@ejabberd.test' subscription='none' name='Nurse' ask='subscribe'/>\
         <item jid='romeo@ejabberd.test' subscription='both' name='Romeo'><group>Montagues</group></item></query>"
    );
    juliet.send("<presence/>");
    let seen = romeo.recv_until(|e| e.name() == "presence" && e.attr("from") == Some("juliet@ejabberd.test/balcony"));
    assert_eq!(seen.attr("type"), None, "{seen}");
    let seen = juliet.recv_until(|e| e.name() == "presence" && e.attr("from") == Some("romeo@ejabberd.test/orchard"));
    assert_eq!(seen.attr("type"), None, "{seen}");

    // The nurse finds juliet's request waiting, then romeo's message.
    let mut nurse = s.login("nurse@ejabberd.test", "nurse-pw", "kitchen");
    assert_eq!(
        nurse.roster(),
        "<query xmlns='jabber:iq:roster' ver='1'><item jid='romeo@ejabberd.test' subscription='from'/></query>"
    );
    assert_eq!(
        waiting_request(&mut nurse),
        "<presence to='nurse@ejabberd.test' type='subscribe' from='juliet@ejabberd.test'/>"
    );
    let message = nurse.recv_until(|e| e.name() == "message");
    assert_eq!(
        [message.attr("from"), message.attr("to"), message.attr("type")],
        [
            Some("romeo@ejabberd.test/migrate"),
            Some("nurse@ejabberd.test"),
            Some("chat")
        ]
    );
    assert_eq!(
        message.get_child("body", ns::CLIENT).map(Element::text).as_deref(),
        Some("Commend me to thy lady.")
    );
    let delay = message.get_child("delay", "urn:xmpp:delay").unwrap();
    assert_eq!(
        delay.attr("from"),
        Some("ejabberd.test"),
        "ejabberd's own stamp: {message}"
    );
    nurse.expect_no_messages();

    // A PLAIN login proves the password: the account gets SHA-256 keys.
    drop(s.server.authenticated_at("ejabberd.test", "juliet", "bälcony-pw"));
    let sha256 = s.scram("ejabberd.test", ScramHash::Sha256, "juliet", "bälcony-pw");
    assert!(sha256.is("success", ns::SASL), "{sha256}");
    let sha1 = s.scram("ejabberd.test", ScramHash::Sha1, "juliet", "bälcony-pw");
    assert!(sha1.is("success", ns::SASL), "{sha1}");
}

#[test]
fn prosody_users_log_in_with_their_old_passwords_and_find_their_rosters() {
    let s = Setup::new();
    let mut args = args!["import"];
    args.extend(prosody_export().iter().map(OsString::from));
    assert_eq!(
        s.shoal(args),
        (true, format!("imported 3 account(s)\n3 {ONE_HASH}\n"), String::new())
    );

    let success = s.scram("prosody.test", ScramHash::Sha1, "juliet", "bälcony-pw");
    assert!(success.is("success", ns::SASL), "{success}");
    let wrong = s.scram("prosody.test", ScramHash::Sha1, "juliet", "romeo-pw");
    assert_eq!(wrong.to_xml_in(ns::CLIENT), NOT_AUTHORIZED);
    let sha256 = s.scram("prosody.test", ScramHash::Sha256, "juliet", "bälcony-pw");
    assert_eq!(sha256.to_xml_in(ns::CLIENT), NO_SHA256);

    let mut romeo = s.login("romeo@prosody.test", "romeo-pw", "orchard");
    assert_eq!(
        romeo.roster(),
        "<query xmlns='jabber:iq:roster' ver='1'>\
         <item jid='benvolio@montague.example' subscription='none' name='Benvolio'><group>Friends</group><group>Montagues</group></item>\
         <item jid='juliet@prosody.test' subscription='both' name='Juliet'><group>Capulets</group></item>\
         <item jid='nurse@prosody.test' subscription='to'/></query>"
    );
    // Prosody kept it in PEP, as vCard4: it reads as Prosody answered
    // vcard-temp queries for it.
    assert_eq!(
        vcard(&mut romeo),
        "<vCard xmlns='vcard-temp'><FN>Romeo Montague</FN><NICKNAME>Romeo</NICKNAME>\
         <URL>https://montague.example/romeo</URL></vCard>"
    );
    let mut juliet = s.login("juliet@prosody.test", "bälcony-pw", "balcony");
    assert_eq!(
        juliet.roster(),
        "<query xmlns='jabber:iq:roster' ver='1'>\
         <item jid='nurse@prosody.test' subscription='none' name='Nurse' ask='subscribe'/>\
         <item jid='romeo@prosody.test' subscription='both' name='Romeo'><group>Montagues</group></item></query>"
    );
    let mut nurse = s.login("nurse@prosody.test", "nurse-pw", "kitchen");
    assert_eq!(
        nurse.roster(),
        "<query xmlns='jabber:iq:roster' ver='1'><item jid='romeo@prosody.test' subscription='from'/></query>"
    );
    assert_eq!(
        waiting_request(&mut nurse),
        "<presence to='nurse@prosody.test' type='subscribe' from='juliet@prosody.test'/>"
    );
    // Prosody 0.12 exports no offline messages.
    nurse.expect_no_messages();

    // Its PEP nodes came too (mod_storage_xep0227's "pep" and "pep_*"
    // stores): romeo's vCard4, open, with its item, and the legacy
    // bookmarks node Prosody made, a whitelist that keeps no items.
    let store = SqliteStore::open(&s.server.db).unwrap();
    let romeo = BareJid::parse("romeo@prosody.test").unwrap();
    let nodes: Vec<(String, &str, bool)> = store
        .pep_nodes(&romeo)
        .unwrap()
        .into_iter()
        .map(|n| (n.node, n.config.access_model.as_str(), n.config.persist_items))
        .collect();
    assert_eq!(
        nodes,
        [
            ("storage:bookmarks".to_owned(), "whitelist", false),
            ("urn:xmpp:vcard4".to_owned(), "open", true)
        ]
    );
    let items = store.pep_items(&romeo, "urn:xmpp:vcard4", None, None).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].id, "current");
    assert!(
        items[0]
            .xml
            .starts_with("<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><fn><text>Romeo Montague</text></fn>"),
        "{}",
        items[0].xml
    );
}

/// Both exports at once (ejabberd's files all given, as `*.xml` would:
/// the included ones are read once), exported, and imported into another
/// server: every account comes back the same, keys included.
#[test]
fn an_export_imports_into_another_server_unchanged() {
    let a = Setup::new();
    let mut files = migration_fixtures("ejabberd");
    files.extend(prosody_export());
    let mut args = args!["import"];
    args.extend(files.iter().map(OsString::from));
    let (ok, out, err) = a.shoal(args);
    assert!(ok && out.starts_with("imported 7 account(s)\n"), "{out}{err}");

    let export = a.dir.path().join("export.xml");
    assert_eq!(
        a.shoal(args!["export", export]),
        (
            true,
            format!("exported 7 account(s) to {}\n", export.display()),
            String::new()
        )
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&export).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the keys to every account: the owner's only");
    let written = std::fs::read_to_string(&export).unwrap();
    assert!(written.starts_with("<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='urn:xmpp:pie:0'>\n"));
    // To standard output, the same; never over a file.
    assert_eq!(
        a.shoal(args!["export", "-"]),
        (true, written.clone(), "exported 7 account(s)\n".into())
    );
    let (ok, _, err) = a.shoal(args!["export", export]);
    assert!(
        !ok && err.starts_with(&format!("shoal: {}: ", export.display())),
        "{err}"
    );

    let b = Setup::new();
    assert_eq!(
        b.shoal(args!["import", export]),
        (true, format!("imported 7 account(s)\n6 {ONE_HASH}\n"), String::new())
    );
    let (from, to) = (
        SqliteStore::open(&a.server.db).unwrap(),
        SqliteStore::open(&b.server.db).unwrap(),
    );
    let users = from.list_users().unwrap();
    assert_eq!(users.len(), 7);
    assert_eq!(to.list_users().unwrap(), users);
    for user in &users {
        let before = from.account_data(user).unwrap().map(timeless);
        let after = to.account_data(user).unwrap().map(timeless);
        assert!(before.is_some());
        assert_eq!(after, before, "{user}");
    }
    let nurse = BareJid::parse("nurse@ejabberd.test").unwrap();
    assert_eq!(to.offline_messages(&nurse).unwrap().len(), 1);
    drop((from, to));
    let mut romeo = b.login("romeo@ejabberd.test", "romeo-pw", "orchard");
    assert!(romeo
        .roster()
        .contains("<item jid='juliet@ejabberd.test' subscription='both' name='Juliet'>"));
}

/// Private XML (XEP-0049) in a `<user/>`, as Prosody and ejabberd write
/// it: its owner reads it back after the import, and an export writes it
/// again (by key). An empty element stands for nothing stored.
#[test]
fn private_xml_moves_with_its_account() {
    let s = Setup::new();
    let file = s.file(
        "juliet.xml",
        "<server-data xmlns='urn:xmpp:pie:0'><host jid='prosody.test'><user name='juliet' password='pw'>\n\
         <query xmlns='jabber:iq:private'>\n\
         <storage xmlns='storage:bookmarks'><conference jid='council@conference.prosody.test' autojoin='true'>\
         <nick>Jules</nick></conference></storage>\n\
         <roster xmlns='roster:delimiter'>::</roster>\n\
         <exodus xmlns='exodus:prefs'/>\n\
         </query></user></host></server-data>\n",
    );
    let (ok, out, err) = s.shoal(args!["import", file]);
    assert!(ok, "{out}{err}");
    let bookmarks = "<storage xmlns='storage:bookmarks'>\
                     <conference jid='council@conference.prosody.test' autojoin='true'><nick>Jules</nick></conference>\
                     </storage>";
    let mut juliet = s.login("juliet@prosody.test", "pw", "balcony");
    juliet.send(
        "<iq type='get' id='p1'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>",
    );
    assert_eq!(
        juliet.recv_xml(),
        format!(
            "<iq id='p1' type='result' to='juliet@prosody.test/balcony'>\
             <query xmlns='jabber:iq:private'>{bookmarks}</query></iq>"
        )
    );
    let export = s.dir.path().join("export.xml");
    assert!(s.shoal(args!["export", export]).0);
    let written = std::fs::read_to_string(&export).unwrap();
    let expected = format!(
        "<query xmlns='jabber:iq:private'><roster xmlns='roster:delimiter'>::</roster>{bookmarks}</query></user>"
    );
    assert!(written.contains(&expected), "{written}");
}

/// PEP nodes (XEP-0163) in a `<user/>`, as Prosody's mod_storage_xep0227
/// writes them: a node with its configuration, whitelist and two items is
/// imported (items oldest first), read by a member, exported the same way,
/// and imported again unchanged into another server. A node past `[pep]`
/// limits is refused, with nothing imported.
#[test]
fn pep_nodes_move_with_their_account() {
    const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
    let a = Setup::new();
    let file = a.file(
        "verona.xml",
        &format!(
            "<server-data xmlns='urn:xmpp:pie:0'><host jid='prosody.test'><user name='juliet' password='pw'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='{BOOKMARKS}'>\
             <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>http://jabber.org/protocol/pubsub#node_config</value></field>\
             <field var='pubsub#title' type='text-single'/>\
             <field var='pubsub#max_items' type='text-single'><value>max</value></field>\
             <field var='pubsub#access_model' type='list-single'><value>whitelist</value></field>\
             <field var='pubsub#send_last_published_item' type='list-single'><value>never</value></field>\
             <field var='pubsub#notification_type' type='list-single'><value>headline</value></field>\
             </x></configure><affiliations node='{BOOKMARKS}'>\
             <affiliation jid='juliet@prosody.test' affiliation='owner'/>\
             <affiliation jid='romeo@prosody.test' affiliation='member'/></affiliations></pubsub>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{BOOKMARKS}'>\
             <item id='a@conference.prosody.test'><conference xmlns='{BOOKMARKS}' name='A'/></item>\
             <item id='b@conference.prosody.test'><conference xmlns='{BOOKMARKS}' name='B' autojoin='true'/></item>\
             </items></pubsub></user><user name='romeo' password='pw'/></host></server-data>"
        ),
    );
    let (ok, out, err) = a.shoal(args!["import", file]);
    assert!(ok, "{out}{err}");
    let items = format!(
        "<items node='{BOOKMARKS}'>\
         <item id='a@conference.prosody.test'><conference xmlns='{BOOKMARKS}' name='A'/></item>\
         <item id='b@conference.prosody.test'><conference xmlns='{BOOKMARKS}' name='B' autojoin='true'/></item></items>"
    );
    let mut romeo = a.login("romeo@prosody.test", "pw", "orchard");
    romeo.send(&format!(
        "<iq type='get' id='i' to='juliet@prosody.test'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <items node='{BOOKMARKS}'/></pubsub></iq>"
    ));
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<iq id='i' type='result' from='juliet@prosody.test' to='romeo@prosody.test/orchard'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'>{items}</pubsub></iq>"
        )
    );

    let export = a.dir.path().join("export.xml");
    assert!(a.shoal(args!["export", export]).0);
    let written = std::fs::read_to_string(&export).unwrap();
    let boolean = |var: &str| format!("<field type='boolean' var='pubsub#{var}'><value>1</value></field>");
    let expected = format!(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='{BOOKMARKS}'>\
         <x xmlns='jabber:x:data' type='submit'><field type='hidden' var='FORM_TYPE'>\
         <value>http://jabber.org/protocol/pubsub#node_config</value></field>\
         <field type='list-single' var='pubsub#access_model'><value>whitelist</value></field>\
         <field type='list-multi' var='pubsub#roster_groups_allowed'/>\
         <field type='text-single' var='pubsub#max_items'><value>max</value></field>{}\
         <field type='list-single' var='pubsub#send_last_published_item'><value>never</value></field>{}{}{}{}\
         <field type='text-single' var='pubsub#title'/><field type='text-single' var='pubsub#type'/></x></configure>\
         <affiliations node='{BOOKMARKS}'><affiliation jid='juliet@prosody.test' affiliation='owner'/>\
         <affiliation jid='romeo@prosody.test' affiliation='member'/></affiliations></pubsub>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'>{items}</pubsub></user>",
        boolean("persist_items"),
        boolean("notify_retract"),
        boolean("notify_delete"),
        boolean("deliver_notifications"),
        boolean("deliver_payloads"),
    );
    assert!(written.contains(&expected), "{written}");

    let b = Setup::new();
    assert!(b.shoal(args!["import", export]).0);
    let (from, to) = (
        SqliteStore::open(&a.server.db).unwrap(),
        SqliteStore::open(&b.server.db).unwrap(),
    );
    for user in ["juliet@prosody.test", "romeo@prosody.test"] {
        let user = BareJid::parse(user).unwrap();
        let before = from.account_data(&user).unwrap().map(timeless);
        assert_eq!(to.account_data(&user).unwrap().map(timeless), before, "{user}");
    }
    let juliet = BareJid::parse("juliet@prosody.test").unwrap();
    let stored = to.pep_items(&juliet, BOOKMARKS, None, None).unwrap();
    assert_eq!(
        stored.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["b@conference.prosody.test", "a@conference.prosody.test"],
        "newest first"
    );

    // Past [pep] max_items: refused, naming the node and the setting.
    let c = Setup::new();
    let big = c.file(
        "big.xml",
        "<server-data xmlns='urn:xmpp:pie:0'><host jid='prosody.test'><user name='nurse' password='pw'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='n'>\
         <x xmlns='jabber:x:data' type='submit'><field var='pubsub#max_items'><value>1000</value></field></x>\
         </configure></pubsub></user></host></server-data>",
    );
    assert_eq!(
        c.shoal(args!["import", big]),
        (
            false,
            String::new(),
            "shoal: account nurse@prosody.test: PEP node n: pubsub#max_items 1000, more than [pep] max_items (256); \
             nothing was imported\n"
                .into()
        )
    );
    assert_eq!(c.shoal(args!["user", "list"]).1, "");
}

#[test]
fn bad_files_are_refused_saying_where_and_why_and_nothing_is_imported() {
    let s = Setup::new();
    let refused = |args: Vec<OsString>| {
        let (ok, out, err) = s.shoal(args);
        assert!(!ok && out.is_empty(), "{out}");
        assert_eq!(s.shoal(args!["user", "list"]).1, "", "nothing imported");
        err
    };
    let missing = s.dir.path().join("missing.xml");
    assert_eq!(
        refused(args!["import", missing]),
        format!("shoal: {}: No such file or directory (os error 2)\n", missing.display())
    );
    let html = s.file("page.xml", "<html><body/></html>");
    let err = refused(args!["import", html]);
    assert!(
        err.starts_with(&format!("shoal: {}:1:", html.display()))
            && err.ends_with(
                ": not a XEP-0227 file: its root is <html/> in \"\", not <server-data xmlns='urn:xmpp:pie:0'/>\n"
            ),
        "{err}"
    );
    // A sound account, then a broken one: neither is imported.
    let broken = s.file(
        "broken.xml",
        "<server-data xmlns='urn:xmpp:pie:0'>\n<host jid='ejabberd.test'>\n\
         <user name='good' password='p'/>\n\
         <user name='bad' password='p'>\n\
         <query xmlns='jabber:iq:roster'><item jid='good@ejabberd.test' subscription='maybe'/></query>\n\
         </user>\n</host>\n</server-data>\n",
    );
    let err = refused(args!["import", broken]);
    assert!(
        err.starts_with(&format!("shoal: {}:4:", broken.display()))
            && err.ends_with(": account bad@ejabberd.test: roster item good@ejabberd.test: subscription \"maybe\"\n"),
        "{err}"
    );
    let truncated = s.file(
        "truncated.xml",
        "<server-data xmlns='urn:xmpp:pie:0'><host jid='ejabberd.test'><user name='u' password='p'>",
    );
    let err = refused(args!["import", truncated]);
    assert!(
        err.contains("the file ends inside the account u@ejabberd.test"),
        "{err}"
    );
    let empty = s.file("empty.xml", "<server-data xmlns='urn:xmpp:pie:0'/>");
    assert_eq!(
        refused(args!["import", empty]),
        "shoal: there are no accounts in the files; nothing was imported\n"
    );

    // Accounts of a domain not hosted here: refused, or left out.
    let two = s.file(
        "two.xml",
        "<server-data xmlns='urn:xmpp:pie:0'><host jid='other.example'><user name='x' password='p'/></host>\
         <host jid='ejabberd.test'><user name='tybalt' password='t1'/></host></server-data>",
    );
    assert_eq!(
        refused(args!["import", two]),
        "shoal: accounts of domains this server does not host: other.example (x@other.example); add the domains \
         to the configuration (`domains`), or leave their accounts out with --skip-unhosted; nothing was imported\n"
    );
    assert_eq!(
        s.shoal(args!["import", "--skip-unhosted", two]),
        (
            true,
            "imported 1 account(s)\n1 from passwords in the clear (Shoal keeps SCRAM keys derived from them)\n\
             1 of domains not hosted here left out\n"
                .into(),
            String::new()
        )
    );

    // An account that exists: refused, or replaced with all it had.
    let again = s.file(
        "again.xml",
        "<server-data xmlns='urn:xmpp:pie:0'><host jid='ejabberd.test'><user name='tybalt' password='t2'>\
         <query xmlns='jabber:iq:roster'><item jid='mercutio@ejabberd.test' name='Mercutio'/></query>\
         </user></host></server-data>",
    );
    let (ok, _, err) = s.shoal(args!["import", again]);
    assert!(!ok);
    assert_eq!(
        err,
        "shoal: 1 account(s) exist already: tybalt@ejabberd.test; --replace replaces them, deleting all they had; \
         nothing was imported\n"
    );
    assert!(s.shoal(args!["import", "--replace", again]).0);
    assert_eq!(
        s.scram("ejabberd.test", ScramHash::Sha256, "tybalt", "t1")
            .to_xml_in(ns::CLIENT),
        NOT_AUTHORIZED
    );
    let mut tybalt = s.login("tybalt@ejabberd.test", "t2", "street");
    assert_eq!(
        tybalt.roster(),
        "<query xmlns='jabber:iq:roster' ver='1'><item jid='mercutio@ejabberd.test' subscription='none' name='Mercutio'/></query>"
    );
}

/// Files are looked for where the including file is, and nowhere else.
#[test]
fn includes_stay_beside_the_file() {
    let s = Setup::new();
    let outside = s.file(
        "outside.xml",
        "<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>\
         <xi:include href='/etc/passwd'/></server-data>",
    );
    let (ok, _, err) = s.shoal(args!["import", outside]);
    assert!(
        !ok && err.ends_with("<xi:include href=\"/etc/passwd\"/>: only files beside this one are read\n"),
        "{err}"
    );
    let host = s.file(
        "host.xml",
        "<host xmlns='urn:xmpp:pie:0' jid='prosody.test'><user name='benvolio' password='b'/></host>",
    );
    let main = s.file(
        "main.xml",
        "<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>\
         <xi:include href='host.xml'/></server-data>",
    );
    assert!(s.shoal(args!["import", main, host]).0, "host.xml is read once");
    assert_eq!(s.shoal(args!["user", "list"]).1, "benvolio@prosody.test\n");
}
