# Shoal: `make run` serves localhost on 127.0.0.1:5222; `make test` runs
# every test, installing the interop client (slixmpp) into .venv first.

CARGO ?= cargo
VENV  := .venv
PY    := $(VENV)/bin/python

.PHONY: federation-peers run test soak lint fmt bench bench-peers fuzz interop-deps debian-slixmpp web-deps chromium conversejs install clean

# Seconds each fuzz target runs for.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := codec jid stanza

run:
	$(CARGO) run --release

# Debian's own slixmpp (1.8.3 on Debian 12) runs under Debian's Python.
DEBIAN_PY := /usr/bin/python3

# A clean build (CI's) gains nothing from incremental caches, which add
# 1.5 GB to the test build's 4.7 GB on a small disk.
test: export CARGO_INCREMENTAL ?= 0
test: lint interop-deps
	SHOAL_PYTHON=$(abspath $(PY)) SHOAL_DEBIAN_PYTHON=$(DEBIAN_PY) SHOAL_REQUIRE_INTEROP=1 \
	  $(CARGO) test --workspace --all-targets

# The durability proof at full length (tests/durability.rs): SOAK_MESSAGES
# messages between two users while the server is killed (SIGKILL) and
# restarted SOAK_KILLS times and client connections are cut, cleanly or
# half-open. `make test` runs a short version of the same test.
SOAK_MESSAGES ?= 100000
SOAK_KILLS    ?= 10

soak:
	SHOAL_SOAK_MESSAGES=$(SOAK_MESSAGES) SHOAL_SOAK_KILLS=$(SOAK_KILLS) \
	  $(CARGO) test --release --test durability -- --nocapture

interop-deps: $(VENV)/.installed debian-slixmpp federation-peers web-deps

# Debian's Prosody and ejabberd, federation partners in
# tests/federation_interop.rs (fixtures/peers/federation.sh runs them).
federation-peers:
	command -v prosody >/dev/null && command -v ejabberdctl >/dev/null && dpkg -s lua-unbound >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody ejabberd lua-unbound; }

debian-slixmpp:
	$(DEBIAN_PY) -c 'import slixmpp' 2>/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-slixmpp; }

# The real-browser test (tests/web.rs): Debian's chromium, and Converse.js
# and playwright-core at the versions tests/web/package-lock.json pins.
# No install scripts run: neither package needs one, and playwright's would
# fetch a browser of its own.
WEB := tests/web

web-deps: chromium $(WEB)/node_modules/.installed

chromium:
	test -x /usr/bin/chromium || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

$(WEB)/node_modules/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --ignore-scripts --no-audit --no-fund
	touch $@

# Converse.js for Shoal's /chat page: its dist/ unpacked into ./conversejs,
# where [http] conversejs_dir points by default; the version the browser
# test pins.
CONVERSEJS_VERSION := $(shell sed -n 's/^ *"converse\.js": "\(.*\)".*/\1/p' $(WEB)/package.json)

conversejs:
	rm -rf conversejs conversejs.tmp && mkdir conversejs.tmp
	cd conversejs.tmp && npm pack --silent converse.js@$(CONVERSEJS_VERSION) > /dev/null && \
	  tar xzf converse.js-$(CONVERSEJS_VERSION).tgz package/dist
	mv conversejs.tmp/package/dist conversejs && rm -rf conversejs.tmp
	@echo "Converse.js $(CONVERSEJS_VERSION) is in ./conversejs: open http://127.0.0.1:5280/chat"

$(VENV)/.installed: tests/interop/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
	touch $@

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench --workspace

# Shoal, ejabberd and Prosody side by side (installs the peers from Debian).
# Knobs, in the environment: see the top of fixtures/peers/run.sh. Over
# WebSocket: `SCENARIOS="websocket idle-websocket" make bench-peers`.
#
# The cost of metrics (README: Metrics): with no exporter installed every
# count is a call that does nothing, so the messages scenario is measured
# with [http] metrics = false and true, alternately, each run:
# `SERVERS=shoal SCENARIOS=metrics-cost make bench-peers`. Messages per
# server CPU-second must not drop by 2% or more.
bench-peers:
	fixtures/peers/run.sh

# cargo-fuzz wants nightly; RUSTC_BOOTSTRAP lets the stable toolchain build
# it. Each target starts from the seeds in fixtures/fuzz/ and keeps what it
# finds in target/fuzz-corpus/.
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t && \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t target/fuzz-corpus/$$t fixtures/fuzz/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

# The binary `cargo build --release` made, and the systemd unit (README:
# Deployment) pointing at it. It builds nothing, so that `sudo make install`
# does not run cargo as root; nor does it touch /etc/shoal or the user.
PREFIX  ?= /usr/local
DESTDIR ?=
UNITDIR ?= /etc/systemd/system

install:
	@test -x target/release/shoal || { echo "no target/release/shoal: run cargo build --release first" >&2; exit 1; }
	install -D -m 0755 target/release/shoal $(DESTDIR)$(PREFIX)/bin/shoal
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/bin/shoal|$(PREFIX)/bin/shoal|g' fixtures/systemd/shoal.service > $(DESTDIR)$(UNITDIR)/shoal.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/shoal.service

clean:
	$(CARGO) clean
	rm -rf $(VENV) $(WEB)/node_modules
