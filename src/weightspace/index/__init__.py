"""Search a model collection by its weights: an embedding index with metadata filters.

Example:
    >>> from weightspace.index import EmbeddingIndex, build_index
    >>> index = build_index("runs/gnn", "zoos/standard", "indexes/std")  # doctest: +SKIP
    >>> index = EmbeddingIndex.open("indexes/std")                        # doctest: +SKIP
    >>> index.search("model.pt2", k=5, where="dataset = 'digits'")       # doctest: +SKIP
"""

from ._backends import (
    BACKENDS,
    HNSW_THRESHOLD,
    FaissSearch,
    NumpySearch,
    SearchBackendError,
    VectorSearch,
    create_search,
    faiss_available,
    normalize,
)
from ._embed import EXECUTORS, ExecutorError, embed_zoo
from ._index import (
    RESULT_COLUMNS,
    EmbeddingIndex,
    IndexFileError,
    IndexMismatchError,
    IndexNotFoundError,
    add_to_index,
    build_index,
)
from ._where import WhereError, parse_where, where_mask

__all__ = [
    "BACKENDS",
    "EXECUTORS",
    "HNSW_THRESHOLD",
    "RESULT_COLUMNS",
    "EmbeddingIndex",
    "ExecutorError",
    "FaissSearch",
    "IndexFileError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "NumpySearch",
    "SearchBackendError",
    "VectorSearch",
    "WhereError",
    "add_to_index",
    "build_index",
    "create_search",
    "embed_zoo",
    "faiss_available",
    "normalize",
    "parse_where",
    "where_mask",
]
