"""Interop: two slixmpp clients add each other (slixmpp approves and
subscribes back by itself), see each other come online, change status,
and see each other go offline when a connection is killed.

Usage: slixmpp_presence.py HOST PORT DOMAIN
"""

import asyncio

from common import DOMAIN, Client, fail


class Watcher(Client):
    def __init__(self, user):
        super().__init__(user, f"{user}-pass", "SCRAM-SHA-256")
        self.events = asyncio.Queue()
        self.roster_changed = asyncio.Event()
        self.add_event_handler("roster_update", lambda _: self.roster_changed.set())
        self.add_event_handler("session_start", self.on_start)
        # slixmpp names available presence by its show: presence_dnd, ...
        for event in ("available", "dnd", "away", "xa", "chat", "unavailable"):
            kind = "presence_unavailable" if event == "unavailable" else "presence_available"
            self.add_event_handler(f"presence_{event}", lambda p, k=kind: self.events.put_nowait((k, p)))

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        self.ready.set()

    async def wait_for(self, event, sender, check=lambda p: True):
        while True:
            name, p = await asyncio.wait_for(self.events.get(), 20)
            if name == event and str(p["from"]) == sender and check(p):
                return p


async def subscription(client, contact):
    """Waits, on roster pushes, until the subscription is mutual."""
    while True:
        client.roster_changed.clear()
        sub = client.client_roster[contact]["subscription"]
        if sub == "both":
            return sub
        try:
            await asyncio.wait_for(client.roster_changed.wait(), 20)
        except asyncio.TimeoutError:
            fail(f"{client.boundjid.bare} never got 'both' with {contact}: {sub}")


async def main():
    bob = Watcher("bob")
    alice = Watcher("alice")
    await bob.start()
    await alice.start()

    alice.send_presence_subscription(pto=f"bob@{DOMAIN}")
    # Each sees the other come online once the subscriptions are approved.
    await alice.wait_for("presence_available", f"bob@{DOMAIN}/interop")
    print("alice sees bob online", flush=True)
    await bob.wait_for("presence_available", f"alice@{DOMAIN}/interop")
    print("bob sees alice online", flush=True)
    print(f"alice: {await subscription(alice, f'bob@{DOMAIN}')}", flush=True)
    print(f"bob: {await subscription(bob, f'alice@{DOMAIN}')}", flush=True)

    bob.send_presence(pshow="dnd", pstatus="compiling")
    p = await alice.wait_for("presence_available", f"bob@{DOMAIN}/interop", lambda p: p["show"] == "dnd")
    print(f"alice sees bob: {p['show']} {p['status']!r}", flush=True)

    # Kill Bob's connection without a goodbye.
    bob.transport.abort()
    await alice.wait_for("presence_unavailable", f"bob@{DOMAIN}/interop")
    print("alice sees bob offline", flush=True)
    alice.disconnect()
    print("OK", flush=True)


asyncio.run(asyncio.wait_for(main(), 60))
