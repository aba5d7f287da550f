#!/usr/bin/env bash
# Unpacks OHIF's prebuilt viewer (npm @ohif/app, MIT) into tests/browser/ohif/dist for the OHIF
# browser test and for serving it yourself (README, "Viewing studies in OHIF"). `npm pack`
# fetches only the package tarball (about 50 MB, 204 MB unpacked), not its build dependencies.
set -euo pipefail
VERSION="${OHIF_VERSION:-3.13.2}"
cd "$(dirname "$0")/../tests/browser"
if [ -f ohif/dist/index.html ] && [ "$(cat ohif/VERSION 2>/dev/null)" = "$VERSION" ]; then
    exit 0
fi
rm -rf ohif && mkdir -p ohif
(cd ohif && npm pack --silent "@ohif/app@$VERSION" >/dev/null && tar xzf ohif-app-*.tgz \
    && mv package/dist dist && rm -rf package ohif-app-*.tgz && echo "$VERSION" > VERSION)
