r"""Training steps under glibc's malloc and under tcmalloc, in one run, side by side.

    python scripts/bench_allocator.py [--steps 30] [--rounds 2] [-- any scripts/bench_train.py flags]

Runs `scripts/bench_train.py --shapes sprites` (the quickstart's two steps; other shapes
through the extra flags) in a fresh process per allocator, alternating them `--rounds`
times so that a machine's drift falls on both, and prints each part's median step under
each with the ratio, and the page faults and kernel (system) seconds each process took.
genie_jax/allocator.py says why the allocator matters on CPU. Needs tcmalloc installed
(Debian / Ubuntu: apt-get install libtcmalloc-minimal4).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

from genie_jax import allocator

ALLOCATORS = {"glibc": {allocator.ENV_SWITCH: "0"}, "tcmalloc": {allocator.ENV_SWITCH: "1"}}


def run_once(name: str, bench_args: list[str]) -> tuple[dict, dict]:
  """One bench_train.py process under allocator `name` -> ({part: seconds per step},
  {"page faults": n, "system s": s}) of that process."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "bench.json")
    env = {**os.environ, **ALLOCATORS[name]}
    env.pop("LD_PRELOAD", None)  # each process chooses for itself (bench_train relaunches)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "bench_train.py"),
                           *bench_args, "--json", out], env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
      raise SystemExit(f"bench_train.py under {name} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    header = proc.stdout.splitlines()[0]
    expected = "tcmalloc" if name == "tcmalloc" else "glibc malloc"
    if f"host allocator {expected}" not in header:
      raise SystemExit(f"asked for {name}, bench_train.py ran with: {header}")
    with open(out) as f:
      seconds = {r["part"]: r["seconds_per_step"] for r in json.load(f) if "seconds_per_step" in r}
  return seconds, {"page faults": after.ru_minflt - before.ru_minflt, "system s": after.ru_stime - before.ru_stime}


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--rounds", type=int, default=2)
  args, extra = ap.parse_known_args()
  if allocator.find_tcmalloc() is None:
    raise SystemExit("tcmalloc is not installed (Debian / Ubuntu: apt-get install libtcmalloc-minimal4)")
  extra = [a for a in extra if a != "--"]
  bench_args = ["--steps", str(args.steps)] + (extra if any(a.startswith("--shapes") for a in extra)
                                               else ["--shapes", "sprites"] + extra)
  print(f"bench_train.py {' '.join(bench_args)}, {args.rounds} rounds, glibc then tcmalloc in each", flush=True)
  times = {name: {} for name in ALLOCATORS}
  usage = {name: [] for name in ALLOCATORS}
  for round_ in range(args.rounds):
    for name in ALLOCATORS:
      seconds, used = run_once(name, bench_args)
      for part, s in seconds.items():
        times[name].setdefault(part, []).append(s)
      usage[name].append(used)
      print(f"  round {round_ + 1} {name:8s} " + ", ".join(f"{p} {s * 1000:.1f} ms" for p, s in seconds.items())
            + f"; {used['page faults']:,} page faults, {used['system s']:.1f} s in the kernel", flush=True)
  print("median over rounds:")
  for part in times["glibc"]:
    glibc, tc = statistics.median(times["glibc"][part]), statistics.median(times["tcmalloc"][part])
    print(f"  {part:12s} glibc {glibc * 1000:7.1f} ms/step  tcmalloc {tc * 1000:7.1f} ms/step  "
          f"-> tcmalloc {glibc / tc:.2f}x faster")
  for name in ALLOCATORS:
    faults = statistics.median(u["page faults"] for u in usage[name])
    system = statistics.median(u["system s"] for u in usage[name])
    print(f"  {name:8s} per process: {faults:,.0f} page faults, {system:.1f} s in the kernel")


if __name__ == "__main__":
  main()
