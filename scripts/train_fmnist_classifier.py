"""Train the small Fashion-MNIST classifier whose weights ship in src/ditkit/weights/.

It backs the offline metric of `ditkit evaluate --fashion-mnist`: the rate at which class-conditional
samples are classified as their class, and the Frechet distance in its feature space. CPU only, a few
minutes on 2 threads:

    .venv/bin/python scripts/train_fmnist_classifier.py            # writes the shipped weights
    .venv/bin/python scripts/train_fmnist_classifier.py --epochs 1 --out /tmp/clf.safetensors

Training: the 60,000 training images, AdamW with a one-cycle schedule, random shifts of up to 2 pixels
and horizontal flips. The test accuracy (10,000 test images) is printed and stored in the file's
safetensors metadata.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ditkit.atomic import atomic_path
from ditkit.data.fashion_mnist import load_fashion_mnist
from ditkit.evaluation.fmnist_classifier import ARCHITECTURE, FashionMNISTClassifier, classify

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "ditkit" / "weights" / "fmnist_classifier.safetensors"
MAX_SHIFT = 2  # pixels of random translation, the padding a 32x32 demo adds per side


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shift (zero fill) of up to MAX_SHIFT pixels and a random horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (MAX_SHIFT,) * 4)  # (N, 1, H + 4, W + 4)
    dy, dx = torch.randint(0, 2 * MAX_SHIFT + 1, (2, n), generator=gen).tolist()
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def train(args: argparse.Namespace) -> tuple[FashionMNISTClassifier, float]:
    torch.manual_seed(args.seed)  # weight init of this one script; library code takes generators
    gen = torch.Generator().manual_seed(args.seed)
    images, labels = load_fashion_mnist(args.data, split="train")
    x_all = torch.from_numpy(images.copy()).float().div(255).unsqueeze(1)  # (60000, 1, 28, 28)
    y_all = torch.from_numpy(labels)
    model = FashionMNISTClassifier().to(memory_format=torch.channels_last)
    steps_per_epoch = len(x_all) // args.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch
    )
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            x = augment(x_all[idx], gen).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), y_all[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        acc = evaluate(model, args.data)
        print(
            f"epoch {epoch + 1}/{args.epochs}  loss {total / steps_per_epoch:.4f}  test acc {acc:.4f}  "
            f"{time.time() - start:.0f}s",
            flush=True,
        )
    return model.eval(), acc


def evaluate(model: FashionMNISTClassifier, data: str | None) -> float:
    model.eval()
    images, labels = load_fashion_mnist(data, split="test")
    _, logits = classify(model, images)
    return float((logits.argmax(1) == labels).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="Fashion-MNIST folder (default: Debian's location)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, acc = train(args)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "architecture": ARCHITECTURE,
        "test_accuracy": f"{acc:.4f}",
        "train": json.dumps({k: v for k, v in vars(args).items() if k not in ("out", "data")}),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    with atomic_path(args.out) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    args.out.chmod(0o644)  # package data: readable by everyone (the temporary file was 0600)
    size_kb = args.out.stat().st_size / 1024
    print(f"test accuracy {acc:.4f}; wrote {args.out} ({size_kb:.0f} KiB)")


if __name__ == "__main__":
    main()
