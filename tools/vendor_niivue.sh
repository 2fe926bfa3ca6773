#!/usr/bin/env bash
# Vendor NiiVue's self-contained UMD build into the server's static files (no CDN links).
# Usage: bash tools/vendor_niivue.sh VERSION   (then update VENDOR.json's version and sha256)
set -euo pipefail
version="${1:?usage: vendor_niivue.sh VERSION}"
dest="$(cd "$(dirname "$0")/.." && pwd)/src/mecca/server/static"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "@niivue/niivue@${version}" >/dev/null && tar xzf niivue-niivue-*.tgz)
cp "$tmp/package/dist/niivue.umd.js" "$dest/niivue.umd.js"
sha256sum "$dest/niivue.umd.js"
