"""Static checks inside the suite: ruff and snakefmt (configured in pyproject.toml) and `snakemake --lint`."""
from __future__ import annotations

import re
import subprocess
import sys

from helpers.wfutil import REPO, TINY, copy_workflow, env

# lints accepted on purpose, with the reason
ACCEPTED_LINTS = {
    # one environment for the whole workflow (environment.yml / pyproject.toml), not one per rule
    "Specify a conda environment or container for each rule.:",
    # reported for workflow/rules/common.smk, which is where the lint itself says helpers belong
    "Mixed rules and functions in same snakefile.:",
    # `aggregate` writes its list files in Python: thousands of paths exceed one shell argument
    "Migrate long run directives into scripts or notebooks:",
}


def test_ruff_finds_nothing():
    p = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


# Snakemake files kept in snakefmt's format; the rule files join once their pending shell/params edits
# (--micro-batch/--time-chunk) have landed, so that formatting does not rewrite those lines twice
SNAKEFMT_FILES = ("Snakefile", *sorted(str(p.relative_to(REPO)) for p in (REPO / "workflow" / "rules").glob("*.smk")))


def test_snakefmt_finds_nothing():
    p = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "--diff", *SNAKEFMT_FILES], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def test_snakemake_lint_finds_only_accepted_lints(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    p = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--configfile", TINY], cwd=wd, env=env(),
                       capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    titles = set(re.findall(r"^    \* (.+)$", out, flags=re.M))
    assert titles, f"no lint output parsed (did the format change?):\n{out[-2000:]}"
    assert titles <= ACCEPTED_LINTS, f"new lints: {titles - ACCEPTED_LINTS}\n{out[-3000:]}"
