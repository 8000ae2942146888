"""Tokenizers: byte-level (fixed, 257 ids) or a byte-level BPE trained on the train split.

Both turn a list of documents into one flat id array with an end-of-document id after every document.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOD = "<|endoftext|>"
ENCODE_CHUNK = 1024  # documents per encode_batch call: parallel in Rust, bounded memory


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


class ByteTokenizer:
    kind = "byte"
    vocab_size = 257
    eod_id = 256

    def encode_documents(self, docs: Sequence[str]) -> np.ndarray:
        encoded = [doc.encode("utf-8") for doc in docs]
        flat = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(token_dtype(self.vocab_size))
        return np.insert(flat, np.cumsum([len(b) for b in encoded]), self.eod_id)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        ids = np.asarray(ids)
        return ids[ids != self.eod_id].astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class BpeTokenizer:
    kind = "bpe"

    def __init__(self, tokenizer: Tokenizer):
        # the end-of-document marker's text inside a document (tokenizer code, docs) is text, not the marker: only
        # encode_documents places eod_id, and the document decodes back exactly
        tokenizer.encode_special_tokens = True
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.eod_id = tokenizer.token_to_id(EOD)

    @classmethod
    def train(cls, docs: Sequence[str], vocab_size: int) -> BpeTokenizer:
        tokenizer = Tokenizer(models.BPE())
        # no prefix space, so that decode(encode(text)) gives text back exactly
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[EOD], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable, even unseen ones
        )
        tokenizer.train_from_iterator(docs, trainer, length=len(docs))
        return cls(tokenizer)

    @classmethod
    def from_json(cls, text: str) -> BpeTokenizer:
        return cls(Tokenizer.from_str(text))

    def encode_documents(self, docs: Sequence[str]) -> np.ndarray:
        dtype = token_dtype(self.vocab_size)
        parts = []
        for start in range(0, len(docs), ENCODE_CHUNK):
            for encoding in self._tokenizer.encode_batch_fast(list(docs[start : start + ENCODE_CHUNK])):
                parts += [np.asarray(encoding.ids, dtype=dtype), np.array([self.eod_id], dtype=dtype)]
        return np.concatenate(parts)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._tokenizer.decode([int(i) for i in ids])

    def to_json(self) -> str:
        return self._tokenizer.to_str()
