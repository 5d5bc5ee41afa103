#!/usr/bin/env bash
# The official OpenAI and Anthropic Python clients, in a venv cached outside the
# checkout, for the front door's tests: installs them once, then prints the venv's
# python. VLLM_MCP_CLIENTS_CACHE moves the cache.
set -euo pipefail

OPENAI_VERSION=3.63.0
ANTHROPIC_VERSION=2.17.0

cache="${VLLM_MCP_CLIENTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-mcp/clients}"
venv="$cache/venv-openai-$OPENAI_VERSION-anthropic-$ANTHROPIC_VERSION"
if ! "$venv/bin/python" -c 'import openai, anthropic' 2>/dev/null; then
    echo "installing openai==$OPENAI_VERSION and anthropic==$ANTHROPIC_VERSION into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "openai==$OPENAI_VERSION" "anthropic==$ANTHROPIC_VERSION" >&2
fi
echo "$venv/bin/python"
