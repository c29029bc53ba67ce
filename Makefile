# stubborn — build, test and run.  `make run` and `make check` install the
# Debian packages they need when they are missing (see DEPS below).

CC       ?= cc
BUILD    ?= build
SANITIZER ?=
PKGS     := libevent libevent_pthreads ldns libsodium

CFLAGS_BASE := -std=gnu11 -g -O2 -Wall -Wextra -Werror -Wshadow \
	-Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter \
	-D_GNU_SOURCE -Iinclude
ifeq ($(SANITIZER),address)
  BUILD := build-asan
  CFLAGS_BASE += -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
endif
ifeq ($(SANITIZER),thread)
  BUILD := build-tsan
  CFLAGS_BASE += -O1 -fsanitize=thread
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
TOOLS    := $(BUILD)/fakeup
HEADERS  := $(wildcard include/stubborn/*.h)

# Debian packages: building, then testing.
DEPS_BUILD := gcc make pkg-config libevent-dev libldns-dev libsodium-dev
DEPS_TEST  := check bind9-dnsutils knot-dnsutils dnsperf nsd unbound dnsdist \
	valgrind iproute2 util-linux procps clang clang-format libclang-rt-14-dev

.PHONY: all run check unit integration check-asan check-valgrind fuzz storm \
	deps deps-test clean format-check bench

all: $(BUILD)/stubborn $(TOOLS)

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
	BUILD=$(BUILD) sh tests/integration/run.sh

check: deps-test
	sh tools/check-layers.sh
	$(MAKE) format-check
	$(MAKE) all unit
	$(MAKE) integration
	$(MAKE) check-config-files
	$(MAKE) check-asan
	$(MAKE) check-valgrind
	$(MAKE) fuzz-replay

check-config-files: all
	BUILD=$(BUILD) sh tests/config/run.sh

check-asan:
	$(MAKE) SANITIZER=address all unit
	$(MAKE) SANITIZER=address integration

check-valgrind: all
	BUILD=$(BUILD) VALGRIND=1 sh tests/integration/run.sh

# Fuzzing: replay the committed corpora (every check) or fuzz for
# FUZZ_SECONDS per target (make fuzz).
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS = -std=gnu11 -g -O1 -D_GNU_SOURCE -Iinclude $(PKG_CFLAGS) \
	-fsanitize=fuzzer,address,undefined
build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(SRCS) $(HEADERS)
	@mkdir -p build-fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< $(filter-out resolver/main.c,$(SRCS)) $(PKG_LIBS)

fuzz-replay: $(patsubst %,build-fuzz/fuzz_%,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz-replay $$t"; \
		./build-fuzz/fuzz_$$t -runs=0 -artifact_prefix=build-fuzz/ \
			tests/fuzz/corpus/$$t >/dev/null 2>build-fuzz/$$t.log \
		|| { tail -30 build-fuzz/$$t.log; exit 1; }; done

fuzz: $(patsubst %,build-fuzz/fuzz_%,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p build-fuzz/corpus-$$t; \
		./build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) \
			-artifact_prefix=build-fuzz/$$t- \
			build-fuzz/corpus-$$t tests/fuzz/corpus/$$t || exit 1; done

# The committed .clang-format is the style; a diff fails the check.
FORMAT_SRCS = resolver/*.c include/stubborn/*.h tools/*.c tests/unit/*.c \
	tests/unit/*.h tests/fuzz/*.c
format-check:
	clang-format --dry-run --Werror $(FORMAT_SRCS)

bench: all
	BUILD=$(BUILD) sh tests/bench/dnsperf.sh

# The retry-storm scenarios of issue 5, side by side with Unbound.
storm: all
	BUILD=$(BUILD) sh tests/bench/storm.sh

clean:
	rm -rf build build-asan build-tsan build-fuzz
