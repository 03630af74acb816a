"""SCA-DM sampling over exported ONNX graphs, with onnxruntime and numpy only.

    from facegen_rt.runtime.ort import OrtSemanticPipeline
    pipe = OrtSemanticPipeline("export_dir")            # written by `facegen-rt export sca-dm`
    images = pipe.generate(mask, reference, reference_mask, steps=50, seed=0)
    # float32 [N, 3, H, W] in [0, 1]; pipe.save(images, "out/") writes PNGs (needs Pillow)

It reproduces :meth:`facegen_rt.pipelines.semantic.SemanticPipeline.generate` (fp32,
no region-name aliases) step for step: the same timestep grid, DDIM / DPM-Solver++(2M)
updates in float32, classifier-free guidance with the unconditional half first, the
v-to-eps conversion, and the same initial noise for the same seed (:func:`torch_randn`
reimplements torch's CPU generator for float32 normals).

Imports: numpy, onnxruntime and the standard library (Pillow only inside :meth:`save`
and :func:`load_png`). Nothing here may import torch or another facegen_rt module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import onnxruntime as ort

PathLike = Union[str, Path]
FLAVOURS = ("portable", "fused")


# ----------------------------------------------------------------------------- noise

def torch_randn(shape: Sequence[int], rng: np.random.RandomState) -> np.ndarray:
    """float32 standard normals equal (to ~1 ulp of float32 math) to
    ``torch.randn(shape, generator=torch.Generator().manual_seed(seed))`` when ``rng`` is
    ``np.random.RandomState(seed % 2**32)`` and draws continue in the same order.

    torch's CPU generator is MT19937 seeded as numpy's legacy RandomState is. For float32
    it draws one 32-bit word per element, keeps its low 24 bits as a uniform in [0, 1),
    then applies Box-Muller to blocks of 16 (u1 = 1 - u[j], u2 = u[j + 8]); a tail that
    is not a multiple of 16 redraws 16 fresh uniforms for the last 16 elements.
    Tensors of fewer than 16 elements take another path in torch and are refused.
    """
    n = int(np.prod(shape))
    if n < 16:
        raise ValueError(f"torch_randn: {n} elements; torch draws fewer than 16 differently")

    def uniform(k: int) -> np.ndarray:
        words = rng.randint(0, 2 ** 32, size=k, dtype=np.uint64)
        return (words & ((1 << 24) - 1)).astype(np.float32) * np.float32(2.0 ** -24)

    def box_muller(u: np.ndarray) -> np.ndarray:  # u: [m, 16] -> [m, 16]
        radius = np.sqrt(np.float32(-2.0) * np.log(np.float32(1.0) - u[:, :8]))
        theta = np.float32(2.0 * math.pi) * u[:, 8:]
        return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)], axis=1)

    u = uniform(n)
    out = u.copy()
    full = n // 16 * 16
    out[:full] = box_muller(u[:full].reshape(-1, 16)).reshape(-1)
    if n % 16:
        out[n - 16:] = box_muller(uniform(16).reshape(1, 16)).reshape(-1)
    return out.reshape(tuple(shape))


# ----------------------------------------------------------------------------- schedule

def timesteps(num_timesteps: int, steps: int, spacing: str = "uniform") -> np.ndarray:
    """Descending int64 grid, as facegen_rt.sampling.NoiseSchedule.timesteps."""
    T = int(num_timesteps)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if steps > T:
        raise ValueError(f"steps={steps} exceeds the schedule's {T} timesteps")
    if spacing == "uniform":
        ts = np.arange(0, T, T // steps) + 1
    elif spacing == "quad":
        ts = (np.linspace(0, np.sqrt(T * 0.8), steps) ** 2).astype(np.int64) + 1
    elif spacing == "linspace":
        ts = np.round(np.linspace(0, T - 1, steps)).astype(np.int64)
    else:
        raise ValueError(f"spacing must be uniform, quad or linspace, got {spacing!r}")
    return np.unique(np.clip(ts, 0, T - 1))[::-1].astype(np.int64)


def step_pairs(abar: np.ndarray, steps: int, spacing: str = "uniform") -> list[tuple]:
    """[(t, abar_t, abar_target)]: the final step goes to abar[0], or 1.0 from t = 0."""
    ts = timesteps(len(abar), steps, spacing).tolist()
    out = []
    for i, t in enumerate(ts):
        if i + 1 < len(ts):
            target = float(abar[ts[i + 1]])
        else:
            target = 1.0 if t == 0 else float(abar[0])
        out.append((int(t), float(abar[t]), target))
    return out


def ddim_step(x: np.ndarray, eps: np.ndarray, a: float, a_next: float, eta: float = 0.0,
              noise: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """One DDIM update in float32: returns (x_next, x0)."""
    x0 = (x - (1.0 - a) ** 0.5 * eps) / a ** 0.5
    sigma = eta * ((1.0 - a_next) / (1.0 - a) * (1.0 - a / a_next)) ** 0.5 if eta else 0.0
    out = a_next ** 0.5 * x0 + max(1.0 - a_next - sigma ** 2, 0.0) ** 0.5 * eps
    if sigma:
        out = out + sigma * noise
    return out, x0


def _coeffs(abar: float) -> tuple[float, float, float]:
    alpha, sigma = abar ** 0.5, max(1.0 - abar, 0.0) ** 0.5
    return alpha, sigma, (math.inf if sigma == 0.0 else math.log(alpha) - math.log(sigma))


def dpmpp_2m_step(x, d_now, d_prev, abar_s: float, abar_t: float, h_prev):
    """One DPM-Solver++(2M) update (first order without d_prev); returns (x_t, h)."""
    _, s_s, l_s = _coeffs(abar_s)
    a_t, s_t, l_t = _coeffs(abar_t)
    h = l_t - l_s
    em1 = -1.0 if math.isinf(h) else math.expm1(-h)
    ratio = 0.0 if s_t == 0.0 else s_t / s_s
    if d_prev is None or h_prev is None or not math.isfinite(h) or h == 0.0:
        d = d_now
    else:
        r = h_prev / h
        d = (1.0 + 0.5 / r) * d_now - (0.5 / r) * d_prev
    return ratio * x - a_t * em1 * d, h


# ----------------------------------------------------------------------------- sessions

class Graph:
    """One exported graph: an onnxruntime session plus its manifest; runs any batch
    (a static-batch graph is called in chunks of its batch, the last one padded)."""

    def __init__(self, path: Path, manifest: dict, options: ort.SessionOptions,
                 providers: Sequence[str]):
        self.manifest = manifest
        self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        self.inputs = [i["name"] for i in manifest["inputs"]]
        first = manifest["inputs"][0]["shape"][0]
        self.batch = None if isinstance(first, str) else int(first)

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        n = arrays[0].shape[0]
        if self.batch is None or n == self.batch:
            return self.session.run(None, dict(zip(self.inputs, arrays)))
        outs: list[list[np.ndarray]] = []
        for s in range(0, n, self.batch):
            chunk = []
            for a in arrays:
                part = a[s:s + self.batch]
                if part.shape[0] < self.batch:  # pad by repeating the last row
                    pad = np.repeat(part[-1:], self.batch - part.shape[0], axis=0)
                    part = np.concatenate([part, pad])
                chunk.append(part)
            res = self.session.run(None, dict(zip(self.inputs, chunk)))
            outs.append([r[:min(self.batch, n - s)] for r in res])
        return [np.concatenate(parts) for parts in zip(*outs)]


def _session_options(threads: Optional[int]) -> ort.SessionOptions:
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    return so


class OrtSemanticPipeline:
    """SCA-DM over exported graphs (unet_step, style_encoder, vq_decoder).

    Args:
        export_dir: folder written by ``facegen-rt export sca-dm`` (manifest.json).
        flavour: which flavour to load when the folder holds both; None = the only one.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
        providers: onnxruntime execution providers.
    """

    GRAPHS = ("unet_step", "style_encoder", "vq_decoder")

    def __init__(self, export_dir: PathLike, flavour: Optional[str] = None,
                 threads: Optional[int] = None, providers: Sequence[str] = ("CPUExecutionProvider",)):
        root = Path(export_dir)
        path = root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{root}: no manifest.json (export with `facegen-rt export`)")
        top = json.loads(path.read_text())
        if top.get("model") != "sca-dm":
            raise ValueError(f"{root}: holds a {top.get('model')!r} export, not sca-dm")
        flavours = top["flavours"]
        if flavour is None:
            if len(flavours) != 1:
                raise ValueError(f"{root} holds flavours {sorted(flavours)}; pass flavour=")
            flavour = next(iter(flavours))
        if flavour not in flavours:
            raise ValueError(f"flavour {flavour!r} not in {root} (has {sorted(flavours)})")
        self.flavour = flavour
        self.p = top["pipeline"]
        self.abar = np.asarray(self.p["alphas_cumprod"], dtype=np.float64)
        so = _session_options(threads)
        self.graphs = {}
        for name in self.GRAPHS:
            entry = flavours[flavour][name]
            manifest = json.loads((root / entry["manifest"]).read_text())
            self.graphs[name] = Graph(root / entry["file"], manifest, so, providers)

    @property
    def image_size(self) -> int:
        return int(self.p["image_size"])

    # ---------------------------------------------------------------- inputs
    def labels(self, mask, what: str = "mask") -> np.ndarray:
        """int64 [M, H, W] class ids from [H, W] / [M, H, W] integer arrays (or a PNG path)."""
        if isinstance(mask, (str, Path)):
            mask = load_png(mask)
        m = np.asarray(mask)
        if m.ndim == 2:
            m = m[None]
        S, R = self.image_size, int(self.p["num_classes"])
        if m.ndim != 3 or m.shape[1:] != (S, S):
            raise ValueError(f"{what}: expected a label map [{S}, {S}] or [M, {S}, {S}], "
                             f"got shape {m.shape}")
        if m.dtype.kind == "f":
            if not np.array_equal(m, np.round(m)):
                raise ValueError(f"{what}: float label map with fractional values")
        elif m.dtype.kind not in "iu":
            raise TypeError(f"{what}: dtype {m.dtype} is not a label map")
        m = m.astype(np.int64)
        if m.size and (m.min() < 0 or m.max() >= R):
            raise ValueError(f"{what}: class ids must be in 0..{R - 1}")
        return m

    def images(self, ref, what: str = "reference") -> np.ndarray:
        """float32 [N, 3, H, W] in [0, 1] from uint8 HWC/CHW or float CHW in [0, 1]."""
        if isinstance(ref, (str, Path)):
            ref = load_png(ref, rgb=True)
        a = np.asarray(ref)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4:
            raise ValueError(f"{what}: expected [3, H, W] / [H, W, 3] or a batch, got {a.shape}")
        if a.dtype == np.uint8:
            if a.shape[-1] == 3 and a.shape[1] != 3:
                a = a.transpose(0, 3, 1, 2)
            a = a.astype(np.float32) / np.float32(255.0)
        else:
            a = np.clip(a.astype(np.float32), 0, 1)
        S = self.image_size
        if a.shape[1:] != (3, S, S):
            raise ValueError(f"{what}: expected 3 x {S} x {S} images, got {a.shape[1:]}")
        return a

    def onehot(self, labels: np.ndarray) -> np.ndarray:
        R = int(self.p["num_classes"])
        return np.eye(R, dtype=np.float32)[labels].transpose(0, 3, 1, 2).copy()

    # ---------------------------------------------------------------- stages
    def encode_style(self, reference, reference_mask) -> np.ndarray:
        """[R, 19, D] style tokens of R references (images in [0, 1], label maps)."""
        images = self.images(reference)
        labels = self.labels(reference_mask, "reference_mask")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"reference_mask: {labels.shape[0]} maps for {images.shape[0]} "
                             "references")
        return self.graphs["style_encoder"](images * 2 - 1, self.onehot(labels))[0]

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Diffusion-scale latents -> float32 [N, 3, H, W] in [0, 1]."""
        return self.graphs["vq_decoder"](z.astype(np.float32))[0]

    def _denoiser(self, seg: np.ndarray, ctx: np.ndarray):
        unet = self.graphs["unet_step"]
        v_pred = self.p.get("prediction", "eps") == "v"

        def fn(x: np.ndarray, t: np.ndarray) -> np.ndarray:
            out = unet(x, t, ctx, seg)[0]
            if not v_pred:
                return out
            a = self.abar[t].reshape(-1, 1, 1, 1)  # float64, as the eager pipeline
            return np.sqrt(a).astype(np.float32) * out + np.sqrt(1 - a).astype(np.float32) * x
        return fn

    # ---------------------------------------------------------------- generate
    def generate(self, mask, reference, reference_mask, *, steps: int = 50,
                 sampler: str = "ddim", guidance: Optional[float] = None, eta: float = 0.0,
                 seed: int = 0, batch: int = 1,
                 region_sources: Optional[Mapping[Union[int, str], int]] = None,
                 spacing: str = "uniform") -> np.ndarray:
        """Faces for ``mask``: float32 [M * batch, 3, H, W] in [0, 1] (mask-major).

        Same meaning as SemanticPipeline.generate: the style is reference 0's tokens,
        with the rows of ``region_sources`` ({class name or id: reference index})
        taken from other references; ``guidance`` None = the model's default.
        """
        labels = self.labels(mask)
        if sampler not in ("ddim", "dpmpp2m"):
            raise ValueError(f"unknown sampler {sampler!r}; choose ddim or dpmpp2m")
        if sampler != "ddim" and eta:
            raise ValueError("eta applies to ddim only")
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        s = float(self.p.get("default_guidance", 1.0) if guidance is None else guidance)
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"guidance must be a finite number >= 0, got {s}")
        ref_ctx = self.encode_style(reference, reference_mask)
        context = self._mix(ref_ctx, region_sources)                      # [1, 19, D]
        M = labels.shape[0]
        N = M * batch
        seg = self.onehot(np.repeat(labels, batch, axis=0) if M > 1 else labels)
        seg = np.ascontiguousarray(np.broadcast_to(seg, (N,) + seg.shape[1:]))
        ctx = np.ascontiguousarray(np.broadcast_to(context, (N,) + context.shape[1:]))
        if s != 1.0:  # batched guidance: [unconditional; conditional]
            seg2 = np.concatenate([np.zeros_like(seg), seg])
            ctx2 = np.concatenate([np.zeros_like(ctx), ctx])
            joint = self._denoiser(seg2, ctx2)

            def model_fn(x, t):
                eps_u, eps_c = np.split(joint(np.concatenate([x, x]), np.concatenate([t, t])), 2)
                return eps_u + s * (eps_c - eps_u)
        else:
            model_fn = self._denoiser(seg, ctx)
        lat = int(self.p["latent_size"])
        shape = (N, int(self.p["latent_channels"]), lat, lat)
        rng = np.random.RandomState(int(seed) % 2 ** 32)
        x = torch_randn(shape, rng)
        pairs = step_pairs(self.abar, steps, spacing)
        d_prev = h_prev = None
        for i, (t, a, a_next) in enumerate(pairs):
            eps = model_fn(x, np.full((N,), t, dtype=np.int64)).astype(np.float32)
            if sampler == "ddim":
                noise = torch_randn(shape, rng) if eta else None
                x, _ = ddim_step(x, eps, a, a_next, eta, noise)
            else:
                d_now = (x - (1.0 - a) ** 0.5 * eps) / a ** 0.5
                first = d_prev is None or (i == len(pairs) - 1 and len(pairs) < 15)
                x, h = dpmpp_2m_step(x, d_now, None if first else d_prev, a, a_next, h_prev)
                d_prev, h_prev = d_now, h
            x = x.astype(np.float32)
        return self.decode(x)

    def _mix(self, ref_ctx: np.ndarray, region_sources) -> np.ndarray:
        out = ref_ctx[:1].copy()
        names = list(self.p.get("class_names", []))
        for region, src in (region_sources or {}).items():
            idx = names.index(region) if isinstance(region, str) and region in names else region
            if not isinstance(idx, (int, np.integer)) or not 0 <= int(idx) < out.shape[1]:
                raise ValueError(f"unknown region {region!r}; use a class name {names} or id")
            if not 0 <= int(src) < ref_ctx.shape[0]:
                raise ValueError(f"region_sources[{region!r}] = {src} but only "
                                 f"{ref_ctx.shape[0]} reference(s) were given")
            out[:, int(idx)] = ref_ctx[int(src), int(idx)]
        return out

    @staticmethod
    def save(images: np.ndarray, out_dir: PathLike, prefix: str = "sample") -> list[Path]:
        """Write uint8 PNGs (needs Pillow); returns the paths."""
        from PIL import Image

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        u8 = (np.clip(images, 0, 1) * 255.0).round().astype(np.uint8).transpose(0, 2, 3, 1)
        for i, img in enumerate(u8):
            p = out / f"{prefix}_{i:03d}.png"
            Image.fromarray(img).save(p)
            paths.append(p)
        return paths


def load_png(path: PathLike, rgb: bool = False) -> np.ndarray:
    """A PNG as a numpy array (label maps as stored, images as RGB uint8); needs Pillow."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB") if rgb else im)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """python -m facegen_rt.runtime.ort DIR --mask M.png --reference I.png
    --reference-mask L.png --out OUT [--steps 50] [--seed 0] [--guidance S]"""
    import argparse

    p = argparse.ArgumentParser(prog="python -m facegen_rt.runtime.ort",
                                description="SCA-DM faces from exported ONNX graphs")
    p.add_argument("export_dir")
    p.add_argument("--mask", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--reference-mask", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--flavour", default=None)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    pipe = OrtSemanticPipeline(a.export_dir, a.flavour, a.threads)
    images = pipe.generate(a.mask, a.reference, a.reference_mask, steps=a.steps,
                           sampler=a.sampler, guidance=a.guidance, seed=a.seed, batch=a.batch)
    for path in pipe.save(images, a.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
