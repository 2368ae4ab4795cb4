"""Interop: slixmpp's Multi-User Chat (XEP-0045) through Shoal's MUC service.

Alice creates room@conference.DOMAIN with join_muc_wait (a new room is
locked, status 201) and makes it an instant room with an empty submitted
form; Bob and Carol join, and each sees all three in the room. Each says
something: everyone gets all three messages (their own echoed), each with
one stanza id by the room, the same for every recipient. Alice kicks Carol
(set_role 'none'): Carol gets her own unavailable presence with 110 and
307, Alice and Bob see her leave with 307.

Usage: slixmpp_muc.py HOST PORT DOMAIN, with the accounts
alice (al1ce-pass), bob (b0b-pass) and carol (car0l-pass).
"""

import asyncio

from slixmpp.exceptions import IqError, IqTimeout, PresenceError
from slixmpp.plugins.xep_0004 import Form

from common import DOMAIN, TIMEOUT, Client, fail

ROOM = f"room@conference.{DOMAIN}"
PASSWORDS = {"alice": "al1ce-pass", "bob": "b0b-pass", "carol": "car0l-pass"}


class Occupant(Client):
    def __init__(self, user):
        super().__init__(user, PASSWORDS[user], "SCRAM-SHA-256", register=False)
        self.nick = user
        for plugin in ("xep_0030", "xep_0004", "xep_0045", "xep_0199", "xep_0359"):
            self.register_plugin(plugin)
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        # Both fire after xep_0045 has updated its view of the room.
        self.add_event_handler(f"muc::{ROOM}::message", self.messages.put_nowait)
        self.add_event_handler(f"muc::{ROOM}::presence", self.presences.put_nowait)

    async def on_start(self, _):
        await self.announce()

    @property
    def muc(self):
        return self.plugin["xep_0045"]

    async def join(self):
        """join_muc_wait: our presence, then the subject (which ends a join)."""
        try:
            pres, _subject, _occupants, _history = await self.muc.join_muc_wait(ROOM, self.nick, timeout=TIMEOUT)
        except PresenceError as e:
            fail(f"{self.nick} could not join: {e.condition}")
        except asyncio.TimeoutError:
            fail(f"{self.nick}: the join was not answered")
        return pres

    async def next_presence(self, what):
        try:
            return await asyncio.wait_for(self.presences.get(), TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"{self.nick}: no presence for {what}")

    async def until_roster(self, nicks):
        """Waits, presence by presence, until the room holds exactly `nicks`."""
        while sorted(self.muc.get_roster(ROOM)) != nicks:
            await self.next_presence(f"the room to hold {nicks}, not {sorted(self.muc.get_roster(ROOM))}")

    async def until_gone(self, nick):
        """The unavailable presence of `nick`, skipping any other."""
        while True:
            p = await self.next_presence(f"{nick} leaving")
            if p["type"] == "unavailable" and p["from"].resource == nick:
                return p

    async def next_message(self):
        try:
            return await asyncio.wait_for(self.messages.get(), TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"{self.nick}: a groupchat message did not come")


async def main():
    alice, bob, carol = Occupant("alice"), Occupant("bob"), Occupant("carol")
    everyone = (alice, bob, carol)
    for c in everyone:
        await c.start()

    pres = await alice.join()
    codes = pres["muc"]["status_codes"]
    if not {110, 201} <= codes or (pres["muc"]["affiliation"], pres["muc"]["role"]) != ("owner", "moderator"):
        fail(f"alice did not create the room: {pres}")
    # The instant room (XEP-0045 §10.1.2): an empty submitted form unlocks it.
    form = Form()
    form["type"] = "submit"
    try:
        await alice.muc.set_room_config(ROOM, form, timeout=TIMEOUT)
    except (IqError, IqTimeout) as e:
        fail(f"the instant room was refused: {e}")
    await bob.join()
    await carol.join()
    for c in everyone:
        await c.until_roster(["alice", "bob", "carol"])
    print(f"JOINED {len(alice.muc.get_roster(ROOM))}", flush=True)

    # Sent after every join: a message during a join would count as history.
    for c in everyone:
        c.send_message(mto=ROOM, mbody=f"hello from {c.nick}", mtype="groupchat")
    expected = sorted((n, f"hello from {n}") for n in ("alice", "bob", "carol"))
    ids = {}
    for c in everyone:
        got = []
        for _ in expected:
            msg = await c.next_message()
            got.append((msg["from"].resource, msg["body"]))
            if msg["stanza_id"]["by"] != ROOM or not msg["stanza_id"]["id"]:
                fail(f"{c.nick}: no stanza id by the room: {msg}")
            if ids.setdefault(msg["body"], msg["stanza_id"]["id"]) != msg["stanza_id"]["id"]:
                fail(f"{c.nick}: {msg['body']!r} has another stanza id than the others got")
        if sorted(got) != expected:
            fail(f"{c.nick} got {sorted(got)}")
    if len(set(ids.values())) != len(expected):
        fail(f"stanza ids not unique: {ids}")
    print(f"MESSAGES {len(expected)}", flush=True)

    try:
        await alice.muc.set_role(ROOM, "carol", "none", reason="bye", timeout=TIMEOUT)
    except (IqError, IqTimeout) as e:
        fail(f"the kick was refused: {e}")
    p = await carol.until_gone("carol")
    if not {110, 307} <= p["muc"]["status_codes"]:
        fail(f"carol's own unavailable lacks 110 and 307: {p}")
    for c in (alice, bob):
        p = await c.until_gone("carol")
        codes = p["muc"]["status_codes"]
        if 307 not in codes or 110 in codes:
            fail(f"{c.nick} saw carol go with {sorted(codes)}")
        if "carol" in c.muc.get_roster(ROOM):
            fail(f"{c.nick} still lists carol")
    print("KICKED carol", flush=True)

    # Nothing else came: no message twice, nothing after the kick.
    for c in everyone:
        await c.plugin["xep_0199"].ping(jid=DOMAIN, timeout=TIMEOUT)
        if not c.messages.empty():
            fail(f"{c.nick} got more: {c.messages.get_nowait()}")
    for c in everyone:
        c.disconnect()
    print("OK", flush=True)


asyncio.run(asyncio.wait_for(main(), 90))
