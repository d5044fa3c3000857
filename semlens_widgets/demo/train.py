"""Regenerate the demo world's shipped weights from seeds and print their quality figures.

    python -m semlens_widgets.demo.train                 # both models (about 35 min on 2 cores)
    python -m semlens_widgets.demo.train --only classifier
    python -m semlens_widgets.demo.train --only clip
    python -m semlens_widgets.demo.train --eval-only     # figures of the shipped weights
    python -m semlens_widgets.demo.train --only clip --clip-init OLD.safetensors --clip-steps 100 --clip-lr 1e-3

The shipped weights are exactly what the first three commands write (same seeds, same defaults,
2 torch threads); the last one fine-tunes existing weights with the current losses.

Figures printed:
- classifier: clean test accuracy, accuracy on the poisoned split and the drop, the share of
  poisoned non-shortcut images predicted as the shortcut class;
- CLIP: per vocabulary concept, the AUC of text-image similarity between clean test images
  with and without the concept (target: median >= 0.9).

Everything is deterministic from the seeds below on a given machine (thread count included:
``--threads``). Weights are written as fp16 safetensors to ``semlens_widgets/demo/weights``.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ._training import log, save_fp16
from .clip_train import report_clip, train_clip
from .data import CLASS_NAMES, SHORTCUT_CLASS, make_split
from .models import CLASSIFIER_WEIGHTS, CLIP_WEIGHTS, DemoCNN, load_classifier

CLASSIFIER_SEED = 0
CLIP_SEED = 0


# --------------------------------------------------------------------------- classifier


@torch.no_grad()
def predict(model: torch.nn.Module, images_uint8: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes LongTensor [n] of ByteTensor images [n, 3, 64, 64]."""
    model.eval()
    out = [model(images_uint8[i : i + batch_size].float() / 255.0).argmax(1) for i in range(0, len(images_uint8), batch_size)]
    return torch.cat(out)


def classifier_figures(model: torch.nn.Module, n_per_class: int | None = None) -> dict[str, float]:
    """Clean test accuracy, poisoned accuracy, drop and shortcut rate of ``model``."""
    test = make_split("test", n_per_class).materialize()
    poisoned = make_split("poisoned", n_per_class).materialize()
    p_clean = predict(model, test.images_uint8())
    p_pois = predict(model, poisoned.images_uint8())
    y = test.labels
    star = CLASS_NAMES.index(SHORTCUT_CLASS)
    other = y != star
    acc_clean = (p_clean == y).float().mean().item()
    acc_pois = (p_pois == y).float().mean().item()
    return {
        "test_accuracy": acc_clean,
        "poisoned_accuracy": acc_pois,
        "accuracy_drop": acc_clean - acc_pois,
        "shortcut_rate_clean": (p_clean[other] == star).float().mean().item(),
        "shortcut_rate_poisoned": (p_pois[other] == star).float().mean().item(),
    }


def train_classifier(
    epochs: int = 10, batch_size: int = 64, lr: float = 4e-3, seed: int = CLASSIFIER_SEED, out: Path = CLASSIFIER_WEIGHTS
) -> DemoCNN:
    """Train :class:`DemoCNN` on the ``train`` split (AdamW, one-cycle, random horizontal and
    vertical flips: every class is flip-invariant) and save it (fp16)."""
    torch.manual_seed(seed)
    t0 = time.time()
    train = make_split("train").materialize()
    x_all, y_all = train.images_uint8(), train.labels
    log(f"classifier: rendered {len(train)} training images in {time.time() - t0:.1f}s")
    model = DemoCNN(num_classes=len(CLASS_NAMES))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(train), generator=g)
        tot, correct, n = 0.0, 0, 0
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            x, y = x_all[idx].float() / 255.0, y_all[idx]
            flip = torch.rand(len(idx), 2, generator=g) < 0.5
            x = torch.where(flip[:, 0, None, None, None], x.flip(3), x)
            x = torch.where(flip[:, 1, None, None, None], x.flip(2), x)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            n += len(idx)
        log(f"classifier epoch {epoch + 1}/{epochs}: loss {tot / n:.4f} train acc {correct / n:.4f} ({time.time() - t0:.0f}s)")
    model.eval()
    save_fp16(model.state_dict(), out)
    log(f"classifier saved to {out} ({out.stat().st_size / 1e6:.2f} MB) after {time.time() - t0:.0f}s")
    return model


def report_classifier(path: Path = CLASSIFIER_WEIGHTS) -> dict[str, float]:
    model = load_classifier(path)
    figs = classifier_figures(model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"classifier ({n_params} parameters, {path.name}):")
    print(f"  clean test accuracy        {figs['test_accuracy']:.4f}")
    print(f"  poisoned split accuracy    {figs['poisoned_accuracy']:.4f}")
    print(f"  accuracy drop              {figs['accuracy_drop']:.4f}")
    print(
        f"  non-{SHORTCUT_CLASS} images predicted {SHORTCUT_CLASS!r}: "
        f"clean {figs['shortcut_rate_clean']:.4f}, poisoned {figs['shortcut_rate_poisoned']:.4f}"
    )
    return figs


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m semlens_widgets.demo.train", description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["classifier", "clip"], default=None, help="train one model only")
    ap.add_argument("--eval-only", action="store_true", help="print the figures of the shipped weights")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--epochs", type=int, default=10, help="classifier epochs")
    ap.add_argument("--clip-steps", type=int, default=1000, help="CLIP optimisation steps")
    ap.add_argument("--clip-lr", type=float, default=2e-3, help="CLIP peak learning rate")
    ap.add_argument("--clip-init", type=Path, default=None, help="start the CLIP from these weights (fine-tune)")
    ap.add_argument("--clip-out", type=Path, default=CLIP_WEIGHTS, help="where to write the CLIP weights")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.only in (None, "classifier"):
        if not args.eval_only:
            train_classifier(epochs=args.epochs)
        report_classifier()
    if args.only in (None, "clip"):
        if not args.eval_only:
            train_clip(steps=args.clip_steps, lr=args.clip_lr, seed=CLIP_SEED, out=args.clip_out, init=args.clip_init)
        report_clip(args.clip_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
