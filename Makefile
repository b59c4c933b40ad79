# Juggler's front door. `make help` lists the targets.
ROUTES  ?= routes.def
BUILD   ?= build
ASAN    ?= build-asan
PORT    ?= 8080
HTTPS_PORT ?= 8443
JOBS    ?= $(shell nproc)
CMAKE_FLAGS ?=
PREFIX  ?= /usr/local
DESTDIR ?=

ROUTES_ABS := $(abspath $(ROUTES))
DEPS_STAMP := .deps-ok

.PHONY: all routes reload upgrade run test test-fast test-asan test-scale clean ssl_cert ssl_cert_if_needed bench fuzz tidy deps help check install deb

all: deps $(BUILD)/build.ninja
	@cmake --build $(BUILD) -j $(JOBS) --target app testserver

help:
	@echo "make routes [ROUTES=file]  compile a routes file into generated/distributer.cpp"
	@echo "make all                   build bin/app.out and bin/testserver"
	@echo "make reload [ROUTES=file]  compile a routes file and swap it into the balancer running from here"
	@echo "make upgrade [ARGS=...]    build, then run the new bin/app.out ARGS here: it takes the listening sockets over"
	@echo "                           from the balancer running from here, which drains and exits"
	@echo "make run [PORT=8080]       start 3 demo backends (6901-6903) and the balancer (https on 8443)"
	@echo "make test                  build and run every test, then again under ASan+UBSan"
	@echo "make test-fast             every test, without the sanitizer pass"
	@echo "make test-scale            two instances behind HAProxy in network namespaces (root; docs/SCALING.md)"
	@echo "make install [PREFIX=/usr/local] [DESTDIR=]  bin/juggler, bin/juggler-reload, etc/juggler (routes.def, certs/), systemd unit, logrotate"
	@echo "make deb                   a Debian package (CPack) in $(BUILD)/package/"
	@echo "make ssl_cert              self-signed certs/server.crt + certs/server.key"
	@echo "make fuzz [FUZZ_SECONDS=60] libFuzzer targets (request, response, HTTP/2 front)"
	@echo "make tidy                  clang-tidy on src/ (.clang-tidy; warnings are errors)"
	@echo "make bench                 Juggler vs nginx vs HAProxy (long; not part of test)"
	@echo "make clean                 remove bin/, build folders and generated code"

# tools/install-deps.sh is quick when nothing is missing (dpkg-query only).
deps:
	@bash tools/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DJUGGLER_ROUTES=$(ROUTES_ABS) $(CMAKE_FLAGS)

routes: deps
	@test -f $(ROUTES) || { echo "$(ROUTES): no such routes file"; exit 2; }
	@cmake -S . -B $(BUILD) -G Ninja -DJUGGLER_ROUTES=$(ROUTES_ABS) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) --target routes

# The balancer started from this folder (./bin/app.out, sudo or not) listens on
# ./juggler.sock; the new table is a shared object under $(BUILD)/reload.
reload: deps
	@bash tools/reload.sh $(ROUTES) $(BUILD)
# A new binary takes over from the balancer started from this folder: it asks
# ./juggler.sock for the listening sockets (SCM_RIGHTS), serves on them, and the
# old process drains and exits. It runs in the foreground like ./bin/app.out;
# ARGS are its flags (give the ones the running balancer was started with).
upgrade: all
	@exec ./bin/app.out --upgrade $(ARGS)
# The balancer as built (its routes compiled in) and what runs it: see README, Operations.
install: all
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

deb: all
	cd $(BUILD) && cpack -G DEB

check: all
	./bin/app.out --check

run: all ssl_cert_if_needed
	@bash tools/run-demo.sh $(PORT) $(HTTPS_PORT)

test: test-fast test-asan

test-fast: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS) --target app testserver juggler_tests
	cd $(BUILD) && ctest --output-on-failure -j 2

test-asan: deps
	cmake -S . -B $(ASAN) -G Ninja -DJUGGLER_USER_BUILD=OFF -DJUGGLER_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
	      -DJUGGLER_ROUTES=$(abspath routes.def) >/dev/null
	cmake --build $(ASAN) -j $(JOBS) --target app testserver juggler_tests
	cd $(ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	      ctest --output-on-failure -j 2

# Two instances behind an L4 front in network namespaces (tests/scale/, docs/SCALING.md):
# root is needed to make namespaces; skipped with the reason where they cannot be made.
# Then the deployment examples of deploy/ against their validators and a live /metrics.
test-scale: deps $(BUILD)/build.ninja
	@bash tools/install-deps.sh scale
	cmake --build $(BUILD) -j $(JOBS) --target testserver balancer_scale
	JUGGLER_ROUTES_BIN=$(abspath $(BUILD))/routes-bin JUGGLER_BIN=$(abspath bin) \
	      timeout 170 python3 tests/scale/test_scale.py
	JUGGLER_ROUTES_BIN=$(abspath $(BUILD))/routes-bin JUGGLER_BIN=$(abspath bin) \
	      timeout 120 python3 tests/scale/test_deploy.py

ssl_cert:
	@bash tools/make-cert.sh certs

ssl_cert_if_needed:
	@test -f certs/server.crt -a -f certs/server.key || bash tools/make-cert.sh certs

# clang-tidy on src/ with the committed .clang-tidy (warnings are errors).
tidy: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) --target app
	clang-tidy --quiet -p $(BUILD) src/*/*.cpp

FUZZ_SECONDS ?= 60
fuzz:
	@bash tools/install-deps.sh fuzz
	bash tests/fuzz/build.sh
	bash tests/fuzz/run.sh $(FUZZ_SECONDS)

bench:
	@bash tools/install-deps.sh bench
	@bash tools/bench/run.sh

clean:
	rm -rf bin $(BUILD) $(ASAN) build-fuzz build-bench
	rm -f generated/*.cpp
