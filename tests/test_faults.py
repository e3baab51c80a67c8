"""Faults (issue 13): the disk fills up while classifying or writing a checkpoint
(simulated with a file-size limit, RLIMIT_FSIZE, in a child process), an input
GeoTIFF truncated half-way, and two classifications writing the same output at
once.  Each ends with a clear message, no partial file and the previous
checkpoint intact."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from conftest import PLUGINS_DIR, dubai_pair
from test_engine_inference import model_file, small  # noqa: F401 (fixtures)

from berunda.engine.config import TrainingConfig
from berunda.engine.errors import RasterError
from berunda.engine.inference import classify_raster
from berunda.engine.model_file import load_model
from berunda.engine.trainer import checkpoint_path_for, train

TINY = dict(encoder="resnet18", encoder_weights="none", tile_size=64, batch_size=2, samples_per_epoch=4, device="cpu",
            aux_task="none")


def run_child(code, limit=None):
    """Run ``code`` in a fresh Python with the plugin importable, under a file-size limit
    (SIGXFSZ ignored, so a write past it fails with EFBIG as on a full disk)."""
    prefix = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(PLUGINS_DIR)!r})
        import torch
        torch.set_num_threads(1)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if {limit!r} is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, ({limit!r}, {limit!r}))
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", prefix + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300, env=env)


def write_image(path, data_dir, size=320, **profile):
    with rasterio.open(data_dir / "images" / "scene1_part1.tif") as src:
        window = Window(0, 0, size, size)
        data = src.read(window=window)
        meta = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=src.crs,
                    transform=src.window_transform(window), **profile)
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(data)
    return str(path)


def truncate_half(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_disk_full_while_classifying(tmp_path, data_dir, model_file):  # noqa: F811
    image = write_image(tmp_path / "in.tif", data_dir, 400)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_child(f"""
        from berunda.engine.errors import OutputError
        from berunda.engine.inference import classify_raster
        try:
            classify_raster({image!r}, {model_file!r}, {str(out / "c.tif")!r}, tile_size=128,
                            device="cpu", probabilities_path={str(out / "p.tif")!r})
        except OutputError as exc:
            print("REFUSED", exc)
    """, limit=64 * 1024)
    assert "REFUSED" in proc.stdout, proc.stderr[-2000:]
    message = proc.stdout
    assert str(out / "c.tif") in message and "needs up to 3.2 MiB" in message
    assert "ulimit -f" in message and "no output was written" in message
    assert os.listdir(out) == []


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, one_torch_thread):
    img, lab = dubai_pair("scene1_part1")
    model = tmp_path / "m.pt"
    train(TrainingConfig([img], [lab], epochs=1, **TINY), str(model))
    checkpoint = checkpoint_path_for(str(model))
    before = open(checkpoint, "rb").read()
    os.remove(model)
    proc = run_child(f"""
        from berunda.engine.config import TrainingConfig
        from berunda.engine.errors import OutputError
        from berunda.engine.trainer import train
        config = TrainingConfig([{img!r}], [{lab!r}], epochs=2, **{TINY!r})
        try:
            train(config, {str(model)!r}, resume={checkpoint!r})
        except OutputError as exc:
            print("REFUSED", exc)
    """, limit=len(before) // 2)
    assert "REFUSED" in proc.stdout, proc.stderr[-2000:]
    assert checkpoint in proc.stdout and "needs up to" in proc.stdout
    assert f"{checkpoint} is unchanged" in proc.stdout
    assert open(checkpoint, "rb").read() == before
    assert load_model(checkpoint).checkpoint["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["m.checkpoint.pt"]


@pytest.mark.parametrize("layout", ["striped", "tiled_deflate"])
def test_truncated_geotiff_while_classifying(tmp_path, data_dir, model_file, layout):  # noqa: F811
    extra = {} if layout == "striped" else dict(tiled=True, blockxsize=64, blockysize=64,
                                                 compress="deflate")
    image = write_image(tmp_path / "in.tif", data_dir, 320, **extra)
    truncate_half(image)
    out = tmp_path / "out"
    with pytest.raises(RasterError) as exc:
        classify_raster(image, model_file, str(out / "c.tif"), tile_size=64, overlap=0,
                        device="cpu", probabilities_path=str(out / "p.tif"))
    message = str(exc.value)
    assert image in message and "rows " in message and "columns " in message
    assert "damaged or truncated" in message
    assert not out.exists() or os.listdir(out) == []


def test_truncated_geotiff_while_training(tmp_path, data_dir, one_torch_thread):
    img, lab = dubai_pair("scene1_part1")
    unlabeled = write_image(tmp_path / "unlabeled.tif", data_dir, 320)
    truncate_half(unlabeled)
    config = TrainingConfig([img], [lab], [unlabeled], epochs=1,
                            **dict(TINY, aux_task="l1", samples_per_epoch=40))
    with pytest.raises(RasterError) as exc:
        train(config, str(tmp_path / "m.pt"))
    assert unlabeled in str(exc.value) and "rows " in str(exc.value)
    assert sorted(os.listdir(tmp_path)) == ["unlabeled.tif"]


def test_two_classifications_of_the_same_output_at_once(tmp_path, data_dir, model_file):  # noqa: F811
    image = write_image(tmp_path / "in.tif", data_dir, 320)
    out = tmp_path / "out"
    code = f"""
        from berunda.engine.inference import classify_raster
        classify_raster({image!r}, {model_file!r}, {str(out / "c.tif")!r}, tile_size=64,
                        batch_size=1, device="cpu")
        print("DONE")
    """
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = f"import sys; sys.path.insert(0, {str(PLUGINS_DIR)!r})\n" + textwrap.dedent(code)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all("DONE" in stdout for stdout, _ in results), results   # last one wins
    assert sorted(os.listdir(out)) == ["c.tif", "c.tif.aux.xml"]     # no temporary leftovers
    classify_raster(image, model_file, str(tmp_path / "alone.tif"), tile_size=64, batch_size=1,
                    device="cpu")
    with rasterio.open(out / "c.tif") as a, rasterio.open(tmp_path / "alone.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
