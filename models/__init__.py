"""BerundaNet-late and the auxiliary tasks: pure torch, no file I/O, no QGIS."""

IGNORE_INDEX = -100  # label index that cross-entropy skips (nodata / unlabeled pixels)
