"""Arena bytes TensorFlow Lite Micro needs for a .tflite model, to set beside tinyc's planner in the benchmarks.

Optional: needs `pip install --no-deps tflite-micro` (its Requires-Dist, flatbuffers/numpy/pyyaml, is already
met by TensorFlow's environment; it is deliberately not a tinyc dependency). Without it the figure is None.

Method: the binding has no arena_used_bytes(); it has print_allocations(), which makes TFLM's
RecordingMicroAllocator print "Arena allocation total N bytes" (head = planned activations and scratch,
tail = persistent structs) on the C stderr. That total is the smallest arena_size the model allocates with
(checked by binary search on a small CNN: both gave 21216 bytes). The figure comes from the host build:
64-bit, reference kernels, so pointer-sized bookkeeping is bigger than on a 32-bit MCU and no CMSIS-NN scratch
buffers are counted. Treat it as indicative.

The measurement runs in a child Python process: TFLM can abort or crash on a model it rejects, and its report goes
to file descriptor 2, which a child's captured stderr gives us cleanly. The caller gets None and a reason on stderr.
Run: python bench/tflm_arena.py MODEL.tflite [...]"""
import importlib.util
import re
import subprocess
import sys

_ARENA = 64 << 20     # generous arena for the measuring run; the report says how much of it was used
_TOTAL = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def _child(path: str) -> None:
    """In the child: allocate, run once on zero inputs (proves TFLM can run it), print TFLM's allocation report."""
    import numpy as np
    from tflite_micro import runtime
    it = runtime.Interpreter.from_file(path, arena_size=_ARENA)
    i = 0
    while True:   # the binding has no input count: ask for details until the index is out of range
        try:
            d = it.get_input_details(i)
        except IndexError:
            break
        it.set_input(np.zeros(d["shape"], d["dtype"]), i)
        i += 1
    it.invoke()
    sys.stderr.flush()
    it.print_allocations()


def tflm_arena_report(tflite_path: str) -> dict | None:
    """{'total', 'head', 'tail'} in bytes as TFLM reports them, or None (reason printed to stderr)."""
    if importlib.util.find_spec("tflite_micro") is None:
        print("tflm_arena: tflite_micro is not installed (pip install --no-deps tflite-micro)", file=sys.stderr)
        return None
    try:
        r = subprocess.run([sys.executable, __file__, "--child", str(tflite_path)],
                           capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"tflm_arena: {tflite_path}: {e}", file=sys.stderr)
        return None
    found = {k: int(v) for k, v in _TOTAL.findall(r.stderr)}
    if r.returncode != 0 or "total" not in found:
        lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        why = " | ".join(lines[-4:]) or f"exit status {r.returncode}"
        print(f"tflm_arena: TFLM cannot run {tflite_path}: {why}", file=sys.stderr)
        return None
    return found


def tflm_arena_bytes(tflite_path: str) -> int | None:
    """Bytes of tensor arena TFLM used for the model (host build), or None if TFLM is missing or rejects it."""
    rep = tflm_arena_report(tflite_path)
    return None if rep is None else rep["total"]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        try:
            _child(sys.argv[2])
        except Exception as e:   # one line after TFLM's own log lines, which say why (e.g. a missing op)
            sys.exit(f"{type(e).__name__}: {e}")
        sys.exit(0)
    if len(sys.argv) < 2:
        sys.exit("usage: python bench/tflm_arena.py MODEL.tflite [...]")
    status = 0
    for p in sys.argv[1:]:
        rep = tflm_arena_report(p)
        if rep is None:
            status = 1
            print(f"{p}: -")
        else:
            print(f"{p}: {rep['total']} bytes (head {rep['head']}, tail {rep['tail']})")
    sys.exit(status)
