"""Generates grpcio stubs from the repository's proto/ into a temporary folder and imports them.

Used by the interop peers so they talk to swift-dtm exactly as any user's generated stubs do.
The folder is deleted as soon as the modules are imported (they do not read it again), so a
peer that a test kills with SIGKILL, where atexit never runs, leaves nothing behind.
"""
import importlib
import os
import shutil
import sys
import tempfile

import grpc_tools
from grpc_tools import protoc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def load(*protos):
    out = tempfile.mkdtemp(prefix="dtm-stubs-")
    try:
        return _generate(out, protos)
    finally:
        if out in sys.path:
            sys.path.remove(out)
        shutil.rmtree(out, True)


def _generate(out, protos):
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{os.path.join(ROOT, 'proto')}", f"-I{include}",
            f"--python_out={out}", f"--grpc_python_out={out}"] + [f"{p}.proto" for p in protos]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {protos}")
    sys.path.insert(0, out)
    modules = []
    for p in protos:
        modules.append(importlib.import_module(f"{p}_pb2"))
        modules.append(importlib.import_module(f"{p}_pb2_grpc"))
    return modules
