"""The window study (Griffin Appendix E, Figure 9; minigriffin/window_study.py) at the tiny preset, end to end."""

import json

import numpy as np
import pytest

from minigriffin.cli import main
from minigriffin.experiment import PRESETS, model_config
from minigriffin.window_study import KINDS, LENGTH_MULTIPLES, window_runs


def test_the_runs_hold_the_token_budget_and_the_windows():
    p = PRESETS["laptop"]
    runs = window_runs(p)
    assert len(runs) == len(KINDS) * len(LENGTH_MULTIPLES) and len({r[1][0] for r in runs}) == len(runs)
    for kind, (label, family, L, batch), window in runs:
        assert L * batch == p["L"] * p["batch"]                       # the same tokens per step at every L
        cfg = model_config(family, {**p, "window": window}, L)
        if kind == "mqa global":
            assert cfg.global_attention and window is None
        else:
            assert not cfg.global_attention and cfg.attention_window_size == window == L // int(kind[-1])
        assert (family == "griffin") == ("recurrent" in cfg.block_types)
    # the Griffin at L0 with window L0/2 and the global MQA at L0 are the extrapolation study's own models,
    # so sharing --out reuses them: same label, same model
    shared = {r[1][0]: r for r in runs if r[1][2] == p["L"] and r[0] in ("griffin L/2", "mqa global")}
    assert set(shared) == {f"griffin-L{p['L']}", f"mqa-L{p['L']}"}
    for kind, (label, family, L, _), window in shared.values():
        assert model_config(family, {**p, "window": window}, L) == model_config(family, p, L)


def test_window_study_end_to_end(corpus_dir, tmp_path):
    out = tmp_path / "win"
    assert main(["experiment", "extrapolation", "--study", "window", "--preset", "tiny",
                 "--data-dir", str(corpus_dir), "--out", str(out)]) == 0
    report = json.loads((out / "window.json").read_text())
    assert (out / "window.png").read_bytes()[:4] == b"\x89PNG" and "holds here?" in (out / "window.md").read_text()
    assert report["command"].startswith("minigriffin experiment extrapolation --study window --preset tiny")
    assert len(report["models"]) == len(KINDS) * len(LENGTH_MULTIPLES)
    for L, models in report["results"].items():
        sizes = {len(m["pieces"]) for m in models.values()}
        assert len(sizes) == 1 and set(models) == set(KINDS)          # every model on the same pieces
    for r in report["findings"]:
        models = report["results"][str(r["train_len"])]
        diff = np.asarray(models[r["second"]]["pieces"]) - np.asarray(models[r["first"]]["pieces"])
        mean, low, high = r["difference"]
        assert mean == pytest.approx(np.nanmean(diff), abs=1e-12) and low <= mean <= high   # float64


def test_window_study_refuses_a_second_domain(corpus_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["experiment", "extrapolation", "--study", "window", "--preset", "tiny", "--data-dir",
              str(corpus_dir), "--eval-data-dir", str(corpus_dir), "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.splitlines()
    assert info.value.code == 2 and len(lines) == 1 and "--eval-data-dir applies to" in lines[0], lines
    assert not (tmp_path / "out").exists()                            # refused before anything was trained
