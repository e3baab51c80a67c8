"""`make demo`: the main job, end to end through qgis_process on real imagery.

Trains a small semi-supervised model (relaxed k-means auxiliary task) on a few
annotated Dubai images plus many unannotated ones, classifies a held-back
scene's image, evaluates it against its labels and prints OA / mIoU and where
the classified GeoTIFF is.  Sized to finish in a few minutes on a 2-core CPU.
Training's log (time estimate, every epoch) is printed as it comes.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QGIS_PROCESS = str(REPO / "scripts" / "qgis_process")


def run(alg, params):
    """Run an algorithm with --json; print its log once it is done (quick steps)."""
    args = [QGIS_PROCESS, "--json", "run", alg, "--"] + _cli(params)
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{alg} failed:\n{proc.stderr[-3000:]}\n{proc.stdout[-3000:]}")
    out = json.loads(proc.stdout)
    for line in out.get("log", {}).get("info", []):
        print("   ", line)
    print(f"  {alg} took {time.time() - t0:.0f} s")
    return out["results"]


def run_streaming(alg, params):
    """Run an algorithm printing its log as it comes (training: the time estimate and
    every epoch), not only at the end; returns the results (one-line values)."""
    t0 = time.time()
    results, tail = {}, []
    for line in stream_log(alg, params, results, tail):
        print("   ", line, flush=True)
    if results.get("_returncode"):
        sys.exit(f"{alg} failed:\n" + "\n".join(tail[-60:]))
    print(f"  {alg} took {time.time() - t0:.0f} s")
    return results


PROGRESS = re.compile(r"^(?:\d+|\.)+(?: - done\.)?")   # qgis_process's "0...10...20" bar
PARAMETER = re.compile(r"^([A-Z][A-Z0-9_]*):\t?(.*)$")


def stream_log(alg, params, results, tail):
    """Yield qgis_process's log lines while it runs; fill ``results`` from its Results
    block (and ``_returncode``) and keep every raw line in ``tail``."""
    args = [QGIS_PROCESS, "run", alg, "--"] + _cli(params)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    section, previous = None, ""
    for raw in proc.stdout:
        tail.append(raw.rstrip())
        line = PROGRESS.sub("", raw.strip()).strip()
        if line in ("Inputs", "Results"):
            section = line
            continue
        if not line or set(line) == {"-"} or line.startswith(("QStandardPaths", "<string>")):
            continue
        match = PARAMETER.match(line)
        if section == "Results" and match:
            results[match.group(1)] = match.group(2)
        elif section == "Inputs" and match:
            continue
        elif not previous.startswith(line):   # the progress text repeats the line before
            section, previous = "log", line
            yield line
    results["_returncode"] = proc.wait()


def _cli(params):
    args = []
    for key, value in params.items():
        for v in value if isinstance(value, list) else [value]:
            args.append(f"{key}={v}")
    return args


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dubai"),
                        help="folder with images/ and labels/ (the Dubai sample layout)")
    parser.add_argument("--out", default=str(REPO / "out" / "demo"))
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("EPOCHS", 16)))
    args = parser.parse_args()

    data = Path(args.data)
    if not (data / "images").is_dir() or not (data / "labels").is_dir():
        sys.exit(f"Demo data not found: {data} must hold images/ and labels/ "
                 "(point DATA= at the dubai sample folder, e.g. make demo DATA=/path/to/dubai).")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    img = lambda n: str(data / "images" / f"{n}.tif")   # noqa: E731
    lab = lambda n: str(data / "labels" / f"{n}.tif")   # noqa: E731

    # Split by scene (images of one scene overlap in content): scenes 1-6 for
    # training (one annotated image each, three more used without labels), scene 8 (the
    # one with the most even mix of the five classes) held back.
    labeled = [f"scene{s}_part1" for s in range(1, 7)]
    unlabeled = [f"scene{s}_part{p}" for s in range(1, 7) for p in (3, 5, 7)]
    held_back = "scene8_part2"
    for name in labeled + unlabeled + [held_back]:
        if not Path(img(name)).exists():
            sys.exit(f"Demo data incomplete: {img(name)} is missing.")

    model = out / "model.pt"
    print(f"1/3 Training kmeans (semi-supervised, the pretrained default encoder) on "
          f"{len(labeled)} annotated + {len(unlabeled)} unannotated images")
    train = run_streaming("berunda:train", {
        "LABELED_IMAGES": [img(n) for n in labeled], "LABELS": [lab(n) for n in labeled],
        "UNLABELED_IMAGES": [img(n) for n in unlabeled], "AUX_TASK": "kmeans",
        # the default encoder, from the ImageNet weights installed with Berunda
        "TILE_SIZE": 128, "BATCH_SIZE": 4, "EPOCHS": args.epochs,
        # lr 1e-3 instead of the paper's 1e-4: this budget is ~1/1000 of the paper's
        "SAMPLES_PER_EPOCH": 96, "LEARNING_RATE": 1e-3, "SEED": 0, "OUTPUT_MODEL": str(model)})
    print(f"2/3 Classifying held-back image {held_back}")
    classified = out / f"{held_back}_classified.tif"
    run("berunda:classify", {"INPUT": img(held_back), "MODEL": train["OUTPUT_MODEL"],
                             "OUTPUT": str(classified)})
    print("3/3 Evaluating against its labels")
    report = out / "evaluation.html"
    scores = run("berunda:evaluate", {"PREDICTION": str(classified), "GROUND_TRUTH": lab(held_back),
                                      "OUTPUT_REPORT": str(report),
                                      "OUTPUT_TABLE": str(out / "evaluation.csv")})
    print()
    print(f"Overall accuracy: {scores['OVERALL_ACCURACY']:.2f} %")
    print(f"Mean IoU:         {scores['MEAN_IOU']:.2f} %")
    print(f"Kappa:            {scores['KAPPA']:.4f}")
    print(f"Classified GeoTIFF: {classified}  (styled by {classified.with_suffix('.qml')})")
    print(f"Report: {report}")


if __name__ == "__main__":
    main()
