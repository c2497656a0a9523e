"""C++ code generation for .proto files with Debian's protoc and grpc_cpp_plugin.

cc_proto_library needs the protobuf Bazel repository, which an offline build
does not have, so genrules run the system compilers instead. Messages and
gRPC stubs are separate libraries: code that only handles the messages (the
job store, the coordinator's logic) does not link gRPC.
"""

def _gen_cmd(pkg, srcs, out_flags):
    return "protoc -I. %s %s" % (out_flags, " ".join(["%s/%s" % (pkg, s) for s in srcs]))

def _generated_library(name, srcs, suffixes, gen_srcs, out_flags, deps, visibility):
    """A genrule running protoc over `srcs` and the cc_library of its outputs."""
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + suffix for suffix in suffixes]
    native.genrule(
        name = name + "_gen",
        srcs = gen_srcs,
        outs = outs,
        cmd = _gen_cmd(native.package_name(), srcs, out_flags),
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps,
        visibility = visibility,
    )

def proto_cc_library(name, srcs, deps = [], visibility = None):
    """Generates and compiles the C++ messages of `srcs` (*.pb.{h,cc}).

    Args:
      name: the cc_library to create.
      srcs: .proto files of this package.
      deps: other proto_cc_library targets whose protos these import.
      visibility: visibility of the cc_library.
    """
    native.filegroup(name = name + "_srcs", srcs = srcs + [d + "_srcs" for d in deps], visibility = visibility)
    _generated_library(
        name,
        srcs,
        [".pb.h", ".pb.cc"],
        srcs + [d + "_srcs" for d in deps],
        "--cpp_out=$(GENDIR)",
        deps + ["@system_libs//:protobuf"],
        visibility,
    )

def grpc_cc_library(name, srcs, proto, visibility = None):
    """Generates and compiles the gRPC service stubs of `srcs` (*.grpc.pb.{h,cc}).

    Args:
      name: the cc_library to create.
      srcs: .proto files of this package that define services.
      proto: the proto_cc_library with the messages of `srcs`.
      visibility: visibility of the cc_library.
    """
    _generated_library(
        name,
        srcs,
        [".grpc.pb.h", ".grpc.pb.cc"],
        [proto + "_srcs"],
        "--grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin",
        [proto, "@system_libs//:grpc"],
        visibility,
    )
