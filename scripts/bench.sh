#!/usr/bin/env bash
# The benchmark suite, in one command: builds the release binaries, installs the Python
# peer (the PyPI package vllm-mcp-server) in a cached venv, and runs vllm-mcp-bench,
# which prints one table of figures with their targets (docs/PERFORMANCE.md).
#
#   scripts/bench.sh [vllm-mcp-bench options]     e.g. --only start,trips --runs 20
#
# Takes about 4 minutes after the build. The venv lives under
# ${VLLM_MCP_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-mcp/bench-peer}, outside the
# checkout; VLLM_MCP_BENCH_NO_PEER=1 skips the peer. The front door's section compares
# it with vllm-router and LiteLLM's proxy, installed the same way (VLLM_MCP_BENCH_NO_PROXIES=1
# skips them). The page's section measures it in Chromium (scripts/browser.sh installs it;
# VLLM_MCP_BENCH_NO_BROWSER=1 skips that part). The table is also written to
# target/bench/table.md.

set -euo pipefail

PEER_PACKAGE=vllm-mcp-server
PEER_VERSION=0.1.4
# The peer was written against the 1.x Python MCP SDK: under 2.x it fails at import
# (`Server` has no `list_tools`), and its requirement (mcp>=1.0.0) does not stop pip.
MCP_SDK_VERSION=1.30.0
ROUTER_VERSION=0.1.17
LITELLM_VERSION=1.108.7

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

cargo build --release --workspace --bins

peer_args=()
if [[ "${VLLM_MCP_BENCH_NO_PEER:-}" != 1 ]]; then
    cache="${VLLM_MCP_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-mcp/bench-peer}"
    venv="$cache/venv-$PEER_VERSION-mcp-$MCP_SDK_VERSION"
    if [[ ! -x "$venv/bin/vllm-mcp-server" ]]; then
        python="${VLLM_MCP_BENCH_PYTHON:-$(command -v python3)}"
        echo "installing $PEER_PACKAGE==$PEER_VERSION (mcp==$MCP_SDK_VERSION) into $venv" >&2
        rm -rf "$venv"
        mkdir -p "$cache"
        "$python" -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$PEER_PACKAGE==$PEER_VERSION" "mcp==$MCP_SDK_VERSION"
    fi
    peer_args=(--peer "$venv/bin/vllm-mcp-server")
fi

# A cached venv holding `package`, by name and version: prints its bin directory.
venv_with() {
    local name="$1" spec="$2"
    local cache="${VLLM_MCP_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-mcp/bench-peer}"
    local venv="$cache/$name"
    if [[ ! -f "$venv/.installed" ]]; then
        echo "installing $spec into $venv" >&2
        rm -rf "$venv"
        mkdir -p "$cache"
        "${VLLM_MCP_BENCH_PYTHON:-$(command -v python3)}" -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2
        touch "$venv/.installed"
    fi
    echo "$venv/bin"
}

if [[ "${VLLM_MCP_BENCH_NO_PROXIES:-}" != 1 ]]; then
    peer_args+=(--router "$(venv_with "router-$ROUTER_VERSION" "vllm-router==$ROUTER_VERSION")/vllm-router")
    peer_args+=(--litellm "$(venv_with "litellm-$LITELLM_VERSION" "litellm[proxy]==$LITELLM_VERSION")/litellm")
fi

if [[ "${VLLM_MCP_BENCH_NO_BROWSER:-}" != 1 ]]; then
    mapfile -t browser < <("$root/scripts/browser.sh")
    peer_args+=(--browser-python "${browser[0]}" --chromium "${browser[1]}")
fi

mkdir -p target/bench
exec target/release/vllm-mcp-bench "${peer_args[@]}" --markdown target/bench/table.md "$@"
