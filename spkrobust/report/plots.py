"""The report's figures; the only module that imports matplotlib (Agg canvas, no pyplot).

A figure without data still exists and says ``not measured: <why>``."""
from __future__ import annotations

import io as _pyio
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spkrobust.config.expand import shares_weights
from spkrobust.io import atomic_write_bytes
from spkrobust.report.compare import conditional_by_eps
from spkrobust.report.data import _by_eps, _Data, _mean, _param_groups, sweep_base
from spkrobust.config.expand import eps_display
from spkrobust.text import safe_name


def _figure(nplots: int, ncols: int, w: float = 6.0, h: float = 3.6):
    ncols = max(1, min(ncols, nplots))
    nrows = max(1, math.ceil(nplots / ncols))
    fig = Figure(figsize=(w * ncols, h * nrows))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(nplots)]
    return fig, axes


def _save(fig, path: Path) -> None:
    buf = _pyio.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    atomic_write_bytes(buf.getvalue(), path)


def _single(path: Path, size: tuple[float, float], draw) -> Path:
    """A one-panel figure drawn by ``draw(ax)``, saved to ``path``."""
    fig, (ax,) = _figure(1, 1, *size)
    draw(ax)
    fig.tight_layout()
    _save(fig, path)
    return path


def _not_measured_png(path: Path, title: str, why: str) -> None:
    fig, (ax,) = _figure(1, 1, 6, 2.5)
    ax.axis("off")
    ax.text(0.5, 0.6, title, ha="center", va="center", fontsize=12, weight="bold")
    ax.text(0.5, 0.35, f"not measured: {why}", ha="center", va="center", fontsize=10, wrap=True)
    _save(fig, path)


def _color(i: int):
    return matplotlib.colormaps["tab10"](i % 10)


def _eps_axis(ax, eps: list[tuple[float, str]]) -> None:
    ax.set_xticks([e for e, _ in eps])
    ax.set_xticklabels([eps_display(l) for _, l in eps], rotation=45, fontsize=7)
    ax.set_xlabel("ε")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def _line(ax, rows: list[dict], **kw) -> bool:
    e = _by_eps(rows)
    if not e:
        return False
    xs = sorted(e)
    ax.errorbar(xs, [e[x][0] for x in xs], yerr=[e[x][1] for x in xs], capsize=2, marker="o", ms=3, **kw)
    return True


def _panel_acc_vs_eps(ax, data: _Data, ds: str, atk: str) -> None:
    eps = data.eps_list(ds, atk)
    targets = data.model_order(ds, {r["target"] for r in data.rows(dataset=ds, attack=atk)})
    for i, t in enumerate(targets):
        wb = _line(ax, data.rows(dataset=ds, attack=atk, target=t, setting="white-box"),
                   color=_color(i), ls="-", label=t)
        _line(ax, data.rows(dataset=ds, attack=atk, target=t, setting="black-box"),
              color=_color(i), ls="--", label=None if wb else t)
    _eps_axis(ax, eps)
    ax.set_title(f"{ds} / {atk}", fontsize=10)
    _legend(ax)


def _panel_conditional(ax, data: _Data, ds: str, atk: str) -> None:
    """Fraction of each target's clean-correct images that stay correct (per-image outcomes): beside
    each absolute panel, so that a clean-accuracy gap is not read as robustness."""
    targets = data.model_order(ds, {r["target"] for r in data.rows(dataset=ds, attack=atk)})
    for i, t in enumerate(targets):
        label = t
        for setting, ls in (("white-box", "-"), ("black-box", "--")):
            c = conditional_by_eps(data, ds, atk, t, setting)
            if c:
                xs = sorted(c)
                ax.plot(xs, [c[x] for x in xs], marker="o", ms=3, ls=ls, color=_color(i), label=label)
                label = None
    _eps_axis(ax, data.eps_list(ds, atk))
    ax.set_ylabel("conditional robustness")
    ax.set_title(f"{ds} / {atk}: of the clean-correct images, kept correct", fontsize=9)
    _legend(ax)


def _heat_values(data: _Data, ds: str, atk: str, eps: float):
    rows = data.rows(dataset=ds, attack=atk, eps=eps)
    names = data.model_order(ds, {r["source"] for r in rows} | {r["target"] for r in rows})
    sources = [n for n in names if any(r["source"] == n for r in rows)]
    targets = [n for n in names if any(r["target"] == n for r in rows)]
    vals, marks = [], []
    for s in sources:
        vrow, mrow = [], []
        for t in targets:
            cell = [r for r in rows if r["source"] == s and r["target"] == t]
            other = [r for r in cell if r["source_replica"] != r["target_replica"]]
            use = other or cell
            vrow.append(_mean(r["adv_acc"] for r in use) if use else float("nan"))
            mrow.append("" if other or not cell else "wb")
        vals.append(vrow)
        marks.append(mrow)
    return sources, targets, vals, marks


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _panel_heatmap(ax, data: _Data, ds: str, atk: str, eps: float, label: str) -> None:
    sources, targets, vals, marks = _heat_values(data, ds, atk, eps)
    arr = np.array(vals, dtype=float) if vals else np.zeros((0, 0))
    ax.imshow(np.ma.masked_invalid(arr), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(targets)))
    ax.set_xticklabels(targets, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(sources)))
    ax.set_yticklabels(sources, fontsize=7)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    for i in range(len(sources)):
        for j in range(len(targets)):
            v = vals[i][j]
            txt = "–" if math.isnan(v) else f"{100 * v:.0f}" + ("*" if marks[i][j] else "")
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="black" if not math.isnan(v) and v > 0.6 else "white")
    ax.set_title(f"{ds} / {atk} / ε={eps_display(label)}\n(source replica ≠ target; * = white-box only)", fontsize=9)


def _heat_eps(data: _Data, ds: str, atk: str, choice: str | None) -> tuple[float, str] | None:
    pos = [(e, l) for e, l in data.eps_list(ds, atk) if e > 0]
    if not pos:
        return None
    if choice is not None:
        for e, l in pos:
            if l == choice.replace("/", "_"):
                return e, l
    return pos[(len(pos) - 1) // 2]


def _panel_param(ax, data: _Data, ds: str, atk: str, param: str, label: str) -> bool:
    groups = _param_groups(data, ds, param)
    drew = False
    xvals: set = set()
    eps = data.eps_list(ds, atk)
    ci = 0
    parent_of = {m: i.get("parent") for (d, m), i in data.info.items() if d == ds}
    for gi, members in enumerate(groups.values()):
        base = data.info[(ds, members[0])].get("base") or sweep_base(members[0])
        # transfer from a common source that is no member and never a member's own replica chain:
        # shows sweeps whose members are targets only
        srcs = sorted({r["source"] for r in data.rows(dataset=ds, attack=atk, setting="transfer")} - set(members))
        lines = [("white-box", None, "-"), ("black-box", None, "--")] + [("transfer", s, ":") for s in srcs]
        for e, l in eps:
            for setting, src, ls in lines:
                xs, ys, ss = [], [], []
                for n in members:
                    bye = _by_eps([r for r in data.rows(dataset=ds, attack=atk, setting=setting, target=n, eps=e,
                                                        source=src)
                                   if setting != "transfer" or not shares_weights(
                                       parent_of, r["source"], r["source_replica"], n, r["target_replica"])])
                    if e in bye:
                        xs.append(data.info[(ds, n)][param])
                        ys.append(bye[e][0])
                        ss.append(bye[e][1])
                if len(set(xs)) >= 2:
                    xvals.update(xs)
                    ax.errorbar(xs, ys, yerr=ss, marker="o", ms=3, capsize=2, ls=ls, color=_color(ci),
                                label=f"{base} ε={eps_display(l)} " + (f"from {src}" if src else setting))
                    drew = True
            ci += 1
    if drew:
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        if param == "timesteps":
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
        ax.set_xticks(sorted(xvals))
        ax.set_xticklabels([f"{v:g}" for v in sorted(xvals)], fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_title(f"{ds} / {atk}", fontsize=10)
        _legend(ax)
    return drew


def _plot_param(data: _Data, path: Path, datasets: list[str], param: str, label: str, title: str) -> bool:
    panels = [(ds, atk) for ds in datasets if _param_groups(data, ds, param) for atk in data.attacks(ds)]
    if panels:
        fig, axes = _figure(len(panels), min(3, max(len(data.attacks(ds)) for ds in datasets)))
        drawn = [_panel_param(ax, data, ds, atk, param, label) for ax, (ds, atk) in zip(axes, panels)]
        if any(drawn):
            for ax, d in zip(axes, drawn):
                if not d:
                    ax.axis("off")
                    ax.text(0.5, 0.5, "not measured", ha="center", va="center")
            fig.suptitle(title)
            fig.tight_layout()
            _save(fig, path)
            return True
    _not_measured_png(path, title, f"no SNN models that differ only in {label} with white-box, black-box "
                                   f"or transfer records (need a sweep with at least two {label} values)")
    return False


def plots(data: _Data, out: Path, extras: bool = True, heatmap_eps: str | None = None) -> list[Path]:
    """Write the fixed figures (and per-item extras); returns the extras written."""
    written: list[Path] = []
    # accuracy vs eps
    panels = [(ds, atk) for ds in data.datasets for atk in data.attacks(ds)]
    title = ("Adversarial accuracy (left) and conditional robustness (right) vs ε "
             "(solid: white-box, dashed: black-box)")
    if panels:  # each panel is a pair: absolute accuracy | conditional robustness
        fig, axes = _figure(2 * len(panels), 2)
        for i, (ds, atk) in enumerate(panels):
            _panel_acc_vs_eps(axes[2 * i], data, ds, atk)
            _panel_conditional(axes[2 * i + 1], data, ds, atk)
        fig.suptitle(title)
        fig.tight_layout()
        _save(fig, out / "acc_vs_eps.png")
        if extras:
            for ds, atk in panels:
                fig, (ax, ax2) = _figure(2, 2, 6.5, 4.5)
                _panel_acc_vs_eps(ax, data, ds, atk)
                _panel_conditional(ax2, data, ds, atk)
                fig.tight_layout()
                path = out / f"acc_vs_eps_{safe_name(ds)}_{safe_name(atk)}.png"
                _save(fig, path)
                written.append(path)
    else:
        _not_measured_png(out / "acc_vs_eps.png", title, "no evaluation records")
    # heatmaps
    title = "Source × target adversarial accuracy (%)"
    hp = [(ds, atk, _heat_eps(data, ds, atk, heatmap_eps)) for ds, atk in panels]
    hp = [x for x in hp if x[2] is not None]
    if hp:
        ncols = min(3, max(len(data.attacks(ds)) for ds in data.datasets))
        fig, axes = _figure(len(hp), ncols, 5.2, 4.6)
        for ax, (ds, atk, (e, l)) in zip(axes, hp):
            _panel_heatmap(ax, data, ds, atk, e, l)
        fig.suptitle(title)
        fig.tight_layout()
        _save(fig, out / "heatmap.png")
        if extras:
            for ds, atk in panels:
                for e, l in data.eps_list(ds, atk):
                    if e > 0:
                        written.append(_single(
                            out / f"heatmap_{safe_name(ds)}_{safe_name(atk)}_{safe_name(l)}.png", (6, 5),
                            lambda ax, ds=ds, atk=atk, e=e, l=l: _panel_heatmap(ax, data, ds, atk, e, l)))
    else:
        _not_measured_png(out / "heatmap.png", title, "no records with ε > 0")
    # T and leak
    for param, label, fixed, prefix in (("timesteps", "T", "acc_vs_T.png", "acc_vs_T"),
                                        ("leak", "leak", "acc_vs_leak.png", "acc_vs_leak")):
        title = f"SNN adversarial accuracy vs {label} (solid: white-box, dashed: black-box, dotted: transfer)"
        _plot_param(data, out / fixed, data.datasets, param, label, title)
        if extras:
            for ds in data.datasets:
                if _param_groups(data, ds, param):
                    p = out / f"{prefix}_{safe_name(ds)}.png"
                    if _plot_param(data, p, [ds], param, label, f"{ds}: {title}"):
                        written.append(p)
                    elif p.exists():
                        p.unlink()
    return written

_EXTRA_PATTERNS = ("acc_vs_eps_*.png", "heatmap_*.png", "acc_vs_T_*.png", "acc_vs_leak_*.png")
