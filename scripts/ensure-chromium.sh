#!/usr/bin/env bash
# The console's browser tests drive the system's Chromium (Debian's `chromium` package)
# through Playwright; install it when missing. Never fails the build: without a browser
# the browser tests skip and say why.
set -uo pipefail
for name in chromium chromium-browser; do
  if command -v "$name" >/dev/null; then
    exit 0
  fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }
fi
command -v chromium >/dev/null \
  || echo "chromium could not be installed; the console's browser tests will skip" >&2
exit 0
