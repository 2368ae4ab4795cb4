"""Interop, federation: two slixmpp users on two servers become contacts
across the server-to-server link, see each other come online, chat both
ways, and B sees A go offline.

Usage: slixmpp_federation.py JID_A PASSWORD_A HOST_A:PORT_A JID_B PASSWORD_B HOST_B:PORT_B CA_FILE

Each logs in to its own server over STARTTLS (required), verifying its
certificate against CA_FILE (federation.sh's DIR/trust.pem holds the test
CA and every self-signed certificate it made), with slixmpp's default
mechanism selection (Debian's 1.8.3 tries SCRAM-*-PLUS with tls-unique
first, which TLS 1.3 has not, then falls back: such refusals are not
failures). Then, waiting on events with timeouts, never sleeping:
  1. A asks B, B approves (automatic approval off) and A's roster says
     'to'; then B asks A the same way; until both rosters say 'both'.
     One after the other: ejabberd 23.01 updates a roster item from the
     user's session and from the server link at once when the two
     approvals cross, and may keep 'from' where 'both' is due;
  2. each sees the other's available presence;
  3. A sends B a chat message to the bare JID, then B sends A one, each
     with a unique body, checked with its sender's full JID on arrival;
  4. A goes offline (a clean close): B sees A's unavailable presence.
Prints one line per checked event ('a' is JID_A, 'b' JID_B), then OK;
exits 1 with 'FAIL: ...' on the first timeout or mismatch. The accounts
must not have each other in their rosters beforehand.

Not built on common.py: that one is for plaintext logins on one server,
and reads HOST PORT DOMAIN from the command line.
"""

import asyncio
import inspect
import sys
import uuid

import slixmpp

TIMEOUT = 30


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def address(arg):
    host, _, port = arg.rpartition(":")
    if not host or not port.isdigit():
        fail(f"{arg!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class Account(slixmpp.ClientXMPP):
    def __init__(self, label, jid, password, addr, ca):
        super().__init__(f"{jid}/federation", password)
        self.label = label
        self.addr = addr
        self.ca_certs = ca
        self.other = None  # the other Account
        self.refused = []
        # Every presence and message received, in order, and a flag raised
        # at each arrival and each roster push: waits scan the log, so that
        # nothing that came early is missed.
        self.log = []
        self.changed = asyncio.Event()
        self.ready = asyncio.Event()
        self.approved = asyncio.Event()
        # Subscription requests are approved by hand (below), and not
        # answered with a request back.
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler(
            "failed_auth", lambda _: self.refused.append(self.plugin["feature_mechanisms"].mech.name)
        )
        self.add_event_handler("presence_subscribe", self.on_subscribe)
        self.add_event_handler("roster_update", lambda _: self.changed.set())
        for kind in ("presence_available", "presence_unavailable", "message"):
            self.add_event_handler(kind, lambda s, k=kind: self.record(k, s))

    def record(self, kind, stanza):
        self.log.append((kind, stanza))
        self.changed.set()

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        self.ready.set()

    def on_subscribe(self, p):
        if p["from"].bare == self.other.boundjid.bare:
            self.send_presence(pto=p["from"].bare, ptype="subscribed")
            self.approved.set()

    def start(self):
        host, port = self.addr
        if "use_ssl" in inspect.signature(slixmpp.ClientXMPP.connect).parameters:
            # slixmpp 1.8
            self.connect((host, port), use_ssl=False, force_starttls=True, disable_starttls=False)
        else:
            self.enable_direct_tls = False
            self.enable_starttls = True
            self.enable_plaintext = False
            self.connect(host, port)

    async def until(self, what, check):
        """Waits until check() is true, re-checking after every arrival."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            self.changed.clear()
            if check():
                return
            left = deadline - loop.time()
            try:
                await asyncio.wait_for(self.changed.wait(), max(left, 0))
            except asyncio.TimeoutError:
                fail(f"{self.label} ({self.boundjid.bare}): no {what} within {TIMEOUT} s")

    async def until_received(self, what, kind, match):
        def seen():
            return any(k == kind and match(s) for k, s in self.log)

        await self.until(what, seen)
        return next(s for k, s in self.log if k == kind and match(s))


async def login(c):
    c.start()
    try:
        await asyncio.wait_for(c.ready.wait(), TIMEOUT)
    except asyncio.TimeoutError:
        fail(f"{c.label} ({c.boundjid.bare}) could not log in at {c.addr[0]}:{c.addr[1]}; refused: {c.refused}")
    print(f"login {c.label} ok", flush=True)


async def main():
    if len(sys.argv) != 8:
        fail(__doc__.split("\n\n")[1])
    a = Account("a", sys.argv[1], sys.argv[2], address(sys.argv[3]), sys.argv[7])
    b = Account("b", sys.argv[4], sys.argv[5], address(sys.argv[6]), sys.argv[7])
    a.other, b.other = b, a
    await login(a)
    await login(b)
    abare, bbare = a.boundjid.bare, b.boundjid.bare

    # 1. Each asks, each approves, one after the other.
    for asker, approver in ((a, b), (b, a)):
        contact = approver.boundjid.bare
        asker.send_presence_subscription(pto=contact)
        try:
            await asyncio.wait_for(approver.approved.wait(), TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"{approver.label} ({approver.boundjid.bare}) never got {asker.label}'s subscription request")
        print(f"subscribe {asker.label}->{approver.label} approved", flush=True)
        await asker.until(
            f"roster 'to' with {contact}",
            lambda: asker.client_roster[contact]["subscription"] in ("to", "both"),
        )
    for c, contact in ((a, bbare), (b, abare)):
        await c.until(f"roster 'both' with {contact}", lambda: c.client_roster[contact]["subscription"] == "both")
        print(f"roster {c.label}: {c.other.label} both", flush=True)

    # 2. Each sees the other online.
    for sender, watcher in ((a, b), (b, a)):
        await watcher.until_received(
            f"available presence from {sender.boundjid.full}",
            "presence_available",
            lambda p, s=sender: p["from"] == s.boundjid,
        )
        print(f"presence {sender.label}->{watcher.label} available", flush=True)

    # 3. A message each way, to the bare JID, with a body of its own.
    for sender, recipient in ((a, b), (b, a)):
        body = f"{sender.label} to {recipient.label} {uuid.uuid4()}"
        sender.send_message(mto=recipient.boundjid.bare, mbody=body, mtype="chat")
        m = await recipient.until_received(
            f"message from {sender.boundjid.bare}",
            "message",
            lambda m, s=sender: m["from"].bare == s.boundjid.bare and m["body"],
        )
        if m["from"] != sender.boundjid or m["body"] != body or m["type"] != "chat":
            fail(
                f"{recipient.label} got type={m['type']!r} from={m['from']} body={m['body']!r};"
                f" expected chat from {sender.boundjid.full} body={body!r}"
            )
        print(f"message {sender.label}->{recipient.label} ok", flush=True)

    # 4. A goes offline; B is told.
    full = a.boundjid.full
    a.disconnect()
    await b.until_received(
        f"unavailable presence from {full}", "presence_unavailable", lambda p: str(p["from"]) == full
    )
    print("presence a->b unavailable", flush=True)
    b.disconnect()
    print("OK", flush=True)


asyncio.run(main())
