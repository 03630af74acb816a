"""Diffusion samplers: schedule, DDIM, DPM-Solver++(2M), multi-step consistency (LCM),
classifier-free guidance.

    schedule = NoiseSchedule.from_config(cfg.schedule)
    sampler  = get_sampler("ddim", eta=0.0)            # or "dpmpp2m", "lcm" (1/2/4/8 steps)
    model_fn = guided(scale, cond_fn, joint_fn=joint)   # eps = eps_u + s (eps_c - eps_u)
    x0 = sampler.sample(model_fn, shape, generator=torch.Generator().manual_seed(seed),
                        steps=50, schedule=schedule)

Every sampler follows :class:`facegen_rt.sampling.base.Sampler`.
"""

from .base import ModelFn, Sampler, StepTimer, predict_x0, randn
from .consistency import ConsistencySampler
from .ddim import DDIMSampler, ddim_step
from .dpm_solver import DPMSolverPP2M, dpmpp_2m_step
from .guidance import cfg_batched, cfg_separate, combine, guided
from .schedule import SPACINGS, NoiseSchedule

SAMPLERS = {"ddim": DDIMSampler, "dpmpp2m": DPMSolverPP2M, "lcm": ConsistencySampler}


def get_sampler(name: str, **kwargs) -> Sampler:
    """A sampler by name ("ddim", "dpmpp2m", "lcm"); kwargs go to its constructor
    (``eta`` is accepted by DDIM only)."""
    key = str(name).lower().replace("-", "").replace("_", "").replace("+", "p")
    aliases = {"ddim": "ddim", "dpmpp2m": "dpmpp2m", "dpmsolverpp2m": "dpmpp2m",
               "dpmsolverpp": "dpmpp2m", "lcm": "lcm", "consistency": "lcm"}
    if key not in aliases:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    cls = SAMPLERS[aliases[key]]
    if cls is not DDIMSampler and kwargs.get("eta"):
        raise ValueError(f"sampler {name!r} takes no eta; eta applies to DDIM only")
    if cls is not DDIMSampler:
        kwargs.pop("eta", None)
    return cls(**kwargs)


__all__ = [
    "ConsistencySampler", "DDIMSampler", "DPMSolverPP2M", "ModelFn", "NoiseSchedule", "SAMPLERS",
    "SPACINGS", "Sampler",
    "StepTimer", "cfg_batched", "cfg_separate", "combine", "ddim_step", "dpmpp_2m_step",
    "get_sampler", "guided", "predict_x0", "randn",
]
