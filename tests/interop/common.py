"""What the interop scripts share: a slixmpp client set up for Shoal's
plaintext loopback tests, registering its account in-band first."""

import asyncio
import inspect
import sys

import slixmpp

HOST, PORT, DOMAIN = sys.argv[1], int(sys.argv[2]), sys.argv[3]
TIMEOUT = 20


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def connect(client):
    """Connects in plaintext: slixmpp 1.8 takes connect((host, port), ...),
    later ones connect(host, port) and the enable_* attributes (set by
    Client)."""
    if "use_ssl" in inspect.signature(slixmpp.ClientXMPP.connect).parameters:
        client.connect((HOST, PORT), use_ssl=False, force_starttls=False, disable_starttls=True)
    else:
        client.connect(HOST, PORT)


class Client(slixmpp.ClientXMPP):
    """register=False for accounts the test made: slixmpp 1.8 holds back
    the registration IQ until a session has started, so it cannot
    register in-band."""

    def __init__(self, user, password, mech, register=True):
        super().__init__(f"{user}@{DOMAIN}/interop", password, sasl_mech=mech)
        # Shoal's tests run on loopback without TLS.
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        self.register_plugin("xep_0077")
        self.plugin["xep_0077"].force_registration = register
        self.plugin["xep_0077"].create_account = register
        self.ready = asyncio.Event()
        self.add_event_handler("register", self.on_register)
        self.add_event_handler("failed_auth", lambda _: fail(f"{user}: authentication failed"))

    async def on_register(self, _):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        await iq.send()

    async def announce(self):
        """Initial presence, then a ping round trip, so that the presence
        is in effect before the script goes on; then ready."""
        self.send_presence()
        await self.plugin["xep_0199"].ping(jid=DOMAIN)
        self.ready.set()

    async def start(self):
        """Connects and waits for the session (see `ready`)."""
        connect(self)
        await asyncio.wait_for(self.ready.wait(), TIMEOUT)
