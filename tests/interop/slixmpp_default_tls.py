"""Interop: slixmpp as installed (Debian's python3-slixmpp 1.8.3 or the
PyPI release) logs in over STARTTLS or Direct TLS with its default
mechanism selection, verifying the fixture CA, and messages itself.

Usage: slixmpp_default_tls.py HOST PORT DOMAIN CA_FILE starttls|direct USER PASSWORD

Prints the TLS version and the mechanism that succeeded. slixmpp 1.8
connects with connect((host, port), use_ssl=...); later releases take
enable_direct_tls / enable_starttls and connect(host, port).
"""

import asyncio
import inspect
import sys

import slixmpp

HOST, PORT, DOMAIN, CA, MODE, USER, PASSWORD = sys.argv[1:8]
PORT = int(PORT)
DIRECT = MODE == "direct"


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


class Client(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(f"{USER}@{DOMAIN}/default", PASSWORD)
        self.ca_certs = CA
        self.ready = asyncio.Event()
        self.inbox = asyncio.Queue()
        self.refused = []
        self.mech = None
        self.tls_version = None
        # Failures are recorded, not fatal: an old slixmpp tries its -PLUS
        # mechanisms first and falls back.
        self.add_event_handler("failed_auth", lambda s: self.refused.append(self.plugin["feature_mechanisms"].mech.name))
        self.add_event_handler(
            "auth_success", lambda _: setattr(self, "mech", self.plugin["feature_mechanisms"].mech.name)
        )
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.inbox.put_nowait(m))

    async def on_start(self, _):
        ssl = self.transport.get_extra_info("ssl_object")
        self.tls_version = ssl.version() if ssl else None
        self.ready.set()

    def start(self):
        if "use_ssl" in inspect.signature(slixmpp.ClientXMPP.connect).parameters:
            self.connect((HOST, PORT), use_ssl=DIRECT, force_starttls=not DIRECT)
        else:
            self.enable_direct_tls = DIRECT
            self.enable_starttls = not DIRECT
            self.enable_plaintext = False
            self.connect(HOST, PORT)


async def main():
    c = Client()
    c.start()
    try:
        await asyncio.wait_for(c.ready.wait(), 30)
    except asyncio.TimeoutError:
        fail(f"no session; refused: {c.refused}")
    print(f"{c.tls_version}, {c.mech}", flush=True)
    c.send_message(mto=c.boundjid.full, mbody="to myself", mtype="chat")
    msg = await asyncio.wait_for(c.inbox.get(), 20)
    if msg["body"] != "to myself":
        fail(f"wrong message {msg}")
    c.disconnect()
    print("OK", flush=True)


asyncio.run(asyncio.wait_for(main(), 60))
