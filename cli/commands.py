"""What each subcommand does: plain values in, the engine called, a dict of outputs back
(the same keys as the Processing algorithm's outputs).  Engine modules are imported here,
inside the commands, so that ``--help`` and bad arguments answer without loading torch."""
from __future__ import annotations

import os
import tempfile

from ..engine.atomic import ensure_folder
from ..engine.errors import InvalidParameterError, OutputError
from ..engine.parameters import CLASSIFY, COMPARE_EXTRA, EVALUATE, EXPORT_ONNX
from .options import values


def train(args, reporter) -> dict:
    from ..engine.job import read_job, write_job

    job = read_job(args.job, args.data_root)
    config = job.config
    if args.device:
        config.device = args.device
    if not args.output and not args.job_only:
        raise InvalidParameterError("--output is required (the model file to write), unless "
                                    "--job-only.")
    if args.job_only and not args.export_job:
        raise InvalidParameterError("--job-only needs --export-job (the job file to write).")
    prepared = job.prepared
    outputs = {}
    if args.export_job:
        if prepared is None:
            from ..engine.labels import burnt_polygon_labels
            from ..engine.trainer import validate_config
            from ..engine.training_data import prepare_job_data

            validate_config(config)
            with burnt_polygon_labels(config, reporter) as burnt:
                prepared = prepare_job_data(burnt, reporter)
        write_job(args.export_job, config, prepared)
        reporter.info(f"Training job written to {args.export_job}")
        outputs["EXPORT_JOB"] = args.export_job
        if args.job_only:
            return outputs
    from ..engine.distributed import train_maybe_distributed

    result = train_maybe_distributed(config, args.output, reporter, resume=args.resume,
                                     prepared=prepared)
    if result is None:   # a rank other than 0: rank 0 reports
        return outputs
    final = result.final
    validation = result.validation or {}
    outputs.update({
        "OUTPUT_MODEL": result.model_path,
        "CHECKPOINT": result.checkpoint_path,
        "FINAL_LOSS": final.get("loss"),
        "FINAL_SUPERVISED_LOSS": final.get("supervised"),
        "FINAL_AUXILIARY_LOSS": final.get("auxiliary"),
        "FINAL_TRAIN_ACCURACY": 100.0 * final.get("train_accuracy", 0.0),
        "VALIDATION_OVERALL_ACCURACY": validation.get("overall_accuracy"),
        "VALIDATION_MEAN_IOU": validation.get("mean_iou"),
    })
    return outputs


def _overlap(value):
    """Pixels (>= 1, or 0 = none) or a fraction of the tile (< 1); None = the default."""
    if value is None:
        return None
    return int(value) if value >= 1 or value == 0 else float(value)


def classify(args, reporter) -> dict:
    from ..engine.inference import classify_raster
    from ..engine.model_file import load_model

    v = values(args, CLASSIFY)
    for name in ("OUTPUT", "OUTPUT_PROBABILITIES", "OUTPUT_CONFIDENCE"):
        path = v[name]
        if path and not path.lower().endswith((".tif", ".tiff")):
            raise OutputError(f"{name}: Berunda writes GeoTIFF; give a .tif file name instead of "
                              f"{path}.")
    model = load_model(v["MODEL"])
    result = classify_raster(
        v["INPUT"], model, v["OUTPUT"], tile_size=v["TILE_SIZE"] or None,
        overlap=_overlap(v["OVERLAP"]), batch_size=v["BATCH_SIZE"], device=v["DEVICE"],
        probabilities_path=v["OUTPUT_PROBABILITIES"], probabilities_dtype=v["PROBABILITY_TYPE"],
        confidence_path=v["OUTPUT_CONFIDENCE"], reporter=reporter)
    outputs = {"OUTPUT": result.output, "CLASSES": model.metadata["classes"]}
    if v["OUTPUT_PROBABILITIES"]:
        outputs["OUTPUT_PROBABILITIES"] = result.probabilities
    if v["OUTPUT_CONFIDENCE"]:
        outputs["OUTPUT_CONFIDENCE"] = result.confidence
    return outputs


def evaluate(args, reporter) -> dict:
    from ..engine.evaluation import evaluate_rasters
    from ..engine.labels import rasterize_polygons
    from ..engine.report import write_evaluation_csv, write_evaluation_html

    v = values(args, EVALUATE)
    prediction, truth = v["PREDICTION"], v["GROUND_TRUTH"]
    polygons = v["GROUND_TRUTH_POLYGONS"]
    if bool(truth) == bool(polygons):
        raise InvalidParameterError("Give exactly one of GROUND_TRUTH (raster) or "
                                    "GROUND_TRUTH_POLYGONS (with CLASS_FIELD).")
    report, table = v["OUTPUT_REPORT"], v["OUTPUT_TABLE"]
    inputs = [os.path.abspath(p) for p in (prediction, truth or polygons)]
    for name, path in (("OUTPUT_REPORT", report), ("OUTPUT_TABLE", table)):
        if path and os.path.abspath(path) in inputs:
            raise OutputError(f"{name} {path} would overwrite an input; choose another file name.")
        if path:
            ensure_folder(path, name)   # a missing folder is created
    with tempfile.TemporaryDirectory(prefix="berunda_truth_") as scratch:
        if polygons:
            if not v["CLASS_FIELD"]:
                raise InvalidParameterError("GROUND_TRUTH_POLYGONS needs CLASS_FIELD (integer "
                                            "class values).")
            truth = rasterize_polygons(polygons, v["CLASS_FIELD"], prediction,
                                       os.path.join(scratch, "truth.tif"), args.layer or None)
        result = evaluate_rasters(prediction, truth, reporter=reporter)
    write_evaluation_html(result, report)
    outputs = {"OUTPUT_REPORT": report}
    if table:
        write_evaluation_csv(result, table)
        outputs["OUTPUT_TABLE"] = table
    scores = result.scores
    outputs.update(OVERALL_ACCURACY=scores.overall_accuracy, MEAN_IOU=scores.mean_iou,
                   KAPPA=scores.kappa)
    return outputs


def compare(args, reporter) -> dict:
    from ..engine.experiment import parse_lambdas, run_comparison
    from ..engine.job import read_job

    job = read_job(args.job, args.data_root)
    v = values(args, COMPARE_EXTRA)
    if args.device:
        job.config.device = args.device
    result = run_comparison(
        job.config, v["AUX_TASKS"], parse_lambdas(v["LAMBDAS"]), v["RUNS"],
        v["VALIDATION_IMAGES"], v["VALIDATION_LABELS"], table_path=v["OUTPUT_TABLE"],
        report_path=v["OUTPUT_REPORT"], model_folder=v["OUTPUT_FOLDER"], reporter=reporter)
    best, supervised = result.best, result.supervised
    return {
        "OUTPUT_TABLE": result.table_path, "OUTPUT_REPORT": result.report_path,
        "OUTPUT_FOLDER": result.model_folder,
        "BEST": best.label if best else "",
        "BEST_MEAN_IOU": best.miou_mean if best else None,
        "SUPERVISED_MEAN_IOU": supervised.miou_mean if supervised else None,
    }


def export_onnx(args, reporter) -> dict:
    from ..engine.onnx_export import export_onnx as export

    v = values(args, EXPORT_ONNX)
    result = export(v["MODEL"], v["OUTPUT"], tile_size=v["TILE_SIZE"] or None, opset=v["OPSET"],
                    reporter=reporter)
    return {"OUTPUT": result["output"], "EXPORT": result}


def diagnostics(args, reporter) -> dict:
    from ..engine.environment import report

    record = report()
    if not args.json:
        for p in record["packages"]:
            reporter.info(f"{p['name']}: {p['message']}"
                          + (f" (in {p['location']})" if p["location"] else ""))
        reporter.info(record["device"]["summary"])
    return {"ENVIRONMENT": record}
