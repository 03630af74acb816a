"""Consistency distillation (latent consistency models) of the engine's diffusion UNets.

Pieces, each in its own module:

* :mod:`.objective`: the LCM loss (skipping-step k on the teacher's DDIM grid, a
  guided DDIM teacher step, boundary-conditioned consistency outputs, pseudo-Huber
  distance) and the EMA target network; model-agnostic, the model enters through
  closures ``teacher(x, t) -> (eps_c, eps_u)`` and ``student(x, t, w) -> eps``;
* :mod:`.guidance`: the guidance-scale embedding and the UNet wrapper that adds it
  to the time embedding;
* :mod:`.lora`: LoRA adapters for Linear/Conv2d layers, merged for inference;
* :mod:`.student`: building students from a teacher, student bundles;
* :mod:`.scadm`: SCA-DM's adapter (conditions, closures) and data sources;
* :mod:`.trainer`: the resumable training loop; :mod:`.train`: its CLI.

Sampling a student: :class:`facegen_rt.sampling.ConsistencySampler` ("lcm").
"""

from .guidance import GuidanceConditionedUNet, GuidanceEmbedding
from .lora import LoRAConv2d, LoRALinear, add_lora, lora_parameters, merge_lora
from .objective import TargetNetwork, consistency_distillation_loss, pseudo_huber
from .student import build_student, export_student, load_student_unet, save_student
from .trainer import DistillConfig, Distiller

__all__ = [
    "DistillConfig", "Distiller", "GuidanceConditionedUNet", "GuidanceEmbedding", "LoRAConv2d",
    "LoRALinear", "TargetNetwork", "add_lora", "build_student", "consistency_distillation_loss",
    "export_student", "load_student_unet", "lora_parameters", "merge_lora", "pseudo_huber",
    "save_student",
]
