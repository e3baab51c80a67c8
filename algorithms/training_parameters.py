"""Training parameters shared by berunda:train and berunda:compare (same ids, same meaning,
same defaults), declared from engine/parameters.py, and the TrainingConfig built from them."""
from __future__ import annotations

import dataclasses

from qgis.core import QgsProcessingException

from ..engine.config import TrainingConfig
from ..engine.errors import BerundaError
from ..engine.parameters import (DEVICES, PAPER_LAMBDA, TASK_IDS, help_text,  # noqa: F401
                                 parse_band_list, parse_lambda, training_params)
from .parameter_factory import add_parameters, values_of

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainingConfig)}


def training_help(single_task: bool = True) -> str:
    return help_text(training_params(single_task)) + "<br>"


def add_training_parameters(alg, single_task: bool = True) -> None:
    add_parameters(alg, training_params(single_task))


def training_config(alg, parameters, context, feedback, task: str = None, lam=None,
                    extra=()) -> TrainingConfig:
    """A TrainingConfig from the shared parameters (and ``extra`` ones that are config
    fields).  Polygon labels are passed as a vector file the engine rasterises."""
    params = training_params(single_task=task is None) + list(extra)
    values = values_of(alg, params, parameters, context)
    polygons = alg.parameterAsVectorLayer(parameters, "LABEL_POLYGONS", context)
    if values["LABELS"] and polygons is not None:
        raise QgsProcessingException("Give either LABELS (rasters) or LABEL_POLYGONS, not both.")
    fields = {}
    if polygons is not None:
        if not values["CLASS_FIELD"]:
            raise QgsProcessingException("LABEL_POLYGONS needs CLASS_FIELD: the integer field "
                                         "holding each polygon's class value.")
        path, layer_name = alg.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, "LABEL_POLYGONS", context, ["gpkg", "shp"], "gpkg", feedback)
        fields.update(label_polygons=path, label_layer=layer_name or None,
                      class_field=values["CLASS_FIELD"])
    elif not values["LABELS"]:
        raise QgsProcessingException("No labels: give LABELS (one label raster per image) or "
                                     "LABEL_POLYGONS with CLASS_FIELD.")
    for p in params:
        if p.key in _CONFIG_FIELDS and p.id in values:
            fields[p.key] = values[p.id]
    fields["encoder"] = (fields.get("encoder") or "").strip() or "resnet34"
    if "lam" in fields:
        try:
            fields["lam"] = parse_lambda(fields["lam"])
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None
    try:
        fields["bands"] = parse_band_list(fields.get("bands"))
    except BerundaError as exc:
        raise QgsProcessingException(str(exc)) from None
    if task is not None:
        fields.update(aux_task=task, lam=lam)
    return TrainingConfig(**fields)
