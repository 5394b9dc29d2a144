#!/usr/bin/env bash
# Installs Debian's Chromium and its WebDriver when either is missing, so the
# report page can be tested in a real headless browser. Needs root (as on the
# developers' machines and in CI); a no-op when both are already installed.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi

SUDO=""
if [[ "$(id -u)" != "0" ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    # Without root the browser tests skip and say why; installing is moot.
    echo "ensure_browser.sh: not root and no sudo; chromium not installed" >&2
    exit 0
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver fonts-dejavu-core >/dev/null
echo "ensure_browser.sh: installed $(/usr/bin/chromium --version 2>/dev/null)"
