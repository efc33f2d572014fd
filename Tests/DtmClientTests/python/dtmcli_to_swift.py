"""DTM's Python SDK (dtmcli from PyPI) driving branch services written with DtmClient.

Usage: dtmcli_to_swift.py <dtm url, e.g. http://127.0.0.1:36789/api/dtmsvr> <busi base url>

Runs, against the Swift busi: a saga that succeeds, a saga whose TransIn answers FAILURE, a
tcc that commits and a tcc whose second try answers FAILURE. Prints one JSON line with the
gids, then waits until stdin closes.
"""

import contextlib
import io
import json
import sys

from dtmcli import saga, tcc, utils


def main():
    dtm, busi = sys.argv[1], sys.argv[2]
    gids = {}

    gid = utils.gen_gid(dtm)
    saga.Saga(dtm, gid).add({"amount": 30}, busi + "/TransOut", busi + "/TransOutRevert") \
        .add({"amount": 30}, busi + "/TransIn", busi + "/TransInRevert").submit()
    gids["saga"] = gid

    gid = utils.gen_gid(dtm)
    saga.Saga(dtm, gid).add({"amount": 30}, busi + "/TransOut", busi + "/TransOutRevert") \
        .add({"amount": 30, "trans_in_result": "FAILURE"}, busi + "/TransIn", busi + "/TransInRevert").submit()
    gids["saga_rollback"] = gid

    def transfer(t, in_result=""):
        t.call_branch({"amount": 30}, busi + "/TransOut", busi + "/Confirm", busi + "/TransOutRevert")
        t.call_branch({"amount": 30, "trans_in_result": in_result}, busi + "/TransIn",
                      busi + "/Confirm", busi + "/TransInRevert")

    gids["tcc"] = tcc.tcc_global_transaction(dtm, utils.gen_gid(dtm), transfer)

    gid = utils.gen_gid(dtm)
    with contextlib.redirect_stderr(io.StringIO()):  # the SDK prints the try's traceback
        if tcc.tcc_global_transaction(dtm, gid, lambda t: transfer(t, "FAILURE")) == "":
            gids["tcc_rollback"] = gid

    print(json.dumps(gids), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
