"""The ensemble attack (spkrobust.attacks.ensemble): per-image outcome is the AND of its members' on the same
images, so its accuracy is at most every member's; sets stay in the eps-ball and [0, 1]; the record
says which member broke each image; the overestimate table and the ensemble_drop check read it."""
from __future__ import annotations

import json

import pytest
import helpers.robust as H
import torch
from helpers.robust import cli_data_path, cli_models  # noqa: F401  (fixtures)

from spkrobust.attacks import registry as A
from spkrobust.evaluation.checks import run_checks
from spkrobust.attacks.files import load_adv
from spkrobust.attacks.ensemble import decode_record, source_predict
from spkrobust.errors import UserError
from spkrobust.evaluation.outcomes import encode
from spkrobust.report.overestimate import member_rows, overestimate_md, overestimate_rows

MEMBERS = [{"type": "fgsm"}, {"type": "apgd", "steps": 3, "loss": "ce"},
           {"type": "apgd", "steps": 3, "loss": "dlr"}, {"type": "pgd", "steps": 2, "alpha": "0.5*eps"}]
EPS = 0.06


@pytest.fixture(scope="module")
def ann(small_data):
    return H.tiny_ann(small_data)


def _correct(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) == y


@pytest.mark.parametrize("stop_early", [False, True])
def test_ensemble_outcome_is_and_of_members(ann, small_data, stop_early):
    x, y = H.test_images(small_data, 64)
    seed = 11
    x_adv, info = A.craft(ann, x, y, {"type": "ensemble", "members": MEMBERS, "stop_early": stop_early}, EPS,
                          seed=seed, batch_size=32)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6 and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    rec = decode_record(info["ensemble"])
    clean_ok = _correct(ann, x, y).numpy()
    assert (rec["clean_wrong"] == ~clean_ok).all()
    ens_ok = _correct(ann, x_adv, y).numpy()
    survived_all = clean_ok & ~rec["broken"].any(0)
    assert (ens_ok == survived_all).all(), "the set's outcome is not the AND over its members"
    if not stop_early:  # every member attacked every image: compare with each member alone
        for i, m in enumerate(MEMBERS):
            assert rec["attempted"][i].all()
            xm, _ = A.craft(ann, x, y, m, EPS, seed=A.derive_seed(seed, "member", i), batch_size=32)
            member_ok = _correct(ann, xm, y)
            assert (member_ok.numpy() == ~rec["broken"][i]).all()
            assert ens_ok.mean() <= member_ok.float().mean().item() + 1e-12
            assert (ens_ok <= member_ok.numpy()).all()
    else:  # a member attacks only the survivors of the earlier ones
        for i in range(1, len(MEMBERS)):
            assert not (rec["attempted"][i] & rec["broken"][:i].any(0)).any()
    assert ens_ok.mean() < clean_ok.mean(), "the ensemble broke nothing at eps 0.06 on the tiny ANN"


def test_ensemble_on_snn_with_estimators_stays_in_ball():
    model = H.snn(seed=2, T=2, encoder="poisson")
    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28)
    torch.manual_seed(0)  # the labels: the source's own predictions, judged as craft_ensemble does
    y = source_predict(model, x, 2, 6, "cpu")
    members = [{"type": "apgd", "steps": 2, "grad": {"mode": "bptt", "surrogate": "atan", "width": 0.5}},
               {"type": "apgd", "steps": 2, "loss": "dlr", "grad": "act"},
               {"type": "fgsm", "grad": {"mode": "hart", "gamma": 0.5}, "name": "fgsm_hart"}]
    x_adv, info = A.craft(model, x, y, {"type": "ensemble", "members": members, "stop_early": False}, 0.1,
                          eot_samples=2, seed=0, batch_size=6)
    A.verify_adv(x, x_adv, 0.1)
    e = info["ensemble"]
    assert e["members"] == ["apgd-bptt-atan-w0.5", "apgd-dlr-act", "fgsm_hart"]
    assert info["eot_samples"] == 2
    assert [m["grad"] for m in e["member_info"]] == ["bptt-atan-w0.5", "act", "hart-g0.5"]
    assert [m["attempted"] for m in e["member_info"]] == [6, 6, 6]
    json.dumps(e)  # the record goes into JSON files


def test_ensemble_config_errors():
    with pytest.raises(UserError, match=r"^attack.members: missing \(required\)$"):
        A.resolve_attack({"type": "ensemble"}, 0.1)
    with pytest.raises(UserError, match="ensembles do not nest"):
        A.resolve_attack({"type": "ensemble", "members": [{"type": "ensemble", "members": [{"type": "fgsm"}]}]}, 0.1)
    with pytest.raises(UserError, match="repeats member 'fgsm'"):
        A.resolve_attack({"type": "ensemble", "members": [{"type": "fgsm"}, {"type": "fgsm"}]}, 0.1)
    with pytest.raises(UserError, match=r"^attack.members\[0\].grad.mode: 'x' is not allowed; allowed: bptt, "):
        A.resolve_attack({"type": "ensemble", "members": [{"type": "pgd", "grad": {"mode": "x"}}]}, 0.1)


def _record(attack, atype, correct, eps=0.1, target="snn", ensemble=None, replica=1):
    acc = float(sum(correct)) / len(correct)
    return {"dataset": "fashion_mnist", "source": target, "source_replica": replica, "target": target,
            "target_replica": replica, "setting": "white-box", "attack": attack, "attack_type": atype,
            "eps": eps, "eps_label": str(eps), "adv_acc": acc, "adv_acc_std": 0.0, "repeats": 1,
            "n": len(correct), "outcomes": encode([correct]), "target_kind": "snn", "stochastic": False,
            "ensemble": ensemble, "clean_acc": 1.0}


def test_overestimate_table_and_checks_from_real_ensemble_record(ann, small_data):
    x, y = H.test_images(small_data, 64)
    _, info = A.craft(ann, x, y, {"type": "ensemble", "members": MEMBERS}, EPS, seed=3, batch_size=32)
    x_pgd, _ = A.craft(ann, x, y, {"type": "fgsm"}, EPS, seed=3, batch_size=32)
    fgsm_ok = _correct(ann, x_pgd, y).tolist()
    rec = decode_record(info["ensemble"])
    ens_ok = (~rec["clean_wrong"] & ~rec["broken"].any(0)).tolist()
    records = [_record("fgsm", "fgsm", fgsm_ok, eps=EPS, target="tiny"),
               _record("ens", "ensemble", ens_ok, eps=EPS, target="tiny", ensemble=info["ensemble"])]
    rows = overestimate_rows(records)
    assert len(rows) == 1
    r = rows[0]
    assert r["acc_attack"] == pytest.approx(sum(fgsm_ok) / 64) and r["acc_ensemble"] == pytest.approx(sum(ens_ok) / 64)
    assert r["diff"] == pytest.approx(r["acc_attack"] - r["acc_ensemble"]) and r["low"] <= r["diff"] <= r["high"]
    wins = member_rows(records)
    assert [w["member"] for w in wins] == ["fgsm", "apgd-ce", "apgd-dlr", "pgd"]
    assert sum(w["first"] for w in wins) == int((~rec["clean_wrong"]).sum()) - sum(ens_ok)
    md = overestimate_md(records)
    assert "| fashion_mnist | tiny |" in md and "Which ensemble members win" in md
    # with the models table, each row names how the model was trained and what the single attack went through
    snn = [{"dataset": "fashion_mnist", "model": "tiny", "kind": "snn", "surrogate": "atan"}]
    assert "| tiny | snn | BPTT, atan surrogate | " in overestimate_md(records, models=snn)
    conv = [{"dataset": "fashion_mnist", "model": "tiny", "kind": "convert", "surrogate": "linear"}]
    assert overestimate_rows(records, models=conv)[0]["kind"] == "convert"  # the config kind, not the record's
    assert overestimate_rows(records, models=snn)[0]["gradient"] == "bptt, atan surrogate"
    ann_row = [{"dataset": "fashion_mnist", "model": "tiny", "kind": "ann", "surrogate": None}]
    assert [(r["trained_with"], r["gradient"]) for r in overestimate_rows(records, models=ann_row)] == \
        [("ANN (exact gradient)", "exact")]
    drop = [c for c in run_checks(records) if c["name"] == "ensemble_drop"]
    assert len(drop) == 1
    assert drop[0]["status"] == ("flag" if r["diff"] > 0.05 else "ok")


def test_ensemble_drop_flags_only_beyond_margin():
    base = [True] * 80 + [False] * 20
    recs = [_record("pgd", "pgd", base), _record("ens", "ensemble", [True] * 78 + [False] * 22),
            _record("pgd", "pgd", base, eps=0.2), _record("ens", "ensemble", [True] * 60 + [False] * 40, eps=0.2)]
    status = {c["detail"].split("at eps ")[1][:3]: c["status"] for c in run_checks(recs) if c["name"] == "ensemble_drop"}
    assert status == {"0.1": "ok", "0.2": "flag"}
    assert "not measured" in overestimate_md([_record("pgd", "pgd", base)])


def test_ensemble_weaker_than_a_single_attack_is_flagged():
    base = [True] * 80 + [False] * 20
    recs = [_record("pgd", "pgd", base), _record("ens", "ensemble", [True] * 81 + [False] * 19),  # 1 image: noise
            _record("pgd", "pgd", base, eps=0.2), _record("fgsm", "fgsm", [True] * 90 + [False] * 10, eps=0.2),
            _record("ens", "ensemble", [True] * 85 + [False] * 15, eps=0.2)]  # above PGD by 5 points
    got = {c["detail"].split("at eps ")[1][:3]: c for c in run_checks(recs) if c["name"] == "ensemble_not_weaker"}
    assert {k: c["status"] for k, c in got.items()} == {"0.1": "ok", "0.2": "flag"}
    assert "is above pgd 80.00%" in got["0.2"]["detail"] and "fgsm" not in got["0.2"]["detail"]
    # the per-sample worst case of a real ensemble is never above its own members' sets
    assert all(c["status"] == "ok" for c in run_checks([_record("pgd", "pgd", base), _record("ens", "ensemble", base)])
               if c["name"] == "ensemble_not_weaker")


def test_craft_and_evaluate_cli_carry_the_ensemble_record(cli_data_path, cli_models, tmp_path):  # noqa: F811
    from spkrobust.cli import main

    adv = tmp_path / "adv.pt"
    atk = {"type": "ensemble", "members": [{"type": "fgsm", "grad": "bptr"}, {"type": "apgd", "steps": 2, "grad": "act"}]}
    cfg = {"seed": 0, "device": "cpu", "eval": {"repeats": 1, "batch_size": 16}}
    assert main(["craft", "--data", str(cli_data_path), "--model", str(cli_models["snn_direct"]), "--attack-cfg",
                 json.dumps(atk), "--eps", "8/255", "--cfg", json.dumps({**cfg, "attack": "ens"}), "--out", str(adv)]) == 0
    meta = load_adv(str(adv))["meta"]
    assert meta["attack_type"] == "ensemble" and meta["ensemble"]["members"] == ["fgsm-bptr", "apgd-act"]
    clean, out = tmp_path / "clean.json", tmp_path / "rec.json"
    assert main(["clean", "--data", str(cli_data_path), "--model", str(cli_models["snn_direct"]), "--cfg",
                 json.dumps(cfg), "--out", str(clean)]) == 0
    assert main(["evaluate", "--data", str(cli_data_path), "--adv", str(adv), "--target", str(cli_models["snn_direct"]),
                 "--clean", str(clean), "--cfg", json.dumps(cfg), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["ensemble"]["members"] == ["fgsm-bptr", "apgd-act"]
    assert len(member_rows([record])) == 2


PGD = {"type": "pgd", "steps": 2, "alpha": "0.5*eps"}
LATER = {"type": "apgd", "steps": 3, "loss": "dlr"}


def test_a_set_member_gives_the_set_crafting_that_member_gives(ann, small_data):
    """{set: pgd} reuses a stored set: with the set crafted at the member's own seed, the ensemble is
    bit for bit the one that crafts the member itself; where the later member found nothing, the
    ensemble keeps the set's example, and the record names the reused set's seed and time."""
    x, y = H.test_images(small_data, 64)
    seed = 7
    crafted, info_c = A.craft(ann, x, y, {"type": "ensemble", "members": [PGD, LATER]}, EPS, seed=seed, batch_size=32)
    s0 = A.derive_seed(seed, "member", 0)
    xp, pinfo = A.craft(ann, x, y, PGD, EPS, seed=s0, batch_size=32)
    meta = {"seed": s0, "time_s": 12.5, "zero_grad_frac": pinfo["zero_grad_frac"], "grad_mode": "exact"}
    reused, info_r = A.craft(ann, x, y, {"type": "ensemble", "members": [{"set": "pgd"}, LATER]}, EPS, seed=seed,
                             batch_size=32, sets={"pgd": (xp, meta)})
    assert torch.equal(reused, crafted)
    rec_c, rec_r = decode_record(info_c["ensemble"]), decode_record(info_r["ensemble"])
    assert rec_r["members"] == ["pgd", "apgd-dlr"]
    for key in ("clean_wrong", "attempted", "broken"):
        assert (rec_r[key] == rec_c[key]).all(), key
    assert rec_r["broken"][0].sum() > 0 and not rec_r["attempted"][1].all()
    left = ~torch.as_tensor(rec_r["attempted"][1])  # the later member never saw these: the set's example stays
    assert torch.equal(reused[left], xp[left])
    first = info_r["ensemble"]["member_info"][0]
    assert first["set"] == "pgd" and first["set_seed"] == s0 and first["time_s"] == 12.5
    assert info_r["time_s"] >= 12.5  # the ensemble's cost includes the set it reused
    assert _correct(ann, reused, y).float().mean() <= _correct(ann, xp, y).float().mean()


def test_a_set_member_without_its_set_or_with_parameters_is_refused(ann, small_data):
    x, y = H.test_images(small_data, 8)
    with pytest.raises(UserError, match=r"reuses the set of attack 'pgd', which was not handed in \(spkrobust craft "
                                        r"--set pgd=PATH\)"):
        A.craft(ann, x, y, {"type": "ensemble", "members": [{"set": "pgd"}, LATER]}, EPS)
    with pytest.raises(UserError, match=r"^attack.members\[0\].steps: unknown key; allowed: set$"):
        A.resolve_attack({"type": "ensemble", "members": [{"set": "pgd", "steps": 3}]}, EPS)
    far = (x + 2 * EPS).clamp(0, 1)  # a set from another eps-ball
    with pytest.raises(Exception, match="leaves the eps-ball"):
        A.craft(ann, x, y, {"type": "ensemble", "members": [{"set": "pgd"}]}, EPS, sets={"pgd": (far, {})})


def test_craft_cli_reuses_a_stored_set_of_the_same_source_only(cli_data_path, cli_models, tmp_path, capsys):  # noqa: F811
    from spkrobust.cli import main

    cfg = {"seed": 0, "device": "cpu", "eval": {"attack_batch_size": 16}}
    sets = {}
    for src in ("snn_direct", "ann"):
        sets[src] = tmp_path / f"pgd_{src}.pt"
        assert main(["craft", "--data", str(cli_data_path), "--model", str(cli_models[src]), "--attack-cfg",
                     json.dumps(PGD), "--eps", "8/255", "--cfg", json.dumps({**cfg, "attack": "pgd"}),
                     "--out", str(sets[src])]) == 0
    ens = {"type": "ensemble", "members": [{"set": "pgd"}, {"type": "apgd", "steps": 2, "grad": "act"}]}
    out = tmp_path / "ens.pt"
    base = ["craft", "--data", str(cli_data_path), "--model", str(cli_models["snn_direct"]), "--attack-cfg",
            json.dumps(ens), "--eps", "8/255", "--cfg", json.dumps({**cfg, "attack": "ens"}), "--out", str(out)]
    assert main(base + ["--set", f"pgd={sets['snn_direct']}"]) == 0
    meta, pmeta = load_adv(str(out))["meta"], load_adv(str(sets["snn_direct"]))["meta"]
    first = meta["ensemble"]["member_info"][0]
    assert first["set"] == "pgd" and first["set_seed"] == pmeta["seed"]
    out.unlink()
    capsys.readouterr()
    assert main(base + ["--set", f"pgd={sets['ann']}"]) == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the set is pgd from ann r1 at 8_255, not pgd from snn_direct r1 at 8_255" in err[0]


@pytest.mark.parametrize("judge,eot,expected", [(None, 1, 8), (2, 1, 2), (2, 3, 3)])
def test_judge_draws_judge_a_poisson_source(judge, eot, expected):
    """A Poisson source's margins are judged on max(judge_draws, eot_samples) summed passes (the schema's
    default 8), recorded in the set's ensemble record; a deterministic source is judged once."""
    model = H.snn(seed=2, T=2, encoder="poisson")
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    y = torch.arange(4)
    spec = {"type": "ensemble", "members": [{"type": "fgsm"}], **({"judge_draws": judge} if judge else {})}
    calls = {"n": 0}
    hook = model.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    _, info = A.craft(model, x, y, spec, 0.1, eot_samples=eot, seed=0, batch_size=4)
    hook.remove()
    assert info["ensemble"]["judge_draws"] == expected
    assert calls["n"] >= 2 * expected  # the clean images and the member's candidates, each on every draw
    det = H.snn(seed=2, T=2, encoder="direct")
    _, info = A.craft(det, x, y, spec, 0.1, eot_samples=eot, seed=0, batch_size=4)
    assert info["ensemble"]["judge_draws"] == 1
