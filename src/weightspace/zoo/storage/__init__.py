"""The on-disk model zoo: a SQLite catalog plus one self-describing file per model.

A zoo is a directory::

    root/
        catalog.sqlite               one row per model, columns CATALOG_COLUMNS
        models/<id>.safetensors      one file per model
        models/<id>.pt2              or, for an imported torch.export program, the program
        models/<id>.record.json      beside a program: its catalog row
        .lock                        taken by the one writer allowed at a time

One module per job:

- :mod:`.modelfile`: the self-describing model-file format (:func:`save_model_file`,
  :func:`load_model_file`, :func:`read_spec`, :data:`FORMAT`, the metadata keys) and the
  loading of stored torch.export programs.
- :mod:`.catalog`: the catalog's columns and schema, its SQLite connections, the checks
  of catalog records, and the catalog DataFrame.
- :mod:`.writer`: :class:`ZooWriter` (crash-safe batches, :meth:`~ZooWriter.repair`) and
  :func:`rebuild_catalog`, which rebuilds a lost catalog from the model files.
- :mod:`.reader`: :class:`Zoo`, read access with a cached catalog.
- :mod:`.errors`: the zoo's errors and :func:`shorten_list` for their messages.

See :mod:`.writer` for the crash-safety guarantees and :mod:`.modelfile` for the checks made
before a file is loaded.
"""

from __future__ import annotations

from .catalog import CATALOG_COLUMNS, CATALOG_FILE, MODELS_DIR
from .errors import UnknownModelError, ZooError, ZooLockedError, ZooNotFoundError, shorten_list
from .modelfile import (
    EXPORTED_FAMILY,
    EXPORTED_SPEC,
    FORMAT,
    load_model_file,
    read_spec,
    save_model_file,
)
from .reader import Zoo
from .writer import RebuildReport, ZooWriter, rebuild_catalog

__all__ = [
    "CATALOG_COLUMNS",
    "CATALOG_FILE",
    "EXPORTED_FAMILY",
    "EXPORTED_SPEC",
    "FORMAT",
    "MODELS_DIR",
    "RebuildReport",
    "UnknownModelError",
    "Zoo",
    "ZooError",
    "ZooLockedError",
    "ZooNotFoundError",
    "ZooWriter",
    "load_model_file",
    "read_spec",
    "rebuild_catalog",
    "save_model_file",
    "shorten_list",
]
