"""Calibration speed: `alignkit.rewards.calibrate` against a per-prompt numpy loop, in one run.

    python eval/bench_rewards.py                 # 1000 prompts x 1000 rewards against 1000 references each

The baseline is what one writes by hand: for each prompt, sort its references and np.searchsorted
both sides for mid-rank ties. Both produce the same numbers (checked before timing).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def numpy_loop(rewards: np.ndarray, reference: np.ndarray) -> np.ndarray:
    out = np.empty_like(rewards)
    for p in range(rewards.shape[0]):
        ref = np.sort(reference[p])
        below = np.searchsorted(ref, rewards[p], side="left")
        at_or_below = np.searchsorted(ref, rewards[p], side="right")
        out[p] = (below + at_or_below) / (2 * ref.size)
    return out


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--rewards", type=int, default=1000, help="policy rewards per prompt")
    parser.add_argument("--references", type=int, default=1000, help="reference rewards per prompt")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from alignkit.rewards import Calibrator, calibrate

    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(args.prompts, args.rewards))
    reference = rng.normal(size=(args.prompts, args.references))
    assert np.allclose(calibrate(rewards, reference), numpy_loop(rewards, reference))
    cal = Calibrator().fit(range(args.prompts), reference)
    ids = np.repeat(np.arange(args.prompts), args.rewards).tolist()
    flat = rewards.reshape(-1)
    rows = {
        "numpy per-prompt loop (baseline)": best_of(lambda: numpy_loop(rewards, reference), args.repeats),
        "alignkit calibrate (numpy in/out)": best_of(lambda: calibrate(rewards, reference), args.repeats),
        "alignkit calibrate (torch in/out)": best_of(lambda: calibrate(torch.from_numpy(rewards), torch.from_numpy(reference)), args.repeats),
        "alignkit Calibrator (fitted, by prompt id)": best_of(lambda: cal(ids, flat), args.repeats),
    }
    base = rows["numpy per-prompt loop (baseline)"]
    print(f"\ncalibrate {args.prompts * args.rewards:,} rewards against {args.references:,} references per prompt "
          f"({args.prompts:,} prompts), torch threads {torch.get_num_threads()}, best of {args.repeats}\n")
    print(f"| {'implementation':<42} | seconds | speed-up vs baseline |")
    print(f"|{'-' * 44}|--------:|---------------------:|")
    for name, seconds in rows.items():
        print(f"| {name:<42} | {seconds:7.3f} | {base / seconds:19.2f}x |")


if __name__ == "__main__":
    main()
