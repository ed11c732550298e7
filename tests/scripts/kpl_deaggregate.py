#!/usr/bin/env python3
"""De-aggregates Kinesis records with AWS's own `aws-kinesis-agg` (PyPI), an implementation
independent of ours, for tests/kpl.rs.

Input (stdin): one JSON object per Kinesis record read from the stream:
  {"shard": "shardId-...", "pk": "...", "seq": "...", "data": "<base64>"}
Output (stdout): one JSON object per user record:
  {"shard": ..., "pk": ..., "ehk": ... or null, "data": "<base64>", "aggregated": true|false}
Exits 1 if a record carries the KPL magic but the library did not unpack it (bad MD5 or
protobuf), or if the library reported an error.
"""
import base64
import datetime
import io
import json
import sys
from contextlib import redirect_stderr

import aws_kinesis_agg
from aws_kinesis_agg.deaggregator import iter_deaggregate_records


def main():
    errors = io.StringIO()
    out = sys.stdout
    bad = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        rec = json.loads(line)
        data = base64.b64decode(rec["data"])
        boto3_record = {
            "SequenceNumber": rec["seq"],
            "PartitionKey": rec["pk"],
            "ApproximateArrivalTimestamp": datetime.datetime.now(datetime.timezone.utc),
            "Data": data,
        }
        with redirect_stderr(errors):
            users = list(iter_deaggregate_records([boto3_record], data_format="Boto3"))
        for u in users:
            k = u["kinesis"]
            aggregated = bool(k.get("aggregated"))
            payload = base64.b64decode(k["data"]) if aggregated else k["data"]
            if not aggregated and payload.startswith(aws_kinesis_agg.MAGIC):
                bad += 1
                print(f"record {rec['seq']} on {rec['shard']} has the KPL magic but was not de-aggregated",
                      file=sys.stderr)
            out.write(json.dumps({
                "shard": rec["shard"],
                "pk": k["partitionKey"],
                "ehk": k.get("explicitHashKey"),
                "data": base64.b64encode(payload).decode(),
                "aggregated": aggregated,
            }) + "\n")
    if errors.getvalue():
        sys.stderr.write(errors.getvalue())
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
