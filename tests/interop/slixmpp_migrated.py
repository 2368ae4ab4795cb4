"""Interop: an account imported from ejabberd (SCRAM-SHA-1 keys only) logs
in with slixmpp's own choice of mechanism. SCRAM-SHA-256, its first, is
refused with <invalid-mechanism/>; slixmpp goes on with SCRAM-SHA-1 on the
same stream and finds the roster it had.

Usage: slixmpp_migrated.py HOST PORT DOMAIN JID PASSWORD CONTACT
"""

import asyncio
import sys

import slixmpp

from common import TIMEOUT, connect

JID, PASSWORD, CONTACT = sys.argv[4], sys.argv[5], sys.argv[6]


class Migrated(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(f"{JID}/interop", PASSWORD)
        # Shoal's tests run on loopback without TLS.
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        self.ready = asyncio.Event()
        self.add_event_handler("failed_auth", self.on_failed)
        self.add_event_handler("session_start", self.on_start)

    def mechanism(self):
        return self.plugin["feature_mechanisms"].mech.name

    def on_failed(self, failure):
        print(f"refused: {self.mechanism()} {failure['condition']}", flush=True)

    async def on_start(self, _):
        print(f"logged in with {self.mechanism()}", flush=True)
        await self.get_roster()
        print(f"{CONTACT}: {self.client_roster[CONTACT]['subscription']}", flush=True)
        self.ready.set()


async def main():
    client = Migrated()
    connect(client)
    await asyncio.wait_for(client.ready.wait(), TIMEOUT)
    await client.disconnect()
    print("OK", flush=True)


asyncio.run(asyncio.wait_for(main(), 60))
