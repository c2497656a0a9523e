"""C++ code generation for .proto files with Debian's protoc and grpc_cpp_plugin.

cc_proto_library needs the protobuf Bazel repository, which an offline build
does not have, so a genrule runs the system compilers instead.
"""

def proto_cc_library(name, srcs, deps = [], grpc = False, visibility = None):
    """Generates and compiles C++ for `srcs` (paths relative to the workspace root).

    Args:
      name: the cc_library to create.
      srcs: .proto files of this package.
      deps: other proto_cc_library targets whose protos these import.
      grpc: also generate gRPC service stubs (*.grpc.pb.{h,cc}).
      visibility: visibility of the cc_library.
    """
    pkg = native.package_name()
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    cmd = "protoc -I. --cpp_out=$(GENDIR)"
    if grpc:
        cmd += " --grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin"
    cmd += " " + " ".join(["%s/%s" % (pkg, s) for s in srcs])
    native.genrule(
        name = name + "_gen",
        srcs = srcs + [d + "_srcs" for d in deps],
        outs = outs,
        cmd = cmd,
    )
    native.filegroup(name = name + "_srcs", srcs = srcs, visibility = visibility)
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["@system_libs//:grpc" if grpc else "@system_libs//:protobuf"],
        visibility = visibility,
    )
