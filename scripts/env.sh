#!/usr/bin/env bash
# Set up (or reuse) the vpr_ros environment, then run one thing in it.
#
#   bash scripts/env.sh demo [ARGS]    set up, then run the demo (README command 1)
#   bash scripts/env.sh test [ARGS]    set up, then run the whole test suite (README command 2, CI)
#   bash scripts/env.sh setup          set up only; prints the lines to `source` for a shell
#   bash scripts/env.sh run CMD...     set up, then run CMD inside the environment
#
# ROS_DISTRO picks the lock (and so the ROS 2 wheels): kilted (default) -> requirements.lock,
# jazzy -> requirements-jazzy.lock. The virtual environment lives outside the work tree, in
#   ${VPR_ROS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/vpr_ros}/venv-py<X.Y>-<sha256(lock)[:16]>
# so a second run (or a second clone with the same lock) reuses it. A venv is only used once it
# carries its completion marker, so an interrupted install is redone from scratch, never half-used.
set -euo pipefail
set -m   # job control: background jobs get SIGINT like foreground ones (ros2 launch needs it)

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="${VPR_ROS_VENDOR:-$REPO/../shared/vendor/ros2-cli}"
CACHE="${VPR_ROS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vpr_ros}"

log() { printf '\033[1m[vpr_ros env]\033[0m %s\n' "$*" >&2; }
die() { printf '[vpr_ros env] error: %s\n' "$*" >&2; exit 1; }

find_python() {
  local cand
  for cand in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$cand" ] || continue
    command -v "$cand" >/dev/null 2>&1 || continue
    if "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  return 1
}

ensure_venv_module() {
  # Debian/Ubuntu split venv/ensurepip into python3-venv; install it when missing.
  "$PY" -c 'import ensurepip, venv' 2>/dev/null && return 0
  command -v apt-get >/dev/null 2>&1 || die "$PY lacks the venv module; install it (python3-venv)"
  local ver pkgs sudo=""
  ver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  pkgs="python${ver}-venv"
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing $pkgs with apt-get (the venv module is missing)"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$pkgs" \
    || $sudo apt-get install -y -qq python3-venv \
    || die "could not install $pkgs; install it by hand and rerun"
}

PY="$(find_python)" || die "need Python >= 3.11 (python3.11, python3.12 or python3.13 on PATH)"
ensure_venv_module
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
case "${ROS_DISTRO:-kilted}" in
  kilted) LOCK="$REPO/requirements.lock" ;;
  jazzy) LOCK="$REPO/requirements-jazzy.lock" ;;
  *) die "ROS_DISTRO=$ROS_DISTRO: locks exist for kilted (default) and jazzy; for another distro" \
       "use its own ROS 2 install (README: On a machine with a ROS 2 distribution)" ;;
esac
export ROS_DISTRO="${ROS_DISTRO:-kilted}"
LOCK_HASH="$(sha256sum "$LOCK" | cut -c1-16)"
VENV="$CACHE/venv-py$PYVER-$LOCK_HASH"
MARKER="$VENV/.vpr_ros_complete"

build_venv() {
  local start=$SECONDS
  log "creating $VENV for ROS 2 $ROS_DISTRO (first run: installs torch, ROS 2 wheels, ..." \
    "several minutes)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$LOCK"
  if [ -d "$VENDOR" ]; then
    log "installing the ROS 2 CLI/launch packages from $VENDOR"
    bash "$VENDOR/install.sh" "$VENV/bin/python" >/dev/null
  else
    log "no $VENDOR: skipping ros2 CLI/launch (a ROS 2 distro provides them)"
  fi
  "$VENV/bin/python" -m pip check >/dev/null || die "pip check failed in $VENV"
  date -u +%FT%TZ > "$MARKER"
  log "environment ready in $((SECONDS - start)) s"
}

link_ros_layout() {
  # An editable pip install leaves out setup.py's data_files and puts console scripts in bin/,
  # where `ros2 run`/launch_ros do not look. Lay out what colcon --symlink-install would:
  # lib/vpr_ros/<exe>, share/vpr_ros/{package.xml,launch,config} and the ament index marker,
  # as links into this checkout, so edits to launch and config files take effect at once.
  local exe share="$VENV/share/vpr_ros"
  mkdir -p "$VENV/lib/vpr_ros" "$share" "$VENV/share/ament_index/resource_index/packages"
  for exe in localizer vpr-ros; do
    ln -sfn "$VENV/bin/$exe" "$VENV/lib/vpr_ros/$exe"
  done
  ln -sfn "$REPO/package.xml" "$share/package.xml"
  # Real folders of per-file links: ros2 launch finds files with os.walk, which does not
  # descend into linked folders.
  local dir file
  for dir in launch config; do
    rm -rf "${share:?}/$dir"
    mkdir -p "$share/$dir"
    for file in "$REPO/$dir"/*; do
      [ -f "$file" ] && ln -sfn "$file" "$share/$dir/"
    done
  done
  : > "$VENV/share/ament_index/resource_index/packages/vpr_ros"
}

setup() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock-$LOCK_HASH"
  flock 9   # one installer at a time per lock
  if [ -f "$MARKER" ]; then
    log "reusing $VENV"
  else
    build_venv
  fi
  # The package itself: editable, so the checkout is what runs; cheap on every call.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    --no-build-isolation -e "$REPO" >/dev/null
  link_ros_layout
  flock -u 9
  export VIRTUAL_ENV="$VENV"
  export PATH="$VENV/bin:$PATH"
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
  export PYTHONDONTWRITEBYTECODE=1
}

run_tests() {
  cd "$REPO"
  local rc=0
  python -m pytest "$@" || rc=$?
  if [ "$rc" = 5 ]; then
    log "pytest collected no tests: treating that as a failure"
    return 5
  fi
  return "$rc"
}

run_demo() {
  # README command 1: versions and the device `auto` picks, then the whole demo
  # (vpr_ros/demo/: synthetic route -> map -> node on a bag -> report) in a DDS domain of
  # its own unless ROS_DOMAIN_ID is set.
  vpr-ros doctor
  export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}"
  log "demo in ROS_DOMAIN_ID=$ROS_DOMAIN_ID (localhost only)"
  vpr-ros demo "$@"
}

cmd="${1:-setup}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup)
    setup
    echo "export VIRTUAL_ENV='$VENV' PATH='$VENV/bin':\"\$PATH\" AMENT_PREFIX_PATH='$VENV'" \
      "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST"
    ;;
  test) setup; run_tests "$@" ;;
  demo) setup; run_demo "$@" ;;
  run) setup; [ $# -gt 0 ] || die "run: give a command"; "$@" ;;
  *) die "unknown command '$cmd' (setup, demo, test, run)" ;;
esac
