"""Average the weights of runs that started from the same weights: a "model soup" (Wortsman et al. 2022).

Why: runs fine-tuned from one starting point stay in one basin of the loss, so the mean of their weights is itself
a good network, and often a better one on people none of them trained on than any single run. Two runs can use our
two cores side by side (one thread each), so a soup costs no extra training time. It averages each run's last
weights and, separately, each run's weight average; `train.export` then ships whichever of the two soups does
better on the held-out people, as it does for a single run.

    python -m train.soup --out runs/soup.pt runs/a/last.pt runs/b/last.pt
    python -m train.export --checkpoint runs/soup.pt
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from train.export import images_per_step, training_command


def average_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the floating-point tensors (BatchNorm statistics included); integer counters are taken
    from the first state. All states must have the same keys and shapes."""
    keys = list(states[0])
    for state in states[1:]:
        if list(state) != keys or any(state[k].shape != states[0][k].shape for k in keys):
            raise ValueError("the checkpoints hold different networks")
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype)
            if states[0][k].is_floating_point() else states[0][k] for k in keys}


def make_soup(checkpoints: list[dict], paths: list[str]) -> dict:
    """One checkpoint `train.export` reads: the averaged `model` (and `ema` when every run kept one), the first
    run's arguments (its card fields: loss, margin, data…) and `soup_of`, every run's own record."""
    if len(checkpoints) < 2:
        raise ValueError("a soup needs at least two checkpoints")
    configs = {repr(c["config"]) for c in checkpoints}
    inits = {c.get("args", {}).get("init") for c in checkpoints}
    if len(configs) != 1:
        raise ValueError("the checkpoints have different network configs")
    if len(inits) != 1 or None in inits:
        raise ValueError("the runs did not start from the same weights (--init), so their average is not a network")
    soup = {
        "config": checkpoints[0]["config"],
        "args": checkpoints[0]["args"],
        "step": sum(int(c["step"]) for c in checkpoints),
        "model": average_state([c["model"] for c in checkpoints]),
        "soup_of": [{"checkpoint": p, "train_command": training_command(c["args"]), "steps": int(c["step"]),
                     "images_seen": int(c["step"]) * images_per_step(c["args"])}
                    for p, c in zip(paths, checkpoints)],
    }
    if all("ema" in c for c in checkpoints):
        soup["ema"] = average_state([c["ema"] for c in checkpoints])
    if "blends" in checkpoints[0]:
        soup["blends"] = checkpoints[0]["blends"]
    return soup


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    args = parser.parse_args(argv)
    loaded = [torch.load(p, weights_only=False, map_location="cpu") for p in args.checkpoints]
    try:
        soup = make_soup(loaded, [str(p) for p in args.checkpoints])
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    soup["soup_command"] = "python -m train.soup " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(soup, args.out)
    print(f"{args.out}: the mean of {len(loaded)} runs, {soup['step']} steps in all")


if __name__ == "__main__":
    main()
