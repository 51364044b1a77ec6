# Every command the project has. `make run` and `make test` are the two a new
# machine needs (see README.md); CI runs `make ci`.

CARGO ?= cargo
CONNECTORS_WASM := target/wasm32-wasip2/release

.PHONY: run test contract ci toolchain connectors build lint fmt bench clean-db postgres browser

## Build everything (toolchain, wasm target, connectors, gateway) and run the
## gateway on the embedded default with the quick-start config.
run: build
	./target/release/switchboard serve --config quickstart.toml

## The whole test suite (unit, store, model-based, API, sandbox, connectors,
## end-to-end), on SQLite and on PostgreSQL, then the SDK's unit tests
## (natively: the SDK itself builds for wasm32-wasip2), then the contract test.
test: connectors postgres browser
	$(CARGO) test --workspace
	cd sdk && $(CARGO) test --target host-tuple
	$(MAKE) contract

## Contract test: the gateway against its own OpenAPI document, with
## Schemathesis (pinned with hashes in contract/requirements.txt, installed
## into target/contract/venv), every check, a fixed seed; a few minutes.
## It runs the test build of the gateway (`cargo test` has just built it), so
## CI needs no second, release build of wasmtime.
contract: connectors
	$(CARGO) build -p switchboard
	SWITCHBOARD_BIN=target/debug/switchboard contract/run.sh

## The PostgreSQL the tests use ($$SWITCHBOARD_TEST_PG, else the local one):
## starts the local cluster if it is installed and down.
postgres:
	@if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q; then \
	  echo "starting the local PostgreSQL cluster"; \
	  pg_ctlcluster --skip-systemctl-redirect "$$(ls /etc/postgresql | head -n1)" main start; \
	fi

## The console's browser test drives Debian's headless Chromium through
## chromedriver: installs both (packages chromium, chromium-driver) when they
## are missing and this is root on a Debian-like machine; otherwise says what
## to install. The test fails, never skips, without them.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver for the console's browser test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	  else \
	    echo "the console's browser test needs chromium and chromedriver: install Debian's chromium and chromium-driver" >&2; exit 1; \
	  fi; \
	fi

## What CI runs: lint, then the whole test suite.
ci: lint test

## Install the pinned toolchain and the wasm32-wasip2 target from rust-toolchain.toml.
toolchain:
	rustup toolchain install

## Connectors and test fixtures, as wasm32-wasip2 components in
## $(CONNECTORS_WASM): the Rust ones, then the webhook connector in
## TypeScript and Python (webhook-ts.wasm, webhook-py.wasm), each rebuilt
## only when its sources or toolchain change.
connectors: toolchain
	cd connectors && $(CARGO) build --release
	$(MAKE) --no-print-directory $(CONNECTORS_WASM)/webhook-ts.wasm $(CONNECTORS_WASM)/webhook-py.wasm

## The TypeScript toolchain (componentize-js, jco, rolldown, typescript),
## pinned by sdk/ts/package-lock.json, and the Python one (componentize-py),
## pinned with hashes by sdk/python/requirements.txt, in a virtual
## environment under target/. Both come from the public registries.
TS_SDK := sdk/ts
PY_VENV := target/python-venv
WIT_FILES := $(shell find wit -name '*.wit')

$(TS_SDK)/node_modules/.package-lock.json: $(TS_SDK)/package.json $(TS_SDK)/package-lock.json
	cd $(TS_SDK) && npm ci --no-audit --no-fund --loglevel=error

$(PY_VENV)/installed: sdk/python/requirements.txt
	python3 -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r $<
	touch $@

$(CONNECTORS_WASM)/webhook-ts.wasm: $(TS_SDK)/node_modules/.package-lock.json $(TS_SDK)/build.mjs \
		$(TS_SDK)/tsconfig.json $(wildcard $(TS_SDK)/src/*.ts) $(wildcard connectors/webhook-ts/src/*.ts) $(WIT_FILES)
	@mkdir -p $(@D)
	node $(TS_SDK)/build.mjs connectors/webhook-ts -o $@

$(CONNECTORS_WASM)/webhook-py.wasm: $(PY_VENV)/installed sdk/python/build.py \
		$(wildcard sdk/python/switchboard_connector/*.py) connectors/webhook-py/app.py $(WIT_FILES)
	@mkdir -p $(@D)
	$(PY_VENV)/bin/python sdk/python/build.py connectors/webhook-py -o $@

build: connectors
	$(CARGO) build --release -p switchboard

lint: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd connectors && $(CARGO) fmt --all -- --check && $(CARGO) clippy --release -- -D warnings
	cd sdk && $(CARGO) fmt -- --check && $(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
	cd connectors && $(CARGO) fmt --all
	cd sdk && $(CARGO) fmt

## Queue and outage benchmarks (see BENCHMARKS.md).
bench: connectors
	$(CARGO) bench -p switchboard --bench queue -- all
	$(CARGO) bench -p switchboard --bench outage

## End-to-end figures (see docs/benchmarks-history.md, "End-to-end"): the release gateway
## and the webhook connector between a load generator posting a telecom mix
## and an HSS-like sink, beside the same requests sent to the sink directly;
## prints one table. BACKEND=sqlite|postgres, MODE=single|batch (BATCH events
## per request)|ordered (one per request, never two un-acknowledged events on
## one key, as a config app that keeps order posts), CONCURRENCY posting connections, EVENTS in the run, RATE
## events/s offered (0: as fast as the gateway answers), KILLS `kill -9`s of
## the gateway during the run (each restarted after 1 s). `cargo bench` builds
## the `switchboard` binary itself, with the release settings.
BACKEND ?= sqlite
MODE ?= single
CONCURRENCY ?= 64
EVENTS ?= 20000
BATCH ?= 100
RATE ?= 0
KILLS ?= 0
.PHONY: bench-e2e
bench-e2e: connectors $(if $(filter postgres,$(BACKEND)),postgres)
	@echo "commit $$(git rev-parse --short HEAD), load average $$(cut -d' ' -f1-3 /proc/loadavg)"
	$(CARGO) bench -p switchboard --bench e2e -- --backend $(BACKEND) --mode $(MODE) \
	  --concurrency $(CONCURRENCY) --events $(EVENTS) --batch $(BATCH) \
	  --rate $(RATE) --kills $(KILLS)
