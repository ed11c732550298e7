#!/usr/bin/env python3
"""Minimal Kinesis client for the demo (Python standard library only, SigV4-signed):
create a stream and print what arrived in it.

  kinesis-tool.py ENDPOINT create STREAM SHARDS
  kinesis-tool.py ENDPOINT show STREAM [--max-lines N]
  kinesis-tool.py ENDPOINT count STREAM
"""
import base64, datetime, hashlib, hmac, json, os, sys, time, urllib.request, urllib.error

REGION = os.environ.get("AWS_REGION", "us-east-1")
KEY = os.environ.get("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
SECRET = os.environ.get("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


def call(endpoint, op, body):
    data = json.dumps(body).encode()
    host = endpoint.split("://", 1)[1].split("/", 1)[0]
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {"content-type": "application/x-amz-json-1.1", "host": host, "x-amz-date": amz_date,
               "x-amz-target": f"Kinesis_20131202.{op}"}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["POST", "/", "", "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed,
                           hashlib.sha256(data).hexdigest()])
    scope = f"{day}/{REGION}/kinesis/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + SECRET).encode()
    for part in (day, REGION, "kinesis", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = f"AWS4-HMAC-SHA256 Credential={KEY}/{scope}, SignedHeaders={signed}, Signature={sig}"
    req = urllib.request.Request(endpoint, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{op} failed: HTTP {e.code}: {e.read().decode(errors='replace')}")
    except urllib.error.URLError as e:
        raise SystemExit(f"{op} failed: cannot reach {endpoint}: {e.reason}")


def records(endpoint, stream):
    shards = call(endpoint, "ListShards", {"StreamName": stream})["Shards"]
    for s in shards:
        it = call(endpoint, "GetShardIterator", {"StreamName": stream, "ShardId": s["ShardId"],
                                                 "ShardIteratorType": "TRIM_HORIZON"})["ShardIterator"]
        while it:
            r = call(endpoint, "GetRecords", {"ShardIterator": it, "Limit": 10000})
            for rec in r["Records"]:
                yield s["ShardId"], rec["PartitionKey"], base64.b64decode(rec["Data"])
            if not r["Records"] and r.get("MillisBehindLatest", 0) == 0:
                break
            it = r.get("NextShardIterator")


def main():
    import argparse
    p = argparse.ArgumentParser(description="Minimal Kinesis client for the demo: create a stream, show or count what arrived.")
    p.add_argument("endpoint", help="e.g. http://127.0.0.1:4567")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="create a stream and wait until it is ACTIVE")
    c.add_argument("stream")
    c.add_argument("shards", type=int)
    s = sub.add_parser("show", help="print the first records and the count per shard")
    s.add_argument("stream")
    s.add_argument("--max-lines", type=int, default=10, metavar="N", help="records printed (default 10)")
    n = sub.add_parser("count", help="print the number of records")
    n.add_argument("stream")
    args = p.parse_args()
    endpoint, stream = args.endpoint, args.stream
    if args.cmd == "create":
        call(endpoint, "CreateStream", {"StreamName": stream, "ShardCount": args.shards})
        for _ in range(100):
            st = call(endpoint, "DescribeStreamSummary", {"StreamName": stream})
            if st["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
            time.sleep(0.1)
        raise SystemExit(f"stream {stream} did not become ACTIVE")
    elif args.cmd == "count":
        print(sum(1 for _ in records(endpoint, stream)))
    else:
        per_shard, n = {}, 0
        for shard, key, data in records(endpoint, stream):
            per_shard[shard] = per_shard.get(shard, 0) + 1
            if n < args.max_lines:
                print(f"  {shard}  key={key}  {data!r}")
            n += 1
        print(f"{n} record(s) in stream {stream}: " + ", ".join(f"{s}: {c}" for s, c in sorted(per_shard.items())))


if __name__ == "__main__":
    main()
