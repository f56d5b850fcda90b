#!/usr/bin/env bash
# Ships meshguard native beside the OCI image: the dynamic module and its
# sha256 (Envoy Gateway's remote dynamic-module source pins one). Usage:
#   scripts/package-native.sh MODULE DIR
# Writes DIR/libmeshguard.so and DIR/libmeshguard.so.sha256 (`sha256sum -c`
# checks it there) and prints the module's sha256 on the last line.
set -euo pipefail
module=$1 dir=$2
[ -f "$module" ] || { echo "package: $module not found (make build)" >&2; exit 1; }
mkdir -p "$dir"
cp "$module" "$dir/libmeshguard.so"
chmod 0644 "$dir/libmeshguard.so"
(cd "$dir" && sha256sum libmeshguard.so > libmeshguard.so.sha256)
cut -d' ' -f1 "$dir/libmeshguard.so.sha256"
