"""Interop: slixmpp's stream management (XEP-0198) resumes a session
whose socket was cut, and gets what it missed exactly once.

Alice (with xep_0198, resumption allowed) enables stream management and
stops acknowledging. Bob sends her one message that she reads, then one
that reaches her socket but that she never reads (she stopped reading),
then her connection is cut without a word. While she is away, Bob sends
five messages to her full JID and five to her bare JID. She reconnects and
resumes (`session_resumed`, no second `session_start`): the message she
had read is not sent again (her `h` counts it), the one she never read is,
and the ten come after it, each once and in order. Then both directions
still work, and the server's count of her stanzas matches hers.

Usage: slixmpp_resume.py HOST PORT DOMAIN, with the accounts
alice (al1ce-pass) and bob (b0b-pass).
"""

import array
import asyncio
import fcntl
import termios

from common import DOMAIN, TIMEOUT, Client, connect, fail




class Bob(Client):
    def __init__(self):
        super().__init__("bob", "b0b-pass", "SCRAM-SHA-1", register=False)
        self.register_plugin("xep_0199")
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda msg: self.inbox.put_nowait(msg))

    async def on_start(self, _):
        await self.announce()

    def say(self, to, ident, body):
        msg = self.make_message(mto=to, mbody=body, mtype="chat")
        msg["id"] = ident
        msg.send()

    async def sync(self):
        """A round trip: what Bob sent before has been handled."""
        await self.plugin["xep_0199"].ping(jid=DOMAIN)


class Alice(Client):
    def __init__(self):
        super().__init__("alice", "al1ce-pass", "SCRAM-SHA-256", register=False)
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0198")
        self.sm = self.plugin["xep_0198"]
        self.sm.allow_resume = True
        self.counts = {"session_start": 0, "session_resumed": 0, "session_end": 0}
        self.events = {name: asyncio.Event() for name in ("sm_enabled", "session_resumed", "disconnected")}
        self.enabled = None
        self.received = []
        self.arrived = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("session_resumed", lambda _: self.count("session_resumed"))
        self.add_event_handler("session_end", lambda _: self.count("session_end"))
        self.add_event_handler("sm_enabled", self.on_enabled)
        self.add_event_handler("sm_failed", lambda failed: fail(f"alice: stream management failed: {failed}"))
        self.add_event_handler("disconnected", lambda _: self.events["disconnected"].set())
        self.add_event_handler("message", self.on_message)

    def count(self, event):
        self.counts[event] += 1
        if event in self.events:
            self.events[event].set()

    async def on_start(self, _):
        self.count("session_start")
        await self.announce()

    def on_enabled(self, enabled):
        self.enabled = enabled
        self.events["sm_enabled"].set()

    def on_message(self, msg):
        if msg["body"]:
            self.received.append((msg["id"], msg["body"], str(msg["to"]), str(msg["from"])))
            self.arrived.set()

    async def wait(self, event):
        try:
            await asyncio.wait_for(self.events[event].wait(), TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"alice: no {event} ({self.counts})")

    async def until(self, ident):
        """Waits until she has received the message `ident`."""
        while ident not in [i for i, *_ in self.received]:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), TIMEOUT)
            except asyncio.TimeoutError:
                fail(f"alice never got {ident}: {self.received}")

    def unread_bytes(self):
        sock = self.transport.get_extra_info("socket")
        buf = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
        return buf[0]


async def main():
    bob = Bob()
    alice = Alice()
    await bob.start()
    await alice.start()
    await alice.wait("sm_enabled")
    if alice.enabled["resume"] not in (True, "true", "1") or not alice.sm.sm_id:
        fail(f"alice: SM enabled without resumption: {alice.enabled}")
    if alice.end_session_on_disconnect:
        fail("alice: slixmpp would end the session on disconnect")
    print("alice: stream management enabled, resumable", flush=True)

    alice_full = str(alice.boundjid)
    alice_bare = alice.boundjid.bare

    # From now on Alice acknowledges nothing (she ignores <r/>), so the
    # server keeps everything it sends her unacknowledged.
    alice.sm.send_ack = lambda: None

    # One she reads before the cut.
    bob.say(alice_full, "read-1", "read before the cut")
    await alice.until("read-1")

    # One that reaches her socket but that she never reads.
    alice.transport.pause_reading()
    bob.say(alice_full, "unread-1", "in flight at the cut")
    for _ in range(TIMEOUT * 50):
        if alice.unread_bytes() > 0:
            break
        await asyncio.sleep(0.02)
    else:
        fail("the in-flight message never reached alice's socket")
    handled = alice.sm.handled

    # The network goes away: no </stream:stream>, no goodbye.
    alice.transport.abort()
    await alice.wait("disconnected")
    if alice.counts["session_end"] or not alice.sm.sm_id or alice.sm.handled != handled:
        fail(f"alice: slixmpp dropped its SM state: {alice.counts}, id {alice.sm.sm_id}")
    print("alice: connection cut", flush=True)
    # Let the server notice that the connection is gone.
    await asyncio.sleep(0.5)

    for i in range(1, 6):
        bob.say(alice_full, f"full-{i}", f"to full JID {i}")
        bob.say(alice_bare, f"bare-{i}", f"to bare JID {i}")
    await bob.sync()
    print("bob: sent 10 while alice was away", flush=True)

    # Back: log in again and resume.
    del alice.sm.send_ack
    connect(alice)
    await alice.wait("session_resumed")
    if alice.counts != {"session_start": 1, "session_resumed": 1, "session_end": 0}:
        fail(f"alice: not a resumption: {alice.counts}")
    if str(alice.boundjid) != alice_full:
        fail(f"alice: resumed as {alice.boundjid}, was {alice_full}")
    print("alice: resumed, no new session", flush=True)

    # A marker after everything: whatever is resent comes before it.
    bob.say(alice_full, "after-1", "after the resumption")
    await alice.until("after-1")
    for ident, body, to, sender in alice.received:
        print(f"alice got: {ident} {body!r} to {'full' if to == alice_full else to}", flush=True)
        if sender != str(bob.boundjid):
            fail(f"from {sender}")
    ids = [ident for ident, *_ in alice.received]
    if len(set(ids)) != len(ids):
        fail(f"duplicates: {ids}")
    expected = ["read-1", "unread-1"] + [f"{kind}-{i}" for i in range(1, 6) for kind in ("full", "bare")] + ["after-1"]
    if sorted(ids) != sorted(expected):
        fail(f"missing or unexpected: {ids}")
    for kind in ("full", "bare"):
        mine = [i for i in ids if i.startswith(kind)]
        if mine != [f"{kind}-{i}" for i in range(1, 6)]:
            fail(f"{kind} JID messages out of order: {mine}")
    if ids[:2] != ["read-1", "unread-1"] or ids[-1] != "after-1":
        fail(f"out of order: {ids}")

    # The resumed stream works both ways...
    alice.send_message(mto=bob.boundjid, mbody="I'm back", mtype="chat")
    msg = await asyncio.wait_for(bob.inbox.get(), TIMEOUT)
    print(f"bob got: {msg['body']!r} from {msg['from']}", flush=True)
    if str(msg["from"]) != alice_full:
        fail("bob got it from the wrong JID")
    # ...and the server counted every stanza Alice sent, before and after.
    alice.sm.request_ack()
    for _ in range(TIMEOUT * 50):
        if alice.sm.last_ack == alice.sm.seq:
            break
        await asyncio.sleep(0.02)
    else:
        fail(f"server acked {alice.sm.last_ack} of alice's {alice.sm.seq} stanzas")
    print("alice: all her stanzas acknowledged", flush=True)
    await asyncio.sleep(0.3)
    if not bob.inbox.empty():
        fail(f"bob got more: {bob.inbox.get_nowait()}")

    # Acknowledge everything before closing: a session closed with
    # unacknowledged messages has them sent again elsewhere (offline).
    alice.sm.send_ack()
    for c in (alice, bob):
        c.disconnect()
    print("OK", flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
