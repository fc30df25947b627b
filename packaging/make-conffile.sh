#!/usr/bin/env bash
# Regenerates packaging/config.yaml (the conffile /etc/staticpin/config.yaml)
# from examples/config.yaml: the package's own header, then every comment of
# the example as it is and every setting commented out, so the conffile lists
# every setting with its default and sets none. tests/packaging.rs fails when
# the two drift apart; run this after adding a setting.
set -euo pipefail
cd "$(dirname "$0")/.."
marker='# Directory kubelet watches for static pod manifests'
{
  sed "/^$marker/,\$d" packaging/config.yaml
  sed -n "/^$marker/,\$p" examples/config.yaml |
    sed -E '/^[[:space:]]*(#|$)/!s/^/# /'
} > packaging/config.yaml.new
mv packaging/config.yaml.new packaging/config.yaml
