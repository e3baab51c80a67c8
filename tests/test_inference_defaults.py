"""Classification speed defaults (issue 13): the inference tile is chosen for the
device, not copied from the training tile; the overlap stays a quarter of the
training tile in pixels; tiles are balanced to the raster; scoring several
validation rasters builds the network once."""
import numpy as np
import pytest
import rasterio
import torch

from berunda.engine import inference_tile
from berunda.engine.inference import classify_raster
from berunda.engine.model_file import ModelPackage
from berunda.engine.progress import Reporter
from berunda.engine.tiling import axis_grid
from berunda.engine.validation import score_model
from berunda.models.network import build_network, describe_network
from test_engine_inference import COLORS, NAMES, STATS, VALUES, write_crop

CPU = torch.device("cpu")


class Log(Reporter):
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)


def tiny_package(tile_size, classes=5):
    torch.manual_seed(0)
    arch = describe_network(3, classes, "resnet18", 0, 0)
    meta = {"architecture": arch,
            "bands": {"count": 3, "dtype": "uint8", "dtype_family": "uint", "nodata": None},
            "normalization": STATS,
            "classes": {"values": VALUES[:classes], "names": NAMES[:classes],
                        "colors": COLORS[:classes], "nodata": 0},
            "tile_size": tile_size, "task": {"id": "none", "params": {}, "lambda": 0.0}}
    return ModelPackage(meta, build_network(arch).state_dict())


def test_a_model_trained_on_small_tiles_is_not_classified_in_small_tiles(tmp_path, data_dir,
                                                                          one_torch_thread):
    # 200 x 300 px: at the training tile (64 px, 16 px overlap) that was 5 x 7 = 35
    # forward passes; one tile covers it now.
    path = str(tmp_path / "crop.tif")
    write_crop(path, data_dir, 60, 40, 200, 300)
    log = Log()
    result = classify_raster(path, tiny_package(64), str(tmp_path / "c.tif"), device="cpu",
                             reporter=log)
    assert result.tiles == 1
    assert any("overlap 16 px" in line and "trained on 64-px tiles" in line for line in log.lines)
    with rasterio.open(str(tmp_path / "c.tif")) as ds:
        assert (ds.read(1) != 0).all()


def test_default_tile_is_the_device_size_at_least_twice_the_training_tile():
    plenty = 64 << 30
    assert inference_tile.choose_tile(None, 64, CPU, 4, Reporter(), free=plenty)[0] == 512
    assert inference_tile.choose_tile(None, 320, CPU, 4, Reporter(), free=plenty)[0] == 640
    assert inference_tile.choose_tile(0, 128, torch.device("cuda"), 4, Reporter(),
                                      free=plenty)[0] == 1024
    # TILE_SIZE given: used as is (rounded to the stride)
    assert inference_tile.choose_tile(96, 64, CPU, 4, Reporter(), free=plenty)[0] == 96


def test_default_tile_is_bounded_by_free_memory_but_not_below_the_training_tile():
    # 4 tiles of T px at 1 KiB/px must fit in a quarter of the free memory on CPU
    tile, how = inference_tile.choose_tile(None, 64, CPU, 4, Reporter(), free=4 * 256**2 * 1024 * 4)
    assert tile == 256 and "free" in how
    tile, _ = inference_tile.choose_tile(None, 320, CPU, 4, Reporter(), free=1 << 20)
    assert tile == 320


def test_default_overlap_is_a_quarter_of_the_training_tile_in_pixels():
    assert inference_tile.overlap_pixels(None, 512, 128) == 32
    assert inference_tile.overlap_pixels(None, 640, 320) == 80
    assert inference_tile.overlap_pixels(0.25, 512, 128) == 128   # a fraction: of this tile
    assert inference_tile.overlap_pixels(None, 64, 320) == 16     # TILE_SIZE below training


def test_tiles_are_shrunk_to_just_cover_the_axis():
    grid = axis_grid(2048, 512, 32, 32)
    assert (grid.count, grid.tile) == (5, 448)      # 5 tiles of 512 px would do 23 % more work
    covered = np.zeros(2048, bool)
    for k in range(grid.count):
        covered[max(grid.start(k) + 16, 0):min(grid.start(k) + grid.tile - 16, 2048)] = True
    assert covered.all()


def test_scoring_several_validation_rasters_builds_the_network_once(tmp_path, data_dir,
                                                                   monkeypatch, one_torch_thread):
    images, labels = [], []
    for i in range(3):
        images.append(str(tmp_path / f"v{i}.tif"))
        write_crop(images[-1], data_dir, 100 + 40 * i, 100, 64, 96)
        with rasterio.open(images[-1]) as src:
            profile = src.profile
        profile.update(count=1, nodata=0)
        labels.append(str(tmp_path / f"l{i}.tif"))
        with rasterio.open(labels[-1], "w", **profile) as dst:
            dst.write(np.full((1, 64, 96), 1 + i, np.uint8))
    from berunda.engine import model_file

    package = tiny_package(64)
    model = str(tmp_path / "m.pt")
    model_file.save_model(model, package)
    built = []
    real = ModelPackage.build_network
    monkeypatch.setattr(ModelPackage, "build_network",
                        lambda self, device="cpu": built.append(device) or real(self, device))
    scores = score_model(model, images, labels, str(tmp_path), Reporter(), device="cpu")
    assert built == ["cpu"]
    assert scores["pixels"] == 3 * 64 * 96
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"v{i}.tif" for i in range(3)] + [f"l{i}.tif" for i in range(3)] + ["m.pt"])


@pytest.mark.parametrize("classes,dtype", [(3, "uint8"), (4, "uint8"), (3, "float32")])
def test_probabilities_are_class_bands_not_a_photo(tmp_path, data_dir, classes, dtype,
                                                   one_torch_thread):
    # GDAL tags 3 or 4 Byte bands as RGB(A) unless told otherwise: QGIS then draws a photo
    path = str(tmp_path / "crop.tif")
    write_crop(path, data_dir, 60, 40, 64, 96)
    prob = str(tmp_path / "p.tif")
    classify_raster(path, tiny_package(64, classes), str(tmp_path / "c.tif"), device="cpu",
                    probabilities_path=prob, probabilities_dtype=dtype)
    with rasterio.open(prob) as ds:
        assert list(ds.descriptions) == NAMES[:classes]
        interp = {c.name for c in ds.colorinterp}
    assert not interp & {"red", "green", "blue", "alpha"}, interp


def test_available_memory_on_cpu_counts_the_reclaimable_cache():
    with open("/proc/meminfo") as f:
        meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    available = inference_tile.available_memory(CPU)
    assert available == pytest.approx(meminfo["MemAvailable"], abs=256 << 20)   # it moves
    assert meminfo["MemAvailable"] > meminfo["MemFree"]   # what os.sysconf alone would see
