"""Interop: SCRAM-SHA-256-PLUS with tls-server-end-point, computed by an
independent SCRAM implementation (scramp) from the certificate the server
presents, over STARTTLS with the fixture CA verified.

Usage: scramp_plus.py HOST PORT DOMAIN CA_FILE USER PASSWORD
"""

import base64
import re
import socket
import ssl
import sys

import scramp

HOST, PORT, DOMAIN, CA, USER, PASSWORD = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
OPEN = (f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' "
        "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")


def read_until(sock, pattern, buf):
    while not re.search(pattern, buf):
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit(f"FAIL: connection closed waiting for {pattern}: {buf!r}")
        buf += chunk.decode()
    m = re.search(pattern, buf)
    return m, buf[m.end():]


sock = socket.create_connection((HOST, PORT), timeout=20)
sock.sendall(OPEN.encode())
_, rest = read_until(sock, r"</stream:features>", "")
sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
read_until(sock, r"<proceed[^>]*/>", rest)
context = ssl.create_default_context(cafile=CA)
tls = context.wrap_socket(sock, server_hostname=DOMAIN)
print(f"TLS: {tls.version()}", flush=True)
tls.sendall(OPEN.encode())
features, rest = read_until(tls, r"<stream:features>(.*?)</stream:features>", "")
mechanisms = re.findall(r"<mechanism>([^<]+)</mechanism>", features.group(1))
print(f"offered: {' '.join(mechanisms)}", flush=True)

# scramp hashes the certificate the socket received, by its signature hash.
client = scramp.ScramClient(["SCRAM-SHA-256-PLUS"], USER, PASSWORD,
                            channel_binding=("tls-server-end-point", tls))
first = base64.b64encode(client.get_client_first().encode()).decode()
tls.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>{first}</auth>".encode())
challenge, rest = read_until(tls, r"<challenge[^>]*>([^<]*)</challenge>", rest)
client.set_server_first(base64.b64decode(challenge.group(1)).decode())
final = base64.b64encode(client.get_client_final().encode()).decode()
tls.sendall(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>".encode())
outcome, rest = read_until(tls, r"<(success|failure)[^>]*?(?:/>|>(.*?)</\1>)", rest)
if outcome.group(1) != "success":
    sys.exit(f"FAIL: {outcome.group(0)}")
client.set_server_final(base64.b64decode(outcome.group(2)).decode())  # verifies the server's signature
print("SCRAM-SHA-256-PLUS with tls-server-end-point: success, server verified", flush=True)
tls.sendall(b"</stream:stream>")
