"""The resized drag feature, computed only where it is read.

DragGAN resizes the block feature [1, C, hf, wf] bilinearly to the image [1, C, h, w]
and then reads a (2r2+1)^2 window and a small disk per handle. Resizing is linear and
separable, so any rectangle of the resized map is ``Ry[rows] @ F @ Rx[cols]^T`` with the
interpolation matrices Ry [h, hf], Rx [w, wf]: the session computes (and
backpropagates through) just those rectangles instead of the whole C x h x w map. The
values equal ``F.interpolate(..., mode="bilinear", align_corners=False)`` up to float
rounding (the sums run in another order). The dense map is still available for the
mask term, which reads every pixel.
"""

from __future__ import annotations

from typing import Optional

import torch

from .features import resize_features


def interpolation_matrix(out_size: int, in_size: int, device=None) -> torch.Tensor:
    """[out_size, in_size] float32 matrix of 1-D bilinear resizing, align_corners=False:
    source = max((i + 0.5) * in/out - 0.5, 0), split between its two nearest inputs."""
    i = torch.arange(out_size, dtype=torch.float64)
    src = ((i + 0.5) * (in_size / out_size) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    frac = src - i0
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    m[rows, i0] += 1 - frac
    m[rows, i1] += frac
    return m.float().to(device)


class ResizedFeature:
    """Lazy view of ``F.interpolate(feat, [h, w], mode="bilinear")``.

    Args:
        feat: [1, C, hf, wf] block feature (may carry grad).
        h, w: image size.
        matrices: cached (Ry [h, hf], Rx [w, wf]) to reuse across steps.
    """

    def __init__(self, feat: torch.Tensor, h: int, w: int,
                 matrices: Optional[tuple[torch.Tensor, torch.Tensor]] = None):
        self.feat = feat
        self.h, self.w = h, w
        hf, wf = feat.shape[-2:]
        if matrices is None:
            matrices = (interpolation_matrix(h, hf, feat.device),
                        interpolation_matrix(w, wf, feat.device))
        self.ry, self.rx = matrices
        self._dense: Optional[torch.Tensor] = None

    @property
    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ry, self.rx

    def patch(self, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
        """Rows top:bottom, cols left:right of the resized map: [1, C, bottom-top, right-left]."""
        if self._dense is not None:
            return self._dense[:, :, top:bottom, left:right]
        x = torch.matmul(self.ry[top:bottom], self.feat[0])         # [C, ph, wf]
        return torch.matmul(x, self.rx[left:right].t()).unsqueeze(0)  # [1, C, ph, pw]

    def dense(self) -> torch.Tensor:
        """The whole resized map [1, C, h, w] (F.interpolate), computed once."""
        if self._dense is None:
            self._dense = resize_features(self.feat, self.h, self.w)
        return self._dense

    def detach(self) -> "ResizedFeature":
        out = ResizedFeature(self.feat.detach(), self.h, self.w, self.matrices)
        if self._dense is not None:
            out._dense = self._dense.detach()
        return out
