"""Generates mpt_client/_gen from ../proto before building (see generate_proto.py).

The generated modules are not kept in git: building the package (pip install
./python) runs protoc on the repository's proto/ folder. A source tree that
already holds mpt_client/_gen (made with generate_proto.py) builds without
the .proto files.
"""

import os
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "proto")

if os.path.isfile(os.path.join(PROTO_DIR, "mpt/v1/service.proto")):
    sys.path.insert(0, HERE)
    import generate_proto  # noqa: E402

    generate_proto.generate(PROTO_DIR, HERE)
elif not os.path.isfile(os.path.join(HERE, "mpt_client/_gen/service_pb2.py")):
    raise SystemExit("mpt_client: neither ../proto nor generated modules in mpt_client/_gen")

setup()
