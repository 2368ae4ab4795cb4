"""Interop: two slixmpp clients register in-band, log in with SCRAM
(SHA-256 and SHA-1) and chat through Shoal.

Usage: slixmpp_chat.py HOST PORT DOMAIN
Prints what each side received; exits 0 only if the whole dialogue happened.
"""

import asyncio

from common import DOMAIN, Client, fail


class Chatter(Client):
    def __init__(self, user, password, mech):
        super().__init__(user, password, mech)
        self.register_plugin("xep_0199")
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda msg: self.inbox.put_nowait(msg))

    async def on_start(self, _):
        await self.announce()


async def main():
    bob = Chatter("bob", "b0b-pass", "SCRAM-SHA-1")
    alice = Chatter("alice", "al1ce-pass", "SCRAM-SHA-256")
    await bob.start()
    await alice.start()

    alice.send_message(mto=f"bob@{DOMAIN}", mbody="hello from alice", mtype="chat")
    msg = await asyncio.wait_for(bob.inbox.get(), 20)
    print(f"bob got: {msg['body']!r} from {msg['from']}", flush=True)
    if msg["body"] != "hello from alice" or str(msg["from"]) != f"alice@{DOMAIN}/interop":
        fail("bob got the wrong message")

    bob.send_message(mto=msg["from"], mbody="hello from bob", mtype="chat")
    reply = await asyncio.wait_for(alice.inbox.get(), 20)
    print(f"alice got: {reply['body']!r} from {reply['from']}", flush=True)
    if reply["body"] != "hello from bob" or str(reply["from"]) != f"bob@{DOMAIN}/interop":
        fail("alice got the wrong message")

    for c in (alice, bob):
        c.disconnect()
    print("OK", flush=True)


asyncio.run(asyncio.wait_for(main(), 60))
