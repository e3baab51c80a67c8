"""QGIS parameters from the engine's parameter descriptions (engine/parameters.py), and
their values read back as plain Python values.  The command line builds its options from
the same descriptions, so the two never disagree."""
from __future__ import annotations

from typing import Dict, Sequence

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterBoolean,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterField, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination,
                       QgsProcessingParameterFolderDestination,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingParameterVectorLayer)

from ..engine.parameters import Param


def _number(p: Param):
    kind = (QgsProcessingParameterNumber.Type.Integer if p.kind == "int"
            else QgsProcessingParameterNumber.Type.Double)
    kwargs = {"optional": p.optional}
    if p.minimum is not None:
        kwargs["minValue"] = p.minimum
    if p.maximum is not None:
        kwargs["maxValue"] = p.maximum
    return QgsProcessingParameterNumber(p.id, p.label, kind, p.default, **kwargs)


def qgis_parameter(p: Param) -> QgsProcessingParameterDefinition:
    if p.kind in ("int", "float"):
        param = _number(p)
    elif p.kind == "rasters":
        param = QgsProcessingParameterMultipleLayers(p.id, p.label, QgsProcessing.SourceType.TypeRaster,
                                                     optional=p.optional)
    elif p.kind == "raster":
        param = QgsProcessingParameterRasterLayer(p.id, p.label, optional=p.optional)
    elif p.kind == "polygons":
        param = QgsProcessingParameterVectorLayer(p.id, p.label, [QgsProcessing.SourceType.TypeVectorPolygon],
                                                  optional=p.optional)
    elif p.kind == "field":
        param = QgsProcessingParameterField(p.id, p.label, parentLayerParameterName=p.parent,
                                            type=QgsProcessingParameterField.DataType.Numeric,
                                            optional=p.optional)
    elif p.kind == "enum":
        param = QgsProcessingParameterEnum(p.id, p.label, list(p.choices), allowMultiple=p.multiple,
                                           defaultValue=p.default, optional=p.optional,
                                           usesStaticStrings=True)
    elif p.kind == "bool":
        param = QgsProcessingParameterBoolean(p.id, p.label, bool(p.default), optional=p.optional)
    elif p.kind == "string":
        param = QgsProcessingParameterString(p.id, p.label, p.default, optional=p.optional)
        if p.hints:   # a drop-down in the dialog; qgis_process and the modeler take any text
            param.setMetadata({"widget_wrapper": {"value_hints": list(p.hints)}})
    elif p.kind == "file":
        param = QgsProcessingParameterFile(p.id, p.label, extension=p.extension,
                                           optional=p.optional)
    elif p.kind == "file_out":
        param = QgsProcessingParameterFileDestination(p.id, p.label, p.extension,
                                                      optional=p.optional,
                                                      createByDefault=p.create_by_default)
    elif p.kind == "raster_out":
        param = QgsProcessingParameterRasterDestination(p.id, p.label, optional=p.optional,
                                                        createByDefault=p.create_by_default)
    elif p.kind == "folder_out":
        param = QgsProcessingParameterFolderDestination(p.id, p.label, optional=p.optional,
                                                        createByDefault=p.create_by_default)
    else:  # pragma: no cover - Param checks its kind
        raise ValueError(p.kind)
    if p.advanced:
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    param.setHelp(p.help)
    return param


def add_parameters(alg, params: Sequence[Param]) -> None:
    for p in params:
        alg.addParameter(qgis_parameter(p))


def _given(parameters, name) -> bool:
    value = parameters.get(name)
    return value is not None and value != ""


def value_of(alg, p: Param, parameters, context):
    """A plain Python value of one parameter (layers as file paths, outputs as paths)."""
    if p.kind == "int":
        return alg.parameterAsInt(parameters, p.id, context) if _given(parameters, p.id) or \
            not p.optional else None
    if p.kind == "float":
        return alg.parameterAsDouble(parameters, p.id, context) if _given(parameters, p.id) or \
            not p.optional else None
    if p.kind == "bool":
        return alg.parameterAsBool(parameters, p.id, context)
    if p.kind == "enum":
        if p.multiple:
            return alg.parameterAsEnumStrings(parameters, p.id, context)
        return alg.parameterAsEnumString(parameters, p.id, context)
    if p.kind in ("string", "field"):
        return alg.parameterAsString(parameters, p.id, context)
    if p.kind == "rasters":
        return alg.raster_paths(parameters, p.id, context)
    if p.kind == "raster":
        return alg.raster_path(parameters, p.id, context) if _given(parameters, p.id) else None
    if p.kind == "file":
        return alg.parameterAsFile(parameters, p.id, context) or None
    if p.kind == "file_out":
        return alg.parameterAsFileOutput(parameters, p.id, context) or None
    if p.kind == "raster_out":
        return alg.parameterAsOutputLayer(parameters, p.id, context) or None
    if p.kind == "folder_out":
        return alg.parameterAsString(parameters, p.id, context) or None
    raise QgsProcessingException(f"{p.id}: cannot read a {p.kind} parameter here.")


def values_of(alg, params: Sequence[Param], parameters, context) -> Dict[str, object]:
    """{Processing id: plain value} for every parameter except polygon layers (the
    algorithm converts those to files itself)."""
    return {p.id: value_of(alg, p, parameters, context) for p in params if p.kind != "polygons"}
