"""``spkrobust report``: reads ``summary.csv``, ``models.csv`` and ``records.json`` from
``--report-dir`` and always writes the fixed set :data:`REPORT_FILES` there (``tables.md claims.md
checks.md index.md acc_vs_eps.png heatmap.png acc_vs_T.png acc_vs_leak.png``). Optional per-item
figures (``acc_vs_eps_<dataset>_<attack>.png``, ``heatmap_<dataset>_<attack>_<eps>.png``,
``acc_vs_T_<dataset>.png``, ``acc_vs_leak_<dataset>.png``) are written too unless
``--no-extras``; ``index.md`` links everything that was produced. Accuracies are percentages in
the markdown.
"""
from __future__ import annotations

from pathlib import Path

from spkrobust.errors import FileProblem
from spkrobust.io import atomic_write_text
from spkrobust.report.claims import claims_md, evaluate_claims
from spkrobust.report.description import DESCRIPTION, description_rst, environments
from spkrobust.report.headline import evaluate_headline, headline_md
from spkrobust.io import read_json
from spkrobust.report.data import _Data, read_csv
from spkrobust.text import md_table
from spkrobust.report.overestimate import overestimate_md
from spkrobust.report.plots import _EXTRA_PATTERNS, plots
from spkrobust.report.tables import checks_md, tables_md
from spkrobust.config.vocab import RECORDS_FORMAT


REPORT_FILES = (
    "tables.md", "claims.md", "checks.md", "index.md",
    "acc_vs_eps.png", "heatmap.png", "acc_vs_T.png", "acc_vs_leak.png",
)


def _load_records_json(path: Path) -> tuple[list, list, list]:
    if not path.exists():
        return [], [], []
    obj = read_json(path)
    if not isinstance(obj, dict) or obj.get("format") != RECORDS_FORMAT:
        raise FileProblem(f"{path}: not a spkrobust records file (expected format {RECORDS_FORMAT!r})")
    return obj.get("records", []), obj.get("clean", []), obj.get("models", [])


def index_md(data: _Data, claims: list[dict], extras: list[Path], head: dict | None = None,
             envs: dict[str, int] | None = None) -> str:
    lines = ["# spkrobust report\n\n"]
    n_models = len(data.models)
    lines.append(f"{len(data.summary)} evaluation records, {n_models} trained model replicas, "
                 f"datasets: {', '.join(data.datasets) or 'none'}.\n\n")
    if envs is not None:
        lines.append("Numerical environment of the jobs (bit-identity across machines needs the same): "
                     + ("; ".join(f"{e} ({n} jobs)" for e, n in sorted(envs.items())) or "not recorded") + ".\n\n")
    lines.append("## Claims\n\n")
    rows = [[c["id"], c["claim"], c["verdict"]] for c in claims]
    if head is not None:
        rows.insert(0, [head["id"], f"**headline:** {head['claim']}", f"**{head['verdict']}**"])
    lines.append(md_table(["#", "claim", "verdict"], rows))
    lines.append("\n## Files\n\n")
    for name, what in (("tables.md", "clean, white-box and black-box accuracy tables"),
                       ("claims.md", "the claims: paired comparisons with confidence intervals behind each verdict"),
                       ("checks.md", "sanity flags"),
                       ("summary.csv", "one row per evaluation"),
                       ("models.csv", "one row per trained model replica")):
        lines.append(f"- [{name}]({name}) — {what}\n")
    lines.append("\n## Figures\n\n")
    for name in ("acc_vs_eps.png", "heatmap.png", "acc_vs_T.png", "acc_vs_leak.png"):
        lines.append(f"### {name}\n\n![{name}]({name})\n\n")
    if extras:
        lines.append("### Per-item figures\n\n")
        for p in sorted(extras, key=lambda p: p.name):
            lines.append(f"- [{p.name}]({p.name})\n")
    return "".join(lines)


def load(report_dir: Path) -> tuple[_Data, list]:
    """The aggregated files of ``report_dir`` (``summary.csv``, ``models.csv``, ``records.json``) as
    the report's data, and ``records.json``'s raw model rows; a missing column is a one-line error."""
    report_dir = Path(report_dir)
    summary = read_csv(report_dir / "summary.csv")
    models = read_csv(report_dir / "models.csv")
    missing = [c for c in ("dataset", "source", "source_replica", "attack", "eps", "eps_label", "target",
                           "target_replica", "setting", "adv_acc") if summary and c not in summary[0]]
    if missing:
        raise FileProblem(f"{report_dir / 'summary.csv'}: missing columns {', '.join(missing)}")
    records, clean, raw_models = _load_records_json(report_dir / "records.json")
    return _Data(summary, models, records, clean), raw_models


def report(report_dir: Path, extras: bool = True, heatmap_eps: str | None = None) -> list[Path]:
    """Write :data:`REPORT_FILES` (and extras) into ``report_dir``; returns every file written."""
    report_dir = Path(report_dir)
    data, raw_models = load(report_dir)
    records, clean, models = data.records, data.clean, data.models
    claims = evaluate_claims(data)
    head = evaluate_headline(data)
    envs = environments(clean, raw_models)
    atomic_write_text(tables_md(data) + "\n" + overestimate_md(records, models=models), report_dir / "tables.md")
    atomic_write_text(claims_md(claims) + "\n" + headline_md(head), report_dir / "claims.md")
    atomic_write_text(description_rst(claims, head, envs), report_dir / DESCRIPTION)
    atomic_write_text(checks_md(records, clean, raw_models), report_dir / "checks.md")
    before = {p for pat in _EXTRA_PATTERNS for p in report_dir.glob(pat)}
    written = plots(data, report_dir, extras=extras, heatmap_eps=heatmap_eps)
    for stale in before - set(written):  # extras of an earlier run that no longer apply
        stale.unlink(missing_ok=True)
    atomic_write_text(index_md(data, claims, written, head, envs), report_dir / "index.md")
    return [report_dir / f for f in REPORT_FILES] + [report_dir / DESCRIPTION] + written


def configure_report(p) -> None:
    p.add_argument("--report-dir", required=True, metavar="DIR",
                   help="directory holding summary.csv, models.csv, records.json; the report is written there")
    p.add_argument("--no-extras", action="store_true",
                   help="write only the fixed files (no per-dataset/attack/eps figures)")
    p.add_argument("--heatmap-eps", default=None, metavar="LABEL",
                   help="eps label (e.g. 8/255 or 8_255) for heatmap.png; default: the median eps > 0")


def run_report(args) -> int:
    """Write tables.md, claims.md, checks.md, index.md and the figures from the aggregated files."""
    files = report(Path(args.report_dir), extras=not args.no_extras, heatmap_eps=args.heatmap_eps)
    print(f"report: {len(files)} files in {args.report_dir}")
    return 0


CLI = {"report": (configure_report, run_report)}
