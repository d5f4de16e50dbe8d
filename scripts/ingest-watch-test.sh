#!/usr/bin/env bash
# End-to-end check of ingest-api as Lambda would run it, against moto's Kinesis:
#   moto_server  →  create a stream  →  `cargo lambda watch` (the real binary, real runtime API)
#   →  `cargo lambda invoke ingest-api --data-file events/ingest-api-<case>.json` for every case
#   →  assert each receipt  →  GetRecords  →  the stream holds exactly the accepted events, with
#   their ids and their exact original bytes.
# Exits non-zero on any mismatch; everything it starts is killed on exit (trap).
#
# Needs on PATH (the Makefile puts the pinned venv first): moto_server, cargo-lambda, and a python
# with boto3 (moto brings it). Set VENV=<venv dir> to use a venv's bin without activating it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -n "${VENV:-}" && -d "$VENV/bin" ]]; then
    export PATH="$VENV/bin:$PATH"
fi
MOTO_SERVER="${MOTO_SERVER:-$(command -v moto_server || true)}"
[[ -x "$MOTO_SERVER" ]] || { echo "ingest-watch-test: moto_server not found (make tools, or set MOTO_SERVER)" >&2; exit 2; }
command -v cargo-lambda >/dev/null || { echo "ingest-watch-test: cargo-lambda not found on PATH" >&2; exit 2; }
PY="${PYTHON:-$(dirname "$MOTO_SERVER")/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"
"$PY" -c 'import boto3' 2>/dev/null || { echo "ingest-watch-test: $PY has no boto3" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ingest-watch.XXXXXX")"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        # Each child runs in its own process group (setsid): kill the group, then the leader.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 ]]; then
        echo "--- moto log (tail) ---" >&2; tail -n 20 "$WORK/moto.log" >&2 2>/dev/null || true
        echo "--- cargo lambda watch log (tail) ---" >&2; tail -n 40 "$WORK/watch.log" >&2 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port, seconds, what
    for _ in $(seq $(($2 * 10))); do
        if "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "ingest-watch-test: $3 did not listen on 127.0.0.1:$1 within $2 s" >&2
    return 1
}

MOTO_PORT="$(free_port)"
WATCH_PORT="$(free_port)"
STREAM="caudal-watch-test-$$"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_SESSION_TOKEN=test
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
unset AWS_PROFILE

setsid "$MOTO_SERVER" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
wait_port "$MOTO_PORT" 30 moto_server

"$PY" - "$STREAM" <<'EOF'
import sys, time, boto3
k = boto3.client("kinesis")
k.create_stream(StreamName=sys.argv[1], ShardCount=2)
for _ in range(100):
    if k.describe_stream_summary(StreamName=sys.argv[1])["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
        break
    time.sleep(0.1)
else:
    sys.exit("stream never became ACTIVE")
EOF

echo "ingest-watch-test: moto on :$MOTO_PORT, stream $STREAM; starting cargo lambda watch on :$WATCH_PORT"
setsid cargo lambda watch -p ingest-api --bin ingest-api --ignore-changes -q \
    -A 127.0.0.1 -P "$WATCH_PORT" --timeout 600 \
    --env-var "STREAM_NAME=$STREAM" --env-var "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL" \
    --env-var AWS_ACCESS_KEY_ID=test --env-var AWS_SECRET_ACCESS_KEY=test \
    --env-var AWS_SESSION_TOKEN=test --env-var AWS_REGION=us-east-1 \
    --env-var AWS_EC2_METADATA_DISABLED=true --env-var RUST_LOG=info \
    >"$WORK/watch.log" 2>&1 &
PIDS+=($!)
wait_port "$WATCH_PORT" 120 "cargo lambda watch"

# case, expected status, expected accepted count
CASES=(
    "v2-batch 202 4"
    "v2-single 202 1"
    "v2-envelope 202 2"
    "v2-ndjson 202 3"
    "v2-gzip 202 2"
    "v2-invalid 202 2"
    "v1-single 202 1"
    "v1-batch 202 2"
    "v2-unparseable 400 0"
    "v2-health 200 0"
)
for c in "${CASES[@]}"; do
    read -r name status accepted <<<"$c"
    # The first invoke waits for the debug build (shared CARGO_TARGET_DIR keeps it incremental).
    if ! cargo lambda invoke ingest-api -A 127.0.0.1 -P "$WATCH_PORT" -o json \
        --data-file "events/ingest-api-$name.json" >"$WORK/out-$name.json" 2>"$WORK/err-$name.log"; then
        echo "ingest-watch-test: invoke $name failed:" >&2
        cat "$WORK/err-$name.log" "$WORK/out-$name.json" >&2
        exit 1
    fi
    echo "$name $status $accepted" >>"$WORK/cases"
done

"$PY" - "$STREAM" "$WORK" <<'EOF'
import base64, gzip, json, os, sys, time, boto3
sys.path.insert(0, os.path.join(os.getcwd(), "scripts"))
from kpl import user_records
stream, work = sys.argv[1], sys.argv[2]
problems = []
expected = []  # (id, original event bytes) of every accepted event, over all cases

def items_of(ev):
    """The client's items, as the function saw them (bytes per receipt index)."""
    body = ev.get("body") or ""
    raw = base64.b64decode(body) if ev.get("isBase64Encoded") else body.encode()
    headers = {k.lower(): v for k, v in (ev.get("headers") or {}).items()}
    if headers.get("content-encoding") == "gzip":
        raw = gzip.decompress(raw)
    if "ndjson" in headers.get("content-type", ""):
        return {i: line.strip() for i, line in enumerate(raw.split(b"\n")) if line.strip()}
    doc = json.loads(raw)
    if isinstance(doc, dict) and "events" in doc and "type" not in doc:
        doc = doc["events"]
    if isinstance(doc, list):
        # Compact fixtures: re-serializing with the same separators gives the original bytes.
        return {i: json.dumps(x, separators=(",", ":"), ensure_ascii=False).encode() for i, x in enumerate(doc)}
    return {0: raw.strip()}

for line in open(f"{work}/cases"):
    name, status, accepted = line.split()
    out = json.load(open(f"{work}/out-{name}.json"))
    ev = json.load(open(f"events/ingest-api-{name}.json"))
    if out.get("statusCode") != int(status):
        problems.append(f"{name}: status {out.get('statusCode')} != {status}: {out.get('body')}")
        continue
    body = json.loads(out.get("body") or "null")
    if int(status) >= 400:
        if not (isinstance(body, dict) and body.get("code") and body.get("message")):
            problems.append(f"{name}: error body without code/message: {body}")
        continue
    if int(status) == 200:
        continue
    if body.get("accepted") != int(accepted) or body.get("retry") != 0:
        problems.append(f"{name}: receipt {body}")
        continue
    items = items_of(ev)
    for r in body["results"]:
        if r["status"] == "accepted":
            expected.append((r["id"], items[r["index"]]))
    print(f"  {name}: {out['statusCode']} accepted={body['accepted']} rejected={body['rejected']}")

k = boto3.client("kinesis")
got = []
for shard in k.list_shards(StreamName=stream)["Shards"]:
    it = k.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    for _ in range(20):
        resp = k.get_records(ShardIterator=it, Limit=10000)
        for rec in resp["Records"]:
            # A packed record (a request's events) under its first event's id; one envelope
            # under its own id.
            users = user_records(rec["Data"], rec["PartitionKey"])
            for n, (key, data) in enumerate(users):
                env = json.loads(data)
                raw = env["event_text"].encode() if "event_text" in env else None
                if raw is None:
                    # The envelope embeds the event verbatim after `"event":`; cut it out byte-exactly.
                    start = data.index(b',"event":') + len(b',"event":')
                    raw = data[start:-1]
                got.append((env["id"], raw))
                if n == 0 and rec["PartitionKey"] != env["id"]:
                    problems.append(f"record {env['id']}: partition key {rec['PartitionKey']}")
                if key != rec["PartitionKey"]:
                    problems.append(f"event {env['id']}: user record key {key}")
        it = resp.get("NextShardIterator")
        if not resp["Records"] or not it:
            break

if sorted(got) != sorted(expected):
    problems.append(f"stream holds {len(got)} events, receipts accepted {len(expected)}")
    for x in sorted(set(expected) - set(got)):
        problems.append(f"  missing from the stream: {x}")
    for x in sorted(set(got) - set(expected)):
        problems.append(f"  unexpected in the stream: {x}")
if problems:
    print("ingest-watch-test: FAILED", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"ingest-watch-test: OK — {len(got)} events read back with GetRecords match the receipts byte for byte")
EOF
