"""Speed and scale benchmarks: rollout throughput, estimate cost, BPTT memory, peers, Ray.

    python -m experiments.bench --quick            # a smoke run (minutes)
    python -m experiments.bench                    # the full tables
    python -m experiments.bench --only rollout peers --threads 1

Prints tables (not timed tests):

* rollout: trajectory-steps/s of every system's unroll, eager and `estimators.rollout.compiled`
  (compile seconds reported), at B = 256, 4096, 65536, on CPU and on CUDA when present;
* estimate: seconds of one estimate at N = 256 pairs (samples for BPTT), T = 1000 on the double
  pendulum, online estimators over a whole episode (T/K windows);
* memory: peak memory of BPTT vs T, plain and checkpointed (a fresh subprocess per setting,
  process RSS high-water mark on CPU, torch.cuda.max_memory_allocated on CUDA);
* peers, as ratios: (1) a Python loop over population members, (2) the JAX peer
  (`experiments.bench.jax_peer`) at B = 4096, (3) evosax Open_ES / PersistentES ask/tell
  overhead vs the native estimator math, on the same rollouts;
* ray: a sweep of equal cells on 2 local Ray workers vs 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings

import torch

import estimators
import systems
from estimators.rollout import compiled, unroll
from experiments.core.measure import estimator_kwargs

__all__ = ["rollout_rate", "estimate_seconds", "steady_seconds", "bptt_peak_memory", "main"]

SECTIONS = ("rollout", "estimate", "memory", "ray", "peers")  # ray before jax is imported
POLICY = "double_pendulum"


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _rows(system, B: int, device, dtype=torch.float32) -> torch.Tensor:
    theta = system.init_params(dtype=dtype, device=device)
    g = torch.Generator(device="cpu").manual_seed(0)
    return theta + 0.01 * torch.randn(B, theta.numel(), generator=g, dtype=dtype).to(device)


def rollout_rate(system, B: int, device="cpu", steps: int | None = None, repeats: int = 2,
                 max_seconds: float = 10.0) -> float:
    """Trajectory-steps per second of a no-grad unroll of B rows (best of ``repeats``).

    Without ``steps``: about 4e5 trajectory-steps (4 to 200 steps), fewer when a 2-step warm-up
    (which also compiles) says one run would take longer than ``max_seconds``."""
    rows = _rows(system, B, device)
    keys = torch.arange(B, device=device)
    t0 = torch.zeros_like(keys)

    def run(n: int) -> float:
        state = system.init_state(rows, keys)
        _sync(device)
        start = time.perf_counter()
        unroll(system, rows, state, t0, t0, lambda _: keys, n, 1 << 30)
        _sync(device)
        return time.perf_counter() - start

    with torch.no_grad():
        run(2)  # warm-up (and compilation)
        if steps is None:
            per_step = run(2) / 2
            steps = max(4, min(200, int(4e5 / B), int(max_seconds / per_step)))
        best = min(run(steps) for _ in range(repeats))
    return B * steps / best


ESTIMATORS = ("antithetic_es", "truncated_es", "pes", "nres", "mixed", "bptt", "truncated_bptt")


def steady_seconds(measure, fast, repeats: int = 2, max_calls: int = 6) -> float:
    """Seconds of ``measure()`` on the compiled system ``fast`` with compilation excluded: the
    best of ``repeats`` calls during which ``fast.compile_seconds`` did not grow (a new batch
    size, dtype or a guard failure compiles again inside a call), after a first call that warms
    up at exactly the measured sizes; NaN if no call ran without compiling."""
    measure()  # compile at the sizes measured below
    clean = []
    for _ in range(max_calls):
        before = fast.compile_seconds
        seconds = measure()
        if fast.compile_seconds == before:
            clean.append(seconds)
            if len(clean) >= repeats:
                break
    return min(clean) if clean else math.nan


def estimate_seconds(name: str, system, N: int, T: int, device="cpu", K: int = 100) -> float:
    """Seconds of one N-pair estimate of the full horizon T (online: T/K windows); the ES
    family at sigma = 0.1, pathwise estimators unsmoothed."""
    pathwise = estimators.ESTIMATORS.get(name).needs_grad
    est = estimators.make(name, **estimator_kwargs(name, horizon=T, n=N, truncation=K,
                                                   sigma=None if pathwise else 0.1))
    theta = system.init_params(device=device)
    state = est.init(system, theta, seed=0)
    _sync(device)
    start = time.perf_counter()
    for _ in range(T // K if est.online else 1):
        _, state = est.estimate(system, theta, state)
    _sync(device)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- memory
_MEMORY_CHILD = r"""
import json, resource, sys, torch, estimators, systems
T, ckpt, device, N = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(1)
system = systems.make("double_pendulum")
theta = system.init_params(device=device)
est = estimators.make("bptt", samples=N, sigma=0.01, horizon=T,
                      checkpoint=None if ckpt == "none" else int(ckpt))
state = est.init(system, theta, seed=0)
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
saved = [0]
def pack(x):
    saved[0] += x.numel() * x.element_size()
    return x
with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
    e, _ = est.estimate(system, theta, state)
def cpu_peak():
    # VmHWM belongs to this process's own address space; ru_maxrss also counts the parent's
    # memory at the fork before exec, so a big benchmark process would inflate it
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
peak = torch.cuda.max_memory_allocated() if device == "cuda" else cpu_peak()
print(json.dumps({"peak_bytes": peak, "saved_bytes": saved[0], "ok": bool(e.ok)}))
"""


def bptt_peak_memory(T: int, checkpoint: int | None, device="cpu",
                     samples: int = 256) -> tuple[float, float]:
    """(peak bytes, bytes of tensors autograd keeps for the backward pass) of a fresh process
    doing one BPTT estimate. Peak: on CPU the process's RSS high-water mark (VmHWM, imports
    included), on CUDA torch.cuda.max_memory_allocated. The saved bytes are what checkpointing removes;
    the autograd graph's own nodes (non-reentrant checkpointing keeps them) are not in it."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(T),
                          "none" if checkpoint is None else str(checkpoint), str(device),
                          str(samples)], capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["peak_bytes"], res["saved_bytes"]


# ----------------------------------------------------------------------------- peers
def naive_es_seconds(system, N: int, T: int, members: int) -> float:
    """Seconds of an N-pair antithetic-ES estimate written as a Python loop over members
    (one trajectory at a time), extrapolated linearly from ``members`` of the 2N members."""
    theta = system.init_params()
    eps = torch.randn(N, theta.numel(), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(members):
            row = (theta + (0.1 if i % 2 == 0 else -0.1) * eps[i // 2]).unsqueeze(0)
            key = torch.tensor([i // 2])
            state, total = system.init_state(row, key), 0.0
            for t in range(T):
                state, loss = system.step(row, state, torch.tensor([t]), key)
                total += float(loss)
    return (time.perf_counter() - start) * (2 * N) / members


def evosax_overheads(popsize: int, dim: int, generations: int) -> dict[str, float]:
    """Seconds per generation of ask + tell (evosax adapters) vs native estimator math + Adam."""
    from .strategies import time_strategy, time_torch_native
    out = {"native antithetic ES": time_torch_native("es", popsize, dim, generations),
           "native PES": time_torch_native("pes", popsize, dim, generations)}
    for label in ("evosax:Open_ES", "evosax:PersistentES"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out[label] = time_strategy(label, popsize, dim, generations)[0]
            except ImportError:
                out[label] = math.nan
    return out


def _ray_sweep_seconds(cpus: int, cells: int, T: int) -> float:
    import tempfile

    import ray

    from experiments.core.store import Cell, ResultsStore
    from experiments.core.sweep import run_cells
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with tempfile.TemporaryDirectory() as tmp, ResultsStore(tmp) as store:
            warm = [Cell("warm", POLICY, params={"i": i, "T": 2}) for i in range(cpus)]
            run_cells(store, warm, _bench_cell, progress=False, backend="ray")
            grid = [Cell("bench", POLICY, params={"i": i, "T": T}) for i in range(cells)]
            start = time.perf_counter()
            run_cells(store, grid, _bench_cell, progress=False, backend="ray")
            return time.perf_counter() - start
    finally:
        ray.shutdown()


def _bench_cell(cell):
    from experiments.core.sweep import CellResult
    system = systems.make(POLICY)
    est = estimators.make("antithetic_es", pairs=64, horizon=cell.params["T"])
    theta = system.init_params()
    e, _ = est.estimate(system, theta, est.init(system, theta, seed=cell.params["i"]))
    return CellResult({"loss": float(e.loss)}, e.steps)


# ----------------------------------------------------------------------------- tables
def _fmt_rate(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "-"


# Sizes whose largest step temporary, scaled to B rows, exceeds this are skipped rather than
# swapping (disk packing's [B, N, N, 2] pair tensors reach 8.6 GB at B = 65536, N = 128).
_MAX_STATE_BYTES = 2 << 30


def _state_bytes(system, B: int, device) -> int:
    """Bytes of the largest tensor one step creates for B rows: measured on 2 rows with a
    dispatch mode that sees every op's outputs, then scaled by B / 2 (rows are independent)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        size = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for x in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(x, torch.Tensor):
                    Largest.size = max(Largest.size, x.numel() * x.element_size())
            return out

    rows = _rows(system, 2, device)
    keys = torch.arange(2, device=device)
    with torch.no_grad():
        state = system.init_state(rows, keys)
        with Largest():
            system.step(rows, state, torch.zeros_like(keys), keys)
    return Largest.size * B // 2


def _section_rollout(args, devices) -> None:
    names = args.systems or list(systems.available())
    sizes = args.sizes or ((256, 4096) if args.quick else (256, 4096, 65536))
    print("\n## rollout: trajectory-steps / s (no grad), eager and compiled")
    print(f"{'system':22s}{'device':>7s}{'B':>7s}{'eager':>11s}{'compiled':>11s}{'x':>6s}"
          f"{'compile s':>11s}")
    for name in names:
        for device in devices:
            base = systems.make(name)
            fast = compiled(systems.make(name))
            for B in sizes:
                if _state_bytes(base, B, device) > _MAX_STATE_BYTES:
                    print(f"{name:22s}{device:>7s}{B:7d}  skipped: one step's largest tensor "
                          f"would exceed {_MAX_STATE_BYTES >> 30} GiB", flush=True)
                    continue
                eager = rollout_rate(base, B, device)
                compile_before = fast.compile_seconds  # each new B compiles anew (dynamic=False)
                try:
                    steps = max(4, min(200, int(4e5 / B)))
                    comp = B * steps / steady_seconds(
                        lambda: B * steps / rollout_rate(fast, B, device, steps=steps, repeats=1),
                        fast)
                except Exception as err:  # compiled path unusable here: say why, go on
                    comp, fast.fallback = math.nan, fast.fallback or str(err)
                if fast.fallback:
                    comp = math.nan
                print(f"{name:22s}{device:>7s}{B:7d}{_fmt_rate(eager):>11s}{_fmt_rate(comp):>11s}"
                      f"{comp / eager:6.2f}{fast.compile_seconds - compile_before:11.1f}"
                      + (f"  fallback: {fast.fallback[:60]}" if fast.fallback else ""), flush=True)


def _section_estimate(args, devices) -> None:
    N, T = 256, (100 if args.quick else 1000)
    print(f"\n## estimate: seconds of one estimate, {POLICY}, N = {N}, T = {T} "
          f"(online: T/K windows, K = {min(100, T)})")
    print(f"{'estimator':16s}{'device':>7s}{'eager s':>10s}{'compiled s':>12s}{'Msteps/s eager':>16s}"
          f"{'compiled':>10s}")
    for device in devices:
        fast = compiled(systems.make(POLICY))
        for name in ESTIMATORS:
            eager = estimate_seconds(name, systems.make(POLICY), N, T, device, K=min(100, T))
            comp = steady_seconds(lambda: estimate_seconds(name, fast, N, T, device,
                                                           K=min(100, T)), fast)
            rows = N if name in ("bptt", "truncated_bptt") else 2 * N
            print(f"{name:16s}{device:>7s}{eager:10.3f}{comp:12.3f}{rows * T / eager / 1e6:16.2f}"
                  f"{rows * T / comp / 1e6:10.2f}",
                  flush=True)


def _section_memory(args, devices) -> None:
    Ts = (100, 1000) if args.quick else (100, 1000, 10000)
    seg = 100
    print(f"\n## memory: one BPTT estimate ({POLICY}, 256 samples, float32), MB: peak (CPU: "
          "RSS above a T = 1 process's) and tensors packed for backward (cumulative: with "
          "checkpointing they are packed one segment at a time during the backward, then freed)")
    print(f"{'device':7s}{'T':>7s}{'peak plain':>12s}{f'peak ckpt={seg}':>15s}{'saved plain':>13s}"
          f"{f'saved ckpt={seg}':>16s}")
    for device in devices:
        base = bptt_peak_memory(1, None, device)[0] if device == "cpu" else 0.0
        for T in Ts:
            plain, plain_saved = bptt_peak_memory(T, None, device)
            ckpt, ckpt_saved = bptt_peak_memory(T, seg, device)
            mb = [(plain - base) / 2**20, (ckpt - base) / 2**20, plain_saved / 2**20,
                  ckpt_saved / 2**20]
            print(f"{device:7s}{T:7d}{mb[0]:12.1f}{mb[1]:15.1f}{mb[2]:13.1f}{mb[3]:16.2f}",
                  flush=True)


def _section_peers(args, devices) -> None:
    N, T = 256, (100 if args.quick else 1000)
    system = systems.make(POLICY)
    fast = compiled(systems.make(POLICY))
    print(f"\n## peers ({POLICY}; ratios > 1 mean chaosgrad is faster)")
    ours = estimate_seconds("antithetic_es", system, N, T)
    ours_c = steady_seconds(lambda: estimate_seconds("antithetic_es", fast, N, T), fast)
    members = 8 if args.quick else 32
    naive = naive_es_seconds(system, N, T, members)
    print(f"1. Python loop over members, N = {N} pairs, T = {T}: {naive:.2f} s (extrapolated from "
          f"{members} of {2 * N} members); chaosgrad eager {ours:.3f} s -> {naive / ours:.0f}x, "
          f"compiled {ours_c:.3f} s -> {naive / ours_c:.0f}x (target >= 100x)")
    pairs = 2048
    for device in devices:
        _jax_peer(pairs, T, device)
    P, G = 2 * N, 5 if args.quick else 20
    roll = 1.0 / rollout_rate(system, P, "cpu", steps=T) * P * T
    ov = evosax_overheads(P, system.param_dim, G)
    print(f"3. ask/tell overhead per generation, P = {P}, D = {system.param_dim} "
          f"(the shared rollout takes {roll * 1e3:.0f} ms):")
    for label, sec in ov.items():
        print(f"   {label:24s}{sec * 1e3:9.3f} ms  ({sec / roll * 100:.2f}% of the rollout)")
    for native, peer in (("native antithetic ES", "evosax:Open_ES"), ("native PES", "evosax:PersistentES")):
        print(f"   {peer} / {native}: {ov[peer] / ov[native]:.1f}x (target > 1)")


def _jax_peer(pairs: int, T: int, device: str) -> None:
    """Peer 2 on one device: the JAX jit+vmap+scan estimate vs chaosgrad's, same B and T."""
    try:
        from . import jax_peer as bench_jax_peer
        if device == "cpu" and torch.get_num_threads() == 1:
            bench_jax_peer.single_thread()
        jax_first, jax_s = bench_jax_peer.time_es_estimate(
            pairs, T, platform="gpu" if device == "cuda" else "cpu")
    except ImportError:
        print("2. JAX peer: jax not installed")
        return
    except RuntimeError as err:  # e.g. a jax without the CUDA plugin
        print(f"2. JAX peer on {device}: unavailable ({str(err).splitlines()[0][:80]})")
        return
    system, fast = systems.make(POLICY), compiled(systems.make(POLICY))
    ours = min(estimate_seconds("antithetic_es", system, pairs, T, device) for _ in range(2))
    ours_c = steady_seconds(lambda: estimate_seconds("antithetic_es", fast, pairs, T, device),
                            fast)
    print(f"2. JAX jit+vmap+scan antithetic ES on {device}, B = {2 * pairs}, T = {T}: "
          f"{jax_s:.3f} s (first call {jax_first:.1f} s); chaosgrad eager {ours:.3f} s -> "
          f"{jax_s / ours:.2f}x, compiled {ours_c:.3f} s -> {jax_s / ours_c:.2f}x "
          f"(target on cpu >= 2x; compile {fast.compile_seconds:.1f} s)", flush=True)


def _section_ray(args, devices) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        print("\n## ray: not installed (pip install 'chaosgrad[ray]')")
        return
    cells, T = (4, 200) if args.quick else (8, 1000)
    one = _ray_sweep_seconds(1, cells, T)
    two = _ray_sweep_seconds(2, cells, T)
    print(f"\n## ray: sweep of {cells} cells (antithetic ES, 64 pairs, T = {T}), warm workers")
    print(f"1 worker {one:.2f} s, 2 workers {two:.2f} s -> speed-up {one / two:.2f}x (target >= 1.6x)")


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmark sections and print their tables; exit code."""
    p = argparse.ArgumentParser(prog="python -m experiments.bench",
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer systems")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--systems", nargs="+", default=None, help="rollout section: these systems")
    p.add_argument("--sizes", nargs="+", type=int, default=None,
                   help="rollout section: batch sizes B (default 256 4096 65536)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=None,
                   help="devices to measure (default: cpu, and cuda when present)")
    args = p.parse_args(argv)
    if args.quick and args.systems is None:
        args.systems = ["logistic_map", "double_pendulum", "mass_spring_walker"]
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        p.error("--devices cuda: no CUDA device is available")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"# chaosgrad bench{' --quick' if args.quick else ''}: {platform.node()}, "
          f"{os.cpu_count()} CPUs, load {load:.2f}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), devices {', '.join(devices)}"
          + (f" ({torch.cuda.get_device_name(0)})" if "cuda" in devices else ""))
    for section in args.only:
        globals()[f"_section_{section}"](args, devices)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
