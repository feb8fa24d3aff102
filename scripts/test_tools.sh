#!/usr/bin/env bash
# Stand-ins for the cloud object stores that tests/it/object_stores.rs reads
# sources from: moto's S3 server (PyPI, with boto3 and azure-storage-blob to
# upload the fixtures) and Azurite's blob service (npm), installed into
# target/test-tools/; and Debian's Chromium with its ChromeDriver, which
# tests/it/report.rs opens the HTML report in. Idempotent; .ci/run calls it
# before the tests. Without it, those tests say they skipped (outside CI).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/test-tools
if [ ! -x "$dir/venv/bin/moto_server" ]; then
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.*' 'azure-storage-blob==12.*'
fi
if [ ! -x "$dir/node_modules/.bin/azurite-blob" ]; then
  npm install --prefix "$dir" --silent --no-audit --no-fund 'azurite@3'
fi
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }
  install || { $sudo apt-get update -q >/dev/null && install; }
fi
