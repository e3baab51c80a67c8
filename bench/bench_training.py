"""Benchmark: Berunda's training loop vs a bare smp training step of the same shape.

Berunda's figure is samples/s of engine.trainer.train on real rasters (window
reads, normalisation, augmentation, task preparation, both losses, checkpoint
excluded); the bare figure is an smp.Unet forward/backward/Adam step on random
tensors holding the same number of tiles per step.  Goal: ratio >= 0.85 on CPU,
>= 0.95 on GPU.

    .venv/bin/python bench/bench_training.py --device cpu --tasks none kmeans
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "plugins"))

import torch  # noqa: E402


def bare_samples_per_s(encoder, tiles, tile, classes, bands, device, steps, amp):
    import segmentation_models_pytorch as smp

    net = smp.Unet(encoder, encoder_weights=None, in_channels=bands, classes=classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(tiles, bands, tile, tile, device=device)
    y = torch.randint(0, classes, (tiles, tile, tile), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * tiles / (time.perf_counter() - t0)


def dubai_config(task, data, encoder, tile, batch, steps, device):
    """2 epochs of ``steps`` steps on part 1 (labeled) and part 2 (unlabeled) of scenes 1-4."""
    from berunda.engine.config import TrainingConfig

    img = lambda n: str(data / "images" / f"{n}.tif")  # noqa: E731
    lab = lambda n: str(data / "labels" / f"{n}.tif")  # noqa: E731
    labeled = [f"scene{s}_part1" for s in range(1, 5)]
    return TrainingConfig(
        labeled_images=[img(n) for n in labeled], labels=[lab(n) for n in labeled],
        unlabeled_images=[img(f"scene{s}_part2") for s in range(1, 5)], aux_task=task,
        encoder=encoder, tile_size=tile, batch_size=batch, epochs=2,
        samples_per_epoch=batch * steps, device=device.type, clusters=10, mask_size=tile // 4)


def berunda_samples_per_s(task, data, encoder, tile, batch, steps, device):
    from berunda.engine.trainer import train

    config = dubai_config(task, data, encoder, tile, batch, steps, device)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, str(Path(tmp) / "m.pt"))
    # epoch 1 includes warm-up; epoch 2 is the steady state
    return result.history[-1]["samples_per_s"], config


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dubai"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--tasks", nargs="+", default=["none", "kmeans"])
    p.add_argument("--repeat", type=int, default=3,
                   help="interleaved repetitions; the best of each is reported (load only slows)")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, encoder {args.encoder}, "
          f"tile {args.tile}, batch {args.batch} labeled (+{args.batch} unlabeled for semi tasks)")
    print("| task | Berunda samples/s | bare smp samples/s | ratio |")
    print("|---|---|---|---|")
    for task in args.tasks:
        tiles = args.batch * (1 if task == "none" else 2)
        ours = bare = 0.0
        for _ in range(args.repeat):
            ours = max(ours, berunda_samples_per_s(task, Path(args.data), args.encoder, args.tile,
                                                   args.batch, args.steps, device)[0])
            bare = max(bare, bare_samples_per_s(args.encoder, tiles, args.tile, 5, 3, device,
                                                args.steps, device.type == "cuda"))
        print(f"| {task} | {ours:.2f} | {bare:.2f} | {ours / bare:.2f} |", flush=True)


if __name__ == "__main__":
    main()
