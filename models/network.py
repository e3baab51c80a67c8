"""BerundaNet-late: an smp U-Net whose encoder and decoder are shared by the
supervised task and the auxiliary task; only the last layers are split.

- supervised head  φs: smp's own segmentation head (decoder features -> C logits)
- auxiliary head   φu: a second head of the same shape (decoder features -> task output)
- jigsaw classifier:   smp's ``aux_params`` pooled linear head on the deepest
  encoder feature (P + 1 permutation classes)

``unet`` is a plain ``smp.Unet``: with no auxiliary head its state dict and its
forward pass are exactly those of a plain U-Net.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional

import torch
from torch import nn

ARCHITECTURE_NAME = "BerundaNet-late"


class NetOutput(NamedTuple):
    seg: torch.Tensor                 # (B, C, H, W) class logits
    aux: Optional[torch.Tensor]       # (B, A, H, W) auxiliary head output, or None
    cls: Optional[torch.Tensor]       # (B, P) permutation logits, or None
    extra: Optional[Dict[str, torch.Tensor]] = None   # a task's own extra passes (task.forward)


class BerundaNetLate(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        encoder_name: str = "resnet34",
        aux_channels: int = 0,
        aux_classes: int = 0,
    ):
        super().__init__()
        import segmentation_models_pytorch as smp

        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        aux_params = dict(classes=aux_classes, pooling="avg") if aux_classes > 0 else None
        # Random initial weights: pretrained ones (ENCODER_WEIGHTS, INIT_MODEL) are loaded
        # by engine/initial_weights.py, strictly and with a clear message when they do not fit.
        self.unet = smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=None,
            in_channels=in_channels,
            classes=num_classes,
            aux_params=aux_params,
        )
        decoder_out = self.unet.segmentation_head[0].in_channels
        self.aux_head = (
            smp.base.SegmentationHead(decoder_out, aux_channels, kernel_size=3)
            if aux_channels > 0
            else None
        )

    @property
    def output_stride(self) -> int:
        return self.unet.encoder.output_stride

    def forward(self, x: torch.Tensor) -> NetOutput:
        features = self.encode(x)
        return self.heads(features, self.decode(features))

    # The parts of forward(), for tasks that need extra passes (e.g. a second decoder pass on
    # perturbed features): forward(x) == heads(f, decode(f)) with f = encode(x).
    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Encoder features, full resolution first (smp: [x, stride 2, …, stride 32])."""
        self.unet.check_input_shape(x)
        return self.unet.encoder(x)

    def decode(self, features: List[torch.Tensor]) -> torch.Tensor:
        return self.unet.decoder(features)

    def heads(self, features: List[torch.Tensor], decoded: torch.Tensor) -> NetOutput:
        seg = self.unet.segmentation_head(decoded)
        aux = self.aux_head(decoded) if self.aux_head is not None else None
        cls = (
            self.unet.classification_head(features[-1])
            if self.unet.classification_head is not None
            else None
        )
        return NetOutput(seg, aux, cls)

    def shared_parameters(self) -> List[nn.Parameter]:
        """Encoder and decoder weights: what the supervised and auxiliary losses share."""
        return list(self.unet.encoder.parameters()) + list(self.unet.decoder.parameters())


def build_network(architecture: dict) -> BerundaNetLate:
    """Build the network from the JSON-able description stored in a model file."""
    return BerundaNetLate(
        in_channels=int(architecture["in_channels"]),
        num_classes=int(architecture["num_classes"]),
        encoder_name=architecture["encoder"],
        aux_channels=int(architecture.get("aux_channels", 0)),
        aux_classes=int(architecture.get("aux_classes", 0)),
    )


def describe_network(in_channels: int, num_classes: int, encoder: str, aux_channels: int,
                     aux_classes: int) -> dict:
    return {
        "name": ARCHITECTURE_NAME,
        "encoder": encoder,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "aux_channels": aux_channels,
        "aux_classes": aux_classes,
    }
