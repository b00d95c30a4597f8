"""Model zoos: data sets, architecture families, training, and the on-disk zoo.

A zoo is a folder of trained networks with a catalog of what each one is and how it was
trained (see :mod:`.storage` for the layout). The submodules, one job each:

- :mod:`.families`: the architecture families (MLP, VGG, ResNet, ...) and
  :func:`build_model`, which builds a network from its JSON spec.
- :mod:`.datasets`: the data sets the zoo's networks are trained on (:func:`load_dataset`).
- :mod:`.training`: the batched training engine, which trains many runs of one
  architecture at once.
- :mod:`.presets`: named build plans (:data:`PRESETS`, :func:`load_preset`) and preset files.
- :mod:`.build`: :func:`build_zoo` plans the runs of a preset, trains them and stores
  every checkpoint (``weightspace zoo build``).
- :mod:`.importer`: :func:`import_checkpoints` brings folders of checkpoints from elsewhere
  into a zoo (``weightspace zoo import``).
- :mod:`.storage`: the on-disk zoo: the model-file format, the SQLite catalog, the
  crash-safe :class:`ZooWriter` and the reader :class:`Zoo`.

Example:
    >>> from weightspace.zoo import Zoo  # doctest: +SKIP
    >>> zoo = Zoo.open("zoo")  # doctest: +SKIP
    >>> model = zoo.load(zoo.ids()[0])  # doctest: +SKIP
"""

from __future__ import annotations

from .build import BuildReport, build_zoo
from .datasets import DATASETS, TaskData, load_dataset
from .families import FAMILIES, ZooModel, build_model
from .importer import ImportReport, import_checkpoints
from .presets import PRESETS, PresetError, load_preset
from .storage import (
    CATALOG_COLUMNS,
    CATALOG_FILE,
    EXPORTED_FAMILY,
    EXPORTED_SPEC,
    MODELS_DIR,
    RebuildReport,
    UnknownModelError,
    Zoo,
    ZooError,
    ZooLockedError,
    ZooNotFoundError,
    ZooWriter,
    load_model_file,
    read_spec,
    rebuild_catalog,
    save_model_file,
)

__all__ = [
    "CATALOG_COLUMNS",
    "CATALOG_FILE",
    "DATASETS",
    "EXPORTED_FAMILY",
    "EXPORTED_SPEC",
    "FAMILIES",
    "MODELS_DIR",
    "PRESETS",
    "BuildReport",
    "ImportReport",
    "PresetError",
    "RebuildReport",
    "TaskData",
    "UnknownModelError",
    "Zoo",
    "ZooError",
    "ZooLockedError",
    "ZooModel",
    "ZooNotFoundError",
    "ZooWriter",
    "build_model",
    "build_zoo",
    "import_checkpoints",
    "load_dataset",
    "load_model_file",
    "load_preset",
    "read_spec",
    "rebuild_catalog",
    "save_model_file",
]
