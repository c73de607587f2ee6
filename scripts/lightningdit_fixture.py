"""Regenerate tests/data/lightningdit/: tiny LightningDiT models built by LightningDiT's own code.

    python scripts/lightningdit_fixture.py --repo PATH/TO/LightningDiT --out tests/data/lightningdit

PATH/TO/LightningDiT is a checkout of hustvl/LightningDiT; its `models/` package is imported from there
(it needs torch, timm and einops). The script builds two random tiny models with its `LightningDiT` class,
moves every weight off its initial value (zero-initialised layers included) so that the comparison means
something, and writes
- all_options.pt: a plain state dict (their released files' form) of a model with RMSNorm, SwiGLU, RoPE and
  QK-norm on;
- wo_shift.pt: their training dict {"model", "ema"} of a model with adaLN without shift, QK-norm over
  LayerNorm, the GELU MLP and learn_sigma on;
- outputs.pt: fixed inputs and their `forward` and `forward_with_cfg` outputs for both (EMA weights);
- presets.json: the parameter count of each of their presets with their released options.
`tests/test_lightningdit.py` loads these through `ditkit.load_model` and compares.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

# The tiny models: 8x8x4 inputs, patch 2, hidden 32 over 2 heads (head size 16, as rope needs a multiple of
# 4), 2 blocks, 10 classes.
TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)
# How far the weights are moved from their initial values (a normal draw of this std added to each).
PERTURBATION = 0.1
# Guidance as in their inference config (configs/reproductions/*_800ep_cfg.yaml): scale and interval start.
CFG_SCALE = 6.7
CFG_INTERVAL_START = 0.125


def _perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed":  # the fixed sin-cos table stays what their code computes
                p.add_(PERTURBATION * torch.randn(p.shape, generator=generator))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", required=True, help="a checkout of hustvl/LightningDiT")
    parser.add_argument("--out", default="tests/data/lightningdit")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.repo).resolve()))
    from models.lightningdit import LightningDiT, LightningDiT_models  # their code

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    all_options = LightningDiT(
        **TINY, use_qknorm=True, use_swiglu=True, use_rope=True, use_rmsnorm=True, learn_sigma=False
    ).eval()
    wo_shift = LightningDiT(**TINY, use_qknorm=True, wo_shift=True, learn_sigma=True).eval()
    _perturb(all_options, g)
    _perturb(wo_shift, g)
    raw = {k: v + PERTURBATION * torch.randn(v.shape, generator=g) for k, v in wo_shift.state_dict().items()}
    torch.save(all_options.state_dict(), out / "all_options.pt")
    torch.save({"model": raw, "ema": wo_shift.state_dict()}, out / "wo_shift.pt")

    x = torch.randn(3, TINY["in_channels"], TINY["input_size"], TINY["input_size"], generator=g)
    t = torch.tensor([0.05, 0.5, 0.9])
    y = torch.tensor([1, 7, TINY["num_classes"]])  # the last is the null class
    record = {"x": x, "t": t, "y": y}
    with torch.no_grad():
        for name, model in (("all_options", all_options), ("wo_shift", wo_shift)):
            record[name] = model(x, t, y)
            for i, ti in enumerate(t.tolist()):  # their guidance, one time per call (it reads t[0])
                xx = torch.cat([x, x])
                yy = torch.cat(
                    [y.clamp(max=TINY["num_classes"] - 1), torch.full_like(y, TINY["num_classes"])]
                )
                tt = torch.full((6,), ti)
                guided = model.forward_with_cfg(
                    xx, tt, yy, CFG_SCALE, cfg_interval=True, cfg_interval_start=CFG_INTERVAL_START
                )
                record[f"{name}_cfg_{i}"] = guided[:3]
    torch.save(record, out / "outputs.pt")

    released = dict(input_size=16, in_channels=32, use_swiglu=True, use_rope=True, use_rmsnorm=True)
    counts = {}
    for name, build in LightningDiT_models.items():
        with torch.device("meta"):
            model = build(**released)
        counts[name] = sum(p.numel() for p in model.parameters())
    (out / "presets.json").write_text(json.dumps(counts, indent=1) + "\n")
    print(json.dumps(counts, indent=1))


if __name__ == "__main__":
    main()
