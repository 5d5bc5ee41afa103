#!/usr/bin/env bash
# A real browser for the page's tests: Debian's chromium (installed with apt when it is
# missing) and Playwright for Python in a venv cached outside the checkout, driving that
# system browser (Playwright's own browser download is not used). Prints two lines: the
# venv's python, then the chromium binary. VLLM_MCP_BROWSER_CACHE moves the cache.
set -euo pipefail

PLAYWRIGHT_VERSION=1.65.3

if ! command -v chromium >/dev/null; then
    echo "installing Debian's chromium" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
fi
cache="${VLLM_MCP_BROWSER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-mcp/browser}"
venv="$cache/venv-playwright-$PLAYWRIGHT_VERSION"
if ! "$venv/bin/python" -c 'import playwright.sync_api' 2>/dev/null; then
    echo "installing playwright==$PLAYWRIGHT_VERSION into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION" >&2
fi
echo "$venv/bin/python"
command -v chromium
