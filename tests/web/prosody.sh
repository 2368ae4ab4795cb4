#!/usr/bin/env bash
# The browser harness of tests/web.rs, run against Debian's Prosody 0.12
# instead of Shoal: proof that tests/web/converse.mjs and
# tests/interop/web_peer.py work with a server known to speak RFC 7395, and
# a reference to compare Shoal with when the test fails.
#
#   tests/web/prosody.sh [OUT_DIR]
#
# Starts a private Prosody on 127.0.0.1 (c2s and HTTP on free ports, a
# temporary config and data directory; run as the prosody user) with
# mod_websocket, and the accounts alice and bob, each in the other's
# roster. Prosody's mod_http_files serves what Shoal's /chat serves:
# tests/web/chat.html at /chat/ and Converse's dist at /chat/dist/, on the
# same port as /xmpp-websocket. Then runs web_peer.py as bob (Debian's
# slixmpp) and converse.mjs as alice, as tests/web.rs does.
# Leaves their output, Prosody's log and the screenshot in OUT_DIR
# (default target/web-prosody). Needs root (Prosody runs as its own
# user), prosody, chromium and `npm ci --prefix tests/web` (make web-deps).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/target/web-prosody}" && cd "${1:-$ROOT/target/web-prosody}" && pwd)
DIST=$HERE/node_modules/converse.js/dist
PY=${SHOAL_DEBIAN_PYTHON:-/usr/bin/python3}

say() { echo "prosody.sh: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (Prosody runs as its own user)"
[ -d "$DIST" ] || die "no $DIST: run make web-deps"
command -v prosody >/dev/null || die "no prosody: apt-get install prosody"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_listening() {
  local i
  for ((i = 0; i < 120; i++)); do
    listening "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.25
  done
  return 1
}

C2S=$(free_port)
HTTP=$(free_port)
WORK=$(mktemp -d /tmp/shoal-web-prosody.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  cp "$WORK/prosody.log" "$OUT/" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/data" "$WORK/www"
cat > "$WORK/prosody.cfg.lua" <<CFG
-- Only what a WebSocket client and a TCP client on loopback need.
admins = { }
plugin_paths = { }
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "posix"; "websocket"; "http_files" }
modules_disabled = { "s2s" }
pidfile = "$WORK/prosody.pid"
data_path = "$WORK/data"
authentication = "internal_hashed"
log = { debug = "$WORK/prosody.log" }
-- Plain TCP for slixmpp on loopback; the WebSocket counts as secure
-- (as Shoal treats a loopback ws://), so Converse may authenticate on it.
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
consider_websocket_secure = true
-- The page and its files, where Shoal has them.
http_files_dir = "$WORK/www"
http_paths = { files = "/chat" }
-- Requests to 127.0.0.1 go to the host localhost.
http_default_host = "localhost"
interfaces = { "127.0.0.1" }
c2s_ports = { $C2S }
http_interfaces = { "127.0.0.1" }
http_ports = { $HTTP }
https_ports = { }
s2s_ports = { }
c2s_direct_tls_ports = { }
component_ports = { }
VirtualHost "localhost"
CFG

# Accounts, then each in the other's roster with subscription both,
# straight into Prosody's storage (as fixtures/peers/prosody-rosters.py).
chown -R prosody:prosody "$WORK"
for u in alice bob; do
  (cd "$WORK" && setpriv --reuid=prosody --regid=prosody --init-groups env HOME="$WORK" prosodyctl --config "$WORK/prosody.cfg.lua" register "$u" localhost "$u-pass") >> "$WORK/prosodyctl.log" 2>&1 ||
    die "prosodyctl register $u failed: $(tail -3 "$WORK/prosodyctl.log")"
done
mkdir -p "$WORK/data/localhost/roster"
for pair in "alice bob" "bob alice"; do
  set -- $pair
  cat > "$WORK/data/localhost/roster/$1.dat" <<ROSTER
return {
	[false] = { ["version"] = 1; ["pending"] = {}; };
	["$2@localhost"] = { ["groups"] = {}; ["subscription"] = "both"; };
};
ROSTER
done
# The page, as Shoal's /chat serves it, and Converse's files under it
# (linked after the chown: it would change the link's target).
cp "$HERE/chat.html" "$WORK/www/index.html"
chown -R prosody:prosody "$WORK"
ln -s "$DIST" "$WORK/www/dist"

(cd "$WORK" && exec setsid setpriv --reuid=prosody --regid=prosody --init-groups \
  env HOME="$WORK" prosody --config "$WORK/prosody.cfg.lua" -F < /dev/null >> "$WORK/stdout.log" 2>&1) &
PIDS+=($!)
if ! wait_listening "$C2S" "${PIDS[0]}" || ! wait_listening "$HTTP" "${PIDS[0]}"; then
  tail -20 "$WORK/stdout.log" "$WORK/prosody.log" >&2 || true
  die "Prosody did not start"
fi

say "Prosody: c2s 127.0.0.1:$C2S, page http://127.0.0.1:$HTTP/chat/, WebSocket ws://127.0.0.1:$HTTP/xmpp-websocket"

# The peer (bob) and the browser (alice) at once, as tests/web.rs runs them.
(cd "$ROOT/tests/interop" && exec "$PY" web_peer.py 127.0.0.1 "$C2S" localhost bob bob-pass alice@localhost \
  "hello from slixmpp" "hello from Converse") > "$OUT/peer.out" 2> "$OUT/peer.err" &
PEER=$!
status=0
node "$HERE/converse.mjs" --url "http://127.0.0.1:$HTTP/chat/" --jid alice@localhost --password alice-pass \
  --peer bob@localhost --expect "hello from slixmpp" --reply "hello from Converse" \
  --screenshot "$OUT/converse.png" > "$OUT/browser.out" 2> "$OUT/browser.err" || status=$?
# Bob would wait a minute for a reply that cannot come.
[ "$status" = 0 ] || kill "$PEER" 2>/dev/null || true
wait "$PEER" || [ "$status" != 0 ] || status=1
say "browser:"; cat "$OUT/browser.out" >&2
say "peer:"; cat "$OUT/peer.out" >&2
[ "$status" = 0 ] || { tail -n 20 "$OUT/browser.err" "$OUT/peer.err" >&2; die "failed ($status); see $OUT"; }
say "OK: screenshot $OUT/converse.png"
