"""Interop: slixmpp verifies the fixture CA over STARTTLS, logs in with its
best mechanism, and chats with a second client.

Usage: slixmpp_tls.py HOST PORT DOMAIN CA_FILE
"""

import asyncio
import sys

from common import DOMAIN, Client, fail

CA = sys.argv[4]


class Secure(Client):
    def __init__(self, user):
        super().__init__(user, f"{user}-pass", None)
        # Default security: STARTTLS required, the certificate verified.
        self.enable_starttls = True
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.ca_certs = CA
        self.inbox = asyncio.Queue()
        self.mech = None
        self.tls_version = None
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.inbox.put_nowait(m))
        self.add_event_handler("auth_success", lambda _: setattr(self, "mech", self.plugin["feature_mechanisms"].mech.name))

    async def on_start(self, _):
        ssl = self.transport.get_extra_info("ssl_object")
        self.tls_version = ssl.version() if ssl else None
        self.send_presence()
        self.ready.set()


async def main():
    bob = Secure("bob")
    alice = Secure("alice")
    await bob.start()
    await alice.start()
    for c in (alice, bob):
        print(f"{c.boundjid.user}: {c.tls_version}, {c.mech}", flush=True)
    alice.send_message(mto=f"bob@{DOMAIN}/interop", mbody="over TLS", mtype="chat")
    msg = await asyncio.wait_for(bob.inbox.get(), 20)
    print(f"bob got: {msg['body']!r} from {msg['from']}", flush=True)
    if msg["body"] != "over TLS":
        fail("wrong message")
    for c in (alice, bob):
        c.disconnect()
    print("OK", flush=True)


asyncio.run(asyncio.wait_for(main(), 60))
