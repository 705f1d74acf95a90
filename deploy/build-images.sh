#!/usr/bin/env bash
# Builds dagraid's container images from one static release build:
#
#   dagraid-coordinator:TAG  /dagraid-coordinator (+ /dagraid for the health check)
#   dagraid-node:TAG         /dagraid-node        (+ /dagraid for the health check)
#   dagraid-cli:TAG          /dagraid
#
# All three are FROM scratch: nothing is pulled, no registry is needed. The binaries are linked
# statically against glibc (STACK.md, "Containers without a registry"), built once by one cargo
# invocation in a target directory of their own, so this never fights the debug builds.
#
# Needs: the Rust toolchain (cargo, rustc, and the C toolchain's static glibc, libc6-dev on
# Debian, which a Rust toolchain on Linux has anyway) and a running Docker Engine.
#
# Environment:
#   DAGRAID_IMAGE_TAG          tag of the three images            [latest]
#   DAGRAID_DOCKER_TARGET_DIR  cargo target directory of the build [<repo>/target/docker]
#   DAGRAID_RUST_TARGET        target triple, a *-linux-gnu one    [the host's]
#
# Usage: deploy/build-images.sh   (then: cd deploy && docker compose up -d; see deploy/README.md)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
tag="${DAGRAID_IMAGE_TAG:-latest}"
target_dir="${DAGRAID_DOCKER_TARGET_DIR:-$root/target/docker}"

say() { printf 'build-images: %s\n' "$*"; }
fail() { printf 'build-images: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

command -v cargo >/dev/null || fail "cargo not found: install the Rust toolchain (rustup)"
command -v docker >/dev/null || fail "docker not found: install Docker Engine"
docker info >/dev/null 2>&1 || fail "the Docker Engine does not answer (docker info failed): is dockerd running, may this user use it?"

rust_target="${DAGRAID_RUST_TARGET:-$(rustc -vV | sed -n 's/^host: //p')}"
case "$rust_target" in
    *-linux-gnu) ;;
    *) fail "target $rust_target is not a *-linux-gnu triple: set DAGRAID_RUST_TARGET (e.g. x86_64-unknown-linux-gnu)" ;;
esac
revision="$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
bins=(dagraid-coordinator dagraid-node dagraid)
release="$target_dir/$rust_target/release"
context="$target_dir/image-context"

started="$(now)"
say "static release build of ${bins[*]} for $rust_target in $target_dir"
step="$(now)"
# An explicit --target keeps RUSTFLAGS (crt-static) away from build scripts and proc macros.
(
    cd "$root"
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
        cargo build --release --target "$rust_target" \
        -p dagraid-coordinator -p dagraid-node -p dagraid-cli --bins
)
for bin in "${bins[@]}"; do
    [ -x "$release/$bin" ] || fail "cargo built no $release/$bin"
    if command -v file >/dev/null && ! file "$release/$bin" | grep -q 'static'; then
        fail "$release/$bin is not statically linked: $(file -b "$release/$bin")"
    fi
done
say "binaries built in $(since "$step")"

# The build context: the binaries and an empty data/ directory, nothing else (a few MiB sent to
# the engine, not the repository).
rm -rf "$context"
mkdir -p "$context/data"
for bin in "${bins[@]}"; do
    cp "$release/$bin" "$context/$bin"
done

for image in coordinator node cli; do
    step="$(now)"
    say "image dagraid-$image:$tag from deploy/docker/$image.Dockerfile (FROM scratch)"
    docker build --quiet \
        --file "$here/docker/$image.Dockerfile" \
        --build-arg "REVISION=$revision" \
        --label "org.opencontainers.image.version=$tag" \
        --tag "dagraid-$image:$tag" \
        "$context" >/dev/null
    say "  built in $(since "$step"): $(docker image inspect --format '{{.Id}} {{.Size}} bytes' "dagraid-$image:$tag")"
done

say "done in $(since "$started"): dagraid-coordinator:$tag dagraid-node:$tag dagraid-cli:$tag (revision $revision)"
