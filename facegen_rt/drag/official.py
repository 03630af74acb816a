"""The official loop formulation of a drag step, for benchmarks and parity tests.

:class:`OfficialDragLoop` computes a step the way DragGAN's renderer does
(XingangPan/DragGAN viz/renderer.py ``_render_drag_impl``), cost included:

* the full generator forward every step: every synthesis block, every ToRGB, the image
  (it is returned, as the renderer shows it);
* all ops on their reference backends (``forced_backend("reference")``);
* the generator's parameters require grad during the step, as in the renderer's freshly
  rebuilt module, so backward from the b128 feature also computes (and accumulates)
  weight gradients; the previous requires_grad flags are restored afterwards and the
  weight gradients dropped;
* the whole latent w [1, num_ws, w_dim] is the Adam parameter (its unused rows get zero
  gradients), the feature is resized to the full image and every loss is taken on it;
* points are [row, col] lists, as the renderer keeps them.

The math equals :meth:`facegen_rt.drag.DragSession.step` (the tests check the handle
updates, losses and latents agree from the same state); only the cost differs.

Benchmark use, same weights and points for both providers::

    session = DragSession(G, seed=0)
    session.add_point((x, y), (tx, ty))
    loop = OfficialDragLoop.from_session(session)      # before the session steps
    points, targets = [[y, x]], [[ty, tx]]             # [row, col], as the renderer
    loop.step(points, targets)                         # one official iteration
    session.step()                                     # one facegen_rt iteration
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from facegen_rt.ops import forced_backend

from .features import resolve_feature_block


@contextlib.contextmanager
def _params_require_grad(module: torch.nn.Module) -> Iterator[None]:
    saved = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
            p.grad = None


class OfficialDragLoop:
    """Renderer state (w, w0, Adam, references) and its per-step computation.

    Args:
        generator: a facegen_rt StyleGAN2 Generator.
        w0: [1, num_ws, w_dim] initial latent (DragGAN's self.w0).
        w: starting latent (default w0); Adam optimizes all of it.
        lr: Adam learning rate.
        feature_idx: DragGAN's feature_idx (None = the session's default block).
        optim_state: an Adam state_dict for w to continue from (see from_session).
    """

    def __init__(self, generator, w0: torch.Tensor, w: Optional[torch.Tensor] = None,
                 lr: float = 1e-3, feature_idx: Optional[int] = None, r1: float = 3,
                 r2: float = 12, lambda_mask: float = 20, noise_mode: str = "const",
                 optim_state: Optional[dict] = None):
        self.G = generator
        self.w0 = w0.detach().clone()
        self.w = (w0 if w is None else w).detach().clone().requires_grad_(True)
        self.w_optim = torch.optim.Adam([self.w], lr=lr)
        if optim_state is not None:
            self.w_optim.load_state_dict(optim_state)
        self.feature_idx = resolve_feature_block(generator, feature_idx)
        self.r1, self.r2, self.lambda_mask = r1, r2, lambda_mask
        self.noise_mode = noise_mode
        self.feat_refs = None
        self.feat0_resize = None
        self.num_points = None

    @classmethod
    def from_session(cls, session) -> "OfficialDragLoop":
        """The same state as a DragSession (latent, Adam moments, references)."""
        n = session.num_opt
        w0 = session.w0
        w = torch.cat([session._w.detach(), w0[:, n:]], dim=1)
        state = session._optim.state_dict()
        padded = {"state": {}, "param_groups": state["param_groups"]}
        for key, st in state["state"].items():
            padded["state"][key] = {
                k: (torch.cat([v, torch.zeros_like(w0[:, n:])], dim=1)
                    if torch.is_tensor(v) and v.dim() == 3 else
                    v.clone() if torch.is_tensor(v) else v)
                for k, v in st.items()}
        loop = cls(session.generator, w0, w, lr=session.lr, feature_idx=session.feature_block,
                   r1=session.r1, r2=session.r2, lambda_mask=session.lambda_mask,
                   noise_mode=session.noise_mode, optim_state=padded)
        if session._refs is not None:
            loop.feat0_resize = F.interpolate(session._refs.feat0, [session.h, session.w_img],
                                              mode="bilinear")
            loop.feat_refs = [session._refs.refs[p.id][None] for p in session.points]
            loop.num_points = len(loop.feat_refs)
        return loop

    def step(self, points: list[list[int]], targets: list[list[float]],
             mask: Optional[torch.Tensor] = None) -> dict:
        """One renderer iteration.

        Args:
            points: [[row, col], ...] handles; updated in place by tracking.
            targets: [[row, col], ...].
            mask: M_fix [h, w] (1 = keep fixed), as the GUI passes it, or None.
        Returns:
            dict(points, stop, loss, loss_motion, loss_fix, image [1, 3, R, R]).
        """
        G = self.G
        with forced_backend("reference"), _params_require_grad(G.synthesis):
            ws = torch.cat([self.w[:, :6], self.w0[:, 6:]], dim=1)
            if self.num_points is not None and self.num_points != len(points):
                self.feat_refs = None
            self.num_points = len(points)
            img, feats = G.synthesis(ws, noise_mode=self.noise_mode, fused_modconv=False,
                                     return_features=True)
            h = w = G.img_resolution
            X = torch.linspace(0, h, h)
            Y = torch.linspace(0, w, w)
            xx, yy = torch.meshgrid(X, Y, indexing="ij")
            feat_resize = F.interpolate(feats[self.feature_idx], [h, w], mode="bilinear")
            if self.feat_refs is None:
                self.feat0_resize = F.interpolate(feats[self.feature_idx].detach(), [h, w],
                                                  mode="bilinear")
                self.feat_refs = [self.feat0_resize[:, :, round(p[0]), round(p[1])]
                                  for p in points]

            with torch.no_grad():
                for j, point in enumerate(points):
                    r = round(self.r2 / 512 * h)
                    up, down = max(point[0] - r, 0), min(point[0] + r + 1, h)
                    left, right = max(point[1] - r, 0), min(point[1] + r + 1, w)
                    patch = feat_resize[:, :, up:down, left:right]
                    dist = torch.linalg.norm(patch - self.feat_refs[j].reshape(1, -1, 1, 1), dim=1)
                    idx = torch.min(dist.view(1, -1), -1)[1].item()
                    width = right - left
                    points[j] = [idx // width + up, idx % width + left]

            loss_motion = torch.zeros(())
            stop = True
            for j, point in enumerate(points):
                direction = torch.tensor([targets[j][1] - point[1], targets[j][0] - point[0]],
                                         dtype=torch.float32)
                norm = torch.linalg.norm(direction)
                if norm > max(2 / 512 * h, 2):
                    stop = False
                if norm > 1:
                    distance = ((xx - point[0]) ** 2 + (yy - point[1]) ** 2) ** 0.5
                    relis, reljs = torch.where(distance < round(self.r1 / 512 * h))
                    if relis.numel() == 0:
                        continue  # empty disk (tiny images): the renderer would get NaN
                    direction = direction / (torch.linalg.norm(direction) + 1e-7)
                    gridh = (relis + direction[1]) / (h - 1) * 2 - 1
                    gridw = (reljs + direction[0]) / (w - 1) * 2 - 1
                    grid = torch.stack([gridw, gridh], dim=-1).unsqueeze(0).unsqueeze(0)
                    shifted = F.grid_sample(feat_resize.float(), grid,
                                            align_corners=True).squeeze(2)
                    loss_motion = loss_motion + F.l1_loss(feat_resize[:, :, relis, reljs].detach(),
                                                          shifted)
            loss = loss_motion
            loss_fix = None
            if mask is not None and mask.min() == 0 and mask.max() == 1:
                m = mask[None, None]
                loss_fix = F.l1_loss(feat_resize * m, self.feat0_resize * m)
                loss = loss + self.lambda_mask * loss_fix
            if not stop and loss.requires_grad:
                self.w_optim.zero_grad()
                loss.backward()
                self.w_optim.step()
        return dict(points=[list(p) for p in points], stop=stop, loss=float(loss.detach()),
                    loss_motion=float(loss_motion.detach()),
                    loss_fix=None if loss_fix is None else float(loss_fix.detach()),
                    image=img.detach())
