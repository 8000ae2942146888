"""The fit's input: results directories, CSVs and W&B projects into one validated table, or a clear error."""

import csv
from types import SimpleNamespace

import numpy as np
import pytest

from scaling_lab import layout, records
from scaling_lab.fit import FitInputError
from scaling_lab.fit.table import load_table

SIZES = [2e6, 5e6, 1.2e7, 3e7]
TOKENS = [2e7, 5e7, 1.2e8]


def law(n, d):
    return 1.8 + 400 / n ** 0.34 + 2000 / d ** 0.37


def record(run_id, n, d, loss=None, status="completed", **extra):
    rec = {
        "run_id": run_id, "status": status, "sweep": "grid", "model": {"name": "tiny"}, "params": int(n),
        "params_non_embedding": int(n * 0.8), "tokens": int(d), "tokens_requested": int(d), "flops": 6.0 * n * d,
        "flops_convention": "6N", "flops_by_convention": {"6N": 6.0 * n * d, "chinchilla": 7.0 * n * d},
        "final_val_loss": law(n, d) if loss is None else loss, "val_curve": [[int(d), law(n, d)]],
        "hparams": {"lr": 1e-3}, "hparams_source": {}, "data": {"fingerprint": "abc", "tokenizer": "byte"},
        "seed": 0, "wall_time_s": 1.0, "hardware": {}, "versions": {}, "started_at": "2026-11-23T00:00:00+00:00",
    }
    rec.update(extra)
    if status != "completed":
        rec = {"run_id": run_id, "status": status, "error": "loss exploded"}
    return rec


def results_dir(tmp_path, recs):
    for rec in recs:
        records.write_record(layout.record_path(tmp_path, rec["run_id"]), rec)
    return tmp_path


def grid_records():
    return [record(f"r{i}-{j}", n, d) for i, n in enumerate(SIZES) for j, d in enumerate(TOKENS)]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_runs_that_repeated_their_data_are_named_in_the_notes(tmp_path):
    recs = grid_records()
    recs[0]["data"] = {**recs[0]["data"], "epochs": 6.5, "repeated": True}
    recs[1]["data"] = {**recs[1]["data"], "epochs": 1.5}  # written before the flag existed
    recs[2]["data"] = {**recs[2]["data"], "epochs": 0.9, "repeated": False}
    notes = load_table(results_dir(tmp_path, recs), {}).notes
    (note,) = [n for n in notes if "more than once" in n]
    assert note.startswith("2 of 12 runs") and "6.50 epochs" in note
    assert not [n for n in load_table(results_dir(tmp_path / "fresh", grid_records()), {}).notes if "once" in n]


def test_results_dir_excludes_failed_and_unreadable_runs(tmp_path):
    recs = grid_records() + [record("bad", 1e7, 1e8, status="diverged")]
    results_dir(tmp_path, recs)
    (layout.run_dir(tmp_path, "broken")).mkdir(parents=True)
    layout.record_path(tmp_path, "broken").write_text("{not json")
    table = load_table(tmp_path, {})
    assert len(table) == 12
    reasons = {e["run"]: e["reason"] for e in table.excluded}
    assert reasons["bad"] == "status diverged: loss exploded"
    assert reasons["broken"].startswith("unreadable record")
    np.testing.assert_allclose(table.flops, 6 * table.params * table.tokens)


def test_results_dir_flops_convention_and_non_embedding_params(tmp_path):
    results_dir(tmp_path, grid_records())
    table = load_table(tmp_path, {"flops_convention": "chinchilla", "params_field": "params_non_embedding"})
    np.testing.assert_allclose(table.flops, 7 * table.tokens * np.round(table.params / 0.8), rtol=1e-6)
    assert any("chinchilla" in n for n in table.notes)


def test_same_cell_keeps_the_best_run_and_says_so(tmp_path):
    recs = grid_records() + [record("worse-lr", SIZES[0], TOKENS[0], loss=law(SIZES[0], TOKENS[0]) + 0.5,
                                    hparams={"lr": 1e-2})]
    results_dir(tmp_path, recs)
    table = load_table(tmp_path, {})
    assert len(table) == 12 and "worse-lr" not in table.run_ids
    assert any("lowest loss of each (N, D)" in n for n in table.notes)
    assert [e["run"] for e in table.excluded] == ["worse-lr"]


def test_mixed_datasets_or_tokenizers_are_an_error(tmp_path):
    recs = grid_records()
    recs[0]["data"] = {"fingerprint": "other", "tokenizer": "byte"}
    results_dir(tmp_path, recs)
    with pytest.raises(FitInputError, match="2 different datasets"):
        load_table(tmp_path, {})
    rows = [(n, d, law(n, d), "gpt2" if i else "byte") for i, (n, d) in
            enumerate((n, d) for n in SIZES for d in TOKENS)]
    path = write_csv(tmp_path / "runs.csv", ["params", "tokens", "loss", "tokenizer"], rows)
    with pytest.raises(FitInputError, match="2 different tokenizers"):
        load_table(path, {})


def test_csv_column_mapping_and_tokens_from_compute(tmp_path):
    rows = [(n, 6 * n * d, law(n, d)) for n in SIZES for d in TOKENS]
    path = write_csv(tmp_path / "runs.csv", ["Model Size", "Training FLOP", "Loss"], rows)
    table = load_table(path, {"columns": {"params": "Model Size", "flops": "Training FLOP", "loss": "Loss"}})
    np.testing.assert_allclose(sorted(table.tokens), sorted(d for _ in SIZES for d in TOKENS))
    assert any("D = C / (6 N)" in n for n in table.notes)


def test_bad_values_are_excluded_with_the_reason(tmp_path):
    rows = [(n, d, law(n, d)) for n in SIZES for d in TOKENS]
    rows += [(1e7, 1e8, "nan"), (1e7, 2e8, "inf"), (-5, 1e8, 3.0), (1e7, 0, 3.0), (1e7, 3e8, "n/a"), rows[0]]
    path = write_csv(tmp_path / "runs.csv", ["params", "tokens", "loss"], rows)
    table = load_table(path, {})
    assert len(table) == 12
    reasons = sorted(e["reason"] for e in table.excluded)
    assert reasons == ["duplicate of line 2", "loss is inf", "loss is nan", "loss is nan", "params is -5, not positive",
                       "tokens is 0, not positive"]


def test_exclude_top_loss(tmp_path):
    rows = [(n, d, law(n, d)) for n in SIZES for d in TOKENS]
    table = load_table(write_csv(tmp_path / "runs.csv", ["params", "tokens", "loss"], rows), {"exclude_top_loss": 3})
    assert len(table) == 9
    assert table.loss.max() < sorted(r[2] for r in rows)[-3]


def test_exclude_top_loss_keeps_just_enough_runs(tmp_path):
    rows = [(n, d, law(n, d)) for n in SIZES for d in TOKENS]
    table = load_table(write_csv(tmp_path / "runs.csv", ["params", "tokens", "loss"], rows), {"exclude_top_loss": 7})
    assert sorted(table.loss) == sorted(r[2] for r in rows)[:5]  # the 5 lowest losses, the 7 highest listed
    assert len(table.excluded) == 7


@pytest.mark.parametrize("k, left", [(8, 4), (12, 0), (15, 0)])
def test_exclude_top_loss_that_leaves_too_few_runs_is_one_line(tmp_path, k, left):
    # k >= the 12 usable runs once started its slices from the wrong end: k=15 dropped 3 runs and fitted 9
    rows = [(n, d, law(n, d)) for n in SIZES for d in TOKENS]
    with pytest.raises(FitInputError, match=f"^fit.exclude_top_loss={k} leaves {left} of the 12 usable runs"):
        load_table(write_csv(tmp_path / "runs.csv", ["params", "tokens", "loss"], rows), {"exclude_top_loss": k})


@pytest.mark.parametrize("rows, message", [
    ([(1e6, 1e7, 3.0), (2e6, 1e7, 2.9), (3e6, 2e7, 2.8)], "3 usable runs, fewer than the 5 parameters"),
    ([(1e6, d, 3.0 - d / 1e9) for d in (1e7, 2e7, 3e7, 4e7, 5e7, 6e7)], "same model size"),
])
def test_too_little_to_fit_is_an_error(tmp_path, rows, message):
    path = write_csv(tmp_path / "runs.csv", ["params", "tokens", "loss"], rows)
    with pytest.raises(FitInputError, match=message):
        load_table(path, {})


def test_unreadable_and_unknown_inputs_are_errors(tmp_path):
    with pytest.raises(FitInputError, match="not a results directory"):
        load_table(tmp_path / "missing.csv", {})
    with pytest.raises(FitInputError, match="no run records"):
        load_table(tmp_path, {})
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(FitInputError, match="binary.csv"):
        load_table(tmp_path / "binary.csv", {})
    path = write_csv(tmp_path / "runs.csv", ["size", "tokens", "loss"], [(1, 2, 3)])
    with pytest.raises(FitInputError, match="no column 'params'.*fit.columns.params"):
        load_table(path, {})
    with pytest.raises(FitInputError, match="expected wandb:ENTITY/PROJECT"):
        load_table("wandb:just-one", {})


class FakeApi:
    """Stands in for wandb.Api(): the same runs() call and run attributes the loader reads."""

    def __init__(self, runs):
        self._runs = runs
        self.calls = []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return self._runs


def wandb_run(name, n, d, state="finished", job_type="train"):
    # as training logs it: ModelConfig.to_dict()
    shape = {"n_layer": 2, "d_model": 64, "n_head": 4, "vocab_size": 256, "block_size": 128, "mlp_ratio": 4}
    return SimpleNamespace(name=name, state=state, job_type=job_type,
                           summary={"val/loss": law(n, d), "tokens": d, "params": n, "flops": 6 * n * d},
                           config={"model": shape, "train": {"lr": 1e-3}, "data": {"tokenizer": "byte"}})


def test_wandb_project_is_read_through_the_api():
    runs = [wandb_run(f"r{i}{j}", n, d) for i, n in enumerate(SIZES) for j, d in enumerate(TOKENS)]
    runs += [wandb_run("crashed", 1e7, 1e8, state="crashed"), wandb_run("old-fit", 1, 1, job_type="fit")]
    api = FakeApi(runs)
    table = load_table("wandb:team/scaling/local_small", {}, wandb_api=api)
    assert api.calls == [("team/scaling", {"group": "local_small"})]
    assert len(table) == 12 and [e["run"] for e in table.excluded] == ["crashed"]
    np.testing.assert_allclose(sorted(table.loss), sorted(law(n, d) for n in SIZES for d in TOKENS))


def test_wandb_params_from_the_logged_shape():
    from scaling_lab.accounting import params_total
    from scaling_lab.model.config import ModelConfig

    runs = []
    for d_model in (32, 64, 128):
        for d in TOKENS:
            run = wandb_run(f"w{d_model}-{d:g}", 1, d)
            del run.summary["params"], run.summary["flops"]
            run.config["model"] = {**run.config["model"], "d_model": d_model}
            runs.append(run)
    table = load_table("wandb:team/scaling", {}, wandb_api=FakeApi(runs))
    expected = {params_total(ModelConfig(n_layer=2, d_model=m, n_head=4, vocab_size=256, block_size=128))
                for m in (32, 64, 128)}
    assert set(table.params) == expected
    assert any("6 N D" in n for n in table.notes)


@pytest.mark.parametrize("bad", [{"d_model": -64}, {"n_layer": 2.5}, {"vocab_size": "many"}, {"mlp_ratio": None}])
def test_wandb_shape_that_no_model_could_have_gives_no_params(bad):
    runs = [wandb_run(f"r{i}{j}", n, d) for i, n in enumerate(SIZES) for j, d in enumerate(TOKENS)]
    broken = wandb_run("broken", 1, 1e9)
    del broken.summary["params"], broken.summary["flops"]
    broken.config["model"] = {**broken.config["model"], **bad}
    table = load_table("wandb:team/scaling", {}, wandb_api=FakeApi(runs + [broken]))
    assert table.excluded == [{"run": "broken", "reason": "params missing"}]


def test_wandb_runs_are_selected_by_fit_where():
    runs = [wandb_run(f"r{i}{j}", n, d) for i, n in enumerate(SIZES) for j, d in enumerate(TOKENS)]
    other = [wandb_run(f"lr{i}{j}", n, d) for i, n in enumerate(SIZES) for j, d in enumerate(TOKENS)]
    for run in other:
        run.config["train"] = {"lr": 1e-2}
        run.summary["val/loss"] += 1.0  # another LR, another law: mixed in, it would bend the fit
    table = load_table("wandb:team/scaling", {"where": {"train.lr": 1e-3}}, wandb_api=FakeApi(runs + other))
    assert len(table) == len(runs) and not any(name.startswith("lr") for name in table.run_ids)
    assert any("runs where train.lr = 0.001" in n for n in table.notes)
    with pytest.raises(FitInputError, match="fit.where names field 'train.seed', which no W&B run has"):
        load_table("wandb:team/scaling", {"where": {"train.seed": 0}}, wandb_api=FakeApi(runs))
