#!/usr/bin/env bash
# Builds the OCI image Istio and Envoy Gateway pull: one layer holding plugin.wasm
# at the root. Standard tools only (umoci). Usage:
#   scripts/package-oci.sh WASM LAYOUT_DIR TAG
# Prints the image's manifest digest (sha256:...) on the last line.
set -euo pipefail
wasm=$1 layout=$2 tag=$3
[ -f "$wasm" ] || { echo "package: $wasm not found (make build)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$layout"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --rootless --image "$layout:$tag" "$work/bundle" >/dev/null
cp "$wasm" "$work/bundle/rootfs/plugin.wasm"
chmod 0644 "$work/bundle/rootfs/plugin.wasm"
# Fixed timestamps so the same wasm always gives the same image digest.
touch -h -d @0 "$work/bundle/rootfs/plugin.wasm" "$work/bundle/rootfs"
umoci repack --image "$layout:$tag" --history.created 1970-01-01T00:00:00Z "$work/bundle"
umoci config --image "$layout:$tag" --created 1970-01-01T00:00:00Z --history.created 1970-01-01T00:00:00Z \
  --config.label org.opencontainers.image.title=meshguard
umoci gc --layout "$layout"
# The tag's manifest digest, as a registry will report it.
python3 - "$layout" "$tag" <<'PY'
import json, sys
layout, tag = sys.argv[1], sys.argv[2]
index = json.load(open(f"{layout}/index.json"))
for m in index["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
        print(m["digest"])
        break
else:
    sys.exit(f"tag {tag} not in {layout}")
PY
