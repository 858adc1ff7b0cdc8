# mithril-cache: build, test, demo, bench. `make help` lists the targets.

BUILD       ?= build
VENV        ?= .venv
PY          := $(VENV)/bin/python
JOBS        ?= $(shell nproc)
CMAKE_FLAGS ?=
PYTHON_SYS  ?= python3
export PYTHONPATH = $(CURDIR)/python:$(CURDIR)/$(BUILD)/python
export MITHRIL_BIN = $(CURDIR)/$(BUILD)/mithril

.PHONY: all build deps venv test test-c test-py demo bench bench-quick lint \
        format sanitize tsan valgrind stress fuzz clean help

all: build

help:
	@echo "make          build libmithril, build/mithril and the extension"
	@echo "make test     C unit tests (ctest), then CLI and Python tests"
	@echo "make demo     real models compiled cold, then warm through mithril"
	@echo "make bench    every benchmark beside its anchor (bench-quick: short)"
	@echo "make lint     clang-format check and no bare TODO/FIXME/XXX"
	@echo "make sanitize C tests under ASan+UBSan; make tsan: ThreadSanitizer"
	@echo "make stress   crash, concurrency and fuzz tests at full counts"
	@echo "make fuzz     every fuzz target for FUZZ_SECONDS (default 20) each"
	@echo "make valgrind C tests under valgrind, no leaks"

deps:
	@scripts/install-deps.sh

$(VENV)/.done: scripts/install-venv.sh
	@PYTHON_SYS=$(PYTHON_SYS) scripts/install-venv.sh $(VENV)
	@touch $@

venv: $(VENV)/.done

build: | venv
	@test -f $(BUILD)/CMakeCache.txt || cmake -S . -B $(BUILD) \
	  -DPython3_EXECUTABLE=$(CURDIR)/$(PY) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

test: build
	$(MAKE) test-c
	$(MAKE) test-py

test-c: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-py: build
	$(PY) -m pytest -q tests/cli tests/python tests/reliability

demo: build
	$(PY) demo/demo.py --dynamo

# Benchmarks run an optimized build of their own.
bench bench-quick: BUILD = build-bench
bench bench-quick: CMAKE_FLAGS = -DCMAKE_BUILD_TYPE=Release

bench: build
	$(PY) bench/run.py

bench-quick: build
	$(PY) bench/run.py --quick

LINT_FILES = $(shell git ls-files '*.c' '*.h')

lint:
	@command -v clang-format >/dev/null || scripts/install-deps.sh
	clang-format --dry-run --Werror $(LINT_FILES)
	@if git grep -nE '\b(TODO|FIXME|XXX)\b' -- '*.c' '*.h' '*.py' \
	    '*.sh' '*.txt' '*.md' ':!docs/LIMITATIONS.md' ; then \
	  echo "lint: bare TODO/FIXME/XXX marks (write a Limitation: instead)"; \
	  exit 1; fi
	@echo "lint: ok"

format:
	clang-format -i $(LINT_FILES)

sanitize:
	cmake -S . -B build-asan -DMITHRIL_SANITIZE=ON -DMITHRIL_PYTHON=OFF \
	  -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 \
	  UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

tsan:
	cmake -S . -B build-tsan -DMITHRIL_TSAN=ON -DMITHRIL_PYTHON=OFF \
	  -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-tsan -j $(JOBS) --target test_threads test_remote
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --output-on-failure -R "thread|remote"

# Every C test under valgrind: no invalid access, no definite or indirect
# leak (memory still reachable at exit is not a leak; children the tests
# fork and _exit are not checked: an error in the parent's log fails the
# run, and so does a failing test). valgrind cannot reserve the index's
# 64 GiB LMDB map: a preload shim caps it at 16 GiB for these runs.
valgrind: build
	@command -v valgrind >/dev/null || scripts/install-deps.sh
	cc -shared -fPIC -O1 -o $(BUILD)/valgrind_mapsize.so \
	  tests/reliability/valgrind_mapsize.c -ldl
	@set -e; for t in $(BUILD)/test_*; do \
	  [ -x "$$t" ] || continue; echo "valgrind $$t"; \
	  log=$$t.valgrind.log; \
	  MITHRIL_SOURCE_DIR=$(CURDIR) MITHRIL_BIN=$(CURDIR)/$(BUILD)/mithril \
	  LD_PRELOAD=$(CURDIR)/$(BUILD)/valgrind_mapsize.so \
	  valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
	    --child-silent-after-fork=yes --log-file=$$log "$$t" >/dev/null; \
	  if [ -s $$log ]; then cat $$log; exit 1; fi; done; \
	  echo "valgrind: ok"

stress: build
	cd $(BUILD) && MITHRIL_STRESS=1 ctest --output-on-failure -R 'faults|thread'
	MITHRIL_STRESS=1 MITHRIL_FUZZ_SECONDS=$${FUZZ_SECONDS:-60} \
	  MITHRIL_FUZZ_SEED=$${FUZZ_SEED:-0} $(PY) -m pytest \
	  -q -s tests/reliability tests/python/test_torch_concurrent.py

fuzz:
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-20} scripts/fuzz.sh

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
