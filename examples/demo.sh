#!/usr/bin/env bash
# A self-contained run of staticpin's main job: start a throwaway registry on
# 127.0.0.1, push multi-arch control-plane images to it, copy the example
# kubeadm manifests into a temp dir, show the --dry-run diff, pin them, and
# prove a second run changes nothing. Touches nothing outside a temp dir
# (and target/, where cargo builds).
set -euo pipefail
cd "$(dirname "$0")/.."

START=$SECONDS
# The throwaway registry, image push and manifest copy, shared with the
# package tests: start_registry, push_control_plane, fixture_manifests, step.
. packaging/testlib.sh

# Only what this script runs: the registry, skopeo to push, curl to wait for
# the registry, tar for the image layers. (The test suite needs more; that
# is .ci/deps.)
need=(docker-registry skopeo curl tar sha256sum)
missing=()
for t in "${need[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]} (apt: docker-registry skopeo curl tar coreutils)"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    docker-registry skopeo curl tar coreutils ca-certificates >/dev/null
  # The package starts a registry on :5000; this demo brings its own.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
    $SUDO systemctl stop docker-registry || true
  fi
fi

# A debug build: half the compile time of --release, fast enough for four
# manifests, and the same artifacts `cargo test` reuses afterwards.
step "building staticpin (cargo build; the first build compiles ~150 crates, 1-4 minutes)"
cargo build --locked
SP="$PWD/target/debug/staticpin"

WORK=$(mktemp -d /tmp/staticpin-demo.XXXXXX)
cleanup() { [ -n "${REG_PID:-}" ] && kill "$REG_PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

step "starting a throwaway registry"
start_registry
step "pushing two-platform control-plane images to the throwaway registry $REG"
push_control_plane
fixture_manifests "$WORK/manifests"
FLAGS=(--insecure-registry "$REG" --backup-dir "$WORK/backups" --config examples/config.yaml)

step "staticpin pin --dry-run (nothing is written)"
"$SP" pin --dry-run "${FLAGS[@]}" "$WORK/manifests"

step "staticpin pin"
"$SP" pin "${FLAGS[@]}" "$WORK/manifests"

step "staticpin pin --check (no network)"
"$SP" pin --check "${FLAGS[@]}" "$WORK/manifests"

step "second run: nothing to do, no registry asked"
"$SP" pin "${FLAGS[@]}" "$WORK/manifests"

step "backups were kept outside the manifest directory:"
find "$WORK/backups" -type f | sed "s|$WORK|\$WORK|"
step "the manifest directory holds only the manifests:"
ls -A "$WORK/manifests"
step "done"
