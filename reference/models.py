"""Small test models, their micro-batches and loss, and the stage-to-layer map.

What it is: two deterministic layer stacks, built locally with no download,
that the reference and fast executors run under a schedule:

- ``"mlp"``: residual MLP blocks ``x + fc2(tanh(fc1(x)))`` (fc1: H -> 4H,
  fc2: 4H -> H).
- ``"transformer"``: pre-LayerNorm blocks ``x1 = x + attn(ln1(x))``,
  ``x2 = x1 + fc2(gelu(fc1(ln2(x1))))`` with causal multi-head self-attention
  written out with plain matmuls (one fused qkv projection).

Every tensor inside a block has at most two consumers, so each gradient
accumulation inside autograd adds at most two terms; IEEE addition being
commutative, the engine's order of adding them cannot change a bit. That is what
lets a pipelined run equal an unpipelined one bitwise (see reference.baseline).

Model layer ``i`` is initialised from ``seed`` and ``i`` only (not from the
number of layers), so a stack of 8 layers starts with the same 4 layers as a
stack of 4. Parameters are named ``layer{i}.{name}`` (see ``named_parameters``).

Inputs and targets have shape ``(batch, seq, hidden)``. ``loss_fn`` is the mean
squared error over every element of one micro-batch (reduction "mean" inside a
micro-batch); how micro-batch losses combine (sum or mean over micro-batches) is
the executor's ``loss_reduction`` option.

What it does not cover: embeddings, real tokenisers, dropout (no randomness in
forward), and any notion of where a layer runs (the executors decide that).
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from verifier.ir import Schedule, ScheduleError

from reference.names import MODELS  # noqa: E402  (the choices, importable without torch)


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise ScheduleError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


class MLPBlock(nn.Module):
    """``x + fc2(tanh(fc1(x)))``."""

    def __init__(self, hidden: int, ffn_mult: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(hidden, ffn_mult * hidden)
        self.fc2 = nn.Linear(ffn_mult * hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(torch.tanh(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-LN block: causal multi-head self-attention then an MLP, both residual."""

    def __init__(self, hidden: int, num_heads: int, ffn_mult: int = 4):
        super().__init__()
        if hidden % num_heads:
            raise ValueError(
                f"hidden ({hidden}) must be divisible by num_heads ({num_heads})"
            )
        self.num_heads = num_heads
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, ffn_mult * hidden)
        self.fc2 = nn.Linear(ffn_mult * hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        b, t, h = x.shape
        nh = self.num_heads
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=-1)
        q = q.reshape(b, t, nh, h // nh).transpose(1, 2)
        k = k.reshape(b, t, nh, h // nh).transpose(1, 2)
        v = v.reshape(b, t, nh, h // nh).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(h // nh))
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, h)
        x1 = x + self.proj(y)
        return x1 + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x1))))


def _layer_generator(seed: int, index: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + index * 7_919 + 17) % (2**63 - 1))
    return g


@torch.no_grad()
def _init_deterministic(module: nn.Module, gen: torch.Generator) -> None:
    for name, p in sorted(module.named_parameters()):
        leaf = name.rsplit(".", 1)[-1]
        owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        if isinstance(owner, nn.LayerNorm):
            val = (1.0 + 0.1 * noise) if leaf == "weight" else 0.1 * noise
        elif leaf == "weight":
            val = noise / math.sqrt(p.shape[-1])
        else:
            val = 0.1 * noise
        p.copy_(val.to(p.dtype))


def make_layers(
    model: str,
    num_layers: int,
    *,
    hidden: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> list[nn.Module]:
    """``num_layers`` blocks of ``model`` ("mlp" or "transformer"), deterministic.

    Layer i depends only on (model, hidden, seed, i, dtype).
    """
    _check_model(model)
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ScheduleError(f"num_layers must be an integer >= 1, got {num_layers!r}")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ScheduleError(f"hidden must be an integer >= 1, got {hidden!r}")
    layers: list[nn.Module] = []
    for i in range(num_layers):
        if model == "mlp":
            m: nn.Module = MLPBlock(hidden)
        else:
            heads = 2 if hidden % 2 == 0 else 1
            m = TransformerBlock(hidden, heads)
        m = m.to(dtype)
        _init_deterministic(m, _layer_generator(seed, i))
        layers.append(m)
    return layers


def make_microbatches(
    model: str,
    num_microbatches: int,
    *,
    hidden: int = 16,
    batch: int = 2,
    seq: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> list[tuple[Tensor, Tensor]]:
    """``num_microbatches`` (input, target) pairs of shape (batch, seq, hidden)."""
    _check_model(model)
    if num_microbatches < 1:
        raise ScheduleError(f"num_microbatches must be >= 1, got {num_microbatches}")
    g = torch.Generator()
    g.manual_seed(seed * 2_654_435_761 % (2**63 - 1) + 1)
    out = []
    for _ in range(num_microbatches):
        x = torch.randn(batch, seq, hidden, generator=g, dtype=torch.float64)
        y = torch.randn(batch, seq, hidden, generator=g, dtype=torch.float64)
        out.append((x.to(dtype), y.to(dtype)))
    return out


def loss_fn(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements of one micro-batch (a 0-d tensor)."""
    return ((output - target) ** 2).mean()


def stage_layer_map(schedule: Schedule, layers_per_stage: int) -> dict[int, list[int]]:
    """stage id -> model layer indices: schedule layer L holds model layers
    ``L*K .. L*K+K-1`` (K = ``layers_per_stage``). Tied stages get the same list."""
    if (
        isinstance(layers_per_stage, bool)
        or not isinstance(layers_per_stage, int)
        or layers_per_stage < 1
    ):
        raise ScheduleError(f"layers_per_stage must be an integer >= 1, got {layers_per_stage!r}")
    k = layers_per_stage
    out: dict[int, list[int]] = {}
    for st in schedule.stages:
        if st.layer < 0:
            raise ScheduleError(f"stage {st.id} holds layer {st.layer} < 0")
        out[st.id] = list(range(st.layer * k, st.layer * k + k))
    return out


def num_model_layers(schedule: Schedule, layers_per_stage: int) -> int:
    """How many model layers ``stage_layer_map(schedule, K)`` refers to."""
    return (max(s.layer for s in schedule.stages) + 1) * layers_per_stage


def as_layer_list(model: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    """A user's model as a list of layers: an ``nn.Sequential`` / ``nn.ModuleList``
    or any sequence of modules."""
    if isinstance(model, (nn.Sequential, nn.ModuleList)):
        return list(model)
    if isinstance(model, nn.Module):
        raise ScheduleError(
            f"a single {type(model).__name__} is not a layer stack; pass nn.Sequential "
            "or a list of modules"
        )
    layers = list(model)
    for i, m in enumerate(layers):
        if not isinstance(m, nn.Module):
            raise ScheduleError(f"layer {i} is {type(m).__name__}, not an nn.Module")
    return layers


def named_parameters(layers: Iterable[nn.Module]) -> Iterator[tuple[str, Tensor]]:
    """``("layer{i}.{name}", param)`` for every parameter of every layer, in order."""
    for i, m in enumerate(layers):
        for n, p in m.named_parameters():
            yield f"layer{i}.{n}", p


__all__ = [
    "MODELS",
    "MLPBlock",
    "TransformerBlock",
    "make_layers",
    "make_microbatches",
    "loss_fn",
    "stage_layer_map",
    "num_model_layers",
    "as_layer_list",
    "named_parameters",
]
