#!/bin/sh
# fuzz.sh - build the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang,
# ASan and UBSan, then run each over its committed seed corpus for
# FUZZ_SECONDS (default 20) seconds. New inputs go to build-fuzz/corpus/
# (or FUZZ_CORPUS), never into the committed corpus; a crash leaves its
# input in build-fuzz/crashes/<target>/ and makes the script exit non-zero.
# FUZZ_RUNS_<target>=N stops that target after N inputs: with a fixed
# FUZZ_SEED and an empty FUZZ_CORPUS every run then tries the same inputs,
# and a slower machine tries a prefix of them (make test).
#
#   scripts/fuzz.sh                 build and run every target
#   scripts/fuzz.sh manifest key    only these targets
#   FUZZ_SECONDS=600 scripts/fuzz.sh
#   FUZZ_SEED=1 FUZZ_RUNS_key=1000 scripts/fuzz.sh key
#                                   the same 1000 inputs each run
#   FUZZ_BUILD_ONLY=1 scripts/fuzz.sh
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${FUZZ_BUILD:-$ROOT/build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-20}
SEED=${FUZZ_SEED:-0} # 0: libFuzzer picks one
CC=${FUZZ_CC:-clang}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -std=c11 $SAN"
LIBS="$(pkg-config --libs libzstd lmdb hiredis) -lpthread -ldl"

command -v "$CC" >/dev/null || { echo "fuzz: $CC not found" >&2; exit 2; }

# The library, instrumented for coverage but without libFuzzer's main.
cmake -S "$ROOT" -B "$OUT/lib" -DCMAKE_C_COMPILER="$CC" \
    -DMITHRIL_PYTHON=OFF -DMITHRIL_TESTS=OFF -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link $SAN -fno-omit-frame-pointer" \
    >/dev/null
cmake --build "$OUT/lib" -j "${FUZZ_JOBS:-2}" --target mithril_static \
    >"$OUT/lib/build.log" 2>&1 || { tail -30 "$OUT/lib/build.log"; exit 2; }
LIB="$OUT/lib/libmithril.a"

# The CLI's command functions (not main.c) for fuzz_cli.
mkdir -p "$OUT/cli"
CLI_OBJS=""
for src in "$ROOT"/cli/*.c; do
    name=$(basename "$src" .c)
    [ "$name" = main ] && continue
    obj="$OUT/cli/$name.o"
    $CC $CFLAGS -fsanitize=fuzzer-no-link -I"$ROOT/include" \
        -I"$ROOT/src" -I"$ROOT/cli" -c "$src" -o "$obj"
    CLI_OBJS="$CLI_OBJS $obj"
done

all=$(cd "$ROOT/tests/fuzz" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')
targets=${*:-$all}

for t in $targets; do
    extra=""
    [ "$t" = cli ] && extra="$CLI_OBJS -Wl,--wrap=exit"
    # shellcheck disable=SC2086
    $CC $CFLAGS -fsanitize=fuzzer -I"$ROOT/include" -I"$ROOT/src" \
        -I"$ROOT/cli" -I"$ROOT/tests/fuzz" "$ROOT/tests/fuzz/fuzz_$t.c" \
        $extra "$LIB" $LIBS -o "$OUT/fuzz_$t"
done
echo "fuzz: built $(echo $targets | wc -w) targets in $OUT"
[ "${FUZZ_BUILD_ONLY:-0}" = 1 ] && exit 0

status=0
for t in $targets; do
    seeds="$ROOT/tests/fuzz/corpus/$t"
    work="${FUZZ_CORPUS:-$OUT/corpus}/$t"
    eval "runs_max=\${FUZZ_RUNS_$t:--1}"
    crashes="$OUT/crashes/$t"
    mkdir -p "$work" "$crashes"
    log="$OUT/fuzz_$t.log"
    if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1 \
        "$OUT/fuzz_$t" -max_total_time="$SECONDS_EACH" -runs="$runs_max" \
        -seed="$SEED" -timeout=20 -rss_limit_mb=2048 -max_len=65536 -close_fd_mask=3 \
        -artifact_prefix="$crashes/" "$work" "$seeds" >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
    fi
    # One summary line per target: runs, corpus size, result.
    runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' || true)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+' || true)
    echo "fuzz $t runs ${runs:-?} cov ${cov:-?} seconds $SECONDS_EACH" \
         "corpus $(ls "$work" | wc -l) result $result"
    [ "$result" = ok ] || tail -40 "$log"
done
exit $status
