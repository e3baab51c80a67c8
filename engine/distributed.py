"""Training on several processes: ``torchrun --nproc_per_node=N -m berunda train JOB.json``
(NCCL on GPUs, gloo on CPUs; SLURM: ``srun torchrun …``).  torchrun sets WORLD_SIZE, RANK
and LOCAL_RANK; without them training is the plain single-process one, bit for bit.

What the ranks share and what they do not:
- BATCH_SIZE and SAMPLES_PER_EPOCH keep their single-process meaning: they are *global*.
  Each rank draws BATCH_SIZE / N labeled (+ as many unlabeled) tiles per step, from its own
  random streams seeded with (seed, epoch, rank, step), so ranks never repeat each other's tiles;
  an epoch has the same number of optimiser steps as on one process.
- Gradients are averaged over the ranks once per optimiser step, after every backward pass
  of the step (`Ranks.average_gradients`: one all-reduce of the flattened gradients, the
  arithmetic DistributedDataParallel does).  It is done here rather than by wrapping the
  network in DistributedDataParallel because a Berunda step is not one forward and one
  backward: tasks add passes through the network's parts (consistency's strong view and
  feature-perturbed decoder), the out-of-memory fallback accumulates micro-batches, and the
  gradient-gating loss balance needs each rank's own gradients before they are averaged —
  DDP's reducer synchronises inside every backward pass.
- The step's loss values are averaged too, so λ=auto and the NaN stop decide the same on
  every rank.
- Batch norm: on GPUs the network's batch-norm layers become SyncBatchNorm (small per-GPU
  batches would otherwise normalise with noisy statistics); gloo on CPUs has no
  SyncBatchNorm, so each CPU rank keeps its own running statistics (the final model's are
  recomputed on rank 0 anyway, see engine/batchnorm.py).
- Rank 0 alone writes checkpoints, the model and the log; every rank can resume from the
  checkpoint (they all read it).  A rank that fails ends with its message on stderr and
  torchrun stops the others.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Sequence


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def seed_parts(self) -> List[int]:
        """Extra entropy for a rank's random streams (none on one process: results unchanged)."""
        return [self.rank] if self.active else []

    def average_gradients(self, parameters) -> None:
        if not self.active:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def average(self, values: Sequence[float]) -> List[float]:
        if not self.active:
            return list(values)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._device())
        dist.all_reduce(tensor)
        return (tensor / self.world).tolist()

    def total(self, values: Sequence[int]) -> List[int]:
        if not self.active:
            return list(values)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(list(values), dtype=torch.int64, device=self._device())
        dist.all_reduce(tensor)
        return [int(v) for v in tensor.tolist()]

    def gather(self, value) -> list:
        """Every rank's ``value`` (a picklable object), in rank order, on every rank."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def _device(self):
        import torch
        import torch.distributed as dist

        return (torch.device("cuda", torch.cuda.current_device())
                if dist.get_backend() == "nccl" else torch.device("cpu"))


def current() -> Ranks:
    """The ranks torchrun describes in the environment (one process when it does not)."""
    def number(name, default):
        try:
            return int(os.environ.get(name, default) or default)
        except ValueError:
            return default

    return Ranks(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0))


def start(ranks: Ranks, device):
    """Join the process group; the device this rank computes on."""
    if not ranks.active:
        return device
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def share_weights(net, ranks: Ranks, device):
    """Rank 0's weights on every rank, and SyncBatchNorm on GPUs (see the module's text)."""
    if not ranks.active:
        return net
    import torch
    import torch.distributed as dist

    for tensor in list(net.parameters()) + list(net.buffers()):
        dist.broadcast(tensor.data, 0)
    if device.type == "cuda":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net


def finish(ranks: Ranks) -> None:
    if ranks.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
