"""Nearest-neighbour search over unit vectors: FAISS when installed, else numpy.

Every backend answers the same question (the ``k`` largest inner products, i.e. cosine
similarities of unit vectors), optionally among a subset of the vectors; a search restricted
to a subset is always exact. ``faiss-flat`` and ``numpy`` are exact and return the same
neighbours; ``faiss-hnsw`` (a graph index for large collections) is approximate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..exceptions import WeightspaceError

BACKENDS = ("auto", "faiss", "numpy")
HNSW_THRESHOLD = 50_000
"""Collections with at least this many vectors get an HNSW index (FAISS only)."""
HNSW_M = 32  # neighbours per node in the HNSW graph
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64


class SearchBackendError(WeightspaceError, ValueError):
    """A search backend is unavailable or was given malformed vectors."""


def faiss_available() -> bool:
    """True when the optional ``faiss`` package (``pip install faiss-cpu``) imports."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise SearchBackendError(
            "the faiss backend needs FAISS: pip install faiss-cpu (or use backend 'numpy')"
        ) from None
    return faiss


class VectorSearch(Protocol):
    """What the index needs from a backend."""

    kind: str

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray) -> None: ...

    def search(
        self, queries: np.ndarray, k: int, subset: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, each ``[q, min(k, candidates)]``, best first; ids are positions
        in insertion order, -1 where an approximate index found fewer neighbours."""
        ...

    def nbytes(self) -> int: ...


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, positions)`` of the ``k`` largest entries per row, largest first.

    Ties are broken by position (also at the k-th place), so results are deterministic.
    """
    n = scores.shape[1]
    k = min(k, n)
    positions = np.empty((len(scores), k), dtype=np.int64)
    for r, row in enumerate(scores):
        if k < n:
            threshold = row[np.argpartition(-row, k - 1)[:k]].min()
            candidates = np.flatnonzero(row >= threshold)  # every tie at the k-th place
        else:
            candidates = np.arange(n)
        order = np.lexsort((candidates, -row[candidates]))[:k]
        positions[r] = candidates[order]
    return np.take_along_axis(scores, positions, axis=1), positions


class NumpySearch:
    """Exact search with one matrix product and ``argpartition``."""

    kind = "numpy"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vectors = np.zeros((0, dim), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._vectors)

    def add(self, vectors: np.ndarray) -> None:
        self._vectors = np.concatenate([self._vectors, vectors])

    def search(
        self, queries: np.ndarray, k: int, subset: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if (subset is not None and len(subset) == 0) or len(self._vectors) == 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        if subset is None:
            scores = queries @ self._vectors.T  # [q, n]
        elif 4 * len(subset) < len(self._vectors):  # few candidates: gather their rows
            scores = queries @ self._vectors[subset].T  # [q, len(subset)]
        else:  # many: scoring every row is cheaper than copying the candidates
            scores = (queries @ self._vectors.T)[:, subset]
        top, positions = _top_k(scores, k)  # [q, k]
        ids = positions if subset is None else subset[positions]
        return top, ids.astype(np.int64)

    def nbytes(self) -> int:
        return int(self._vectors.nbytes)


class FaissSearch:
    """FAISS inner-product search: exact ``IndexFlatIP``, or ``IndexHNSWFlat`` (approximate).

    Args:
        dim: vector width.
        hnsw: use an HNSW graph instead of exhaustive search.
        index: an existing FAISS index to wrap (read from disk).
    """

    def __init__(self, dim: int, hnsw: bool = False, index: Any = None) -> None:
        faiss = _faiss()
        self.dim = dim
        if index is not None:
            self.index = index
        elif hnsw:
            self.index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        else:
            self.index = faiss.IndexFlatIP(dim)
        self.hnsw = isinstance(self.index, faiss.IndexHNSW)
        if self.hnsw:
            self.index.hnsw.efSearch = HNSW_EF_SEARCH
        self.kind = "faiss-hnsw" if self.hnsw else "faiss-flat"

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(
        self, queries: np.ndarray, k: int, subset: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(self) if subset is None else len(subset)
        k = min(k, n)
        if k == 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        if subset is None:
            scores, ids = self.index.search(queries, k)
        else:  # exact among the candidates: the flat vectors, restricted by a selector
            flat = faiss.downcast_index(self.index.storage) if self.hnsw else self.index
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(subset, dtype=np.int64))
            params = faiss.SearchParameters(sel=selector)
            scores, ids = flat.search(queries, k, params=params)
        return scores, ids.astype(np.int64)  # HNSW marks missing results with id -1

    def nbytes(self) -> int:
        return len(self.serialized())

    def serialized(self) -> bytes:
        """The FAISS index as bytes (saved for HNSW graphs, which are slow to rebuild)."""
        return bytes(_faiss().serialize_index(self.index))

    @classmethod
    def read(cls, path: Path, dim: int) -> FaissSearch:
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:
            message = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
            raise SearchBackendError(f"{path}: not a readable FAISS index ({message})") from None
        if index.d != dim:
            raise SearchBackendError(f"{path}: FAISS index of dimension {index.d}, expected {dim}")
        return cls(dim, index=index)


def create_search(
    vectors: np.ndarray, backend: str = "auto", hnsw_threshold: int | None = HNSW_THRESHOLD
) -> VectorSearch:
    """A search structure over ``vectors`` (unit rows, float32).

    Args:
        vectors: ``[n, d]`` unit vectors.
        backend: ``"auto"`` (FAISS when installed, else numpy), ``"faiss"`` or ``"numpy"``.
        hnsw_threshold: with FAISS, build an HNSW graph from this many vectors on (None:
            always exact).

    Raises:
        SearchBackendError: an unknown backend, or ``"faiss"`` without FAISS installed.
    """
    if backend not in BACKENDS:
        raise SearchBackendError(
            f"The 'backend' parameter must be one of {BACKENDS}. Got {backend!r} instead."
        )
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    use_faiss = backend == "faiss" or (backend == "auto" and faiss_available())
    search: VectorSearch
    if use_faiss:
        hnsw = hnsw_threshold is not None and len(vectors) >= hnsw_threshold
        search = FaissSearch(vectors.shape[1], hnsw=hnsw)
    else:
        search = NumpySearch(vectors.shape[1])
    search.add(vectors)
    return search


def normalize(vectors: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32), so inner products are cosine similarities.

    Raises:
        SearchBackendError: a row is zero or not finite.
    """
    z = np.asarray(vectors, dtype=np.float64)
    if z.ndim != 2:
        raise SearchBackendError(f"expected vectors of shape [n, d], got shape {z.shape}")
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        raise SearchBackendError(
            f"{int(bad.sum())} vector(s) are zero or not finite (rows {np.flatnonzero(bad)[:5]}); "
            "they have no direction to compare"
        )
    return (z / norms).astype(np.float32)
