"""The slixmpp side of the real-browser test (tests/web.rs): a contact of
the Converse.js user, over plain TCP, that waits for that user to come
online, sends a chat message to it and waits for the answer typed in the
browser.

Usage: web_peer.py HOST PORT DOMAIN USER PASSWORD CONVERSE_JID MESSAGE REPLY

USER@DOMAIN and CONVERSE_JID (a bare JID) must be in each other's roster
with subscription both, so that the browser's presence reaches us. Prints:
    available: CONVERSE_JID
    sent: 'MESSAGE'
    reply: 'REPLY' from CONVERSE_JID type chat
    xml: <the reply stanza, exactly as received, on one line>
    OK
and exits 0 only if all of that happened. Chat-state notifications
(messages without a body, sent while the user types) are skipped.
"""

import asyncio
import sys

from common import Client, fail

USER, PASSWORD, CONVERSE, MESSAGE, REPLY = sys.argv[4:9]
# The browser starts and logs in meanwhile, on a machine that may be busy
# compiling: more time than common.TIMEOUT.
WAIT = 60


class Peer(Client):
    def __init__(self):
        super().__init__(USER, PASSWORD, "SCRAM-SHA-1", register=False)
        self.register_plugin("xep_0199")
        self.online = asyncio.Queue()
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("presence_available", lambda p: self.online.put_nowait(p))
        self.add_event_handler("message", lambda m: self.inbox.put_nowait(m))

    async def on_start(self, _):
        await self.get_roster()
        await self.announce()


async def next_from(queue, what, check):
    """The next item of `queue` that passes `check`, within WAIT seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        left = deadline - loop.time()
        try:
            item = await asyncio.wait_for(queue.get(), max(left, 0))
        except asyncio.TimeoutError:
            fail(f"no {what} within {WAIT} s")
        if check(item):
            return item


async def main():
    peer = Peer()
    await peer.start()

    presence = await next_from(peer.online, f"available presence from {CONVERSE}",
                               lambda p: p["from"].bare == CONVERSE)
    print(f"available: {presence['from'].bare}", flush=True)

    # To the browser's full JID: the resource that announced itself.
    peer.send_message(mto=presence["from"], mbody=MESSAGE, mtype="chat")
    print(f"sent: {MESSAGE!r}", flush=True)

    reply = await next_from(peer.inbox, f"message with a body from {CONVERSE}",
                            lambda m: m["from"].bare == CONVERSE and m["body"] != "")
    print(f"reply: {reply['body']!r} from {reply['from'].bare} type {reply['type']}", flush=True)
    print(f"xml: {reply}", flush=True)
    if reply["body"] != REPLY:
        fail(f"expected the reply {REPLY!r}")

    peer.disconnect()
    print("OK", flush=True)


asyncio.run(main())
