"""Samplers: schedule grids, DDIM and DPM-Solver++(2M) against float64 closed forms,
convergence on a linear Gaussian problem, and classifier-free guidance batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facegen_rt.sampling import (DDIMSampler, DPMSolverPP2M, NoiseSchedule, Sampler, cfg_batched,
                                 cfg_separate, get_sampler, guided)

SCHED = NoiseSchedule.scadm()
SHAPE = (2, 3, 5, 7)


def toy_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth nonlinear stand-in for a denoiser."""
    tt = t.to(x.dtype).view(-1, *([1] * (x.dim() - 1))) / 1000.0
    return 0.3 * torch.tanh(x) + 0.2 * torch.sin(3 * tt) * x + 0.05 * tt


def gen(seed=0):
    return torch.Generator("cpu").manual_seed(seed)


def test_schedule_matches_ldm_linear():
    betas = (np.linspace(0.0015 ** 0.5, 0.0195 ** 0.5, 1000, dtype=np.float64) ** 2)
    np.testing.assert_allclose(SCHED.betas.numpy(), betas, rtol=0, atol=1e-15)
    np.testing.assert_allclose(SCHED.alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-13)


def test_uniform_spacing_is_ldm_ddim():
    ts = SCHED.timesteps(50).tolist()
    assert ts == list(range(981, 0, -20))  # c = 20, t = range(0, 1000, 20) + 1, reversed
    assert SCHED.timesteps(1000).tolist()[0] == 999  # clipped to T - 1
    assert len(SCHED.timesteps(300)) == 334  # LDM's grid holds ceil(T / c) points
    with pytest.raises(ValueError, match="spacing"):
        SCHED.timesteps(10, "bogus")
    with pytest.raises(ValueError, match="steps"):
        SCHED.timesteps(0)


def ddim_reference64(x, steps, eta, noises):
    """Straightforward float64 DDIM with LDM's grid and final abar[0] target."""
    abar = SCHED.alphas_cumprod
    ts = list(range(0, 1000, 1000 // steps))
    ts = [t + 1 for t in ts][::-1]
    x = x.double()
    for i, t in enumerate(ts):
        a = abar[t].item()
        a_prev = abar[ts[i + 1]].item() if i + 1 < len(ts) else abar[0].item()
        eps = toy_eps(x, torch.full((x.shape[0],), t))
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma ** 2) * eps
        if sigma:
            x = x + sigma * noises[i].double()
    return x


def test_ddim_eta0_deterministic_and_matches_float64():
    s = DDIMSampler(eta=0.0)
    a = s.sample(toy_eps, SHAPE, generator=gen(3), steps=25, schedule=SCHED)
    b = s.sample(toy_eps, SHAPE, generator=gen(3), steps=25, schedule=SCHED)
    assert torch.equal(a, b)
    x_T = torch.randn(SHAPE, generator=gen(3))
    ref = ddim_reference64(x_T, 25, 0.0, None)
    assert (a.double() - ref).abs().max() < 1e-4
    c = s.sample(toy_eps, SHAPE, generator=None, steps=25, schedule=SCHED, x_T=x_T.double(),
                 dtype=torch.float64)
    assert (c - ref).abs().max() < 1e-10


def test_ddim_eta_uses_generator_noise():
    s = DDIMSampler(eta=0.7)
    g = gen(5)
    x_T = torch.randn(SHAPE, generator=g)
    noises = [torch.randn(SHAPE, generator=g) for _ in range(10)]
    out = s.sample(toy_eps, SHAPE, generator=gen(5), steps=10, schedule=SCHED, dtype=torch.float64)
    ref = ddim_reference64(x_T, 10, 0.7, noises)
    assert (out - ref).abs().max() < 1e-5  # float32 draws, float64 arithmetic
    other = s.sample(toy_eps, SHAPE, generator=gen(6), steps=10, schedule=SCHED)
    assert (other.double() - ref).abs().max() > 1e-2


def dpmpp_reference64(x, steps, lower_order_final=True):
    """DPM-Solver++(2M) written out in float64 with explicit exponentials."""
    abar = SCHED.alphas_cumprod
    ts = [t + 1 for t in range(0, 1000, 1000 // steps)][::-1]
    targets = ts[1:] + [0]

    def coef(a):
        return math.sqrt(a), math.sqrt(1 - a), math.log(math.sqrt(a) / math.sqrt(1 - a))

    x = x.double()
    d_prev = h_prev = None
    for i, t in enumerate(ts):
        al_s, si_s, la_s = coef(abar[t].item())
        al_t, si_t, la_t = coef(abar[targets[i]].item())
        eps = toy_eps(x, torch.full((x.shape[0],), t))
        d = (x - si_s * eps) / al_s
        h = la_t - la_s
        last = i == len(ts) - 1
        if d_prev is None or (last and lower_order_final and len(ts) < 15):
            dd = d
        else:
            r = h_prev / h
            dd = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_prev
        x = (si_t / si_s) * x - al_t * (math.exp(-h) - 1) * dd
        d_prev, h_prev = d, h
    return x


@pytest.mark.parametrize("steps", [8, 20])
def test_dpmpp2m_matches_closed_form(steps):
    x_T = torch.randn(SHAPE, generator=gen(1), dtype=torch.float64)
    out = DPMSolverPP2M().sample(toy_eps, SHAPE, generator=None, steps=steps, schedule=SCHED,
                                 x_T=x_T, dtype=torch.float64)
    assert (out - dpmpp_reference64(x_T, steps)).abs().max() < 1e-9
    out32 = DPMSolverPP2M().sample(toy_eps, SHAPE, generator=gen(1), steps=steps, schedule=SCHED)
    x_T32 = torch.randn(SHAPE, generator=gen(1))
    assert (out32.double() - dpmpp_reference64(x_T32, steps)).abs().max() < 1e-4


def gaussian_problem(mu=0.7, s=0.5):
    """Data N(mu, s^2): the exact eps-prediction and the exact probability-flow solution."""
    abar = SCHED.alphas_cumprod

    def eps_fn(x, t):
        a = abar[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        al, si = a.sqrt(), (1 - a).sqrt()
        return si * (x - al * mu) / (al ** 2 * s ** 2 + si ** 2)

    def exact(x_T, t_from, abar_to):
        a0 = abar[t_from].item()
        std_from = math.sqrt(a0 * s ** 2 + 1 - a0)
        std_to = math.sqrt(abar_to * s ** 2 + 1 - abar_to)
        return math.sqrt(abar_to) * mu + std_to / std_from * (x_T - math.sqrt(a0) * mu)

    return eps_fn, exact


def solve_errors(sampler, steps_list):
    eps_fn, exact = gaussian_problem()
    x_T = torch.randn(4, 1, 3, 3, generator=gen(2), dtype=torch.float64)
    errors = []
    for steps in steps_list:
        ts = SCHED.timesteps(steps, sampler.spacing)
        ref = exact(x_T, ts[0].item(), SCHED.abar_target(ts[-1].item(), -1).item())
        out = sampler.sample(eps_fn, x_T.shape, generator=None, steps=steps, schedule=SCHED,
                             x_T=x_T, dtype=torch.float64)
        errors.append((out - ref).abs().max().item())
    return errors


def test_converges_to_exact_gaussian_solution():
    steps = (10, 20, 50, 100, 500)
    dpm = solve_errors(DPMSolverPP2M(), steps)
    ddim = solve_errors(DDIMSampler(), steps)
    for errors in (dpm, ddim):
        assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert dpm[-1] < 2e-3, dpm
    assert all(p < d for p, d in zip(dpm, ddim)), (dpm, ddim)
    order = lambda e, i, j: math.log(e[i] / e[j]) / math.log(steps[j] / steps[i])  # noqa: E731
    assert order(dpm, 2, 4) > 1.3, dpm       # second-order multistep (~1.5 observed here)
    assert 0.8 < order(ddim, 2, 4) < 1.2, ddim  # DDIM is first order
    lin = solve_errors(DPMSolverPP2M(spacing="linspace"), (50, 500))
    assert lin[1] < lin[0] / 20, lin          # the grid ending at t = 0 converges too


def test_cfg_batched_equals_separate():
    cond = lambda x, t: toy_eps(x, t) + 0.1  # noqa: E731
    uncond = lambda x, t: toy_eps(x, t) - 0.2 * x  # noqa: E731

    def joint(x2, t2):
        B = x2.shape[0] // 2
        return torch.cat([uncond(x2[:B], t2[:B]), cond(x2[B:], t2[B:])])

    x = torch.randn(SHAPE, generator=gen(0), dtype=torch.float64)
    t = torch.full((SHAPE[0],), 500)
    a = cfg_batched(joint, 3.0)(x, t)
    b = cfg_separate(uncond, cond, 3.0)(x, t)
    assert torch.allclose(a, b, atol=1e-12)
    assert torch.allclose(b, uncond(x, t) + 3.0 * (cond(x, t) - uncond(x, t)))
    assert guided(1.0, cond, uncond) is cond
    with pytest.raises(ValueError):
        guided(2.0, cond)


def test_sampler_protocol_and_registry():
    assert isinstance(get_sampler("ddim", eta=0.5), Sampler)
    assert isinstance(get_sampler("dpmpp2m"), Sampler)
    assert get_sampler("DPM-Solver++").name == "dpmpp2m"
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("euler")
    with pytest.raises(ValueError, match="eta"):
        get_sampler("dpmpp2m", eta=0.3)
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        DDIMSampler().sample(toy_eps, SHAPE, generator=None, steps=3, schedule=SCHED)


def test_bf16_sampling_close_to_fp32():
    model = lambda x, t: toy_eps(x.float(), t).to(x.dtype)  # noqa: E731
    a = DDIMSampler().sample(model, SHAPE, generator=gen(9), steps=20, schedule=SCHED)
    b = DDIMSampler().sample(model, SHAPE, generator=gen(9), steps=20, schedule=SCHED,
                             dtype=torch.bfloat16)
    assert b.dtype == torch.bfloat16
    # bf16 output rounding (8 bits of mantissa) plus bf16 model inputs; no drift over steps
    assert ((a - b.float()).abs() <= 0.02 * a.abs() + 0.05).all()
