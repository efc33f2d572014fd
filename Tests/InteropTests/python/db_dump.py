"""Reads swift-dtm's SQLite store with Python's own sqlite3 module (an independent reader).

Usage: db_dump.py PATH — prints {"globals": {gid: {status, trans_type, rollback_reason, branches:
[{branch_id, op, status}, ...] in stored order}}, "orphan_branches": count of branch rows whose gid has
no global row}.
"""
import json
import sqlite3
import sys


def main():
    db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=10)
    out = {}
    for gid, trans_type, status, reason in db.execute(
            "SELECT gid, trans_type, status, rollback_reason FROM trans_global ORDER BY id"):
        out[gid] = {"trans_type": trans_type, "status": status, "rollback_reason": reason, "branches": []}
    orphans = 0
    for gid, branch_id, op, status in db.execute(
            "SELECT gid, branch_id, op, status FROM trans_branch_op ORDER BY id"):
        if gid in out:
            out[gid]["branches"].append({"branch_id": branch_id, "op": op, "status": status})
        else:
            orphans += 1
    print(json.dumps({"globals": out, "orphan_branches": orphans}))


if __name__ == "__main__":
    main()
