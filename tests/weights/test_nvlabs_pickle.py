"""Safe loading of NVlabs network pickles (and rosinality .pt files).

The test pickles are written the way NVlabs writes them: every network is an object
whose __reduce__ returns (torch_utils.persistence._reconstruct_persistent_obj, (meta,))
with meta = {type, version, module_src, class_name, state = the module's __dict__}, and
init kwargs are dnnlib.util.EasyDict values. The two modules exist in sys.modules only
while a pickle is written, so a load could never import them; the embedded module
source would create a marker file if anything executed it.
"""

import argparse
import collections
import contextlib
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from facegen_rt.models.stylegan2 import Generator, StyleGAN2Config, get_preset
from facegen_rt.ops.upfirdn2d import setup_filter
from facegen_rt.weights.nvlabs_pickle import (PickledNetwork, load_nvlabs_generator,
                                              read_nvlabs_pickle)
from facegen_rt.weights.report import CheckpointMismatchError
from facegen_rt.weights.rosinality import load_rosinality_generator
from facegen_rt.weights.safe_torch_load import (CheckpointCorruptError, CheckpointError,
                                                UnsafeCheckpointError)

FAKE_MODULES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one OpenMP thread avoids hand-off costs on a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@contextlib.contextmanager
def nvlabs_modules():
    """Stand-ins for torch_utils.persistence and dnnlib.util, present only inside."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("only used to name the global while writing")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    easy = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util.EasyDict = easy
    modules = {"torch_utils": types.ModuleType("torch_utils"),
               "torch_utils.persistence": persistence,
               "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    assert not any(name in sys.modules for name in FAKE_MODULES)
    sys.modules.update(modules)
    try:
        yield persistence, easy
    finally:
        for name in FAKE_MODULES:
            sys.modules.pop(name, None)


class Persistent:
    """Pickles as an NVlabs persistent object."""

    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,)


_PLAIN = (bool, int, float, str, type(None), dict, collections.OrderedDict, set, tuple, list)


def persistent_state(module, src, init_kwargs=None):
    """meta for one module: its __dict__ (plain values only), submodules persistent too."""
    state = {k: v for k, v in vars(module).items() if isinstance(v, _PLAIN)}
    state["_modules"] = collections.OrderedDict(
        (name, persistent_state(child, src) if child is not None else None)
        for name, child in module._modules.items())
    for key in ("weight_gain", "act_gain"):  # numpy floats, as NVlabs' np.sqrt leaves them
        if key in state:
            state[key] = np.float64(state[key])
    state["_init_args"] = ()
    state["_init_kwargs"] = init_kwargs or {}
    return Persistent(dict(type="class", version=6, module_src=src,
                           class_name=type(module).__name__, state=state))


def nvlabs_init_kwargs(cfg, easy):
    kw = cfg.to_init_kwargs()
    kw["mapping_kwargs"] = easy(kw["mapping_kwargs"])
    kw["channel_base"] = np.int64(kw["channel_base"])  # numpy scalar
    kw["resample_filter"] = np.array([1, 3, 3, 1])  # numpy array
    return easy(kw)


def write_pickle(path, G, marker, protocol=4, numpy_module=None, extra=None, init_extra=None):
    """An NVlabs-style {G, D, G_ema, training_set_kwargs} pickle of generator G."""
    src = f"open({str(marker)!r}, 'w').write('executed')\nclass Generator: pass\n"
    with nvlabs_modules() as (_, easy):
        init_kwargs = nvlabs_init_kwargs(G.config, easy)
        init_kwargs.update(init_extra or {})
        g = persistent_state(G, src, init_kwargs)
        d = persistent_state(torch.nn.Linear(3, 2), src, {"c_dim": 0})
        d.meta["class_name"] = "Discriminator"
        data = {"G": g, "D": d, "G_ema": g, "augment_pipe": None,
                "training_set_kwargs": easy(path="ffhq.zip", resolution=np.int64(32))}
        data.update(extra or {})
        blob = pickle.dumps(data, protocol=protocol)
    if numpy_module is not None:  # respell numpy globals as numpy 1 or numpy 2 name them
        assert protocol <= 2, "text GLOBAL opcodes can be respelled in place"
        for name in (b"numpy._core.", b"numpy.core."):
            blob = blob.replace(name + b"multiarray", numpy_module.encode() + b".multiarray")
        assert numpy_module.encode() + b".multiarray\nscalar" in blob
    path.write_bytes(blob)
    return path


def tiny_generator(seed=0):
    torch.manual_seed(seed)
    G = Generator(get_preset("tiny")).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.2)
        G.mapping.w_avg.normal_()
    return G


@pytest.mark.parametrize("protocol,numpy_module", [
    (4, None), (2, "numpy.core"), (2, "numpy._core")], ids=["p4", "p2-numpy1", "p2-numpy2"])
def test_reads_official_structure(tmp_path, protocol, numpy_module):
    G = tiny_generator()
    marker = tmp_path / "executed.txt"
    path = write_pickle(tmp_path / "net.pkl", G, marker, protocol, numpy_module)
    data = read_nvlabs_pickle(path)
    assert not marker.exists(), "the embedded module source must never run"
    assert not any(name in sys.modules for name in FAKE_MODULES)
    assert set(data) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
    net = data["G_ema"]
    assert isinstance(net, PickledNetwork) and net.class_name == "Generator"
    want = G.state_dict()
    assert list(net.state_dict) == list(want)
    for key, t in want.items():
        assert torch.equal(net.state_dict[key], t), key
    assert int(net.init_kwargs["channel_base"]) == 512
    assert net.init_kwargs["resample_filter"].tolist() == [1, 3, 3, 1]
    assert net.init_kwargs["mapping_kwargs"] == {"num_layers": 2}
    assert data["D"].class_name == "Discriminator"
    assert set(data["D"].state_dict) == {"weight", "bias"}
    assert data["training_set_kwargs"]["path"] == "ffhq.zip"


def test_loads_a_generator_that_reproduces_the_original(tmp_path):
    G = tiny_generator()
    path = write_pickle(tmp_path / "net.pkl", G, tmp_path / "marker")
    G2, report = load_nvlabs_generator(path)
    assert report.ok and len(report.loaded) == len(G.state_dict())
    assert G2.config == StyleGAN2Config.from_init_kwargs(G.config.to_init_kwargs(), name="G_ema")
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        torch.testing.assert_close(G2(z, truncation_psi=0.7, noise_mode="const"),
                                   G(z, truncation_psi=0.7, noise_mode="const"), rtol=0, atol=0)
    assert not any(p.requires_grad for p in G2.parameters())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_plain_state_dict_with_inferred_config(tmp_path, legacy):
    G = tiny_generator()
    path = tmp_path / "g.pt"
    torch.save(G.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    G2, report = load_nvlabs_generator(path)
    assert report.ok and "plain state dict" in report.notes[0]
    cfg = G2.config
    assert (cfg.z_dim, cfg.w_dim, cfg.img_resolution, cfg.channel_base, cfg.channel_max,
            cfg.mapping.num_layers) == (32, 32, 32, 512, 32, 2)
    for key, t in G.state_dict().items():
        assert torch.equal(G2.state_dict()[key], t), key


def _evil_system(marker):
    return os.system, (f"touch {marker}",)


def _evil_eval(marker):
    return eval, (f"open({str(marker)!r}, 'w')",)


def _evil_exec(marker):
    return exec, (f"open({str(marker)!r}, 'w')",)


@pytest.mark.parametrize("evil,needle", [
    (_evil_system, r"(posix|os)\.system"), (_evil_eval, "builtins.eval"),
    (_evil_exec, "builtins.exec")])
@pytest.mark.parametrize("where", ["top", "nested"])
def test_refuses_code_execution(tmp_path, evil, needle, where):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return evil(marker)

    G = tiny_generator()
    if where == "top":
        path = write_pickle(tmp_path / "evil.pkl", G, tmp_path / "m", extra={"G_ema": Evil()})
    else:  # hidden inside a persistent object's buffers
        G.synthesis.b4._buffers["resample_filter"] = Evil()
        path = write_pickle(tmp_path / "evil.pkl", G, tmp_path / "m")
    with pytest.raises(UnsafeCheckpointError, match=needle) as info:
        load_nvlabs_generator(path)
    assert "nothing from the file was imported or run" in str(info.value)
    assert not marker.exists()


def test_refuses_unknown_classes(tmp_path):
    path = tmp_path / "module.pkl"
    path.write_bytes(pickle.dumps({"G_ema": torch.nn.Linear(2, 2)}))
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
        read_nvlabs_pickle(path)


def test_errors_name_the_problem(tmp_path):
    G = tiny_generator()
    path = write_pickle(tmp_path / "net.pkl", G, tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"no network 'G_avg'; it has \['D', 'G', 'G_ema'\]"):
        load_nvlabs_generator(path, which="G_avg")
    with pytest.raises(CheckpointError, match="D is a Discriminator, not a Generator"):
        load_nvlabs_generator(path, which="D")
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointCorruptError, match="truncated"):
        read_nvlabs_pickle(truncated)
    with pytest.raises(FileNotFoundError):
        read_nvlabs_pickle(tmp_path / "missing.pkl")
    sg3 = write_pickle(tmp_path / "sg3.pkl", G, tmp_path / "m",
                       init_extra={"magnitude_ema_beta": 0.999})
    with pytest.raises(CheckpointError, match="not a StyleGAN2 generator.*magnitude_ema_beta"):
        load_nvlabs_generator(sg3)
    G.synthesis.b8.conv0._parameters.pop("bias")
    broken = write_pickle(tmp_path / "broken.pkl", G, tmp_path / "m")
    with pytest.raises(CheckpointMismatchError, match="1 missing"):
        load_nvlabs_generator(broken)
    _, report = load_nvlabs_generator(broken, strict=False)
    assert report.missing == ["G.synthesis.b8.conv0.bias"]


# -------------------------------------------------------------------------- rosinality

def to_rosinality(G):
    """Our generator's weights in rosinality stylegan2-pytorch layout (the inverse map)."""
    sd = G.state_dict()
    out = {}
    for i in range(G.config.mapping.num_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    kernel = setup_filter([1, 3, 3, 1]) * 4

    def styled(dst, src, up=False):
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        if up:
            out[f"{dst}.conv.blur.kernel"] = kernel

    def rgb(dst, src, up=True):
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)
        if up:
            out[f"{dst}.upsample.kernel"] = kernel

    styled("conv1", "synthesis.b4.conv1")
    rgb("to_rgb1", "synthesis.b4.torgb", up=False)
    out["noises.noise_0"] = sd["synthesis.b4.conv1.noise_const"][None, None]
    for k, res in enumerate(G.synthesis.block_resolutions[1:]):
        styled(f"convs.{2 * k}", f"synthesis.b{res}.conv0", up=True)
        styled(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1")
        rgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb")
        out[f"noises.noise_{2 * k + 1}"] = sd[f"synthesis.b{res}.conv0.noise_const"][None, None]
        out[f"noises.noise_{2 * k + 2}"] = sd[f"synthesis.b{res}.conv1.noise_const"][None, None]
    return out


def test_rosinality_checkpoint(tmp_path):
    G = tiny_generator()
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": to_rosinality(G), "latent_avg": G.mapping.w_avg.clone(),
                "args": argparse.Namespace(size=32, channel_multiplier=2)}, path)
    G2, report = load_rosinality_generator(path)
    assert report.ok and len(report.ignored) == 6  # 3 blur + 3 upsample kernels
    assert G2.config.conv_clamp is None  # rosinality never clamps
    for key, t in G.state_dict().items():
        assert torch.equal(G2.state_dict()[key], t), key


def test_rosinality_without_latent_avg_estimates_it(tmp_path):
    G = tiny_generator()
    path = tmp_path / "g.pt"
    torch.save({"g_ema": to_rosinality(G)}, path)
    G2, report = load_rosinality_generator(path, w_avg_samples=256)
    assert any("w_avg estimated" in n for n in report.notes)
    with torch.no_grad():
        w = G2.mapping(torch.randn(256, 32, generator=torch.Generator().manual_seed(0)))[:, 0]
    torch.testing.assert_close(G2.mapping.w_avg, w.mean(0))


def test_rosinality_unknown_keys_are_refused(tmp_path):
    sd = to_rosinality(tiny_generator())
    sd["mystery.weight"] = torch.zeros(1)
    path = tmp_path / "g.pt"
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(32)}, path)
    with pytest.raises(CheckpointError, match="outside the key map"):
        load_rosinality_generator(path)
