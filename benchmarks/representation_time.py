"""Wall time of the same short `t3d generate` run with different representations, interleaved so that a busy
machine slows each alike; prints the median per representation.

    python benchmarks/representation_time.py --representations nerf,triplane --steps 40 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from threedistill.workflows.generate import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--representations", default="nerf,triplane")
    parser.add_argument("--prompt", default="a red cone")
    parser.add_argument("--guidance", default="sds")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reps = [r.strip() for r in args.representations.split(",") if r.strip()]
    times: dict[str, list[float]] = {r: [] for r in reps}
    with tempfile.TemporaryDirectory() as out:
        generate(
            prompt=args.prompt,
            representation=reps[0],
            guidance=args.guidance,
            steps=1,
            out=out,
            overrides=["export=[]"],
            progress=False,
            log=lambda s: None,
        )  # warm-up: prior, native build
        for _ in range(args.repeats):
            for rep in reps:
                start = time.perf_counter()
                generate(
                    prompt=args.prompt,
                    representation=rep,
                    guidance=args.guidance,
                    steps=args.steps,
                    seed=0,
                    out=out,
                    overrides=["export=[]", "trainer.checkpoint_every=0", "trainer.preview_every=0"],
                    progress=False,
                    log=lambda s: None,
                )
                times[rep].append(time.perf_counter() - start)
                print(f"{rep}: {times[rep][-1]:.1f} s", flush=True)
    for rep in reps:
        print(
            f"{rep}: median {statistics.median(times[rep]):.1f} s for {args.steps} steps + turntable "
            f"({args.threads} thread(s), {args.repeats} repeats)"
        )


if __name__ == "__main__":
    main()
