"""Docs are code: every shell example in README.md, in docs/**/*.md and in each command's `--help`
epilog runs as written, and every relative link of those pages points to a file that exists.

The examples are extracted from the text (bash blocks of the README and of every guide; the lines
after "examples:" of every epilog, `\\` continuations joined) and run in document order, each source
(one page, or one epilog) in a fresh folder, on tiny stand-ins for the files they name (FIXTURES). An
example that uses what an earlier one made must follow it on the same page. Only counts are shrunk so that they take seconds
(SHRINK: steps, batch, images; never a flag name, a path or a choice). An example is skipped only for
a reason listed in SKIPS: it needs a GPU, weights from the hub, data we do not have, or hours.
To document a new command, add its example; if it cannot run here, add a SKIPS entry saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import fashion_mnist_missing

from ditkit.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

# (pattern, why the example cannot run here). The first match wins.
SKIPS: list[tuple[str, str]] = [
    (r"^ditkit sample no-dropout\.pt", "an official .pt is decoded with the SD VAE (hub download)"),
    (r"^torchrun ", "needs several GPUs (torchrun --nproc-per-node 8)"),
    (r"DiT-XL-2-256x256\.pt", "downloads the official DiT-XL/2 weights from the hub"),
    (r"SiT-XL-2-256x256\.pt", "needs SiT's released SiT-XL/2 weights (ditkit does not download them)"),
    (r"lightningdit-xl-imagenet256", "needs LightningDiT's released weights and VA-VAE (not downloaded)"),
    (r"sd-vae-ft-(ema|mse)", "downloads the SD VAE from the hub"),
    (r"--device cuda", "needs a GPU"),
    (r"--steps 400000", "hours: the paper's 400K-step DiT-XL/2 recipe"),
    (r"--num(-samples)? 50000", "hours: FID-50K sampling"),
    (r"VIRTUAL_imagenet256|--inception |^ditkit reference", "downloads the Inception weights"),
    (r" ref\.npz", "needs ref.npz from `ditkit reference` (Inception weights download)"),
    (r"imagenet/train", "needs ImageNet"),
    (r"photos/|~/vae/", "needs your own image folder and VAE file"),
    (r"runs/in256|runs/cache", "uses the latent cache of a skipped example (SD VAE download)"),
    (r"hf-pipeline/|hf-pipe/", "uses the DiTPipeline of a skipped example (SD VAE download)"),
    (
        r"results/000-DiT-XL-2",
        "an official training checkpoint: the official train.py writes it, none is published",
    ),
    (r"ditkit bench (train|sample) --model DiT-XL/2", "needs a GPU (DiT-XL/2 timing)"),
    (
        r"^ditkit study (scaling|blocks|guidance|objectives|techniques)(?!.*(--plan|--steps))",
        "tens of minutes: a full CPU study preset (tests/test_study.py runs a tiny study; a --steps smoke runs)",
    ),
    (
        r"^ditkit serve ",
        "a server that runs until stopped (tests/test_serve_browser.py drives it in Chromium)",
    ),
    (
        r"ditkit bench (memory|check|cpu-compare|peak)|ditkit bench train --model DiT-XS/2",
        "a benchmark: minutes of timing on a CPU (tests/test_bench.py runs each one small)",
    ),
]

# Examples that show an error on purpose: (pattern, text the one-line error must contain).
EXPECTED_ERRORS: list[tuple[str, str]] = [(r"golden retreiver", "did you mean")]

# Files the examples name but do not make, as tiny stand-ins (built once, copied where named).
FIXTURES = (
    "ckpt",
    "dit-xl-256/",
    "custom.pt",
    "no-dropout.pt",
    "runs/demo",
    "runs/fmnist",
    "runs/flow",
    "samples.npz",
    "~/fmnist",
    "docs/studies/example.toml",
    "fresh.json",
)


def _join_continuations(lines: list[str]) -> list[str]:
    joined: list[str] = []
    pending = ""
    for line in lines:
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1].rstrip() + " "
            continue
        pending = ""
        joined.append(text)
    return joined


def _is_command(line: str) -> bool:
    return bool(re.match(r"(ditkit|torchrun|python -m ditkit)\b", line))


def doc_pages() -> list[str]:
    """README.md and every Markdown page under docs/, as paths relative to the repository."""
    pages = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))
    return ["README.md", *pages]


def page_examples(page: str) -> list[str]:
    """The commands of a page's ```bash blocks (comments dropped), in document order."""
    commands, block = [], None
    for line in (ROOT / page).read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if block is not None:
                commands += [c for c in _join_continuations(block) if _is_command(c)]
                block = None
            elif line.strip() == "```bash":
                block = []
            continue
        if block is not None:
            block.append(line)
    return commands


def _parsers(parser: argparse.ArgumentParser, name: str = "ditkit"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for sub_name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from _parsers(sub, f"{name} {sub_name}")


def epilog_examples() -> dict[str, list[str]]:
    """Command name -> the commands of its `--help` epilog (the lines after "examples:")."""
    found = {}
    for name, parser in _parsers(build_parser()):
        epilog = parser.epilog or ""
        if "examples:" not in epilog:
            continue
        lines = epilog.split("examples:", 1)[1].splitlines()
        commands = [c for c in _join_continuations(lines) if _is_command(c)]
        if commands and commands not in found.values():  # `bench`'s commands share one epilog
            found[name] = commands
    return found


def sources() -> dict[str, list[str]]:
    """Source name (a page, or `ditkit COMMAND --help`) -> its commands; pages without one are left out."""
    pages = {page: page_examples(page) for page in doc_pages()}
    return {
        **{page: commands for page, commands in pages.items() if commands},
        **{f"{k} --help": v for k, v in epilog_examples().items()},
    }


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPS if re.search(pattern, command)), None)


def _split(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def _cli_argv(argv: list[str]) -> list[str]:
    """The arguments `ditkit` itself sees (after torchrun's or python's `-m ditkit`)."""
    for i, token in enumerate(argv):
        if token == "ditkit" and (i == 0 or argv[i - 1] == "-m"):
            return argv[i + 1 :]
    raise AssertionError(f"not a ditkit command: {argv}")


def test_examples_are_found_everywhere():
    found = sources()
    assert len(found["README.md"]) >= 15  # the quick start of every job
    assert sum(len(v) for k, v in found.items() if k.endswith(".md")) >= 60
    guides = ("demo", "models", "training", "data", "sampling", "flow-matching", "evaluation", "studies")
    for guide in (*guides, "serve", "speed", "interoperability"):
        assert f"docs/{guide}.md" in found, guide
    for command in ("models", "demo", "prepare", "train", "sample", "walk", "evaluate", "convert"):
        assert f"ditkit {command} --help" in found, command
    assert "ditkit --help" in found  # the top-level help has examples too


@pytest.mark.parametrize("source", sorted(sources()))
def test_every_example_parses(source):
    """Fast: each example, skipped or not, is accepted by the parser (no unknown flag or bad choice)."""
    for command in sources()[source]:
        argv = [os.path.expanduser(t) for t in _cli_argv(_split(command))]
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit_:
            assert exit_.code in (0, None), f"{source}: `{command}` does not parse"


# ---- running them ------------------------------------------------------------------------------------

# Counts that make an example take seconds: flag -> value, per command; flags missing are added when
# the command's default would take long.
SHRINK: dict[str, dict[str, str]] = {
    "train": {"--steps": "2", "--global-batch": "16"},
    "sample": {"--steps": "2", "--num-per-class": "1"},
    "walk": {"--steps": "2", "--frames": "3"},
    "demo": {"--steps": "2", "--num-per-class": "1"},
    "prepare": {"--limit": "16"},
    "study": {"--steps": "2", "--num-samples": "2"},
}
# Sampling steps are not added: a flow model's default sampler (dopri5) is adaptive and takes none.
ADD_IF_MISSING = {
    "demo": ("--steps", "--num-per-class"),
    "prepare": ("--limit",),
    "study": ("--steps", "--num-samples"),
}


def shrink(argv: list[str]) -> list[str]:
    """`ditkit COMMAND ...` with the SHRINK counts."""
    command = argv[1] if len(argv) > 1 else ""
    values = dict(SHRINK.get(command, {}))
    if command == "train" and "--resume" in argv:
        values["--steps"] = "3"  # one step past the 2 the first run made
    out = list(argv)
    for flag, value in values.items():
        if flag in out:
            out[out.index(flag) + 1] = value
        elif flag in ADD_IF_MISSING.get(command, ()):
            out += [flag, value]
    return out


def test_shrink_changes_only_counts():
    argv = ["ditkit", "train", "--steps", "1200", "--global-batch", "128", "--out", "runs/x"]
    assert shrink(argv) == ["ditkit", "train", "--steps", "2", "--global-batch", "16", "--out", "runs/x"]
    assert shrink(["ditkit", "demo"]) == ["ditkit", "demo", "--steps", "2", "--num-per-class", "1"]


def _tiny_checkpoint(path: Path, num_classes: int = 1000) -> None:
    from helpers import sampling_dit

    from ditkit.checkpoints import save_model

    extra = {"first_stage": {"kind": "identity", "channels": 1}}
    save_model(sampling_dit(num_classes=num_classes), path, extra=extra)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """The FIXTURES, each a tiny version of what its name stands for."""
    from ditkit.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR
    from ditkit.model.dit import DiT, DiTConfig

    if not DEFAULT_FASHION_MNIST_DIR.is_dir():
        fashion_mnist_missing("the documented examples train on it")
    root = tmp_path_factory.mktemp("stand-ins")
    _tiny_checkpoint(root / "ckpt")  # 1000 classes: ImageNet's names and indices work
    shutil.copytree(root / "ckpt", root / "dit-xl-256")
    config = DiTConfig(input_size=(16, 32), patch_size=2, in_channels=4, hidden_size=64, depth=1, num_heads=8)
    torch.save(DiT(config).state_dict(), root / "custom.pt")  # an official-layout state dict
    # An official model trained without label dropout: 1000 label rows, no null class.
    config = DiTConfig(
        input_size=8, hidden_size=32, depth=2, num_heads=2, null_class_row=False, class_dropout_prob=0.0
    )
    torch.save(DiT(config).state_dict(), root / "no-dropout.pt")
    quiet = ["--quiet"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert (
            main(["demo", "--steps", "2", "--num-per-class", "1", "--out", str(root / "runs/demo"), *quiet])
            == 0
        )
        train = ["train", "--model", "DiT-T/4", "--data", "fashion-mnist", "--image-size", "28"]
        train += ["--first-stage", "identity", "--global-batch", "8", "--steps", "2"]
        assert main([*train, "--out", str(root / "runs/fmnist"), *quiet]) == 0
        assert main([*train, "--objective", "flow", "--out", str(root / "runs/flow"), *quiet]) == 0
    shutil.copy(root / "runs/demo/samples.npz", root / "samples.npz")
    (root / "fresh.json").write_text("{}\n")  # an --init-class-map that maps no row
    (root / "docs/studies").mkdir(parents=True)
    shutil.copy(ROOT / "docs/studies/example.toml", root / "docs/studies/example.toml")  # the real file
    (root / "home").mkdir()
    (root / "home" / "fmnist").symlink_to(DEFAULT_FASHION_MNIST_DIR)
    return root


def _place_stand_ins(command: str, made: set[str], stand_ins: Path, folder: Path) -> None:
    """Copy the stand-ins `command` names, unless an earlier example (or this one's --out) makes them."""
    outs = {o.rstrip("/") for o in re.findall(r"--out\s+(\S+)", command)}
    for name in FIXTURES:
        key = name.rstrip("/")
        if name in command and key not in made and key not in outs and not name.startswith("~"):
            target = folder / key
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                if (stand_ins / key).is_dir():
                    shutil.copytree(stand_ins / key, target, symlinks=True)
                else:
                    shutil.copy(stand_ins / key, target)
    made.update(outs)


def _run(argv: list[str], folder: Path) -> tuple[int, str]:
    """Run one example: `ditkit ...` in this process (no torch import each time), others as a process."""
    if argv[0] != "ditkit":
        done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=600)
        return done.returncode, done.stdout + done.stderr
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv[1:])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, out.getvalue()


def runnable_sources() -> list[str]:
    """The sources with at least one example that runs here (the others' are all in SKIPS)."""
    return sorted(s for s, commands in sources().items() if any(skip_reason(c) is None for c in commands))


@pytest.mark.slow
@pytest.mark.parametrize("source", runnable_sources())
def test_examples_run(source, stand_ins, tmp_path, monkeypatch):
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("HOME", str(stand_ins / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    made: set[str] = set()
    ran = 0
    for command in sources()[source]:
        if skip_reason(command):
            continue
        _place_stand_ins(command, made, stand_ins, folder)
        argv = [os.path.expanduser(t) for t in _split(command)]
        if argv[0] == "python":
            argv[0] = sys.executable
        code, output = _run(shrink(argv) if argv[0] == "ditkit" else argv, folder)
        expected = next((text for pattern, text in EXPECTED_ERRORS if re.search(pattern, command)), None)
        if expected is not None:
            assert code == 2 and expected in output, f"{source}: `{command}` should fail with {expected!r}"
        else:
            assert code == 0, f"{source}: `{command}` failed:\n{output[-3000:]}"
        ran += 1
    assert ran, f"no example of {source} ran"


# ---- links and the site ------------------------------------------------------------------------------

# [text](target) and ![alt](target), with an optional "title".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _without_fences(text: str) -> str:
    """A page without its fenced code blocks (a `#` comment there is not a heading, a link not a link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _prose(text: str) -> str:
    """A page without its fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", _without_fences(text))


def _anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them (lower case, punctuation dropped, - for spaces)."""
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *$", _without_fences(page.read_text(encoding="utf-8")), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


@pytest.mark.parametrize("page", doc_pages())
def test_relative_links_exist(page):
    """Every relative link of the README and the guides names a file of the repository (and a heading)."""
    path = ROOT / page
    broken = []
    for target in LINK.findall(_prose(path.read_text(encoding="utf-8"))):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.is_relative_to(ROOT) or not dest.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading of {dest.relative_to(ROOT)} has the anchor #{anchor}")
    assert not broken, f"{page}: broken links:\n" + "\n".join(broken)


def test_docs_site_builds(tmp_path):
    """`mkdocs build --strict` over docs/ (mkdocs.yml): every page in the nav, no bad link or anchor."""
    pytest.importorskip("mkdocs", reason="mkdocs-material is in the test extra: pip install -e '.[test]'")
    argv = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's banner about mkdocs 2
    done = subprocess.run(
        [*argv, "--site-dir", str(tmp_path / "site")], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
