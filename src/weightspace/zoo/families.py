"""Architecture families of the model zoos.

Each family is an ``nn.Module`` class with keyword-only constructor arguments whose
defaults give a small network. A model keeps its arguments in ``model.spec``, a
JSON-serialisable dict such as ``{"family": "mlp", "in_features": 64, ...}``, and
``build_model(model.spec)`` rebuilds the same architecture.

The networks use only the modules and tensor operations the neural-graph conversion
understands (torch.fx symbolic tracing): standard layers, residual ``a + b``,
squeeze-excitation ``x * g``, positional embeddings and class tokens, transposed
convolutions, up-sampling and U-Net skips (``torch.cat`` along channels). Their ``forward``
has no data-dependent control flow, no in-place and no scalar operations.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import numbers
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = [
    "BERT",
    "FAMILIES",
    "MLP",
    "VGG",
    "Autoencoder",
    "Detector",
    "EfficientNet",
    "MobileNet",
    "ResNet",
    "SmallCNN",
    "UNet",
    "ViT",
    "ZooModel",
    "build_model",
    "example_input",
    "validate_spec",
]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def _did_you_mean(name: object, options: Iterable[str]) -> str:
    matches = difflib.get_close_matches(str(name), list(options), n=3)
    return f" (did you mean {', '.join(map(repr, matches))}?)" if matches else ""


def _check_choice(param: str, value: object, choices: Iterable[str]) -> None:
    choices = sorted(choices)
    if value not in choices:
        raise ValueError(
            f"The {param!r} parameter must be one of {choices}. Got {value!r} instead."
        )


def _check_divisible(param: str, value: int, divisor_param: str, divisor: int) -> None:
    if value % divisor != 0:
        raise ValueError(
            f"The {param!r} parameter must be divisible by {divisor_param}={divisor}. "
            f"Got {value} instead."
        )


def _activation(name: str) -> nn.Module:
    _check_choice("activation", name, _ACTIVATIONS)
    return _ACTIVATIONS[name]()


class ZooModel(nn.Module):
    """Base class of the families: keeps the spec and makes example inputs.

    Attributes:
        family: Registry name of the family, a key of :data:`FAMILIES`.
        spec: ``{"family": family, **constructor arguments}`` with defaults filled in and
            tuples stored as lists, so it survives a JSON round trip unchanged.
    """

    family: ClassVar[str]

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        """Stores the spec.

        Args:
            arguments: The subclass constructor's ``locals()``, taken on its first line.
        """
        super().__init__()
        kwargs = {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in arguments.items()
            if name not in ("self", "__class__")
        }
        self.spec: dict[str, Any] = {"family": self.family, **kwargs}

    def example_input(
        self, batch_size: int = 2, generator: torch.Generator | None = None
    ) -> Tensor:
        """Returns a random input batch on the model's device.

        Args:
            batch_size: Number of examples.
            generator: Random generator (CPU) for reproducible inputs.

        Returns:
            Floats of the model's dtype, or int64 token ids for token models.
        """
        param = next(self.parameters())
        x = self._random_input(self.spec, batch_size, generator, param.dtype)
        return x.to(param.device)

    @staticmethod
    def _random_input(
        spec: Mapping[str, Any],
        batch_size: int,
        generator: torch.Generator | None,
        dtype: torch.dtype,
    ) -> Tensor:
        raise NotImplementedError


class _ImageModel(ZooModel):
    """A model of images ``[B, in_channels, image_size, image_size]``."""

    @staticmethod
    def _random_input(
        spec: Mapping[str, Any],
        batch_size: int,
        generator: torch.Generator | None,
        dtype: torch.dtype,
    ) -> Tensor:
        size = spec["image_size"]
        return torch.randn(
            batch_size, spec["in_channels"], size, size, generator=generator, dtype=dtype
        )


class MLP(ZooModel):
    """Multilayer perceptron: Linear, activation and optional Dropout per hidden layer."""

    family = "mlp"

    def __init__(
        self,
        *,
        in_features: int = 64,
        hidden: Sequence[int] = (64, 64),
        num_classes: int = 10,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        """Builds the network.

        Args:
            in_features: Input features.
            hidden: Width of each hidden layer.
            num_classes: Output logits.
            activation: Activation name, see ``_ACTIVATIONS``.
            dropout: Dropout probability after each hidden activation; 0 adds no Dropout.
        """
        super().__init__(locals())
        layers: list[nn.Module] = []
        width = in_features
        for out in hidden:
            layers += [nn.Linear(width, out), _activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = out
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Maps features ``[B, in_features]`` to logits ``[B, num_classes]``."""
        return self.layers(x)

    @staticmethod
    def _random_input(
        spec: Mapping[str, Any],
        batch_size: int,
        generator: torch.Generator | None,
        dtype: torch.dtype,
    ) -> Tensor:
        return torch.randn(batch_size, spec["in_features"], generator=generator, dtype=dtype)


class VGG(_ImageModel):
    """VGG: stages of 3x3 convolutions each followed by a 2x2 max pool, then an MLP head."""

    family = "vgg"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        widths: Sequence[int] = (16, 32),
        convs_per_stage: int = 1,
        num_classes: int = 10,
        batch_norm: bool = False,
        activation: str = "relu",
        classifier_hidden: int = 64,
    ) -> None:
        """Builds the network.

        Args:
            in_channels: Image channels.
            image_size: Image height and width.
            widths: Channels of each stage.
            convs_per_stage: 3x3 convolutions per stage.
            num_classes: Output logits.
            batch_norm: Whether each convolution is followed by BatchNorm (and has no bias).
            activation: Activation name, see ``_ACTIVATIONS``.
            classifier_hidden: Width of the hidden layer of the head.
        """
        super().__init__(locals())
        final_size = image_size // 2 ** len(widths)
        if final_size < 1:
            raise ValueError(
                f"The 'image_size' parameter must be at least {2 ** len(widths)} "
                f"(2 ** len(widths)) to survive the max pools. Got {image_size} instead."
            )
        layers: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            for _ in range(convs_per_stage):
                layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(_activation(activation))
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * final_size**2, classifier_hidden),
            _activation(activation),
            nn.Linear(classifier_hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Maps images to logits ``[B, num_classes]``."""
        return self.classifier(self.features(x))


class SmallCNN(_ImageModel):
    """The Small CNN Zoo's network: strided convolutions, global average pooling, a dense layer.

    The defaults are the architecture of Unterthiner et al. (2020), "Predicting Neural
    Network Accuracy from Weights": three 3x3 convolutions of 16 channels with stride 2,
    global average pooling and a linear layer to 10 classes (4,970 parameters on
    one-channel images).
    """

    family = "cnn"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 28,
        channels: Sequence[int] = (16, 16, 16),
        kernel_size: int = 3,
        stride: int = 2,
        num_classes: int = 10,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        """Builds the network.

        Args:
            in_channels: Image channels.
            image_size: Image height and width (only used for example inputs).
            channels: Output channels of each convolution.
            kernel_size: Height and width of every kernel (odd; padded to keep the size
                before the stride).
            stride: Stride of every convolution.
            num_classes: Output logits.
            activation: Activation after each convolution, see ``_ACTIVATIONS``.
            dropout: Dropout probability after each activation; 0 adds no Dropout.
        """
        super().__init__(locals())
        if kernel_size % 2 != 1:
            raise ValueError(f"The 'kernel_size' parameter must be odd. Got {kernel_size} instead.")
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels:
            layers += [
                nn.Conv2d(width, out, kernel_size, stride, kernel_size // 2),
                _activation(activation),
            ]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Maps images to logits ``[B, num_classes]``."""
        return self.head(self.features(x))


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The 1x1 conv + BN shortcut of a residual block, or None where identity fits."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class _BasicBlock(nn.Module):
    """conv3x3-BN-act-conv3x3-BN, plus the shortcut, then act."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, activation: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = _activation(activation)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = _projection(in_channels, width, stride)
        self.act2 = _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.act2(out + shortcut)


class _Bottleneck(nn.Module):
    """conv1x1-BN-act-conv3x3(stride)-BN-act-conv1x1-BN, plus the shortcut, then act."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, activation: str) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = _activation(activation)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = _activation(activation)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _projection(in_channels, out_channels, stride)
        self.act3 = _activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.act3(out + shortcut)


_RESNET_BLOCKS: dict[str, type[_BasicBlock | _Bottleneck]] = {
    "basic": _BasicBlock,
    "bottleneck": _Bottleneck,
}


class ResNet(_ImageModel):
    """ResNet with basic or bottleneck blocks and a CIFAR or ImageNet stem.

    ``block="basic", stage_blocks=(9, 9, 9), widths=(16, 32, 64)`` is ResNet-56 for CIFAR;
    ``block="bottleneck", stage_blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512),
    stem="imagenet"`` is ResNet-50 (v1.5, stride on the 3x3 convolution).
    """

    family = "resnet"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        block: str = "basic",
        stage_blocks: Sequence[int] = (1, 1),
        widths: Sequence[int] = (16, 32),
        stem: str = "cifar",
        num_classes: int = 10,
        activation: str = "relu",
    ) -> None:
        """Builds the network.

        Args:
            in_channels: Image channels.
            image_size: Image height and width (only used for example inputs).
            block: ``"basic"`` or ``"bottleneck"`` (expansion 4).
            stage_blocks: Number of blocks in each stage.
            widths: Width of each stage; bottleneck stages output four times as many
                channels. The stem outputs ``widths[0]`` channels.
            stem: ``"cifar"`` (3x3 conv, stride 1) or ``"imagenet"`` (7x7 conv, stride 2,
                then a 3x3 max pool, stride 2).
            num_classes: Output logits.
            activation: Activation name, see ``_ACTIVATIONS``.
        """
        super().__init__(locals())
        _check_choice("block", block, _RESNET_BLOCKS)
        _check_choice("stem", stem, ("cifar", "imagenet"))
        if len(stage_blocks) != len(widths):
            raise ValueError(
                f"The 'stage_blocks' and 'widths' parameters must have the same length. "
                f"Got {len(stage_blocks)} and {len(widths)} instead."
            )
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                nn.BatchNorm2d(widths[0]),
                _activation(activation),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
                nn.BatchNorm2d(widths[0]),
                _activation(activation),
                nn.MaxPool2d(3, 2, 1),
            )
        block_type = _RESNET_BLOCKS[block]
        channels = widths[0]
        stages = []
        for i, (num_blocks, width) in enumerate(zip(stage_blocks, widths)):
            blocks = []
            for j in range(num_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block_type(channels, width, stride, activation))
                channels = width * block_type.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Maps images to logits ``[B, num_classes]``."""
        return self.head(self.stages(self.stem(x)))


class _SqueezeExcitation(nn.Module):
    """Gates channels by a function of their spatial means."""

    def __init__(self, channels: int, squeezed: int, activation: str) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.act = _activation(activation)
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, h: Tensor) -> Tensor:
        s = self.gate(self.expand(self.act(self.reduce(self.pool(h)))))  # [B, C, 1, 1]
        return h * s


class _InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual block; with squeeze-excitation, EfficientNet's MBConv.

    1x1 expand conv-BN-act, depthwise 3x3 conv-BN-act, [squeeze-excitation], 1x1 project
    conv-BN, plus the input when stride is 1 and the channels agree.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expansion: int,
        se_ratio: float,
        activation: str,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            _activation(activation),
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            _activation(activation),
        )
        self.se = (
            _SqueezeExcitation(hidden, max(1, int(in_channels * se_ratio)), activation)
            if se_ratio > 0
            else None
        )
        self.project = nn.Sequential(
            nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        h = self.depthwise(self.expand(x))  # [B, in_channels * expansion, H', W']
        if self.se is not None:
            h = self.se(h)
        out = self.project(h)
        return x + out if self.residual else out


class _InvertedResidualNet(_ImageModel):
    """Stem conv3x3-BN-act, stages of inverted residual blocks, head conv1x1-BN-act-pool-Linear.

    The stem (stride 1, for small images) outputs ``widths[0]`` channels, so the first
    block is residual; the first block of every later stage has stride 2.
    """

    def _build(self, se_ratio: float) -> None:
        """Build the layers from ``self.spec``, with squeeze-excitation at ``se_ratio``."""
        spec = self.spec
        in_channels, widths, activation = spec["in_channels"], spec["widths"], spec["activation"]
        expansion, blocks_per_stage = spec["expansion"], spec["blocks_per_stage"]
        head_width, num_classes = spec["head_width"], spec["num_classes"]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            _activation(activation),
        )
        blocks = []
        channels = widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(
                    _InvertedResidual(channels, width, stride, expansion, se_ratio, activation)
                )
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv2d(channels, head_width, 1, bias=False),
            nn.BatchNorm2d(head_width),
            _activation(activation),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(head_width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Maps images to logits ``[B, num_classes]``."""
        return self.head(self.blocks(self.stem(x)))


class MobileNet(_InvertedResidualNet):
    """MobileNetV2-style network of inverted residual blocks."""

    family = "mobilenet"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        widths: Sequence[int] = (16, 24),
        expansion: int = 4,
        blocks_per_stage: int = 1,
        head_width: int = 64,
        num_classes: int = 10,
        activation: str = "relu",
    ) -> None:
        """Builds the network.

        Args:
            in_channels: Image channels.
            image_size: Image height and width (only used for example inputs).
            widths: Output channels of each stage; the stem outputs ``widths[0]``.
            expansion: Expansion factor of the hidden channels in every block.
            blocks_per_stage: Blocks in each stage.
            head_width: Channels of the 1x1 convolution before pooling.
            num_classes: Output logits.
            activation: Activation name, see ``_ACTIVATIONS``.
        """
        super().__init__(locals())
        self._build(se_ratio=0.0)


class EfficientNet(_InvertedResidualNet):
    """EfficientNet-style network of MBConv blocks (inverted residual + squeeze-excitation)."""

    family = "efficientnet"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        widths: Sequence[int] = (16, 24),
        expansion: int = 4,
        blocks_per_stage: int = 2,
        se_ratio: float = 0.25,
        head_width: int = 64,
        num_classes: int = 10,
        activation: str = "silu",
    ) -> None:
        """Builds the network.

        Args:
            in_channels: Image channels.
            image_size: Image height and width (only used for example inputs).
            widths: Output channels of each stage; the stem outputs ``widths[0]``.
            expansion: Expansion factor of the hidden channels in every block.
            blocks_per_stage: Blocks in each stage.
            se_ratio: Squeezed channels of the excitation, as a fraction of the block's
                input channels; 0 leaves it out.
            head_width: Channels of the 1x1 convolution before pooling.
            num_classes: Output logits.
            activation: Activation name, see ``_ACTIVATIONS``.
        """
        super().__init__(locals())
        self._build(se_ratio=se_ratio)


def _transformer_encoder(
    dim: int,
    depth: int,
    heads: int,
    mlp_ratio: int,
    dropout: float,
    activation: str,
    norm_first: bool,
) -> nn.TransformerEncoder:
    _check_divisible("dim", dim, "heads", heads)
    layer = nn.TransformerEncoderLayer(
        dim,
        heads,
        dim * mlp_ratio,
        dropout,
        activation=_activation(activation),
        batch_first=True,
        norm_first=norm_first,
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class ViT(_ImageModel):
    """Vision transformer: patch embedding, class token or mean pooling, linear head."""

    family = "vit"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        patch_size: int = 2,
        dim: int = 32,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 2,
        num_classes: int = 10,
        pool: str = "cls",
        dropout: float = 0.0,
        norm_first: bool = True,
        activation: str = "gelu",
    ) -> None:
        """Builds the network.

        Args:
            in_channels: Image channels.
            image_size: Image height and width, a multiple of ``patch_size``.
            patch_size: Height and width of a patch.
            dim: Token width, a multiple of ``heads``.
            depth: Transformer encoder layers.
            heads: Attention heads.
            mlp_ratio: Hidden width of the feed-forward block, as a multiple of ``dim``.
            num_classes: Output logits.
            pool: ``"cls"`` (class token) or ``"mean"`` (mean over patch tokens).
            dropout: Dropout probability inside the encoder layers.
            norm_first: Pre-norm (True) or post-norm encoder layers.
            activation: Activation of the feed-forward blocks, see ``_ACTIVATIONS``.
        """
        super().__init__(locals())
        _check_choice("pool", pool, ("cls", "mean"))
        _check_divisible("image_size", image_size, "patch_size", patch_size)
        num_tokens = (image_size // patch_size) ** 2 + (pool == "cls")
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        if pool == "cls":
            self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        else:
            self.register_parameter("cls_token", None)
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, dim) * 0.02)
        self.encoder = _transformer_encoder(
            dim, depth, heads, mlp_ratio, dropout, activation, norm_first
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Maps images to logits ``[B, num_classes]``."""
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, P, D]
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # [B, 1+P, D]
        x = self.norm(self.encoder(x + self.pos_embed))  # [B, L, D]
        pooled = x[:, 0] if self.cls_token is not None else x.mean(dim=1)  # [B, D]
        return self.head(pooled)


class BERT(ZooModel):
    """BERT-style sequence classifier: post-norm encoder, tanh pooler on the first token."""

    family = "bert"

    def __init__(
        self,
        *,
        vocab_size: int = 32,
        max_len: int = 16,
        dim: int = 32,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 2,
        num_classes: int = 2,
        dropout: float = 0.0,
        activation: str = "gelu",
    ) -> None:
        """Builds the network.

        Args:
            vocab_size: Number of token ids.
            max_len: Longest sequence; example inputs have this length.
            dim: Token width, a multiple of ``heads``.
            depth: Transformer encoder layers.
            heads: Attention heads.
            mlp_ratio: Hidden width of the feed-forward block, as a multiple of ``dim``.
            num_classes: Output logits.
            dropout: Dropout probability inside the encoder layers.
            activation: Activation of the feed-forward blocks, see ``_ACTIVATIONS``.
        """
        super().__init__(locals())
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.position_embed = nn.Embedding(max_len, dim)
        self.embed_norm = nn.LayerNorm(dim)
        self.encoder = _transformer_encoder(
            dim, depth, heads, mlp_ratio, dropout, activation, norm_first=False
        )
        self.pooler = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: Tensor) -> Tensor:
        """Maps int64 token ids ``[B, L]`` (``L <= max_len``) to logits ``[B, num_classes]``."""
        positions = torch.arange(ids.shape[1], device=ids.device)  # [L]
        x = self.embed_norm(self.token_embed(ids) + self.position_embed(positions))  # [B, L, D]
        x = self.encoder(x)
        return self.head(self.pooler(x[:, 0]))

    @staticmethod
    def _random_input(
        spec: Mapping[str, Any],
        batch_size: int,
        generator: torch.Generator | None,
        dtype: torch.dtype,
    ) -> Tensor:
        return torch.randint(spec["vocab_size"], (batch_size, spec["max_len"]), generator=generator)


# --- families of the segmentation, detection and generation tasks ------------------------


def _conv_layers(
    in_channels: int,
    out_channels: int,
    convs: int,
    stride: int,
    batch_norm: bool,
    activation: str,
) -> list[nn.Module]:
    """``convs`` 3x3 convolutions, each with optional BatchNorm and an activation; the first
    has ``stride``."""
    layers: list[nn.Module] = []
    for i in range(convs):
        channels = in_channels if i == 0 else out_channels
        layers.append(
            nn.Conv2d(channels, out_channels, 3, stride if i == 0 else 1, 1, bias=not batch_norm)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(_activation(activation))
    return layers


_UPSAMPLING = ("transpose", "nearest", "bilinear")


class UNet(_ImageModel):
    """U-Net for per-pixel classification.

    The contracting path has one block of 3x3 convolutions per entry of ``widths``, with a
    2x2 max pool before every block but the first. The expanding path doubles the
    resolution (a 2x2 transposed convolution that halves the channels, or ``nn.Upsample``),
    concatenates the block output of the same resolution along channels (``torch.cat``) and
    applies another block; a 1x1 convolution gives the logits.
    """

    family = "unet"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        widths: Sequence[int] = (8, 16),
        convs_per_block: int = 2,
        upsample: str = "transpose",
        batch_norm: bool = False,
        num_classes: int = 10,
        activation: str = "relu",
    ) -> None:
        """Builds the network.

        Args:
            in_channels: Image channels.
            image_size: Image height and width, divisible by ``2 ** (len(widths) - 1)``.
            widths: Channels of the blocks of each resolution, from the full one down.
            convs_per_block: 3x3 convolutions per block.
            upsample: ``"transpose"`` (``nn.ConvTranspose2d``), or the mode of an
                ``nn.Upsample``: ``"nearest"`` or ``"bilinear"``.
            batch_norm: Whether each convolution is followed by BatchNorm (and has no bias).
            num_classes: Output logits per pixel.
            activation: Activation name, see ``_ACTIVATIONS``.
        """
        super().__init__(locals())
        _check_choice("upsample", upsample, _UPSAMPLING)
        _check_divisible("image_size", image_size, "2 ** (len(widths) - 1)", 2 ** (len(widths) - 1))
        block = functools.partial(
            _conv_layers, convs=convs_per_block, batch_norm=batch_norm, activation=activation
        )
        self.down = nn.ModuleList()
        channels = in_channels
        for i, width in enumerate(widths):
            pool = [nn.MaxPool2d(2)] if i > 0 else []
            self.down.append(nn.Sequential(*pool, *block(channels, width, stride=1)))
            channels = width
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width in reversed(widths[:-1]):
            if upsample == "transpose":
                self.up.append(nn.ConvTranspose2d(channels, width, 2, stride=2))
                merged = 2 * width
            else:
                self.up.append(nn.Upsample(scale_factor=2, mode=upsample))
                merged = channels + width
            self.merge.append(nn.Sequential(*block(merged, width, stride=1)))
            channels = width
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Maps images to per-pixel logits ``[B, num_classes, image_size, image_size]``."""
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))  # [B, 2 * width or more, H, W]
        return self.head(x)


class Detector(_ImageModel):
    """Single-object detector: 3x3 convolutions of stride 2, then an MLP head.

    The head's output is ``num_classes`` class logits followed by the 4 numbers of the box,
    ``(x0, y0, x1, y1)`` as fractions of the image width and height.
    """

    family = "detector"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        widths: Sequence[int] = (8, 16),
        convs_per_stage: int = 1,
        batch_norm: bool = False,
        head_hidden: int = 32,
        num_classes: int = 10,
        activation: str = "relu",
    ) -> None:
        """Builds the network.

        Args:
            in_channels: Image channels.
            image_size: Image height and width; every stage halves it (rounding up).
            widths: Channels of each stage.
            convs_per_stage: 3x3 convolutions per stage; the first has stride 2.
            batch_norm: Whether each convolution is followed by BatchNorm (and has no bias).
            head_hidden: Width of the hidden layer of the head.
            num_classes: Class logits; the head outputs ``num_classes + 4`` numbers.
            activation: Activation name, see ``_ACTIVATIONS``.
        """
        super().__init__(locals())
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for width in widths:
            layers += _conv_layers(channels, width, convs_per_stage, 2, batch_norm, activation)
            channels, size = width, (size + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size**2, head_hidden),
            _activation(activation),
            nn.Linear(head_hidden, num_classes + 4),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Maps images to ``[B, num_classes + 4]``: class logits, then the box."""
        return self.head(self.features(x))


class Autoencoder(_ImageModel):
    """Convolutional autoencoder of images.

    The encoder's 3x3 convolutions of stride 2 (one per entry of ``widths``) and a 1x1
    convolution give a code of ``bottleneck`` channels at ``1 / 2 ** len(widths)`` of the
    resolution; the decoder's 4x4 transposed convolutions of stride 2 double the resolution
    back, and a 3x3 convolution gives the image. The output has no activation: it
    reconstructs standardised pixels.
    """

    family = "autoencoder"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        widths: Sequence[int] = (16, 32),
        bottleneck: int = 8,
        batch_norm: bool = False,
        activation: str = "relu",
    ) -> None:
        """Builds the network.

        Args:
            in_channels: Image channels, in the input and the output.
            image_size: Image height and width, divisible by ``2 ** len(widths)``.
            widths: Channels of the encoder's stages; the decoder's mirror them.
            bottleneck: Channels of the code.
            batch_norm: Whether each hidden convolution is followed by BatchNorm (and has
                no bias).
            activation: Activation name, see ``_ACTIVATIONS``.
        """
        super().__init__(locals())
        _check_divisible("image_size", image_size, "2 ** len(widths)", 2 ** len(widths))
        encoder: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            encoder += _conv_layers(channels, width, 1, 2, batch_norm, activation)
            channels = width
        encoder.append(nn.Conv2d(channels, bottleneck, 1))
        self.encoder = nn.Sequential(*encoder)
        decoder: list[nn.Module] = []
        channels = bottleneck
        for width in reversed(widths):
            decoder.append(nn.ConvTranspose2d(channels, width, 4, 2, 1, bias=not batch_norm))
            if batch_norm:
                decoder.append(nn.BatchNorm2d(width))
            decoder.append(_activation(activation))
            channels = width
        decoder.append(nn.Conv2d(channels, in_channels, 3, padding=1))
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x: Tensor) -> Tensor:
        """Maps images to their reconstructions, of the same shape."""
        return self.decoder(self.encoder(x))


FAMILIES: dict[str, type[ZooModel]] = {
    cls.family: cls
    for cls in (
        MLP,
        VGG,
        SmallCNN,
        ResNet,
        MobileNet,
        EfficientNet,
        ViT,
        BERT,
        UNet,
        Detector,
        Autoencoder,
    )
}


# Sequence arguments that may be empty (an MLP without hidden layers is a linear model).
_MAY_BE_EMPTY = frozenset({"hidden"})


@functools.cache
def _argument_types(family: str) -> dict[str, Any]:
    """The annotated type of each constructor argument of a family."""
    return typing.get_type_hints(FAMILIES[family].__init__)


def _is_int(value: object) -> bool:
    """True for an int that is no bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_argument(family: str, name: str, hint: Any, value: Any) -> None:
    """Checks one spec value against its constructor annotation before anything is built.

    Raises:
        TypeError: If the value has the wrong type (e.g. a float where an int is expected).
        ValueError: If a count is not positive, a sequence of counts is empty, or a float
            is outside ``[0, 1]`` (every float argument is a probability or a fraction).
    """
    where = f"The {name!r} parameter of model family {family!r}"
    if hint is int:
        if not _is_int(value):
            raise TypeError(f"{where} must be an int. Got {value!r} instead.")
        if value < 1:
            raise ValueError(f"{where} must be a positive int. Got {value!r} instead.")
    elif typing.get_origin(hint) is Sequence:
        if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
            raise TypeError(f"{where} must be a list of ints. Got {value!r} instead.")
        if any(v < 1 for v in value):
            raise ValueError(f"{where} must hold positive ints. Got {value!r} instead.")
        if not value and name not in _MAY_BE_EMPTY:
            raise ValueError(f"{where} must not be empty.")
    elif hint is float:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{where} must be a number. Got {value!r} instead.")
        if not 0 <= float(value) <= 1:  # False for NaN too
            raise ValueError(f"{where} must be between 0 and 1. Got {value!r} instead.")
    elif hint is bool or hint is str:
        if not isinstance(value, hint):
            raise TypeError(f"{where} must be a {hint.__name__}. Got {value!r} instead.")


def _resolve(spec: Mapping[str, Any]) -> tuple[type[ZooModel], dict[str, Any]]:
    """Splits a spec into its family class and constructor arguments, checking both."""
    kwargs = dict(spec)
    family = kwargs.pop("family", None)
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(
            f"Unknown model family {family!r}{_did_you_mean(family, FAMILIES)}; "
            f"expected one of {sorted(FAMILIES)}."
        )
    cls = FAMILIES[family]
    accepted = inspect.signature(cls).parameters
    for key in kwargs:
        if key not in accepted:
            raise TypeError(
                f"Unknown argument {key!r} for model family {family!r}"
                f"{_did_you_mean(key, accepted)}; it accepts {sorted(accepted)}."
            )
    hints = _argument_types(family)
    for key, value in kwargs.items():
        _check_argument(family, key, hints[key], value)
    return cls, kwargs


def validate_spec(spec: Mapping[str, Any]) -> None:
    """Checks a spec without building anything: its family, argument names and values.

    Arguments the spec leaves out take the family's defaults and are not checked.

    Args:
        spec: ``{"family": name, **kwargs}`` as for :func:`build_model`.

    Raises:
        ValueError: If the family is unknown, or an argument has an invalid value (a count
            that is not positive, a fraction outside ``[0, 1]``, ...).
        TypeError: If an argument is not one of the family's, or has the wrong type.
    """
    _resolve(spec)


def build_model(spec: Mapping[str, Any]) -> nn.Module:
    """Builds a network from its spec.

    Args:
        spec: ``{"family": name, **kwargs}``, e.g. a model's ``spec`` attribute or its JSON
            round trip; missing arguments take the family's defaults.

    Returns:
        The freshly initialised network.

    Raises:
        ValueError: If the family is unknown, or an argument has an invalid value.
        TypeError: If an argument is not one of the family's, or has the wrong type (see
            :func:`validate_spec`).
    """
    cls, kwargs = _resolve(spec)
    return cls(**kwargs)


def example_input(
    spec: Mapping[str, Any], batch_size: int = 2, generator: torch.Generator | None = None
) -> Tensor:
    """Returns a random input batch for the network a spec describes, without building it.

    Args:
        spec: ``{"family": name, **kwargs}`` as for :func:`build_model`.
        batch_size: Number of examples.
        generator: Random generator (CPU) for reproducible inputs.

    Returns:
        Floats of the default dtype (images ``[B, C, H, W]`` or features ``[B, F]``), or
        int64 token ids ``[B, max_len]`` for ``bert``.
    """
    cls, kwargs = _resolve(spec)
    arguments = inspect.signature(cls).bind(**kwargs)
    arguments.apply_defaults()
    return cls._random_input(arguments.arguments, batch_size, generator, torch.get_default_dtype())
