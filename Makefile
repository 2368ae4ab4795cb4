# Shoal: `make run` serves localhost on 127.0.0.1:5222; `make test` runs
# every test, installing the interop client (slixmpp) into .venv first.

CARGO ?= cargo
VENV  := .venv
PY    := $(VENV)/bin/python

.PHONY: run test lint fmt bench interop-deps clean

run:
	$(CARGO) run --release

test: lint interop-deps
	SHOAL_PYTHON=$(abspath $(PY)) SHOAL_REQUIRE_INTEROP=1 $(CARGO) test --workspace --all-targets

interop-deps: $(VENV)/.installed

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

clean:
	$(CARGO) clean
	rm -rf $(VENV)
