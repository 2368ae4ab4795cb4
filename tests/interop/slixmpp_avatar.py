"""Interop: slixmpp's User Avatar (XEP-0084) over Shoal's PEP (XEP-0163).

Alice and Bob become mutual contacts (slixmpp approves and subscribes back
by itself). Bob's client has xep_0084, which puts
urn:xmpp:avatar:metadata+notify among its disco features, so in the caps
(XEP-0115) of its presence; Shoal asks for those and learns them. Alice
publishes a PNG to urn:xmpp:avatar:data, then its metadata: Bob gets the
metadata (live, or as the last item once his caps are learned), and the
item it names gives back the same bytes.

Usage: slixmpp_avatar.py HOST PORT DOMAIN, with the accounts
alice (al1ce-pass) and bob (b0b-pass).
"""

import asyncio
import base64
import hashlib

from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout

from common import DOMAIN, TIMEOUT, Client, fail

# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


class User(Client):
    def __init__(self, user, password):
        super().__init__(user, password, "SCRAM-SHA-256", register=False)
        # xep_0163 loads xep_0115 anyway; named, as its caps are the point.
        for plugin in ("xep_0030", "xep_0060", "xep_0115", "xep_0163", "xep_0084", "xep_0199"):
            self.register_plugin(plugin)
        self.metadata = asyncio.Queue()
        self.roster_changed = asyncio.Event()
        self.add_event_handler("roster_update", lambda _: self.roster_changed.set())
        self.add_event_handler("avatar_metadata_publish", self.metadata.put_nowait)
        self.add_event_handler("session_start", self.on_start)

    async def on_start(self, _):
        await self.get_roster()
        # xep_0084 added its +notify feature at session_bind and only
        # scheduled the caps update: have it done before the initial
        # presence, which then carries the ver that includes it.
        await self.plugin["xep_0115"].update_caps(broadcast=False)
        await self.announce()


async def subscription(client, contact):
    """Waits, on roster pushes, until the subscription is mutual."""
    while True:
        client.roster_changed.clear()
        sub = client.client_roster[contact]["subscription"]
        if sub == "both":
            return sub
        try:
            await asyncio.wait_for(client.roster_changed.wait(), TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"{client.boundjid.bare} never got 'both' with {contact}: {sub}")


async def metadata_from(client, owner):
    """The <info/>s of the next metadata notification from `owner`."""
    while True:
        try:
            msg = await asyncio.wait_for(client.metadata.get(), TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"{client.boundjid.bare}: no avatar metadata from {owner}")
        if msg["from"].bare == owner:
            return [info for item in msg["pubsub_event"]["items"] for info in item["avatar_metadata"]["items"]]


async def main():
    alice = User("alice", "al1ce-pass")
    bob = User("bob", "b0b-pass")
    await alice.start()
    await bob.start()
    alice_jid, bob_jid = f"alice@{DOMAIN}", f"bob@{DOMAIN}"

    alice.send_presence_subscription(pto=bob_jid)
    print(f"alice: {await subscription(alice, bob_jid)}", flush=True)
    print(f"bob: {await subscription(bob, alice_jid)}", flush=True)

    ident = hashlib.sha1(PNG).hexdigest()
    avatar = alice.plugin["xep_0084"]
    try:
        await avatar.publish_avatar(PNG, timeout=TIMEOUT)
        await avatar.publish_avatar_metadata({"id": ident, "type": "image/png", "bytes": len(PNG)}, timeout=TIMEOUT)
    except (IqError, IqTimeout) as e:
        fail(f"alice could not publish: {e}")
    print("alice published avatar data and metadata", flush=True)

    infos = await metadata_from(bob, alice_jid)
    if len(infos) != 1:
        fail(f"bob got {len(infos)} <info/>s")
    info = infos[0]
    print(f"bob got metadata from {alice_jid}: {info['type']}, {info['bytes']} bytes", flush=True)
    if info["id"] != ident:
        fail(f"the metadata names {info['id']}, not {ident}")
    try:
        result = await bob.plugin["xep_0084"].retrieve_avatar(JID(alice_jid), info["id"], timeout=TIMEOUT)
    except (IqError, IqTimeout) as e:
        fail(f"bob could not retrieve the avatar: {e}")
    data = [item["avatar_data"]["value"] for item in result["pubsub"]["items"]]
    if data != [PNG]:
        fail(f"bob retrieved {data!r}")
    print("AVATAR SEEN", flush=True)

    alice.disconnect()
    bob.disconnect()
    print("OK", flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
