"""Interop: two slixmpp clients register in-band, log in with SCRAM
(SHA-256 and SHA-1) and chat through Shoal.

Usage: slixmpp_chat.py HOST PORT DOMAIN
Prints what each side received; exits 0 only if the whole dialogue happened.
"""

import asyncio
import sys

import slixmpp

HOST, PORT, DOMAIN = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Client(slixmpp.ClientXMPP):
    def __init__(self, user, password, mech):
        super().__init__(f"{user}@{DOMAIN}/interop", password, sasl_mech=mech)
        # Shoal's tests run on loopback without TLS.
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        self.register_plugin("xep_0077")
        self.register_plugin("xep_0199")
        self.plugin["xep_0077"].force_registration = True
        self.ready = asyncio.Event()
        self.inbox = asyncio.Queue()
        self.add_event_handler("register", self.on_register)
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda msg: self.inbox.put_nowait(msg))
        self.add_event_handler("failed_auth", lambda _: fail(f"{user}: authentication failed"))

    async def on_register(self, _):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        await iq.send()

    async def on_start(self, _):
        self.send_presence()
        # A round trip, so that the presence is in effect before we go on.
        await self.plugin["xep_0199"].ping(jid=DOMAIN)
        self.ready.set()


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


async def main():
    bob = Client("bob", "b0b-pass", "SCRAM-SHA-1")
    alice = Client("alice", "al1ce-pass", "SCRAM-SHA-256")
    bob.connect(HOST, PORT)
    await asyncio.wait_for(bob.ready.wait(), 20)
    alice.connect(HOST, PORT)
    await asyncio.wait_for(alice.ready.wait(), 20)

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
