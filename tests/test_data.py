"""DATA stage: real files, the real `datasets` and `tokenizers` libraries, token caches in tmp dirs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from scaling_lab.data import DataConfigError, TokenDataModule, cache, prepare_corpus
from scaling_lab.data.corpus import in_validation, split_documents
from scaling_lab.data.tokenizer import ByteTokenizer
from scaling_lab.train.checkpoint import ResumableBatches

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


@pytest.fixture(autouse=True)
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def src(tmp_path) -> Path:
    """A small stand-in for the stdlib: 40 distinct modules, a repeat, an empty file, a site-packages dir."""
    root = tmp_path / "lib"
    for i in range(40):
        module = root / f"pkg{i % 4}" / f"mod{i}.py"
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text("".join(f"def f{i}_{j}(x):\n    return x * {i} + {j}  # é\n" for j in range(40)))
    (root / "pkg0" / "copy_of_mod1.py").write_text((root / "pkg1" / "mod1.py").read_text())
    (root / "pkg0" / "__init__.py").write_text("")
    (root / "site-packages" / "thirdparty").mkdir(parents=True)
    (root / "site-packages" / "thirdparty" / "x.py").write_text("THIRD_PARTY = True\n")
    return root


def data_cfg(name: str = "stdlib", **overrides) -> dict:
    """The conf/data/<name>.yaml group file with overrides, resolved as Hydra hands it to prepare_corpus."""
    cfg = OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"), overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def lib(src: Path, **overrides) -> dict:
    """The stdlib source pointed at the small fixture tree; 0.2 so that a few of its 40 files are held out."""
    return data_cfg(**{"stdlib_root": str(src), "val_fraction": 0.2, **overrides})


def decoded(tokens: np.ndarray) -> list[str]:
    eod = ByteTokenizer.eod_id
    ends = np.flatnonzero(tokens == eod)
    return [ByteTokenizer().decode(doc) for doc in np.split(np.asarray(tokens), ends[:-1] + 1)]


def test_split_is_a_deterministic_function_of_the_document_key():
    docs = [(f"a/m{i}.py", f"text {i}") for i in range(2000)]
    full = split_documents(docs, 0.1, "t")
    assert full == split_documents(docs, 0.1, "t")
    assert not set(full.train) & set(full.val)
    assert 150 < len(full.val) < 250
    # dropping documents never moves the others between splits
    half = split_documents(docs[::2], 0.1, "t")
    assert set(half.val) == {t for k, t in docs[::2] if in_validation(k, 0.1)}
    assert set(half.val) == set(full.val) & set(half.val + half.train)


def test_stdlib_source_dedupes_skips_empty_and_site_packages(src):
    corpus = prepare_corpus(lib(src))
    meta = corpus.meta
    assert (meta["n_documents"], meta["n_duplicates"]) == (40, 1)
    assert meta["n_train_documents"] + meta["n_val_documents"] == 40 and meta["n_val_documents"] > 0
    train_docs, val_docs = decoded(corpus.train), decoded(corpus.val)
    assert len(train_docs) == meta["n_train_documents"] and not set(train_docs) & set(val_docs)
    expected = {p.read_text() for p in src.glob("pkg*/mod*.py")}
    assert set(train_docs) | set(val_docs) == expected
    # the split follows the relative path, as documented
    keys = [p.relative_to(src).as_posix() for p in src.glob("pkg*/mod*.py")]
    assert set(val_docs) == {(src / k).read_text() for k in keys if in_validation(k, 0.2)}


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    docs = ["def f():\n    return 'ü€😀'\n", "x = 1"]
    ids = tok.encode_documents(docs)
    assert ids.dtype == np.uint16 and ids.max() <= 256
    assert list(np.flatnonzero(ids == 256)) == [len(docs[0].encode()), ids.size - 1]
    assert decoded(ids) == docs


def test_bpe_is_selectable_trained_and_round_trips(src):
    byte = prepare_corpus(lib(src))
    bpe = prepare_corpus(lib(src, tokenizer="bpe", bpe_vocab_size=400))
    assert bpe.meta["tokenizer"] == "bpe" and 300 < bpe.vocab_size <= 400  # fewer when the corpus runs out of pairs
    assert bpe.meta["corpus_fingerprint"] == byte.meta["corpus_fingerprint"] != bpe.meta["fingerprint"]
    assert bpe.meta["cache_path"] != byte.meta["cache_path"]
    assert bpe.meta["train_tokens"] < byte.meta["train_tokens"] / 2  # merges learned from the train split
    assert int(bpe.train.max()) < bpe.vocab_size
    tok = bpe.tokenizer()
    first_doc = bpe.train[: int(np.argmax(np.asarray(bpe.train) == bpe.meta["eod_id"]))]
    assert tok.decode(first_doc) == decoded(byte.train)[0]
    with pytest.raises(DataConfigError, match="data.bpe_vocab_size"):
        prepare_corpus(lib(src, tokenizer="bpe", bpe_vocab_size=100))
    # the marker's text inside a document stays text: one end-of-document id per document, an exact round trip
    docs = ["tok = '<|endoftext|>'  # marker\n", "x = 1\n"]
    ids = tok.encode_documents(docs)
    assert list(ids).count(tok.eod_id) == 2 and ids[-1] == tok.eod_id
    assert tok.decode(ids[: int(np.argmax(ids == tok.eod_id))]) == docs[0]


def test_cache_is_reused_and_keyed_by_content(src, cache_env):
    first = prepare_corpus(lib(src))
    meta_file = Path(first.meta["cache_path"]) / "meta.json"
    stamp = meta_file.stat().st_mtime_ns
    again = prepare_corpus(lib(src))
    assert first.built and not again.built and meta_file.stat().st_mtime_ns == stamp
    assert again.meta == first.meta and np.array_equal(again.train, first.train)
    assert isinstance(again.train, np.memmap)
    (src / "pkg3" / "mod3.py").write_text("changed = True\n")
    changed = prepare_corpus(lib(src))
    assert changed.built and changed.meta["fingerprint"] != first.meta["fingerprint"]
    assert not list(cache_env.glob(".*")), "no temporary directories left behind"


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "no_meta", "bad_meta"])
def test_corrupt_cache_is_rebuilt(src, damage):
    good = prepare_corpus(lib(src))
    path = Path(good.meta["cache_path"])
    expected = np.array(good.train)
    if damage == "flip_byte":
        raw = bytearray((path / "train.bin").read_bytes())
        raw[101] ^= 0xFF
        (path / "train.bin").write_bytes(bytes(raw))
    elif damage == "truncate":
        with open(path / "train.bin", "r+b") as f:
            f.truncate(1000)
    elif damage == "no_meta":  # what a build killed before its last write would look like
        (path / "meta.json").unlink()
    else:
        (path / "meta.json").write_text("{not json")
    rebuilt = prepare_corpus(lib(src))
    assert rebuilt.built and np.array_equal(rebuilt.train, expected)
    assert not prepare_corpus(lib(src)).built


def test_a_late_parallel_build_keeps_the_sound_cache_that_runs_may_be_reading(tmp_path):
    # two runs of one sweep start building the same cache; the second finishes after the first is in place
    path = tmp_path / "stdlib-byte-0123"
    first = cache.write(path, {"train.bin": np.arange(10, dtype=np.uint16)}, {"dtype": "uint16", "built_by": 1})
    reading = open(path / "train.bin", "rb")  # a run already training on the first copy
    inode = os.stat(path / "train.bin").st_ino
    late = cache.write(path, {"train.bin": np.arange(10, dtype=np.uint16)}, {"dtype": "uint16", "built_by": 2})
    assert late == first and late["built_by"] == 1 and os.stat(path / "train.bin").st_ino == inode
    assert len(reading.read()) == 20 and not [p for p in tmp_path.iterdir() if p != path], "no temporary dirs left"
    reading.close()
    (path / "train.bin").write_bytes(b"damaged")  # a corrupt copy, by contrast, is replaced
    assert cache.write(path, {"train.bin": np.arange(10, dtype=np.uint16)}, {"dtype": "uint16", "built_by": 3})[
        "built_by"] == 3
    assert cache.read_meta(path)["built_by"] == 3


def test_exact_token_budget_steps_and_epochs(src):
    corpus = prepare_corpus(lib(src))
    dm = TokenDataModule(corpus, block_size=64, batch_size=5, tokens=1000, seed=0, val_tokens=256)
    assert (dm.n_sequences, dm.tokens_trained, dm.steps) == (16, 1024, 4)  # round(1000 / 64) = 16
    assert dm.epochs == pytest.approx(1024 / corpus.meta["train_tokens"])
    batches = list(dm.train_dataloader())
    assert [x.shape[0] for x, _ in batches] == [5, 5, 5, 1] and len(batches) == dm.steps
    for x, y in batches:
        assert x.dtype == y.dtype == torch.int64 and x.shape[1] == y.shape[1] == 64
        assert (x[:, 1:] == y[:, :-1]).all()
    assert TokenDataModule(corpus, 64, 5, tokens=10, seed=0, val_tokens=256).n_sequences == 1
    assert dm.record_meta["epochs"] == dm.epochs and dm.record_meta["fingerprint"] == corpus.meta["fingerprint"]
    assert dm.record_meta["repeated"] is False and dm.repetition_warning is None


def test_repetition_is_flagged_and_more_than_four_epochs_warned(src):
    corpus = prepare_corpus(lib(src))
    every_window = TokenDataModule(corpus, block_size=32, batch_size=4, tokens=1, seed=0, val_tokens=256)
    once = 32 * every_window.n_windows
    flags = {}
    four = 32 * (4 * corpus.meta["train_tokens"] // 32)  # whole sequences, not past 4 epochs
    for tokens in (once, once + 32, four, 5 * corpus.meta["train_tokens"]):
        dm = TokenDataModule(corpus, block_size=32, batch_size=4, tokens=tokens, seed=0, val_tokens=256)
        flags[tokens] = (dm.record_meta["repeated"], dm.repetition_warning)
    assert flags[once] == (False, None)  # every window exactly once
    assert flags[once + 32] == (True, None)  # one window twice
    assert flags[four] == (True, None)
    repeated, warning = flags[5 * corpus.meta["train_tokens"]]
    assert repeated and "5.0 epochs over the corpus (> 4" in warning and "Muennighoff" in warning


@pytest.fixture
def site(tmp_path, src) -> Path:
    """Installed packages beside the fixture stdlib: a package, a copy of a stdlib module, a stdlib-like name."""
    root = tmp_path / "venv-site-packages"
    (root / "numpyish").mkdir(parents=True)
    for i in range(20):
        (root / "numpyish" / f"part{i}.py").write_text(f"ARRAY_{i} = [{', '.join(map(str, range(i * 7)))}]\n")
    (root / "vendored_mod1.py").write_text((src / "pkg1" / "mod1.py").read_text())
    (root / "pkg0").mkdir()
    (root / "pkg0" / "mod0.py").write_text("SHADOWS_A_STDLIB_PATH = 1\n")
    # pip's finder for an editable install names the checkout's path: not code, and no part of the corpus
    (root / "__editable___numpyish_finder.py").write_text(f"MAPPING = {{'numpyish': '{tmp_path}'}}\n")
    return root


def test_python_source_adds_installed_packages_with_stable_keys(src, site, tmp_path):
    stdlib = prepare_corpus(lib(src))
    python = prepare_corpus(data_cfg("python", stdlib_root=str(src), site_dirs=[str(site)], val_fraction=0.2))
    meta = python.meta
    assert meta["source"].startswith("python:") and str(site) in meta["source"]
    assert meta["n_documents"] == stdlib.meta["n_documents"] + 21  # the vendored copy is a duplicate
    assert meta["n_duplicates"] == stdlib.meta["n_duplicates"] + 1
    assert Path(meta["cache_path"]).name.startswith("python-byte-")
    # the stdlib files split exactly as in the stdlib source; a package file by site-packages/<its path>
    assert set(decoded(stdlib.val)) <= set(decoded(python.val))
    assert set(decoded(stdlib.train)) <= set(decoded(python.train))
    assert not any("MAPPING" in doc for doc in decoded(python.train) + decoded(python.val))
    for path in site.rglob("[!_]*.py"):
        key = "site-packages/" + path.relative_to(site).as_posix()
        text = path.read_text()
        if text not in decoded(stdlib.train) + decoded(stdlib.val):
            assert (text in decoded(python.val)) == in_validation(key, 0.2)
    # another package directory, or the same one elsewhere, moves nobody between splits
    elsewhere = tmp_path / "other-machine" / "dist-packages"
    elsewhere.mkdir(parents=True)
    (elsewhere / "extra.py").write_text("MORE = 1\n")
    for path in site.rglob("*.py"):
        (elsewhere / path.relative_to(site)).parent.mkdir(parents=True, exist_ok=True)
        (elsewhere / path.relative_to(site)).write_text(path.read_text())
    moved = prepare_corpus(data_cfg("python", stdlib_root=str(src), site_dirs=[str(elsewhere)], val_fraction=0.2))
    assert set(decoded(python.val)) <= set(decoded(moved.val))
    assert set(decoded(python.train)) <= set(decoded(moved.train))


def test_python_source_reads_this_interpreters_package_directories():
    from scaling_lab.data.corpus import site_packages

    dirs = site_packages()
    assert Path(np.__file__).resolve().parents[1] in {d.resolve() for d in dirs}
    assert len({d.resolve() for d in dirs}) == len(dirs)
    with pytest.raises(DataConfigError, match="data.site_dirs: '/no/such/dir' is not a directory"):
        prepare_corpus(data_cfg("python", site_dirs=["/no/such/dir"]))


def test_multi_epoch_budget_visits_every_window_once_per_epoch(src):
    corpus = prepare_corpus(lib(src))
    budget = 3 * corpus.meta["train_tokens"]
    dm = TokenDataModule(corpus, block_size=32, batch_size=64, tokens=budget, seed=1, val_tokens=256)
    n = dm.n_windows
    assert dm.epochs == pytest.approx(3, rel=1e-3)
    order = dm.order(np.arange(dm.n_sequences))  # 3 full epochs and a few more
    for epoch in range(3):
        assert sorted(order[epoch * n : (epoch + 1) * n]) == list(range(n))
    assert not np.array_equal(order[:n], order[n : 2 * n])
    first_rows = np.concatenate([x.numpy() for x, _ in dm.train_dataloader()])
    starts = order * 32
    assert np.array_equal(first_rows, np.asarray(corpus.train)[starts[:, None] + np.arange(32)])


def test_data_order_is_deterministic_and_resumable(src):
    corpus = prepare_corpus(lib(src))

    def rows(seed, next_batch=0):
        dm = TokenDataModule(corpus, 32, 7, tokens=32 * 500, seed=seed, val_tokens=256)
        batches = ResumableBatches(dm.train_dataloader().dataset)
        batches.load_state_dict({"next_batch": next_batch})  # what a resumed run's checkpoint restores
        return np.concatenate([x.numpy() for x, _ in batches])

    full = rows(seed=3)
    assert len(full) == 500 and np.array_equal(full, rows(seed=3))
    assert not np.array_equal(full, rows(seed=4))
    for b in (1, 17, 71):  # early, middle and the last (partial) batch
        assert np.array_equal(rows(seed=3, next_batch=b), full[7 * b:])


def test_validation_set_is_fixed_across_seeds_and_budgets(src):
    corpus = prepare_corpus(lib(src))

    def val(seed, tokens):
        dm = TokenDataModule(corpus, 32, 4, tokens=tokens, seed=seed, val_tokens=200)
        return dm, [(x.numpy(), y.numpy()) for x, y in dm.val_dataloader()]

    dm, reference = val(0, 10_000)
    assert dm.val_tokens_used == 192 and sum(len(x) for x, _ in reference) == 6
    # 6 windows of 32 + 1 tokens evenly spread over the whole split, not its first 192 tokens
    total = (len(corpus.val) - 1) // 32
    starts = [i * total // 6 * 32 for i in range(6)]
    expected = np.stack([np.asarray(corpus.val[s:s + 32]) for s in starts])
    assert np.array_equal(np.concatenate([x for x, _ in reference]), expected)
    assert starts[-1] > len(corpus.val) * 0.8  # the last window lies near the end of the split
    for seed, tokens in ((1, 10_000), (7, 999)):
        _, other = val(seed, tokens)
        assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(reference, other))


def test_hf_local_json_and_text_files(tmp_path):
    rows = [{"text": f"record {i}: " + "lorem ipsum " * 20, "id": i} for i in range(60)]
    rows.append(dict(rows[0]))  # a repeat, dropped
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = prepare_corpus(data_cfg("hf", path="json", data_files=str(jsonl), val_fraction=0.2))
    assert corpus.meta["n_documents"] == 60 and corpus.meta["n_duplicates"] == 1
    assert corpus.meta["source"].startswith("hf:json")
    assert set(decoded(corpus.train)) | set(decoded(corpus.val)) == {r["text"] for r in rows}
    capped = prepare_corpus(data_cfg("hf", path="json", data_files=str(jsonl), max_docs=20, val_fraction=0.2))
    assert capped.meta["n_documents"] == 20

    for i in range(8):
        (tmp_path / f"book{i}.txt").write_text(f"chapter {i}\n" + "a line of prose\n" * 30)
    by_line = prepare_corpus(data_cfg("hf", path="text", data_files=str(tmp_path / "*.txt"), val_fraction=0.4))
    by_file = prepare_corpus(data_cfg("hf", path="text", data_files=str(tmp_path / "*.txt"), sample_by="document",
                                      val_fraction=0.4))
    assert by_line.meta["n_documents"] == 9  # 8 headings + the repeated prose line
    assert by_file.meta["n_documents"] == 8
    dm = TokenDataModule(by_file, 16, 2, tokens=160, seed=0, val_tokens=64)
    assert len(list(dm.train_dataloader())) == dm.steps == 5


def test_hydra_overrides_select_the_hf_group(tmp_path):
    from hydra import compose, initialize_config_dir

    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text("".join(json.dumps({"body": f"document number {i} " * 10}) + "\n" for i in range(30)))
    with initialize_config_dir(config_dir=str(CONF.parent), version_base=None):
        cfg = compose(overrides=["+data=hf", "data.path=json", f"data.data_files={jsonl}", "data.text_field=body"])
        default = compose(overrides=["+data=stdlib"])
    assert default.data.source == "stdlib" and default.data.cache_dir == os.environ["SCALING_LAB_CACHE"]
    corpus = prepare_corpus(OmegaConf.to_container(cfg.data, resolve=True))
    assert corpus.meta["n_documents"] == 30
    assert Path(corpus.meta["cache_path"]).parent == Path(os.environ["SCALING_LAB_CACHE"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(source="foo"), "data.source='foo' is not one of stdlib, python, hf"),
        (dict(val_fraction=1.5), r"data.val_fraction must be a number in \(0, 1\)"),
        (dict(tokenizer="wordpiece"), "data.tokenizer='wordpiece' is not one of byte, bpe"),
        (dict(stdlib_root="/no/such/dir"), "data.stdlib_root='/no/such/dir' is not a directory"),
        (dict(max_docs=0), "data.max_docs must be an integer >= 1 or null"),
        (dict(max_docs=1), "data.val_fraction=0.2 leaves the"),
    ],
)
def test_config_errors_name_the_key(src, overrides, message):
    with pytest.raises(DataConfigError, match=message):
        prepare_corpus(lib(src, **overrides))


def test_hf_config_errors_name_the_key(tmp_path):
    with pytest.raises(DataConfigError, match=r"data.data_files: /no/such.jsonl does not exist"):
        prepare_corpus(data_cfg("hf", path="json", data_files="/no/such.jsonl"))
    with pytest.raises(DataConfigError, match="data.path is required"):
        prepare_corpus(data_cfg("hf"))
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(json.dumps({"body": "hello"}) + "\n")
    with pytest.raises(DataConfigError, match="data.text_field='text'"):
        prepare_corpus(data_cfg("hf", path="json", data_files=str(jsonl)))
    with pytest.raises(DataConfigError, match="data.colour is not a data config key"):
        prepare_corpus({**data_cfg("hf", path="json", data_files=str(jsonl)), "colour": "red"})


def test_corpus_smaller_than_one_window_is_an_error(src):
    corpus = prepare_corpus(lib(src))
    with pytest.raises(DataConfigError, match="train split has .* fewer than one window of model.block_size"):
        TokenDataModule(corpus, block_size=len(corpus.train), batch_size=1, tokens=10, seed=0, val_tokens=10**9)
    with pytest.raises(DataConfigError, match="validation split has"):
        TokenDataModule(corpus, block_size=len(corpus.val), batch_size=1, tokens=10, seed=0, val_tokens=10**9)
    with pytest.raises(DataConfigError, match="data.val_tokens must be an integer >= 64"):
        TokenDataModule(corpus, block_size=64, batch_size=1, tokens=10, seed=0, val_tokens=10)


@pytest.mark.slow
def test_real_stdlib_cache_builds_fast_and_loads_instantly(capsys):
    cfg = data_cfg()
    start = time.perf_counter()
    built = prepare_corpus(cfg)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    loaded = prepare_corpus(cfg)
    load_s = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nstdlib byte cache: {built.meta['train_tokens'] + built.meta['val_tokens']:,} tokens, "
              f"{built.meta['n_documents']} documents, built in {build_s:.2f} s, loaded in {load_s:.2f} s")
    assert built.built and not loaded.built and built.vocab_size == 257
    assert built.meta["train_tokens"] > 10_000_000 and built.meta["n_duplicates"] > 0
    assert build_s < 60 and load_s < 5
