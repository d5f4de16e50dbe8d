#!/usr/bin/env python3
"""AWS-side helpers for scripts/smoke-artifacts.sh (needs boto3 and PyYAML: the sam/moto venv).

Subcommands:
  free-port                      print a free TCP port on 127.0.0.1
  plan TEMPLATE OUT              functions, their event kind and resolved environment, as JSON
  setup ENDPOINT                 create the smoke resources in the moto server at ENDPOINT
  stage ENDPOINT EVENT           put an object at every S3 key a loader event names (copied from
                                 what raw-writer archived, so the loader reads a real raw object)
  check KIND EVENT RESPONSE      assert a function's response to an event file is the right one
  verify ENDPOINT BINARY         assert the side effects of a function's invocations
  dataapi-stub PORT LOG          a minimal Redshift Data API (AWS JSON 1.1): every statement
                                 FINISHED, empty results, the SQL appended to LOG

Everything talks to 127.0.0.1 only. Exit status 1 with a message on stderr on any failed check.
"""

import gzip
import json
import os
import socket
import sys
import threading
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kpl import user_records  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REGION = "us-east-1"
ACCOUNT = "123456789012"

# Local stand-ins for the template's resources (logical id -> value of Ref / GetAtt).
LOCAL = {
    "EventStream": "smoke-events",
    # The name events/raw-writer-lake-retry.json carries: raw-writer only re-forwards lines of
    # its own bucket, so the smoke's raw bucket has the events' name.
    "RawBucket": "caudal-raw-123456789012-us-east-1-4f2a9c10",
    "StagingBucket": "smoke-staging",
    "LakeBucket": "smoke-lake",
    "LakeDeliveryStream": "smoke-lake-delivery",
    "CopyRole": f"arn:aws:iam::{ACCOUNT}:role/smoke-copy",
    "LoaderQueue": "smoke-loader",
    "LakeRetryQueue": "smoke-lake-retry",
    "SpillQueue": "smoke-spill",
}

# What `Ref` of a queue gives: its URL (moto finds the queue by the URL's last path segment,
# whatever endpoint the request went to).
QUEUES = ("LoaderQueue", "LakeRetryQueue", "SpillQueue")

# Conditions the functions' environment depends on, as they come out with the parameters' defaults
# (one region, the warehouse's).
CONDITIONS = {
    "WarehouseElsewhere": False,
}

# Values the smoke test must choose itself (the template's defaults leave them empty on purpose).
OVERRIDES = {
    "RUST_LOG": "info",
    # The raw archive defaults to zstd; this script builds spill and lake-retry objects from an
    # archived one with Python's standard library, which reads gzip only. The codec itself is
    # covered by the Rust tests (the end-to-end runs use the zstd default).
    "COMPRESSION": "gzip",
    # The browser case (events/ingest-api-v2-beacon.json) comes from this origin, and the Segment
    # cases (events/ingest-api-v2-segment-*.json) send these write keys; the template's defaults
    # allow no origin and no key.
    "ALLOWED_ORIGINS": "https://shop.example.com",
    "SEGMENT_WRITE_KEYS": "wk-test-1,wk-test-2",
    # The Snowplow cases (events/ingest-api-v2-snowplow-*.json) send this app id.
    "SNOWPLOW_APP_IDS": "shop",
}


def die(msg):
    print(f"smoke: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_template(path):
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {"Fn::" + suffix if suffix not in ("Ref", "Condition") else suffix: value}

    Loader.add_multi_constructor("!", tagged)
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=Loader)  # noqa: S506 - SafeLoader subclass


def resolve(value, params, where):
    if isinstance(value, (str, int, float, bool)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Fn::If" and isinstance(arg, list) and len(arg) == 3 and arg[0] in CONDITIONS:
            return resolve(arg[1] if CONDITIONS[arg[0]] else arg[2], params, where)
        if fn == "Ref":
            if arg == "AWS::Region":
                return REGION
            if arg in params:
                return str(params[arg].get("Default", ""))
            if arg in QUEUES:
                return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{LOCAL[arg]}"
            if arg in LOCAL:
                return LOCAL[arg]
        if fn == "Fn::GetAtt":
            target = arg[0] if isinstance(arg, list) else str(arg).split(".")[0]
            if target in LOCAL:
                return LOCAL[target]
    die(f"{where}: cannot resolve {value!r} locally (add it to LOCAL in scripts/smoke_aws.py)")


def plan(template_path, out_path):
    t = load_template(template_path)
    params = t.get("Parameters", {})
    resources = t.get("Resources", {})
    global_env = (((t.get("Globals") or {}).get("Function") or {}).get("Environment") or {}).get("Variables") or {}
    http_targets = set()
    for r in resources.values():
        if r.get("Type") == "AWS::ApiGatewayV2::Integration":
            uri = (r.get("Properties") or {}).get("IntegrationUri")
            if isinstance(uri, dict):
                ref = uri.get("Fn::GetAtt") or uri.get("Ref")
                http_targets.add(ref[0] if isinstance(ref, list) else str(ref).split(".")[0])
    functions = []
    for lid, r in sorted(resources.items()):
        if r.get("Type") != "AWS::Serverless::Function":
            continue
        props = r.get("Properties") or {}
        binary = (((r.get("Metadata") or {}).get("BuildProperties")) or {}).get("Binary")
        if not binary:
            die(f"{lid}: no Metadata.BuildProperties.Binary")
        kinds = {e.get("Type") for e in (props.get("Events") or {}).values()}
        if lid in http_targets:
            kind = "http"
        elif "Kinesis" in kinds:
            kind = "kinesis"
        elif "SQS" in kinds or "S3" in kinds:
            kind = "sqs"
        else:
            die(f"{lid}: no HTTP API, Kinesis, SQS or S3 source in the template")
        env_src = dict(global_env)
        env_src.update(((props.get("Environment") or {}).get("Variables")) or {})
        env = {k: resolve(v, params, f"{lid}.Environment.{k}") for k, v in env_src.items()}
        # The loader needs exactly one Redshift target; the template leaves both empty by default.
        if "REDSHIFT_WORKGROUP" in env and not env.get("REDSHIFT_WORKGROUP") and not env.get("REDSHIFT_CLUSTER_ID"):
            env["REDSHIFT_WORKGROUP"] = "smoke"
        env.update({k: v for k, v in OVERRIDES.items() if k in env})
        functions.append({
            "logical_id": lid,
            "binary": binary,
            "kind": kind,
            "memory": str(props.get("MemorySize") or 128),
            "env": env,
        })
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(functions, f, indent=1)
    for fn in functions:
        print(f"{fn['logical_id']}\t{fn['binary']}\t{fn['kind']}\t{fn['memory']}")


def client(service, endpoint):
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="smoke",
        aws_secret_access_key="smoke",
    )


def setup(endpoint):
    kinesis = client("kinesis", endpoint)
    kinesis.create_stream(StreamName=LOCAL["EventStream"], ShardCount=1)
    s3 = client("s3", endpoint)
    for b in ("RawBucket", "StagingBucket", "LakeBucket"):
        s3.create_bucket(Bucket=LOCAL[b])
    client("firehose", endpoint).create_delivery_stream(
        DeliveryStreamName=LOCAL["LakeDeliveryStream"],
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "BucketARN": f"arn:aws:s3:::{LOCAL['LakeBucket']}",
            "RoleARN": f"arn:aws:iam::{ACCOUNT}:role/smoke-firehose",
            "Prefix": "lake/",
            "CompressionFormat": "GZIP",
        },
    )
    for q in QUEUES:
        client("sqs", endpoint).create_queue(QueueName=LOCAL[q])


def s3_records(event):
    """(bucket, key) of every S3 record in a direct or SQS-wrapped notification."""
    out = []
    for rec in event.get("Records", []):
        if rec.get("eventSource") == "aws:sqs":
            body = json.loads(rec.get("body") or "{}")
            out.extend(s3_records(body))
        elif "s3" in rec:
            bucket = rec["s3"]["bucket"]["name"]
            # Notification keys are URL-encoded with '+' for spaces.
            key = urllib.parse.unquote_plus(rec["s3"]["object"]["key"])
            out.append((bucket, key))
    return out


def lake_retries(event):
    """(bucket, key, last line) of every lake retry message (raw-writer's own queue) in an event."""
    out = []
    for rec in event.get("Records", []):
        if rec.get("eventSource") != "aws:sqs":
            continue
        try:
            body = json.loads(rec.get("body") or "{}")
        except json.JSONDecodeError:
            continue
        if isinstance(body, dict) and {"bucket", "key", "lines"} <= body.keys():
            last = max((r[1] for r in body["lines"]), default=0)
            out.append((body["bucket"], body["key"], last))
    return out


def stage(endpoint, event_path):
    """Put the raw objects an event refers to in place, made from what raw-writer archived."""
    with open(event_path, encoding="utf-8") as f:
        event = json.load(f)
    notified = [(b, k) for b, k in s3_records(event) if k.startswith("raw/")]
    spills = [(b, k) for b, k in s3_records(event) if k.startswith("spill/")]
    retries = lake_retries(event)
    if not notified and not retries and not spills:
        return
    s3 = client("s3", endpoint)
    archived = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=LOCAL["RawBucket"], Prefix="raw/").get("Contents", [])
    ]
    if not archived:
        die(f"{event_path}: no raw/ object to stage from: raw-writer archived nothing")
    for bucket, key in notified:
        suffix = key.rsplit(".", 1)[-1]
        source = next((k for k in archived if k.endswith("." + suffix)), None)
        if source is None:
            die(f"{event_path}: needs a .{suffix} raw object but raw-writer wrote {archived}")
        body = s3.get_object(Bucket=LOCAL["RawBucket"], Key=source)["Body"].read()
        try:
            s3.create_bucket(Bucket=bucket)
        except Exception:  # noqa: BLE001 - already exists
            pass
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        print(f"staged s3://{bucket}/{key} from {source}")
    for bucket, key in spills:
        # A spill object as ingest-api writes it (docs/CONTRACTS.md §2a): the envelopes of an
        # archived raw object, one {"arrival","partition_key","envelope"} line each.
        source = next((k for k in archived if k.endswith(".gz")), None)
        if source is None:
            die(f"{event_path}: needs a .gz raw object but raw-writer wrote {archived}")
        raw_lines = gzip.decompress(
            s3.get_object(Bucket=LOCAL["RawBucket"], Key=source)["Body"].read()
        ).splitlines()
        out = []
        for line in raw_lines:
            raw = json.loads(line)
            out.append(json.dumps({
                "arrival": raw["kinesis"]["arrival"],
                "partition_key": raw["kinesis"]["partition_key"],
                "envelope": raw["envelope"],
            }, separators=(",", ":")))
        if not out:
            die(f"{source}: an empty raw object")
        s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(out) + "\n").encode())
        print(f"staged s3://{bucket}/{key} ({len(out)} spilled events from {source})")
    for bucket, key, last in retries:
        # The named lines must exist: archived lines, repeated as needed, gzip like raw/.
        source = next((k for k in archived if k.endswith(".gz")), None)
        if source is None:
            die(f"{event_path}: needs a .gz raw object but raw-writer wrote {archived}")
        lines = gzip.decompress(
            s3.get_object(Bucket=LOCAL["RawBucket"], Key=source)["Body"].read()
        ).splitlines()
        if not lines:
            die(f"{source}: an empty raw object")
        body = b"\n".join(lines[i % len(lines)] for i in range(last)) + b"\n"
        s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(body))
        print(f"staged s3://{bucket}/{key} ({last} lines from {source}) for a lake retry")


def check(kind, event_path, response_path):
    name = os.path.basename(event_path)
    with open(response_path, encoding="utf-8") as f:
        text = f.read().strip()
    try:
        resp = json.loads(text)
    except json.JSONDecodeError:
        die(f"{name}: response is not JSON: {text[:300]!r}")
    if kind == "http":
        status = resp.get("statusCode") if isinstance(resp, dict) else None
        if not isinstance(status, int):
            die(f"{name}: no statusCode in {text[:300]!r}")
        try:
            body = json.loads(resp.get("body") or "null")
        except (json.JSONDecodeError, TypeError):
            body = None
        rejected = body.get("rejected", 0) if isinstance(body, dict) else 0
        if status >= 500:
            die(f"{name}: statusCode {status}: {text[:500]}")
        if "invalid" in name or "unparseable" in name:
            # Bad input must be refused: a 4xx, or a 2xx receipt that rejects events one by one.
            if not (400 <= status < 500 or (200 <= status < 300 and rejected > 0)):
                die(f"{name}: statusCode {status} with {rejected} rejected, expected a refusal: {text[:500]}")
        elif not 200 <= status < 300 or rejected:
            die(f"{name}: statusCode {status} with {rejected} rejected, expected 2xx, none rejected: {text[:500]}")
        print(f"{name}: statusCode {status}" + (f", {rejected} rejected" if rejected else ""))
    elif kind == "sqs" and isinstance(resp, dict) and "batchItemFailures" not in resp and "failed" in resp:
        # A direct S3 event (sam local invoke -e events/rules-loader-s3-put.json) answers with a
        # summary; failures there are an error (so S3's asynchronous invoke retries).
        if resp.get("failed") != 0 or resp.get("loaded", 0) + resp.get("already_loaded", 0) < 1:
            die(f"{name}: expected every object loaded, got {text[:300]!r}")
        print(f"{name}: loaded {resp.get('loaded')}, already loaded {resp.get('already_loaded')}")
    elif kind in ("kinesis", "sqs"):
        failures = resp.get("batchItemFailures") if isinstance(resp, dict) else None
        if failures is None:
            die(f"{name}: no batchItemFailures in {text[:300]!r}")
        if failures:
            die(f"{name}: {len(failures)} item(s) failed: {text[:500]}")
        print(f"{name}: batchItemFailures []")
    else:
        die(f"unknown kind {kind}")


def verify(endpoint, binary):
    if binary == "ingest-api":
        kinesis = client("kinesis", endpoint)
        shards = kinesis.list_shards(StreamName=LOCAL["EventStream"])["Shards"]
        total = 0
        for shard in shards:
            it = kinesis.get_shard_iterator(
                StreamName=LOCAL["EventStream"], ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            records = kinesis.get_records(ShardIterator=it, Limit=10000)["Records"]
            for r in records:
                # One envelope, or a packed record of a request's envelopes (CONTRACTS.md 1a).
                for _, line in user_records(r["Data"], r["PartitionKey"]):
                    if b"\n" in line or b"\r" in line:
                        die("ingest-api wrote an envelope containing CR/LF (CONTRACTS.md section 1)")
                    env = json.loads(line)
                    if env.get("v") != 1 or not env.get("id"):
                        die(f"ingest-api wrote a record that is not a v1 envelope: {line[:200]!r}")
                    total += 1
        if total == 0:
            die("ingest-api answered 2xx but no record reached the Kinesis stream")
        print(f"ingest-api: {total} envelope(s) in the stream")
    elif binary == "raw-writer":
        s3 = client("s3", endpoint)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=LOCAL["RawBucket"]).get("Contents", [])]
        raw = [k for k in keys if k.startswith("raw/")]
        if not keys:
            die("raw-writer answered without failures but wrote no object to the raw bucket")
        lines = 0
        for k in raw:
            body = s3.get_object(Bucket=LOCAL["RawBucket"], Key=k)["Body"].read()
            if k.endswith(".gz"):
                body = gzip.decompress(body)
                for line in body.splitlines():
                    if "kinesis" not in json.loads(line):
                        die(f"{k}: line without kinesis coordinates")
                    lines += 1
        print(f"raw-writer: {len(keys)} object(s): {keys[:4]}; {lines} gzip line(s) checked")
    elif binary == "rules-loader":
        s3 = client("s3", endpoint)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=LOCAL["StagingBucket"]).get("Contents", [])]
        print(f"rules-loader: {len(keys)} staging/rejected object(s): {keys[:4]}")
    else:
        print(f"{binary}: no side effects to verify")


class DataApi(BaseHTTPRequestHandler):
    """Just enough of the Redshift Data API for an artifact smoke test."""

    statements = {}
    lock = threading.Lock()
    log_path = None

    def log_message(self, fmt, *args):  # silence the default stderr access log
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(length) or b"{}")
        op = (self.headers.get("X-Amz-Target") or "").split(".")[-1]
        with self.lock:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps({"op": op, "req": req}) + "\n")
            if op in ("ExecuteStatement", "BatchExecuteStatement"):
                sid = str(uuid.uuid4())
                sqls = req.get("Sqls") or [req.get("Sql", "")]
                self.statements[sid] = sqls
                self.reply(200, {"Id": sid, "Database": req.get("Database"), "CreatedAt": 0})
            elif op == "DescribeStatement":
                sid = req.get("Id", "")
                if sid not in self.statements:
                    self.reply(400, {"__type": "ResourceNotFoundException", "message": f"no statement {sid}"})
                    return
                self.reply(200, {
                    "Id": sid, "Status": "FINISHED", "HasResultSet": False, "ResultRows": 0,
                    "SubStatements": [
                        {"Id": f"{sid}:{i + 1}", "Status": "FINISHED", "HasResultSet": False, "ResultRows": 0}
                        for i, _ in enumerate(self.statements[sid])
                    ],
                })
            elif op == "GetStatementResult":
                self.reply(200, {"Records": [], "ColumnMetadata": [], "TotalNumRows": 0})
            elif op == "CancelStatement":
                self.reply(200, {"Status": True})
            else:
                self.reply(400, {"__type": "UnknownOperationException", "message": op})


def dataapi_stub(port, log_path):
    DataApi.log_path = log_path
    open(log_path, "w", encoding="utf-8").close()
    ThreadingHTTPServer(("127.0.0.1", int(port)), DataApi).serve_forever()


def main(argv):
    if not argv:
        die(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "free-port":
        print(free_port())
    elif cmd == "plan":
        plan(*args)
    elif cmd == "setup":
        setup(*args)
    elif cmd == "stage":
        stage(*args)
    elif cmd == "check":
        check(*args)
    elif cmd == "verify":
        verify(*args)
    elif cmd == "dataapi-stub":
        dataapi_stub(*args)
    else:
        die(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
