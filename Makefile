# stubborn — build, test and run.  `make run` and `make check` install the
# Debian packages they need when they are missing (see DEPS below).

CC       ?= cc
BUILD    ?= build
SANITIZER ?=
PKGS     := libevent libevent_pthreads libevent_openssl openssl ldns libsodium

CFLAGS_BASE := -std=gnu11 -g -O2 -Wall -Wextra -Werror -Wshadow \
	-Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter \
	-D_GNU_SOURCE -Iinclude
ifeq ($(SANITIZER),address)
  BUILD := build-asan
  CFLAGS_BASE += -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined -DSTUBBORN_CHECKS
  LDFLAGS += -fsanitize=address,undefined
endif
ifeq ($(SANITIZER),thread)
  BUILD := build-tsan
  CFLAGS_BASE += -O1 -fsanitize=thread -DSTUBBORN_CHECKS
  LDFLAGS += -fsanitize=thread
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null)
CFLAGS  += $(CFLAGS_BASE) $(PKG_CFLAGS)

SRCS     := $(wildcard resolver/*.c)
LIB_OBJS := $(patsubst resolver/%.c,$(BUILD)/obj/%.o,$(filter-out resolver/main.c,$(SRCS)))
MAIN_OBJ := $(BUILD)/obj/main.o
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/%,$(UNIT_SRCS))
TOOLS    := $(BUILD)/fakeup $(BUILD)/udpecho $(BUILD)/stubborn-ctl
SCENARIO := $(BUILD)/scenario
SCENARIOS := $(sort $(wildcard tests/scenario/*.scn))
HEADERS  := $(wildcard include/stubborn/*.h)

# Debian packages: building, then testing.
DEPS_BUILD := gcc make pkg-config libevent-dev libldns-dev libsodium-dev \
	libssl-dev
DEPS_TEST  := check bind9-dnsutils knot-dnsutils dnsperf nsd unbound dnsdist openssl \
	valgrind iproute2 util-linux procps clang clang-format libclang-rt-14-dev \
	systemd python3-yaml strace curl tshark
# `make bench`: the peers it compares with and the chart (headless gnuplot).
DEPS_BENCH := dnsperf unbound dnsdist dnsmasq gnuplot-nox python3 iproute2 \
	procps coreutils

.PHONY: all run check unit scenarios integration check-asan check-tsan \
	check-valgrind fuzz storm deps deps-test clean format-check bench \
	install uninstall check-config-files check-deploy upgrade-bench \
	bench-encrypted bench-instr build-tests build-unit fuzz-bins fuzz-replay

all: $(BUILD)/stubborn $(TOOLS)

# Everything the checks run, built on every CPU before they start.
NPROC := $(shell nproc 2>/dev/null || echo 1)
build-tests: all $(UNIT_BINS) $(SCENARIO)
build-unit: all $(UNIT_BINS)

$(BUILD)/obj/%.o: resolver/%.c $(HEADERS) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj $(BUILD):
	mkdir -p $@

$(BUILD)/libstubborn.a: $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/stubborn: $(MAIN_OBJ) $(BUILD)/libstubborn.a
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/fakeup: tools/fakeup.c | $(BUILD)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(PKG_LIBS)

# The scenario runner: the engine with a scripted upstream and its own
# clock (tests/scenario/README.md).
$(SCENARIO): tests/scenario/runner.c tests/scenario/harness.c \
		tests/scenario/harness.h $(BUILD)/libstubborn.a
	$(CC) $(CFLAGS) -Itests/scenario $(LDFLAGS) -o $@ tests/scenario/runner.c \
		tests/scenario/harness.c $(BUILD)/libstubborn.a $(PKG_LIBS)

scenarios: $(SCENARIO)
	./$(SCENARIO) $(SCENARIOS)

$(BUILD)/udpecho: tools/udpecho.c | $(BUILD)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lpthread

# The operator's client for the control socket: no library needed.
$(BUILD)/stubborn-ctl: tools/stubborn-ctl.c include/stubborn/control.h \
		include/stubborn/wire.h | $(BUILD)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

$(BUILD)/test_%: tests/unit/test_%.c tests/unit/unit.h $(BUILD)/libstubborn.a
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(BUILD)/libstubborn.a \
		$(CHECK_LIBS) $(PKG_LIBS)

# Installs what is missing, and nothing when everything is there.  Not root:
# sudo, or a message naming the packages.
deps:
	@sh tools/install-deps.sh $(DEPS_BUILD)

deps-test:
	@sh tools/install-deps.sh $(DEPS_BUILD) $(DEPS_TEST)

run: deps
	$(MAKE) all
	./$(BUILD)/stubborn --config config/stubborn.conf

unit: $(UNIT_BINS)
	@fail=0; for t in $(UNIT_BINS); do \
		CK_FORK=yes ./$$t || fail=1; done; exit $$fail

integration: all
	BUILD=$(BUILD) bash tests/integration/run.sh

check: deps-test
	sh tools/check-layers.sh
	$(MAKE) format-check
	$(MAKE) -j$(NPROC) build-tests
	$(MAKE) unit scenarios
	$(MAKE) integration
	$(MAKE) check-config-files
	$(MAKE) check-deploy
	$(MAKE) check-asan
	$(MAKE) check-tsan
	$(MAKE) check-valgrind
	$(MAKE) fuzz-replay

check-config-files: all
	BUILD=$(BUILD) sh tests/config/run.sh

# The systemd units, make install, the Kubernetes manifests and their
# configs (tests/deploy/run.py).
check-deploy: all
	BUILD=$(BUILD) python3 tests/deploy/run.py

check-asan:
	$(MAKE) -j$(NPROC) SANITIZER=address build-tests
	$(MAKE) SANITIZER=address unit scenarios
	$(MAKE) SANITIZER=address integration

# ThreadSanitizer: the unit suites (several race threads on purpose), then
# the daemon with 4 workers under a mixed load, reloads, snapshots, scrapes
# and control commands (tests/stress/workers.sh), then the DNS-over-TLS and
# DNSCrypt integration files against the TSan-built daemon (its connection
# pools and certificate refreshes).  Any report fails.
TSAN_CHECK_OPTIONS := halt_on_error=1 exitcode=66 second_deadlock_stack=1
check-tsan: all
	$(MAKE) -j$(NPROC) SANITIZER=thread build-unit
	TSAN_OPTIONS="$(TSAN_CHECK_OPTIONS)" $(MAKE) SANITIZER=thread unit
	BUILD=$(BUILD) BUILD_TSAN=build-tsan bash tests/stress/workers.sh
	for t in t_dot t_dnscrypt; do \
		TSAN_OPTIONS="$(TSAN_CHECK_OPTIONS)" BUILD=build-tsan T_ONLY=$$t \
		bash tests/integration/run.sh || exit 1; done

check-valgrind: all
	BUILD=$(BUILD) VALGRIND=1 bash tests/integration/run.sh

# Fuzzing: replay the committed corpora (every check) or fuzz for
# FUZZ_SECONDS per target (make fuzz).
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS = -std=gnu11 -g -O1 -D_GNU_SOURCE -DSTUBBORN_CHECKS -Iinclude \
	$(PKG_CFLAGS) -fsanitize=fuzzer,address,undefined
# Targets that drive the engine link the scenario harness too.  The daemon's
# sources are compiled once for all targets (with coverage, without
# libFuzzer's main), each target links them.
FUZZ_HARNESS = tests/scenario/harness.c
FUZZ_OBJS = $(patsubst %.c,build-fuzz/obj/%.o,\
	$(filter-out resolver/main.c,$(SRCS)) $(FUZZ_HARNESS))
build-fuzz/obj/%.o: %.c $(HEADERS) tests/scenario/harness.h
	@mkdir -p $(dir $@)
	clang $(subst -fsanitize=fuzzer,-fsanitize=fuzzer-no-link,$(FUZZ_CFLAGS)) \
		-Itests/scenario -c -o $@ $<
build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_OBJS) $(HEADERS) \
		tests/scenario/harness.h
	clang $(FUZZ_CFLAGS) -Itests/scenario -o $@ $< $(FUZZ_OBJS) $(PKG_LIBS)

FUZZ_BINS = $(patsubst %,build-fuzz/fuzz_%,$(FUZZ_TARGETS))
fuzz-bins: $(FUZZ_BINS)

fuzz-replay:
	$(MAKE) -j$(NPROC) fuzz-bins
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz-replay $$t"; \
		./build-fuzz/fuzz_$$t -runs=0 -artifact_prefix=build-fuzz/ \
			tests/fuzz/corpus/$$t >/dev/null 2>build-fuzz/$$t.log \
		|| { tail -30 build-fuzz/$$t.log; exit 1; }; done

fuzz: $(FUZZ_BINS)
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p build-fuzz/corpus-$$t; \
		./build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) \
			-artifact_prefix=build-fuzz/$$t- \
			build-fuzz/corpus-$$t tests/fuzz/corpus/$$t || exit 1; done

# The committed .clang-format is the style; a diff fails the check.
FORMAT_SRCS = resolver/*.c include/stubborn/*.h tools/*.c tests/unit/*.c \
	tests/unit/*.h tests/fuzz/*.c tests/fuzz/*.h tests/scenario/*.c tests/scenario/*.h
format-check:
	clang-format --dry-run --Werror $(FORMAT_SRCS)

# stubborn against Unbound, dnsdist and dnsmasq, each under the same CPU
# quota, with dnsperf (tests/bench/README.md).  About 10 minutes; the knobs
# are BENCH_* environment variables.  Results in $(BUILD)/bench/.
bench:
	@sh tools/install-deps.sh $(DEPS_BUILD) $(DEPS_BENCH)
	$(MAKE) all
	BUILD=$(BUILD) bash tests/bench/compare.sh

# What an upgrade under load loses: handover, stop-start, SO_REUSEPORT
# overlap (tests/bench/upgrade.sh).  About 40 s.
upgrade-bench:
	@sh tools/install-deps.sh $(DEPS_BUILD) dnsperf unbound python3
	$(MAKE) all
	BUILD=$(BUILD) bash tests/bench/upgrade.sh

# Cache misses over DNS-over-TLS and DNSCrypt next to plain UDP, stubborn
# and Unbound under one CPU quota (tests/bench/encrypted.sh).  About 3 min.
bench-encrypted:
	@sh tools/install-deps.sh $(DEPS_BUILD) dnsperf unbound dnsdist openssl \
		tshark python3
	$(MAKE) all
	BUILD=$(BUILD) bash tests/bench/encrypted.sh

# Instructions per cache miss and per cache hit of the daemon (callgrind),
# and where they go (tests/bench/instr.sh).  About a minute.
bench-instr:
	@sh tools/install-deps.sh $(DEPS_BUILD) valgrind dnsperf
	$(MAKE) all
	BUILD=$(BUILD) bash tests/bench/instr.sh

# The retry-storm scenarios of issue 5, side by side with Unbound.
storm: all
	BUILD=$(BUILD) sh tests/bench/storm.sh

clean:
	rm -rf build build-asan build-tsan build-fuzz

# Installation.  The config goes to $(SYSCONFDIR)/stubborn and is never
# overwritten; the systemd units get the installed paths of the binary and
# the config.  Without DESTDIR, the user stubborn is created at once
# (systemd-sysusers); with it (packaging), at the target's next boot.
PREFIX      ?= /usr/local
DESTDIR     ?=
SYSCONFDIR  ?= /etc
SBINDIR     := $(PREFIX)/sbin
UNITDIR     := $(PREFIX)/lib/systemd/system
SYSUSERSDIR := $(PREFIX)/lib/sysusers.d
CONFDIR     := $(SYSCONFDIR)/stubborn
UNIT_SED    := -e 's|/usr/local/sbin/stubborn|$(SBINDIR)/stubborn|g' \
	-e 's|/etc/stubborn/|$(CONFDIR)/|g'

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(CONFDIR)
	install -m 0755 $(BUILD)/stubborn $(DESTDIR)$(SBINDIR)/stubborn
	install -m 0755 $(BUILD)/stubborn-ctl $(DESTDIR)$(SBINDIR)/stubborn-ctl
	for u in stubborn.service stubborn.socket; do \
		sed $(UNIT_SED) config/$$u >$(DESTDIR)$(UNITDIR)/$$u.tmp && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp && \
		mv $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; done
	install -m 0644 config/stubborn.sysusers $(DESTDIR)$(SYSUSERSDIR)/stubborn.conf
	@if [ -e $(DESTDIR)$(CONFDIR)/stubborn.conf ]; then \
		echo "install: keeping $(DESTDIR)$(CONFDIR)/stubborn.conf" \
			"(the shipped one is config/stubborn.conf)"; \
	else \
		echo "install -m 0644 config/stubborn.conf $(DESTDIR)$(CONFDIR)/stubborn.conf"; \
		install -m 0644 config/stubborn.conf $(DESTDIR)$(CONFDIR)/stubborn.conf; \
	fi
	@if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null 2>&1; then \
		echo "systemd-sysusers $(SYSUSERSDIR)/stubborn.conf"; \
		systemd-sysusers $(SYSUSERSDIR)/stubborn.conf; \
		echo "install: next: systemctl daemon-reload;" \
			"systemctl enable --now stubborn.service"; \
	fi

# Leaves the user, /var/lib/stubborn and a config that was changed.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/stubborn $(DESTDIR)$(SBINDIR)/stubborn-ctl \
		$(DESTDIR)$(UNITDIR)/stubborn.service \
		$(DESTDIR)$(UNITDIR)/stubborn.socket \
		$(DESTDIR)$(SYSUSERSDIR)/stubborn.conf
	@if cmp -s config/stubborn.conf $(DESTDIR)$(CONFDIR)/stubborn.conf; then \
		echo "rm -f $(DESTDIR)$(CONFDIR)/stubborn.conf"; \
		rm -f $(DESTDIR)$(CONFDIR)/stubborn.conf; \
		rmdir $(DESTDIR)$(CONFDIR) 2>/dev/null || true; \
	elif [ -e $(DESTDIR)$(CONFDIR)/stubborn.conf ]; then \
		echo "uninstall: keeping $(DESTDIR)$(CONFDIR)/stubborn.conf (changed)"; \
	fi
