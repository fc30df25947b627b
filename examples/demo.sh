#!/usr/bin/env bash
# A self-contained run of staticpin's main job: start a throwaway registry on
# 127.0.0.1, push multi-arch control-plane images to it, copy the example
# kubeadm manifests into a temp dir, show the --dry-run diff, pin them, and
# prove a second run changes nothing. Touches nothing outside a temp dir
# (and target/, where cargo builds).
set -euo pipefail
cd "$(dirname "$0")/.."

START=$SECONDS
step() { printf '\n== [%ss] %s\n' "$((SECONDS - START))" "$*"; }

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

# A free loopback port, without python or ss.
for PORT in $(seq 5300 5399); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || break; done
REG="127.0.0.1:$PORT"
cat > "$WORK/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/storage}}
http: {addr: $REG}
YAML
step "starting a throwaway registry on $REG"
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 50); do curl -fs "http://$REG/v2/" >/dev/null && break; sleep 0.1; done

# blob FILE -> prints "sha256-hex size" after moving FILE into the layout.
blob() { local d s; d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c%s "$1"); mv "$1" "$LAYOUT/blobs/sha256/$d"; echo "$d $s"; }

# image NAME TAG: a two-platform OCI index in an OCI layout, pushed with skopeo.
image() {
  LAYOUT="$WORK/layout-$1"; mkdir -p "$LAYOUT/blobs/sha256"
  local entries="" arch
  for arch in amd64 arm64; do
    mkdir -p "$WORK/rootfs"; echo "$1 $2 $arch" > "$WORK/rootfs/hello"
    tar -C "$WORK/rootfs" --mtime=@0 --owner=0 --group=0 -cf "$WORK/layer" hello
    read -r L LS < <(blob "$WORK/layer")
    printf '{"architecture":"%s","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$arch" "$L" > "$WORK/config"
    read -r C CS < <(blob "$WORK/config")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' "$C" "$CS" "$L" "$LS" > "$WORK/manifest"
    read -r M MS < <(blob "$WORK/manifest")
    entries+="${entries:+,}{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$M\",\"size\":$MS,\"platform\":{\"architecture\":\"$arch\",\"os\":\"linux\"}}"
  done
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' "$entries" > "$WORK/index"
  read -r I IS < <(blob "$WORK/index")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' "$I" "$IS" "$2" > "$LAYOUT/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' > "$LAYOUT/oci-layout"
  skopeo copy -q --all --insecure-policy --dest-tls-verify=false "oci:$LAYOUT:$2" "docker://$REG/$1:$2"
}

step "pushing two-platform control-plane images to the throwaway registry $REG"
image kube-apiserver v1.31.0
image kube-controller-manager v1.31.0
image kube-scheduler v1.31.0
image etcd 3.5.16-0

mkdir -p "$WORK/manifests"
for f in examples/manifests/*.yaml; do
  sed "s|REGISTRY|$REG|" "$f" > "$WORK/manifests/$(basename "$f")"
done
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
