"""The distillation loop: student, EMA target, optimizer, resumable checkpoints.

Determinism: the student's initial adapters/embedding come from the global torch RNG
seeded with ``seed`` at construction; every later draw comes from the trainer's own
generators (a CPU ``torch.Generator`` for timesteps and noise, a numpy Generator for
the data), whose states are checkpointed. So a run of N steps, or N1 steps then a
resume for N - N1 more, gives the same weights bit for bit (same machine, threads).
The learning rate depends on the step count only (linear warmup, then constant, as
LCM), never on the wall clock, for the same reason.

Checkpoint (a directory, both files written atomically):
    state.safetensors  student.<param> / target.<param> for the trainable parameters,
                       opt.<index>.<key> AdamW state, rng.torch (generator state)
    state.json         step, losses, elapsed seconds, recipe config, numpy RNG state,
                       optimizer param_groups
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from facegen_rt.sampling.consistency import SIGMA_DATA, TIMESTEP_SCALING, teacher_grid
from facegen_rt.sampling.schedule import NoiseSchedule

from .objective import TargetNetwork, consistency_distillation_loss
from .student import build_student, export_student

STATE_TENSORS, STATE_JSON = "state.safetensors", "state.json"


@dataclass(frozen=True)
class DistillConfig:
    """The recipe's settings (recorded in checkpoints and the student bundle).

    Guidance: w is drawn uniformly from [guidance_min, guidance_max] per sample (fixed
    when equal); ``guidance_embedding`` feeds it to the student (required for a range).
    """

    mode: str = "full"              # "full" or "lora"
    lora_rank: int = 8
    lora_alpha: Optional[float] = None
    lora_target: str = "all"
    grid_steps: int = 50            # teacher DDIM grid N
    spacing: str = "uniform"
    skip: int = 1                   # skipping step k, in grid points
    guidance_min: float = 3.0
    guidance_max: float = 3.0
    guidance_embedding: bool = False
    huber_c: float = 0.001
    ema_decay: float = 0.95
    sigma_data: float = SIGMA_DATA
    timestep_scaling: float = TIMESTEP_SCALING
    lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.0
    clip: float = 1.0
    batch: int = 8
    seed: int = 0
    bf16: bool = False              # bf16 autocast of the UNet calls (fp32 weights and loss)

    def validate(self) -> "DistillConfig":
        if self.mode not in ("full", "lora"):
            raise ValueError(f"mode must be 'full' or 'lora', got {self.mode!r}")
        if self.skip < 1 or self.skip >= self.grid_steps:
            raise ValueError(f"skip must be in 1..grid_steps-1, got {self.skip}")
        if not 0 <= self.guidance_min <= self.guidance_max:
            raise ValueError("need 0 <= guidance_min <= guidance_max, got "
                             f"{self.guidance_min}, {self.guidance_max}")
        if self.guidance_min != self.guidance_max and not self.guidance_embedding:
            raise ValueError("a guidance range needs guidance_embedding=True (the student "
                             "must be told which scale it is imitating)")
        if self.batch < 1 or self.lr <= 0 or self.huber_c <= 0:
            raise ValueError("batch, lr and huber_c must be positive")
        return self

    def sampler_options(self) -> dict:
        return {"grid_steps": self.grid_steps, "spacing": self.spacing,
                "sigma_data": self.sigma_data, "timestep_scaling": self.timestep_scaling}


class Distiller:
    """Consistency distillation of ``task.teacher`` on batches of ``source``.

    Args:
        task: a model adapter (:class:`facegen_rt.distill.scadm.SCADMTask`).
        source: training items with ``batch(rng, B)``.
        schedule: the teacher's :class:`NoiseSchedule`.
        config: :class:`DistillConfig`.
    """

    def __init__(self, task, source, schedule: NoiseSchedule, config: DistillConfig):
        self.cfg = config.validate()
        self.task, self.source, self.schedule = task, source, schedule
        torch.manual_seed(config.seed)
        self.student = build_student(task.teacher, config.mode, config.guidance_embedding,
                                     config.lora_rank, config.lora_alpha, config.lora_target)
        self.target = TargetNetwork(self.student, config.ema_decay)
        self.names = [n for n, p in self.student.named_parameters() if p.requires_grad]
        self.params = [p for p in self.student.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.gen = torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.grid = teacher_grid(schedule, config.grid_steps, config.spacing)
        self.abar = schedule.alphas_cumprod
        self.step = 0
        self.losses: list[float] = []
        self.elapsed = 0.0  # training seconds over all runs (resumes included)

    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.params)

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup))

    def draw_guidance(self, B: int) -> torch.Tensor:
        lo, hi = self.cfg.guidance_min, self.cfg.guidance_max
        u = torch.rand(B, generator=self.gen, dtype=torch.float64)
        return (lo + (hi - lo) * u).float()

    def train_step(self) -> float:
        """One optimisation step; returns the loss."""
        from facegen_rt.train import differentiable_ops

        cfg = self.cfg
        x0, seg, ref, ref_seg, keep = self.source.batch(self.rng, cfg.batch)
        w = self.draw_guidance(cfg.batch)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        self.student.train()
        autocast = torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
        with differentiable_ops(autocast=cfg.bf16), autocast:
            seg, ctx = self.task.condition(seg, ref, ref_seg, keep)
            loss, _ = consistency_distillation_loss(
                x0.float(), w, teacher=self.task.teacher_fn(seg, ctx, guided=bool((w != 1).any())),
                student=self.task.student_fn(self.student, seg, ctx),
                target=self.task.student_fn(self.target.module, seg, ctx),
                abar=self.abar, grid=self.grid, skip=cfg.skip, generator=self.gen,
                huber_c=cfg.huber_c, sigma_data=cfg.sigma_data,
                timestep_scaling=cfg.timestep_scaling)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.clip)
        self.opt.step()
        self.target.update(self.student)
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        return value

    def run(self, max_steps: Optional[int] = None, budget_s: Optional[float] = None, *,
            progress: bool = True, log: Optional[Callable[[str], None]] = None,
            log_every: int = 50, checkpoint: Optional[Path] = None,
            save_every_s: float = 300.0) -> int:
        """Train until ``max_steps`` (total, counting resumed steps) or ``budget_s`` seconds
        of this call, whichever comes first; checkpoints every ``save_every_s`` and at
        the end when ``checkpoint`` is given. Returns the steps taken in this call."""
        if max_steps is None and budget_s is None:
            raise ValueError("run needs max_steps or budget_s")
        start, last_save, first = time.time(), time.time(), self.step
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=max_steps, initial=self.step, desc="distill", unit="it")
        try:
            while max_steps is None or self.step < max_steps:
                if budget_s is not None and time.time() - start >= budget_s:
                    break
                t0 = time.time()
                loss = self.train_step()
                self.elapsed += time.time() - t0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}")
                if log is not None and self.step % log_every == 0:
                    recent = self.losses[-log_every:]
                    rate = (self.step - first) / max(time.time() - start, 1e-9)
                    log(f"step {self.step} loss {np.mean(recent):.5f} "
                        f"lr {self.lr_at(self.step - 1):.2e} {rate:.2f} it/s")
                if checkpoint is not None and time.time() - last_save >= save_every_s:
                    self.save_checkpoint(checkpoint)
                    last_save = time.time()
        finally:
            if bar is not None:
                bar.close()
        if checkpoint is not None:
            self.save_checkpoint(checkpoint)
        return self.step - first

    def export(self):
        """The student for inference (adapters merged)."""
        return export_student(self.student)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        own = dict(self.student.named_parameters())
        tgt = dict(self.target.module.named_parameters())
        tensors = {}
        for n in self.names:
            tensors[f"student.{n}"] = own[n].detach().cpu().contiguous()
            tensors[f"target.{n}"] = tgt[n].detach().cpu().contiguous()
        opt = self.opt.state_dict()
        for idx, st in opt["state"].items():
            for key, v in st.items():
                tensors[f"opt.{idx}.{key}"] = torch.as_tensor(v).detach().cpu().contiguous()
        tensors["rng.torch"] = self.gen.get_state()
        doc = {"step": self.step, "elapsed_s": self.elapsed, "losses": self.losses,
               "config": dataclasses.asdict(self.cfg), "numpy_rng": self.rng.bit_generator.state,
               "param_groups": opt["param_groups"], "trainable": self.names}
        tmp_t, tmp_j = path / (STATE_TENSORS + ".tmp"), path / (STATE_JSON + ".tmp")
        save_file(tensors, str(tmp_t))
        tmp_j.write_text(json.dumps(doc) + "\n")
        os.replace(tmp_t, path / STATE_TENSORS)
        os.replace(tmp_j, path / STATE_JSON)
        return path

    def load_checkpoint(self, path) -> None:
        """Continue from a checkpoint written with the same recipe config."""
        path = Path(path)
        if not (path / STATE_JSON).is_file() or not (path / STATE_TENSORS).is_file():
            raise FileNotFoundError(f"no distillation checkpoint in {path}")
        doc = json.loads((path / STATE_JSON).read_text())
        ours = dataclasses.asdict(self.cfg)
        diff = {k: (doc["config"].get(k), v) for k, v in ours.items() if doc["config"].get(k) != v}
        if diff:
            raise ValueError(f"checkpoint {path} was written with another recipe config "
                             f"(checkpoint, now): {diff}")
        if doc["trainable"] != self.names:
            raise ValueError(f"checkpoint {path}: trainable parameters differ from this student")
        tensors = load_file(str(path / STATE_TENSORS))
        own = dict(self.student.named_parameters())
        tgt = dict(self.target.module.named_parameters())
        with torch.no_grad():
            for n in self.names:
                own[n].copy_(tensors[f"student.{n}"])
                tgt[n].copy_(tensors[f"target.{n}"])
        state: dict = {}
        for key, v in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        self.opt.load_state_dict({"state": state, "param_groups": doc["param_groups"]})
        self.gen.set_state(tensors["rng.torch"])
        self.rng.bit_generator.state = doc["numpy_rng"]
        self.step, self.elapsed = int(doc["step"]), float(doc["elapsed_s"])
        self.losses = [float(x) for x in doc["losses"]]
