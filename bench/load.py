#!/usr/bin/python3
"""Runtime loading benchmark: moepack.load and moepack.load_into against the
ways of reading the same bytes that a user would compare them with, in one
run, warm page cache. See docs/benchmarks.md.

    bench/load.py [--layers 2] [--runs 3] [--workdir DIR] [--moepack BIN] [--build DIR]

Every contestant runs in a process of its own (so each starts with no memory
of the others', and its peak RSS is its own), in rounds that run each one
once, so that drifts hit all alike; medians are reported. Contestants:

  reused buffer   every shard read with readinto() into one 64 MiB buffer:
                  what the page cache can give (the limit)
  fresh tensor    every shard read into a torch tensor allocated for it
  torch per-tensor  each tensor read into a fresh tensor, then torch.stack /
                  torch.cat into the fused ones: bench/torch_convert.py's
                  reader, the way Python converters do it (nothing written)
  load            moepack.load(SRC) per-expert -> fused, iterated, each
                  tensor dropped, as `param.copy_(t)` loops do
  load fused      moepack.load(FUSED), the same from a fused checkpoint
  load_into       moepack.load_into(params, SRC): into tensors allocated
                  and zeroed first, as a model's are; RSS is reported above
                  the model's own parameters
  load_into fused the same from FUSED

Throughput is the converted state dict's bytes over the time of the read
alone (interpreter start, imports and allocating the model's parameters
excluded).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUFFER = 64 << 20


def shard_files(path):
    return sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))


def max_rss_kb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --------------------------------------------------------------- contestants
# Each returns the bytes it delivered; main times it.

def reused_buffer(path):
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    total = 0
    for f in shard_files(path):
        with open(f, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(view)
                if not n:
                    break
                total += n
    return total


def fresh_tensor(path):
    import torch
    total = 0
    for f in shard_files(path):
        size = os.path.getsize(f)
        t = torch.empty(size, dtype=torch.uint8)
        view = memoryview(t.numpy())
        with open(f, "rb", buffering=0) as fh:
            got = 0
            while got < size:
                got += fh.readinto(view[got:])
        total += size
        del t, view
    return total


def torch_per_tensor(path):
    import torch_convert
    src = torch_convert.Source(path)
    total = 0
    for name, (_, _, make) in torch_convert.to_fused_plan(src).items():
        t = make()
        total += t.numel() * t.element_size()
        del t
    return total


def load(path):
    import moepack
    total = 0
    for _, t in moepack.load(path):
        total += t.numel() * t.element_size()
    return total


def model_params(path):
    """The parameters a model would hold for the converted checkpoint, allocated and zeroed."""
    import moepack
    import torch
    params = {}
    for info in moepack.load(path).tensors():
        params[info["name"]] = torch.zeros(info["shape"], dtype=moepack.torch_dtype(info["dtype"]))
    return params


def load_into(path, params):
    import moepack
    r = moepack.load_into(params, path)
    assert not (r.missing_keys or r.unexpected_keys or r.mismatched), r
    return sum(t.numel() * t.element_size() for t in params.values())


def child(kind, path):
    """Runs one contestant; prints {seconds, bytes, base_rss_kb} as JSON."""
    if kind != "reused_buffer":
        # Imports are not the read: torch's alone takes a second or two.
        sys.path.insert(0, os.path.join(REPO, "bench"))
        import moepack  # noqa: F401
        import torch  # noqa: F401
        import torch_convert  # noqa: F401
    params = model_params(path) if kind == "load_into" else None
    base = max_rss_kb()
    t0 = time.perf_counter()
    n = load_into(path, params) if kind == "load_into" else CONTESTANTS[kind](path)
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "bytes": n, "base_rss_kb": base}))


CONTESTANTS = {"reused_buffer": reused_buffer, "fresh_tensor": fresh_tensor, "torch_per_tensor": torch_per_tensor,
               "load": load, "load_into": None}

# (label, contestant, which checkpoint)
ROWS = [("read into one reused 64 MiB buffer", "reused_buffer", "src"),
        ("read of each shard into a fresh tensor", "fresh_tensor", "src"),
        ("per-tensor read + torch.stack/cat", "torch_per_tensor", "src"),
        ("moepack.load(SRC) per-expert -> fused", "load", "src"),
        ("moepack.load(FUSED)", "load", "fused"),
        ("moepack.load_into(params, SRC)", "load_into", "src"),
        ("moepack.load_into(params, FUSED)", "load_into", "fused")]


# --------------------------------------------------------------- driver
def measure(kind, path, env):
    """(seconds, bytes, peak RSS KiB, RSS KiB before the timed part) of one run."""
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", kind, path], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Read the pipes to the end, then reap with wait4 for this child's own peak RSS.
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"load.py: {kind} {path} failed:\n{err.decode()}")
    r = json.loads(out.decode().strip().splitlines()[-1])
    return r["seconds"], r["bytes"], usage.ru_maxrss, r["base_rss_kb"]


def warm(path):
    for f in shard_files(path):
        with open(f, "rb", buffering=0) as fh:
            while fh.read(BUFFER):
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default=os.environ.get("TMPDIR", "/tmp"))
    ap.add_argument("--moepack", default=os.path.join(REPO, "build", "moepack"))
    ap.add_argument("--build", default=os.path.join(REPO, "build"), help="CMake build with -DMOEPACK_PYTHON=ON")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    if args.runs < 1 or args.layers < 1:
        sys.exit("load.py: --runs and --layers must be positive")
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.abspath(args.build), "python")}
    work = tempfile.mkdtemp(prefix="moepack-load.", dir=args.workdir)
    try:
        src, fused = os.path.join(work, "src"), os.path.join(work, "fused")
        subprocess.run([args.moepack, "synth", "--preset", "qwen3-30b-a3b", "--layers", str(args.layers),
                        "--max-shard-size", "1GB", src], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([args.moepack, "convert", "--no-sync", src, fused], check=True, stdout=subprocess.DEVNULL)
        os.sync()  # no writeback of FUSED under the timed runs
        paths = {"src": src, "fused": fused}
        size = sum(os.path.getsize(f) for f in shard_files(src))
        print(f"== machine: {os.cpu_count()} cores, {os.uname().release}, python {sys.version.split()[0]}")
        print(f"== qwen3-30b-a3b, {args.layers} layers, 1GB shards: {size / 1e9:.2f} GB; "
              f"{args.runs} rounds, warm page cache, median")
        results = {label: [] for label, _, _ in ROWS}
        for r in range(args.runs):
            load = os.getloadavg()[0]
            print(f"  round {r + 1}/{args.runs} (load {load:.2f})", flush=True)
            for label, kind, which in ROWS:
                warm(paths[which])
                results[label].append(measure(kind, paths[which], env))
        report(results, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results, runs):
    med = {}
    for label, runs_of in results.items():
        secs = statistics.median(s for s, _, _, _ in runs_of)
        nbytes = runs_of[0][1]
        peak = max(p for _, _, p, _ in runs_of) / 1024
        above = max(p - b for _, _, p, b in runs_of) / 1024
        med[label] = (nbytes / secs / 1e9, peak, above, [f"{b / s / 1e9:.2f}" for s, b, _, _ in runs_of])
    limit = med[ROWS[0][0]][0]
    torch_path = med[ROWS[2][0]][0]
    print(f"\n  {'':42} {'GB/s':>6} {'vs limit':>9} {'vs torch':>9} {'peak RSS':>10} {'above start':>12}   runs (GB/s)")
    for label, _, _ in ROWS:
        gbs, peak, above, all_runs = med[label]
        print(f"  {label:42} {gbs:6.2f} {gbs / limit:8.2f}x {gbs / torch_path:8.1f}x {peak:7.0f} MiB"
              f" {above:8.0f} MiB   {' '.join(all_runs)}")
    fresh = med[ROWS[1][0]][0]
    goals = [
        ("load_into >= 80% of the reused-buffer read", med[ROWS[5][0]][0] / limit, 0.8),
        ("load (per-expert) >= the fresh-tensor read", med[ROWS[3][0]][0] / fresh, 1.0),
        ("load (per-expert) >= 5x the per-tensor torch path", med[ROWS[3][0]][0] / torch_path, 5.0),
        ("load (fused) >= the fresh-tensor read", med[ROWS[4][0]][0] / fresh, 1.0),
        ("load (fused) >= 5x the per-tensor torch path", med[ROWS[4][0]][0] / torch_path, 5.0),
        ("load_into >= 5x the per-tensor torch path", med[ROWS[5][0]][0] / torch_path, 5.0),
        ("load_into (fused) >= 80% of the reused-buffer read", med[ROWS[6][0]][0] / limit, 0.8),
    ]
    print("\n  goals")
    for what, ratio, want in goals:
        print(f"    {what:52} {ratio:6.2f}x  {'met' if ratio >= want else 'NOT met'}")
    above = med[ROWS[5][0]][2]
    print(f"    {'load_into RSS above the parameters < 64 MiB':52} {above:6.0f} MiB  {'met' if above < 64 else 'NOT met'}")
    print("  ('above start': peak RSS minus the RSS before the timed part: for load_into, the model's parameters)")


if __name__ == "__main__":
    main()
