"""Run records: schema validation, atomic writes, deterministic ids."""

import json
import os
from pathlib import Path

import pytest

from scaling_lab import layout, records


def completed(**overrides):
    rec = {name: None for name in records.REQUIRED_COMPLETED}
    rec.update(
        schema_version=1, run_id="r1", status="completed", model={"n_layer": 1}, params=10,
        params_non_embedding=5, tokens=100, tokens_requested=100, flops=6000.0, flops_convention="6N",
        flops_by_convention={"6N": 6000.0}, final_val_loss=3.0, val_curve=[[100, 3.0]], hparams={},
        hparams_source={}, data={}, seed=0, wall_time_s=1.0, hardware={}, versions={},
        started_at="2026-11-23T00:00:00+00:00",
    )
    rec.update(overrides)
    return rec


def test_round_trip(tmp_path):
    path = layout.record_path(tmp_path, "r1")
    records.write_record(path, completed())
    assert records.read_record(path)["final_val_loss"] == 3.0
    assert [p.parent.name for p in layout.record_paths(tmp_path)] == ["r1"]


def test_completed_record_missing_a_field_is_rejected(tmp_path):
    with pytest.raises(records.RecordError, match="'final_val_loss' is missing"):
        records.write_record(tmp_path / "record.json", completed(final_val_loss=None))
    assert not (tmp_path / "record.json").exists()


def test_failed_record_needs_only_identity(tmp_path):
    records.write_record(tmp_path / "record.json", {"run_id": "r2", "status": "failed", "error": "boom"})
    with pytest.raises(records.RecordError, match="status 'exploded'"):
        records.write_record(tmp_path / "record.json", {"run_id": "r2", "status": "exploded"})
    assert records.read_record(tmp_path / "record.json")["status"] == "failed"  # the bad write left it intact


def test_wrong_type_and_garbage_are_rejected(tmp_path):
    with pytest.raises(records.RecordError, match="'tokens' should be a JSON integer"):
        records.validate(completed(tokens="many"))
    (tmp_path / "record.json").write_text('{"run_id": "r3", "status": "compl')
    with pytest.raises(records.RecordError, match="unreadable"):
        records.read_record(tmp_path / "record.json")


def test_atomic_write_leaves_no_partial_file_on_error(tmp_path):
    path = tmp_path / "record.json"
    records.write_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        records.write_atomic(path, {"a": object.__new__(type("Unserialisable", (), {"__slots__": ()}))})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["record.json"]


def test_run_id_is_deterministic_and_sensitive():
    a = records.make_run_id({"model": {"d": 64}, "seed": 0}, label="x")
    assert a == records.make_run_id({"seed": 0, "model": {"d": 64}}, label="x")
    assert a != records.make_run_id({"model": {"d": 64}, "seed": 1}, label="x")
    assert a.startswith("x-")


def test_readme_documents_the_schema_as_records_py_defines_it():
    # the README's field table is generated (`scaling-lab schema`); a field added or reworded must reach the manual
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = records.schema_markdown()
    assert table in readme, "README.md's run-record table is stale: paste `scaling-lab schema` over it"


def test_versions_field_names_every_version_a_record_stores():
    from scaling_lab import provenance

    meaning = {name: text for name, _, _, text in records.FIELDS}["versions"]
    stored = provenance.versions()
    assert set(stored) == {"python", *provenance.PACKAGES}
    assert all(name in meaning for name in stored)

