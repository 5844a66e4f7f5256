"""spkrobust: adversarial robustness of spiking vs. ordinary networks, as a Snakemake workflow.

Usage (see docs/architecture.md for the contract between this workflow and the library):

    snakemake all                                                            # config.yaml (profiles/default is loaded by itself)
    snakemake all --cores 2 --configfile workflow/presets/quick.yaml         # a preset instead
    snakemake all --workflow-profile profiles/slurm                          # on a SLURM cluster
    snakemake --report report.html                                           # HTML report

This file only loads and validates the config, then includes one rule file per stage.  It imports
``spkrobust.config.expand`` (pure Python, no torch), so building even a large DAG stays fast.
"""

import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


# --- config ---------------------------------------------------------------------------------
# config.yaml is the default experiment.  A file given with --configfile (a preset) is a WHOLE
# experiment that REPLACES config.yaml: config.yaml is then not loaded at all.  Loading both would
# merge them recursively, so a preset's `models:` / `attacks:` would be united with config.yaml's
# (e.g. the tiny preset would also train the CIFAR-10 models).  Keys a preset leaves out take the
# schema defaults (workflow/schemas/config.schema.yaml), not config.yaml's values.
# `--config key=value` overrides single keys of whichever file is in use.
if not workflow.overwrite_configfiles:
    workflow.configfile(os.path.join(workflow.basedir, "config.yaml"))

# The one validation: the JSON schema (types, ranges, allowed values; fills in its defaults) and
# the cross-key checks (`from:` names an existing model, ...), shared with `spkrobust validate`.
# A bad config stops the run with ONE line naming the key (sys.exit prints just the message; a
# WorkflowError would add a stack line).
from spkrobust.errors import UserError
from spkrobust.config.validate import validate_config

try:
    validate_config(config, schema=os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))
except UserError as e:  # ConfigError carries a one-line message naming the key path
    sys.exit(f"config error: {e}")


# --- rules ----------------------------------------------------------------------------------
include: "workflow/rules/common.smk"


# Wildcards only ever match names from the config (model names may contain '-': sweep members).
wildcard_constraints:
    dataset=_alt(DATASETS),
    model=_alt(MODELS),
    source=_alt(MODELS),
    target=_alt(MODELS),
    attack=_alt(config["attacks"]),
    eps=_alt(EPS),
    replica=r"\d+",
    sr=r"\d+",
    tr=r"\d+",


# The first page of `snakemake --report`: the verdicts `spkrobust report` wrote (headline claim, claims
# table, the jobs' numerical environment) once they exist; before the first run, the static page.
DESCRIPTION = "results/report/description.rst"


report: os.path.abspath(DESCRIPTION) if os.path.exists(DESCRIPTION) else "workflow/report/workflow.rst"


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        targets(),
