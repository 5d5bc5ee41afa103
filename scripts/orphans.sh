#!/usr/bin/env bash
# Lists the processes a test run left behind and exits 1 when there is one: any process
# carrying a test rig's marker (VLLM_MCP_TEST_RIG, which launched vLLM servers, real or
# mock, inherit) or running one of this checkout's binaries. CI runs it after each test
# step; run it yourself after `cargo test` the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(pwd -P)/target/"
left=0
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$pid" = "$$" ] && continue
  exe=$(readlink "$d/exe" 2>/dev/null || true)
  ours=no
  case "$exe" in "$target"*) ours=yes ;; esac
  if [ $ours = no ] && { tr '\0' '\n' <"$d/environ"; } 2>/dev/null | grep -q '^VLLM_MCP_TEST_RIG='; then
    ours=yes
  fi
  if [ $ours = yes ]; then
    left=$((left + 1))
    echo "left behind: pid $pid: $({ tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | cut -c1-200)" >&2
  fi
done
if [ $left -gt 0 ]; then
  echo "$left process(es) of the tests are still running" >&2
  exit 1
fi
echo "no process of the tests is left"
