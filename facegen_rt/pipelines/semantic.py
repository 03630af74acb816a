"""SCA-DM semantic image synthesis: a label map (and style references) in, faces out.

::

    pipe = SemanticPipeline.from_pretrained()            # the bundled SynthFace model
    out = pipe.generate(mask, reference=img, reference_mask=img_mask, steps=50, seed=0)
    out.images        # float32 [N, 3, H, W] in [0, 1]
    out.step_latency  # seconds per sampler step

Style: every reference gives 19 region tokens (the style encoder); the tokens used are
those of reference 0, with the rows of the regions in ``region_sources`` copied from
the chosen references (``c[:, r, :] = c_ref[:, r, :]``, SCA-DM's region swap):

* full style transfer: one reference, no ``region_sources``;
* per-region transfer: ``reference=[base, donor]``, ``region_sources={"hair": 1}``;
* mixing: ``region_sources={"hair": 1, "skin": 2, "eyes": 3}`` over several references.

Per-run caches: the mask's SPADE gamma/beta maps, resized masks and the style tokens'
cross-attention K/V are computed once per call (:class:`UNetConditioning`) instead of
once per step; the unconditional branch (zero mask, zero tokens) gives constants
that are computed once per pipeline and reused by every later call. ``use_cache=False``
recomputes everything at every step (for measuring what the caches save).

Classifier-free guidance follows the official sampler: the unconditional input is
context zeros [B, 19, D] with a zero segmentation, eps = eps_u + s (eps_c - eps_u).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from facegen_rt.data.synthface.classes import CLASS_ID, CLASS_NAMES, NUM_CLASSES
from facegen_rt.models.sca_dm import (MultiScaleStyleEncoder, SCADMConfig, SCADMUNet,
                                      UNetConditioning, VQModel, build_scadm, get_preset)
from facegen_rt.ops import forced_backend
from facegen_rt.sampling import NoiseSchedule, Sampler, StepTimer, get_sampler, guided

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_MODEL = ASSETS / "scadm_small"
EXAMPLES = ASSETS / "examples"
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp64": torch.float64, "float64": torch.float64}
BACKENDS = ("auto", "reference", "cpu", "triton")

#: Region groups accepted in ``region_sources`` besides the 19 class names.
REGION_ALIASES: dict[str, tuple[str, ...]] = {
    "eyes": ("l_eye", "r_eye"), "brows": ("l_brow", "r_brow"), "ears": ("l_ear", "r_ear"),
    "lips": ("u_lip", "l_lip"), "glasses": ("eye_g",), "earrings": ("ear_r",),
    "necklace": ("neck_l",), "clothes": ("cloth",), "face": ("skin", "nose"),
}

PathLike = Union[str, Path]


# ---------------------------------------------------------------------------- results
@dataclass
class GenerationResult:
    """Output of :meth:`SemanticPipeline.generate`.

    Attributes:
        images: float32 [N, 3, H, W] in [0, 1], N = masks x batch (mask-major).
        latents: [N, C, h, w] final latents (model dtype), before the VQ decode.
        context: [1, 19, D] style tokens used (after region transfer); [M, 19, D] with
            ``pair_references``.
        reference_contexts: [R, 19, D] tokens of each reference.
        step_latency: seconds per sampler step.
        setup_s: style encoding and conditioning caches; decode_s: VQ decode;
        total_s: the whole call.
        info: sampler, steps, guidance, seed, dtype, device, backend, model calls.
    """

    images: torch.Tensor
    latents: torch.Tensor
    context: torch.Tensor
    reference_contexts: torch.Tensor
    step_latency: list = field(default_factory=list)
    setup_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    info: dict = field(default_factory=dict)

    def to_uint8(self) -> np.ndarray:
        """uint8 [N, H, W, 3]."""
        x = (self.images.clamp(0, 1) * 255.0).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()

    def save(self, out_dir: PathLike, prefix: str = "sample") -> list[Path]:
        """Write ``<prefix>_<i>.png`` files; returns their paths."""
        from PIL import Image

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, img in enumerate(self.to_uint8()):
            p = out / f"{prefix}_{i:03d}.png"
            Image.fromarray(img).save(p)
            paths.append(p)
        return paths


# ---------------------------------------------------------------------------- inputs
def load_label_png(path: PathLike) -> np.ndarray:
    """uint8 [H, W] class ids from a label PNG (mode L or P: the pixel values are ids)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{path}: a label map must be a single-channel PNG of class ids "
                             f"(mode L or P), got mode {im.mode}")
        return np.array(im)


def load_image(path: PathLike) -> np.ndarray:
    """uint8 [H, W, 3] RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def _to_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, (str, Path)):
        raise TypeError(f"{what}: internal error, paths are loaded before conversion")
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.array(x, copy=True))
    try:  # PIL images and array-likes
        return torch.from_numpy(np.array(x))
    except Exception:  # pragma: no cover - message below
        raise TypeError(f"{what}: expected a torch tensor, numpy array, PIL image or path, "
                        f"got {type(x).__name__}") from None


def labels_from(mask: Any, size: int, what: str = "mask") -> torch.Tensor:
    """Validate a label map: int64 [M, H, W] with values in 0..18.

    Accepts [H, W] or [M, H, W] integer tensors/arrays, float ones holding whole
    numbers, PIL images or PNG paths. Raises ValueError/TypeError naming ``what``.
    """
    if isinstance(mask, (str, Path)):
        mask = load_label_png(mask)
    t = _to_tensor(mask, what)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() == 4 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 3:
        raise ValueError(f"{what}: expected a label map [H, W] or [N, H, W] of class ids, "
                         f"got shape {tuple(t.shape)}")
    if tuple(t.shape[-2:]) != (size, size):
        raise ValueError(f"{what}: size {t.shape[-2]}x{t.shape[-1]} does not match the model's "
                         f"{size}x{size} (resize it with nearest-neighbour first)")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{what}: dtype {t.dtype} is not a label map (use integer class ids)")
    if t.is_floating_point():
        if torch.isnan(t).any() or torch.isinf(t).any():
            raise ValueError(f"{what}: contains NaN or inf")
        if not torch.equal(t, t.round()):
            raise ValueError(f"{what}: float label map with fractional values; labels must be "
                             "whole class ids 0..18 (is this an image instead of a label map?)")
    t = t.to(torch.int64)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= NUM_CLASSES):
        bad = sorted(set(t[(t < 0) | (t >= NUM_CLASSES)].unique().tolist()))[:8]
        raise ValueError(f"{what}: unknown labels {bad}; class ids must be in 0..{NUM_CLASSES - 1}")
    return t


def images_from(ref: Any, size: int, what: str = "reference") -> torch.Tensor:
    """Validate reference images: float32 [N, 3, H, W] in [0, 1].

    Accepts float [3, H, W] / [N, 3, H, W] in [0, 1], uint8 [H, W, 3] / [N, H, W, 3]
    (or channels-first uint8), PIL images, paths, or a list of any of these.
    """
    if isinstance(ref, (list, tuple)):
        if not ref:
            raise ValueError(f"{what}: empty list of references")
        return torch.cat([images_from(r, size, f"{what}[{i}]") for i, r in enumerate(ref)])
    if isinstance(ref, (str, Path)):
        ref = load_image(ref)
    t = _to_tensor(ref, what)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise ValueError(f"{what}: expected an image [3, H, W] / [H, W, 3] or a batch of them, "
                         f"got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        if t.shape[-1] == 3 and t.shape[1] != 3:
            t = t.permute(0, 3, 1, 2)
        t = t.float() / 255.0
    elif t.is_floating_point():
        if t.shape[1] != 3 and t.shape[-1] == 3:
            raise ValueError(f"{what}: float images must be channels-first [N, 3, H, W], "
                             f"got {tuple(t.shape)}")
        t = t.float()
        if torch.isnan(t).any() or torch.isinf(t).any():
            raise ValueError(f"{what}: contains NaN or inf")
        if float(t.min()) < -1e-3 or float(t.max()) > 1 + 1e-3:
            raise ValueError(f"{what}: float images must be in [0, 1], got values in "
                             f"[{float(t.min()):.3g}, {float(t.max()):.3g}]")
        t = t.clamp(0, 1)
    else:
        raise TypeError(f"{what}: dtype {t.dtype} is not supported (uint8 or float in [0, 1])")
    if t.shape[1] != 3:
        raise ValueError(f"{what}: expected 3 colour channels, got shape {tuple(t.shape)}")
    if tuple(t.shape[-2:]) != (size, size):
        raise ValueError(f"{what}: size {t.shape[-2]}x{t.shape[-1]} does not match the model's "
                         f"{size}x{size}")
    return t


def region_ids(region: Union[str, int]) -> tuple[int, ...]:
    """Class ids of a region name, alias ("eyes", "lips", ...) or id."""
    if isinstance(region, (int, np.integer)) and not isinstance(region, bool):
        if not 0 <= int(region) < NUM_CLASSES:
            raise ValueError(f"region id {region} is not in 0..{NUM_CLASSES - 1}")
        return (int(region),)
    if isinstance(region, str):
        key = region.strip().lower()
        if key in CLASS_ID:
            return (CLASS_ID[key],)
        if key in REGION_ALIASES:
            return tuple(CLASS_ID[n] for n in REGION_ALIASES[key])
    raise ValueError(f"unknown region {region!r}; use a class name {list(CLASS_NAMES)}, "
                     f"an alias {sorted(REGION_ALIASES)} or an id 0..{NUM_CLASSES - 1}")


def mix_contexts(contexts: torch.Tensor,
                 region_sources: Optional[Mapping[Union[str, int], int]]) -> torch.Tensor:
    """[R, 19, D] reference tokens -> [1, 19, D]: reference 0's tokens with the rows of
    each region in ``region_sources`` copied from its reference (c[:, i] = c_ref[:, i])."""
    out = contexts[:1].clone()
    for region, src in (region_sources or {}).items():
        if isinstance(src, bool) or not isinstance(src, (int, np.integer)):
            raise TypeError(f"region_sources[{region!r}] must be a reference index, got {src!r}")
        if not 0 <= int(src) < contexts.shape[0]:
            raise ValueError(f"region_sources[{region!r}] = {src} but only {contexts.shape[0]} "
                             f"reference(s) were given")
        for i in region_ids(region):
            out[:, i, :] = contexts[int(src), i, :]
    return out


def onehot(labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int64 [N, H, W] -> [N, 19, H, W] one-hot."""
    return F.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).to(dtype)


def check_backend(backend: Optional[str], device: torch.device) -> str:
    """Validate a backend name and that it can run on ``device``; returns the name."""
    name = "auto" if backend in (None, "", "auto") else str(backend)
    if name not in BACKENDS:
        raise ValueError(f"unsupported backend {backend!r}; choose one of {list(BACKENDS)}")
    if name == "auto" or name == "reference":
        return name
    from facegen_rt.ops import masked_cross_attention as mca, spade_norm as sn

    for mod in (sn, mca):
        b = mod.BACKENDS.get(name)
        why = b.unavailable()
        if why is not None:
            raise ValueError(f"backend {name!r} is not available here ({why}); "
                             "use backend='auto' or 'reference'")
        if device.type not in b.devices and not (name == "triton" and _interpreted()):
            raise ValueError(f"backend {name!r} runs on {list(b.devices)} tensors, but the "
                             f"pipeline is on {device.type}")
    return name


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype.lower() not in DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; choose one of {sorted(DTYPES)}")
        return DTYPES[dtype.lower()]
    if dtype not in (torch.float32, torch.bfloat16, torch.float64):
        raise ValueError(f"unsupported dtype {dtype}; use float32, bfloat16 or float64 "
                         "(float16 is not supported)")
    return dtype


# ---------------------------------------------------------------------------- pipeline
class SemanticPipeline:
    """SCA-DM inference: style encoder, UNet with per-run caches, sampler, VQ decode.

    Args:
        unet, style_encoder, vq: the three networks (moved to ``device``/``dtype``).
        config: their :class:`SCADMConfig` (image size, schedule, latent scale).
        device: "cpu" or a CUDA device.
        dtype: float32, bfloat16 (or "bf16"), or float64.
        backend: fused-op backend for every call ("auto", "reference", "cpu", "triton").
        default_reference: (image, label map) used when ``generate`` gets no reference.
        prediction: what the UNet outputs: "eps" (the official models) or "v"
            (v = sqrt(abar) eps - sqrt(1 - abar) x0); the samplers always receive eps,
            converted as eps = sqrt(abar) v + sqrt(1 - abar) x_t. A bundle's
            ``pipeline.json`` sets it in :meth:`from_pretrained`.
        default_guidance: guidance scale used when ``generate`` gets ``guidance=None``
            (``pipeline.json`` may recommend one for its model).
        consistency: set for a distilled student (the ``"consistency"`` entry of its
            ``pipeline.json``, see :mod:`facegen_rt.distill.student`): the "lcm"
            sampler then uses the student's grid (``consistency["sampler"]``). A UNet
            with ``takes_guidance`` receives the guidance scale as an input instead
            of running classifier-free guidance.
    """

    def __init__(self, unet: SCADMUNet, style_encoder: MultiScaleStyleEncoder, vq: VQModel,
                 config: SCADMConfig, *, device: Union[str, torch.device] = "cpu",
                 dtype: Union[str, torch.dtype] = torch.float32, backend: Optional[str] = None,
                 default_reference: Optional[tuple] = None, prediction: str = "eps",
                 default_guidance: float = 1.0, consistency: Optional[dict] = None):
        if prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}")
        self.prediction = prediction
        self.default_guidance = float(default_guidance)
        self.consistency = dict(consistency) if consistency else None
        self.config = config.validate()
        self.device = torch.device(device)
        self.dtype = check_dtype(dtype)
        if self.device.type == "cpu" and self.dtype == torch.bfloat16:
            from facegen_rt.info import cpu_bf16_instructions

            if not cpu_bf16_instructions():
                warnings.warn("bfloat16 on a CPU without bf16 instructions runs far slower "
                              "than float32 (see `facegen-rt info`)", stacklevel=2)
        self.backend = check_backend(backend, self.device)
        self.unet = unet.to(self.device, self.dtype).eval().requires_grad_(False)
        self.style_encoder = style_encoder.to(self.device, self.dtype).eval().requires_grad_(False)
        self.vq = vq.to(self.device, self.dtype).eval().requires_grad_(False)
        self.schedule = NoiseSchedule.from_config(config.schedule)
        self.default_reference = default_reference
        self._uncond: dict = {}  # (latent size, batch) -> unconditional UNetConditioning

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path: Optional[PathLike] = None, **kwargs) -> "SemanticPipeline":
        """Load a bundle written by :func:`facegen_rt.weights.save_scadm` (default: the
        bundled SynthFace model, with the bundled example as default reference).
        Weights stored in bf16 are loaded to fp32 unless ``dtype`` says otherwise."""
        from facegen_rt.weights import load_scadm

        bundled = path is None
        path = Path(path) if path is not None else BUNDLED_MODEL
        if not (path / "model.safetensors").is_file() and path.suffix != ".safetensors":
            raise FileNotFoundError(f"no SCA-DM bundle at {path} (model.safetensors + config.json)")
        modules, cfg, _ = load_scadm(path, dtype=torch.float32)
        if "vq" not in modules:
            raise ValueError(f"bundle {path} has no VQ first stage; the pipeline needs one")
        if bundled and "default_reference" not in kwargs:
            kwargs["default_reference"] = bundled_example(cfg.image_size)
        settings = path / "pipeline.json" if path.is_dir() else path.with_name("pipeline.json")
        if settings.is_file():
            import json

            doc = json.loads(settings.read_text())
            kwargs.setdefault("prediction", doc.get("prediction", "eps"))
            kwargs.setdefault("default_guidance", float(doc.get("guidance", 1.0)))
            kwargs.setdefault("consistency", doc.get("consistency"))
        unet = modules["unet"]
        if kwargs.get("consistency"):  # a distilled student (may carry a guidance embedding)
            from facegen_rt.distill.student import load_student_unet

            unet = load_student_unet(path, unet, kwargs["consistency"])
        return cls(unet, modules["style_encoder"], modules["vq"], cfg, **kwargs)

    @classmethod
    def from_preset(cls, preset: Union[str, SCADMConfig] = "tiny", seed: int = 0,
                    **kwargs) -> "SemanticPipeline":
        """Randomly initialised networks of a preset (tests and benchmarks)."""
        cfg = get_preset(preset) if isinstance(preset, str) else preset.validate()
        torch.manual_seed(seed)
        m = build_scadm(cfg)
        return cls(m["unet"], m["style_encoder"], m["vq"], cfg, **kwargs)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    # ------------------------------------------------------------------ style
    @torch.no_grad()
    def encode_style(self, reference: Any, reference_mask: Any = None) -> torch.Tensor:
        """[R, 19, D] style tokens of R references (see :func:`images_from`).

        ``reference_mask``: a label map per reference (one map, a batch [R, H, W], or a
        list with None entries); a missing map comes from the bundled face parser.
        """
        images = images_from(reference, self.image_size)
        labels = self._reference_labels(images, reference_mask)
        x = (images * 2 - 1).to(self.device, self.dtype)
        return self.style_encoder(x, onehot(labels, self.dtype).to(self.device))

    def _reference_labels(self, images: torch.Tensor, reference_mask: Any) -> torch.Tensor:
        n = images.shape[0]
        if reference_mask is None:
            masks = [None] * n
        elif isinstance(reference_mask, (list, tuple)):
            if len(reference_mask) != n:
                raise ValueError(f"reference_mask: {len(reference_mask)} maps for {n} references")
            masks = list(reference_mask)
        else:
            lab = labels_from(reference_mask, self.image_size, "reference_mask")
            if lab.shape[0] != n:
                raise ValueError(f"reference_mask: {lab.shape[0]} maps for {n} references")
            masks = list(lab)
        out = []
        for i, m in enumerate(masks):
            if m is None:
                out.append(parse_reference(images[i:i + 1]))
            else:
                out.append(labels_from(m, self.image_size, f"reference_mask[{i}]"))
        return torch.cat(out)

    # ------------------------------------------------------------------ conditioning
    def _conditioning(self, labels: torch.Tensor, context: torch.Tensor,
                      latent: tuple[int, int]) -> UNetConditioning:
        seg = onehot(labels, self.dtype).to(self.device)
        return self.unet.prepare_conditioning(seg, context.to(self.device, self.dtype), latent)

    def uncond_conditioning(self, latent: tuple[int, int]) -> UNetConditioning:
        """The unconditional branch's conditioning (batch 1): its SPADE maps (from a zero
        mask), K/V (of zero tokens) and masks are constants, computed once per pipeline."""
        key = (latent, self.dtype, self.device)
        cond = self._uncond.get(key)
        if cond is None:
            S, R, D = self.image_size, NUM_CLASSES, self.config.unet.context_dim
            seg = torch.zeros(1, R, S, S, device=self.device, dtype=self.dtype)
            ctx = torch.zeros(1, R, D, device=self.device, dtype=self.dtype)
            cond = self.unet.prepare_conditioning(seg, ctx, latent)
            self._uncond[key] = cond
        return cond

    def _joint(self, uncond: UNetConditioning, cond: UNetConditioning, B: int) -> UNetConditioning:
        """A batch-2B conditioning [unconditional; conditional] assembled from the two
        filled caches, so batched CFG reuses both instead of recomputing."""
        def cat(u, c):
            return torch.cat([u.expand(B, *u.shape[1:]), c.expand(B, *c.shape[1:])])

        joint = UNetConditioning(seg=cat(uncond.seg, cond.seg), context=cat(uncond.context, cond.context))
        joint.seg_resized = {k: cat(uncond.seg_resized[k], v) for k, v in cond.seg_resized.items()}
        joint.masks = {k: cat(uncond.masks[k], v) for k, v in cond.masks.items()}
        joint.spade = {k: (cat(uncond.spade[k][0], g), cat(uncond.spade[k][1], b))
                       for k, (g, b) in cond.spade.items()}
        joint.kv = {k: (cat(uncond.kv[k][0], kk), cat(uncond.kv[k][1], vv))
                    for k, (kk, vv) in cond.kv.items()}
        joint.claim(self.unet)
        return joint

    def denoiser(self, **unet_kwargs):
        """``model_fn(x, t) -> eps`` calling the UNet with ``unet_kwargs`` (``cond=`` or
        ``context=``/``seg=``), converting a v-prediction to eps."""
        if self.prediction == "eps":
            return lambda x, t: self.unet(x, t, **unet_kwargs)
        abar = self.schedule.alphas_cumprod.to(self.device)

        def model_fn(x, t):
            v = self.unet(x, t, **unet_kwargs)
            a = abar[t].view(-1, *([1] * (x.dim() - 1)))
            work = torch.promote_types(x.dtype, torch.float32)
            eps = a.sqrt().to(work) * v.to(work) + (1 - a).sqrt().to(work) * x.to(work)
            return eps.to(x.dtype)

        return model_fn

    # ------------------------------------------------------------------ generate
    @torch.no_grad()
    def generate(self, mask: Any, reference: Any = None, reference_mask: Any = None,
                 region_sources: Optional[Mapping[Union[str, int], int]] = None, *,
                 steps: int = 50, sampler: Union[str, Sampler] = "ddim",
                 guidance: Optional[float] = None,
                 eta: float = 0.0, seed: int = 0, batch: int = 1,
                 backend: Optional[str] = None, progress: bool = False,
                 use_cache: bool = True, cfg_batched: bool = True,
                 pair_references: bool = False,
                 x_T: Optional[torch.Tensor] = None) -> GenerationResult:
        """Generate faces for ``mask``.

        Args:
            mask: label map(s) [H, W] or [M, H, W] of class ids 0..18 at the model's
                image size (tensor, array, PIL image or PNG path).
            reference: style image(s) (see :func:`images_from`); None uses the pipeline's
                default reference (the bundled example for the bundled model).
            reference_mask: label map(s) of the references; None runs the bundled parser.
            region_sources: {region: reference index}, regions copied from other
                references (names, aliases such as "eyes", or ids).
            steps: sampler steps; sampler: "ddim", "dpmpp2m", "lcm" (1, 2, 4 or 8
                steps; for distilled students) or a Sampler object;
            guidance: classifier-free guidance scale s (1: no unconditional branch;
                None: the pipeline's ``default_guidance``);
            eta: DDIM stochasticity; seed: CPU generator seed (same output on every
                backend within tolerance); batch: samples per mask.
            backend: fused-op backend for this call (default: the pipeline's).
            progress: show a tqdm bar over the steps.
            use_cache: False recomputes SPADE maps and K/V at every step.
            cfg_batched: evaluate both CFG branches in one batched call.
            pair_references: with M masks and M references, style mask i with reference i
                alone (e.g. reconstruction over a data set); no region_sources then.
            x_T: optional initial noise [M * batch, C, h, w] (overrides the seed's).
        Returns:
            :class:`GenerationResult`.
        """
        t_start = time.perf_counter()
        labels = labels_from(mask, self.image_size, "mask")
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        guidance = float(self.default_guidance if guidance is None else guidance)
        if not np.isfinite(guidance) or guidance < 0:
            raise ValueError(f"guidance must be a finite number >= 0, got {guidance}")
        backend = check_backend(backend if backend is not None else self.backend, self.device)
        smp = sampler if not isinstance(sampler, str) else get_sampler(sampler, eta=eta)
        if isinstance(sampler, str) and smp.name == "lcm" and self.consistency:
            smp = get_sampler(sampler, eta=eta, **self.consistency.get("sampler", {}))
        # A guidance-embedded student takes the scale as an input: one call per step, no CFG.
        embedded = bool(getattr(self.unet, "takes_guidance", False))
        cfg_scale = 1.0 if embedded else guidance
        extra = {"guidance": guidance} if embedded else {}
        if not isinstance(smp, Sampler):
            raise TypeError(f"sampler must be a name or a Sampler, got {type(sampler).__name__}")

        if reference is None:
            if self.default_reference is None:
                raise ValueError("generate needs a reference image for the style (this pipeline "
                                 "has no default reference)")
            if reference_mask is not None:
                raise ValueError("reference_mask given without a reference")
            reference, reference_mask = self.default_reference

        with forced_backend(backend):
            ref_ctx = self.encode_style(reference, reference_mask)            # [R, 19, D]
            M = labels.shape[0]
            if pair_references:
                if region_sources:
                    raise ValueError("pair_references and region_sources cannot be combined")
                if ref_ctx.shape[0] != M:
                    raise ValueError(f"pair_references: {ref_ctx.shape[0]} references for {M} masks")
                context = ref_ctx                                            # [M, 19, D]
            else:
                context = mix_contexts(ref_ctx, region_sources)              # [1, 19, D]
            N = M * batch
            lat = self.config.latent_size
            shape = (N, self.config.unet.in_channels, lat, lat)
            labels_n = labels if M == 1 else labels.repeat_interleave(batch, 0)
            if M == 1:
                ctx_n = context
            elif context.shape[0] == 1:
                ctx_n = context.expand(N, -1, -1)
            else:
                ctx_n = context.repeat_interleave(batch, 0)
            seg_n = onehot(labels_n, self.dtype).to(self.device)
            ctx_n = ctx_n.to(self.device, self.dtype)

            if use_cache:
                cond = self._conditioning(labels_n, ctx_n, (lat, lat))
                cond_fn = self.denoiser(cond=cond, **extra)
                uncond_fn = joint_fn = None
                if cfg_scale != 1.0:
                    uncond = self.uncond_conditioning((lat, lat))
                    uncond_fn = self.denoiser(cond=uncond)
                    if cfg_batched:
                        joint = self._joint(uncond, cond, N)
                        joint_fn = self.denoiser(cond=joint)
            else:
                zeros_seg, zeros_ctx = torch.zeros_like(seg_n[:1]), torch.zeros_like(ctx_n[:1])
                cond_fn = self.denoiser(context=ctx_n, seg=seg_n, **extra)
                uncond_fn = self.denoiser(context=zeros_ctx, seg=zeros_seg)
                joint_fn = None
                if cfg_batched and cfg_scale != 1.0:
                    seg2 = torch.cat([zeros_seg.expand_as(seg_n), seg_n.expand(N, -1, -1, -1)])
                    ctx2 = torch.cat([zeros_ctx.expand(N, -1, -1), ctx_n.expand(N, -1, -1)])
                    joint_fn = self.denoiser(context=ctx2, seg=seg2)
            model_fn = guided(cfg_scale, cond_fn, uncond_fn, joint_fn, batched=cfg_batched)
            setup_s = time.perf_counter() - t_start

            generator = torch.Generator("cpu").manual_seed(int(seed))
            n_calls = smp.num_model_calls(steps, self.schedule)
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=n_calls, desc=f"{smp.name}", unit="step")

            def show(i, t, x, x0):
                bar.update(1)
                bar.set_postfix_str(f"t={t} {timer.times[-1] * 1e3:.0f} ms")

            timer = StepTimer(inner=show if bar is not None else None)
            timer.start()
            try:
                z = smp.sample(model_fn, shape, generator=generator, steps=steps,
                               schedule=self.schedule, x_T=x_T, dtype=self.dtype,
                               device=self.device, callback=timer)
            finally:
                if bar is not None:
                    bar.close()
            t_dec = time.perf_counter()
            images = self.decode(z)
            decode_s = time.perf_counter() - t_dec

        return GenerationResult(
            images=images, latents=z, context=context, reference_contexts=ref_ctx,
            step_latency=list(timer.times), setup_s=setup_s, decode_s=decode_s,
            total_s=time.perf_counter() - t_start,
            info={"sampler": smp.name, "steps": steps, "model_calls": n_calls,
                  "guidance": guidance, "seed": int(seed), "dtype": str(self.dtype).replace("torch.", ""),
                  "device": str(self.device), "backend": backend, "use_cache": use_cache,
                  "cfg_batched": cfg_batched, "samples": N, "prediction": self.prediction})

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (diffusion scale) -> float32 images [N, 3, H, W] in [0, 1]."""
        x = self.vq.decode(z.to(self.dtype) / self.config.scale_factor)
        return ((x.float().clamp(-1, 1) + 1) / 2).cpu()


# ---------------------------------------------------------------------------- helpers
def parse_reference(images: torch.Tensor) -> torch.Tensor:
    """int64 [N, H, W] label maps of float [N, 3, H, W] images from the bundled parser."""
    try:
        from facegen_rt.eval import evaluators
    except ImportError as exc:
        raise ValueError("reference_mask is needed: the bundled face parser "
                         f"(facegen_rt.eval.evaluators) is not available ({exc})") from None
    if not evaluators.assets_present():
        raise ValueError("reference_mask is needed: the bundled face parser's weights "
                         f"are not installed ({evaluators.ASSET_DIR})")
    return evaluators.parse(images).to(torch.int64).cpu()


def bundled_example(size: int = 128, index: int = 0) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(image uint8 [H, W, 3], labels uint8 [H, W]) of a bundled example, or None."""
    img, lab = EXAMPLES / f"face_{index}.png", EXAMPLES / f"mask_{index}.png"
    if not (img.is_file() and lab.is_file()):
        return None
    image, labels = load_image(img), load_label_png(lab)
    if image.shape[:2] != (size, size):
        return None
    return image, labels


def bundled_example_mask(index: int = 0) -> Path:
    """Path of a bundled example label PNG."""
    p = EXAMPLES / f"mask_{index}.png"
    if not p.is_file():
        raise FileNotFoundError(f"no bundled example mask {p}")
    return p
