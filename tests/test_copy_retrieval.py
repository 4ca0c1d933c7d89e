"""The copy and retrieval study (Griffin section 6.2, Figure 6; minigriffin/copy_retrieval.py) end to end at the
tiny preset through the command line, its bad arguments, and that a model learns induction heads at all."""

import csv
import json

import numpy as np
import pytest

from cli_checks import fails_in_one_line
from minigriffin.cli import main
from minigriffin.copy_retrieval import FAMILIES, PRESETS, TASKS, accuracy, model_config, task_batch, train_model

FILES = [f"copy-retrieval-{task}.{ext}" for task in TASKS for ext in ("png", "csv")] + \
    ["copy-retrieval.md", "copy-retrieval.json"]


def _accuracies(report):
    """Every accuracy of a report, in a fixed order: the numbers that must repeat for a seed."""
    return [(task, m["label"], point.get("step", point.get("length")), point["token_accuracy"], point["exact_match"])
            for task, result in report["tasks"].items() for m in result["models"]
            for point in m["curve"] + m["lengths"]]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The tiny preset run twice with the same seed, into two folders: [(folder, report)]."""
    runs = []
    for name in ("first", "second"):
        out = tmp_path_factory.mktemp(name)
        assert main(["experiment", "copy-retrieval", "--preset", "tiny", "--out", str(out), "--seed", "3"]) == 0
        runs.append((out, json.loads((out / "copy-retrieval.json").read_text())))
    return runs


def test_tiny_preset_writes_every_output(tiny_runs):
    out, report = tiny_runs[0]
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    assert (out / "copy-retrieval-induction.png").read_bytes()[:4] == b"\x89PNG"
    assert report["command"] == f"minigriffin experiment copy-retrieval --preset tiny --out {out} --seed 3"
    assert report["seed"] == 3 and report["preset"] == "tiny" and report["device"] == "cpu"
    assert report["commit"] and report["machine"] and report["wall_time_s"] >= 0
    assert list(report["tasks"]) == list(TASKS)
    markdown = (out / "copy-retrieval.md").read_text()
    assert "Selective copying (Figure 6a)" in markdown and "| Griffin (CG-LRU) |" in markdown
    assert "## The paper's claims, tested" in markdown and "| holds here? |" in markdown
    assert {r["task"] for r in report["findings"]} == set(TASKS)
    for r in report["findings"]:
        mean, low, high = r["difference"]
        assert low <= mean <= high and r["holds"] in ("yes", "no", "not shown", "no claim")
        assert mean == pytest.approx(r["second_accuracy"] - r["first_accuracy"], abs=1e-12)   # float64 means
    for task, result in report["tasks"].items():
        p = PRESETS["tiny"][task]
        assert [m["family"] for m in result["models"]] == list(FAMILIES[task])
        for m in result["models"]:
            assert [c["step"] for c in m["curve"]][0] == 0 and m["curve"][-1]["step"] == p["steps"]
            assert len(m["lengths"]) == (0 if task == "selective-copy" else len(p.get("lengths", p.get("eval_entries"))))
            for point in m["curve"] + m["lengths"]:
                # every row has the same number of answer tokens, so a row right in full is all tokens right
                assert 0 <= point["exact_match"] <= point["token_accuracy"] <= 1
            # the models of Appendix H: Griffin's window is half the training length, MQA attends globally
            assert m["window"] == (result["train_len"] // 2 if m["family"].startswith("griffin") else None)
            assert m["cg_lru"] == m["family"].endswith("-cg")
        with open(out / f"copy-retrieval-{task}.csv") as f:
            rows = list(csv.DictReader(f))
        assert {r["model"] for r in rows} == set(FAMILIES[task])
        assert {r["sweep"] for r in rows} == ({"steps"} if task == "selective-copy" else {"steps", "length"})


def test_tiny_preset_is_deterministic_for_a_seed(tiny_runs):
    (_, first), (_, second) = tiny_runs
    assert _accuracies(first) == _accuracies(second)                 # exactly: same batches, same arithmetic
    assert [m["final_loss"] for r in first["tasks"].values() for m in r["models"]] == \
        [m["final_loss"] for r in second["tasks"].values() for m in r["models"]]


def test_one_task_and_the_saved_models(tmp_path):
    from minigriffin.checkpoint import load_run
    out = tmp_path / "one"
    assert main(["experiment", "copy-retrieval", "--preset", "tiny", "--task", "phonebook", "--out", str(out)]) == 0
    report = json.loads((out / "copy-retrieval.json").read_text())
    assert list(report["tasks"]) == ["phonebook"] and "--task phonebook" in report["command"]
    assert not (out / "copy-retrieval-induction.csv").exists()
    params, cfg, meta = load_run(out / "runs" / "phonebook" / "griffin", "last")
    assert cfg.vocab_size == 39 and meta["task"] == "phonebook"      # the phonebook's own vocabulary


def test_models_and_steps_for_the_conv1d_ablation(tmp_path):
    """--model picks the models (any task; -noconv: Conv1D width 1), --steps replaces the preset's; the held-out
    rows depend on seed and task only, so a separate run's Griffin answers the same rows as this one's."""
    from minigriffin.checkpoint import load_run
    out = tmp_path / "ablation"
    argv = ["experiment", "copy-retrieval", "--preset", "tiny", "--task", "phonebook", "--model", "griffin-noconv",
            "--model", "griffin", "--steps", "3", "--out", str(out), "--seed", "4"]
    assert main(argv) == 0
    report = json.loads((out / "copy-retrieval.json").read_text())
    result = report["tasks"]["phonebook"]
    assert [m["family"] for m in result["models"]] == ["griffin-noconv", "griffin"]
    assert [m["conv1d_width"] for m in result["models"]] == [1, 4]
    assert result["settings"]["steps"] == 3 and [c["step"] for c in result["models"][0]["curve"]][-1] == 3
    assert "--model griffin-noconv --model griffin --steps 3" in report["command"]
    _, cfg, _ = load_run(out / "runs" / "phonebook" / "griffin-noconv", "last")
    assert cfg.conv1d_temporal_width == 1
    claims = {(r["first"], r["second"]) for r in report["findings"]}
    assert claims == {("griffin-noconv", "griffin")}                 # only the pair this run holds
    assert "Griffin (no Conv1D)" in (out / "copy-retrieval.md").read_text()
    # the same seed, another run with Griffin alone: the same held-out rows, so the same answers
    again = tmp_path / "griffin-alone"
    assert main(["experiment", "copy-retrieval", "--preset", "tiny", "--task", "phonebook", "--model", "griffin",
                 "--steps", "3", "--out", str(again), "--seed", "4"]) == 0
    alone = json.loads((again / "copy-retrieval.json").read_text())["tasks"]["phonebook"]["models"][0]
    assert alone["lengths"] == result["models"][1]["lengths"]                 # exactly equal: same rows, same training


@pytest.mark.parametrize("argv, match", [
    (["--task", "copying"], "invalid choice: 'copying'"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--study", "train-length"], "apply to `experiment extrapolation` only"),
    (["--data-dir", "books"], "apply to `experiment extrapolation` only"),
    (["--preset", "tiny", "--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (["--seed", "one"], "invalid int value: 'one'"),
    (["--model", "rwkv"], "invalid choice: 'rwkv'"),
    (["--preset", "tiny", "--steps", "0"], "steps must be an integer >= 1, got 0"),
])
def test_bad_arguments_are_one_line_exit_2(tmp_path, argv, match):
    fails_in_one_line(["experiment", "copy-retrieval", "--out", str(tmp_path / "out"), *argv], match)
    assert not (tmp_path / "out" / "copy-retrieval.json").exists()


def test_copy_retrieval_options_are_refused_for_the_extrapolation_study(tmp_path):
    for extra in (["--task", "induction"], ["--model", "hawk"], ["--steps", "5"]):
        fails_in_one_line(["experiment", "extrapolation", *extra, "--out", str(tmp_path)],
               "--task, --model and --steps apply to `experiment copy-retrieval` only")


def test_gpu_device_without_a_gpu_is_one_line(tmp_path):
    from minigriffin.device import DeviceUnavailable, device_namespace
    try:
        device_namespace("gpu")
    except DeviceUnavailable:
        fails_in_one_line(["experiment", "copy-retrieval", "--preset", "tiny", "--device", "gpu", "--out", str(tmp_path)],
               "--device gpu is not usable here")
    else:
        pytest.skip("a GPU is usable here, so --device gpu is not an error")


@pytest.mark.parametrize("family", ["hawk", "mqa"])
def test_induction_heads_are_learned_at_a_short_length(family):
    """The easiest setting: induction heads at length 8 with a 2-block model of width 32. After 300 steps of 32
    rows (about 4 s) the held-out accuracy is far above chance (1/15): calibrated at 1.00 on several seeds, and
    0.56-1.00 after only 150 steps, so 0.5 leaves a wide margin."""
    p = dict(L=8, batch=32, steps=300, evals=1, eval_rows=256)
    cfg = model_config(family, dict(width=32, depth=2, heads=2, lru_width=32, mlp=96), "induction", p)
    held_out = task_batch("induction", p, np.random.default_rng(123), p["eval_rows"])
    before = accuracy(*_init(cfg), held_out, np)
    params, curve, loss, _ = train_model(cfg, "induction", p, 3e-3, seed=0, device="cpu", held_out=held_out,
                                         log=lambda *_: None)
    assert curve[0]["exact_match"] == before[1] < 0.2                # chance 1/15 before training
    assert curve[-1]["exact_match"] > 0.5 and curve[-1]["step"] == 300
    # chunks of 3 tokens with the state carried, 5 rows at a time: the same answers (float32 rounding may
    # flip a near-tie, hence one row of slack)
    chunked = accuracy(params, cfg, held_out, np, chunk=3, rows=5)
    assert abs(chunked[1] - curve[-1]["exact_match"]) <= 1 / p["eval_rows"]
    assert loss < 1.5


def _init(cfg):
    from minigriffin.params import init_params
    return init_params(cfg, np.random.default_rng([0, 0])), cfg


# --- The verdicts (minigriffin/copy_retrieval_findings.py) ----------------------------------------------------

@pytest.mark.parametrize("sign, low, high, expected", [
    (+1, 0.1, 0.3, "yes"), (+1, -0.3, -0.1, "no"), (+1, -0.1, 0.1, "not shown"), (+1, 0.0, 0.2, "not shown"),
    (-1, -0.3, -0.1, "yes"), (-1, 0.1, 0.3, "no"), (0, -0.1, 0.1, "yes"), (0, 0.1, 0.3, "no"),
    (None, 0.1, 0.3, "no claim"),
])
def test_a_claim_holds_only_when_the_whole_interval_has_its_sign(sign, low, high, expected):
    from minigriffin.copy_retrieval_findings import holds
    assert holds(sign, low, high) == expected


def _report(task, rows_by_family, L=8):
    """A one-task report whose models answer the held-out rows as given (1 right, 0 wrong) at length 2L."""
    models = [{"family": f, "label": f, "window": L // 2 if f.startswith("griffin") else None, "curve": [],
               "lengths": [{"length": 2 * L, "entries": None, "row_exact": rows, "row_token": rows}]}
              for f, rows in rows_by_family.items()]
    return {"tasks": {task: {"task": task, "train_len": L, "settings": {"steps": 1}, "models": models}}}


def test_verdicts_pair_the_same_rows():
    from minigriffin.copy_retrieval_findings import copy_retrieval_findings
    # Hawk right on rows 0-49 of 100, MQA on rows 0-39: paired, every row's difference is 0 or 1, so the
    # interval lies above 0 although each model's own interval (about +-0.1) overlaps the other's
    hawk, mqa = [1] * 50 + [0] * 50, [1] * 40 + [0] * 60
    [record] = [r for r in copy_retrieval_findings(_report("induction", {"mqa": mqa, "hawk": hawk}))]
    assert record["where"] == "length 16 = 2L" and record["claim"].endswith("Hawk extrapolates")
    mean, low, high = record["difference"]
    assert mean == pytest.approx(0.10, abs=1e-12) and low > 0 and record["holds"] == "yes"
    # the same accuracies on disjoint rows: the paired differences are -1, 0 and +1, and the interval covers 0
    mqa_elsewhere = [0] * 50 + [1] * 40 + [0] * 10
    [record] = copy_retrieval_findings(_report("induction", {"mqa": mqa_elsewhere, "hawk": hawk}))
    assert record["difference"][0] == pytest.approx(0.10, abs=1e-12) and record["holds"] == "not shown"
    # a family the report lacks leaves its claims out rather than failing
    assert copy_retrieval_findings(_report("induction", {"hawk": hawk})) == []


def test_the_command_line_offers_every_model_and_task():
    """cli_parser lists --model and --task choices literally (it imports no study); they must be the study's."""
    from minigriffin.cli_parser import build_parser
    from minigriffin.copy_retrieval import MODELS
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["experiment"]
    choices = {a.dest: a.choices for a in sub._actions}
    assert tuple(choices["model"]) == MODELS and tuple(choices["task"]) == TASKS


def test_seeds_report_from_two_runs(tmp_path):
    """seeds_report: the verdict table and the figure from the JSON files of two seeds' runs."""
    from minigriffin.copy_retrieval_report import seeds_report
    paths = []
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        assert main(["experiment", "copy-retrieval", "--preset", "tiny", "--task", "induction", "--model", "mqa",
                     "--model", "hawk", "--out", str(out), "--seed", str(seed)]) == 0
        paths.append(out / "copy-retrieval.json")
    table, figure = seeds_report(paths, tmp_path)
    text = table.read_text()
    assert "| seed 0 | seed 1 | seeds agree? |" in text and "- seed 1: `copy-retrieval.json`" in text
    rows = [line for line in text.splitlines() if line.startswith("| induction |")]
    assert len(rows) == 1 and rows[0].endswith(("| yes |", "| no |")), rows   # tiny: 2L is the longest length
    assert figure.read_bytes()[:4] == b"\x89PNG"


def test_seeds_side_by_side():
    """seeds_markdown: each seed's verdict, and whether the seeds agree (intervals on the same side of 0)."""
    from minigriffin.copy_retrieval_findings import copy_retrieval_findings, seeds_markdown
    hawk, mqa = [1] * 50 + [0] * 50, [1] * 40 + [0] * 60
    runs = []
    for seed, mqa_rows in ((0, mqa), (1, mqa), (2, [0] * 50 + [1] * 40 + [0] * 10)):
        report = _report("induction", {"mqa": mqa_rows, "hawk": hawk}) | {"seed": seed}
        runs.append(report | {"findings": copy_retrieval_findings(report)})
    [row] = seeds_markdown(runs[:2], {"hawk": "Hawk", "mqa": "MQA"}).splitlines()[2:]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == cells[4] and cells[3].startswith("+0.100 [+") and cells[3].endswith("(yes)"), row
    assert cells[5] == "yes", row                           # the same rows and models: the seeds agree
    assert "length 16 = 2L: Hawk - MQA" in row
    [row] = seeds_markdown(runs, {}).splitlines()[2:]
    assert "(not shown) | no |" in row                     # seed 2's interval covers 0: the seeds disagree
    with pytest.raises(ValueError, match="different seeds"):
        seeds_markdown([runs[0], runs[0]], {})
