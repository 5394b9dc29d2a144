"""BM25 baseline over the corpus (DESIGN.md section 5, "Baselines").

Lexical retrieval with the maintained `bm25s` library: the corpus is split
into lower-cased words (scikit-learn's pattern, words of two or more
characters), English stopwords are dropped, and documents are scored with
BM25 (Lucene's variant by default). A fact-tracing query is its prompt
followed by its target (`query_text`), so passages naming both the subject
and the object rank first.

Rankings are deterministic: documents with equal scores are ordered by their
position in the corpus, so a rerun, or another process, returns the same ids
in the same order.
"""

from collections.abc import Callable, Sequence
from typing import Protocol

import bm25s
import numpy as np


class _PromptAndTarget(Protocol):
  prompt: str
  target: str


def query_text(query: _PromptAndTarget) -> str:
  """The BM25 query of a fact-tracing query: prompt + target."""
  return query.prompt + query.target


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
  """Indices of the k best scores, ties broken by the lower index.

  Args:
    scores: [n] scores of every document.
    k: How many to keep, at most n.

  Returns:
    [k] int64 indices, best first.
  """
  if k == 0:
    return np.zeros(0, np.int64)
  # Everything scoring at least the k-th best score, so ties at the boundary
  # are decided by index, not by argpartition's arbitrary order.
  threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
  candidates = np.flatnonzero(scores >= threshold)
  # lexsort sorts by its last key first: score descending, then index.
  order = np.lexsort((candidates, -scores[candidates]))
  return candidates[order[:k]]


class Bm25Index:
  """A BM25 index of a corpus, searched with query texts.

  Attributes:
    ids: The corpus ids, in corpus order.
    k1: BM25 term-frequency saturation.
    b: BM25 length normalisation.
    method: The `bm25s` scoring variant ("lucene", "robertson", "atire",
      "bm25l" or "bm25+").
  """

  def __init__(
    self,
    retriever: bm25s.BM25,
    ids: Sequence[str],
    *,
    stopwords: str | Sequence[str] | None,
    stemmer: Callable[[list[str]], list[str]] | None,
  ):
    """Wraps a built retriever; use `Bm25Index.build`."""
    self._retriever = retriever
    self.ids = list(ids)
    self.k1 = retriever.k1
    self.b = retriever.b
    self.method = retriever.method
    self._stopwords = stopwords
    self._stemmer = stemmer

  @classmethod
  def build(
    cls,
    ids: Sequence[str],
    texts: Sequence[str],
    *,
    k1: float = 1.5,
    b: float = 0.75,
    method: str = "lucene",
    stopwords: str | Sequence[str] | None = "en",
    stemmer: Callable[[list[str]], list[str]] | None = None,
  ) -> "Bm25Index":
    """Indexes a corpus.

    Args:
      ids: [n] corpus ids, unique.
      texts: [n] passage texts, in the same order.
      k1: BM25 term-frequency saturation.
      b: BM25 length normalisation.
      method: The `bm25s` scoring variant.
      stopwords: "en" for `bm25s`'s English list, a list of words, or None.
      stemmer: Optional callable mapping a list of words to their stems (e.g.
        PyStemmer's `Stemmer.Stemmer("english").stemWords`), applied to
        corpus and queries alike.

    Returns:
      The index.

    Raises:
      ValueError: If ids and texts differ in length, ids repeat, or the
        corpus is empty.
    """
    ids, texts = list(ids), list(texts)
    if len(ids) != len(texts):
      raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    if not ids:
      raise ValueError("cannot index an empty corpus")
    if len(set(ids)) != len(ids):
      raise ValueError("corpus ids are not unique")
    tokens = bm25s.tokenize(
      texts, stopwords=stopwords, stemmer=stemmer, show_progress=False
    )
    retriever = bm25s.BM25(k1=k1, b=b, method=method, backend="numpy")
    retriever.index(tokens, show_progress=False)
    return cls(retriever, ids, stopwords=stopwords, stemmer=stemmer)

  def __len__(self) -> int:
    return len(self.ids)

  def scores(self, query: str) -> np.ndarray:
    """BM25 score of every document for one query text.

    Returns:
      [n] float32 scores in corpus order; all 0 if no query word is in the
      corpus.
    """
    words = bm25s.tokenize(
      [query],
      stopwords=self._stopwords,
      stemmer=self._stemmer,
      return_ids=False,
      show_progress=False,
    )[0]
    term_ids = self._retriever.get_tokens_ids(words)
    if not term_ids:
      return np.zeros(len(self.ids), np.float32)
    return np.asarray(self._retriever.get_scores_from_ids(term_ids), np.float32)

  def search(
    self, query_texts: Sequence[str], *, k: int
  ) -> tuple[list[list[str]], np.ndarray]:
    """The k best passages of each query.

    Args:
      query_texts: [q] query texts (see `query_text` for fact queries).
      k: Passages per query; more than the corpus size returns all of it.

    Returns:
      (ids [q][k'], scores [q, k'] float32), best first, with k' = min(k, n).
      Equal scores are ordered by corpus position.

    Raises:
      ValueError: If k is negative.
    """
    if k < 0:
      raise ValueError(f"k must be >= 0, got {k}")
    k = min(k, len(self.ids))
    ranked_ids, ranked_scores = [], np.zeros((len(query_texts), k), np.float32)
    for row, text in enumerate(query_texts):
      scores = self.scores(text)  # [n]
      best = _top_k(scores, k)  # [k]
      ranked_ids.append([self.ids[i] for i in best])
      ranked_scores[row] = scores[best]
    return ranked_ids, ranked_scores

  def search_queries(
    self, queries: Sequence[_PromptAndTarget], *, k: int
  ) -> tuple[list[list[str]], np.ndarray]:
    """`search` with fact-tracing queries (prompt + target each)."""
    return self.search([query_text(q) for q in queries], k=k)
