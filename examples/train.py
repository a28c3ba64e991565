"""A small training loop measured by wattprint: per-epoch energy and CO2 printed, logs written.

Trains a two-layer network on a synthetic classification task, with PyTorch when it is installed
(on the GPU if there is one) and with NumPy otherwise. Run it with ``python examples/train.py``;
``--epochs`` and ``--location`` change the run, ``WATTPRINT_LOCATION`` sets where it counts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import numpy as np

from tracker import Tracker, load_run

Step = Callable[[], float]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150, help="optimisation steps per epoch")
    parser.add_argument("--location", default=os.environ.get("WATTPRINT_LOCATION", "DE"))
    parser.add_argument("--log-dir", default="wattprint-runs")
    args = parser.parse_args()

    step, backend = make_step()
    print(f"training with {backend}, {args.epochs} epochs x {args.steps} steps")
    with Tracker(
        project="example",
        log_dir=args.log_dir,
        location=args.location,
        epochs=args.epochs,  # predict the whole run ...
        epochs_before_pred=min(2, args.epochs),  # ... from two epochs: a range from their spread
    ) as tracker:
        for epoch in range(args.epochs):
            with tracker.epoch():
                loss = sum(step() for _ in range(args.steps)) / args.steps
            print(f"epoch {epoch + 1}: loss {loss:.4f}")
    epochs = load_run(tracker.run_dir)
    print(epochs[["epoch", "duration_s", "it_energy_j", "co2_g", "methods"]].to_string(index=False))
    print(f"logs: {tracker.run_dir}")


def make_step() -> tuple[Step, str]:
    """One optimisation step of a small MLP, with PyTorch if available, else NumPy."""
    try:
        import torch
    except ImportError:
        return numpy_step(), "NumPy on the CPU"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 256, generator=generator).to(device)
    y = (x[:, :8].sum(dim=1) > 0).long()
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 2)
    ).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)

    def step() -> float:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        torch.autograd.backward(loss)  # typed, unlike Tensor.backward
        optimiser.step()
        return float(loss.item())

    return step, f"PyTorch on {device}"


def numpy_step() -> Step:
    """Full-batch gradient descent on a ReLU network, written out in NumPy."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 256)).astype(np.float32)
    y = (x[:, :8].sum(axis=1) > 0).astype(np.float32)[:, None]
    w1 = rng.standard_normal((256, 512)).astype(np.float32) * 0.05
    w2 = rng.standard_normal((512, 1)).astype(np.float32) * 0.05

    def step() -> float:
        nonlocal w1, w2
        hidden = np.maximum(x @ w1, 0.0)
        p = 1.0 / (1.0 + np.exp(-(hidden @ w2)))
        loss = float(-np.mean(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7)))
        grad_out = (p - y) / len(x)
        grad_w2 = hidden.T @ grad_out
        grad_hidden = (grad_out @ w2.T) * (hidden > 0)
        w1 -= 0.5 * (x.T @ grad_hidden)
        w2 -= 0.5 * grad_w2
        return loss

    return step


if __name__ == "__main__":
    main()
