"""The public C++ API, for trainers built with Bazel in this workspace
(examples/embed): these headers, and only these, are the interface; every
other header is the implementation's and may change. Each compiles on its
own and pulls in nothing from an internal/ directory nor the CPU SIMD header
(//include/trireme:public_headers). nccl_comm.h joins them under
--config=cuda (not checked here: it needs the CUDA toolkit).
"""

PUBLIC_CPP_HEADERS = [
    "runtime/zero/engine.h",  # ZeroEngine: units, hooks, views, step
    "optimizer/optimizer.h",  # AdamW / SGD options
    "runtime/comm/communicator.h",  # the collective interface
    "runtime/comm/threads_comm.h",  # ranks as threads (RunOnRanks)
    "runtime/comm/mpi_comm.h",  # ranks as processes under mpirun
    "runtime/grid/grid.h",  # DP x TP x PP groups
    "runtime/checkpoint/checkpoint.h",  # sharded, world-size-independent checkpoints
    "runtime/core/memory.h",  # MemoryTracker: bytes per category
    "runtime/core/device.h",
    "runtime/core/dtype.h",
    "runtime/core/stream.h",
    "runtime/core/view.h",
    "runtime/core/status.h",  # RETURN_IF_ERROR / ASSIGN_OR_RETURN
]
