"""Model tests on both host devices."""

def cpu_and_async_test(name, srcs, deps, size = "small", async_env = {}):
    """A cc_test on the cpu device, and `name`_async on cpu_async.

    Args:
      name: the cpu test's name.
      srcs: C++ sources (they read the device from $TRIREME_TEST_DEVICE).
      deps: cc deps.
      size: both tests' size.
      async_env: more environment for the cpu_async test.
    """
    native.cc_test(name = name, size = size, srcs = srcs, deps = deps)
    env = {"TRIREME_TEST_DEVICE": "cpu_async"}
    env.update(async_env)
    native.cc_test(name = name + "_async", size = size, srcs = srcs, deps = deps, env = env)
