"""C++ code generation for .proto files with Debian's protoc and grpc_cpp_plugin.

cc_proto_library needs the protobuf Bazel repository, which an offline build
does not have, so genrules run the system compilers instead. Messages and
gRPC stubs are separate libraries: code that only handles the messages (the
job store, the coordinator's logic) does not link gRPC.
"""

def _gen_cmd(pkg, srcs, out_flags):
    return "protoc -I. %s %s" % (out_flags, " ".join(["%s/%s" % (pkg, s) for s in srcs]))

def proto_cc_library(name, srcs, deps = [], visibility = None):
    """Generates and compiles the C++ messages of `srcs` (*.pb.{h,cc}).

    Args:
      name: the cc_library to create.
      srcs: .proto files of this package.
      deps: other proto_cc_library targets whose protos these import.
      visibility: visibility of the cc_library.
    """
    pkg = native.package_name()
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
    native.genrule(
        name = name + "_gen",
        srcs = srcs + [d + "_srcs" for d in deps],
        outs = outs,
        cmd = _gen_cmd(pkg, srcs, "--cpp_out=$(GENDIR)"),
    )
    native.filegroup(name = name + "_srcs", srcs = srcs + [d + "_srcs" for d in deps], visibility = visibility)
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["@system_libs//:protobuf"],
        visibility = visibility,
    )

def grpc_cc_library(name, srcs, proto, visibility = None):
    """Generates and compiles the gRPC service stubs of `srcs` (*.grpc.pb.{h,cc}).

    Args:
      name: the cc_library to create.
      srcs: .proto files of this package that define services.
      proto: the proto_cc_library with the messages of `srcs`.
      visibility: visibility of the cc_library.
    """
    pkg = native.package_name()
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    native.genrule(
        name = name + "_gen",
        srcs = [proto + "_srcs"],
        outs = outs,
        cmd = _gen_cmd(pkg, srcs, "--grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin"),
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = [proto, "@system_libs//:grpc"],
        visibility = visibility,
    )
