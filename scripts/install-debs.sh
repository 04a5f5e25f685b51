#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo use, when missing.
# mosquitto, openssl, jq and chromium (the review station's browser test, which CI requires,
# and the demo report's) are required.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v jq >/dev/null 2>&1 || need+=(jq)  # Firehose's jq query, in tests
# Debian's Chromium, launched by path by Playwright (no browser download)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# the broker is started by the tests, not as a system service
if command -v systemctl >/dev/null 2>&1; then $sudo systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi
service mosquitto stop >/dev/null 2>&1 || true
