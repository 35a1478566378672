"""CUDA build rules: nvcc through a genrule, linked through a cc_library.

Every target made here exists only under --config=cuda; in the default build it is
incompatible and Bazel skips it, so nothing needs CUDA without that config.
"""

load("@gpu_probe//:defs.bzl", "HAS_GPU")

# SASS for A100 (sm_80) and H100/H200 (sm_90), plus compute_90 PTX that the
# driver JIT-compiles for newer GPUs (Blackwell and later) that have no SASS here.
CUDA_ARCHS = ["80", "90"]
PTX_ARCH = "90"

CUDA_ONLY = select({
    "//:cuda": [],
    "//conditions:default": ["//:never"],
})

def _gencode_flags():
    return " ".join([
        "-gencode arch=compute_%s,code=sm_%s" % (a, a)
        for a in CUDA_ARCHS
    ] + ["-gencode arch=compute_%s,code=compute_%s" % (PTX_ARCH, PTX_ARCH)])

def cuda_library(name, srcs, hdrs = [], cu_hdrs = [], deps = [], visibility = None):
    """Compiles .cu files with nvcc and wraps the objects in a cc_library.

    Args:
      name: the cc_library's name.
      srcs: .cu files.
      hdrs: headers the .cu files include (ours), exported by the cc_library.
      cu_hdrs: other headers (file labels) the .cu files include; they are the
        nvcc action's declared inputs.
      deps: cc_library targets the result links against.
      visibility: passed to the cc_library.
    """
    objs = []
    for src in srcs:
        stem = src.replace("/", "_").replace(".cu", "")
        obj = "%s_%s.o" % (name, stem)
        native.genrule(
            name = "%s_%s_nvcc" % (name, stem),
            srcs = [src] + hdrs + cu_hdrs,
            outs = [obj],
            cmd = ("/usr/local/cuda/bin/nvcc -c -std=c++17 -O3 " +
                   "-Xcompiler -fPIC --expt-relaxed-constexpr --fmad=false " +
                   _gencode_flags() +
                   " -I. -I$(GENDIR) -o $@ $(location %s)" % src),
            target_compatible_with = CUDA_ONLY,
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:cudart"],
        target_compatible_with = CUDA_ONLY,
        visibility = visibility,
    )

# Compatible only under --config=cuda on a machine with a GPU.
GPU_PRESENT = select({
    "//:cuda": [] if HAS_GPU else ["//:never"],
    "//conditions:default": ["//:never"],
})

def gpu_test(name, srcs, deps = [], size = "small", copts = []):
    """A test that needs a GPU: its binary builds under --config=cuda (so CI
    compiles and links it everywhere), and the test itself is compatible only
    where a device exists, so elsewhere Bazel reports it SKIPPED. The binary
    never skips itself: run without a usable device (TRIREME_GPU=1 forced on a
    machine without one) it fails, naming the missing device or driver.

    Args:
      name: the test's name (the binary is name + "_bin").
      srcs: C++ sources.
      deps: cc deps.
      size: the test size.
      copts: compiler options.
    """
    native.cc_binary(
        name = name + "_bin",
        testonly = True,
        srcs = srcs,
        copts = copts,
        deps = deps,
        target_compatible_with = CUDA_ONLY,
    )
    native.sh_test(
        name = name,
        size = size,
        srcs = ["//tools:run_gpu_test.sh"],
        args = ["$(location :%s_bin)" % name],
        data = [":%s_bin" % name],
        tags = ["gpu"],
        target_compatible_with = GPU_PRESENT,
    )
