"""What embeddings are used for beyond metrics: transfer selection, merging, lineage.

- :mod:`.transfer`: which zoo model to fine-tune for a new task under a small budget.
- :mod:`.merging`: naive, aligned and embedding-space interpolation of two networks.
- :mod:`.lineage`: recovering which models derive from which.

The metrics (retrieval, clustering, property prediction, symmetry robustness) are in
:mod:`weightspace.metrics`.
"""
