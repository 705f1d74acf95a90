#!/usr/bin/env bash
# The README's one command on a fresh clone (issue 21): clones this checkout's HEAD into a
# temporary directory, runs `cargo run --release -- up` there in the background (nothing built
# first, its own target directory), waits for its readiness line, writes and reads vol0 through
# the CLI and compares, then stops it with SIGTERM and checks that it exits cleanly.
#
# It listens on 127.0.0.1:0 rather than the default 7070 (a shared machine may run another
# cluster there); the verbs find it through the cluster file in its data directory either way.
#
# Environment:
#   DAGRAID_UP_READY_TIMEOUT  seconds to wait for `dagraid up: running`, build included [2700]
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
timeout="${DAGRAID_UP_READY_TIMEOUT:-2700}"
work="$(mktemp -d "${TMPDIR:-/tmp}/dagraid-fresh-clone.XXXXXX")"
up_pid=""

say() { printf 'fresh-clone-up: %s\n' "$*"; }
fail() {
    printf 'fresh-clone-up: error: %s\n' "$*" >&2
    if [ -f "$work/up.out" ]; then
        printf -- '--- output of dagraid up (last 60 lines):\n' >&2
        tail -n 60 "$work/up.out" >&2
    fi
    exit 1
}
cleanup() {
    if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
        kill -TERM "$up_pid" 2>/dev/null || true
        wait "$up_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

commit="$(git -C "$src" rev-parse HEAD)"
say "cloning $commit into $work/dagraid"
git clone --quiet --no-checkout "$src" "$work/dagraid"
git -C "$work/dagraid" checkout --quiet "$commit"

data="$work/data"
cd "$work/dagraid"
started=$SECONDS
say "cargo run --release -- up --data-dir $data --listen 127.0.0.1:0 --nbd-listen 127.0.0.1:0 (in the background)"
# Its own target directory: nothing built before, whatever the environment says.
env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR -u DAGRAID_BIN_DIR \
    cargo run --release -- up --data-dir "$data" --listen 127.0.0.1:0 --nbd-listen 127.0.0.1:0 \
    >"$work/up.out" 2>&1 &
up_pid=$!

# Readiness is the line, never a guess: poll the output for it while the process lives.
until grep -q '^dagraid up: running' "$work/up.out"; do
    kill -0 "$up_pid" 2>/dev/null || { wait "$up_pid" || true; fail "cargo run -- up exited before it was ready"; }
    [ $((SECONDS - started)) -lt "$timeout" ] || fail "no readiness line within ${timeout} s"
    sleep 2
done
say "ready after $((SECONDS - started)) s (release build from nothing included)"

dagraid="$work/dagraid/target/release/dagraid"
[ -x "$dagraid" ] || fail "no $dagraid"
head -c 3145728 /dev/urandom >"$work/in.bin"
"$dagraid" --data-dir "$data" write vol0 --offset 4096 "$work/in.bin" || fail "write failed"
"$dagraid" --data-dir "$data" read vol0 --offset 4096 --length 3145728 -o "$work/back.bin" \
    || fail "read failed"
cmp "$work/in.bin" "$work/back.bin" || fail "the bytes read back differ from those written"
echo hello | "$dagraid" --data-dir "$data" write vol0 --offset 0 >/dev/null || fail "write of stdin failed"
[ "$("$dagraid" --data-dir "$data" read vol0 --offset 0 --length 6)" = "hello" ] || fail "read of hello failed"
"$dagraid" --data-dir "$data" status vol0 | grep -q 'optimal' || fail "vol0 is not optimal"
say "wrote and read back 3 MiB and a line through the CLI"

# The NBD export `up` prints: the same bytes through nbdcopy, where the client is installed.
uri=$(grep -o 'nbd://[0-9.:]*/vol0' "$work/up.out" | head -n 1)
[ -n "$uri" ] || fail "dagraid up printed no NBD address for vol0"
if command -v nbdcopy >/dev/null 2>&1; then
    nbdcopy "$uri" "$work/vol0.img" || fail "nbdcopy from $uri failed"
    cmp <(tail -c +4097 "$work/vol0.img" | head -c 3145728) "$work/in.bin" \
        || fail "the bytes read over NBD differ from those written"
    say "read the same bytes back over NBD ($uri)"
fi

kill -TERM "$up_pid"
status=0
wait "$up_pid" || status=$?
up_pid=""
[ "$status" -eq 0 ] || fail "dagraid up exited with status $status after SIGTERM"
grep -q '^dagraid up: stopped' "$work/up.out" || fail "no 'dagraid up: stopped' line"
say "stopped cleanly by SIGTERM; $((SECONDS - started)) s in all"
