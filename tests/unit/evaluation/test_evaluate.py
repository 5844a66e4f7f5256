"""Clean and adversarial evaluation: repeats for stochastic targets, settings, records, CLI."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import robust as H
from helpers.robust import cli_data_path, cli_models  # noqa: F401  (fixtures)
from spkrobust.evaluation import evaluate as E
from spkrobust.evaluation import records as R
from spkrobust.cli import main

RECORD_KEYS = R.RECORD_KEYS  # the typed record's fields (spkrobust.evaluation.records)


def test_setting_names():
    assert E.setting_of("snn", 1, "snn", 1) == "white-box"
    assert E.setting_of("snn", 2, "snn", 1) == "black-box"
    assert E.setting_of("ann", 1, "snn", 1) == "transfer"


def test_clean_accuracy_repeats_only_stochastic_targets_and_detects_randomness():
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6)
    det = E.clean_accuracy(H.snn(encoder="direct"), x, y, repeats=3, batch_size=4)
    assert det["repeats"] == 1 and det["clean_acc_std"] == 0.0 and not det["stochastic"]
    assert det["repeat_check"]["differs"] is False  # run twice anyway, to detect randomness
    sto = E.clean_accuracy(H.snn(), x, y, repeats=3, batch_size=4, seeds=[1, 2, 3])
    assert sto["repeats"] == 3 and len(sto["accs"]) == 3 and sto["stochastic"]
    assert sto["repeat_check"]["differs"] is True and sto["repeat_check"]["logit_max_abs_diff"] > 0
    again = E.clean_accuracy(H.snn(), x, y, repeats=3, batch_size=4, seeds=[1, 2, 3])
    assert again["accs"] == sto["accs"]  # seeded


def _cfg(**kw):
    return json.dumps({"seed": 0, "device": "cpu", "dataset": "fashion_mnist", "eval": {"repeats": 3, "batch_size": 16},
                       **kw})


def _craft(data, model, source, replica, attack, eps, out):
    rc = main(["craft", "--data", str(data), "--model", str(model), "--attack-cfg", json.dumps(attack), "--eps", eps,
               "--cfg", _cfg(source=source, replica=replica, attack=attack["type"]), "--out", str(out)])
    assert rc == 0


def _clean(data, model, name, rep, out):
    assert main(["clean", "--data", str(data), "--model", str(model), "--cfg", _cfg(model=name, replica=rep),
                 "--out", str(out)]) == 0
    return json.loads(out.read_text())


def _evaluate(data, adv, target, clean, cfg, out):
    return main(["evaluate", "--data", str(data), "--adv", str(adv), "--target", str(target), "--clean", str(clean),
                 "--cfg", _cfg(**cfg), "--out", str(out)])


def test_clean_and_evaluate_stages_write_contract_records(cli_data_path, cli_models, tmp_path):
    d = cli_data_path
    c_snn = _clean(d, cli_models["snn"], "snn", 1, tmp_path / "clean_snn.json")
    assert c_snn["repeats"] == 3 and c_snn["stochastic"] and c_snn["repeat_check"]["differs"]
    assert c_snn["model"] == "snn" and c_snn["replica"] == 1 and c_snn["n"] == 16
    c_ann = _clean(d, cli_models["ann"], "ann", 1, tmp_path / "clean_ann.json")
    assert c_ann["repeats"] == 1 and not c_ann["repeat_check"]["differs"]

    fgsm = {"type": "fgsm"}
    _craft(d, cli_models["snn"], "snn", 1, fgsm, "0", tmp_path / "wb0.pt")
    _craft(d, cli_models["snn"], "snn", 1, fgsm, "8/255", tmp_path / "wb.pt")
    _craft(d, cli_models["snn_r2"], "snn", 2, fgsm, "8/255", tmp_path / "bb.pt")
    _craft(d, cli_models["ann"], "ann", 1, fgsm, "8/255", tmp_path / "tr.pt")
    recs = {}
    for key, adv, src, sr in (("wb0", "wb0.pt", "snn", 1), ("wb", "wb.pt", "snn", 1), ("bb", "bb.pt", "snn", 2),
                              ("tr", "tr.pt", "ann", 1)):
        out = tmp_path / f"{key}.json"
        cfg = dict(source=src, source_replica=sr, attack="fgsm", target="snn", target_replica=1)
        assert _evaluate(d, tmp_path / adv, cli_models["snn"], tmp_path / "clean_snn.json", cfg, out) == 0
        recs[key] = json.loads(out.read_text())
    for r in recs.values():
        assert set(r) == set(RECORD_KEYS), set(r) ^ set(RECORD_KEYS)
        assert r["repeats"] == 3 and len(r["adv_accs"]) == 3 and r["stochastic"] is True and r["n"] == 16
        assert r["clean_acc"] == c_snn["clean_acc"] and r["target_kind"] == "snn"
    assert [recs[k]["setting"] for k in ("wb", "bb", "tr")] == ["white-box", "black-box", "transfer"]
    assert recs["tr"]["source_kind"] == "ann" and recs["wb"]["eps_label"] == "8_255"
    # common random numbers: at eps 0 the stochastic target reproduces its clean accuracy exactly
    assert recs["wb0"]["adv_accs"] == c_snn["accs"]
    from spkrobust.evaluation.checks import run_checks

    res = run_checks(list(recs.values()), clean=[c_snn, c_ann])
    eps0 = [r for r in res if r["name"] == "eps0_equals_clean"]
    assert eps0 and eps0[0]["status"] == "ok"


def test_evaluate_refuses_tampered_sets_and_wrong_clean_files(cli_data_path, cli_models, tmp_path, capsys):
    d = cli_data_path
    _craft(d, cli_models["ann"], "ann", 1, {"type": "noise"}, "4/255", tmp_path / "adv.pt")
    _clean(d, cli_models["ann"], "ann", 1, tmp_path / "clean_ann.json")
    _clean(d, cli_models["snn_direct"], "snn_direct", 1, tmp_path / "clean_direct.json")
    cfg = dict(source="ann", source_replica=1, attack="noise", target="ann", target_replica=1)
    assert _evaluate(d, tmp_path / "adv.pt", cli_models["ann"], tmp_path / "clean_ann.json", cfg,
                     tmp_path / "ok.json") == 0
    adv = torch.load(tmp_path / "adv.pt", weights_only=True)
    adv["x_adv"] = (adv["x_adv"] + 0.1).clamp(0, 1)  # leaves the 4/255 ball
    torch.save(adv, tmp_path / "bad.pt")
    assert _evaluate(d, tmp_path / "bad.pt", cli_models["ann"], tmp_path / "clean_ann.json", cfg,
                     tmp_path / "bad.json") == 2
    assert "eps-ball" in capsys.readouterr().err and not (tmp_path / "bad.json").exists()
    # the clean JSON of another model
    assert _evaluate(d, tmp_path / "adv.pt", cli_models["ann"], tmp_path / "clean_direct.json", cfg,
                     tmp_path / "x.json") == 2
    assert "clean accuracy of snn_direct" in capsys.readouterr().err
    # a bad eval option
    with pytest.raises(SystemExit):
        main(["evaluate"])
    assert main(["clean", "--data", str(d), "--model", str(cli_models["ann"]), "--cfg",
                 json.dumps({"eval": {"repeats": 0}}), "--out", str(tmp_path / "c.json")]) == 2
