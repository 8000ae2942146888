"""The DATA stage: documents -> de-duplicated train/val split -> tokens cached on disk -> (x, y) batches.

    corpus = prepare_corpus(OmegaConf.to_container(cfg.data, resolve=True))
    dm = TokenDataModule(corpus, block_size, batch_size, tokens, seed, val_tokens)
    record["tokens"], record["data"] = dm.tokens_trained, dm.record_meta
"""

from scaling_lab.data.config import DataConfigError
from scaling_lab.data.prepare import TokenCorpus, prepare_corpus

__all__ = ["DataConfigError", "TokenCorpus", "TokenDataModule", "prepare_corpus"]


def __getattr__(name: str):
    # the data module pulls in Lightning (seconds to import); commands that only plan or check configs skip it
    if name == "TokenDataModule":
        from scaling_lab.data.datamodule import TokenDataModule

        return TokenDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
