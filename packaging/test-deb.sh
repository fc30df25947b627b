#!/usr/bin/env bash
# The Debian package test (issue 12), run by .ci/run as root on a disposable
# machine: it builds the .deb, installs, upgrades, removes and purges it for
# real. Steps:
#  1. generate man pages and completions, `cargo deb`;
#  2. lintian: no errors, and no warning that packaging/lintian-overrides
#     does not override;
#  3. dpkg -i; --version; systemd-analyze verify on both units; man -w;
#     the conffile registered; check-config on it; completions present;
#  4. staticpin.service enabled (deb-systemd-helper's symlink) and not
#     started; staticpin-serve.service neither;
#  5. `staticpin pin --dry-run` with the installed binary over a kubeadm-style
#     fixture against a local registry;
#  6. upgrade to a rebuilt package with a bumped version: an edited conffile
#     is kept (and an admin's disable of the unit too);
#  7. remove: binary and units gone, conffile stays; purge: /etc/staticpin and
#     /var/lib/staticpin gone, /etc/kubernetes/manifests untouched.
# Needs cargo-deb, lintian, dpkg-dev, man-db, docker-registry, skopeo (.ci/deps).
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
. packaging/testlib.sh

[ "$(id -u)" = 0 ] || fail "run as root: this test installs the package (dpkg -i)"
WORK=$(mktemp -d /tmp/staticpin-deb.XXXXXX)
KUBE_CREATED=""
cleanup() {
  [ -n "${REG_PID:-}" ] && kill "$REG_PID" 2>/dev/null
  wait 2>/dev/null || true
  dpkg -P staticpin >/dev/null 2>&1 || true
  # Only a fixture this test made is removed, never a real /etc/kubernetes.
  [ -n "$KUBE_CREATED" ] && rm -rf "$KUBE_CREATED"
  rm -rf "$WORK"
}
trap cleanup EXIT

# A leftover from an earlier run would hide what this install does.
dpkg -P staticpin >/dev/null 2>&1 || true
[ ! -e /etc/staticpin ] || fail "/etc/staticpin exists before install and does not belong to a staticpin package"

step "1. generate man pages and completions, cargo deb"
cargo run --locked --quiet --example staticpin-gen -- target/assets
cargo deb --locked --output "$WORK/v1.deb"
DEB="$WORK/v1.deb"
dpkg-deb -I "$DEB"
dpkg-deb -c "$DEB"

step "2. lintian (no errors; every warning overridden)"
# Root is fine on a disposable CI machine; lintian only warns about it.
# (Not --show-overrides: it makes overridden tags fail too.)
rc=0
lintian --fail-on error,warning --display-info "$DEB" >"$WORK/lintian.out" 2>&1 || rc=$?
grep -v 'root privileges' "$WORK/lintian.out" || true
[ "$rc" = 0 ] || fail "lintian exited $rc: an error, or a warning not in packaging/lintian-overrides"
echo "overridden (packaging/lintian-overrides):"; grep -v '^#' packaging/lintian-overrides

step "3. install, and check what was installed"
dpkg -i "$DEB"
staticpin --version
for u in staticpin staticpin-serve; do
  f=/usr/lib/systemd/system/$u.service
  [ -f "$f" ] || fail "$f not installed"
  systemd-analyze verify "$f"
done
man -w staticpin | grep '/usr/share/man/man8/staticpin.8.gz' >/dev/null || fail "man -w staticpin: $(man -w staticpin)"
man -w staticpin-pin >/dev/null
conf=$(dpkg-query -W -f='${Conffiles}' staticpin)
echo "conffiles:$conf"
grep -q '^ /etc/staticpin/config.yaml [0-9a-f]\{32\}$' <<<"$conf" || fail "config.yaml is not a registered conffile"
staticpin check-config /etc/staticpin/config.yaml
staticpin check-config
[ -d /etc/staticpin/config.d ] || fail "/etc/staticpin/config.d missing"
[ -z "$(ls -A /etc/staticpin/config.d)" ] || fail "/etc/staticpin/config.d is not empty"
for f in /usr/share/bash-completion/completions/staticpin \
         /usr/share/zsh/vendor-completions/_staticpin \
         /usr/share/fish/vendor_completions.d/staticpin.fish; do
  grep -q 'staticpin' "$f" || fail "completion $f missing"
done
bash -c '. /usr/share/bash-completion/completions/staticpin && complete -p staticpin' >/dev/null ||
  fail "bash completion does not register"
zcat /usr/share/doc/staticpin/changelog.Debian.gz | sed -n 1p | grep '^staticpin (' >/dev/null || fail "changelog"
grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' \
  /usr/share/doc/staticpin/copyright || fail "copyright is not DEP-5"

step "4. staticpin.service enabled but not started; staticpin-serve.service neither"
wants=/etc/systemd/system/multi-user.target.wants
[ -L "$wants/staticpin.service" ] || fail "staticpin.service not enabled ($wants/staticpin.service missing)"
[ ! -e "$wants/staticpin-serve.service" ] && [ ! -L "$wants/staticpin-serve.service" ] ||
  fail "staticpin-serve.service must not be enabled"
ls -l "$wants/staticpin.service"
# The installed binary running: a process whose executable is /usr/bin/staticpin
# (not a test or build elsewhere on this machine that runs its own copy).
installed_running() {
  local pid
  for pid in $(pgrep -x staticpin || true); do
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/bin/staticpin ] && return 0
  done
  return 1
}
# No systemd as PID 1 here, so deb-systemd-invoke could start nothing anyway;
# on a real node postinst's start = false is what keeps it stopped.
! installed_running || fail "the installed staticpin is running after install"
# Same with systemd: the scripts must carry no start, only try-restart.
dpkg-deb -e "$DEB" "$WORK/control"
! grep -E 'deb-systemd-invoke (start|restart) ' "$WORK/control/postinst" || fail "postinst starts a unit"
grep -q 'deb-systemd-invoke try-restart staticpin-serve.service staticpin.service' "$WORK/control/postinst" ||
  grep -q 'deb-systemd-invoke try-restart staticpin.service staticpin-serve.service' "$WORK/control/postinst" ||
  fail "postinst does not try-restart both units on upgrade"

step "5. staticpin pin --dry-run with the installed binary, against a local registry"
start_registry
push_control_plane
fixture_manifests "$WORK/manifests"
before=$(tree_sum "$WORK/manifests")
/usr/bin/staticpin pin --dry-run --insecure-registry "$REG" "$WORK/manifests" | tee "$WORK/dry-run.out"
grep -q "image: $REG/kube-apiserver:v1.31.0@sha256:[0-9a-f]\{64\}" "$WORK/dry-run.out" || fail "dry run shows no pinned kube-apiserver"
[ "$before" = "$(tree_sum "$WORK/manifests")" ] || fail "--dry-run changed the manifests"
[ ! -e /var/lib/staticpin/backups ] || [ -z "$(ls -A /var/lib/staticpin/backups)" ] || fail "--dry-run made a backup"

step "6. upgrade to a rebuilt package with a bumped version; edits are kept"
# Same binary, new version; the package's own conffile also changes, so dpkg
# must choose, and --force-confold keeps the admin's file.
cargo deb --locked --no-build --deb-version 0.1.0-2 --output "$WORK/v2-built.deb"
dpkg-deb -R "$WORK/v2-built.deb" "$WORK/v2"
echo "# revised in 0.1.0-2" >> "$WORK/v2/etc/staticpin/config.yaml"
(cd "$WORK/v2" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
  xargs -0 md5sum > DEBIAN/md5sums)
dpkg-deb --root-owner-group -b "$WORK/v2" "$WORK/v2.deb" >/dev/null
sed -i 's/^# keepBackups: 20$/keepBackups: 7/' /etc/staticpin/config.yaml
grep -q '^keepBackups: 7$' /etc/staticpin/config.yaml || fail "could not edit the conffile"
echo 'retries: 5' > /etc/staticpin/config.d/50-site.yaml
# The admin's decision about the unit is kept, like their file. Without
# systemd as PID 1, removing the symlink is what `systemctl disable` does
# (deb-systemd-helper only runs from maintainer scripts).
rm "$wants/staticpin.service"
dpkg -i --force-confold "$WORK/v2.deb"
[ "$(dpkg-query -W -f='${Version}' staticpin)" = 0.1.0-2 ] || fail "not upgraded"
grep -q '^keepBackups: 7$' /etc/staticpin/config.yaml || fail "the edited conffile was replaced"
grep -q 'revised in 0.1.0-2' /etc/staticpin/config.yaml.dpkg-dist || fail "no config.yaml.dpkg-dist"
[ "$(cat /etc/staticpin/config.d/50-site.yaml)" = 'retries: 5' ] || fail "drop-in changed"
[ ! -e "$wants/staticpin.service" ] || fail "the upgrade re-enabled a unit the admin disabled"
staticpin check-config
! installed_running || fail "the installed staticpin is running after upgrade"

step "7. remove, then purge; /etc/kubernetes untouched"
if [ -e /etc/kubernetes/manifests ]; then
  echo "a real /etc/kubernetes/manifests exists: checking it stays untouched, creating nothing there"
else
  [ -e /etc/kubernetes ] || KUBE_CREATED=/etc/kubernetes
  [ -n "$KUBE_CREATED" ] || KUBE_CREATED=/etc/kubernetes/manifests
  fixture_manifests /etc/kubernetes/manifests
fi
kube_before=$(tree_sum /etc/kubernetes)
mkdir -p /var/lib/staticpin/backups/run-fixture
echo x > /var/lib/staticpin/backups/run-fixture/kube-apiserver.yaml

dpkg -r staticpin
[ ! -e /usr/bin/staticpin ] || fail "/usr/bin/staticpin left after remove"
for u in staticpin staticpin-serve; do
  [ ! -e /usr/lib/systemd/system/$u.service ] || fail "$u.service left after remove"
done
grep -q '^keepBackups: 7$' /etc/staticpin/config.yaml || fail "remove did not keep the conffile"
[ "$(dpkg-query -W -f='${db:Status-Status}' staticpin)" = config-files ] || fail "not in config-files state"

dpkg -P staticpin
[ ! -e /etc/staticpin ] || fail "/etc/staticpin left after purge"
[ ! -e /var/lib/staticpin ] || fail "/var/lib/staticpin left after purge"
[ ! -e "$wants/staticpin.service" ] && [ ! -e /var/lib/systemd/deb-systemd-helper-enabled/staticpin.service.dsh-also ] ||
  fail "systemd enablement state left after purge"
[ "$kube_before" = "$(tree_sum /etc/kubernetes)" ] || fail "purge touched /etc/kubernetes"
! dpkg-query -W staticpin >/dev/null 2>&1 || fail "package still known after purge"

step "test-deb: all 7 steps passed"
