"""`ditkit evaluate`: FID, sFID, IS, precision and recall of a sample batch (ADM evaluator compatible)."""

from __future__ import annotations

import argparse

from ditkit.cli.formatting import add_command, add_data_dir_flag, positive_int

SUMMARY = "FID/sFID/IS/precision/recall of samples (ADM evaluator), or the offline Fashion-MNIST metric"
DESCRIPTION = (
    "Evaluate a sample batch the way the ADM evaluator does (TF FID Inception in PyTorch): "
    "FID on pool_3 features, sFID on mixed_6/conv spatial features, Inception Score over splits of "
    "5,000, improved precision/recall (k=3) against 10,000 reference images."
)
EPILOG = """examples:
  ditkit evaluate samples.npz VIRTUAL_imagenet256_labeled.npz
      FID-50K, sFID, IS, precision, recall against an ADM reference batch; downloads the Inception
      weights (pt_inception-2015-12-05-6726825d.pth) into the torch hub cache when online
  ditkit evaluate samples.npz ref.npz --inception ~/weights/pt_inception-2015-12-05-6726825d.pth
  ditkit evaluate samples.npz --fashion-mnist
      offline: agreement of the shipped Fashion-MNIST classifier with the samples' labels and the
      Frechet distance in its feature space against the real test set (no download)
  ditkit evaluate samples.npz ref.npz --fashion-mnist --data-dir /data/fmnist --out metrics.json

SAMPLES.npz holds uint8 images in arr_0 ((N, H, W, 3), or greyscale (N, H, W[, 1])) and, for
--fashion-mnist agreement, class labels in `labels` or `arr_1`. Metrics are printed and written as
JSON (default: SAMPLES.metrics.json).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "evaluate", run, SUMMARY, DESCRIPTION, EPILOG)
    p.add_argument("samples", metavar="SAMPLES.npz", help="sample batch (arr_0: uint8 images)")
    p.add_argument(
        "reference",
        metavar="REFERENCE.npz",
        nargs="?",
        help="ADM reference batch (arr_0, optionally mu/sigma/mu_s/sigma_s); see `ditkit reference`",
    )
    p.add_argument(
        "--fashion-mnist",
        action="store_true",
        help="also score with the shipped Fashion-MNIST classifier against the real test set",
    )
    add_data_dir_flag(p)
    p.add_argument(
        "--inception", metavar="PATH", help="local pt_inception-2015-12-05-6726825d.pth (no download)"
    )
    p.add_argument("--classifier", metavar="PATH", help="Fashion-MNIST classifier weights (default: shipped)")
    p.add_argument(
        "--batch-size", type=positive_int, default=64, help="images per Inception batch (default 64, ADM's)"
    )
    p.add_argument("--device", default=None, help="cuda, cpu, cuda:1, ... (default: cuda if available)")
    p.add_argument(
        "--frechet-method",
        default="sqrtm",
        choices=["sqrtm", "eigh"],
        help="matrix square root: sqrtm (scipy, as ADM; default) or eigh (same value up to rounding, faster on CPU)",
    )
    p.add_argument("--out", metavar="JSON", help="where to write the metrics (default: SAMPLES.metrics.json)")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ditkit.atomic import atomic_write_text
    from ditkit.distributed import pick_device
    from ditkit.errors import UserError
    from ditkit.evaluation.adm_metrics import evaluate_npz
    from ditkit.evaluation.fmnist_classifier import evaluate_fmnist_npz

    if args.reference is None and not args.fashion_mnist:
        raise UserError("give a REFERENCE.npz (Inception metrics) and/or --fashion-mnist (offline metric)")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    device = str(pick_device(args.device or "auto", local_rank=None))  # one line for a missing GPU
    result: dict[str, object] = {"samples": str(args.samples)}
    if args.reference is not None:
        result["reference"] = str(args.reference)
        metrics = evaluate_npz(
            args.samples,
            args.reference,
            args.inception,
            args.batch_size,
            device,
            progress=not args.no_progress,
            frechet_method=args.frechet_method,
        )
        result.update(metrics)
        for name, key in (("FID", "fid"), ("sFID", "sfid"), ("Inception Score", "inception_score")):
            print(f"{name}: {metrics[key]:.4f}")
        print(f"Precision: {metrics['precision']:.4f}\nRecall: {metrics['recall']:.4f}")
    if args.fashion_mnist:
        fm = evaluate_fmnist_npz(args.samples, args.data_dir, args.classifier, device)
        result["fashion_mnist"] = fm
        print(f"Fashion-MNIST classifier Frechet distance: {fm['frechet_distance']:.4f}")
        if "agreement" in fm:
            print(f"Fashion-MNIST classifier agreement with labels: {fm['agreement']:.4f}")
        else:
            print("no labels (`labels` or `arr_1`) in the samples: agreement not computed")
    out = Path(args.out) if args.out else Path(args.samples).with_suffix(".metrics.json")
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0
