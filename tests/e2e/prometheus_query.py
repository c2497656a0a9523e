#!/usr/bin/env python3
"""Asks a Prometheus server one instant query through its HTTP API.

  prometheus_query.py http://127.0.0.1:9090 'sum(mpt_jobs{state="SUCCEEDED"})'

Prints the value of each series of the answer, one "labels value" line
each, sorted; exits 1 when the answer is not a successful vector or is
empty, 2 when the server cannot be reached.
"""
import json
import sys
import urllib.error
import urllib.parse
import urllib.request


def main():
    base, query = sys.argv[1], sys.argv[2]
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.load(response)
    except (urllib.error.URLError, OSError) as e:
        print(f"cannot query {url}: {e}", file=sys.stderr)
        return 2
    if answer.get("status") != "success" or answer["data"]["resultType"] != "vector":
        print(f"unexpected answer: {answer}", file=sys.stderr)
        return 1
    results = answer["data"]["result"]
    if not results:
        return 1
    lines = []
    for r in results:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(r["metric"].items()))
        lines.append(f"{{{labels}}} {r['value'][1]}")
    print("\n".join(sorted(lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
