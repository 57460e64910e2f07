"""Provider adapters: each reads one provider's files as published and writes the mmsr format.

Importing this package registers every ``data_format`` with ``mmsr_lib.util.registry`` (the
registry imports it on first use): ``csv`` (the generic importer), ``hm``, ``amazon2018``,
``amazon2023`` and ``pixelrec`` (aliases ``bili``, ``kwai``, ``microlens``). All entry functions
share one keyword signature, so a caller can do::

    registry.create("data_format", "hm", src, out, users=200_000, seed=0, image_size=224)

and gets an `ImportReport` back. docs/adapters.md describes each format's files.
"""

from mmsr_lib.data import importer
from mmsr_lib.data.adapters import amazon, hm, pixelrec
from mmsr_lib.data.adapters.amazon import import_amazon2018, import_amazon2023
from mmsr_lib.data.adapters.hm import import_hm
from mmsr_lib.data.adapters.pixelrec import import_pixelrec
from mmsr_lib.data.importer import ImportReport, import_csv

__all__ = [
    "ImportReport",
    "amazon",
    "hm",
    "import_amazon2018",
    "import_amazon2023",
    "import_csv",
    "import_hm",
    "import_pixelrec",
    "importer",
    "pixelrec",
]
