"""Brings libtorch into the build.

By default Debian's libtorch (1.13, CPU) under /usr. When the environment
variable MPT_LIBTORCH names a folder, that folder is used instead: a libtorch
distribution or the `torch/` folder of a `torch` wheel (include/, lib/,
share/cmake/). A folder that has libtorch_cuda.so makes a CUDA build: the
generated defs.bzl then says TORCH_CUDA = True and the NCCL communicator is
compiled.

MPT_LIBTORCH_CUDA chooses otherwise: `0` makes a CPU build from any folder,
CUDA wheel included (`--config=torch2cpu` sets it): the binaries link
libtorch_cpu.so and libc10.so only, never libtorch.so or libtorch_cuda.so,
so no GPU library is loaded. A CUDA wheel's libtorch_cpu.so still needs the
CUDA runtime and CUPTI libraries (libcudart.so.13, libcupti.so.13: small,
and they load without a GPU). The loader finds them through that
library's own run path, nvidia/cu13/lib beside torch/ (where a pip install
or tools/fetch_libtorch.sh puts them); failing that, a CUDA toolkit
(MPT_CUDA) that is on the loader's path (ld.so.conf, LD_LIBRARY_PATH) will
do. The rule checks that each is in one of those places and fails naming
the file when one is nowhere. `1` insists on a CUDA
build; unset or `auto` decides by libtorch_cuda.so as above.

A CUDA build also gets `@libtorch//:nccl`: the CUDA runtime and NCCL headers
and libraries of the CUDA toolkit that MPT_CUDA names (default
/usr/local/cuda). At run time the wheel's own copies (nvidia/nccl/lib,
nvidia/cu13/lib next to torch/) come first when they are there.

defs.bzl also defines `cuda_only_cc_library`: a cc_library in a CUDA build
and, in a CPU build, a `manual` target that fails with an explanation when it
is built by name.
"""

_CUDA_ONLY_MACRO = """
def cuda_only_cc_library(name, **kwargs):
    \"\"\"A cc_library that exists only when libtorch is a CUDA build.\"\"\"
    if TORCH_CUDA:
        native.cc_library(name = name, **kwargs)
    else:
        native.genrule(
            name = name,
            outs = [name + ".needs_cuda_libtorch"],
            cmd = "echo '%s needs a CUDA libtorch: build with MPT_LIBTORCH=<a CUDA libtorch or torch wheel torch/ folder>' >&2; exit 1" % name,
            tags = ["manual"],
            visibility = kwargs.get("visibility"),
        )
"""

def _nccl_library(ctx, root):
    """The cc_library text of @libtorch//:nccl (CUDA builds only)."""
    cuda = ctx.path(ctx.os.environ.get("MPT_CUDA", "/usr/local/cuda"))
    if not cuda.get_child("include").get_child("nccl.h").exists:
        return "# No NCCL: %s/include/nccl.h does not exist (set MPT_CUDA to a CUDA toolkit with NCCL).\n" % cuda
    ctx.symlink(cuda.get_child("include"), "cuda_include")
    rpaths = []
    nvidia = root.dirname.get_child("nvidia")
    for sub in ["nccl", "cu13", "cuda_runtime"]:
        lib = nvidia.get_child(sub).get_child("lib")
        if lib.exists:
            rpaths.append(str(lib))
    rpaths.append(str(cuda.get_child("lib64")))
    return """cc_library(
    name = "nccl",
    hdrs = glob(["cuda_include/*.h", "cuda_include/*.hpp", "cuda_include/crt/**", "cuda_include/nv/**"]),
    includes = ["cuda_include"],
    linkopts = ["-L{lib}"] + {rpaths} + ["-lnccl", "-lcudart"],
)
""".format(lib = str(cuda.get_child("lib64")), rpaths = repr(["-Wl,-rpath," + r for r in rpaths]))

# Libraries a libtorch_cpu.so may need that the C library, the C++ runtime
# and libtorch's own lib/ folder do not provide.
_SYSTEM_LIB = ["libc.so", "libm.so", "libdl.so", "librt.so", "libpthread.so", "libgcc_s.so",
               "libstdc++.so", "ld-linux"]

def _needed(ctx, lib):
    """The DT_NEEDED names of a shared library (objdump -p)."""
    r = ctx.execute(["objdump", "-p", str(lib)])
    if r.return_code != 0:
        fail("objdump -p %s failed: %s" % (lib, r.stderr))
    names = []
    for line in r.stdout.splitlines():
        line = line.strip()
        if line.startswith("NEEDED "):
            names.append(line[len("NEEDED "):].strip())
    return names

def _cpu_runtime_dirs(ctx, root):
    """Folders holding what libtorch_cpu.so needs beyond lib/ and the system.

    A CUDA wheel's libtorch_cpu.so needs libcudart and libcupti; they are
    looked for beside the wheel (nvidia/*/lib), then in the CUDA toolkit
    (MPT_CUDA, default /usr/local/cuda). Returns the folders to put on the
    run path; fails naming the library that is nowhere.
    """
    lib = root.get_child("lib")
    nvidia = root.dirname.get_child("nvidia")
    cuda = ctx.path(ctx.os.environ.get("MPT_CUDA", "/usr/local/cuda"))
    candidates = [nvidia.get_child(sub).get_child("lib") for sub in ["cu13", "cu12", "cuda_runtime", "cuda_cupti"]]
    candidates += [cuda.get_child("lib64"), cuda.get_child("lib"),
                   cuda.get_child("extras").get_child("CUPTI").get_child("lib64")]
    dirs = []
    for name in _needed(ctx, lib.get_child("libtorch_cpu.so")):
        if [p for p in _SYSTEM_LIB if name.startswith(p)] or lib.get_child(name).exists:
            continue
        found = None
        for c in candidates:
            if c.get_child(name).exists:
                found = c
                break
        if found == None:
            if name.startswith("libcu") or name.startswith("libnv"):
                fail(("%s/lib/libtorch_cpu.so needs %s, which is neither in %s nor in %s: unpack the " +
                      "matching nvidia-cuda-runtime / nvidia-cuda-cupti wheels there (tools/fetch_libtorch.sh " +
                      "does) or set MPT_CUDA to a CUDA toolkit that has it") % (root, name, nvidia, cuda))
            continue  # a system library (libgomp and the like): the loader finds it
        if str(found) not in dirs:
            dirs.append(str(found))
    return dirs

def _read_abi(ctx, root):
    cfg = root.get_child("share").get_child("cmake").get_child("Torch").get_child("TorchConfig.cmake")
    if not cfg.exists:
        return None
    text = ctx.read(cfg)
    for abi in ["0", "1"]:
        if "_GLIBCXX_USE_CXX11_ABI=" + abi in text:
            return abi
    return None

def _libtorch_impl(ctx):
    folder = ctx.os.environ.get("MPT_LIBTORCH", "")
    lines = [
        "# Generated by //third_party:libtorch.bzl; do not edit.",
        'package(default_visibility = ["//visibility:public"])',
        "",
    ]
    if folder:
        root = ctx.path(folder)
        if not root.get_child("include").exists or not root.get_child("lib").exists:
            fail("MPT_LIBTORCH=%s has no include/ and lib/ folders; point it at a libtorch folder or a torch wheel's torch/ folder" % folder)
        # Every header folder but google/: a wheel carries the headers of the
        # protobuf it was built with, which would shadow the system protobuf
        # that our generated code and gRPC are compiled against.
        for child in root.get_child("include").readdir():
            if child.basename != "google":
                ctx.symlink(child, "include/" + child.basename)
        ctx.symlink(root.get_child("lib"), "lib")
        has_cuda = root.get_child("lib").get_child("libtorch_cuda.so").exists
        want = ctx.os.environ.get("MPT_LIBTORCH_CUDA", "auto")
        if want in ["", "auto"]:
            cuda = has_cuda
        elif want == "0":
            cuda = False
        elif want == "1":
            if not has_cuda:
                fail("MPT_LIBTORCH_CUDA=1 but %s/lib has no libtorch_cuda.so (not a CUDA libtorch)" % folder)
            cuda = True
        else:
            fail("MPT_LIBTORCH_CUDA=%s: must be 0 (CPU build), 1 (CUDA build) or auto" % want)
        if cuda:
            libs = ["lib/libtorch.so", "lib/libtorch_cpu.so", "lib/libc10.so",
                    "lib/libtorch_cuda.so", "lib/libc10_cuda.so"]
            cpu_link = []
        else:
            # libtorch.so of a CUDA wheel pulls in libtorch_cuda.so and every
            # CUDA library; the CPU build links the two it needs. They are
            # linked from their own folder (-L/-l, not through Bazel's
            # _solib symlinks) so that the loader opens them there and
            # libtorch_cpu.so's $ORIGIN run path finds the wheel's libgomp
            # and the nvidia/cu13/lib folder beside torch/.
            libs = []
            cpu_link = ["-Wl,-rpath," + d for d in _cpu_runtime_dirs(ctx, root)]
            cpu_link += ["-L" + str(root.get_child("lib")), "-Wl,--push-state,--no-as-needed",
                               "-ltorch_cpu", "-lc10", "-Wl,--pop-state"]
        abi = _read_abi(ctx, root)
        defines = ["_GLIBCXX_USE_CXX11_ABI=" + abi] if abi else []
        # A wheel's libtorch.so exports std::filesystem functions of the
        # older libstdc++ it was built with (remove_all crashed a target
        # stage's checkpoint). The system libstdc++ goes ahead of libtorch
        # on the link line, so the dynamic linker binds those names to it.
        ctx.symlink(ctx.path(ctx.os.environ.get("MPT_LIBSTDCXX", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6")),
                    "stdcxx/libstdc++.so.6")
        lines.append("""cc_library(
    name = "libtorch",
    srcs = ["stdcxx/libstdc++.so.6"],
    deps = [":libtorch_files"],
)""")
        lines.append("""cc_library(
    name = "libtorch_files",
    hdrs = glob(["include/**"]),
    includes = ["include", "include/torch/csrc/api/include"],
    srcs = {libs},
    defines = {defines},
    linkopts = ["-Wl,-rpath,{lib}"] + {cpu_link} + ["-Wl,--push-state,--no-as-needed"] + {cuda_link} + ["-Wl,--pop-state", "-lpthread"],
)""".format(libs = repr(libs), defines = repr(defines), lib = str(root.get_child("lib")),
            cpu_link = repr(cpu_link),
            cuda_link = repr(["-L" + str(root.get_child("lib")), "-ltorch_cuda", "-lc10_cuda"] if cuda else [])))
        if cuda:
            lines.append(_nccl_library(ctx, root))
        ctx.file("defs.bzl", "TORCH_CUDA = %s\nTORCH_FOLDER = %r\n" % (cuda, folder) + _CUDA_ONLY_MACRO)
    else:
        api = ctx.path("/usr/include/torch/csrc/api/include")
        if not api.exists:
            fail("Debian's libtorch headers are missing (/usr/include/torch/csrc/api/include); run tools/setup.sh or set MPT_LIBTORCH")
        ctx.symlink(api, "api_include")
        lines.append("""cc_library(
    name = "libtorch",
    hdrs = glob(["api_include/**"]),
    includes = ["api_include"],
    linkopts = ["-ltorch", "-ltorch_cpu", "-lc10", "-lpthread"],
)""")
        ctx.file("defs.bzl", "TORCH_CUDA = False\nTORCH_FOLDER = \"\"\n" + _CUDA_ONLY_MACRO)
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)
    ctx.file("BUILD.bazel", "\n".join(lines) + "\n")

libtorch_repository = repository_rule(
    implementation = _libtorch_impl,
    environ = ["MPT_LIBTORCH", "MPT_LIBTORCH_CUDA", "MPT_CUDA", "MPT_LIBSTDCXX"],
    local = True,
    doc = "libtorch: Debian's by default, or the folder that MPT_LIBTORCH names.",
)
