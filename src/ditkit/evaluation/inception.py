"""The Inception-v3 network of TF FID (the 2015-12-05 graph), in PyTorch, without torchvision.

This is the network the ADM evaluator (openai/guided-diffusion `evaluations/evaluator.py`) runs as a
TensorFlow graph, with the layer names and shapes of the widely used PyTorch port of its weights,
`pt_inception-2015-12-05-6726825d.pth` (pytorch-fid, torch-fidelity). It differs from torchvision's
Inception-v3 in ways that change FID:

- input: the graph resizes to 299x299 with TF1's `ResizeBilinear` (align_corners=False and no
  half-pixel offset: output pixel i samples input position i * in/out; no antialiasing), then maps
  0..255 values to (v - 128) / 128. pytorch-fid's `2x - 1` on [0, 1] is (v - 127.5) / 127.5 and
  PyTorch's bilinear resize samples (i + 0.5) * in/out - 0.5: both shift FID slightly;
- the average pools inside the mixed blocks ignore zero padding (TF's SAME pooling), and the last
  block (mixed_10, `Mixed_7c`) max-pools its pool branch where torchvision average-pools;
- 1008 classes (`fc` is 2048 -> 1008).

Outputs, as the ADM evaluator reads them from the graph:
- `pool`: pool_3, the 2048-d average-pooled features (FID, precision/recall);
- `spatial`: mixed_6/conv, the ReLU output of the 1x1 branch of the 7th mixed block (`Mixed_6d`,
  (N, 17, 17, 192) in TF's NHWC), first 7 channels, flattened in NHWC order: 17 * 17 * 7 = 2023 (sFID);
- `logits`: pool_3 @ W with W the softmax layer's weights and no bias, the logits of the Inception
  Score code of Salimans et al. (improved-gan) that ADM reuses (torch-fidelity's `logits_unbiased`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ditkit.errors import UserError

# Input side of the TF graph's ResizeBilinear.
INCEPTION_SIZE = 299
# The graph's input normalisation: (v - 128) / 128 on 0..255 values (its Sub and Mul nodes).
PIXEL_CENTER = 128.0
PIXEL_SCALE = 128.0
# pool_3 width.
POOL_DIM = 2048
# ADM's sFID keeps the first 7 channels of mixed_6/conv: 7 * 17 * 17 = 2023 values, close to 2048.
SPATIAL_CHANNELS = 7
SPATIAL_SIZE = 17
SPATIAL_DIM = SPATIAL_CHANNELS * SPATIAL_SIZE * SPATIAL_SIZE
# The 2015 graph's softmax has 1008 outputs (1000 ImageNet classes and 8 unused).
NUM_LOGITS = 1008
# TF's batch-norm epsilon in this graph.
BN_EPS = 1e-3


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU; keys `conv.weight`, `bn.{weight,bias,running_mean,running_var}`."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _pool3x3(x: torch.Tensor, mode: str) -> torch.Tensor:
    """The pool branch's stride-1 3x3 pooling; TF's SAME average pool divides by in-image taps only."""
    if mode == "max":
        return F.max_pool2d(x, 3, stride=1, padding=1)
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """mixed, mixed_1, mixed_2 (`Mixed_5b/c/d`): 35x35, 64 + 64 + 96 + pool_features channels."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_pool3x3(x, "avg"))
        return torch.cat([b1, b5, b3, bp], dim=1)


class InceptionB(nn.Module):
    """mixed_3 (`Mixed_6a`): grid reduction 35 -> 17, 384 + 96 + cin channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, 3, stride=2)], dim=1)


class InceptionC(nn.Module):
    """mixed_4 .. mixed_7 (`Mixed_6b..e`): 17x17 with factorised 7x7 convolutions, 4 x 192 channels.

    The first 192 output channels are the 1x1 branch (`branch1x1`); for `Mixed_6d` that is the
    graph's mixed_6/conv, the source of sFID's spatial features.
    """

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_pool3x3(x, "avg"))
        return torch.cat([b1, b7, bd, bp], dim=1)


class InceptionD(nn.Module):
    """mixed_8 (`Mixed_7a`): grid reduction 17 -> 8, 320 + 192 + cin channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """mixed_9, mixed_10 (`Mixed_7b/c`): 8x8, 320 + 768 + 768 + 192 = 2048 channels.

    `pool` is "avg" for mixed_9 and "max" for mixed_10: the 2015 graph max-pools there.
    """

    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], dim=1)
        bp = self.branch_pool(_pool3x3(x, self.pool))
        return torch.cat([b1, b3, bd, bp], dim=1)


def resize_like_tf1(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """TF1 `ResizeBilinear(align_corners=False)` of (N, C, H, W) float images to (N, C, size, size).

    Output index i samples input position i * (in / out) (no half-pixel offset), its neighbours
    clamped at the last row/column; no antialiasing. Interpolates along W, then H, as TF does.
    """
    _, _, h, w = x.shape
    if (h, w) == (size, size):
        return x
    for dim, n_in in ((3, w), (2, h)):
        scale = torch.tensor(n_in / size, dtype=torch.float32)
        pos = torch.arange(size, dtype=torch.float32) * scale  # float32 as in TF's kernel
        lo = pos.floor().long().clamp_max(n_in - 1)
        hi = (lo + 1).clamp_max(n_in - 1)
        frac = (pos - lo).to(x.device, x.dtype)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        a, b = x.index_select(dim, lo.to(x.device)), x.index_select(dim, hi.to(x.device))
        x = a + (b - a) * frac.view(shape)
    return x


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """Images -> float32 (N, 3, 299, 299), resized and normalised as the TF graph does.

    Args:
        images: uint8 (N, H, W, 3) with values 0..255, or float (N, 3, H, W) in [0, 1].
    """
    if images.dtype == torch.uint8:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise UserError(f"uint8 images must be (N, H, W, 3), got {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float()  # (N, 3, H, W), 0..255
    elif images.is_floating_point():
        if images.ndim != 4 or images.shape[1] != 3:
            raise UserError(f"float images must be (N, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        x = images.float() * 255
    else:
        raise UserError(f"images must be uint8 or float, got {images.dtype}")
    return (resize_like_tf1(x) - PIXEL_CENTER) / PIXEL_SCALE


class FIDInceptionV3(nn.Module):
    """Inception-v3 as in the TF FID graph, with pytorch-fid's weight names (no auxiliary head).

    Call it on uint8 (N, H, W, 3) or float (N, 3, H, W) in [0, 1] images of any size; it returns
    {"pool": (N, 2048), "spatial": (N, 2023), "logits": (N, 1008)} in float32.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        # Only the weight enters `logits` (see the module docstring); the bias is kept for the layout.
        self.fc = nn.Linear(POOL_DIM, NUM_LOGITS)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = to_inception_input(images)  # (N, 3, 299, 299)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = F.max_pool2d(x, 3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, 3, stride=2)  # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (N, 288, 35, 35)
        x = self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))  # (N, 768, 17, 17)
        x = self.Mixed_6d(x)
        # mixed_6/conv is Mixed_6d's 1x1 branch, its first 192 output channels; keep 7, flatten as NHWC.
        spatial = x[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(x), SPATIAL_DIM)  # (N, 17*17*7)
        x = self.Mixed_7a(self.Mixed_6e(x))  # (N, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (N, 2048, 8, 8)
        pool = x.mean(dim=(2, 3))  # pool_3: (N, 2048)
        logits = pool @ self.fc.weight.T  # (N, 1008)
        return {"pool": pool.float(), "spatial": spatial.float(), "logits": logits.float()}
