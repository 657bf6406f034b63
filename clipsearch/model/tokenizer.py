"""CLIP's byte-pair tokenizer without torch: the same token ids as open_clip's `SimpleTokenizer`.

A text query on an exported model must not pay for importing torch (open_clip's tokenizer
module imports it at the top), so the exported backends tokenise here. The merges are
open_clip's own vocabulary file, found through the import system without running open_clip;
cleaning (ftfy, HTML unescape, whitespace, lower case) and the splitting pattern are open_clip's.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import itertools
from collections.abc import Sequence
from pathlib import Path

import ftfy
import numpy as np
import regex

from ..errors import ClipsearchError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # the merges open_clip reads (after the file's header line)
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
DEFAULT_CONTEXT_LENGTH = 77


def vocab_path() -> Path:
    """open_clip's merges file, located without importing open_clip (which imports torch)."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / VOCAB_FILE
        if path.is_file():
            return path
    raise ClipsearchError(f"open_clip's tokenizer vocabulary ({VOCAB_FILE}) was not found; reinstall open_clip_torch")


def _bytes_to_unicode() -> dict[int, str]:
    # Printable bytes map to themselves, the rest to code points from 256 on (CLIP's reversible table).
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def _clean(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    """Texts -> (N, context_length) int64 token ids: start token, BPE ids, end token, zero padding;
    a text too long is cut to `context_length` and ends with the end token."""

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH):
        self.context_length = context_length
        self.byte_encoder = _bytes_to_unicode()
        self.encoder, self.bpe_ranks = _vocabulary()
        self.sot_token_id, self.eot_token_id = (self.encoder[t] for t in SPECIAL_TOKENS)
        self.cache: dict[str, str] = {t: t for t in SPECIAL_TOKENS}
        self.pattern = regex.compile(
            "|".join(SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )

    def bpe(self, token: str) -> str:
        """One pre-token (as byte-mapped characters) -> its BPE pieces joined by spaces."""
        if token in self.cache:
            return self.cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == bigram:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for token in self.pattern.findall(_clean(text)):
            mapped = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(mapped).split(" "))
        return ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        result = np.zeros((len(texts), self.context_length), np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot_token_id
            result[row, : len(tokens)] = tokens
        return result


@functools.cache
def _vocabulary() -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    with gzip.open(vocab_path()) as file:
        lines = file.read().decode("utf-8").split("\n")[1 : N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = [*byte_chars, *(c + "</w>" for c in byte_chars), *("".join(m) for m in merges), *SPECIAL_TOKENS]
    return {piece: i for i, piece in enumerate(vocab)}, {m: i for i, m in enumerate(merges)}
