"""//:train shell tests, each as a pair: ranks as threads, and (name_mpi_test)
mpirun processes -- the same script with "mpi" as its last argument."""

def train_test_pair(name, script, size = "medium", mpi_size = None, ckpt = False):
    """name_test and name_mpi_test running `script` on :train.

    ckpt: the script also takes //tools:ckpt's path (second argument) and
    needs it. mpi_size: the mpirun variant's size (default `size`). The
    mpirun variant is exclusive: several mpirun jobs at once have failed to
    start (PMIx).
    """
    args = ["$(location :train)"] + (["$(location :ckpt)"] if ckpt else [])
    data = [":train", ":ckpt", "train_test_lib.sh"]
    native.sh_test(name = name + "_test", size = size, srcs = [script], args = args, data = data)
    native.sh_test(
        name = name + "_mpi_test",
        size = mpi_size or size,
        srcs = [script],
        args = args + ["mpi"],
        data = data,
        # no_asan: the ASan run leaves it out (it runs serially, and its
        # threads twin runs the same library code under ASan).
        tags = ["exclusive", "mpi", "no_asan"],
    )
