"""``python -m berunda``: the parser, the exit codes and the error handling.

Exit codes: 0 done; 2 bad input (the same clear message as in QGIS); 3 the environment
lacks or cannot import a package; 130 cancelled; 1 anything unexpected (traceback on
stderr).  Importing this module imports neither qgis nor torch.
"""
from __future__ import annotations

import argparse
import sys
import traceback

from ..engine.errors import BerundaError, Cancelled
from ..engine.parameters import (CLASSIFY, COMPARE_EXTRA, DEVICES, EVALUATE, EXPORT_ONNX,
                                 TRAIN_EXTRA, help_line, training_params)
from . import commands
from .options import add_options

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_CANCELLED = 0, 1, 2, 3, 130

JOB_HELP_KEYS = [p for p in training_params() + TRAIN_EXTRA
                 if p.id not in ("LABEL_POLYGONS", "CLASS_FIELD", "RESUME", "EXPORT_JOB",
                                 "JOB_ONLY", "OUTPUT_MODEL")]


def _job_keys_help() -> str:
    lines = ["keys of the job's \"config\" object (the Processing parameter in brackets):"]
    for p in JOB_HELP_KEYS:
        text = help_line(p, html=False).split(": ", 1)[1]
        lines.append(f"  {p.key} [{p.id}]: {text}")
    lines.append("  label_polygons, label_layer, class_field [LABEL_POLYGONS, CLASS_FIELD]: polygon "
                 "labels instead of label rasters (a vector file, its layer, the integer class "
                 "field).")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors, but reported like every other bad input."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="python -m berunda", formatter_class=raw,
                     description="Berunda — semi-supervised semantic segmentation of rasters, "
                                 "without QGIS: train from a job file written by berunda:train "
                                 "(EXPORT_JOB), classify, evaluate, compare.",
                     epilog="Exit codes: 0 done, 2 bad input, 3 missing/broken package, "
                            "130 cancelled, 1 unexpected error.")
    parser.add_argument("--messages", choices=["auto", "terminal", "plain", "jsonl"],
                        default="auto", help="progress: a bar on a terminal (auto), plain lines, "
                                             "or JSON lines (what the QGIS plugin reads)")
    parser.add_argument("--describe-environment", action="store_true",
                        help="first log the interpreter, package versions and device")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", formatter_class=raw, help="train a model from a job file",
                       description="Train BerundaNet-late from a training job (JSON) written by "
                                   "berunda:train's EXPORT_JOB (or by hand). Under torchrun it "
                                   "trains on all ranks with DistributedDataParallel.",
                       epilog=_job_keys_help())
    p.add_argument("job", metavar="JOB.json", help="the training job")
    p.add_argument("--output", metavar="MODEL.pt", help="the model file to write")
    p.add_argument("--resume", metavar="CHECKPOINT.pt",
                   help="continue from a '.checkpoint.pt' written by an earlier run")
    p.add_argument("--data-root", metavar="DIR",
                   help="where the job's data is now: relative paths are read against it, and "
                        "paths under the job's recorded data_root are moved under it")
    p.add_argument("--device", choices=DEVICES, help="override the job's DEVICE")
    p.add_argument("--export-job", metavar="JOB.json",
                   help="also write the complete job (classes and normalisation statistics "
                        "computed) to this file")
    p.add_argument("--job-only", action="store_true", help="with --export-job: write it and stop")
    p.set_defaults(run=commands.train)

    p = sub.add_parser("classify", formatter_class=raw, help="classify a raster with a model",
                       description="Classify a raster with a Berunda model (streaming, any size, "
                                   "blended overlaps); a GeoTIFF with the model's class values, "
                                   "colours and names.")
    add_options(p, CLASSIFY)
    p.set_defaults(run=commands.classify)

    p = sub.add_parser("evaluate", formatter_class=raw, help="score a classified raster",
                       description="OA, mIoU, kappa, per-class scores and confusion matrix of a "
                                   "classified raster against ground truth (HTML + CSV).")
    add_options(p, EVALUATE)
    p.add_argument("--layer", help="layer of GROUND_TRUTH_POLYGONS (default: the first)")
    p.set_defaults(run=commands.evaluate)

    p = sub.add_parser("compare", formatter_class=raw,
                       help="the paper's Table 1: supervised vs auxiliary tasks over seeds",
                       description="Train the supervised baseline and each auxiliary task (at "
                                   "each λ) for several seeds on the job's data and score them "
                                   "on validation pairs (berunda:compare).",
                       epilog=_job_keys_help())
    p.add_argument("job", metavar="JOB.json", help="training job: data and shared settings")
    p.add_argument("--data-root", metavar="DIR", help="as for train")
    p.add_argument("--device", choices=DEVICES, help="override the job's DEVICE")
    add_options(p, COMPARE_EXTRA)
    p.set_defaults(run=commands.compare)

    p = sub.add_parser("export-onnx", formatter_class=raw,
                       help="write a model as ONNX (Deepness, ONNX runtimes)",
                       description="Write a Berunda model as an ONNX file with Berunda's "
                                   "preprocessing inside the graph and Deepness's metadata "
                                   "(berunda:export_onnx). Needs onnx (and onnxruntime for the "
                                   "check).")
    add_options(p, EXPORT_ONNX)
    p.set_defaults(run=commands.export_onnx)

    p = sub.add_parser("diagnostics", help="the engine's Python, packages and device",
                       description="What the engine runs with: interpreter, package versions "
                                   "and where they are, CUDA.")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(run=commands.diagnostics)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    from .reporting import make_reporter
    from ..engine.distributed import rank

    reporter = make_reporter(args.messages, rank())
    try:
        code = _environment_check(reporter, args.describe_environment,
                                  strict=args.command != "diagnostics")
        if code:
            return code
        outputs = args.run(args, reporter)
        if args.command == "diagnostics" and getattr(args, "json", False) and args.messages != "jsonl":
            import json

            print(json.dumps(outputs["ENVIRONMENT"], indent=1))
            outputs = {}
        reporter.result(outputs)
        return EXIT_OK
    except Cancelled as exc:
        reporter.error(type(exc).__name__, str(exc), EXIT_CANCELLED)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        reporter.error("Cancelled", "Stopped (Ctrl-C).", EXIT_CANCELLED)
        return EXIT_CANCELLED
    except BerundaError as exc:
        reporter.error(type(exc).__name__, str(exc), EXIT_BAD_INPUT)
        return EXIT_BAD_INPUT
    except ImportError as exc:
        from ..engine.environment import explain_import_error

        traceback.print_exc(file=sys.stderr)
        reporter.error("ImportError", explain_import_error(exc), EXIT_ENVIRONMENT)
        return EXIT_ENVIRONMENT
    except Exception as exc:  # noqa: BLE001 - the last line of defence: say what happened
        traceback.print_exc(file=sys.stderr)
        reporter.error(type(exc).__name__, f"Berunda's engine failed unexpectedly: "
                                           f"{type(exc).__name__}: {exc}", EXIT_FAILED)
        return EXIT_FAILED
    finally:
        reporter.close()


def _environment_check(reporter, describe: bool, strict: bool = True) -> int:
    """Version warnings every run; missing or incompatible packages stop before any work
    (diagnostics goes on: it reports them)."""
    from ..engine.environment import summary_lines, version_problems

    errors, warnings = version_problems()
    if errors and strict:
        reporter.error("EnvironmentError",
                       "Berunda's engine cannot run: " + "; ".join(errors) + ". Run 'Install "
                       "dependencies' (berunda:install_dependencies), or point BERUNDA_PYTHON "
                       "at an environment with requirements/requirements.txt installed.",
                       EXIT_ENVIRONMENT)
        return EXIT_ENVIRONMENT
    if describe:
        for line in summary_lines():
            reporter.info(line)
    for line in warnings:
        reporter.warning(line)
    return 0
