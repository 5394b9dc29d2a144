#!/usr/bin/env bash
# Checks that the BUILD files load: `bazel query //...` must list the targets
# and every `deps`/`data` label must resolve. Installs Debian's bazel-bootstrap
# (Bazel 4.2.3, where py_library/py_binary/py_test are native, so nothing is
# downloaded) when `bazel` is missing; that needs root or sudo, and without
# either the check is skipped. Exits non-zero when the query fails.
#
# Bazel's output stays out of the repo, under $BAZEL_OUTPUT_USER_ROOT
# (default /tmp/trak_jax_bazel), and --batch leaves no server running.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bazel >/dev/null 2>&1; then
  SUDO=""
  if [[ "$(id -u)" != "0" ]]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO="sudo"
    else
      # As with ensure_browser.sh: without root the check (and the pytest
      # test that runs bazel) is skipped, and says why.
      echo "check_bazel.sh: bazel missing, not root, no sudo: skipped" >&2
      exit 0
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq bazel-bootstrap >/dev/null
fi

OUTPUT_ROOT="${BAZEL_OUTPUT_USER_ROOT:-/tmp/trak_jax_bazel}"
bazel_query() {
  bazel --output_user_root="$OUTPUT_ROOT" --batch --nohome_rc \
    query --noshow_progress "$@"
}

targets="$(bazel_query //...)" || {
  echo "check_bazel.sh: bazel query //... failed" >&2
  exit 1
}
# Fails, naming the rule, if a deps or data label names no existing target.
bazel_query 'labels(deps, //...) + labels(data, //...)' >/dev/null || {
  echo "check_bazel.sh: a deps or data label does not resolve" >&2
  exit 1
}
echo "check_bazel.sh: bazel query //... loaded $(wc -l <<<"$targets") targets"
