"""Reads transactions through coordinators' HTTP API (GET /api/dtmsvr/query), for any store.

Usage: api_dump.py BASE_URL[,BASE_URL...] GID_FILE (one gid a line) — prints the same JSON as
db_dump.py: {"globals": {gid: {status, trans_type, rollback_reason, branches: [{branch_id, op,
status}, ...]}}, "orphan_branches": 0}. Unknown gids are left out. Each gid is asked of the
coordinators in turn until one answers (some may be down).
"""
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from concurrent import futures


def query(bases, index, gid):
    last = None
    for attempt in range(len(bases) * 3):
        base = bases[(index + attempt) % len(bases)]
        url = f"{base}/api/dtmsvr/query?{urllib.parse.urlencode({'gid': gid})}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return gid, json.load(response)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError) as error:
            last = error
    raise SystemExit(f"query of {gid} failed on every coordinator: {last}")


def main():
    bases = sys.argv[1].split(",")
    with open(sys.argv[2], encoding="utf-8") as f:
        gids = [line.strip() for line in f if line.strip()]
    out = {}
    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        for gid, answer in pool.map(lambda item: query(bases, item[0], item[1]), enumerate(gids)):
            trans = answer.get("transaction")
            if not trans:
                continue
            out[gid] = {"trans_type": trans.get("trans_type", ""), "status": trans.get("status", ""),
                        "rollback_reason": trans.get("rollback_reason", ""),
                        "branches": [{"branch_id": b.get("branch_id", ""), "op": b.get("op", ""),
                                      "status": b.get("status", "")} for b in answer.get("branches", [])]}
    print(json.dumps({"globals": out, "orphan_branches": 0}))


if __name__ == "__main__":
    main()
