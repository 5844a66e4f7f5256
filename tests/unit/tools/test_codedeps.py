"""Each rule's code input is its subpackage plus what it imports (spkrobust.tools.codedeps): the
mapping itself, then one finished-looking copy of the tiny workflow (outputs created and marked up
to date with `snakemake --touch`, no job run) whose dry-run after an edit names exactly the stages
whose code holds the edited module, and what depends on their outputs."""
from __future__ import annotations

import os

import pytest

from helpers.wfutil import TINY, copy_workflow, plan, snakemake
from spkrobust.tools.codedeps import PKG, stage_code

STAGES = {"prepare": "data", "train_ann": "training", "convert": "training", "train_snn": "training",
          "grad": "attacks", "craft": "attacks", "clean": "evaluation", "evaluate": "evaluation",
          "aggregate": "report", "render_report": "report"}
# the rules that read a subpackage's stages' outputs, directly or not
DOWNSTREAM = {"data": set(STAGES) - {"prepare"},
              "training": {"grad", "craft", "clean", "evaluate", "aggregate", "render_report"},
              "attacks": {"evaluate", "aggregate", "render_report"}, "evaluation": {"aggregate", "render_report"},
              "report": set()}


def _rel(paths) -> set[str]:
    return {str(p.relative_to(PKG)) for p in paths}


def test_a_stage_runs_its_whole_subpackage_and_what_it_imports():
    for sub in set(STAGES.values()):
        code = _rel(stage_code(sub))
        own = {str(p.relative_to(PKG)) for p in (PKG / sub).rglob("*") if p.suffix in (".py", ".c")}
        assert own <= code, sub
        assert not any(c.startswith("config/") for c in code), sub  # config reaches the jobs as params
        assert "__init__.py" in code and "errors.py" in code, sub
    assert "nets/fused_kernel.c" in _rel(stage_code("training"))  # compiled by nets/fused.py
    attacks, report = _rel(stage_code("attacks")), _rel(stage_code("report"))
    assert "nets/estimators.py" in attacks and not any(c.startswith(("training/", "evaluation/")) for c in attacks)
    assert "attacks/registry.py" in _rel(stage_code("evaluation"))  # evaluate imports its seeding and checks
    # the report reads records: their modules, not the networks or the attacks that made them
    assert {"evaluation/records.py", "training/records.py", "attacks/ensemble_record.py"} <= report
    assert not {"nets/models.py", "nets/fused_kernel.c", "attacks/registry.py", "training/train.py"} & report
    with pytest.raises(ValueError, match="not a subpackage"):
        stage_code("attack")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny workflow with every output present and up to date (nothing was run)."""
    wd = copy_workflow(tmp_path_factory.mktemp("touched"))
    summary = snakemake(wd, "--summary", "--cores", "1", "--configfile", TINY).stdout.splitlines()
    for line in summary[1:]:
        path, _, rule = line.split("\t")[:3]
        out = wd / path
        if rule == "evaluate":  # a set's folder of records (directory output)
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch()
    snakemake(wd, "--touch", "--cores", "1", "--configfile", TINY)
    assert plan(wd, "--configfile", TINY) == {}
    return wd


def _expected(module: str) -> set[str]:
    hit = {sub for sub in set(STAGES.values()) if module in _rel(stage_code(sub))}
    direct = {rule for rule, sub in STAGES.items() if sub in hit}
    return direct | {r for sub in hit for r in DOWNSTREAM[sub]} | ({"all"} if direct else set())


@pytest.mark.parametrize("module, rules", [
    ("report/plots.py", {"aggregate", "render_report", "all"}),
    ("attacks/sapgd.py", {"grad", "craft", "clean", "evaluate", "aggregate", "render_report", "all"}),
    ("evaluation/checks/flags.py", {"clean", "evaluate", "aggregate", "render_report", "all"}),
    ("training/convert.py", set(STAGES) - {"prepare"} | {"all"}),
    ("config/vocab.py", set()),
])
def test_editing_a_module_reruns_exactly_the_stages_that_run_it(finished, module, rules):
    f = finished / "spkrobust" / module
    text, st = f.read_text(), f.stat()
    f.write_text(text + "\n# edited by test\n")
    try:
        assert set(plan(finished, "--configfile", TINY)) == rules == _expected(module)
    finally:  # the copy as it was, for the next edit
        f.write_text(text)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
