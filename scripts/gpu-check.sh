#!/usr/bin/env bash
# GPU truth: compares what vllm-perf-monitor's get-gpu-stats and get-memory-stats say of
# this machine's NVIDIA GPUs with `nvidia-smi --query-gpu` read at the same moment.
#
#   scripts/gpu-check.sh [BIN_DIR]        BIN_DIR: the release binaries (target/release)
#
# Builds nothing: run `cargo build --release --bins` elsewhere and bring the binaries.
# Needs python3 (standard library only) and nvidia-smi. Prints one line per GPU and
# figure, and exits 0 when every figure agrees within its tolerance, 1 when one does not,
# 2 when the check cannot run (no nvidia-smi, no binary).
#
# Tolerances: total memory exact (±1 MiB); used memory ±max(256 MiB, 2 %) (it moves);
# utilization ±25 points (both are instantaneous); temperature ±3 °C; power ±max(30 W, 25 %).
set -euo pipefail

bin_dir="${1:-target/release}"
monitor="$bin_dir/vllm-perf-monitor"
command -v nvidia-smi >/dev/null || { echo "gpu-check: no nvidia-smi: run this on a machine with an NVIDIA GPU" >&2; exit 2; }
[ -x "$monitor" ] || { echo "gpu-check: $monitor is not there (BIN_DIR: the release binaries)" >&2; exit 2; }

exec python3 - "$monitor" <<'PY'
import json, os, subprocess, sys, tempfile

monitor = sys.argv[1]
data = tempfile.mkdtemp(prefix="vllm-mcp-gpu-check-")
proc = subprocess.Popen(
    [monitor], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    env={**os.environ, "VLLM_MCP_DATA_DIR": data}, text=True,
)
next_id = 0

def rpc(method, params=None, notify=False):
    global next_id
    msg = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if not notify:
        next_id += 1
        msg["id"] = next_id
    proc.stdin.write(json.dumps(msg) + "\n")
    proc.stdin.flush()
    if notify:
        return None
    while True:
        line = proc.stdout.readline()
        if not line:
            sys.exit("gpu-check: the monitor exited")
        reply = json.loads(line)
        if reply.get("id") == next_id:
            return reply

def tool(name, args):
    reply = rpc("tools/call", {"name": name, "arguments": args})
    text = "".join(c.get("text", "") for c in reply["result"]["content"])
    return json.loads(text)

rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "gpu-check", "version": "1"}})
rpc("notifications/initialized", notify=True)
stats = tool("get-gpu-stats", {"include_temperature": True, "include_power": True})
memory = tool("get-memory-stats", {})
fields = "index,uuid,name,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw"
smi = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                     capture_output=True, text=True, check=True).stdout
proc.stdin.close()
proc.wait(timeout=10)

def num(v):
    try:
        return float(v)
    except ValueError:
        return None  # "[N/A]"

truth = {}
for line in smi.strip().splitlines():
    i, uuid, name, total, used, util, temp, power = [x.strip() for x in line.split(",")]
    truth[uuid] = dict(index=int(i), name=name, total=num(total), used=num(used),
                       util=num(util), temp=num(temp), power=num(power))

failures = 0
def check(gpu, what, ours, theirs, tol):
    global failures
    if theirs is None:
        print(f"GPU {gpu}: {what}: nvidia-smi has none, ours {ours}")
        return
    ok = ours is not None and abs(ours - theirs) <= tol
    failures += not ok
    print(f"GPU {gpu}: {what}: ours {ours}, nvidia-smi {theirs} (±{tol:g}) {'ok' if ok else 'DIFFERS'}")

if not stats.get("success", False):
    print(f"get-gpu-stats failed: {stats.get('error')}; nvidia-smi sees {len(truth)} GPU(s)")
    sys.exit(1)
seen = {g.get("uuid"): g for g in stats["gpus"]}
if set(seen) != set(truth):
    print(f"the GPUs differ: ours {sorted(seen)}, nvidia-smi {sorted(truth)}")
    failures += 1
for uuid, t in truth.items():
    g = seen.get(uuid)
    if g is None:
        continue
    gid = g["id"]
    check(gid, "memory total MiB", g["memory"]["total_mb"], t["total"], 1)
    used_tol = max(256, 0.02 * (t["total"] or 0))
    check(gid, "memory used MiB", g["memory"]["used_mb"], t["used"], used_tol)
    util = g["compute"]["utilization"]
    check(gid, "utilization %", None if util is None else util * 100, t["util"], 25)
    temp = (g.get("temperature") or {}).get("current_c")
    check(gid, "temperature °C", temp, t["temp"], 3)
    power = (g.get("power") or {}).get("current_w")
    check(gid, "power W", power, t["power"], max(30, 0.25 * (t["power"] or 0)))
gm = memory.get("gpu_memory") or {}
total = sum(t["total"] or 0 for t in truth.values())
check("all", "get-memory-stats total MiB", gm.get("total_mb"), total, len(truth))
used = sum(t["used"] or 0 for t in truth.values())
check("all", "get-memory-stats reserved (used) MiB", gm.get("reserved_mb"), used,
      max(256 * len(truth), 0.02 * total))
print("gpu-check:", "every figure agrees" if failures == 0 else f"{failures} figure(s) differ")
sys.exit(1 if failures else 0)
PY
