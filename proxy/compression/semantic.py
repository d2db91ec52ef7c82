"""Sentence vectors from WordLlama's static token embeddings, shipped inside its wheel: no download, no torch.

WordLlama (l2_supercat, 256 dimensions) is a table of token vectors distilled from a large model's
embedding layer; a sentence's vector is the mean of its tokens' vectors, normalised. Recall uses it
beside BM25 because many answers share no word with their question ("activities" vs "camping").

The table and tokenizer are read straight from the installed package's files. WordLlama's own
`load()` looks for the tokenizer in a folder the wheel doesn't have and then fetches it from a model
hub, and importing the package calls `logging.basicConfig`, which would add a stderr handler to the
root logger; `find_spec` locates the files without importing it.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog
from safetensors import safe_open
from tokenizers import Tokenizer

log = structlog.get_logger(__name__)

TOKENIZER_FILE = Path("tokenizers") / "l2_supercat_tokenizer_config.json"
WEIGHTS_FILE = Path("weights") / "l2_supercat_256.safetensors"
TENSOR = "embedding.weight"

Vectors = npt.NDArray[np.float32]
HalfVectors = npt.NDArray[np.float16]


class TokenEmbedding:
    """Unit-length sentence vectors: the mean of the text's token vectors."""

    def __init__(self, folder: Path) -> None:
        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        with safe_open(str(folder / WEIGHTS_FILE), framework="numpy") as weights:
            self._table: Vectors = np.ascontiguousarray(weights.get_tensor(TENSOR), dtype=np.float32)

    @property
    def dimensions(self) -> int:
        return int(self._table.shape[1])

    def vectors(self, texts: list[str]) -> Vectors:
        """One row per text; a text with no tokens gets a zero row, similar to nothing."""
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        last = len(self._table) - 1
        for row, text in enumerate(texts):
            # Text by text: np.add.reduceat over one gathered array was ten times slower, and
            # encode_batch runs a Rust thread pool that makes tokenizers warn in forked children.
            ids = np.asarray(self._tokenizer.encode(text, add_special_tokens=False).ids).clip(0, last)
            if len(ids):
                total = self._table[ids].sum(axis=0)
                norm = float(np.linalg.norm(total))
                out[row] = total / norm if norm > 0 else total
        return out


def load(folder: Path) -> TokenEmbedding | None:
    """The model in an installed wordllama package folder, or None (logged) when it can't be read."""
    if not (folder / TOKENIZER_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        log.warning("semantic_recall_unavailable", error="wordllama files not found", folder=str(folder))
        return None
    try:
        return TokenEmbedding(folder)
    except Exception as error:  # a damaged install must not stop the proxy
        log.warning("semantic_recall_unavailable", error=type(error).__name__, folder=str(folder))
        return None


@functools.cache
def embedding() -> TokenEmbedding | None:
    """The process-wide model (about 0.3 s and 32 MB to load), or None when it can't be loaded.

    Without it recall ranks by BM25 alone: worse, but compression still works.
    """
    spec = importlib.util.find_spec("wordllama")
    folders = spec.submodule_search_locations if spec else None
    if not folders:
        log.warning("semantic_recall_unavailable", error="wordllama is not installed")
        return None
    return load(Path(next(iter(folders))))


def warm_up() -> None:
    """Load the model now, so the first compressed request does not wait for it."""
    embedding()
