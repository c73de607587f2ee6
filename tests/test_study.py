"""`ditkit study` on a tiny grid: files, rows, plots, resume after a failure, and spec validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_fake_fmnist
from safetensors.torch import load_file

from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.study import StudyOptions, builtin_study, load_spec, load_study, run_study, spec_from_dict
from ditkit.study import evaluate as study_evaluate
from ditkit.study.results import train_compute

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DATA = Path(__file__).parent / "data"

RUNS = ("w16-h1", "w32-h2")


def tiny_spec_dict(data_dir: Path) -> dict:
    """2 runs (two widths) x 2 evaluations of 20 samples, 28x28 fake Fashion-MNIST, 4 steps of 8."""
    return {
        "name": "tiny",
        "base": {
            "model": "DiT-T/2",
            "data_dir": str(data_dir),
            "image_size": 28,
            "first_stage": "identity",
            "patch_size": 14,
            "depth": 1,
            "global_batch": 8,
            "steps": 4,
            "lr": 1e-3,
            "ema_decay": 0.9,
            "learn_sigma": False,
            "log_every": 1,
            "device": "cpu",
        },
        "axes": {"hidden_size,num_heads": [[16, 1], [32, 2]]},
        "eval": {"fractions": [0.5, 1.0], "num_samples": 20, "sampler": "ddim", "sample_steps": 2},
    }


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> Path:
    return write_fake_fmnist(tmp_path_factory.mktemp("data") / "fmnist")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, fmnist) -> Path:
    """A tiny study run once, without interruption."""
    out = tmp_path_factory.mktemp("study") / "tiny"
    run_study(spec_from_dict(tiny_spec_dict(fmnist), "test"), StudyOptions(str(out), jobs=1, progress=False))
    return out


def test_tiny_study_writes_samples_rows_tables_and_plots(finished):
    doc = json.loads((finished / "results.json").read_text())
    rows = doc["rows"]
    assert [(r["run"], r["step"]) for r in rows] == [(n, s) for n in RUNS for s in (2, 4)]
    for row in rows:
        assert row["hidden_size"] in (16, 32) and row["patch_size"] == 14 and row["block"] == "adaln-zero"
        assert row["params"] > 0 and row["gflops"] > 0
        assert row["train_compute_flops"] == pytest.approx(3 * row["gflops"] * 1e9 * 8 * row["step"])
        assert np.isfinite(row["fmnist_frechet"]) and 0 <= row["fmnist_agreement"] <= 1
        with np.load(finished / row["samples"]) as npz:
            assert npz["arr_0"].dtype == np.uint8 and npz["arr_0"].shape == (20, 28, 28)
            assert npz["labels"].tolist() == [i % 10 for i in range(20)]
    wide, narrow = rows[2], rows[0]
    assert wide["gflops"] > narrow["gflops"] and wide["params"] > narrow["params"]
    assert train_compute(1.0, 8, 4) == 3 * 1e9 * 8 * 4
    md = (finished / "results.md").read_text()
    assert "| configuration |" in md and "w32-h2" in md and "![curves](curves.png)" in md
    for plot in ("curves.png", "vs_compute.png", "vs_gflops.png"):
        assert (finished / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = finished / "runs" / RUNS[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [
        "0000002",
        "0000004",
    ]


def test_study_samples_are_the_pipelines_with_per_sample_seeds(finished):
    from ditkit.generation.pipeline import DiTPipeline

    pipe = DiTPipeline.from_pretrained(finished / "runs" / RUNS[1] / "checkpoints" / "0000002", device="cpu")
    # images 5..7 drawn alone with seeds 5..7 are images 5..7 of the study's batch
    alone = pipe([5, 6, 7], guidance_scale=1.0, num_steps=2, sampler="ddim", seeds=[5, 6, 7], progress=False)
    with np.load(finished / "runs" / RUNS[1] / "samples_2.npz") as npz:
        np.testing.assert_array_equal(npz["arr_0"][5:8], alone[..., 0])


def test_killed_study_of_two_seeds_resumes_without_redoing_work(tmp_path, fmnist, finished, monkeypatch):
    """One configuration with two seeds; a failure mid-training of the second seed, then a rerun: nothing
    done twice, seed 0 is the single-seed study's run, and the table shows the mean and range."""
    from ditkit.training import trainer as trainer_module

    out = tmp_path / "tiny"
    d = {**tiny_spec_dict(fmnist), "seeds": 2}
    d["axes"] = {"hidden_size,num_heads": [[16, 1]]}
    spec = spec_from_dict(d, "test")
    seeds = ("w16-h1-seed0", "w16-h1-seed1")
    assert [(p.name, p.configuration, p.seed) for p in spec.runs()] == [
        (seeds[0], "w16-h1", 0),
        (seeds[1], "w16-h1", 1),
    ]
    original_steps = trainer_module.Trainer._steps
    draws: list[int] = []

    def failing_steps(self):
        for step, micro_batches in original_steps(self):
            if self.config.out.endswith(seeds[1]) and step == 3:  # after the checkpoint at step 2
                raise RuntimeError("injected failure")
            yield step, micro_batches

    original_draw = study_evaluate.Evaluator._draw
    monkeypatch.setattr(study_evaluate.Evaluator, "_draw", lambda *a: draws.append(1) or original_draw(*a))
    monkeypatch.setattr(trainer_module.Trainer, "_steps", failing_steps)
    with pytest.raises(RuntimeError, match="injected"):
        run_study(spec, StudyOptions(str(out), jobs=1, progress=False))
    assert len(draws) == 2  # the first seed's two evaluations
    assert [r["run"] for r in json.loads((out / "results.json").read_text())["rows"]] == [seeds[0]] * 2

    monkeypatch.setattr(trainer_module.Trainer, "_steps", original_steps)
    starts: list[int] = []
    original_run = trainer_module.Trainer.run

    def counting_run(self, resume=None, **kw):
        result = original_run(self, resume, **kw)
        starts.append(result.step)
        return result

    monkeypatch.setattr(trainer_module.Trainer, "run", counting_run)
    run_study(spec, StudyOptions(str(out), jobs=1, progress=False))
    assert starts == [4] and len(draws) == 4  # only the second seed trained (from step 2) and evaluated
    log = [
        json.loads(line)["step"]
        for line in (out / "runs" / seeds[1] / "metrics.jsonl").read_text().splitlines()
    ]
    assert log == [1, 2, 3, 4]

    def ema(folder, name):
        return load_file(folder / "runs" / name / "checkpoints" / "0000004" / "ema.safetensors")

    # seed 0 is exactly the single-seed study's run; seed 1 is another training
    a, b, c = ema(finished, RUNS[0]), ema(out, seeds[0]), ema(out, seeds[1])
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    doc = json.loads((out / "results.json").read_text())
    single = [r for r in json.loads((finished / "results.json").read_text())["rows"] if r["run"] == RUNS[0]]
    assert [r["fmnist_frechet"] for r in doc["rows"] if r["seed"] == 0] == [
        r["fmnist_frechet"] for r in single
    ]
    final = [s for s in doc["summary"] if s["step"] == 4]
    assert len(final) == 1 and final[0]["seeds"] == [0, 1] and doc["seeds"] == [0, 1]
    values = [r["fmnist_frechet"] for r in doc["rows"] if r["step"] == 4]
    assert final[0]["fmnist_frechet"] == pytest.approx(sum(values) / 2)
    assert final[0]["spread"]["fmnist_frechet"] == [min(values), max(values)]
    md = (out / "results.md").read_text()
    assert "2 seeds (0, 1)" in md and "min-max over seeds" in md and f"({min(values):.4g}-" in md
    assert (out / "curves.png").is_file()

    # a rerun of a finished study does nothing but rewrite the results
    run_study(spec, StudyOptions(str(out), jobs=1, progress=False))
    assert starts == [4] and len(draws) == 4


def test_verdicts_claim_an_ordering_only_beyond_the_spread():
    from ditkit.study.spread import verdict

    names = ("small", "big")
    # lower is better for the distance: ranges apart
    v = verdict({"0": 20.0, "1": 21.0, "2": 22.0}, {"0": 15.0, "1": 16.0, "2": 17.0}, names, "fmnist_frechet")
    assert (v.better, v.level) == ("big", "beyond the spread") and v.text() == "big better, beyond the spread"
    # better on every seed, but the ranges overlap
    v = verdict({"0": 20.0, "1": 16.0, "2": 22.0}, {"0": 19.0, "1": 15.0, "2": 21.0}, names, "fmnist_frechet")
    assert (v.better, v.level, v.wins) == ("big", "on every seed", 3)
    # higher is better for agreement; one seed goes the other way
    v = verdict({"0": 0.5, "1": 0.6, "2": 0.4}, {"0": 0.45, "1": 0.5, "2": 0.5}, names, "fmnist_agreement")
    assert (v.better, v.level, v.wins, v.paired) == ("small", "within the spread", 2, 3)
    assert v.text() == "within the spread (small better on 2 of 3 seeds)"
    assert verdict({"0": 1.0}, {"0": 2.0}, names, "fid").level == "one seed"
    assert verdict({"0": 1.0, "1": 2.0}, {"0": 2.0, "1": 1.0}, names, "fid").text() == "tied"


def test_equal_compute_compares_models_where_their_curves_overlap(fmnist):
    """Fig. 9: the smaller model's last evaluation against the bigger one's curve at the same compute."""
    from ditkit.study.spread import equal_compute

    d = {**tiny_spec_dict(fmnist), "seeds": 2}
    spec = spec_from_dict(d, "test")
    plans = spec.runs()
    rows = []
    for plan in plans:
        big = plan.configuration == RUNS[1]
        for step in (1, 2, 4):
            compute = (4.0 if big else 1.0) * step  # the big model costs 4x per step
            distance = 40.0 / step - (1.0 if big else 0.0) + plan.seed * 0.1
            rows.append(
                {
                    "run": plan.name,
                    "configuration": plan.configuration,
                    "seed": plan.seed,
                    "step": step,
                    "gflops": 4.0 if big else 1.0,
                    "train_compute_flops": compute,
                    "cfg_scale": 1.0,
                    "guided_channels": "all",
                    "guidance_interval": None,
                    "fmnist_frechet": distance,
                }
            )
    found = equal_compute(rows, plans, list(spec.axes))
    assert len(found) == 1 and found[0].where == "4 FLOPs"  # the small model's end, the big one's start
    assert found[0].a["fmnist_frechet"] == {"0": 10.0, "1": pytest.approx(10.1)}  # small at step 4
    assert found[0].b["fmnist_frechet"] == {"0": 39.0, "1": pytest.approx(39.1)}  # big at step 1
    v = found[0].verdicts(["fmnist_frechet"])["fmnist_frechet"]
    assert (v.better, v.level) == (RUNS[0], "beyond the spread")


def test_a_folder_holds_one_study(tmp_path, fmnist):
    out = tmp_path / "s"
    spec = spec_from_dict(tiny_spec_dict(fmnist), "test")
    from ditkit.study.runner import claim_folder

    claim_folder(spec, StudyOptions(str(out)))
    claim_folder(spec.with_base(device="cpu", log_every=5), StudyOptions(str(out)))  # where/how may change
    with pytest.raises(UserError, match="other settings .*base"):
        claim_folder(spec.with_base(lr=5e-4), StudyOptions(str(out)))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a ditkit study"):
        claim_folder(spec, StudyOptions(str(tmp_path / "other")))


def test_guidance_variants_get_their_own_files(tmp_path, fmnist):
    d = tiny_spec_dict(fmnist)
    d["axes"] = {"hidden_size,num_heads": [[16, 1]]}
    d["eval"].update(fractions=[1.0], cfg_scale=[1.0, 3.0], num_samples=10)
    out = tmp_path / "g"
    rows = run_study(spec_from_dict(d, "test"), StudyOptions(str(out), jobs=1, progress=False))
    assert [r["cfg_scale"] for r in rows] == [1.0, 3.0]
    assert (out / "runs" / "w16-h1" / "samples_4_cfg3.npz").is_file()
    assert (out / "vs_guidance.png").is_file()
    claims = json.loads((out / "results.json").read_text())["claims"]["last_step"]
    assert [(c["varies"], c["compared"]) for c in claims] == [("guidance", ["guidance 1.0", "guidance 3.0"])]


def test_a_guidance_interval_is_drawn_at_guided_scales_and_compared_with_guidance_everywhere(
    tmp_path, fmnist
):
    """Scale 1 is no guidance, so it is drawn once (not once per interval); at each guided scale the
    interval is compared with guiding every step, beside the neighbouring scales."""
    d = tiny_spec_dict(fmnist)
    d["axes"] = {"hidden_size,num_heads": [[16, 1]]}
    d["eval"].update(fractions=[1.0], cfg_scale=[1.0, 2.0, 3.0], guidance_interval=[None, [200, 700]])
    d["eval"].update(num_samples=10)
    out = tmp_path / "g"
    rows = run_study(spec_from_dict(d, "test"), StudyOptions(str(out), jobs=1, progress=False))
    drawn = sorted((r["cfg_scale"], str(r["guidance_interval"])) for r in rows)
    assert drawn == [
        (1.0, "None"),
        (2.0, "None"),
        (2.0, "[200.0, 700.0]"),
        (3.0, "None"),
        (3.0, "[200.0, 700.0]"),
    ]
    assert (out / "runs" / "w16-h1" / "samples_4_cfg3_t200-700.npz").is_file()
    claims = json.loads((out / "results.json").read_text())["claims"]["last_step"]
    pairs = [(c["varies"], *c["compared"]) for c in claims]
    assert ("guided where", "guidance 2.0", "guidance 2.0 on t 200-700") in pairs
    assert ("guided where", "guidance 3.0", "guidance 3.0 on t 200-700") in pairs
    assert ("guidance", "guidance 2.0", "guidance 3.0") in pairs
    assert not any(c[0] == "guided where" and "1.0" in c[1] for c in pairs)


# A valid spec's axes and base, for the [eval] cases below.
BLOCK_SPEC = '[axes]\nblock = ["adaln"]\n[base]\nsteps = 10\n'


def test_records_from_before_the_steps_were_kept_get_them_from_the_spec(tmp_path, fmnist):
    """An evaluation record written before the sampler, steps and model calls were recorded reads back
    with those of the spec (a folder holds one spec, so its one count per objective is the one drawn)."""
    from ditkit.study.results import collect_rows
    from ditkit.study.runner import plan_runs

    d = tiny_spec_dict(fmnist)
    d["axes"] = {"hidden_size,num_heads": [[16, 1]]}
    d["eval"].update(fractions=[1.0], num_samples=10)
    spec = spec_from_dict(d, "test")
    out = tmp_path / "old"
    rows = run_study(spec, StudyOptions(str(out), jobs=1, progress=False))
    assert [(r["sampler"], r["sample_steps"], r["model_calls"]) for r in rows] == [("ddim", 2, 2)]
    record_path = out / "runs" / "w16-h1" / "eval_4.json"
    record = json.loads(record_path.read_text())
    for key in ("sampler", "sample_steps", "model_calls"):
        del record[key]
    record_path.write_text(json.dumps(record))
    assert collect_rows(plan_runs(spec, StudyOptions(str(out))), spec.eval) == rows


def test_a_sweep_of_sample_steps_draws_every_count_and_compares_each_objective_at_its_best(tmp_path, fmnist):
    """Flow (Heun) and MeanFlow, each drawn at its own list of step counts: a row per count with its model
    calls, the files tagged by the steps, the best count per configuration and the plot against calls."""
    d = tiny_spec_dict(fmnist)
    d["axes"] = {"method": {"flow": {"objective": "flow"}, "meanflow": {"objective": "meanflow", "steps": 2}}}
    d["eval"] = {
        "fractions": [1.0],
        "num_samples": 10,
        "sampler": {"flow": "heun", "meanflow": "meanflow"},
        "sample_steps": {"flow": [1, 2], "meanflow": [1, 2, 3]},
    }
    out = tmp_path / "sweep"
    rows = run_study(spec_from_dict(d, "test"), StudyOptions(str(out), jobs=1, progress=False))
    drawn = [(r["run"], r["step"], r["sampler"], r["sample_steps"], r["model_calls"]) for r in rows]
    assert drawn == [
        ("flow", 4, "heun", 1, 2),
        ("flow", 4, "heun", 2, 4),
        ("meanflow", 2, "meanflow", 1, 1),
        ("meanflow", 2, "meanflow", 2, 2),
        ("meanflow", 2, "meanflow", 3, 3),
    ]
    assert (out / "runs" / "flow" / "samples_4_s2.npz").is_file() and (out / "vs_calls.png").is_file()
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["best_steps"]) == {"flow", "meanflow"}
    best = doc["best_steps"]["meanflow"]["sample_steps"]
    assert best == min(
        (1, 2, 3),
        key=lambda n: next(
            r["fmnist_frechet"] for r in rows if r["sample_steps"] == n and r["run"] == "meanflow"
        ),
    )
    [claim] = doc["claims"]["last_step"]
    assert claim["compared"] == ["flow", "meanflow"] and "calls (meanflow, " in claim["at"]
    md = (out / "results.md").read_text()
    assert "## Model calls" in md and "lowest mean Frechet distance" in md and "| model calls |" in md


def test_orderings_compare_configurations_each_at_its_best_number_of_calls(tmp_path):
    """Hand-made rows: flow is worse than MeanFlow at one step each but better at each one's best count
    (Heun 4 steps, 8 calls; MeanFlow 2 jumps, tied with 4 jumps and fewer calls): the orderings say so."""
    from ditkit.study.plots import write_plots
    from ditkit.study.results import markdown
    from ditkit.study.spread import best_steps, comparisons, representative, summarize

    spec = spec_from_dict(
        {
            "seeds": 3,
            "base": {"model": "DiT-T/2", "steps": 10, "image_size": 28, "first_stage": "identity"},
            "axes": {"method": {"flow": {"objective": "flow"}, "meanflow": {"objective": "meanflow"}}},
            "eval": {
                "fractions": [1.0],
                "sampler": {"flow": "heun", "meanflow": "meanflow"},
                "sample_steps": {"flow": [1, 2, 4], "meanflow": [1, 2, 4]},
            },
        },
        "test",
    )
    plans = spec.runs()
    distance = {"flow": {1: 50.0, 2: 20.0, 4: 5.0}, "meanflow": {1: 12.0, 2: 6.0, 4: 6.0}}
    rows = [
        {
            "run": plan.name,
            "configuration": plan.configuration,
            "seed": plan.seed,
            "step": 10,
            **{"hidden_size": 16, "depth": 1, "patch_size": 14, "gflops": 1.0, "train_compute_flops": 1.0},
            "sampler": "heun" if plan.configuration == "flow" else "meanflow",
            "sample_steps": n,
            "model_calls": 2 * n if plan.configuration == "flow" else n,
            "cfg_scale": 1.0,
            "guided_channels": "all",
            "guidance_interval": None,
            "fmnist_frechet": value + 0.1 * plan.seed,
        }
        for plan in plans
        for n, value in distance[plan.configuration].items()
    ]
    assert best_steps(rows) == best_steps(summarize(rows)) == {"flow": 4, "meanflow": 2}
    assert {(r["configuration"], r["sample_steps"]) for r in representative(rows)} == {
        ("flow", 4),
        ("meanflow", 2),
    }
    [found] = comparisons(summarize(rows), plans, list(spec.axes), ["method"])
    assert found.where == "step 10; 8 calls (heun, 4 steps) vs 2 calls (meanflow, 2 steps)"
    verdict = found.verdicts(["fmnist_frechet"])["fmnist_frechet"]
    assert (verdict.better, verdict.level) == ("flow", "beyond the spread")
    page = markdown(spec, plans, rows, [])
    assert "Best: flow at 8 calls (heun, 4 steps), meanflow at 2 calls (meanflow, 2 steps)." in page
    assert "each configuration at its best number of model calls" in page
    assert {p.name for p in write_plots(rows, tmp_path, "t")} == {"final.png", "vs_calls.png"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("[axes]\nwidth = [64, 128]\n[base]\nsteps = 10\n", "unknown axis 'width'"),
        ('[axes]\nblock = ["adaln", "film"]\n[base]\nsteps = 10\n', "unknown block design 'film'"),
        ("[axes]\nblock = []\n[base]\nsteps = 10\n", "needs a non-empty list"),
        ('[axes]\nblock = ["adaln"]\n[base]\nsteps = 10\nbatch = 4\n', "unknown base field 'batch'"),
        (
            '[axes]\nblock = ["adaln"]\n[base]\nsteps = 10\n[eval]\nsamples = 4\n',
            "unknown eval setting 'samples'",
        ),
        (
            '[axes]\nblock = ["adaln"]\n[base]\nsteps = 10\n[eval]\nsampler = "euler9"\n',
            "unknown eval sampler",
        ),
        ('[axes]\n"depth,num_heads" = [[2, 2, 2]]\n[base]\nsteps = 10\n', "takes lists of 2 values"),
        ("[axes]\nlr = [1e-3, -1.0]\n[base]\nsteps = 10\n", "lr > 0"),
        ('[axes]\nblock = ["adaln"]\n', "number of `steps`"),
        ("[axes\nblock = 1", "not valid TOML"),
        ('colour = "red"\n[axes]\nblock = ["adaln"]\n', "unknown key 'colour'"),
        (f"{BLOCK_SPEC}[eval]\nsample_steps = 0\n", "eval sample_steps must be a whole number >= 1"),
        (f"{BLOCK_SPEC}[eval]\nsample_steps = []\n", "eval sample_steps must be a whole number >= 1"),
        (f"{BLOCK_SPEC}[eval]\nsample_steps = [4, 2.5]\n", "eval sample_steps must be a whole number"),
        (f"{BLOCK_SPEC}[eval]\nsample_steps = {{flow = [2, 2]}}\n", "sample_steps.flow must be .* distinct"),
        (f"{BLOCK_SPEC}[eval]\nsample_steps = {{sde = 2}}\n", "sample_steps tables are keyed by objective"),
        (f"{BLOCK_SPEC}[eval]\nsample_steps = {{}}\n", "sample_steps tables are keyed by objective"),
    ],
)
def test_spec_validation_gives_one_clear_line(tmp_path, text, message):
    spec = _write(tmp_path / "s.toml", text)
    with pytest.raises(UserError, match=message) as err:
        load_study(str(spec))
    assert "\n" not in str(err.value)


def test_json_spec_and_the_command_line(tmp_path, fmnist, capsys):
    d = tiny_spec_dict(fmnist)
    path = _write(tmp_path / "tiny.json", json.dumps(d))
    assert load_spec(path).axes == d["axes"]
    assert main(["study", str(path), "--plan", "--set", "depth=2", "--seeds", "2"]) == 0
    printed = capsys.readouterr().out
    assert "w16-h1-seed1" in printed and "w32-h2-seed0" in printed and "| gflops |" in printed
    assert main(["study", str(tmp_path / "absent.toml"), "--out", str(tmp_path / "x")]) == 2
    assert main(["study", "sizes", "--plan"]) == 2
    err = capsys.readouterr().err
    assert "no such study spec" in err and "unknown study 'sizes'" in err


def test_builtin_cpu_presets_plan(fmnist):
    scaling = load_study("scaling", data_dir=str(fmnist), steps=8)
    runs = scaling.runs()
    assert len(runs) == 18 and {r.config.model_overrides["patch_size"] for r in runs} == {4, 7}
    assert {r.config.steps for r in runs} == {8} and runs[0].config.data_dir == str(fmnist)
    assert [r.seed for r in runs[:3]] == [0, 1, 2] and runs[0].name == "w64-h1-p7-seed0"
    # curves: a constant rate, evaluated at log-spaced steps (each a finished training at its compute)
    assert runs[0].config.lr_schedule == "constant" and builtin_study("scaling").eval_steps(1600) == [
        200,
        400,
        800,
        1600,
    ]
    assert len(load_study("scaling", seeds=1).runs()) == 6
    guidance = builtin_study("guidance")
    assert guidance.runs()[0].config.lr_schedule == "wsd" and guidance.eval.fractions == (1.0,)
    blocks = builtin_study("blocks")
    assert [r.values["block"] for r in blocks.runs() if r.seed == 0] == [
        "adaln-zero",
        "adaln",
        "cross-attention",
        "in-context",
    ]
    assert builtin_study("guidance").eval.guidance_scale[0] == 1.0
    assert len(builtin_study("scaling", "gpu").runs()) == 12
    with pytest.raises(UserError, match="needs --data CACHE"):
        load_study("blocks", scale="gpu")


def test_the_objectives_preset_trains_for_equal_time_and_sweeps_model_calls():
    """Issue 29: MeanFlow trains the steps that cost what flow's do (`--steps` keeps the ratio), and each
    objective is drawn at a sweep of sample steps by its own sampler."""
    from ditkit.study.presets import CPU_FINAL_STEPS, MEANFLOW_RELATIVE_COST

    spec = load_study("objectives")
    runs = spec.runs()
    assert [r.name for r in runs[:4]] == ["flow-seed0", "flow-seed1", "flow-seed2", "diffusion-seed0"]
    steps = {r.values["objective"]: r.config.steps for r in runs}
    base = CPU_FINAL_STEPS["objectives"]
    assert steps == {"flow": base, "diffusion": base, "meanflow": round(base / MEANFLOW_RELATIVE_COST)}
    assert 1.5 < MEANFLOW_RELATIVE_COST < 3  # docs/meanflow.md: two to two and a half flow steps
    assert all(r.config.objective == r.values["objective"] for r in runs)
    assert spec.eval.sampler == {"flow": "heun", "diffusion": "dpm++2m", "meanflow": "meanflow"}
    assert spec.eval.sample_steps["meanflow"] == (1, 2, 4, 8) and spec.eval.fractions == (1.0,)
    assert [v.steps for v in spec.eval.variants("flow")] == [1, 2, 4, 8, 16]
    smoke = {r.values["objective"]: r.config.steps for r in load_study("objectives", steps=30).runs()}
    assert smoke == {"flow": 30, "diffusion": 30, "meanflow": round(steps["meanflow"] * 30 / base)}
    gpu = builtin_study("objectives", "gpu")
    assert {r.config.steps for r in gpu.runs()} == {50_000} and gpu.eval.sample_steps["meanflow"] == (1, 2)


def test_the_documented_example_spec_loads():
    spec = load_spec(Path(__file__).parents[1] / "docs" / "studies" / "example.toml")
    assert [r.name for r in spec.runs()] == ["d2", "d4", "d6"]
    assert spec.eval.guidance_scale == (1.0, 4.0) and spec.eval_steps(2000) == [1000, 2000]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_workers_share_the_runs_and_give_the_same_results(tmp_path, fmnist, finished):
    """Two worker processes (one per GPU on a GPU machine; here on the CPU) run one run each."""
    out = tmp_path / "parallel"
    spec = spec_from_dict(tiny_spec_dict(fmnist), "test")
    rows = run_study(spec, StudyOptions(str(out), device="cpu", jobs=2, progress=False))
    assert rows == json.loads((finished / "results.json").read_text())["rows"]
    assert (out / "vs_gflops.png").is_file()


def test_runs_are_dealt_to_workers_by_cost():
    """The costliest run first, each to the least loaded worker: the CPU scaling preset's six runs
    (relative step costs measured on one core) split 1.28 / 1.40, where taking them in turn gave 0.76 / 1.92."""
    from ditkit.study.runner import deal_runs

    costs = [0.13, 0.28, 0.27, 0.64, 0.36, 1.0]
    workers = deal_runs(costs, 2)
    loads = [sum(c for c, w in zip(costs, workers, strict=True) if w == k) for k in range(2)]
    assert sorted(round(x, 2) for x in loads) == [1.28, 1.4]
    assert deal_runs([1.0, 1.0, 1.0], 3) == [0, 1, 2]
    assert deal_runs([5.0], 4) == [0]


def test_default_jobs_use_every_cpu_core(monkeypatch):
    from ditkit.study import runner

    monkeypatch.setattr(runner, "cpu_cores", lambda: 2)
    assert runner.default_jobs("cpu", 6) == 2
    assert runner.default_jobs("cpu", 1) == 1


@pytest.mark.parametrize("study", ["scaling", "blocks"])
def test_one_seed_results_from_before_the_rename_still_load(study, tmp_path):
    """The one-seed results once committed in docs/studies (tests/data/study_one_seed), written before the
    guidance scale had one name in the code: the [eval] table reads back (and writes out) as it is, and
    the rows draw the same plots."""
    from ditkit.study.plots import write_plots
    from ditkit.study.spec import GUIDANCE_KEY, EvalSettings
    from ditkit.study.spread import best_steps, representative

    doc = json.loads((DATA / "study_one_seed" / f"{study}.json").read_text())
    settings = EvalSettings.from_dict(doc["eval"], study)
    assert json.loads(json.dumps(settings.to_dict())) == doc["eval"] and settings.guidance_scale == (1.0,)
    assert {row[GUIDANCE_KEY] for row in doc["rows"]} == {1.0}
    assert write_plots(doc["rows"], tmp_path, study)
    # no sample steps recorded: one count, so no best count, and every row stands for its configuration
    assert best_steps(doc["rows"]) == {} and representative(doc["rows"]) == doc["rows"]


def test_the_gflops_correlation_of_the_one_seed_scaling_results():
    """Fig. 8's number from the rows: -0.97 on the one-seed CPU scaling results once committed."""
    from ditkit.study.spread import gflops_correlation

    doc = json.loads((DATA / "study_one_seed" / "scaling.json").read_text())
    r, per_seed = gflops_correlation(doc["rows"], "fmnist_frechet")
    assert r == pytest.approx(-0.973, abs=1e-3) and per_seed == [r]
    assert gflops_correlation(doc["rows"][:6], "fmnist_frechet") is None  # two models: no correlation


def test_the_eval_guidance_scales_have_two_spellings_but_one_value():
    from ditkit.study.spec import EvalSettings

    for key in ("cfg_scale", "guidance_scale"):
        assert EvalSettings.from_dict({key: [1.0, 3.0]}, "spec").guidance_scale == (1.0, 3.0)
    with pytest.raises(UserError, match="once"):
        EvalSettings.from_dict({"cfg_scale": [1.0], "guidance_scale": [2.0]}, "spec")


@pytest.mark.parametrize(
    ("axes", "drawn"),
    [
        ({"hidden_size,num_heads": [[16, 1], [32, 2], [48, 3]]}, True),
        ({"block": ["adaln-zero", "adaln", "in-context"]}, False),
    ],
)
def test_the_gflops_correlation_is_drawn_only_across_model_sizes(fmnist, axes, drawn):
    """Fig. 8 relates size to quality: across block designs a Gflops difference is a design's overhead,
    and a correlation there (the CPU blocks study's r = 0.86) would read as "more compute is worse"."""
    from ditkit.study.results import _claims

    spec = spec_from_dict({**tiny_spec_dict(fmnist), "axes": axes}, "test")
    plans = spec.runs()
    rows = [
        {
            "run": plan.name,
            "configuration": plan.configuration,
            "seed": plan.seed,
            "step": 4,
            "gflops": float(2**i),
            "train_compute_flops": float(2**i) * 4,
            "cfg_scale": 1.0,
            "guided_channels": "all",
            "guidance_interval": None,
            "fmnist_frechet": 30.0 - 5 * i,
        }
        for i, plan in enumerate(plans)
    ]
    text = "\n".join(_claims(spec, plans, rows, ["fmnist_frechet"]))
    assert ("Correlation of log Gflops" in text) is drawn
    assert ("r = -1.00" in text) is drawn
