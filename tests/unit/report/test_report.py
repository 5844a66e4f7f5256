"""Tests of spkrobust.report: aggregate (summary.csv, models.csv, records.json) and report
(tables, claims, checks, figures) on constructed records and metrics written to tmp_path."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from spkrobust.cli import main
from spkrobust.config.expand import eps_display, model_seed, setting_of
from spkrobust.errors import FileProblem
from spkrobust.evaluation.outcomes import encode
from spkrobust.report import aggregate as agg, data as rdata, render
from spkrobust.report.claims import CLAIMS, evaluate_claims
from spkrobust.config.vocab import CLEAN_FORMAT, METRICS_FORMAT, RECORD_FORMAT, RECORDS_FORMAT

DS = "fashion_mnist"
EPS = [(0.0, "0"), (2 / 255, "2_255"), (4 / 255, "4_255")]
ATTACKS = ["fgsm", "pgd"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

N_IMAGES = 100
# name -> (config kind, T, neuron, leak)
MODELS = {
    "ann": ("ann", None, None, None),
    "snn_conv": ("convert", 64, "if", 1.0),
    "snn_bp-T4": ("snn", 4, "lif", 0.99),
    "snn_bp-T8": ("snn", 8, "lif", 0.99),
    "snn_lk-leak0.9": ("snn", 8, "lif", 0.9),
    "snn_lk-leak1.0": ("snn", 8, "lif", 1.0),
}

# robustness per target (1 = the attack does nothing); scenario "holds" makes every claim true
ROB_HOLDS = {"ann": 0.2, "snn_conv": 0.4, "snn_bp-T4": 0.8, "snn_bp-T8": 0.6,
             "snn_lk-leak0.9": 0.8, "snn_lk-leak1.0": 0.5}
ROB_FAILS = {"ann": 0.95, "snn_conv": 0.9, "snn_bp-T4": 0.5, "snn_bp-T8": 0.7,
             "snn_lk-leak0.9": 0.4, "snn_lk-leak1.0": 0.9}
CLEAN = {"ann": 0.90, "snn_conv": 0.88, "snn_bp-T4": 0.86, "snn_bp-T8": 0.87,
         "snn_lk-leak0.9": 0.85, "snn_lk-leak1.0": 0.86}


def kind(name):
    return MODELS[name][0]


def parent(name):
    """The replica chain: ann -> snn_conv -> every spike-trained SNN."""
    return {"ann": None, "snn_conv": "ann"}.get(name, "snn_conv")


def outcomes(acc, repeats):
    """Per-image outcomes with accuracy ``acc``: images are ordered by difficulty, shared by all
    models, so that a more accurate model is right on a superset of images (paired differences)."""
    return encode([np.arange(N_IMAGES) < round(acc * N_IMAGES)] * repeats)


def make_world(root: Path, models=tuple(MODELS), rob=ROB_HOLDS, ann_src=0.3, snn_bb=0.5,
               replicas=(1, 2), target_replicas=(1,), metrics_for=None, clean=CLEAN, attacks=ATTACKS,
               noise_rob=ROB_FAILS, seed0=0) -> tuple[list[Path], list[Path], list[Path]]:
    """Write records/metrics/clean JSONs in the standard results/ layout; return their paths.

    adv = clean - eps/(4/255) * strength * (1 - rob[target]); strength: white-box 0.8,
    black-box ``snn_bb`` (SNN) or 0.5 (ANN), transfer from an ANN ``ann_src``, other transfer 0.3;
    PGD 1.2x stronger.
    """
    res = root / "results"
    recs, mets, cleans = [], [], []
    for m in (models if metrics_for is None else metrics_for):
        k, T, neuron, leak = MODELS[m]
        for r in replicas:
            meta = {"kind": "ann" if k == "ann" else "snn", "arch": "vgg5"}
            if k != "ann":
                meta.update({"neuron": neuron, "leak": leak, "T": T, "encoder": "poisson", "thresholds": [1.0, 2.0],
                             "surrogate": "atan" if m.startswith("snn_lk") else "linear"})
            seed = model_seed({"seed": seed0}, r)
            met = {"format": METRICS_FORMAT, "name": m, "kind": k, "replica": r, "dataset": DS, "seed": seed,
                   "clean_acc": clean[m] + 0.001 * r, "meta": meta, "base": rdata.sweep_base(m),
                   "config": {"model": {"kind": k, "name": m, "base": rdata.sweep_base(m), "from": parent(m)},
                              "replica": r, "seed": seed}, "epochs": 1,
                   "wall_s": 1.5, "versions": {"torch": "x"}}
            if k == "convert":
                met["method"] = "threshold"
            p = res / DS / "models" / m / f"r{r}" / "metrics.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(met))
            mets.append(p)
    for t in models:
        for tr in target_replicas:
            stoch = kind(t) != "ann"
            p = res / DS / "clean" / t / f"r{tr}.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps({"format": CLEAN_FORMAT, "dataset": DS, "model": t, "replica": tr, "clean_acc": clean[t], "clean_acc_std": 0.004 if stoch else 0.0, "n": N_IMAGES,
                                     "outcomes": outcomes(clean[t], 3 if stoch else 2)}))
            cleans.append(p)
    for s in models:
        for sr in replicas:
            for atk in attacks:
                for eps, label in EPS:
                    for t in models:
                        for tr in target_replicas:
                            setting = setting_of(s, sr, t, tr)
                            if setting == "white-box":
                                st = 0.8
                            elif setting == "black-box":
                                st = snn_bb if kind(t) != "ann" else 0.5
                            else:
                                st = ann_src if kind(s) == "ann" else 0.3
                            st *= 1.2 if atk == "pgd" else 1.0
                            r_t = (noise_rob if atk == "noise" else rob)[t]
                            adv = max(0.0, clean[t] - eps / (4 / 255) * st * (1 - r_t))
                            stoch = kind(t) != "ann"
                            rec = {"format": RECORD_FORMAT, "dataset": DS, "source": s, "source_replica": sr, "attack": atk,
                                   "attack_params": {"type": atk}, "attack_type": atk, "eps": eps, "eps_label": label,
                                   "target": t, "target_replica": tr, "setting": setting,
                                   "clean_acc": clean[t], "clean_acc_std": 0.004 if stoch else 0.0,
                                   "adv_acc": adv, "adv_acc_std": 0.003 if stoch else 0.0,
                                   "repeats": 3 if stoch else 1, "n": N_IMAGES, "zero_grad_frac": 0.0,
                                   "outcomes": outcomes(adv, 3 if stoch else 1),
                                   "seed": 0, "stochastic": stoch,
                                   "source_kind": "ann" if kind(s) == "ann" else "snn",
                                   "target_kind": "ann" if kind(t) == "ann" else "snn"}
                            p = res / DS / "eval" / s / f"r{sr}" / atk / label / t / f"r{tr}.json"
                            p.parent.mkdir(parents=True, exist_ok=True)
                            p.write_text(json.dumps(rec))
                            recs.append(p)
    return recs, mets, cleans


def claims_for(tmp_path, **kw) -> dict[str, dict]:
    recs, mets, cleans = make_world(tmp_path, **kw)
    out = tmp_path / "report"
    agg.aggregate(recs, mets, out, cleans)
    merged = json.loads((out / "records.json").read_text())
    data = rdata._Data(rdata.read_csv(out / "summary.csv"), rdata.read_csv(out / "models.csv"),
                    merged["records"], merged["clean"])
    return {c["id"]: c for c in evaluate_claims(data)}


ONE = " (one training run)"  # every comparison here has one target replica (black-box r2 -> r1)
SUPPORTED = {c["id"]: "supported" + ONE for c in CLAIMS} | {"3c": "not measured"}  # no converted-SNN T sweep here


def test_aggregate_and_report_end_to_end(tmp_path):
    recs, mets, cleans = make_world(tmp_path)
    lst = tmp_path / "records.txt"
    lst.write_text("\n".join(str(p) for p in recs) + "\n")
    out = tmp_path / "results" / "report"
    assert main(["aggregate", "--records-from", str(lst), "--metrics", *map(str, mets),
                 "--clean", *map(str, cleans), "--out-dir", str(out)]) == 0

    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n_models = len(MODELS)
    assert len(rows) == len(recs) == n_models * 2 * len(ATTACKS) * len(EPS) * n_models
    required = ("dataset,source,source_replica,source_kind,attack,eps,eps_label,target,target_replica,"
                "target_kind,setting,clean_acc,clean_acc_std,adv_acc,adv_acc_std,n,repeats,zero_grad_frac").split(",")
    assert all(c in rows[0] for c in required)
    for r in rows:
        exp = ("white-box" if r["source"] == r["target"] and r["source_replica"] == r["target_replica"]
               else "black-box" if r["source"] == r["target"] else "transfer")
        assert r["setting"] == exp
        assert r["source_kind"] == kind(r["source"])  # config kind, not the record's ann|snn
    keys = [(r["dataset"], r["attack"], float(r["eps"]), r["source"], int(r["source_replica"]),
             r["target"], int(r["target_replica"])) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert {r["setting"] for r in rows} == {"white-box", "black-box", "transfer"}

    with open(out / "models.csv", newline="") as f:
        models = list(csv.DictReader(f))
    assert len(models) == n_models * 2
    for c in "dataset,model,kind,arch,neuron,leak,timesteps,encoder,replica,seed,clean_acc,method,epochs,wall_s".split(","):
        assert c in models[0]
    by = {(m["model"], m["replica"]): m for m in models}
    assert by[("snn_bp-T4", "1")]["timesteps"] == "4" and by[("snn_bp-T4", "1")]["kind"] == "snn"
    assert by[("snn_conv", "2")]["kind"] == "convert" and by[("snn_conv", "2")]["method"] == "threshold"
    assert by[("ann", "1")]["timesteps"] == "" and by[("ann", "1")]["kind"] == "ann"
    assert by[("snn_lk-leak0.9", "1")]["leak"] == "0.9" and by[("snn_lk-leak0.9", "1")]["base"] == "snn_lk"
    assert float(by[("ann", "1")]["eval_clean_acc"]) == pytest.approx(0.90)
    # the surrogate each SNN was trained with (and attacks default to) is stated; an ANN has none
    assert [by[(m, "1")]["surrogate"] for m in ("ann", "snn_conv", "snn_bp-T4", "snn_lk-leak0.9")] == \
        ["", "linear", "linear", "atan"]
    merged = json.loads((out / "records.json").read_text())
    assert merged["format"] == RECORDS_FORMAT and len(merged["records"]) == len(recs)
    assert all("versions" not in m for m in merged["models"])

    # aggregate is deterministic
    before = (out / "summary.csv").read_bytes(), (out / "models.csv").read_bytes()
    assert main(["aggregate", "--records-dir", str(tmp_path / "results"), "--out-dir", str(out)]) == 0
    assert ((out / "summary.csv").read_bytes(), (out / "models.csv").read_bytes()) == before

    assert main(["report", "--report-dir", str(out)]) == 0
    for name in render.REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    for name in [n for n in render.REPORT_FILES if n.endswith(".png")] + [
            "acc_vs_eps_fashion_mnist_pgd.png", "heatmap_fashion_mnist_fgsm_2_255.png",
            "acc_vs_T_fashion_mnist.png", "acc_vs_leak_fashion_mnist.png"]:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name
    tables = (out / "tables.md").read_text()
    assert "## fashion_mnist" in tables and "### pgd: white-box" in tables and "ε=4/255" in tables
    assert "±" in tables  # stochastic targets have repeats > 1
    assert "| snn_lk-leak0.9 | 1 | snn | vgg5 | lif | 0.9 | 8 | poisson | atan |" in tables  # its training surrogate
    assert "### Clean accuracy over training replicas" in tables and "| std over replicas |" in tables
    claims = (out / "claims.md").read_text()
    for c in CLAIMS:
        verdict = "not measured" if c["id"] == "3c" else "supported" + ONE
        assert f"| {c['id']} | {c['claim']} | **{verdict}** |" in claims
    assert "absolute" in claims and "conditional" in claims and " [+" in claims  # every row shows its CI
    index = (out / "index.md").read_text()
    for name in render.REPORT_FILES:
        if name != "index.md":
            assert f"({name})" in index
    assert "(heatmap_fashion_mnist_pgd_4_255.png)" in index
    checks = (out / "checks.md").read_text()
    assert checks.startswith("# Sanity checks") and ("| check | status | detail" in checks or "not measured" in checks)

    # --no-extras removes the extras of the earlier run; fixed files stay
    assert main(["report", "--report-dir", str(out), "--no-extras"]) == 0
    assert not list(out.glob("heatmap_*.png")) and (out / "heatmap.png").exists()


def test_claims_supported(tmp_path):
    c = claims_for(tmp_path, rob=ROB_HOLDS, ann_src=0.3, snn_bb=0.5)
    assert {k: v["verdict"] for k, v in c.items()} == SUPPORTED
    assert not any(x["verdict"].startswith("contradicted") for v in c.values() for x in v["comparisons"])
    assert "Spearman" in c["3"]["comparisons"][0]["note"]
    # sources never share the target's replica chain: ann r1 made snn_conv r1 and every SNN r1
    assert all("ann r1" not in x["a_src"] + x["b_src"] for k in ("2", "3", "5") for x in c[k]["comparisons"])
    assert {x["a_src"] for x in c["2"]["comparisons"]} >= {"ann r2 → snn_conv r1", "ann r2 → snn_bp-T4 r1"}
    assert {x["b_src"] for x in c["2"]["comparisons"]} >= {"snn_conv r2 → snn_conv r1"}


def test_noise_baseline_is_not_a_claim_attack(tmp_path):
    # the noise "attack" alone would contradict every claim; it must be ignored by the claims
    c = claims_for(tmp_path, attacks=("fgsm", "noise"), noise_rob=ROB_FAILS)
    assert {k: v["verdict"] for k, v in c.items()} == SUPPORTED
    assert all(x["attack"] == "fgsm" for v in c.values() for x in v["comparisons"])


def test_claims_contradicted(tmp_path):
    c = claims_for(tmp_path, rob=ROB_FAILS, ann_src=0.7, snn_bb=0.5)
    assert {k: v["verdict"] for k, v in c.items()} == {k: v.replace("supported", "contradicted")
                                                       for k, v in SUPPORTED.items()}
    assert "; 0 supported, " in c["1"]["numbers"]


def test_claims_not_measured_when_models_missing(tmp_path):
    c = claims_for(tmp_path, models=("ann", "snn_conv"))
    assert c["1"]["verdict"] == "supported" + ONE and c["2"]["verdict"] == "supported" + ONE
    for k in ("3", "3c", "4", "5", "6"):
        assert c[k]["verdict"] == "not measured" and c[k]["numbers"]
    # a single replica: no black-box records -> claims 1 and 2 not measured either
    c = claims_for(tmp_path / "one", models=("ann", "snn_bp-T4", "snn_bp-T8"), replicas=(1,))
    assert c["1"]["verdict"] == "not measured" and c["2"]["verdict"] == "not measured"
    assert c["3"]["verdict"] == "supported" + ONE  # white-box still compares T
    settings = {x["setting"] for x in c["3"]["comparisons"]}
    assert "white-box" in settings and "black-box" not in settings  # plus transfer from common sources
    assert "white-box" in settings and "black-box" not in settings  # plus transfer from common sources
    assert all(s == "white-box" or s.startswith("transfer from ") for s in settings), settings


def test_equal_robustness_is_inconclusive(tmp_path):
    rob = dict(ROB_HOLDS, **{"snn_bp-T4": 0.6, "snn_bp-T8": 0.6})
    c = claims_for(tmp_path, rob=rob, models=("ann", "snn_bp-T4", "snn_bp-T8"), clean=dict(CLEAN, **{"snn_bp-T4": 0.87}))
    assert c["3"]["verdict"] == "inconclusive" and "; 0 supported, 0 contradicted" in c["3"]["numbers"]
    assert all(x["low"] <= 0 <= x["high"] for x in c["3"]["comparisons"])


def test_report_without_data_writes_not_measured(tmp_path):
    recs, mets, cleans = make_world(tmp_path, models=("ann",), replicas=(1,))
    out = tmp_path / "report"
    assert main(["aggregate", "--metrics", *map(str, mets), "--out-dir", str(out)]) == 0
    assert main(["report", "--report-dir", str(out), "--no-extras"]) == 0
    for name in render.REPORT_FILES:
        assert (out / name).exists(), name
    assert (out / "acc_vs_T.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "claims.md").read_text().count("**not measured**") == len(CLAIMS)


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    recs, mets, _ = make_world(tmp_path, models=("ann",), replicas=(1,))
    out = tmp_path / "report"
    assert main(["aggregate", "--records", str(tmp_path / "nope.json"), "--out-dir", str(out)]) == 2
    dup = tmp_path / "dup.json"
    dup.write_text(recs[0].read_text())
    assert main(["aggregate", "--records", str(recs[0]), str(dup), "--out-dir", str(out)]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": RECORD_FORMAT, "dataset": "x"}))
    assert main(["aggregate", "--records", str(bad), "--out-dir", str(out)]) == 2
    assert main(["aggregate", "--out-dir", str(out)]) == 2
    assert main(["report", "--report-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(l.startswith("spkrobust ") and "error:" in l for l in err)
    assert "two records for the same evaluation" in err[1] and "evaluation record without" in err[2]


def test_sweep_base():
    assert rdata.sweep_base("snn_bp-T4") == "snn_bp"
    assert rdata.sweep_base("snn_bp-T4-leak0.9") == "snn_bp"
    assert rdata.sweep_base("snn_bp") == "snn_bp"
    assert eps_display("2_255") == "2/255"


def test_files_are_read_by_their_format_tag(tmp_path):
    """Each input says what it is; a file without the expected tag is refused in one line, not guessed."""
    recs, mets, cleans = make_world(tmp_path, models=("ann",), replicas=(1,))
    rows, _ = agg.load_models(mets)
    assert rows[0]["kind"] == "ann" and rows[0]["model"] == "ann"
    for paths, load, tag in ((recs, agg.load_records, RECORD_FORMAT), (mets, agg.load_models, METRICS_FORMAT),
                             (cleans, agg.load_clean, CLEAN_FORMAT)):
        d = json.loads(paths[0].read_text())
        del d["format"]
        p = tmp_path / "untagged.json"
        p.write_text(json.dumps(d))
        with pytest.raises(FileProblem, match=f"not a spkrobust .* \\(format None, expected '{tag}'\\); rerun"):
            load(paths[1:] + [p])


def test_T_groups_separate_parents(tmp_path):
    # members of snn_bp trained from different converted parents are not compared with each other
    models = [dict(dataset=DS, model=n, kind="snn", arch="vgg5", neuron="lif", encoder="poisson", leak=0.99,
                   timesteps=T, base="snn_bp", parent=par, replica=1)
              for n, T, par in (("snn_bp-T32-T4", 4, "snn_conv-T32"), ("snn_bp-T32-T8", 8, "snn_conv-T32"),
                                ("snn_bp-T64-T4", 4, "snn_conv-T64"))]
    groups = rdata._param_groups(rdata._Data([], models), DS, "timesteps")
    assert list(groups.values()) == [["snn_bp-T32-T4", "snn_bp-T32-T8"]]


def test_checks_md_calls_run_checks(tmp_path, monkeypatch):
    import types

    seen = {}

    def run_checks(records, clean_records, models):
        seen.update(records=records, clean=clean_records, models=models)
        return [{"name": "eps0_equals_clean", "status": "ok", "detail": "all within noise"},
                {"name": "monotone_in_eps", "status": "flag", "detail": "snn_bp-T4 pgd rises", "target": "snn_bp-T4"},
                {"name": "noise_vs_attack", "status": "not_measured", "detail": "no noise attack"}]

    monkeypatch.setitem(__import__("sys").modules, "spkrobust.evaluation.checks", types.SimpleNamespace(run_checks=run_checks))
    recs, mets, cleans = make_world(tmp_path, models=("ann", "snn_bp-T4"), replicas=(1,))
    out = tmp_path / "report"
    agg.aggregate(recs, mets, out, cleans)
    render.report(out, extras=False)
    md = (out / "checks.md").read_text()
    assert "1 flag, 1 not_measured, 1 ok" in md
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    assert lines[0].split("|")[1:5] == [" check ", " status ", " detail ", " target "]
    assert "**flag**" in lines[1] and "monotone_in_eps" in lines[1]  # flags first
    assert len(seen["records"]) == len(recs) and all("adv_acc" in r for r in seen["records"])
    assert len(seen["clean"]) == len(cleans) and all("model" in c and "replica" in c for c in seen["clean"])
    assert {m["name"] for m in seen["models"]} == {"ann", "snn_bp-T4"}

    def broken(*a):
        raise ValueError("boom")

    monkeypatch.setitem(__import__("sys").modules, "spkrobust.evaluation.checks", types.SimpleNamespace(run_checks=broken))
    render.report(out, extras=False)
    assert "not measured: spkrobust.evaluation.checks.run_checks failed (ValueError: boom)" in (out / "checks.md").read_text()
