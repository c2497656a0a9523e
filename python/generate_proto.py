#!/usr/bin/env python3
"""Generates the protobuf and gRPC modules of mpt_client from proto/.

    python3 python/generate_proto.py [--proto_dir proto] [--out python]

writes OUT/mpt_client/_gen/{spec_pb2,service_pb2,service_pb2_grpc}.py. The
.proto files import each other as "proto/mpt/v1/...", which would make the
generated modules import a top-level package named "proto"; they are copied
to a scratch folder as "mpt_client/_gen/..." first, so the modules import
each other inside the package. Message and service names ("mpt.v1.Job",
"mpt.v1.JobService") do not change, nor does the wire format.

Uses `protoc` with Debian's `grpc_python_plugin` (package
protobuf-compiler-grpc) when both are on PATH, otherwise grpcio-tools
(`python3 -m grpc_tools.protoc`). Needs no network.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

PROTOS = ("spec.proto", "service.proto")
PACKAGE_DIR = "mpt_client/_gen"


def _include_dirs():
    """Folders holding google/protobuf/*.proto for protoc."""
    dirs = []
    for d in ("/usr/include", "/usr/local/include"):
        if os.path.isfile(os.path.join(d, "google/protobuf/timestamp.proto")):
            dirs.append(d)
    return dirs


def _protoc_command():
    protoc = shutil.which("protoc")
    plugin = shutil.which("grpc_python_plugin")
    if protoc and plugin:
        return [protoc, "--plugin=protoc-gen-grpc_python=" + plugin], "--grpc_python_out"
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        raise SystemExit(
            "generate_proto: need `protoc` and `grpc_python_plugin` on PATH "
            "(Debian: protobuf-compiler protobuf-compiler-grpc) or grpcio-tools")
    return [sys.executable, "-m", "grpc_tools.protoc"], "--grpc_python_out"


def generate(proto_dir, out_dir):
    """Writes the generated modules under out_dir/mpt_client/_gen."""
    proto_dir = os.path.abspath(proto_dir)
    out_dir = os.path.abspath(out_dir)
    with tempfile.TemporaryDirectory(prefix="mpt_proto_") as scratch:
        staged = os.path.join(scratch, PACKAGE_DIR)
        os.makedirs(staged)
        for name in PROTOS:
            with open(os.path.join(proto_dir, "mpt/v1", name), encoding="utf-8") as f:
                text = f.read()
            text = re.sub(r'import "proto/mpt/v1/([a-z_]+\.proto)";',
                          r'import "%s/\1";' % PACKAGE_DIR, text)
            with open(os.path.join(staged, name), "w", encoding="utf-8") as f:
                f.write(text)
        target = os.path.join(out_dir, PACKAGE_DIR)
        os.makedirs(target, exist_ok=True)
        command, grpc_flag = _protoc_command()
        command = command + ["-I" + scratch] + ["-I" + d for d in _include_dirs()]
        command += ["--python_out=" + out_dir, grpc_flag + "=" + out_dir]
        command += [os.path.join(PACKAGE_DIR, name) for name in PROTOS]
        subprocess.run(command, cwd=scratch, check=True)
    # Only the service has stubs; protoc writes an empty spec_pb2_grpc.py.
    empty = os.path.join(target, "spec_pb2_grpc.py")
    if os.path.exists(empty):
        os.remove(empty)
    with open(os.path.join(target, "__init__.py"), "w", encoding="utf-8") as f:
        f.write('"""Generated from proto/mpt/v1 by python/generate_proto.py."""\n')
    return target


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto_dir", default=os.path.join(here, "..", "proto"),
                        help="the repository's proto/ folder")
    parser.add_argument("--out", default=here,
                        help="the folder that gets mpt_client/_gen (default: python/)")
    args = parser.parse_args()
    print(generate(args.proto_dir, args.out))


if __name__ == "__main__":
    main()
