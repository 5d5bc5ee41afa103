#!/usr/bin/env bash
# Ray (`ray[default]`, the version the Ray backend is tested against) in a venv cached
# outside the checkout, for the launcher's Ray tests: installs it once, then prints the
# `ray` command's path. The tests start and stop their own cluster with it (a head and a
# second node on loopback addresses of their own); nothing here starts one.
#
#   scripts/ray.sh          install if needed, print the path of `ray`
#   scripts/ray.sh env      print `export VLLM_MCP_RAY=...` (eval "$(scripts/ray.sh env)")
#
# VLLM_MCP_RAY_CACHE moves the cache (about 400 MiB).
set -euo pipefail

RAY_VERSION=2.60.0

cache="${VLLM_MCP_RAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-mcp/ray}"
venv="$cache/venv-ray-$RAY_VERSION"
if ! "$venv/bin/ray" --version 2>/dev/null | grep -q "version $RAY_VERSION"; then
    echo "installing ray[default]==$RAY_VERSION into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "ray[default]==$RAY_VERSION" >&2
fi
case "${1:-path}" in
    path) echo "$venv/bin/ray" ;;
    env) echo "export VLLM_MCP_RAY=$venv/bin/ray" ;;
    *) echo "usage: scripts/ray.sh [path|env]" >&2; exit 2 ;;
esac
