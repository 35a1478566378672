# Shared by the //:train shell tests (sourced): train_cmd MODE TRAIN [NP]
# [MPIRUN_ARGS...] sets the array `cmd` to the command that starts a job --
# TRAIN's ranks as threads, or, with MODE "mpi", NP (default 8) processes
# under mpirun (extra mpirun arguments, e.g. -x VAR, before the binary).
# It is a command, not a function, so a signal sent to its pid reaches it.
train_cmd() {
  local mode="$1" train="$2" np="${3:-8}"
  shift 3 2> /dev/null || shift $#
  if [ "$mode" = mpi ]; then
    cmd=(mpirun --allow-run-as-root -np "$np" --oversubscribe --bind-to none --mca btl self,vader
      "$@" "$train" --backend=mpi)
  else
    cmd=("$train" --backend=threads)
  fi
}
