#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one
# after another, and prints how many inputs each executed and what it
# found. Crashing inputs land in fuzz/artifacts/<target>/; keep each one as
# a regression test in tests/it/fuzz_regressions.rs once fixed.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain (`rustup toolchain install nightly`) and
# cargo-fuzz (`cargo install cargo-fuzz`). The first run builds the
# instrumented tree (about 25 minutes cold on 2 cores). The corpus grows in
# fuzz/corpus/<target>/ (not committed), seeded from fuzz/seeds/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs the nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs cargo-fuzz: cargo install cargo-fuzz" >&2
    exit 2
fi
cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
# No sanitizer: ferry's parsers and readers are safe Rust, and without
# AddressSanitizer each target runs about twice as many inputs.
flags=(-s none --release)
cargo +nightly fuzz build "${flags[@]}"
summary=()
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log=$(mktemp)
    echo "== $t: ${seconds}s"
    # -timeout: an input that takes longer is a finding (a hang);
    # -rss_limit_mb: one that needs more memory is one too.
    dirs=("corpus/$t")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    if cargo +nightly fuzz run "${flags[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        verdict=ok
    else
        verdict="FOUND (see fuzz/artifacts/$t/)"
        status=1
        tail -40 "$log"
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    corpus=$(find "corpus/$t" -type f | wc -l)
    summary+=("$(printf '%-16s %12s executions  %6s corpus  %s' "$t" "$runs" "$corpus" "$verdict")")
    rm -f "$log"
done
echo
printf '%s\n' "${summary[@]}"
exit $status
