"""Interop: slixmpp's ComponentXMPP (Debian's 1.8.3 or PyPI's) connects to
Shoal as an external component (XEP-0114), answers service discovery and
pings, and echoes messages; a slixmpp client finds it in the server's
disco#items listing and talks to it through Shoal.

Usage: slixmpp_component.py HOST PORT DOMAIN COMPONENT_PORT COMPONENT SECRET USER PASSWORD
"""

import asyncio
import inspect
import sys

import slixmpp

HOST, PORT, DOMAIN, CPORT, COMPONENT, SECRET, USER, PASSWORD = sys.argv[1:9]
PORT, CPORT = int(PORT), int(CPORT)


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


class Bot(slixmpp.ComponentXMPP):
    def __init__(self):
        super().__init__(COMPONENT, SECRET, HOST, CPORT)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.ready.set())
        self.add_event_handler("message", self.on_message)

    async def start(self):
        self.plugin["xep_0030"].add_identity(category="automation", itype="bot", name="Bot")
        self.connect()
        await asyncio.wait_for(self.ready.wait(), 20)

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            msg.reply(f"echo: {msg['body']}").send()


class User(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(f"{USER}@{DOMAIN}/interop", PASSWORD)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.ready = asyncio.Event()
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", lambda _: self.ready.set())
        self.add_event_handler("message", lambda m: self.inbox.put_nowait(m))
        self.add_event_handler("failed_auth", lambda _: fail("authentication failed"))

    async def start(self):
        # slixmpp 1.8 takes connect((host, port), ...); later ones set
        # attributes and take connect(host, port).
        if "disable_starttls" in inspect.signature(slixmpp.ClientXMPP.connect).parameters:
            self.connect((HOST, PORT), disable_starttls=True, force_starttls=False)
        else:
            self.enable_starttls = False
            self.enable_direct_tls = False
            self.enable_plaintext = True
            # Shoal's tests run on loopback without TLS.
            self.plugin["feature_mechanisms"].unencrypted_scram = True
            self.connect(HOST, PORT)
        await asyncio.wait_for(self.ready.wait(), 20)


async def main():
    bot = Bot()
    await bot.start()
    user = User()
    await user.start()
    items = await user.plugin["xep_0030"].get_items(jid=DOMAIN, timeout=10)
    print("items: " + " ".join(sorted(i[0] for i in items["disco_items"]["items"])), flush=True)
    info = await user.plugin["xep_0030"].get_info(jid=COMPONENT, timeout=10)
    for category, itype, _lang, name in info["disco_info"]["identities"]:
        print(f"info: {category}/{itype} {name}", flush=True)
    await user.plugin["xep_0199"].ping(jid=COMPONENT, timeout=10)
    print("ping: ok", flush=True)
    user.send_message(mto=f"echo@{COMPONENT}", mbody="hello", mtype="chat")
    msg = await asyncio.wait_for(user.inbox.get(), 10)
    print(f"user got: {msg['body']!r} from {msg['from']}", flush=True)
    user.disconnect()
    bot.disconnect()
    print("OK", flush=True)


asyncio.run(asyncio.wait_for(main(), 60))
