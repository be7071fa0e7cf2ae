#!/usr/bin/env bash
# Make sure headless Chromium is there for tests/test_report_browser.py (Debian's /usr/bin/chromium).
# Called from the Makefile's test target; installs it with apt-get when it is missing and we are root.
set -euo pipefail

CHROMIUM="${CHURNGUARD_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure_chromium: $CHROMIUM is missing and installing it needs root: sudo apt-get install -y chromium" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: $CHROMIUM is missing and this is not a Debian/Ubuntu system (no apt-get)" >&2
    exit 1
fi
echo "ensure_chromium: installing chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
test -x "$CHROMIUM" || command -v chromium >/dev/null
