# Shared by examples/demo.sh, packaging/test-deb.sh and
# packaging/test-ansible.sh (sourced): a throwaway docker-registry on a free
# loopback port with two-platform control-plane images pushed by skopeo, and
# a kubeadm-style manifest directory that points at it.
# Needs: WORK (a temp dir the caller removes), docker-registry, skopeo, curl.

START=${START:-$SECONDS}
step() { printf '\n== [%ss] %s\n' "$((SECONDS - START))" "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# start_registry: sets REG (host:port) and REG_PID.
start_registry() {
  local port
  for port in $(seq 5400 5499); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break; done
  REG="127.0.0.1:$port"
  cat > "$WORK/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/storage}}
http: {addr: $REG}
YAML
  docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do curl -fs "http://$REG/v2/" >/dev/null && return 0; sleep 0.1; done
  fail "registry on $REG did not start: $(cat "$WORK/registry.log")"
}

_blob() { local d s; d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c%s "$1"); mv "$1" "$LAYOUT/blobs/sha256/$d"; echo "$d $s"; }

# push_image NAME TAG: a two-platform OCI index, pushed to $REG.
push_image() {
  LAYOUT="$WORK/layout-$1"; mkdir -p "$LAYOUT/blobs/sha256"
  local entries="" arch L LS C CS M MS I IS
  for arch in amd64 arm64; do
    mkdir -p "$WORK/rootfs"; echo "$1 $2 $arch" > "$WORK/rootfs/hello"
    tar -C "$WORK/rootfs" --mtime=@0 --owner=0 --group=0 -cf "$WORK/layer" hello
    read -r L LS < <(_blob "$WORK/layer")
    printf '{"architecture":"%s","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$arch" "$L" > "$WORK/config"
    read -r C CS < <(_blob "$WORK/config")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' "$C" "$CS" "$L" "$LS" > "$WORK/manifest"
    read -r M MS < <(_blob "$WORK/manifest")
    entries+="${entries:+,}{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$M\",\"size\":$MS,\"platform\":{\"architecture\":\"$arch\",\"os\":\"linux\"}}"
  done
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' "$entries" > "$WORK/index"
  read -r I IS < <(_blob "$WORK/index")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' "$I" "$IS" "$2" > "$LAYOUT/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' > "$LAYOUT/oci-layout"
  skopeo copy -q --all --insecure-policy --dest-tls-verify=false "oci:$LAYOUT:$2" "docker://$REG/$1:$2"
}

# push_control_plane: the images examples/manifests refers to.
push_control_plane() {
  push_image kube-apiserver v1.31.0
  push_image kube-controller-manager v1.31.0
  push_image kube-scheduler v1.31.0
  push_image etcd 3.5.16-0
}

# fixture_manifests DIR: examples/manifests with REGISTRY replaced by $REG.
fixture_manifests() {
  local f
  mkdir -p "$1"
  for f in examples/manifests/*.yaml; do
    sed "s|REGISTRY|$REG|" "$f" > "$1/$(basename "$f")"
  done
}

# tree_sum DIR: one line per file with mode, owner, mtime and content hash,
# so "untouched" means untouched.
tree_sum() {
  (cd "$1" && find . -printf '%p %m %u:%g %T@ %s\n' | sort &&
    find . -type f -print0 | sort -z | xargs -0r sha256sum)
}
