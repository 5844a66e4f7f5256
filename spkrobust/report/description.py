"""The first page of ``snakemake --report``: the answer (headline claim and claims table) in rst.

``spkrobust report`` writes ``description.rst`` beside ``index.md``; the Snakefile's global
``report:`` directive names it once it exists (before the first run, the static
``workflow/report/workflow.rst``), so the HTML report opens on the verdicts rather than on the DAG
alone. Tables are rst ``list-table`` directives; every cell is escaped (:func:`_esc`).
"""
from __future__ import annotations

import re

from spkrobust.provenance import describe
from spkrobust.report.compare import fmt_diff

DESCRIPTION = "description.rst"
_SPECIAL = re.compile(r"([\\*`|_<>\[\]])")


def _esc(x) -> str:
    return _SPECIAL.sub(r"\\\1", " ".join(str(x).split())) or "–"


def _list_table(title: str, header: list[str], rows: list[list]) -> str:
    out = [f".. list-table:: {_esc(title)}", "   :header-rows: 1", ""]
    for row in [header] + rows:
        out.append("   * - " + _esc(row[0]))
        out += [f"     - {_esc(c)}" for c in row[1:]]
    return "\n".join(out) + "\n\n"


def description_rst(claims: list[dict], head: dict, environments: dict[str, int]) -> str:
    """``claims``: :func:`spkrobust.report.claims.evaluate_claims`; ``head``:
    :func:`spkrobust.report.headline.headline`; ``environments``: description -> jobs."""
    title = "spkrobust: are spiking networks more robust than ANNs?"
    lines = [title, "=" * len(title), "",
             f"**Headline** ({_esc(head['claim'])}): **{_esc(head['verdict'])}** — {_esc(head['numbers'])}.", ""]
    if head["comparisons"]:
        lines.append(_list_table(
            "White-box accuracy drop, SNN against ANN (ANN's drop − SNN's, points, paired 95 % CI)",
            ["dataset", "attack", "SNN", "ANN", "drop difference", "conditional", "verdict", "replicas"],
            [[x["dataset"], x["attack"], x["a_name"], x["b_name"], fmt_diff(x["drop"]), fmt_diff(x["conditional"]),
              x["verdict"], x["runs"]] for x in head["comparisons"]]))
    if head["removed"]:
        lines.append(_list_table(
            "How much of the SNN's advantage the adaptive ensemble removes (points, paired 95 % CI)",
            ["dataset", "SNN", "ANN", "studies' attack", "ensemble", "removed"],
            [[r["dataset"], r["snn"], r["ann"], r["attack"], r["ensemble"], fmt_diff(r["removed"])]
             for r in head["removed"]]))
    lines.append(_list_table("The studies' claims (rule and comparisons: claims.md)", ["#", "claim", "verdict", "numbers"],
                             [[c["id"], c["claim"], c["verdict"], c["numbers"]] for c in claims]))
    lines.append("Numerical environment of the jobs (what decides bit-identity across machines):")
    lines.append("")
    for env, n in sorted(environments.items()):
        lines.append(f"- {_esc(env)}: {n} job(s)")
    if not environments:
        lines.append("- not recorded")
    lines += ["", "Tables, claims with every comparison, sanity checks and figures: the categories below "
              "(index.md links them all).", ""]
    return "\n".join(lines)


def environments(clean: list[dict], metrics: list[dict]) -> dict[str, int]:
    """Distinct numerical environments among the clean records and training metrics -> job count."""
    out: dict[str, int] = {}
    for r in list(clean or []) + list(metrics or []):
        env = r.get("environment")
        if env:
            key = describe(env)
            out[key] = out.get(key, 0) + 1
    return out
