#!/usr/bin/env python3
"""Trireme's C API from Python (ctypes + numpy): a 7-13-5 tanh MLP trained with
ZeRO-3 AdamW on 4 thread ranks matches the same training on 1 rank, the 1-rank
updates match a numpy AdamW reference, and bad use returns an error code with
a message. Odd sizes (7, 13, 5 over 4 ranks) exercise the shard padding.

    python3 examples/python_trainer/train.py --lib PREFIX/lib/libtrireme.so

Prints per step (rank 0) the global loss and grad norm, then memory and
traffic per run; "PASS" and exit 0, or each failure and exit 1.
"""
import argparse, ctypes, ctypes.util, os, sys, threading, zlib
import numpy as np

ABI_VERSION, OK, INTERNAL, NO_DECAY, MEM_CATEGORIES = 1, 0, 8, 1, 7
IN, HID, OUT, BATCH, STEPS = 7, 13, 5, 12, 20
LR, WD, B1, B2, EPS = 0.01, 0.01, 0.9, 0.999, 1e-8
# name -> (unit, shape, flags); params are numbered in this order within a unit.
PARAMS = {"w1": (0, (IN, HID), 0), "b1": (0, (HID,), NO_DECAY),
          "w2": (1, (HID, OUT), 0), "b2": (1, (OUT,), NO_DECAY)}
UNIT_PARAMS = [[n for n, p in PARAMS.items() if p[0] == u] for u in (0, 1)]
_rng = np.random.default_rng(1234)  # the deterministic synthetic global batch
X = _rng.standard_normal((BATCH, IN)).astype(np.float32)
Y = np.sin(X @ _rng.standard_normal((IN, OUT))).astype(np.float32)

# ---- struct mirrors (field order and types exactly as in trireme.h) ----
class Options(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("stage", ctypes.c_int),
                ("compute_dtype", ctypes.c_int), ("grad_dtype", ctypes.c_int),
                ("device", ctypes.c_int), ("device_index", ctypes.c_int),
                ("grad_accum", ctypes.c_int)] + [(f, ctypes.c_float) for f in
                ("lr", "weight_decay", "beta1", "beta2", "eps", "clip_norm")] + [
                ("optimizer", ctypes.c_int), ("momentum", ctypes.c_float),
                ("lr_schedule", ctypes.c_int), ("min_lr", ctypes.c_float),
                ("warmup_steps", ctypes.c_int64), ("total_steps", ctypes.c_int64)] + [
                (f, ctypes.c_int) for f in ("grad_reduce_dtype", "prefetch_depth",
                "loss_scaling", "abort_on_nonfinite", "kernel_threads")]
class View(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("data", ctypes.c_void_p),
                ("count", ctypes.c_int64), ("dtype", ctypes.c_int),
                ("device", ctypes.c_int), ("device_index", ctypes.c_int)]
class StepStats(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("step", ctypes.c_int64),
                ("lr", ctypes.c_float), ("grad_norm", ctypes.c_double), ("skipped", ctypes.c_int)]
class MemoryStats(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("current", ctypes.c_int64 * MEM_CATEGORIES),
                ("peak", ctypes.c_int64 * MEM_CATEGORIES), ("total_current", ctypes.c_int64),
                ("total_peak", ctypes.c_int64)]
class TrafficStats(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("bytes_sent", ctypes.c_int64),
                ("bytes_received", ctypes.c_int64), ("calls", ctypes.c_int64),
                ("busy_seconds", ctypes.c_double), ("blocked_seconds", ctypes.c_double)]

P, I, I64, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_char_p
FLOATS = ctypes.POINTER(ctypes.c_float)
RANK_FN = ctypes.CFUNCTYPE(I, P, P)                 # trireme_rank_fn
INIT_FN = ctypes.CFUNCTYPE(I, S, FLOATS, I64, P)    # trireme_init_fn
SIGS = {  # name: (restype, argtypes)
    "version": (I, []), "version_string": (S, []), "last_error": (S, []),
    "run_threads": (I, [I, RANK_FN, P]), "comm_rank": (I, [P]), "comm_size": (I, [P]),
    "units_create": (I, [ctypes.POINTER(P)]), "units_destroy": (I, [P]),
    "units_add_unit": (I, [P, S, ctypes.POINTER(I)]),
    "units_add_param": (I, [P, I, S, I, ctypes.POINTER(I64), I]),
    "engine_options_init": (None, [ctypes.POINTER(Options)]),
    "engine_create": (I, [P, P, ctypes.POINTER(Options), ctypes.POINTER(P)]),
    "engine_destroy": (I, [P]), "engine_initialize": (I, [P, INIT_FN, P]),
    **{f"engine_{h}": (I, [P, I]) for h in
       ("pre_forward", "post_forward", "pre_backward", "post_backward")},
    "view_init": (None, [ctypes.POINTER(View)]),
    "engine_param": (I, [P, I, I, ctypes.POINTER(View)]),
    "engine_grad": (I, [P, I, I, ctypes.POINTER(View)]),
    "step_stats_init": (None, [ctypes.POINTER(StepStats)]),
    "engine_step": (I, [P, ctypes.POINTER(StepStats)]),
    "engine_gather_param": (I, [P, S, FLOATS, I64]),
    "memory_category_name": (S, [I]),
    "memory_stats_init": (None, [ctypes.POINTER(MemoryStats)]),
    "engine_memory": (I, [P, ctypes.POINTER(MemoryStats)]),
    "traffic_stats_init": (None, [ctypes.POINTER(TrafficStats)]),
    "engine_traffic": (I, [P, ctypes.POINTER(TrafficStats)]),
}

class T:
    """The library's functions without the trireme_ prefix: T.engine_step(...)."""
def load(path):
    lib = ctypes.CDLL(path)  # CDLL calls release the GIL while in C
    for name, (res, args) in SIGS.items():
        fn = getattr(lib, "trireme_" + name)
        fn.restype, fn.argtypes = res, args
        setattr(T, name, fn)

class TriremeError(Exception):
    pass
def check(status, what=""):
    """Raises with the calling thread's library message on a nonzero status."""
    if status != OK:
        raise TriremeError(f"{what}: status {status}: {T.last_error().decode()}")

def new(cls, init):
    """A struct set up by its _init function (which sets struct_size)."""
    s = cls(); init(ctypes.byref(s))
    assert s.struct_size == ctypes.sizeof(cls), f"{cls.__name__}: struct_size differs"
    return s

def as_array(view, shape):
    """A numpy array over the engine's memory (valid until the next post_* hook)."""
    assert view.count == int(np.prod(shape)), (view.count, shape)
    ptr = ctypes.cast(view.data, FLOATS)
    return np.ctypeslib.as_array(ptr, shape=(view.count,)).reshape(shape)

def init_value(name):
    """The initial value of a parameter: deterministic by its name."""
    shape = PARAMS[name][1]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

@INIT_FN
def init_fn(name, values, count, user):
    try:
        np.ctypeslib.as_array(values, shape=(count,))[:] = init_value(name.decode()).ravel()
        return OK
    except Exception as e:  # never let an exception cross into C
        print("init_fn:", repr(e)); return INTERNAL

def rank_fn(body):
    """A trireme_rank_fn calling body(comm); an exception is stored and returned as 8."""
    errors = []
    def fn(comm, user):
        try:
            body(comm); return OK
        except BaseException as e:
            errors.append(e); return INTERNAL
    return RANK_FN(fn), errors

def train(ranks, record=None):
    """Trains on `ranks` thread ranks; returns rank 0's results. `record` (1 rank)
    gets the params seen in each forward and the grads added in each backward."""
    lock, losses, out = threading.Lock(), [[] for _ in range(STEPS)], {"ranks": ranks}
    def body(comm):
        rank, size = T.comm_rank(comm), T.comm_size(comm)
        assert BATCH % size == 0; per = BATCH // size
        x, y = X[rank * per:(rank + 1) * per], Y[rank * per:(rank + 1) * per]
        units, e = P(), P()
        check(T.units_create(ctypes.byref(units)), "units_create")
        for u, names in enumerate(UNIT_PARAMS):
            idx = I()
            check(T.units_add_unit(units, f"layer{u + 1}".encode(), ctypes.byref(idx)), "add_unit")
            for n in names:
                shape = (I64 * 2)(*PARAMS[n][1])
                check(T.units_add_param(units, idx.value, n.encode(), len(PARAMS[n][1]), shape,
                                        PARAMS[n][2]), "add_param " + n)
        o = new(Options, T.engine_options_init)
        o.stage, o.lr, o.weight_decay = 3, LR, WD
        if rank == 0: out["defaults"] = (o.beta1, o.beta2, o.eps, o.clip_norm)
        check(T.engine_create(comm, units, ctypes.byref(o), ctypes.byref(e)), "engine_create")
        check(T.units_destroy(units), "units_destroy")
        check(T.engine_initialize(e, init_fn, None), "initialize")
        view, st = new(View, T.view_init), new(StepStats, T.step_stats_init)
        def param(u, n, getter=T.engine_param):
            check(getter(e, u, UNIT_PARAMS[u].index(n), ctypes.byref(view)), n)
            return as_array(view, PARAMS[n][1])
        for step in range(STEPS):
            check(T.engine_pre_forward(e, 0), "pre_forward 0")  # forward: layer1, layer2
            w1, b1 = param(0, "w1").copy(), param(0, "b1").copy()
            h = np.tanh(x @ w1 + b1)
            check(T.engine_post_forward(e, 0), "post_forward 0")
            check(T.engine_pre_forward(e, 1), "pre_forward 1")
            w2, b2 = param(1, "w2").copy(), param(1, "b2").copy()
            pred = h @ w2 + b2
            check(T.engine_post_forward(e, 1), "post_forward 1")
            loss = float(np.mean((pred - y) ** 2))  # this rank's mean loss
            # Backward in reverse unit order: ADD d(own mean loss)/d(param).
            dpred = 2.0 * (pred - y) / pred.size
            dz = (dpred @ w2.T) * (1.0 - h * h)
            grads = {"w2": h.T @ dpred, "b2": dpred.sum(0), "w1": x.T @ dz, "b1": dz.sum(0)}
            for u in (1, 0):
                check(T.engine_pre_backward(e, u), f"pre_backward {u}")
                for n in UNIT_PARAMS[u]:
                    param(u, n, T.engine_grad)[...] += grads[n]
                check(T.engine_post_backward(e, u), f"post_backward {u}")
            if record is not None:
                record.append(({"w1": w1, "b1": b1, "w2": w2, "b2": b2}, grads))
            with lock: losses[step].append(loss)
            check(T.engine_step(e, ctypes.byref(st)), "step")
            if rank == 0:
                with lock: mean = sum(losses[step]) / len(losses[step])
                out.setdefault("norms", []).append(st.grad_norm)
                print(f"  [{ranks} ranks] step {st.step:2d}  loss {mean:.6f}  "
                      f"grad_norm {st.grad_norm:.6f}")
        final = {}
        for n, (u, shape, _) in PARAMS.items():  # collective: every rank calls it
            a = np.empty(shape, np.float32)
            check(T.engine_gather_param(e, n.encode(), a.ctypes.data_as(FLOATS), a.size), n)
            final[n] = a
        mem, tr = new(MemoryStats, T.memory_stats_init), new(TrafficStats, T.traffic_stats_init)
        check(T.engine_memory(e, ctypes.byref(mem)), "memory")
        check(T.engine_traffic(e, ctypes.byref(tr)), "traffic")
        if rank == 0:
            out.update(final=final, bytes_sent=tr.bytes_sent, total_peak=mem.total_peak,
                       peak={T.memory_category_name(c).decode(): mem.peak[c]
                             for c in range(MEM_CATEGORIES)})
        check(T.engine_destroy(e), "engine_destroy")
    fn, errors = rank_fn(body)
    status = T.run_threads(ranks, fn, None)
    if errors:  # the ranks' stored exceptions, reported here; the first is the cause
        for x in errors: print(f"  [{ranks} ranks] a rank raised: {x!r}")
        raise errors[0]
    check(status, f"run_threads({ranks})")
    with lock: out["losses"] = [sum(l) / len(l) for l in losses]
    print(f"  [{ranks} ranks] rank 0 memory: total_peak {out['total_peak']} B, peak per "
          f"category {out['peak']}; traffic: {out['bytes_sent']} B sent")
    return out

def adamw(p, g, m, v, t, decay):
    """torch.optim.AdamW (in float64) on a copy of p; updates m and v in place."""
    p = p.astype(np.float64) * ((1.0 - LR * WD) if decay else 1.0)
    m[...] = B1 * m + (1 - B1) * g
    v[...] = B2 * v + (1 - B2) * g * g
    mhat, vhat = m / (1 - B1 ** t), v / (1 - B2 ** t)
    return p - LR * mhat / (np.sqrt(vhat) + EPS)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=ctypes.util.find_library("trireme") or "libtrireme.so.1")
    os.environ.setdefault("TRIREME_COMM_TIMEOUT_S", "60")  # a lost rank fails, not hangs
    load(ap.parse_args().lib)
    failures = []
    def expect(cond, msg):
        print(("ok    " if cond else "FAIL  ") + msg)
        if not cond: failures.append(msg)
    expect(T.version() == ABI_VERSION, f"ABI version {T.version()} "
           f"({T.version_string().decode()}) == {ABI_VERSION}")
    if failures: return 1
    record = []
    one, four = train(1, record), train(4)
    # 4 ranks == 1 rank, parameter by parameter.
    diff = max(float(np.max(np.abs(four["final"][n] - one["final"][n]) /
                         (1 + np.abs(one["final"][n])))) for n in PARAMS)
    expect(diff <= 1e-5, f"4-rank params == 1-rank params (max rel diff {diff:.3g} <= 1e-5)")
    nd = max(abs(a - b) / b for a, b in zip(four["norms"], one["norms"]))
    expect(nd <= 1e-4, f"4-rank grad norms == 1-rank ones (max rel diff {nd:.3g} <= 1e-4)")
    for r in (one, four):
        l = r["losses"]
        expect(l[-1] < 0.7 * l[0],
               f"{r['ranks']} ranks: loss went down: {l[0]:.5f} -> {l[-1]:.5f} (< 0.7x)")
    mo = [r["peak"]["master"] + r["peak"]["optim"] for r in (one, four)]
    expect(mo[1] < mo[0], f"master+optim peak per rank: 4 ranks {mo[1]} B < 1 rank {mo[0]} B")
    # The 1-rank engine against numpy AdamW: each step from the params the engine
    # gave us, with the gradient we added; the next forward's params (or the
    # gathered final ones) must match.
    expect(one["defaults"] == (np.float32(B1), np.float32(B2), np.float32(EPS), 0.0),
           f"default beta1, beta2, eps, clip_norm: {one['defaults']}")
    mv = {n: (np.zeros(PARAMS[n][1]), np.zeros(PARAMS[n][1])) for n in PARAMS}
    worst, gn = 0.0, 0.0
    for t, (params, grads) in enumerate(record, 1):
        after = record[t][0] if t < STEPS else one["final"]
        norm = np.sqrt(sum(np.sum(grads[n].astype(np.float64) ** 2) for n in PARAMS))
        gn = max(gn, abs(norm - one["norms"][t - 1]) / norm)
        for n in PARAMS:
            ref = adamw(params[n], grads[n].astype(np.float64), *mv[n], t,
                        not PARAMS[n][2] & NO_DECAY)
            worst = max(worst, float(np.max(np.abs(after[n] - ref))))
    expect(worst <= 1e-6, f"1-rank updates == numpy AdamW (max abs diff {worst:.3g} <= 1e-6)")
    expect(gn <= 1e-5, f"1-rank grad_norm == numpy norm (max rel diff {gn:.3g} <= 1e-5)")
    # Error paths through ctypes.
    expect(T.engine_pre_forward(None, 0) != OK and b"NULL" in T.last_error(),
           f"pre_forward(NULL) refused: {T.last_error().decode()!r}")
    units = P()
    check(T.units_create(ctypes.byref(units)), "units_create")
    unit = I()
    check(T.units_add_unit(units, b"u", ctypes.byref(unit)), "add_unit")
    st = T.units_add_param(units, unit, b"p", 2, (I64 * 2)(3, 0), 0)
    expect(st != OK, f"a zero dim refused: status {st}, {T.last_error().decode()!r}")
    check(T.units_destroy(units), "units_destroy")
    try:
        check(T.engine_pre_forward(None, 0), "pre_forward")
        expect(False, "check() raises on a nonzero status")
    except TriremeError as e:
        expect("NULL" in str(e), f"check() raises: {e}")
    def boom(comm):
        raise ValueError(f"boom on rank {T.comm_rank(comm)}")
    fn, errors = rank_fn(boom)
    st = T.run_threads(2, fn, None)
    expect(st != OK and len(errors) == 2 and isinstance(errors[0], ValueError),
           f"an exception in a rank callback -> status {st}, stored: {errors[:1]!r}")
    print("PASS" if not failures else f"{len(failures)} failure(s):\n  " + "\n  ".join(failures))
    return 0 if not failures else 1

if __name__ == "__main__":
    sys.exit(main())
