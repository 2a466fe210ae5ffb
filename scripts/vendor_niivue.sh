#!/usr/bin/env bash
# Vendor NiiVue's built browser bundle into alqa serve's static files (no build step for alqa's own code).
#
#   bash scripts/vendor_niivue.sh [VERSION]      # default: the version pinned below
#
# `npm pack` fetches the published package from the npm registry (nothing is installed or built): its
# dist/niivue.umd.js is a self-contained, minified UMD bundle that defines the global `niivue`. It is
# copied to alqa_dagster/serve/static/vendor/niivue/ with its licence (BSD-2-Clause; the npm tarball
# carries no LICENSE file, so the text kept beside the bundle is upstream's) and a README recording the
# version, npm's integrity hash and the bundle's sha256. To update: run with the new version, read its
# changelog, run tests/dagster/test_serve_viewer.py (it drives the bundle in Chromium), commit the three files.
set -euo pipefail
VERSION="${1:-0.69.0}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$HERE/alqa_dagster/serve/static/vendor/niivue"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
command -v npm >/dev/null || { echo "npm is needed (Node 20: apt-get install nodejs npm)" >&2; exit 2; }
(cd "$WORK" && npm pack --silent "@niivue/niivue@$VERSION" > pack.txt && npm view "@niivue/niivue@$VERSION" dist.integrity > integrity.txt)
tar -xzf "$WORK"/niivue-niivue-"$VERSION".tgz -C "$WORK"
LICENSE_FIELD="$(node -e "console.log(require('$WORK/package/package.json').license)")"
if [ "$LICENSE_FIELD" != "BSD-2-Clause" ]; then
  echo "@niivue/niivue@$VERSION declares licence '$LICENSE_FIELD', not BSD-2-Clause: check it before vendoring" >&2
  exit 3
fi
BUNDLE="$WORK/package/dist/niivue.umd.js"
[ -s "$BUNDLE" ] || { echo "$BUNDLE missing: the package layout changed; find its self-contained browser bundle" >&2; exit 4; }
mkdir -p "$DEST"
cp "$BUNDLE" "$DEST/niivue.umd.js"
SHA="$(sha256sum "$DEST/niivue.umd.js" | cut -d' ' -f1)"
BYTES="$(stat -c %s "$DEST/niivue.umd.js")"
cat > "$DEST/README.md" <<MD
# NiiVue $VERSION (vendored)

\`niivue.umd.js\` is \`dist/niivue.umd.js\` of the npm package \`@niivue/niivue@$VERSION\`, unchanged
(BSD-2-Clause, see \`LICENSE\`; https://github.com/niivue/niivue). alqa serve's viewer loads it as a
plain script (global \`niivue\`); nothing is fetched from elsewhere at run time.

- npm integrity: \`$(cat "$WORK/integrity.txt")\`
- sha256 of niivue.umd.js: \`$SHA\` ($BYTES bytes; served gzip-compressed by the browser's request)

Rebuild or update: \`bash scripts/vendor_niivue.sh [VERSION]\` (npm pack; nothing is built), then run
\`tests/dagster/test_serve_viewer.py\` and commit this folder.
MD
echo "vendored @niivue/niivue@$VERSION: $DEST/niivue.umd.js ($BYTES bytes, sha256 $SHA)"
