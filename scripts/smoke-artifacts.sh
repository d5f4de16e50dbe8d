#!/usr/bin/env bash
# Smoke-test the deploy artifact: `sam build` the template (cargo-lambda, arm64), then run every
# built `.aws-sam/build/<Function>/bootstrap` under qemu-aarch64-static against cargo-lambda's
# Lambda runtime API emulator, backed by a moto server, invoke it with its files from events/, and
# check the responses and side effects. Prints each bootstrap's size and measured init time
# (process start -> first `GET /runtime/invocation/next`, i.e. what Lambda reports as Init
# Duration, plus qemu's own start-up and emulation overhead).
#
# Functions run in pipeline order (HTTP, then Kinesis, then SQS consumers) so the loader reads the
# raw object the raw writer just archived. The loader's Redshift Data API is a stub that finishes
# every statement (scripts/smoke_aws.py dataapi-stub), or SMOKE_DATA_API_URL if set (e.g. the local
# stack's PostgreSQL-backed Data API): this test is about the artifact, the local stack's
# end-to-end tests are about the SQL.
#
# Environment (defaults in brackets):
#   SAM [sam]  CARGO_LAMBDA [cargo-lambda]  MOTO_SERVER [moto_server]
#   PYTHON [the python next to moto_server, which has boto3 + PyYAML]
#   QEMU [qemu-aarch64-static]  QEMU_LD_PREFIX [/usr/aarch64-linux-gnu]
#   CARGO_TARGET_DIR  shared cargo target dir (sam's cargo-lambda build honours it)
#   SMOKE_SKIP_BUILD=1  reuse .aws-sam/build      SMOKE_FUNCTIONS="ingest-api ..."  only these
#   SMOKE_DATA_API_URL  Redshift Data API endpoint for the loader (default: the stub)
#   SMOKE_KEEP=1  keep the work directory (logs, responses) after the run
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

SAM="${SAM:-sam}"
CARGO_LAMBDA="${CARGO_LAMBDA:-cargo-lambda}"
MOTO_SERVER="${MOTO_SERVER:-moto_server}"
QEMU="${QEMU:-qemu-aarch64-static}"
QEMU_LD_PREFIX="${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}"

die() { echo "smoke: FAIL: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

for tool in SAM CARGO_LAMBDA MOTO_SERVER QEMU; do
    have "${!tool}" || die "'${!tool}' not found (set $tool to its path)"
done
[[ -e "$QEMU_LD_PREFIX/lib/ld-linux-aarch64.so.1" ]] \
    || die "no aarch64 glibc under $QEMU_LD_PREFIX (apt-get install libc6-arm64-cross)"
MOTO_SERVER=$(command -v "$MOTO_SERVER")
CARGO_LAMBDA=$(command -v "$CARGO_LAMBDA")
PYTHON="${PYTHON:-$(dirname "$MOTO_SERVER")/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
"$PYTHON" -c 'import boto3, yaml' 2>/dev/null || die "$PYTHON lacks boto3/PyYAML (set PYTHON)"
HELPER=("$PYTHON" "$ROOT/scripts/smoke_aws.py")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/caudal-smoke.XXXXXX")
PIDS=()
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${SMOKE_KEEP:-0}" == 1 || $status -ne 0 ]]; then
        echo "smoke: logs and responses kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for_port() { # port seconds what
    local deadline=$(($(date +%s) + $2))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        (($(date +%s) < deadline)) || die "$3 did not open port $1 within $2 s"
        sleep 0.1
    done
}

# ---------------------------------------------------------------------------------------- build
if [[ "${SMOKE_SKIP_BUILD:-0}" != 1 ]]; then
    echo "==> sam build (cargo-lambda, arm64${CARGO_TARGET_DIR:+, CARGO_TARGET_DIR=$CARGO_TARGET_DIR})"
    # lambda-builders runs `cargo lambda build`, so cargo must find the cargo-lambda subcommand.
    PATH="$(dirname "$CARGO_LAMBDA"):$PATH" SAM_CLI_TELEMETRY=0 \
        AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" "$SAM" build >"$WORK/sam-build.log" 2>&1 \
        || { tail -n 60 "$WORK/sam-build.log" >&2; die "sam build failed"; }
    tail -n 3 "$WORK/sam-build.log"
fi
[[ -d .aws-sam/build ]] || die ".aws-sam/build does not exist (run without SMOKE_SKIP_BUILD)"

# ------------------------------------------------------------------------------------- emulators
"${HELPER[@]}" plan template.yaml "$WORK/plan.json" >"$WORK/plan.tsv"

MOTO_PORT=$("${HELPER[@]}" free-port)
"$MOTO_SERVER" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
RT_PORT=$("${HELPER[@]}" free-port)
# tower_http's debug line for each runtime API request is how the first /next is timed.
RUST_LOG=info,tower_http=debug "$CARGO_LAMBDA" lambda watch --only-lambda-apis \
    --invoke-address 127.0.0.1 --invoke-port "$RT_PORT" >"$WORK/watch.log" 2>&1 &
PIDS+=($!)
if [[ -z "${SMOKE_DATA_API_URL:-}" ]]; then
    DATA_PORT=$("${HELPER[@]}" free-port)
    "${HELPER[@]}" dataapi-stub "$DATA_PORT" "$WORK/dataapi.log" >"$WORK/dataapi-stub.log" 2>&1 &
    PIDS+=($!)
    SMOKE_DATA_API_URL="http://127.0.0.1:$DATA_PORT"
    wait_for_port "$DATA_PORT" 20 "the Data API stub"
fi
wait_for_port "$MOTO_PORT" 60 "moto_server"
wait_for_port "$RT_PORT" 120 "cargo lambda watch"
MOTO="http://127.0.0.1:$MOTO_PORT"
"${HELPER[@]}" setup "$MOTO"
echo "==> moto $MOTO, runtime API emulator 127.0.0.1:$RT_PORT, Data API $SMOKE_DATA_API_URL"

# ------------------------------------------------------------------------------------ functions
kind_rank() { case $1 in http) echo 1 ;; kinesis) echo 2 ;; *) echo 3 ;; esac; }
mapfile -t FUNCTIONS < <(while IFS=$'\t' read -r lid bin kind mem; do
    printf '%s\t%s\t%s\t%s\t%s\n' "$(kind_rank "$kind")" "$lid" "$bin" "$kind" "$mem"
done <"$WORK/plan.tsv" | sort -n | cut -f2-)

SUMMARY=()
tested=0
for line in "${FUNCTIONS[@]}"; do
    IFS=$'\t' read -r lid bin kind mem <<<"$line"
    if [[ -n "${SMOKE_FUNCTIONS:-}" && " $SMOKE_FUNCTIONS " != *" $bin "* ]]; then
        continue
    fi
    bootstrap=".aws-sam/build/$lid/bootstrap"
    if [[ ! -f "$bootstrap" ]]; then
        echo "==> $lid: no $bootstrap (not built), skipped" >&2
        SUMMARY+=("$(printf '%-20s %-14s %s' "$lid" "-" "not built")")
        continue
    fi
    # ELF e_machine (offset 18) 183 = EM_AARCH64.
    machine=$(od -An -tu2 -j18 -N2 "$bootstrap" | tr -d ' ')
    [[ "$machine" == 183 ]] || die "$bootstrap is not an arm64 ELF executable (e_machine $machine)"
    size=$(stat -c %s "$bootstrap")
    mapfile -t events < <(ls events/"$bin"-*.json 2>/dev/null || true)
    ((${#events[@]} > 0)) || die "$lid: no events/$bin-*.json to invoke it with"

    echo "==> $lid ($bin, $kind): bootstrap $size bytes, ${#events[@]} event file(s)"
    # Lambda gives a function a clean environment: only its configuration and the runtime's
    # variables. Mirror that so nothing from this shell (credentials, endpoints) leaks in.
    mapfile -d '' -t fn_env < <("$PYTHON" -c '
import json, sys
fn = next(f for f in json.load(open(sys.argv[1])) if f["logical_id"] == sys.argv[2])
for k, v in fn["env"].items():
    sys.stdout.write(f"{k}={v}\0")' "$WORK/plan.json" "$lid")
    fn_log="$WORK/$bin.log"
    next_pattern="uri=/.rt/$bin/2018-06-01/runtime/invocation/next"
    before=$(grep -c -F "$next_pattern" "$WORK/watch.log" || true)

    start=$(now_ms)
    env -i PATH=/usr/bin:/bin HOME="$WORK" \
        "${fn_env[@]}" \
        AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$RT_PORT/.rt/$bin" \
        AWS_LAMBDA_FUNCTION_NAME="$bin" AWS_LAMBDA_FUNCTION_VERSION="\$LATEST" \
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="$mem" AWS_LAMBDA_LOG_FORMAT=JSON \
        AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/$bin" AWS_LAMBDA_LOG_STREAM_NAME=smoke \
        AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID=smoke AWS_SECRET_ACCESS_KEY=smoke AWS_EC2_METADATA_DISABLED=true \
        AWS_ENDPOINT_URL="$MOTO" AWS_ENDPOINT_URL_REDSHIFT_DATA="$SMOKE_DATA_API_URL" \
        "$QEMU" -L "$QEMU_LD_PREFIX" "$bootstrap" >"$fn_log" 2>&1 &
    fn_pid=$!
    PIDS+=("$fn_pid")

    deadline=$((start + 60000))
    while (($(grep -c -F "$next_pattern" "$WORK/watch.log" || true) <= before)); do
        if ! kill -0 "$fn_pid" 2>/dev/null; then
            tail -n 30 "$fn_log" >&2
            die "$lid exited during init"
        fi
        (($(now_ms) < deadline)) || die "$lid did not ask for an event within 60 s"
        sleep 0.005
    done
    init_ms=$(($(now_ms) - start))
    echo "    init (start -> first /next under qemu): ${init_ms} ms"

    invoke_ms=()
    for ev in "${events[@]}"; do
        name=$(basename "$ev" .json)
        # Raw objects the event refers to (notifications, lake retries), made from raw/.
        "${HELPER[@]}" stage "$MOTO" "$ev" | sed 's/^/    /'
        ((PIPESTATUS[0] == 0)) || die "$name: staging failed"
        t0=$(now_ms)
        if ! timeout 120 "$CARGO_LAMBDA" lambda invoke "$bin" --data-file "$ev" \
            --invoke-address 127.0.0.1 --invoke-port "$RT_PORT" --output-format json \
            >"$WORK/$name.response.json" 2>"$WORK/$name.invoke.log"; then
            cat "$WORK/$name.invoke.log" "$WORK/$name.response.json" >&2 || true
            tail -n 30 "$fn_log" >&2
            die "$name: invocation failed"
        fi
        invoke_ms+=("$(($(now_ms) - t0))")
        "${HELPER[@]}" check "$kind" "$ev" "$WORK/$name.response.json" | sed 's/^/    /' \
            || { tail -n 30 "$fn_log" >&2; exit 1; }
        kill -0 "$fn_pid" 2>/dev/null || { tail -n 30 "$fn_log" >&2; die "$lid died after $name"; }
    done
    "${HELPER[@]}" verify "$MOTO" "$bin" | sed 's/^/    /' || { tail -n 30 "$fn_log" >&2; exit 1; }

    kill "$fn_pid" 2>/dev/null || true
    wait "$fn_pid" 2>/dev/null || true
    SUMMARY+=("$(printf '%-20s %8.1f MiB %8d ms   %s' "$lid" "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')" \
        "$init_ms" "invokes ms: ${invoke_ms[*]}")")
    tested=$((tested + 1))
done

echo
echo "function               bootstrap      init   (qemu-aarch64 on $(uname -m), $(nproc) cores)"
printf '%s\n' "${SUMMARY[@]}"
((tested > 0)) || die "no function was built and tested"
echo "smoke: $tested function(s) passed"
