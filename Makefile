# slmc - model compression for small language models.
#   make            build build/slmc
#   make check      install missing packages, check the layering, run unit + end-to-end tests, then
#                   again under ASan+UBSan
#   make demo       install missing packages, run the main job on the built-in default model
#   make bench      benchmarks (bench/*.sh), figures beside a baseline
#   make fuzz       libFuzzer harnesses (clang), FUZZ_SECONDS each
#   make install    PREFIX=/usr/local DESTDIR=
CC ?= cc
PREFIX ?= /usr/local
BUILD ?= build
PKGS := zlib libzstd hdf5 jansson libpcre2-8 yaml-0.1
SAN ?=

# pkg-config is asked when a build starts. `make check` and `make demo` first install missing
# packages (scripts/bootstrap.sh) and then build in a new make, so the flags are read after the
# install; a plain `make` with packages missing stops with a message naming them.
PKG_MISSING := $(shell for p in $(PKGS); do pkg-config --exists $$p 2>/dev/null || echo $$p; done)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# Open MPI is optional: found with pkg-config (Debian's libopenmpi-dev), MPI=0 builds without it.
# Without it slmc runs as one process and refuses an mpirun start of several ranks (comm/comm.h).
MPI ?= $(shell pkg-config --exists ompi-c 2>/dev/null && echo 1 || echo 0)
ifeq ($(MPI),1)
MPI_CFLAGS := -DSLMC_MPI $(shell pkg-config --cflags ompi-c 2>/dev/null)
MPI_LIBS := $(shell pkg-config --libs ompi-c 2>/dev/null)
endif
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)

OPT ?= -O2
CFLAGS ?= $(OPT) -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp $(SAN) $(CFLAGS) $(PKG_CFLAGS) $(MPI_CFLAGS) -I.
ALL_LDFLAGS := -fopenmp $(SAN) $(LDFLAGS)
LIBS := $(PKG_LIBS) $(MPI_LIBS) -lm

LAYERS := codec formats comm eval quant distill prune pipeline
LIB_SRC := $(foreach d,$(LAYERS),$(wildcard $(d)/*.c))
CLI_SRC := $(wildcard cli/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_HELPER_OBJ := $(BUILD)/tests/testutil.o
# the Hugging Face reference forward pass (tests/ref_hf.h), for the suites that check against it
TEST_HELPER_OBJ += $(BUILD)/tests/ref_hf.o
.SECONDARY: $(BUILD)/tests/ref_hf.o

.PHONY: all check unit e2e check-asan check-clang check-deps check-layers demo bench fuzz install clean bootstrap

all: $(BUILD)/slmc

bootstrap:
	@sh scripts/bootstrap.sh

# Stop before compiling when a library is missing (the compiler's "hdf5.h: No such file" says less).
check-deps:
	@if [ -n "$(strip $(PKG_MISSING))" ]; then \
	    echo "slmc: pkg-config finds no $(strip $(PKG_MISSING)): run 'make bootstrap' (installs the Debian packages) or install them" >&2; \
	    exit 1; fi

$(BUILD)/%.o: %.c $(wildcard */*.h) | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libslmc.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/slmc: $(CLI_OBJ) $(BUILD)/libslmc.a
	$(CC) $(ALL_LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libslmc.a $(LIBS)

$(BUILD)/tests/testutil.o: tests/testutil.c tests/testutil.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -c $< -o $@

# bench/tile.c: the float tile beside its ceiling (bench/tile.sh)
$(BUILD)/bench_tile: bench/tile.c $(BUILD)/libslmc.a
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(BUILD)/libslmc.a $(LIBS)

$(BUILD)/tests/test_%: tests/test_%.c $(TEST_HELPER_OBJ) $(BUILD)/libslmc.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(TEST_HELPER_OBJ) $(BUILD)/libslmc.a $(CHECK_LIBS) $(LIBS)

# Unit tests (Check) and end-to-end tests of the binary; prints "N passed, N failed" last.
unit: $(TEST_BIN) $(BUILD)/slmc
	@sh tests/run_tests.sh $(BUILD)

# The builds compile on every core (JOBS); the tests themselves run one at a time.
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
check: bootstrap
	@$(MAKE) --no-print-directory check-layers
	@$(MAKE) --no-print-directory -j$(JOBS) check-clang
	@$(MAKE) --no-print-directory -j$(JOBS) $(TEST_BIN) $(BUILD)/slmc
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=build-asan OPT=-O1 SAN="$(ASAN_FLAGS)" build-asan/slmc \
	    $(TEST_BIN:$(BUILD)/%=build-asan/%)
	@$(MAKE) --no-print-directory check-asan

# No file includes a header from a layer above its own (docs/architecture.md), nor a .c file.
check-layers:
	@sh scripts/check_layers.sh

# Warnings are errors with clang too: build everything with it when it is installed.
check-clang:
	@if command -v clang >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory -s CC=clang BUILD=build-clang all $(TEST_BIN:$(BUILD)/%=build-clang/%) build-clang/bench_tile && \
	    echo "clang: build clean with -Wall -Wextra -Werror"; \
	else echo "SKIP clang build: clang is not installed"; fi

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build folder.
ASAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
check-asan:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 SAN="$(ASAN_FLAGS)" unit

demo: bootstrap
	@$(MAKE) --no-print-directory $(BUILD)/slmc
	@sh scripts/demo.sh $(BUILD)

bench: $(BUILD)/slmc $(BUILD)/bench_tile
	@for b in bench/*.sh; do sh $$b $(BUILD) || exit 1; done

FUZZ_SECONDS ?= 60
fuzz:
	@sh scripts/bootstrap.sh clang libclang-rt-14-dev libomp-dev
	@sh fuzz/run.sh $(FUZZ_SECONDS)

install: $(BUILD)/slmc
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BUILD)/slmc $(DESTDIR)$(PREFIX)/bin/slmc

clean:
	rm -rf build build-asan build-clang build-fuzz demo-out
