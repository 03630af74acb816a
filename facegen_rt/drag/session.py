"""DragSession: DragGAN point dragging on a StyleGAN2 generator, one image per session.

Semantics (XingangPan/DragGAN viz/renderer.py ``_render_drag_impl``), per step:

1. ws = cat(w[:, :6], w0[:, 6:]): only the first 6 w vectors are optimized (Adam).
2. F = output of the feature block (b128 by default, see features.py), bilinearly
   resized to the image size h x w: [1, C, h, w].
3. References, captured at the first step after the point set changed: F0 = F and,
   per handle, f_i = F0(p_i) [C].
4. Tracking (no grad): each handle moves to the pixel of its (2r+1)^2 window,
   r = round(r2/512*h), whose feature is nearest to f_i in L2.
5. done = every handle within max(2/512*h, 2) px of its target.
6. loss = sum over handles with |t_i - p_i| > 1 of L1(F(q).detach(), F(q + d_i)) over the
   disk q of radius round(r1/512*h) (on DragGAN's linspace grid, see geometry.py),
   d_i = (t_i - p_i)/|t_i - p_i|; plus lambda_mask * L1(F*M_fix, F0*M_fix) when the
   mask (M_fix = 1 - editable) holds both 0 and 1.
7. Unless done: gradient of the loss w.r.t. w[:, :6] only, Adam step.

What differs from the renderer is cost, not math: a step runs the synthesis blocks up to
the feature block only (no later blocks, no ToRGB), and backward computes the gradient
of w[:, :6] only (the generator is frozen, so no weight gradients). The image is
rendered separately, every ``render_every`` steps or on demand with :meth:`render`,
and shows the latent after the step (the renderer shows the one before it).

Points are (x, y) = (column, row) pixels. Adding, moving a handle, or removing a point
re-captures the references at the next step, from the current latent (the renderer
re-captures when the point count changes); moving only a target keeps them. The Adam
state carries across edits, as in the renderer; :meth:`reset` starts it afresh.

Undo: every edit operation (add_point, move_point, remove_point, set_mask, reset) and
every batch of steps pushes a snapshot of the complete state (latent, Adam state,
points, references, mask, step counter) before it changes anything; :meth:`undo` pops
the latest one and restores it exactly. A batch of steps is one :meth:`run` call, or a
sequence of :meth:`step` calls with no edit in between.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import numpy as np
import torch

from .features import (FeatureBlock, resize_features, resolve_feature_block, synth_features,
                       ws_used_up_to)
from .geometry import scaled_radius, stop_distance
from .motion import mask_loss, mask_term_active, motion_direction, motion_loss_one, track_point
from .points import DragPoint, UnknownPointError, check_mask, check_xy, round_xy
from .resized import ResizedFeature
from .state import StepResult, _References, _Snapshot

#: Adam learning rate of the official code, and the paper's for FFHQ/AFHQCat/Car.
LR_CODE = 1e-3
LR_PAPER = 2e-3
#: How many leading w vectors DragGAN optimizes.
NUM_OPTIMIZED_WS = 6


class DragSession:
    """An interactive drag edit of one StyleGAN2 image.

    Args:
        generator: facegen_rt StyleGAN2 ``Generator``. The session freezes its
            parameters (requires_grad False): a drag never trains G.
        seed: latent seed, z = RandomState(seed).randn(1, z_dim) (DragGAN's w0_seed).
        w: start from this latent instead ([w_dim], [1, w_dim], [num_ws, w_dim] or
            [1, num_ws, w_dim]); ``seed`` and ``psi`` are then unused.
        psi: truncation psi of the mapping (0.7 in DragGAN).
        lr: Adam learning rate (``LR_CODE`` = 1e-3, or ``LR_PAPER`` = 2e-3).
        feature_block: see :func:`~facegen_rt.drag.features.resolve_feature_block`.
        r1, r2: motion-supervision and tracking radii at 512^2 (scaled to the image).
        lambda_mask: weight of the mask term (the GUI's 20).
        render_every: render the image every k steps (0 = only on demand).
        noise_mode: "const" as DragGAN ("random" would make steps irreproducible).
        fused_modconv: False = the renderer's non-fused modulated conv.
        dtype: compute dtype of the feature forward (None = float32). bfloat16 is an
            opt-in speed/accuracy trade; losses and tracking stay in float32.
        max_undo: how many snapshots :meth:`undo` can go back.
    """

    def __init__(self, generator, seed: int = 0, w: Optional[torch.Tensor] = None,
                 psi: float = 0.7, lr: float = LR_CODE, feature_block: FeatureBlock = None,
                 r1: float = 3, r2: float = 12, lambda_mask: float = 20, render_every: int = 0,
                 noise_mode: str = "const", fused_modconv: bool = False,
                 dtype: Optional[torch.dtype] = None, max_undo: int = 64):
        self.generator = generator
        self.feature_block = resolve_feature_block(generator, feature_block)
        if not isinstance(render_every, int) or render_every < 0:
            raise ValueError(f"drag: render_every must be an int >= 0, got {render_every!r}")
        if not lr > 0:
            raise ValueError(f"drag: lr must be positive, got {lr!r}")
        generator.requires_grad_(False)
        self.h = self.w_img = int(generator.img_resolution)
        self.lr = float(lr)
        self.r1, self.r2 = r1, r2
        self.r1_px = scaled_radius(r1, self.h)
        self.r2_px = scaled_radius(r2, self.h)
        self.stop_px = stop_distance(self.h)
        self.lambda_mask = float(lambda_mask)
        self.render_every = render_every
        self.noise_mode = noise_mode
        self.fused_modconv = fused_modconv
        self.dtype = dtype
        self.max_undo = max_undo
        self.num_ws = int(generator.num_ws)
        self.num_opt = min(NUM_OPTIMIZED_WS, self.num_ws)
        # Blocks up to the feature block read ws[:, :ws_used]; when that is fewer than
        # num_opt, the later optimized vectors get no gradient (their Adam update is 0).
        self.ws_used = ws_used_up_to(generator, self.feature_block)
        self.device = next(generator.parameters()).device
        self._w0 = self._initial_ws(seed, w, psi)  # [1, num_ws, w_dim]
        self._w = self._w0[:, :self.num_opt].clone().requires_grad_(True)
        self._optim = torch.optim.Adam([self._w], lr=self.lr)
        self._points: dict[int, DragPoint] = {}
        self._next_id = 0
        self._refs: Optional[_References] = None
        self._mask: Optional[torch.Tensor] = None
        self._steps = 0
        self._history: list[_Snapshot] = []
        self._batch_open = False
        self._image: Optional[torch.Tensor] = None
        self._matrices = None  # cached resize matrices (see resized.py)
        self.inversion_loss: Optional[float] = None  # set by from_image

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_image(cls, generator, image: Any, steps: int = 300, progress: bool = True,
                   inversion: Optional[dict] = None, **session_kwargs) -> "DragSession":
        """Invert a real image (see :func:`~facegen_rt.drag.inversion.invert_image`), then
        start a session from the found latent. ``inversion`` holds extra inversion
        options; the final inversion loss is kept as ``session.inversion_loss``."""
        from .inversion import invert_image

        result = invert_image(generator, image, steps=steps, progress=progress,
                              **(inversion or {}))
        session = cls(generator, w=result.ws, **session_kwargs)
        session.inversion_loss = result.loss
        return session

    def _initial_ws(self, seed: int, w: Optional[torch.Tensor], psi: float) -> torch.Tensor:
        G = self.generator
        if w is not None:
            w = torch.as_tensor(w).detach().to(self.device, torch.float32)
            if w.dim() == 1:
                w = w[None]
            if w.dim() == 2 and w.shape[0] in (1,) and w.shape[1] == G.w_dim:
                w = w[:, None].repeat(1, self.num_ws, 1)
            elif w.dim() == 2:
                w = w[None]
            if tuple(w.shape) != (1, self.num_ws, G.w_dim):
                raise ValueError(f"drag: w must have shape (1, {self.num_ws}, {G.w_dim}), "
                                 f"(1, {G.w_dim}) or ({G.w_dim},)")
            if not torch.isfinite(w).all():
                raise ValueError("drag: w has non-finite values")
            return w.clone()
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(self.device,
                                                                               torch.float32)
        c = torch.zeros([1, G.c_dim], device=self.device) if G.c_dim > 0 else None
        with torch.no_grad():
            return G.mapping(z, c, truncation_psi=psi).detach().clone()

    # ---------------------------------------------------------------- state views
    @property
    def steps(self) -> int:
        return self._steps

    @property
    def points(self) -> list[DragPoint]:
        """Copies of the points, in insertion order."""
        return [copy.copy(p) for p in self._points.values()]

    @property
    def mask(self) -> Optional[torch.Tensor]:
        """The editable-region mask [h, w] float (1 = editable), or None."""
        return None if self._mask is None else self._mask.clone()

    @property
    def w0(self) -> torch.Tensor:
        """The initial latent [1, num_ws, w_dim]."""
        return self._w0.clone()

    def ws(self) -> torch.Tensor:
        """The current latent [1, num_ws, w_dim] = cat(w[:, :6], w0[:, 6:]) (detached)."""
        return self._ws().detach()

    def _ws(self) -> torch.Tensor:
        return torch.cat([self._w, self._w0[:, self.num_opt:]], dim=1)

    # ---------------------------------------------------------------- edits
    def add_point(self, handle, target) -> int:
        """Add a handle (rounded to the nearest pixel) and its target; returns the id."""
        hx = round_xy(check_xy("handle", handle, self.h, self.w_img))
        tx = check_xy("target", target, self.h, self.w_img)
        self._begin_edit("add_point")
        pid = self._next_id
        self._next_id += 1
        self._points[pid] = DragPoint(pid, hx, tx, hx)
        self._refs = None
        return pid

    def move_point(self, point_id: int, handle=None, target=None) -> None:
        """Move a point's handle and/or target. A new handle re-captures the references."""
        self._get(point_id)
        if handle is None and target is None:
            raise ValueError("drag: move_point needs a handle or a target")
        hx = tx = None
        if handle is not None:
            hx = round_xy(check_xy("handle", handle, self.h, self.w_img))
        if target is not None:
            tx = check_xy("target", target, self.h, self.w_img)
        self._begin_edit("move_point")
        p = self._points[point_id]
        if hx is not None:
            p.handle = p.origin = hx
            self._refs = None
        if tx is not None:
            p.target = tx

    def remove_point(self, point_id: int) -> None:
        self._get(point_id)
        self._begin_edit("remove_point")
        del self._points[point_id]
        self._refs = None

    def set_mask(self, mask: Any) -> None:
        """Set the editable region ([h, w] bool/float in [0, 1], 1 = editable), or None."""
        m = None if mask is None else check_mask(mask, self.h, self.w_img)
        self._begin_edit("set_mask")
        self._mask = m

    def reset(self, keep_points: bool = False) -> None:
        """Back to the initial latent w0 with a fresh Adam and step counter 0.

        Points and mask are removed, unless ``keep_points``: then handles return to
        where they were placed, and targets and mask stay. Undoable.
        """
        self._begin_edit("reset")
        with torch.no_grad():
            self._w.copy_(self._w0[:, :self.num_opt])
        self._optim = torch.optim.Adam([self._w], lr=self.lr)
        self._refs = None
        self._steps = 0
        if keep_points:
            for p in self._points.values():
                p.handle = p.origin
        else:
            self._points = {}
            self._mask = None

    def undo(self) -> bool:
        """Restore the state before the latest edit or batch of steps; False if none."""
        if not self._history:
            return False
        snap = self._history.pop()
        with torch.no_grad():
            self._w.copy_(snap.w)
        self._optim = torch.optim.Adam([self._w], lr=self.lr)
        self._optim.load_state_dict(copy.deepcopy(snap.optim_state))
        self._points = copy.deepcopy(snap.points)
        self._next_id = snap.next_id
        self._refs = snap.refs
        self._mask = snap.mask
        self._steps = snap.steps
        self._batch_open = False
        self._image = None
        return True

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    def _get(self, point_id: int) -> DragPoint:
        try:
            return self._points[point_id]
        except (KeyError, TypeError):
            raise UnknownPointError(f"drag: no point with id {point_id!r}; "
                                    f"ids: {list(self._points)}") from None

    def _begin_edit(self, label: str) -> None:
        self._push(label)
        self._batch_open = False
        self._image = None

    def _push(self, label: str) -> None:
        self._history.append(_Snapshot(
            w=self._w.detach().clone(), optim_state=copy.deepcopy(self._optim.state_dict()),
            points=copy.deepcopy(self._points), next_id=self._next_id, refs=self._refs,
            mask=self._mask, steps=self._steps, label=label))
        if len(self._history) > self.max_undo:
            del self._history[0]

    # ---------------------------------------------------------------- stepping
    def _features(self) -> torch.Tensor:
        """Feature block output [1, C, hf, wf] with grad w.r.t. the optimized w."""
        return synth_features(self.generator, self._ws(), self.feature_block,
                              noise_mode=self.noise_mode, fused_modconv=self.fused_modconv,
                              dtype=self.dtype)

    def step(self) -> StepResult:
        """One DragGAN iteration (see the module docstring). Raises ValueError without points."""
        if not self._points:
            raise ValueError("drag: add at least one point before stepping")
        if not self._batch_open:
            self._push("steps")
            self._batch_open = True
        feat = self._features()
        resized = ResizedFeature(feat, self.h, self.w_img, self._matrices)
        self._matrices = resized.matrices
        m_fix = None if self._mask is None else 1 - self._mask
        use_mask = mask_term_active(m_fix)
        if use_mask:
            resized.dense()  # read in full by the mask term: resize it once, up front
        if self._refs is None:
            self._refs = _References(feat.detach(), {
                pid: resized.patch(p.handle[1], p.handle[1] + 1, p.handle[0],
                                   p.handle[0] + 1).detach().reshape(-1)
                for pid, p in self._points.items()})
        frozen = resized.detach()
        for pid, p in self._points.items():
            p.handle = track_point(frozen, self._refs.refs[pid], p.handle, self.r2_px)

        done = True
        loss_motion = feat.new_zeros(())
        for p in self._points.values():
            direction = motion_direction(p.handle, p.target)
            dist = torch.linalg.norm(direction)
            if dist > self.stop_px:
                done = False
            if dist > 1:
                term = motion_loss_one(resized, p.handle, direction, self.r1_px)
                if term is not None:
                    loss_motion = loss_motion + term
        loss = loss_motion
        loss_mask = None
        if use_mask:
            if self._refs.feat0_resized is None:
                self._refs.feat0_resized = resize_features(self._refs.feat0, self.h, self.w_img)
            loss_mask = mask_loss(resized.dense(), self._refs.feat0_resized, m_fix)
            loss = loss + self.lambda_mask * loss_mask

        optimized = False
        if not done and loss.requires_grad:
            # Gradient of w only: frozen generator weights get none, and the blocks
            # after the feature block are not in the graph at all.
            (grad,) = torch.autograd.grad(loss, [self._w])
            self._w.grad = grad
            self._optim.step()
            self._w.grad = None
            optimized = True
            self._image = None
        self._steps += 1
        image = None
        if self.render_every and self._steps % self.render_every == 0:
            image = self.render()
        return StepResult(
            step=self._steps, loss=float(loss.detach()), loss_motion=float(loss_motion.detach()),
            loss_mask=None if loss_mask is None else float(loss_mask.detach()),
            handles={pid: p.handle for pid, p in self._points.items()},
            distances={pid: p.distance() for pid, p in self._points.items()},
            done=done, optimized=optimized, image=image)

    def run(self, max_steps: int, callback: Optional[Callable[[StepResult], Any]] = None,
            progress: bool = False) -> list[StepResult]:
        """Step until done or ``max_steps``; one undo batch. ``callback(result)`` runs
        after every step; returning False stops early. ``progress`` shows a tqdm bar.
        Returns the step results."""
        if not isinstance(max_steps, int) or max_steps < 0:
            raise ValueError(f"drag: max_steps must be an int >= 0, got {max_steps!r}")
        self._batch_open = False
        results = []
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=max_steps, desc="dragging", unit="step")
        for _ in range(max_steps):
            result = self.step()
            results.append(result)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(dist=f"{max(result.distances.values()):.1f}")
            if callback is not None and callback(result) is False:
                break
            if result.done:
                break
        if bar is not None:
            bar.close()
        self._batch_open = False  # later step() calls start a batch of their own
        return results

    # ---------------------------------------------------------------- rendering
    @torch.no_grad()
    def render(self) -> torch.Tensor:
        """The full-resolution image of the current latent, [3, R, R] float in [-1, 1]-ish
        (cached until the latent changes)."""
        if self._image is None:
            img = self.generator.synthesis(self._ws().detach(), noise_mode=self.noise_mode,
                                           fused_modconv=self.fused_modconv)
            self._image = img[0].float()
        return self._image

    def render_uint8(self) -> torch.Tensor:
        """[R, R, 3] uint8, converted as DragGAN does: (img * 127.5 + 128).clamp(0, 255)."""
        return to_uint8(self.render())


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[3, H, W] float -> [H, W, 3] uint8 with DragGAN's conversion (note + 128, not 127.5)."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
