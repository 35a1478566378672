"""Whether this machine has an NVIDIA GPU, as a Starlark constant.

GPU tests are compatible only under --config=cuda AND with a device present,
so on a machine without one Bazel reports them SKIPPED, never PASSED. The
probe looks for the driver's device nodes; TRIREME_GPU=1/0 overrides it.
"""

def _gpu_probe_impl(rctx):
    forced = rctx.os.environ.get("TRIREME_GPU", "")
    if forced in ["0", "1"]:
        has = forced == "1"
    else:
        has = rctx.path("/dev/nvidiactl").exists or rctx.path("/dev/nvidia0").exists
    rctx.file("BUILD", "")
    rctx.file("defs.bzl", "HAS_GPU = %s\n" % ("True" if has else "False"))

gpu_probe = repository_rule(
    implementation = _gpu_probe_impl,
    local = True,
    environ = ["TRIREME_GPU"],
)
