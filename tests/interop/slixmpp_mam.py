"""Interop: slixmpp's Message Archive Management (XEP-0313) through Shoal.

Bob and Alice exchange 12 chat messages (taking turns), with two to and
from Carol in the middle. Alice then reads her archive with xep_0313 in
RSM pages of 5: all 14 messages, in order, each with its direction and a
`<delay/>` stamp, the last page marked complete; each message she got
live carried a `<stanza-id by='alice@...'/>` equal to its archive id.
Then only her conversation with Bob (`with`): the 12.

Usage: slixmpp_mam.py HOST PORT DOMAIN, with the accounts
alice (al1ce-pass), bob (b0b-pass) and carol (car0l-pass).
"""

import asyncio

import slixmpp
from slixmpp.exceptions import IqError

from common import TIMEOUT, Client, fail

MAM = "urn:xmpp:mam:2"



class User(Client):
    def __init__(self, user, password):
        super().__init__(user, password, "SCRAM-SHA-256", register=False)
        for plugin in ("xep_0030", "xep_0199", "xep_0313", "xep_0359"):
            self.register_plugin(plugin)
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda msg: self.inbox.put_nowait(msg))

    async def on_start(self, _):
        await self.announce()


async def read_pages(alice, **query):
    """The archive through retrieve(iterator=True): RSM pages of 5, each
    as (messages, whether <fin/> says complete)."""
    pages, messages = [], []
    async for page in alice.plugin["xep_0313"].retrieve(iterator=True, rsm={"max": 5}, **query):
        results = page["mam"]["results"]
        pages.append((len(results), page["mam_fin"].xml.get("complete") in ("true", "1")))
        messages.extend(results)
    return pages, messages


def check(alice, results, expected, live_ids, what):
    """Compares archive results with the expected (direction, peer, id, body)."""
    me = alice.boundjid.bare
    got, stamps, archive_ids = [], [], []
    for result in results:
        inner = result["mam_result"]["forwarded"]["stanza"]
        outgoing = inner["from"].bare == me
        peer = inner["to"].bare if outgoing else inner["from"].bare
        got.append(("out" if outgoing else "in", peer, inner["id"], inner["body"]))
        stamp = result["mam_result"]["forwarded"]["delay"]["stamp"]
        if not stamp:
            fail(f"{what}: no <delay/> stamp on {inner['id']}")
        stamps.append(stamp)
        archive_id = result["mam_result"]["id"]
        archive_ids.append(archive_id)
        if not outgoing and live_ids.get(inner["id"]) != archive_id:
            fail(f"{what}: {inner['id']} has archive id {archive_id!r}, stanza-id {live_ids.get(inner['id'])!r} live")
    if got != expected:
        fail(f"{what}:\n  got      {got}\n  expected {expected}")
    if stamps != sorted(stamps):
        fail(f"{what}: stamps out of order: {stamps}")
    if len(set(archive_ids)) != len(archive_ids) or not all(archive_ids):
        fail(f"{what}: archive ids not unique: {archive_ids}")
    return got


async def main():
    alice = User("alice", "al1ce-pass")
    bob = User("bob", "b0b-pass")
    carol = User("carol", "car0l-pass")
    for c in (alice, bob, carol):
        await c.start()
    me = alice.boundjid.bare

    info = await alice.plugin["xep_0030"].get_info(jid=me)
    if MAM not in info["disco_info"]["features"]:
        fail(f"{MAM} is not advertised on {me}: {info['disco_info']['features']}")
    print(f"{MAM} advertised on {me}", flush=True)

    # (sender, receiver, id, body): Bob and Alice take turns, Carol in the middle.
    talk = []
    for i in range(1, 13):
        if i % 2:
            talk.append((bob, alice, f"m{i}", f"bob to alice {i}"))
        else:
            talk.append((alice, bob, f"m{i}", f"alice to bob {i}"))
        if i == 6:
            talk.append((carol, alice, "c1", "carol to alice"))
            talk.append((alice, carol, "c2", "alice to carol"))
    live_ids = {}
    for sender, receiver, ident, body in talk:
        msg = sender.make_message(mto=receiver.boundjid, mbody=body, mtype="chat")
        msg["id"] = ident
        msg.send()
        got = await asyncio.wait_for(receiver.inbox.get(), TIMEOUT)
        if (got["id"], got["body"]) != (ident, body):
            fail(f"{receiver.boundjid} got {got['id']} {got['body']!r}, expected {ident}")
        if receiver is alice:
            sid = got["stanza_id"]
            if sid["by"] != me or not sid["id"]:
                fail(f"alice got {ident} with stanza-id {sid}")
            live_ids[ident] = sid["id"]
    print(f"exchanged {len(talk)} messages; alice saw {len(live_ids)} stanza-ids", flush=True)

    def row(sender, receiver, ident, body):
        if sender is alice:
            return ("out", receiver.boundjid.bare, ident, body)
        return ("in", sender.boundjid.bare, ident, body)

    everything = [row(*t) for t in talk]
    with_bob = [r for r in everything if r[1] == bob.boundjid.bare]

    # One page on its own first: an error comes out here (the iterators
    # stop quietly on one).
    try:
        first = await alice.plugin["xep_0313"].retrieve(rsm={"max": 5})
    except IqError as e:
        fail(f"archive query refused: {e.iq['error']['condition']} {e.iq['error']['text']}")
    ids = [m["mam_result"]["forwarded"]["stanza"]["id"] for m in first["mam"]["results"]]
    print(f"first page: {ids}", flush=True)
    if ids != [t[2] for t in talk[:5]]:
        fail("wrong first page")

    pages, results = await read_pages(alice)
    print(f"archive pages: {pages}", flush=True)
    for direction, peer, ident, body in check(alice, results, everything, live_ids, "archive"):
        print(f"  {direction} {peer} {ident} {body!r}", flush=True)
    if pages != [(5, False), (5, False), (4, True)]:
        fail(f"archive pages: {pages}")

    pages, results = await read_pages(alice, with_jid=bob.boundjid.bare)
    print(f"with {bob.boundjid.bare}: pages {pages}", flush=True)
    check(alice, results, with_bob, live_ids, "with bob")
    if pages != [(5, False), (5, False), (2, True)]:
        fail(f"with bob pages: {pages}")

    # The message-at-a-time API, too.
    messages = [m async for m in alice.plugin["xep_0313"].iterate(with_jid=bob.boundjid.bare, rsm={"max": 5})]
    check(alice, messages, with_bob, live_ids, "iterate with bob")
    print(f"iterate with {bob.boundjid.bare}: {len(messages)} messages", flush=True)

    for c in (alice, bob, carol):
        c.disconnect()
    print("OK", flush=True)


asyncio.run(asyncio.wait_for(main(), 60))
