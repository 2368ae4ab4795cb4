"""Interop: slixmpp's Message Carbons (XEP-0280) through Shoal.

Alice is online twice, as alice/phone and alice/desk, both enabling
carbons with xep_0280. Bob writes to alice/phone: desk gets a
`carbon_received` copy. alice/phone writes to Bob: desk gets a
`carbon_sent` copy. Messages marked `<private/>` (either way) are not
copied, and arrive without the marker. The phone never gets a copy of
what it sent or received itself.

Usage: slixmpp_carbons.py HOST PORT DOMAIN, with the accounts
alice (al1ce-pass) and bob (b0b-pass).
"""

import asyncio


from common import DOMAIN, TIMEOUT, Client, fail

CARBONS = "urn:xmpp:carbons:2"



class User(Client):
    def __init__(self, user, password, resource, carbons):
        super().__init__(user, password, "SCRAM-SHA-256", register=False)
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0280")
        self.carbons = carbons
        self.boundjid.resource = resource
        self.requested_jid.resource = resource
        self.inbox = asyncio.Queue()
        self.copies = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("carbon_received", lambda m: self.copies.put_nowait(("received", m)))
        self.add_event_handler("carbon_sent", lambda m: self.copies.put_nowait(("sent", m)))

    async def on_start(self, _):
        if self.carbons:
            await self.plugin["xep_0280"].enable()
        await self.announce()

    def on_message(self, msg):
        # Carbons also arrive as (bodiless) messages; they are counted
        # through their own events.
        if msg.xml.find(f"{{{CARBONS}}}received") is None and msg.xml.find(f"{{{CARBONS}}}sent") is None:
            self.inbox.put_nowait(msg)

    def say(self, to, ident, body, private=False):
        msg = self.make_message(mto=to, mbody=body, mtype="chat")
        msg["id"] = ident
        if private:
            msg.enable("carbon_private")
        msg.send()


async def next_of(queue, who):
    try:
        return await asyncio.wait_for(queue.get(), TIMEOUT)
    except asyncio.TimeoutError:
        fail(f"{who}: nothing came")


def describe(kind, carbon):
    inner = carbon[f"carbon_{kind}"]
    return f"desk got carbon_{kind}: {inner['id']} {inner['body']!r} from {inner['from']} to {inner['to']} (wrapper from {carbon['from']})"


async def main():
    bob = User("bob", "b0b-pass", "interop", carbons=False)
    phone = User("alice", "al1ce-pass", "phone", carbons=True)
    desk = User("alice", "al1ce-pass", "desk", carbons=True)
    for c in (bob, phone, desk):
        await c.start()
    phone_jid, bob_jid = str(phone.boundjid), str(bob.boundjid)
    if phone_jid != f"alice@{DOMAIN}/phone" or str(desk.boundjid) != f"alice@{DOMAIN}/desk":
        fail(f"bound {phone_jid} and {desk.boundjid}")

    # Bob writes to the phone: the desk gets a received copy.
    bob.say(phone_jid, "in-1", "hello phone")
    msg = await next_of(phone.inbox, "phone")
    print(f"phone got: {msg['id']} {msg['body']!r} from {msg['from']}", flush=True)
    kind, carbon = await next_of(desk.copies, "desk")
    print(describe(kind, carbon), flush=True)
    inner = carbon["carbon_received"]
    if (kind, inner["id"], inner["body"], str(inner["from"]), str(inner["to"])) != (
        "received", "in-1", "hello phone", bob_jid, phone_jid
    ):
        fail("wrong received carbon")
    if str(carbon["from"]) != f"alice@{DOMAIN}":
        fail(f"the carbon comes from {carbon['from']}, not alice's bare JID")

    # The phone writes to Bob: the desk gets a sent copy.
    phone.say(bob_jid, "out-1", "hello bob")
    msg = await next_of(bob.inbox, "bob")
    print(f"bob got: {msg['id']} {msg['body']!r} from {msg['from']}", flush=True)
    kind, carbon = await next_of(desk.copies, "desk")
    print(describe(kind, carbon), flush=True)
    inner = carbon["carbon_sent"]
    if (kind, inner["id"], inner["body"], str(inner["from"]), str(inner["to"])) != (
        "sent", "out-1", "hello bob", phone_jid, bob_jid
    ):
        fail("wrong sent carbon")

    # Private messages, both ways: delivered, not copied.
    for sender, receiver, name, ident, body in (
        (bob, phone, "phone", "in-private", "just for the phone"),
        (phone, bob, "bob", "out-private", "off the record"),
    ):
        sender.say(receiver.boundjid, ident, body, private=True)
        msg = await next_of(receiver.inbox, name)
        print(f"{name} got: {msg['id']} {msg['body']!r} from {msg['from']}", flush=True)
        if msg["id"] != ident:
            fail("the wrong message")
        if msg.xml.find(f"{{{CARBONS}}}private") is not None:
            fail("the <private/> marker was delivered")

    # A last ordinary message: its copy is the next thing the desk gets,
    # so the private ones were not copied before it.
    bob.say(phone_jid, "in-2", "copied again")
    msg = await next_of(phone.inbox, "phone")
    kind, carbon = await next_of(desk.copies, "desk")
    print(describe(kind, carbon), flush=True)
    if (kind, carbon["carbon_received"]["id"]) != ("received", "in-2"):
        fail("a private message was copied")
    await phone.plugin["xep_0199"].ping(jid=DOMAIN)
    await desk.plugin["xep_0199"].ping(jid=DOMAIN)
    for who, queue in (("desk", desk.copies), ("desk", desk.inbox), ("phone", phone.copies), ("bob", bob.inbox)):
        if not queue.empty():
            fail(f"{who} got more: {queue.get_nowait()}")

    for c in (bob, phone, desk):
        c.disconnect()
    print("OK", flush=True)


asyncio.run(asyncio.wait_for(main(), 60))
