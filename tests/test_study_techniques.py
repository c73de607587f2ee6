"""The techniques study (issue 26): an axis of named variants, equal-time steps, comparisons with the baseline."""

from __future__ import annotations

import json

import pytest
from helpers import write_fake_fmnist

from ditkit.demo.recipe import DEMO_RECIPE
from ditkit.errors import UserError
from ditkit.study import StudyOptions, load_study, run_study, spec_from_dict
from ditkit.study.presets import TECHNIQUE_BASE_STEPS, TECHNIQUE_RELATIVE_COST, TECHNIQUES
from ditkit.study.spread import neighbours


def test_named_variants_set_their_fields_and_name_their_runs():
    spec = spec_from_dict(
        {
            "base": {
                "model": "DiT-T/2",
                "steps": 10,
                "image_size": 28,
                "first_stage": "identity",
                "objective": "flow",
            },
            "axes": {
                "tech": {"plain": {}, "rms": {"norm": "rmsnorm", "steps": 20}, "cos": {"cosine_loss": True}},
                "depth": [1, 2],
            },
            "eval": {"fractions": [1.0]},
        },
        "test",
    )
    runs = spec.runs()
    assert [r.name for r in runs] == ["plain-d1", "plain-d2", "rms-d1", "rms-d2", "cos-d1", "cos-d2"]
    rms = runs[2]
    assert rms.values == {"tech": "rms", "norm": "rmsnorm", "steps": 20, "depth": 1}
    assert rms.config.model_overrides["norm"] == "rmsnorm" and rms.config.steps == 20
    assert runs[0].config.steps == 10 and "norm" not in runs[0].config.model_overrides
    assert runs[4].config.cosine_loss is True
    # every variant is compared with the first (the baseline), not with its list neighbour
    pairs = {(a, b) for axis, a, b in neighbours(runs, list(spec.axes), ["tech"]) if axis == "tech"}
    assert pairs == {
        ("plain-d1", "rms-d1"),
        ("plain-d1", "cos-d1"),
        ("plain-d2", "rms-d2"),
        ("plain-d2", "cos-d2"),
    }


@pytest.mark.parametrize(
    "axes, message",
    [
        ({"norm": {"a": {}}}, "needs a label that is no field name"),
        ({"tech": {}}, "at least one named variant"),
        ({"tech": {"a": 3}}, "must be a table of fields"),
        ({"tech": {"a": {"colour": 1}}}, "sets unknown field 'colour'"),
    ],
)
def test_named_variants_are_checked_in_one_line(axes, message):
    with pytest.raises(UserError, match=message):
        spec_from_dict({"base": {"steps": 2}, "axes": axes}, "spec.toml")


def test_the_techniques_preset_compares_at_equal_time_with_the_demos_evaluation():
    spec = load_study("techniques", seeds=1)
    runs = {r.values["technique"]: r for r in spec.runs()}
    assert list(runs) == list(TECHNIQUES)
    base = runs["baseline"].config
    assert base.steps == TECHNIQUE_BASE_STEPS == DEMO_RECIPE.steps // 2  # half the demo's training
    assert (base.objective, base.optimizer, base.lr) == (
        DEMO_RECIPE.objective,
        DEMO_RECIPE.optimizer,
        DEMO_RECIPE.lr,
    )
    for name, run in runs.items():  # steps in inverse proportion to the measured cost of a step
        assert run.config.steps == round(TECHNIQUE_BASE_STEPS / TECHNIQUE_RELATIVE_COST[name])
    light = runs["lightningdit"].config
    assert light.model_overrides | {"norm": "rmsnorm", "mlp": "swiglu", "rope": True} == light.model_overrides
    assert light.cosine_loss and not light.model_overrides.get("qk_norm")
    sampling = DEMO_RECIPE.sampling
    assert (spec.eval.sampler, spec.eval.sample_steps, spec.eval.guidance_scale) == (
        sampling.sampler,
        sampling.steps,
        (sampling.guidance_scale,),
    )
    assert (
        spec.eval.guidance_interval == (tuple(sampling.guidance_interval),) and spec.eval.num_samples == 1000
    )
    # a smoke run's --steps keeps the variants' ratios
    smoke = {
        r.values["technique"]: r.config.steps for r in load_study("techniques", seeds=1, steps=30).runs()
    }
    assert smoke["baseline"] == 30
    assert all(smoke[n] == max(1, round(30 / TECHNIQUE_RELATIVE_COST[n])) for n in TECHNIQUES)
    with pytest.raises(UserError, match="CPU preset only"):
        load_study("techniques", scale="gpu")


def test_only_runs_the_named_runs_and_the_results_gather_every_finished_one(tmp_path):
    data = write_fake_fmnist(tmp_path / "fmnist")
    spec = spec_from_dict(
        {
            "seeds": 2,
            "base": {
                "model": "DiT-T/2",
                "data_dir": str(data),
                "image_size": 28,
                "first_stage": "identity",
                "objective": "flow",
                "patch_size": 14,
                "depth": 1,
                "hidden_size": 16,
                "num_heads": 1,
                "global_batch": 8,
                "steps": 2,
                "learn_sigma": False,
                "device": "cpu",
            },
            "axes": {"tech": {"plain": {}, "cos": {"cosine_loss": True}}},
            "eval": {"fractions": [1.0], "num_samples": 10, "sampler": "euler", "sample_steps": 2},
        },
        "test",
    )
    out = tmp_path / "study"
    with pytest.raises(UserError, match="--only 'rms' is no run of this study"):
        run_study(spec, StudyOptions(str(out), jobs=1, progress=False, only=("rms",)))
    run_study(spec, StudyOptions(str(out), jobs=1, progress=False, only=("plain", "cos-seed0")))
    trained = sorted(p.name for p in (out / "runs").iterdir() if not p.name.startswith("."))
    assert trained == ["cos-seed0", "plain-seed0", "plain-seed1"]
    run_study(spec, StudyOptions(str(out), jobs=1, progress=False, only=("cos-seed1",)))
    assert (out / "final.png").is_file()  # one point per configuration: their final evaluations side by side
    results = (out / "results.md").read_text()
    assert "cos" in results and "plain" in results
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted({r["run"] for r in rows}) == ["cos-seed0", "cos-seed1", "plain-seed0", "plain-seed1"]
