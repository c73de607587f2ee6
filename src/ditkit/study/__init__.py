"""Studies: rerun the paper's experiments (scaling, block designs, guidance, objectives) with one call.

    from ditkit.study import StudyOptions, load_study, run_study
    rows = run_study(load_study("scaling", data="/usr/share/datasets/fashion-mnist"), StudyOptions(out="runs/s"))

See `spec` (the spec file format), `runner` (folders and resume), `results` and `plots`.
"""

from ditkit.study.eval_settings import EvalSettings
from ditkit.study.presets import STUDIES, builtin_study, load_study
from ditkit.study.results import plan_table
from ditkit.study.runner import StudyOptions, run_study
from ditkit.study.spec import StudySpec, load_spec, spec_from_dict

__all__ = [
    "STUDIES",
    "EvalSettings",
    "StudyOptions",
    "StudySpec",
    "builtin_study",
    "load_spec",
    "load_study",
    "plan_table",
    "run_study",
    "spec_from_dict",
]
