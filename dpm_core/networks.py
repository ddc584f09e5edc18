"""Denoiser networks: an EDM/DDPM++-style U-Net, an NCSNv2-compatible RefineNet, EDM preconditioning, the loss.

Layout (DESIGN.md §2): the networks see real tensors ``[B, 2, H, W]`` float32 (channel 0 = real part, channel 1 =
imaginary part of a normalized complex image, 99th percentile of magnitude ≈ 1). Samplers and the Reconstructor see
complex images ``[B, H, W]`` complex64 through :class:`ComplexDenoiser`.

Everything a sampler needs is the denoiser D(x, σ) ≈ E[x₀ | x = x₀ + σn] (Karras et al. 2022, "Elucidating the
design space of diffusion-based generative models", EDM); the score follows by Tweedie, s(x, σ) = (D(x, σ) − x)/σ².

Two ways of wrapping a raw network F into D (:class:`EDMPrecond`, ``precond=``):

- ``"edm"`` (EDM eq. 7, Table 1): D = c_skip·x + c_out·F(c_in·x, c_noise) with c_skip = σd²/(σ²+σd²),
  c_out = σσd/√(σ²+σd²), c_in = 1/√(σ²+σd²), c_noise = ln(σ)/4. Used by :class:`UNet`.
- ``"ve"`` (EDM Table 1, "VE"; NCSNv2's noise-conditional output scaling s = F(x)/σ): c_skip = 1, c_out = σ,
  c_in = 1, so D = x + σ·F(x) = x + σ²·s. Used by :class:`NCSNv2`, whose network is not told σ.

Networks are built by name with :func:`build_network` (explicit, no string class lookup, no pickling); checkpoints
store the name and keyword arguments (:mod:`dpm_core.checkpoints`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "UNET_PRESETS",
    "NCSNV2_PRESETS",
    "UNet",
    "NCSNv2",
    "EDMPrecond",
    "ComplexDenoiser",
    "build_network",
    "edm_loss",
    "count_parameters",
    "ncsnv2_state_dict_from_original",
]

# Three sizes of the U-Net. "small": CPU tests and the shipped default (1.04 M parameters; attention at 1/4
# resolution). "medium": a short GPU retraining (training/gpu_retrain.sh; 2.66 M parameters, 10.6 MB of float32
# weights; one level deeper, so its receptive field is twice as wide for the aliasing of equispaced sampling).
# "base": GPU training at 320×320 (66.6 M parameters, DDPM++-like depth; attention at 1/8 resolution = 40×40).
UNET_PRESETS = {
    "small": dict(base_channels=28, channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=(2,), emb_dim=112),
    "medium": dict(base_channels=32, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(3,), emb_dim=128),
    "base": dict(base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=4, attention_levels=(3,),
                 emb_dim=512, dropout=0.1),
}
# NCSNv2 sizes. "jalal2021": NCSNv2Deepest, ngf 128, as used for the csgm-mri-langevin brain models (reference A).
NCSNV2_PRESETS = {
    "small": dict(ngf=16, depth="ncsnv2"),
    "jalal2021": dict(ngf=128, depth="deepest"),
}


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module`` (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------------------------------------
# U-Net building blocks (after EDM's SongUNet / DDPM++, training/networks.py of NVlabs/edm).

def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with EDM's group rule: min(32, channels // 4) groups."""
    return nn.GroupNorm(num_groups=max(1, min(32, channels // 4)), num_channels=channels, eps=1e-5)


def _scale_init_(module: nn.Module, scale: float) -> nn.Module:
    """Multiply a layer's default initial weights by ``scale`` and zero its bias (EDM's ``init_weight``)."""
    with torch.no_grad():
        module.weight.mul_(scale)
        if module.bias is not None:
            module.bias.zero_()
    return module


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar per sample (EDM's ``PositionalEmbedding``, endpoint=True).

    Args:
        num_channels: output width (even).
        max_positions: longest period.
    Shapes: c_noise [B] float -> [B, num_channels] float.
    """

    def __init__(self, num_channels: int, max_positions: int = 10000):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=c_noise.device) / max(half - 1, 1)
        freqs = (1.0 / self.max_positions) ** freqs
        x = c_noise.float().outer(freqs)                                     # [B, half]
        return torch.cat([x.cos(), x.sin()], dim=1)


class UNetBlock(nn.Module):
    """Residual block with noise-embedding FiLM, optional resampling and optional self-attention.

    norm → SiLU → (resample) → conv3×3 → FiLM from the embedding (scale, shift) → SiLU → dropout → conv3×3, plus a
    skip path (resample, 1×1 conv when the width changes); the sum is scaled by √½. Then optionally
    x ← √½·(x + proj(attention(norm(x)))).

    Shapes: x [B, in_channels, H, W], emb [B, emb_dim] -> [B, out_channels, H', W'] with H' = H/2 (down), 2H (up) or H.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, down: bool = False, up: bool = False,
                 attention: bool = False, channels_per_head: int = 64, dropout: float = 0.0):
        super().__init__()
        self.down, self.up, self.dropout = down, up, dropout
        self.norm0 = _group_norm(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * out_channels)                  # FiLM: scale and shift
        self.norm1 = _group_norm(out_channels)
        self.conv1 = _scale_init_(nn.Conv2d(out_channels, out_channels, 3, padding=1), 1e-5)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.num_heads = max(1, out_channels // channels_per_head) if attention else 0
        if attention:
            self.norm2 = _group_norm(out_channels)
            self.qkv = nn.Conv2d(out_channels, 3 * out_channels, 1)
            self.proj = _scale_init_(nn.Conv2d(out_channels, out_channels, 1), 1e-5)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            return F.avg_pool2d(x, 2)
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        orig = x
        x = self.conv0(self._resample(F.silu(self.norm0(x))))
        scale, shift = self.affine(emb)[:, :, None, None].to(x.dtype).chunk(2, dim=1)
        x = F.silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        skip = self._resample(orig)
        x = (x + (self.skip(skip) if self.skip is not None else skip)) * math.sqrt(0.5)
        if self.num_heads:
            B, C, H, W = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W).unbind(1)
            a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
            a = a.transpose(-1, -2).reshape(B, C, H, W)                     # [B, heads, HW, C/h] -> [B, C, H, W]
            x = (x + self.proj(a)) * math.sqrt(0.5)
        return x


class UNet(nn.Module):
    """Compact EDM/DDPM++-style U-Net F(x, c_noise) (the raw network inside :class:`EDMPrecond`).

    Encoder: 3×3 conv, then per level ``num_res_blocks`` residual blocks (after a downsampling block from level 1 on);
    decoder mirrors it with skip concatenation and ``num_res_blocks + 1`` blocks per level; two blocks (the first with
    attention) at the bottleneck. The noise level enters every block as FiLM (scale, shift) from an MLP on a
    sinusoidal embedding of c_noise. Self-attention sits at the levels listed in ``attention_levels`` (0 = full
    resolution), always at the bottleneck.

    Args:
        in_channels: input channels (2: real, imaginary).
        out_channels: output channels (2).
        base_channels: width at level 0.
        channel_mults: width multiplier per level; ``len(channel_mults) - 1`` downsamplings.
        num_res_blocks: residual blocks per level in the encoder.
        attention_levels: levels with self-attention (indices into ``channel_mults``).
        dropout: dropout probability inside residual blocks.
        emb_dim: width of the noise embedding MLP.
    Shapes: x [B, in_channels, H, W] float with H, W multiples of :attr:`size_multiple`, c_noise [B] float ->
        [B, out_channels, H, W] float.
    """

    arch = "unet"

    def __init__(self, in_channels: int = 2, out_channels: int = 2, base_channels: int = 32,
                 channel_mults: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1,
                 attention_levels: tuple[int, ...] = (2,), dropout: float = 0.0, emb_dim: int = 128):
        super().__init__()
        channel_mults, attention_levels = tuple(int(m) for m in channel_mults), tuple(int(a) for a in attention_levels)
        if not channel_mults or min(channel_mults) < 1 or base_channels < 4 or num_res_blocks < 1:
            raise ValueError(f"UNet needs a non-empty channel_mults of positive integers, base_channels >= 4 and "
                             f"num_res_blocks >= 1; got channel_mults={channel_mults}, base_channels={base_channels}, "
                             f"num_res_blocks={num_res_blocks}")
        levels = len(channel_mults)
        if any(not 0 <= a < levels for a in attention_levels):
            raise ValueError(f"attention_levels must index channel_mults (0..{levels - 1}); got {attention_levels}")
        self.arch_kwargs = dict(in_channels=in_channels, out_channels=out_channels, base_channels=base_channels,
                                channel_mults=list(channel_mults), num_res_blocks=num_res_blocks,
                                attention_levels=list(attention_levels), dropout=dropout, emb_dim=emb_dim)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.size_multiple = 2 ** (levels - 1)
        block = dict(emb_dim=emb_dim, dropout=dropout)

        # Noise embedding: sinusoids of c_noise -> 2-layer MLP.
        self.map_noise = PositionalEmbedding(base_channels)
        self.map_layer0 = nn.Linear(base_channels, emb_dim)
        self.map_layer1 = nn.Linear(emb_dim, emb_dim)

        # Encoder.
        self.enc = nn.ModuleDict()
        cout = base_channels
        self.enc["l0_conv"] = nn.Conv2d(in_channels, cout, 3, padding=1)
        skips = [cout]
        for level, mult in enumerate(channel_mults):
            if level > 0:
                self.enc[f"l{level}_down"] = UNetBlock(cout, cout, down=True, **block)
                skips.append(cout)
            for idx in range(num_res_blocks):
                cin, cout = cout, base_channels * mult
                self.enc[f"l{level}_block{idx}"] = UNetBlock(cin, cout, attention=level in attention_levels, **block)
                skips.append(cout)

        # Decoder.
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mults))):
            if level == levels - 1:
                self.dec[f"l{level}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"l{level}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"l{level}_up"] = UNetBlock(cout, cout, up=True, **block)
            for idx in range(num_res_blocks + 1):
                cin, cout = cout + skips.pop(), base_channels * mult
                attn = idx == num_res_blocks and level in attention_levels
                self.dec[f"l{level}_block{idx}"] = UNetBlock(cin, cout, attention=attn, **block)
        assert not skips
        self.out_norm = _group_norm(cout)
        self.out_conv = _scale_init_(nn.Conv2d(cout, out_channels, 3, padding=1), 0.2)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.map_layer0(self.map_noise(c_noise).to(x.dtype)))
        emb = F.silu(self.map_layer1(emb))                                   # [B, emb_dim]

        skips = []
        for name, layer in self.enc.items():
            x = layer(x) if name == "l0_conv" else layer(x, emb)
            skips.append(x)
        for name, layer in self.dec.items():
            if "_block" in name:
                x = torch.cat([x, skips.pop()], dim=1)
            x = layer(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


# ----------------------------------------------------------------------------------------------------------------------
# NCSNv2 (Song & Ermon 2020, "Improved techniques for training score-based generative models"; ermongroup/ncsnv2,
# models/ncsnv2.py and layers.py). Module names and shapes match the original, so a checkpoint of the original code
# (e.g. Jalal et al.'s NCSNv2Deepest, reference A) loads after ncsnv2_state_dict_from_original().

class InstanceNorm2dPlus(nn.Module):
    """InstanceNorm++: instance norm that keeps the (normalized) per-channel means, h = γ·(IN(x) + α·m̂) + β.

    Shapes: [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1, 0.02))
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1, 0.02))
        self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(2, 3))                                           # [B, C]
        m = means.mean(dim=-1, keepdim=True)
        v = means.var(dim=-1, keepdim=True)
        means = (means - m) / torch.sqrt(v + 1e-5)
        h = F.instance_norm(x) + means[..., None, None] * self.alpha[..., None, None]
        return self.gamma[None, :, None, None] * h + self.beta[None, :, None, None]


def _conv3x3(cin: int, cout: int, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """Convolution then 2×2 mean pooling. Shapes: [B, cin, H, W] (H, W even) -> [B, cout, H/2, W/2]."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return (x[:, :, ::2, ::2] + x[:, :, 1::2, ::2] + x[:, :, ::2, 1::2] + x[:, :, 1::2, 1::2]) / 4.0


class ResidualBlock(nn.Module):
    """NCSNv2 residual block: norm → ELU → conv → norm → ELU → conv, plus shortcut.

    ``resample="down"`` halves H and W, except with a dilation, where (as in the original) it only changes width.
    """

    def __init__(self, cin: int, cout: int, resample: str | None = None, dilation: int | None = None):
        super().__init__()
        self.cin, self.cout, self.resample = cin, cout, resample
        self.normalize1 = InstanceNorm2dPlus(cin)
        if resample == "down":
            if dilation is not None:
                self.conv1 = _conv3x3(cin, cin, dilation=dilation)
                self.normalize2 = InstanceNorm2dPlus(cin)
                self.conv2 = _conv3x3(cin, cout, dilation=dilation)
                self.shortcut = _conv3x3(cin, cout, dilation=dilation)
            else:
                self.conv1 = _conv3x3(cin, cin)
                self.normalize2 = InstanceNorm2dPlus(cin)
                self.conv2 = ConvMeanPool(cin, cout, 3)
                self.shortcut = ConvMeanPool(cin, cout, 1)
        elif resample is None:
            self.conv1 = _conv3x3(cin, cout, dilation=dilation or 1)
            self.normalize2 = InstanceNorm2dPlus(cout)
            self.conv2 = _conv3x3(cout, cout, dilation=dilation or 1)
            if cin != cout:
                self.shortcut = (_conv3x3(cin, cout, dilation=dilation) if dilation is not None
                                 else nn.Conv2d(cin, cout, 1))
        else:
            raise ValueError(f"resample must be None or 'down'; got {resample!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.elu(self.normalize1(x)))
        h = self.conv2(F.elu(self.normalize2(h)))
        shortcut = x if (self.cin == self.cout and self.resample is None) else self.shortcut(x)
        return shortcut + h


class RCUBlock(nn.Module):
    """Residual conv unit: ``n_blocks`` × (``n_stages`` × (ELU → conv3×3)) with identity skips."""

    def __init__(self, features: int, n_blocks: int, n_stages: int):
        super().__init__()
        self.n_blocks, self.n_stages = n_blocks, n_stages
        for i in range(n_blocks):
            for j in range(n_stages):
                setattr(self, f"{i + 1}_{j + 1}_conv", _conv3x3(features, features, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_blocks):
            residual = x
            for j in range(self.n_stages):
                x = getattr(self, f"{i + 1}_{j + 1}_conv")(F.elu(x))
            x = x + residual
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: ELU, then ``n_stages`` × (5×5 max-pool → conv3×3) accumulated onto the input."""

    def __init__(self, features: int, n_stages: int):
        super().__init__()
        self.convs = nn.ModuleList(_conv3x3(features, features, bias=False) for _ in range(n_stages))
        self.maxpool = nn.MaxPool2d(kernel_size=5, stride=1, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.elu(x)
        path = x
        for conv in self.convs:
            path = conv(self.maxpool(path))
            x = path + x
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: conv3×3 of each input, bilinear resize to ``shape``, sum."""

    def __init__(self, in_planes: list[int], features: int):
        super().__init__()
        self.convs = nn.ModuleList(_conv3x3(c, features) for c in in_planes)

    def forward(self, xs: list[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
        return sum(F.interpolate(conv(x), size=shape, mode="bilinear", align_corners=True)
                   for conv, x in zip(self.convs, xs))


class RefineBlock(nn.Module):
    """RefineNet block: RCU per input → multi-resolution fusion → chained residual pooling → output RCU."""

    def __init__(self, in_planes: list[int], features: int, start: bool = False, end: bool = False):
        super().__init__()
        self.n_blocks = len(in_planes)
        self.adapt_convs = nn.ModuleList(RCUBlock(c, 2, 2) for c in in_planes)
        self.output_convs = RCUBlock(features, 3 if end else 1, 2)
        if not start:
            self.msf = MSFBlock(in_planes, features)
        self.crp = CRPBlock(features, 2)

    def forward(self, xs: list[torch.Tensor], output_shape: tuple[int, int]) -> torch.Tensor:
        hs = [adapt(x) for adapt, x in zip(self.adapt_convs, xs)]
        h = self.msf(hs, output_shape) if self.n_blocks > 1 else hs[0]
        return self.output_convs(self.crp(h))


# Encoder stages per NCSNv2 variant: (name, input width, output width (× ngf), resample, dilation); the refine
# blocks run from the deepest stage back to the first.
_NCSNV2_STAGES = {
    "ncsnv2": [("res1", 1, 1, None, None), ("res2", 1, 2, "down", None), ("res3", 2, 2, "down", 2),
               ("res4", 2, 2, "down", 4)],
    "deeper": [("res1", 1, 1, None, None), ("res2", 1, 2, "down", None), ("res3", 2, 2, "down", None),
               ("res4", 2, 4, "down", 2), ("res5", 4, 4, "down", 4)],
    "deepest": [("res1", 1, 1, None, None), ("res2", 1, 2, "down", None), ("res3", 2, 2, "down", None),
                ("res31", 2, 2, "down", None), ("res4", 2, 4, "down", 2), ("res5", 4, 4, "down", 4)],
}
_NCSNV2_REFINES = {
    "ncsnv2": ["refine1", "refine2", "refine3", "refine4"],
    "deeper": ["refine1", "refine2", "refine3", "refine4", "refine5"],
    "deepest": ["refine1", "refine2", "refine31", "refine3", "refine4", "refine5"],
}


class NCSNv2(nn.Module):
    """NCSNv2 RefineNet (InstanceNorm++, ELU, dilated deep stages), unconditional: F(x) with s(x, σ) = F(x)/σ.

    ``depth`` picks the original class: "ncsnv2" (NCSNv2), "deeper" (NCSNv2Deeper), "deepest" (NCSNv2Deepest, used
    by Jalal et al. 2021 with ngf 128 on 384×384 brain images). The original divides by σ inside the network; here
    the division lives in :class:`EDMPrecond` (``precond="ve"``: D = x + σ·F(x) = x + σ²·s), so F itself is noise-
    unconditional, as in the original.

    Args:
        in_channels: image channels (2).
        ngf: base width.
        depth: "ncsnv2", "deeper" or "deepest".
        legacy_input_shift: apply the original code's ``h = 2x − 1`` to the input (set it for weights trained with the
            original's ``data.rescaled: false``, as Jalal et al.'s were; leave it off for new training).
    Shapes: x [B, in_channels, H, W] float with H, W multiples of :attr:`size_multiple` -> [B, in_channels, H, W].
    """

    arch = "ncsnv2"

    def __init__(self, in_channels: int = 2, ngf: int = 128, depth: str = "deepest", legacy_input_shift: bool = False):
        super().__init__()
        if depth not in _NCSNV2_STAGES:
            raise ValueError(f"NCSNv2 depth must be one of {sorted(_NCSNV2_STAGES)}; got {depth!r}")
        if ngf < 2:
            raise ValueError(f"NCSNv2 needs ngf >= 2 (InstanceNorm++ normalizes across channels); got {ngf}")
        self.arch_kwargs = dict(in_channels=in_channels, ngf=ngf, depth=depth, legacy_input_shift=legacy_input_shift)
        self.in_channels = self.out_channels = in_channels
        self.legacy_input_shift = legacy_input_shift
        stages = _NCSNV2_STAGES[depth]
        self.size_multiple = 2 ** sum(1 for s in stages if s[3] == "down" and s[4] is None)

        self.begin_conv = nn.Conv2d(in_channels, ngf, 3, padding=1)
        self.normalizer = InstanceNorm2dPlus(ngf)
        self.end_conv = nn.Conv2d(ngf, in_channels, 3, padding=1)
        self._stage_names = [s[0] for s in stages]
        for name, cin, cout, resample, dilation in stages:
            self.add_module(name, nn.ModuleList([
                ResidualBlock(cin * ngf, cout * ngf, resample=resample, dilation=dilation),
                ResidualBlock(cout * ngf, cout * ngf, resample=None, dilation=dilation)]))
        self._refine_names = _NCSNV2_REFINES[depth]
        rev = stages[::-1]
        prev = None
        for i, name in enumerate(self._refine_names):
            features = rev[i + 1][2] * ngf if i + 1 < len(rev) else ngf
            in_planes = [rev[i][2] * ngf] + ([prev] if prev is not None else [])
            self.add_module(name, RefineBlock(in_planes, features, start=i == 0, end=i == len(rev) - 1))
            prev = features

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor | None = None) -> torch.Tensor:
        """F(x); ``c_noise`` is accepted for interface symmetry and ignored (the network is unconditional)."""
        h = 2 * x - 1.0 if self.legacy_input_shift else x
        h = self.begin_conv(h)
        layers = []
        for name in self._stage_names:
            for block in getattr(self, name):
                h = block(h)
            layers.append(h)
        ref = None
        for name, layer in zip(self._refine_names, reversed(layers)):
            inputs = [layer] if ref is None else [layer, ref]
            ref = getattr(self, name)(inputs, layer.shape[2:])
        return self.end_conv(F.elu(self.normalizer(ref)))


def ncsnv2_state_dict_from_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a state dict of the original NCSNv2 code to :class:`NCSNv2` keys.

    Strips the ``module.`` prefix of ``DataParallel`` and drops the ``sigmas`` buffer (σ comes from the sampler here).
    The caller reads the original file (a pickle) in a trusted, offline step; this package never unpickles.
    """
    out = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key != "sigmas":
            out[key] = value
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Preconditioning (EDM eq. 7) and the complex-image interface.

class EDMPrecond(nn.Module):
    """Denoiser D(x, σ) = c_skip·x + c_out·F(c_in·x, c_noise) around a raw network F (EDM eq. 7).

    Args:
        net: raw network with ``forward(x, c_noise)``, ``in_channels`` and ``size_multiple`` (:class:`UNet`,
            :class:`NCSNv2`).
        sigma_data: expected standard deviation of the (normalized) training images, per real channel.
        sigma_min: smallest noise level the network was trained for (recorded for samplers).
        sigma_max: largest noise level the network was trained for (recorded for samplers).
        precond: "edm" (c_skip = σd²/(σ²+σd²), c_out = σσd/√(σ²+σd²), c_in = 1/√(σ²+σd²), c_noise = ln(σ)/4) or "ve"
            (c_skip = 1, c_out = σ, c_in = 1: NCSN's s = F(x)/σ).
        pad_mode: how H and W are padded to a multiple of ``net.size_multiple`` ("reflect", falling back to zeros for
            images too small to reflect, or "zeros"); the output is cropped back.
        use_bf16: run F under bf16 autocast on CUDA (never on CPU); the output is float32 either way.
    Shapes: x [B, C, H, W] float, any H and W; sigma [B] or scalar (> 0) -> D [B, C, H, W] float32.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 precond: str = "edm", pad_mode: str = "reflect", use_bf16: bool = True):
        super().__init__()
        if precond not in ("edm", "ve"):
            raise ValueError(f"precond must be 'edm' or 've'; got {precond!r}")
        if pad_mode not in ("reflect", "zeros"):
            raise ValueError(f"pad_mode must be 'reflect' or 'zeros'; got {pad_mode!r}")
        if not 0 < sigma_min < sigma_max or sigma_data <= 0:
            raise ValueError(f"need 0 < sigma_min < sigma_max and sigma_data > 0; got sigma_min={sigma_min}, "
                             f"sigma_max={sigma_max}, sigma_data={sigma_data}")
        self.net = net
        self.sigma_data, self.sigma_min, self.sigma_max = float(sigma_data), float(sigma_min), float(sigma_max)
        self.precond, self.pad_mode, self.use_bf16 = precond, pad_mode, use_bf16

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in, c_noise) for σ of any shape (same shape back)."""
        sd = self.sigma_data
        if self.precond == "edm":
            c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
            c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
            c_in = 1 / (sigma ** 2 + sd ** 2).sqrt()
        else:
            c_skip, c_out, c_in = torch.ones_like(sigma), sigma, torch.ones_like(sigma)
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """λ(σ) that makes the effective target of F unit-weighted: (σ²+σd²)/(σσd)² for "edm", 1/σ² for "ve"."""
        if self.precond == "edm":
            return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2
        return 1 / sigma ** 2

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        m = self.net.size_multiple
        H, W = x.shape[-2:]
        ph, pw = (-H) % m, (-W) % m
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)                 # left, right, top, bottom
        if ph == 0 and pw == 0:
            return x, pad
        reflect_ok = self.pad_mode == "reflect" and max(pad[0], pad[1]) < W and max(pad[2], pad[3]) < H
        return F.pad(x, pad, mode="reflect" if reflect_ok else "constant"), pad

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.net.in_channels or x.is_complex():
            raise ValueError(f"EDMPrecond expects a real tensor [B, {self.net.in_channels}, H, W]; got "
                             f"{tuple(x.shape)} {x.dtype}. Use ComplexDenoiser for complex images [B, H, W].")
        x = x.to(torch.float32)
        B = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(B)
        if sigma.numel() != B:
            raise ValueError(f"sigma must be a scalar or have one value per batch item ({B}); got {sigma.numel()}")
        sigma = sigma.reshape(B, 1, 1, 1)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)

        h, (left, right, top, bottom) = self._pad(c_in * x)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_bf16 and x.is_cuda):
            F_x = self.net(h, c_noise.reshape(B))
        F_x = F_x[..., top:F_x.shape[-2] - bottom, left:F_x.shape[-1] - right].to(torch.float32)
        return c_skip * x + c_out * F_x


class ComplexDenoiser(nn.Module):
    """Complex-image interface to an :class:`EDMPrecond` denoiser, used by the samplers and the Reconstructor.

    ``denoiser(x, sigma)`` returns D(x, σ) and ``denoiser.score(x, sigma)`` returns s = (D(x, σ) − x)/σ². Both are
    differentiable with respect to x (no ``no_grad`` inside: DPS backpropagates through them).

    Shapes: x [B, H, W] complex64; sigma [B] float tensor or scalar -> [B, H, W] complex64.
    """

    def __init__(self, precond: EDMPrecond):
        super().__init__()
        if precond.net.in_channels != 2:
            raise ValueError(f"ComplexDenoiser needs a 2-channel (real, imaginary) network; this one has "
                             f"{precond.net.in_channels} input channels")
        self.precond = precond

    @property
    def sigma_data(self) -> float:
        return self.precond.sigma_data

    @property
    def sigma_min(self) -> float:
        return self.precond.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.precond.sigma_max

    @staticmethod
    def _check(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or not x.is_complex():
            raise ValueError(f"ComplexDenoiser expects complex images [B, H, W]; got {tuple(x.shape)} {x.dtype}")
        return x.to(torch.complex64)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        x = self._check(x)
        x2 = torch.view_as_real(x).permute(0, 3, 1, 2)                       # [B, H, W] -> [B, 2, H, W]
        D = self.precond(x2, sigma).permute(0, 2, 3, 1).contiguous()        # [B, H, W, 2]
        return torch.view_as_complex(D)

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """s(x, σ) = (D(x, σ) − x)/σ², complex64 [B, H, W]."""
        x = self._check(x)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        return (self(x, sigma) - x) / (sigma ** 2).reshape(-1, 1, 1)


# ----------------------------------------------------------------------------------------------------------------------
# Construction by name and the training loss.

def build_network(arch: str, arch_kwargs: dict, sigma_data: float = 0.5, sigma_min: float = 0.002,
                  sigma_max: float = 80.0) -> EDMPrecond:
    """Build a preconditioned denoiser from an architecture name and its keyword arguments.

    Args:
        arch: "unet" (:class:`UNet`, EDM preconditioning) or "ncsnv2" (:class:`NCSNv2`, VE preconditioning).
        arch_kwargs: constructor arguments of that class (JSON-compatible: lists are accepted for tuples). A
            ``"preset"`` key picks :data:`UNET_PRESETS` / :data:`NCSNV2_PRESETS` defaults that the other keys override.
        sigma_data, sigma_min, sigma_max: see :class:`EDMPrecond`.
    Returns: the :class:`EDMPrecond`, parameters initialised, in training mode on the CPU.
    """
    kwargs = dict(arch_kwargs)
    preset = kwargs.pop("preset", None)
    if arch == "unet":
        cls, presets, precond = UNet, UNET_PRESETS, "edm"
    elif arch == "ncsnv2":
        cls, presets, precond = NCSNv2, NCSNV2_PRESETS, "ve"
    else:
        raise ValueError(f"unknown network architecture {arch!r}; use 'unet' or 'ncsnv2'")
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"unknown {arch} preset {preset!r}; available: {sorted(presets)}")
        kwargs = {**presets[preset], **kwargs}
    try:
        net = cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"invalid arguments for architecture {arch!r}: {err}") from err
    return EDMPrecond(net, sigma_data=sigma_data, sigma_min=sigma_min, sigma_max=sigma_max, precond=precond)


def edm_loss(precond: EDMPrecond, x: torch.Tensor, generator: torch.Generator | None = None,
             P_mean: float = -1.2, P_std: float = 1.2) -> torch.Tensor:
    """Denoising score-matching loss of EDM (Karras et al. 2022, eq. 8 with Table 1's training σ distribution).

    ln σ ~ N(P_mean, P_std²), n ~ N(0, σ²I), loss = λ(σ)·mean‖D(x + n, σ) − x‖² with λ = ``precond.loss_weight``
    ((σ²+σd²)/(σσd)² for EDM preconditioning; 1/σ² for VE, which makes it NCSN's σ²·‖s + n/σ²‖²).
    The mean is over channels and pixels, so the scale does not depend on the image size.

    Args:
        precond: the denoiser being trained.
        x: clean normalized images [B, C, H, W] float.
        generator: torch.Generator on x's device for σ and the noise (None: the global RNG).
        P_mean, P_std: log-normal σ distribution.
    Returns: per-sample loss [B] float32 (average it for the optimiser step).
    """
    if x.ndim != 4 or x.is_complex():
        raise ValueError(f"edm_loss expects real images [B, C, H, W]; got {tuple(x.shape)} {x.dtype}")
    x = x.to(torch.float32)
    B = x.shape[0]
    rnd = torch.randn(B, generator=generator, device=x.device)
    sigma = (rnd * P_std + P_mean).exp()                                     # [B]
    n = torch.randn(x.shape, generator=generator, device=x.device) * sigma.reshape(B, 1, 1, 1)
    D = precond(x + n, sigma)
    return precond.loss_weight(sigma) * (D - x).square().mean(dim=(1, 2, 3))
