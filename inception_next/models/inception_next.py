"""InceptionNeXt and the MetaNeXt family ("InceptionNeXt: When Inception Meets ConvNeXt", Yu et al., CVPR 2024).

Read top to bottom like the paper: the token mixers (Inception depthwise convolution, plain or partial k x k
depthwise convolution, self-attention), the MetaNeXt block that hosts them, the hierarchical and isotropic networks
built from that block, and finally the table of variants. Every ablation of the paper is a constructor argument, so
an experiment changes a value, never a class. A researcher's own token mixer, norm, MLP, block or head is named by
import path in the same arguments (see `parts`).

The hierarchical InceptionNeXt models keep the state-dict layout of the released checkpoints (official and timm).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm2d, SelectAdaptivePool2d
from timm.models import checkpoint_seq
from torch import nn

from .parts import ModelConfigError, build_part

# ---------------------------------------------------------------------------------------------------------------------
# Token mixers: (B, C, H, W) -> (B, C, H, W). Each one is usable on its own in other networks.
# ---------------------------------------------------------------------------------------------------------------------

IDC_BRANCHES = ("square", "horizontal", "vertical")


class InceptionDWConv2d(nn.Module):
    """Inception depthwise convolution (the paper's Fig. 2 / Algorithm 1).

    The channels are split into an identity part and up to three branches of `branch_ratio * dim` channels each: a
    `square_kernel_size` square depthwise conv, a 1 x k horizontal band and a k x 1 vertical band. Only a fraction of
    the channels is convolved, and band kernels grow linearly with k, which is where the speed comes from.

    Ablations (Table 8): `branches` drops any of the three (its channels join the identity part), and
    `band_mode="sequential"` runs 1 x k then k x 1 on the same channels (Inception v3 style, same parameters) in place
    of two parallel bands.
    """

    def __init__(self, dim, square_kernel_size=3, band_kernel_size=11, branch_ratio=0.125,
                 branches=IDC_BRANCHES, band_mode="parallel"):
        super().__init__()
        unknown = set(branches) - set(IDC_BRANCHES)
        if unknown or not branches:
            raise ModelConfigError(f"branches: expected a non-empty subset of {IDC_BRANCHES}, got {tuple(branches)}")
        if band_mode not in ("parallel", "sequential"):
            raise ModelConfigError(f"band_mode: expected 'parallel' or 'sequential', got {band_mode!r}")
        if band_mode == "sequential" and not {"horizontal", "vertical"} <= set(branches):
            raise ModelConfigError("band_mode='sequential' needs both the 'horizontal' and 'vertical' branches")
        gc = int(dim * branch_ratio)
        if gc < 1:
            raise ModelConfigError(f"branch_ratio {branch_ratio} leaves no channel for a branch of a {dim}-channel "
                                   "input")

        def dwconv(kernel_size):
            padding = tuple(k // 2 for k in kernel_size)
            return nn.Conv2d(gc, gc, kernel_size, padding=padding, groups=gc)

        # Attribute names follow the released checkpoints: dwconv_hw, dwconv_w (1 x k), dwconv_h (k x 1); a branch
        # left out is None.
        sequential = band_mode == "sequential"
        self.dwconv_hw = dwconv((square_kernel_size, square_kernel_size)) if "square" in branches else None
        self.dwconv_band = (nn.Sequential(dwconv((1, band_kernel_size)), dwconv((band_kernel_size, 1)))
                            if sequential else None)
        self.dwconv_w = dwconv((1, band_kernel_size)) if "horizontal" in branches and not sequential else None
        self.dwconv_h = dwconv((band_kernel_size, 1)) if "vertical" in branches and not sequential else None
        count = sum(branch is not None for branch in (self.dwconv_hw, self.dwconv_band, self.dwconv_w, self.dwconv_h))
        # The identity part comes first, as in the released code (Algorithm 1 in the paper puts it last).
        identity = dim - gc * count
        if identity < 0:
            raise ModelConfigError(f"branch_ratio {branch_ratio}: {count} branches of {gc} channels exceed the {dim} "
                                   "input channels")
        self.split_sizes = [identity] + [gc] * count

    def forward(self, x):
        parts = torch.split(x, self.split_sizes, dim=1)  # indexed, not unpacked: torch.fx can trace it
        out = [parts[0]]
        if self.dwconv_hw is not None:
            out.append(self.dwconv_hw(parts[len(out)]))
        if self.dwconv_band is not None:
            out.append(self.dwconv_band(parts[len(out)]))
        if self.dwconv_w is not None:
            out.append(self.dwconv_w(parts[len(out)]))
        if self.dwconv_h is not None:
            out.append(self.dwconv_h(parts[len(out)]))
        return torch.cat(out, dim=1)


class PartialDWConv2d(nn.Module):
    """k x k depthwise convolution on the first `conv_ratio` of the channels, identity on the rest.

    With conv_ratio=1 this is ConvNeXt's token mixer; smaller ratios are the paper's Table 1 study.
    """

    def __init__(self, dim, kernel_size=7, conv_ratio=1.0):
        super().__init__()
        conv_dim = int(dim * conv_ratio)
        if not 0 < conv_dim <= dim:
            raise ModelConfigError(f"conv_ratio: expected a fraction in (0, 1] leaving at least one channel, got "
                                   f"{conv_ratio}")
        self.split_sizes = [conv_dim, dim - conv_dim]
        self.dwconv = nn.Conv2d(conv_dim, conv_dim, kernel_size, padding=kernel_size // 2, groups=conv_dim)

    def forward(self, x):
        if self.split_sizes[1] == 0:
            return self.dwconv(x)
        parts = torch.split(x, self.split_sizes, dim=1)
        return torch.cat([self.dwconv(parts[0]), parts[1]], dim=1)


class SpatialSelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map (the token mixer of MetaNeXt-Attn)."""

    def __init__(self, dim, num_heads=6, qkv_bias=True):
        super().__init__()
        if dim % num_heads:
            raise ModelConfigError(f"num_heads: {num_heads} does not divide the {dim} channels")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        qkv = self.qkv(tokens).view(B, H * W, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(B, H * W, C)
        return self.proj(out).transpose(1, 2).reshape(B, C, H, W)


TOKEN_MIXERS = {"inception": InceptionDWConv2d, "dwconv": PartialDWConv2d, "attention": SpatialSelfAttention}
MIXER_CONTRACT = "a class taking dim first, then mixer_args, and mapping (B, C, H, W) to the same shape"


# ---------------------------------------------------------------------------------------------------------------------
# Building pieces: norms, BatchNorm folding, the channel MLP.
# ---------------------------------------------------------------------------------------------------------------------

def channel_layernorm(dim):
    return LayerNorm2d(dim, eps=1e-6)


# BatchNorm is the paper's choice for speed; LayerNorm (over channels) is ConvNeXt's and the Table 8 ablation.
NORMS = {"batchnorm": nn.BatchNorm2d, "layernorm": channel_layernorm}


def make_norm(kind, dim):
    return build_part("norm", kind, NORMS, "a class taking dim and mapping (B, C, H, W) to the same shape", dim)


def _bn_scale_shift(bn):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fold_bn_into_previous_conv(conv, bn):
    """conv -> bn  becomes one conv: scale the output channels."""
    scale, shift = _bn_scale_shift(bn)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(bias * scale + shift)


@torch.no_grad()
def fold_bn_into_next_conv(bn, conv):
    """bn -> conv becomes one conv: scale the input channels. Exact only without zero padding, as here."""
    if conv.groups != 1 or any(p != 0 for p in conv.padding):
        raise ValueError("a BatchNorm folds into the next conv only if it is dense and unpadded")
    scale, shift = _bn_scale_shift(bn)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=conv.weight.device)
    conv.bias = nn.Parameter(bias + (conv.weight * shift.view(1, -1, 1, 1)).sum(dim=(1, 2, 3)))
    conv.weight.mul_(scale.view(1, -1, 1, 1))


class ConvNorm(nn.Sequential):
    """Conv then norm (the stem). `reparameterize()` folds a BatchNorm into the conv for inference."""

    def __init__(self, in_dim, out_dim, kernel_size, stride, norm):
        super().__init__(nn.Conv2d(in_dim, out_dim, kernel_size, stride=stride), make_norm(norm, out_dim))

    def reparameterize(self):
        if isinstance(self[1], nn.BatchNorm2d):
            fold_bn_into_previous_conv(self[0], self[1])
            self[1] = nn.Identity()


class NormConv(nn.Sequential):
    """Norm then conv (the downsampling between stages). `reparameterize()` folds a BatchNorm into the conv."""

    def __init__(self, in_dim, out_dim, kernel_size, stride, norm):
        super().__init__(make_norm(norm, in_dim), nn.Conv2d(in_dim, out_dim, kernel_size, stride=stride))

    def reparameterize(self):
        if isinstance(self[0], nn.BatchNorm2d):
            fold_bn_into_next_conv(self[0], self[1])
            self[0] = nn.Identity()


class ConvMlp(nn.Module):
    """The channel MLP as 1x1 convolutions, so that feature maps stay (B, C, H, W)."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


MLPS = {"conv": ConvMlp}


# ---------------------------------------------------------------------------------------------------------------------
# The MetaNeXt block (Fig. 1): one residual around token mixer -> norm -> MLP.
# ---------------------------------------------------------------------------------------------------------------------

class MetaNeXtBlock(nn.Module):
    """x + drop_path(gamma * mlp(norm(token_mixer(x)))).

    MetaFormer has two residuals, one around the mixer and one around the MLP; MetaNeXt merges them, which is faster
    but leaves no shortcut around the mixer alone, so a complex mixer such as attention fails to train (Table 5).
    """

    def __init__(self, dim, token_mixer="inception", mixer_args=None, norm="batchnorm", mlp_ratio=4,
                 layer_scale_init=1e-6, drop_path=0.0, mlp="conv"):
        super().__init__()
        self.token_mixer = build_part("token_mixer", token_mixer, TOKEN_MIXERS, MIXER_CONTRACT, dim,
                                      **(mixer_args or {}))
        self.norm = make_norm(norm, dim)
        self.mlp = build_part("mlp", mlp, MLPS, "a class taking (dim, hidden_dim) and mapping (B, C, H, W) to the "
                              "same shape", dim, int(mlp_ratio * dim))
        self.gamma = nn.Parameter(layer_scale_init * torch.ones(dim)) if layer_scale_init else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        y = self.mlp(self.norm(self.token_mixer(x)))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)

    def reparameterize(self):
        """Fold the BatchNorm into fc1, the 1x1 conv after it (timm.utils.reparameterize_model calls this)."""
        if isinstance(self.norm, nn.BatchNorm2d) and isinstance(self.mlp, ConvMlp):
            fold_bn_into_next_conv(self.norm, self.mlp.fc1)
            self.norm = nn.Identity()


BLOCKS = {"metanext": MetaNeXtBlock}
BLOCK_CONTRACT = ("a class taking MetaNeXtBlock's arguments (dim, token_mixer=, mixer_args=, norm=, mlp_ratio=, "
                  "layer_scale_init=, drop_path=, mlp=) and mapping (B, C, H, W) to the same shape")


def make_block(block, dim, **block_args):
    return build_part("block", block, BLOCKS, BLOCK_CONTRACT, dim, **block_args)


# ---------------------------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------------------------

def pooling(pool_type):
    """timm's global pooling by name ('avg' in the paper; 'max', 'avgmax', ...), or none for '': then the head
    applies its layers at every position of the feature map, as timm's ConvNeXt head does without pooling."""
    return SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))


class Head(nn.Module):
    """Global pool, then the head's layers (`layers`, a subclass's) on the pooled features, or at every position
    (channels last) when pooling is off. `num_features`: the width the classifier sees (timm's pre-logits width)."""

    def __init__(self, in_features, pool_type):
        super().__init__()
        self.in_features = in_features
        self.global_pool = pooling(pool_type)
        self.per_position = not pool_type

    def set_pool(self, pool_type):
        self.global_pool = pooling(pool_type)
        self.per_position = not pool_type

    def layers(self, x, pre_logits: bool):
        raise NotImplementedError

    def forward(self, x, pre_logits: bool = False):
        x = self.global_pool(x)
        if self.per_position:
            return self.layers(x.permute(0, 2, 3, 1), pre_logits).permute(0, 3, 1, 2)
        return self.layers(x, pre_logits)


class MlpHead(Head):
    """InceptionNeXt's head: global average pool -> fc1 -> GELU -> LayerNorm -> dropout -> fc2 (the MLP savings of
    stage 4 moved here)."""

    def __init__(self, dim, num_classes, hidden_ratio=3.0, drop_rate=0.0, pool_type="avg"):
        super().__init__(dim, pool_type)
        hidden = int(hidden_ratio * dim)
        self.fc1 = nn.Linear(dim * self.global_pool.feat_mult(), hidden)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, num_classes) if num_classes else nn.Identity()
        self.num_features = hidden

    def get_classifier(self):
        return self.fc2

    def reset(self, num_classes, reset_other=False):
        """A new classifier for `num_classes` (0: none); with `reset_other`, the MLP goes too (pool -> classifier)."""
        if reset_other:
            self.fc1, self.act, self.norm = nn.Identity(), nn.Identity(), nn.Identity()
            self.num_features = self.in_features * self.global_pool.feat_mult()
        self.fc2 = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def layers(self, x, pre_logits: bool):
        x = self.drop(self.norm(self.act(self.fc1(x))))
        return x if pre_logits else self.fc2(x)


class NormLinearHead(Head):
    """ConvNeXt's head: global average pool -> LayerNorm -> dropout -> linear."""

    def __init__(self, dim, num_classes, drop_rate=0.0, pool_type="avg"):
        super().__init__(dim, pool_type)
        self.num_features = dim * self.global_pool.feat_mult()
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self):
        return self.fc

    def reset(self, num_classes, reset_other=False):
        if reset_other:
            self.norm = nn.Identity()
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def layers(self, x, pre_logits: bool):
        x = self.drop(self.norm(x))
        return x if pre_logits else self.fc(x)


def make_head(head, dim, num_classes, hidden_ratio, drop_rate, pool_type):
    """The MLP head with `hidden_ratio`, else pool -> LayerNorm -> linear; or a Head subclass by import path."""
    if head is None:
        if hidden_ratio:
            return MlpHead(dim, num_classes, hidden_ratio, drop_rate, pool_type)
        return NormLinearHead(dim, num_classes, drop_rate, pool_type)
    contract = "a subclass of inception_next.models.Head taking (dim, num_classes, drop_rate=, pool_type=)"
    built = build_part("head", head, {}, contract, dim, num_classes, drop_rate=drop_rate, pool_type=pool_type,
                       same_shape=False)
    if not isinstance(built, Head):
        raise ModelConfigError(f"head {type(built).__name__}: not a Head; expected {contract}")
    return built


def drop_path_rates(final_rate, num_blocks):
    """Stochastic depth rising linearly from 0 at the first block to `final_rate` at the last."""
    return [final_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]


def _init_weights(module):
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def feature_indices(count, indices):
    """timm's convention for choosing intermediates: None, all of them; an int n, the last n; a sequence, those
    (negative from the end). Returns (sorted indices, the largest)."""
    if indices is None:
        take = list(range(count))
    elif isinstance(indices, int):
        take = list(range(count - indices, count))
    else:
        take = sorted(i + count if i < 0 else i for i in indices)
    if not take or not all(0 <= i < count for i in take):
        raise ModelConfigError(f"indices {indices}: expected indices into the {count} feature levels")
    return take, take[-1]


class Network(nn.Module):
    """What both networks share: timm's model contract over a stem, a trunk of feature levels (the stages of the
    hierarchical network, the blocks of the isotropic one) and a head, so that code written for timm models (feature
    wrappers, fine-tuning helpers, `timm.data.resolve_model_data_config`, TorchScript, torch.fx) works on ours.

    `num_features` is the width of the final features, `head_hidden_size` the width the classifier sees."""

    pretrained_cfg = default_cfg = {}  # set per variant by create_model: input size, crop, mean/std, first conv...

    def trunk(self):
        raise NotImplementedError

    def forward_head(self, x, pre_logits: bool = False):
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """The outputs of the chosen feature levels (see feature_indices), and, unless `intermediates_only`, the
        final features too: `(final, [intermediates])`, as timm's models. `norm` has nothing to apply here (no
        norm after the trunk); `stop_early` skips the levels after the last one chosen."""
        if output_fmt != "NCHW":
            raise ModelConfigError(f"output_fmt {output_fmt!r}: expected 'NCHW'")
        take, last = feature_indices(len(self.trunk()), indices)
        levels = self.trunk()[:last + 1] if stop_early else self.trunk()
        intermediates = []
        x = self.stem(x)
        for i, level in enumerate(levels):
            x = level(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        """Drop the feature levels after the last of `indices`, and the head; returns the indices kept."""
        take, last = feature_indices(len(self.trunk()), indices)
        prune_end = last < len(self.trunk()) - 1  # the head was sized for the features that are going
        setattr(self, self.trunk_name, self.trunk()[:last + 1])
        self.feature_info = self.feature_info[:last + 1]
        self.num_features = self.feature_info[-1]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, reset_other=True)
        return take

    def get_classifier(self):
        return self.head.get_classifier()

    def reset_classifier(self, num_classes, global_pool=None, reset_other=False):
        """A new classifier for `num_classes` (0: none), as timm's: `global_pool` sets the pooling ('' for none:
        `reset_classifier(0, '')` leaves the unpooled feature map); `reset_other` drops the head's other layers."""
        if global_pool is not None:
            kept_width = not reset_other and isinstance(self.head, MlpHead) and not isinstance(self.head.fc1,
                                                                                                  nn.Identity)
            if kept_width and pooling(global_pool).feat_mult() != self.head.global_pool.feat_mult():
                raise ModelConfigError(f"global_pool {global_pool!r} changes the pooled width: expected "
                                       "reset_other=True to drop the head's MLP with it")
            self.head.set_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head.reset(num_classes, reset_other)
        self.head_hidden_size = self.head.num_features

    def no_weight_decay(self):
        return set()


class MetaNeXtStage(nn.Module):
    def __init__(self, in_dim, dim, depth, downsample, norm, drop_path_rates, block="metanext", **block_args):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = NormConv(in_dim, dim, 2, 2, norm) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            make_block(block, dim, norm=norm, drop_path=rate, **block_args) for rate in drop_path_rates])

    def forward(self, x):
        x = self.downsample(x)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class MetaNeXt(Network):
    """Hierarchical MetaNeXt: a 4x4 stride-4 stem, then four stages, each after the first opening with a 2x2
    stride-2 downsampling, then the classifier head. InceptionNeXt and the paper's ConvNeXt-T baselines are both this
    network with other arguments.

    Args:
        depths, dims: blocks and channels per stage.
        token_mixer, mixer_args: a key of TOKEN_MIXERS and its constructor arguments (kernel sizes, branch ratio,
            branches, band mode; the paper's ablations), or a class by import path (see `parts`).
        mlp_ratios: MLP expansion per stage (InceptionNeXt uses 3 in the last stage).
        norm: 'batchnorm' or 'layernorm' (or an import path), used in the stem, the downsampling and every block.
        block, mlp, head: 'metanext' (MetaNeXtBlock), 'conv' (ConvMlp), None (by head_hidden_ratio), or classes by
            import path.
        head_hidden_ratio: width of the MLP head as a multiple of the last dim; None for a LayerNorm + linear head.
        drop_rate: dropout before the classifier. drop_path_rate: stochastic depth, rising linearly over all blocks.
        layer_scale_init: initial gamma of every block; None for no layer scale.
    """

    trunk_name = "stages"

    def __init__(self, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), token_mixer="inception", mixer_args=None,
                 mlp_ratios=(4, 4, 4, 3), norm="batchnorm", head_hidden_ratio=3.0, num_classes=1000, in_chans=3,
                 global_pool="avg", drop_rate=0.0, drop_path_rate=0.0, layer_scale_init=1e-6, block="metanext",
                 mlp="conv", head=None):
        super().__init__()
        if not len(depths) == len(dims) == len(mlp_ratios):
            raise ModelConfigError(f"depths, dims and mlp_ratios need one entry per stage, got {depths}, {dims}, "
                                   f"{mlp_ratios}")
        self.num_classes = num_classes
        self.stem = ConvNorm(in_chans, dims[0], 4, 4, norm)
        rates = drop_path_rates(drop_path_rate, sum(depths))
        stages, in_dim = [], dims[0]
        for i, (depth, dim, mlp_ratio) in enumerate(zip(depths, dims, mlp_ratios)):
            stage_rates, rates = rates[:depth], rates[depth:]
            stages.append(MetaNeXtStage(in_dim, dim, depth, downsample=i > 0, norm=norm, drop_path_rates=stage_rates,
                                        block=block, token_mixer=token_mixer, mixer_args=mixer_args,
                                        mlp_ratio=mlp_ratio, layer_scale_init=layer_scale_init, mlp=mlp))
            in_dim = dim
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}")
                             for i, dim in enumerate(dims)]
        self.num_features = dims[-1]
        self.global_pool = global_pool
        self.head = make_head(head, dims[-1], num_classes, head_hidden_ratio, drop_rate, global_pool)
        self.head_hidden_size = self.head.num_features
        self.apply(_init_weights)

    def trunk(self):
        return self.stages

    def forward_features(self, x):
        return self.stages(self.stem(x))

    def group_matcher(self, coarse=False):
        """Parameter groups for timm's layer-wise lr decay: the stem, then each stage (or each block)."""
        blocks = r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.downsample", (0,)),
                                                   (r"^stages\.(\d+)\.blocks\.(\d+)", None)]
        return dict(stem=r"^stem", blocks=blocks)

    def set_grad_checkpointing(self, enable=True):
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def layer_scales(self):
        """Each block's layer scale (gamma) by `stage<i>.block<j>`: how much each residual branch contributes."""
        return {f"stage{i}.block{j}": block.gamma for i, stage in enumerate(self.stages)
                for j, block in enumerate(stage.blocks) if getattr(block, "gamma", None) is not None}


def resize_pos_embed(pos_embed, size: list[int]):
    """A learned (1, C, h, w) position grid at another input's grid size (bicubic), as the input needs it."""
    if pos_embed.shape[-2:] == size:
        return pos_embed
    return F.interpolate(pos_embed, size=size, mode="bicubic", align_corners=False)


torch.fx.wrap("resize_pos_embed")  # one call in a traced graph: torch.fx cannot branch on a traced shape


class PatchEmbed(nn.Module):
    """The isotropic networks' stem: a patch_size x patch_size stride-patch_size conv, plus a learned position
    embedding on a grid of `grid` x `grid` patches (resampled for other input sizes) when `grid` is given."""

    def __init__(self, in_chans, dim, patch_size, grid=None):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, grid, grid)) if grid else None
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x):
        x = self.proj(x)
        if self.pos_embed is not None:
            x = x + resize_pos_embed(self.pos_embed, x.shape[-2:])
        return x


class IsotropicMetaNeXt(Network):
    """Isotropic MetaNeXt, following ConvNeXt-S (iso.): a 16x16 patchify stem, then one stage of `depth` blocks at a
    single resolution, then global pool -> LayerNorm -> linear. With an attention mixer and a learned position
    embedding it is the paper's MetaNeXt-Attn (DeiT-S sized), the model that fails to train. Its feature levels are
    its blocks."""

    trunk_name = "blocks"

    def __init__(self, depth=18, dim=384, patch_size=16, token_mixer="inception", mixer_args=None, mlp_ratio=4,
                 norm="batchnorm", pos_embed=False, img_size=224, num_classes=1000, in_chans=3, global_pool="avg",
                 drop_rate=0.0, drop_path_rate=0.0, layer_scale_init=None, block="metanext", mlp="conv", head=None):
        super().__init__()
        self.num_classes = num_classes
        self.grad_checkpointing = False
        self.stem = PatchEmbed(in_chans, dim, patch_size, img_size // patch_size if pos_embed else None)
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(*[
            make_block(block, dim, token_mixer=token_mixer, mixer_args=mixer_args, norm=norm, mlp_ratio=mlp_ratio,
                       layer_scale_init=layer_scale_init, drop_path=rate, mlp=mlp) for rate in rates])
        self.feature_info = [dict(num_chs=dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
        self.num_features = dim
        self.global_pool = global_pool
        self.head = make_head(head, dim, num_classes, None, drop_rate, global_pool)
        self.head_hidden_size = self.head.num_features
        self.apply(_init_weights)

    def trunk(self):
        return self.blocks

    def forward_features(self, x):
        x = self.stem(x)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def group_matcher(self, coarse=False):
        return dict(stem=r"^stem", blocks=r"^blocks\.(\d+)")

    def set_grad_checkpointing(self, enable=True):
        self.grad_checkpointing = enable

    def no_weight_decay(self):
        return {"stem.pos_embed"} if self.stem.pos_embed is not None else set()

    def layer_scales(self):
        """Each block's layer scale (gamma) by `stage0.block<j>` (one stage); none without layer scale."""
        return {f"stage0.block{j}": block.gamma for j, block in enumerate(self.blocks)
                if getattr(block, "gamma", None) is not None}


# ---------------------------------------------------------------------------------------------------------------------
# Variants: the paper's models as data. `inception_next.create_model(name, **overrides)` builds them.
# ---------------------------------------------------------------------------------------------------------------------

_T_DEPTHS, _T_DIMS = (3, 3, 9, 3), (96, 192, 384, 768)
_CONVNEXT_T = dict(depths=_T_DEPTHS, dims=_T_DIMS, token_mixer="dwconv", norm="layernorm", mlp_ratios=(4, 4, 4, 4),
                   head_hidden_ratio=None)
_ISO_S = dict(depth=18, dim=384, patch_size=16)


def _convnext_t(kernel_size, conv_ratio=1.0):
    return dict(_CONVNEXT_T, mixer_args=dict(kernel_size=kernel_size, conv_ratio=conv_ratio))


@dataclass(frozen=True)
class Paper:
    """A variant's figures in the paper: params (M) and MACs (G) as printed (the digits tell the rounding: "22" for
    ConvNeXt-S (iso.) stands for 22.3M), ImageNet top-1, and A100 train / inference images/s (TF32, batch 128).
    None where the paper gives none."""
    params: str
    macs: str | None = None
    top1: float | None = None
    a100: tuple[int, int] | None = None


@dataclass(frozen=True)
class Variant:
    """A registered model: its network and arguments, how its images are prepared (the input it was trained and
    evaluated at; evaluation resizes to input_size / crop_pct with `interpolation`, then centre-crops), and, where the
    paper reports it, what the paper reports. The data module's defaults come from here."""
    network: type
    args: dict
    input_size: int = 224
    crop_pct: float = 0.875
    paper: Paper | None = None
    interpolation: str = "bicubic"

    def preprocessing(self):
        """The data module's settings for this variant's images."""
        return dict(img_size=self.input_size, crop_pct=self.crop_pct, interpolation=self.interpolation)

    def pretrained_cfg(self, name, model):
        """timm's pretrained_cfg: what `timm.data.resolve_model_data_config` and timm's tools read off a model."""
        reduction = model.feature_info[-1]["reduction"]
        return dict(architecture=name, url="", num_classes=model.num_classes,
                    input_size=(3, self.input_size, self.input_size),
                    pool_size=(self.input_size // reduction,) * 2, crop_pct=self.crop_pct,
                    interpolation=self.interpolation,
                    mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv="stem.0" if isinstance(
                        model.stem, nn.Sequential) else "stem.proj", classifier=next(
                        name for name, module in model.named_modules() if module is model.get_classifier()))


_BASE = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))

VARIANTS = {
    # Hierarchical InceptionNeXt (Table 4); atto uses band kernel 9 and branch ratio 1/4.
    "inception_next_atto": Variant(MetaNeXt, dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320),
                                                  mixer_args=dict(band_kernel_size=9, branch_ratio=0.25)),
                                   paper=Paper("4.16", "0.50", 75.3, (2661, 9876))),
    "inception_next_tiny": Variant(MetaNeXt, dict(depths=_T_DEPTHS, dims=_T_DIMS),
                                   paper=Paper("28.06", "4.19", 82.3, (901, 2900))),
    "inception_next_small": Variant(MetaNeXt, dict(depths=(3, 3, 27, 3), dims=_T_DIMS),
                                    paper=Paper("49.37", "8.36", 83.5, (521, 1750))),
    "inception_next_base": Variant(MetaNeXt, dict(_BASE), paper=Paper("86.67", "14.84", 84.0, (375, 1244))),
    "inception_next_base_384": Variant(MetaNeXt, dict(_BASE), input_size=384, crop_pct=1.0,
                                       paper=Paper("86.67", "43.6", 85.2, (139, 428))),
    # Isotropic models (Table 5), all the size of DeiT-S / ConvNeXt-S (iso.).
    "inception_next_small_iso": Variant(IsotropicMetaNeXt, dict(_ISO_S), paper=Paper("22", "4.2", 79.7)),
    "convnext_small_iso": Variant(IsotropicMetaNeXt, dict(_ISO_S, token_mixer="dwconv", norm="layernorm"),
                                  paper=Paper("22", "4.3", 79.7)),
    "metanext_attn_small_iso": Variant(IsotropicMetaNeXt, dict(depth=12, dim=384, patch_size=16,
                                                               token_mixer="attention", mixer_args=dict(num_heads=6),
                                                               pos_embed=True),
                                       paper=Paper("22", "4.6", 3.9)),
    # ConvNeXt-T with smaller or partial depthwise kernels (Table 1).
    "convnext_tiny_k7": Variant(MetaNeXt, _convnext_t(7), paper=Paper("28.6", "4.5", 82.1, (575, 2413))),
    "convnext_tiny_k5": Variant(MetaNeXt, _convnext_t(5), paper=Paper("28.4", None, 82.0, (675, 2704))),
    "convnext_tiny_k3": Variant(MetaNeXt, _convnext_t(3), paper=Paper("28.3", None, 81.5, (798, 2802))),
    "convnext_tiny_k3_par1_2": Variant(MetaNeXt, _convnext_t(3, 1 / 2), paper=Paper("28.3", None, 81.4, (818, 2740))),
    "convnext_tiny_k3_par3_8": Variant(MetaNeXt, _convnext_t(3, 3 / 8), paper=Paper("28.3", None, 81.4, (847, 2762))),
    "convnext_tiny_k3_par1_4": Variant(MetaNeXt, _convnext_t(3, 1 / 4), paper=Paper("28.3", None, 81.3, (871, 2808))),
    "convnext_tiny_k3_par1_8": Variant(MetaNeXt, _convnext_t(3, 1 / 8), paper=Paper("28.3", None, 80.8, (901, 2833))),
    "convnext_tiny_k3_par1_16": Variant(MetaNeXt, _convnext_t(3, 1 / 16),
                                        paper=Paper("28.3", None, 80.1, (916, 2846))),
}


def register(name, variant):
    """Add a variant (a Variant record) under `name`, so that create_model, the CLI and the benchmark know it."""
    if name in VARIANTS:
        raise ValueError(f"model {name!r} is already registered")
    VARIANTS[name] = variant
