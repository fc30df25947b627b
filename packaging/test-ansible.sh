#!/usr/bin/env bash
# The fleet rollout test (issue 12), run by .ci/run as root: runs
# examples/ansible/rollout.yml for real with ansible-core (from PyPI, in a
# venv) against two inventory "nodes" that are both this machine (local
# connection), with the built .deb, a fixture manifest directory per node, a
# local registry, and a TLS stand-in for each node's kube-apiserver /livez.
#
# systemd is not PID 1 here, so `systemctl start staticpin` cannot work: the
# playbook's start step is a variable (staticpin_start_command), and this test
# sets it to `staticpin pin DIR`, the work the service does on start, after
# recording that it ran. Everything else is the playbook as shipped.
#
#  A. a full rollout: both nodes installed, dry-run diff shown, started and
#     pinned, and node 2 started only after node 1's /livez answered ok;
#  B. node 1's apiserver does not come back after the start: the rollout
#     fails and stops there; node 2 is never changed.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
. packaging/testlib.sh

[ "$(id -u)" = 0 ] || fail "run as root: the playbook installs the package"
ANSIBLE_CORE_VERSION=2.19.14
VENV="${STATICPIN_ANSIBLE_VENV:-$PWD/target/venv-ansible}"
WORK=$(mktemp -d /tmp/staticpin-ansible.XXXXXX)
cleanup() {
  for p in "${REG_PID:-}" "${LIVEZ_PID:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  wait 2>/dev/null || true
  dpkg -P staticpin >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
dpkg -P staticpin >/dev/null 2>&1 || true

step "ansible-core $ANSIBLE_CORE_VERSION in $VENV"
if ! "$VENV/bin/ansible-playbook" --version 2>/dev/null | grep "core $ANSIBLE_CORE_VERSION\]" >/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "ansible-core==$ANSIBLE_CORE_VERSION"
fi
"$VENV/bin/ansible-playbook" --version | sed -n 1p

step "build the package"
cargo run --locked --quiet --example staticpin-gen -- target/assets
cargo deb --locked --fast --output "$WORK/staticpin.deb"

step "a local registry with the control-plane images, a TLS /livez stand-in"
start_registry
push_control_plane
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=kube-apiserver-standin -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$WORK/livez.key" -out "$WORK/livez.crt" 2>/dev/null
python3 packaging/livez-standin.py "$WORK/livez.crt" "$WORK/livez.key" "$WORK/events" \
  "$WORK/apiserver-down" "$WORK/livez.port" 2>"$WORK/livez.log" &
LIVEZ_PID=$!
for _ in $(seq 100); do [ -s "$WORK/livez.port" ] && break; sleep 0.1; done
LPORT=$(cat "$WORK/livez.port")
curl -fsS --cacert "$WORK/livez.crt" "https://127.0.0.1:$LPORT/livez" | grep -x ok >/dev/null || fail "livez stand-in"
: > "$WORK/events"

mkdir -p "$WORK/config.d"
cat > "$WORK/config.d/50-test.yaml" <<YAML
# The fleet's drop-in in this test: trust the local plain-HTTP registry.
insecureRegistries: [$REG]
YAML

# inventory LIVEZ_PATH_NODE1: both nodes are this machine.
inventory() {
  cat > "$WORK/inventory.yml" <<YAML
control_plane:
  hosts:
    node1:
      staticpin_manifest_dir: $WORK/node1/manifests
      staticpin_livez_url: https://127.0.0.1:$LPORT$1
    node2:
      staticpin_manifest_dir: $WORK/node2/manifests
      staticpin_livez_url: https://127.0.0.1:$LPORT/livez
  vars:
    ansible_connection: local
    ansible_python_interpreter: /usr/bin/python3
    # Already root; this machine has no sudo.
    ansible_become: false
    staticpin_livez_ca: $WORK/livez.crt
    staticpin_settle_seconds: 0
    staticpin_livez_retries: 2
    staticpin_livez_delay: 1
    # No systemd as PID 1 here: record the start, then do the service's work.
    # (Node 1's start also marks the stand-in apiserver as "down" for run B.)
    staticpin_start_command: >-
      sh -c 'echo "start {{ inventory_hostname }}" >> $WORK/events &&
      touch $WORK/apiserver-down &&
      exec staticpin pin {{ staticpin_manifest_dir }}'
YAML
}
playbook() {
  "$VENV/bin/ansible-playbook" -i "$WORK/inventory.yml" examples/ansible/rollout.yml \
    -e "staticpin_deb=$WORK/staticpin.deb" -e "staticpin_dropins_dir=$WORK/config.d" "$@"
}
pinned() { ! grep -h 'image:' "$1"/*.yaml | grep -v '@sha256:[0-9a-f]\{64\}'; }
unpinned() { ! grep -h 'image:' "$1"/*.yaml | grep '@sha256:' >/dev/null; }

step "A. full rollout over two nodes"
fixture_manifests "$WORK/node1/manifests"
fixture_manifests "$WORK/node2/manifests"
inventory /livez
export ANSIBLE_NOCOLOR=1 ANSIBLE_STDOUT_CALLBACK=default ANSIBLE_LOCALHOST_WARNING=0
playbook | tee "$WORK/run-a.log"
grep -q "image: $REG/kube-apiserver:v1.31.0@sha256:" "$WORK/run-a.log" || fail "the dry-run diff was not shown"
pinned "$WORK/node1/manifests" || fail "node1 not pinned"
pinned "$WORK/node2/manifests" || fail "node2 not pinned"
[ -L /etc/systemd/system/multi-user.target.wants/staticpin.service ] || fail "staticpin.service not enabled"
[ "$(cat /etc/staticpin/config.d/50-test.yaml)" = "$(cat "$WORK/config.d/50-test.yaml")" ] || fail "drop-in not installed"
[ ! -e /var/cache/staticpin-rollout.deb ] || fail "the copied package was left on the node"
# One node at a time: node 2 is checked and started only after node 1's
# apiserver answered /livez after its start.
expected=$(printf '%s\n' "livez /livez" "start node1" "livez /livez" "livez /livez" "start node2" "livez /livez")
[ "$(cat "$WORK/events")" = "$expected" ] || fail "unexpected order: $(cat "$WORK/events")"

step "B. node 1's apiserver does not come back: the rollout stops at node 1"
rm -rf "$WORK/node1" "$WORK/node2" "$WORK/apiserver-down"
fixture_manifests "$WORK/node1/manifests"
fixture_manifests "$WORK/node2/manifests"
node2_before=$(tree_sum "$WORK/node2/manifests")
: > "$WORK/events"
inventory /livez-fails-after-start
rc=0
playbook >"$WORK/run-b.log" 2>&1 || rc=$?
tail -25 "$WORK/run-b.log"
[ "$rc" != 0 ] || fail "the playbook succeeded although node1's /livez failed"
grep -q "start node1" "$WORK/events" || fail "node1 was not started"
! grep -q "node2" "$WORK/events" || fail "the rollout went on to node2"
[ "$node2_before" = "$(tree_sum "$WORK/node2/manifests")" ] || fail "node2's manifests changed"
unpinned "$WORK/node2/manifests" || fail "node2 pinned"

step "test-ansible: both runs passed"
