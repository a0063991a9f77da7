"""The degradations of ``degrade.py`` as batched torch operations on any device.

Same three buckets, same parameter ranges and the same order of operations as
:func:`iconface_video.train.degrade.apply` (blur -> down-sample -> noise -> JPEG (twice with a
small re-scale for ``video``) -> colour shift -> bilinear up-sample), so models trained on either
path see the same distribution (``tests/test_train_device_data.py`` compares the statistics).
What differs is how each step is computed, so that a whole batch runs as a few large tensor
operations on the accelerator:

- **blur**: one grouped convolution per bucket with a per-sample kernel, each zero-padded to the
  bucket's largest (reflect border, as OpenCV's ``BORDER_REFLECT_101``);
- **resizing**: each sample's resize is a matrix ``W`` (``y = W x Wᵀ``) built from OpenCV's own
  weights (area, bilinear and bicubic, border replicate; equal to ``cv2.resize``), so samples shrunk
  to different sizes share one canvas per bucket (a multiple of 16): the small image lies in its
  top-left corner and the rest repeats its last row/column, which is exactly the padding a JPEG
  encoder adds;
- **JPEG**: a model of baseline JPEG (YCbCr, 4:2:0 chroma, 8x8 DCT, the IJG tables scaled by
  quality, rounding to integers, bilinear chroma up-sampling as libjpeg-turbo's "fancy" decoder);

Parameters are drawn from a CPU ``torch.Generator`` (a few numbers per sample, identical on every
device); noise fields are drawn on the device from a second generator. Images are
``float[B, 3, R, R]`` RGB in [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F

from iconface_video.train.degrade import BUCKETS, GFPGAN_SIZE

AREA, LINEAR, CUBIC = 0, 1, 2  # the interpolations drawn per sample, in degrade.apply's order


def _odd(n: torch.Tensor) -> torch.Tensor:
    """``degrade._odd`` on a tensor: the odd integer kernel size (at least 3) for width ``n``."""
    k = torch.clamp(torch.round(n), min=3).long()
    return k + (1 - k % 2)


@dataclass(frozen=True)
class BatchParams:
    """Drawn parameters of a batch of degradations, one entry per sample (tensors on the CPU).

    ``bucket``: long[B] index into ``BUCKETS``; ``motion``: bool[B]; ``sigma``: float[B, 2]
    (crop pixels; motion: (length, 0)); ``angle``: float[B] (radians; motion: degrees);
    ``ksize``: long[B]; ``scale``: float[B]; ``interp``: long[B] (AREA/LINEAR/CUBIC);
    ``noise``: float[B] (of 1); ``jpeg``: long[B, 2] (second pass 0: none); ``rescale2``: float[B];
    ``gain``/``offset``: float[B, 3]; ``gamma``: float[B]; ``gray``: bool[B].
    """

    bucket: torch.Tensor
    motion: torch.Tensor
    sigma: torch.Tensor
    angle: torch.Tensor
    ksize: torch.Tensor
    scale: torch.Tensor
    interp: torch.Tensor
    noise: torch.Tensor
    jpeg: torch.Tensor
    rescale2: torch.Tensor
    gain: torch.Tensor
    offset: torch.Tensor
    gamma: torch.Tensor
    gray: torch.Tensor

    def take(self, idx: torch.Tensor) -> BatchParams:
        """The parameters of samples ``idx`` (long[n])."""
        return BatchParams(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})


def pick_buckets(g: torch.Generator, mix: dict[str, float], n: int) -> torch.Tensor:
    """long[n]: bucket indices (into ``BUCKETS``) drawn with probabilities ``mix``."""
    probs = torch.tensor([float(mix.get(b, 0.0)) for b in BUCKETS], dtype=torch.float64)
    unknown = sorted(set(mix) - set(BUCKETS))
    if unknown or probs.sum() <= 0:
        raise ValueError(f"bad bucket mix {mix}; expected positive weights for {BUCKETS}")
    return torch.multinomial(probs / probs.sum(), n, replacement=True, generator=g)


def sample_params(g: torch.Generator, bucket: torch.Tensor, size: int) -> BatchParams:
    """Draw one degradation per sample of ``bucket`` (long[B]) for ``size`` crops (degrade.sample_params's ranges)."""
    n = len(bucket)
    s = size / GFPGAN_SIZE
    std, sev, vid = (bucket == BUCKETS.index(b) for b in BUCKETS)

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(n, *shape, generator=g, dtype=torch.float64)

    def q(lo, hi):
        return torch.randint(0, 1 << 30, (n,), generator=g) % (hi - lo + 1) + lo

    # Gaussian buckets (standard / severe)
    sig_lo = torch.where(sev, 3.0, 0.1).double()
    sig_hi = torch.where(sev, 15.0, 10.0).double()
    iso = torch.rand(n, generator=g) < 0.5
    sx = sig_lo + (sig_hi - sig_lo) * torch.rand(n, generator=g, dtype=torch.float64)
    sy = torch.where(iso, sx, sig_lo + (sig_hi - sig_lo) * torch.rand(n, generator=g, dtype=torch.float64))
    g_angle = torch.where(iso, 0.0, u(0.0, math.pi)).double()
    g_scale = torch.where(sev, u(4.0, 16.0), u(0.8, 8.0))
    g_noise = torch.where(sev, u(0.0, 30.0), u(0.0, 20.0)) / 255.0
    g_q = torch.where(sev, q(30, 70), q(60, 100))
    shift = torch.rand(n, generator=g) < 0.3
    g_offset = torch.where(shift[:, None], u(-20 / 255, 20 / 255, 3), 0.0)
    gray = (torch.rand(n, generator=g) < 0.01) & ~vid
    g_ksize = _odd(41 * s * torch.where(sev, 1.5, 1.0))
    # Video bucket
    length = u(5.0, 31.0) * s
    v_angle = u(0.0, 180.0)
    v_scale = u(1.0, 6.0)
    v_noise = u(0.0, 10.0) / 255.0
    v_q = torch.stack([q(35, 85), q(45, 90)], 1)
    v_rescale = u(0.75, 1.0)
    v_gain = u(0.88, 1.12, 3)
    v_offset = u(-0.04, 0.04, 3)
    v_gamma = torch.exp(u(math.log(0.8), math.log(1.25)))
    interp = torch.randint(0, 3, (n,), generator=g)

    vc = vid[:, None]
    return BatchParams(
        bucket=bucket.clone(),
        motion=vid.clone(),
        sigma=torch.where(vc, torch.stack([length, torch.zeros_like(length)], 1),
                          torch.stack([sx, sy], 1) * s).float(),
        angle=torch.where(vid, v_angle, g_angle).float(),
        ksize=torch.where(vid, _odd(length), g_ksize),
        scale=torch.where(vid, v_scale, g_scale).float(),
        interp=interp,
        noise=torch.where(vid, v_noise, g_noise).float(),
        jpeg=torch.where(vc, v_q, torch.stack([g_q, torch.zeros_like(g_q)], 1)),
        rescale2=torch.where(vid, v_rescale, 1.0).float(),
        gain=torch.where(vc, v_gain, 1.0).float(),
        offset=torch.where(vc, v_offset, g_offset).float(),
        gamma=torch.where(vid, v_gamma, 1.0).float(),
        gray=gray,
    )


# --------------------------------------------------------------------------- blur kernels
def gaussian_kernels(ksize: torch.Tensor, sigma: torch.Tensor, angle: torch.Tensor, k_max: int) -> torch.Tensor:
    """float[B, k_max, k_max]: rotated Gaussians (as degrade.gaussian_kernel), each ``ksize`` wide
    and zero outside, centred, sum 1."""
    r = torch.arange(k_max, dtype=torch.float64, device=sigma.device) - k_max // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    c, s_ = torch.cos(angle.double()), torch.sin(angle.double())
    vx = sigma[:, 0].double().clamp(min=1e-3) ** 2
    vy = sigma[:, 1].double().clamp(min=1e-3) ** 2
    # inverse of R diag(vx, vy) Rᵀ is R diag(1/vx, 1/vy) Rᵀ
    a = c * c / vx + s_ * s_ / vy
    b = c * s_ * (1 / vx - 1 / vy)
    d = s_ * s_ / vx + c * c / vy
    x, y = xx[None], yy[None]
    k = torch.exp(-0.5 * (a[:, None, None] * x * x + 2 * b[:, None, None] * x * y + d[:, None, None] * y * y))
    half = (ksize // 2).to(sigma.device)[:, None, None]
    k = k * ((x.abs() <= half) & (y.abs() <= half))
    return (k / k.sum((1, 2), keepdim=True)).float()


def motion_kernels(ksize: torch.Tensor, angle_deg: torch.Tensor, k_max: int) -> torch.Tensor:
    """float[B, k_max, k_max]: kornia's motion kernels (as degrade.motion_kernel), centred."""
    out = torch.zeros(len(ksize), k_max, k_max)
    for k in torch.unique(ksize).tolist():
        idx = (ksize == k).nonzero().flatten()
        a = angle_deg[idx].float()
        m = kornia.filters.get_motion_kernel2d(int(k), a, torch.zeros_like(a))
        o = (k_max - k) // 2
        out[idx, o:o + k, o:o + k] = m
    return out


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate each image of ``x`` (float[B, C, H, W]) with its kernel (float[B, K, K]), reflect border."""
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    xp = F.pad(x.reshape(1, b * c, h, w), (k // 2,) * 4, mode="reflect")
    weight = kernels.to(x.dtype).repeat_interleave(c, 0)[:, None]
    return F.conv2d(xp, weight, groups=b * c).reshape(b, c, h, w)


# --------------------------------------------------------------------------- resizing
def resize_matrix(n_in: torch.Tensor, n_out: torch.Tensor, interp: torch.Tensor, s_in: int, s_out: int) -> torch.Tensor:
    """float[B, s_out, s_in]: per-sample 1-D resize from ``n_in`` to ``n_out`` pixels (long[B]) with
    OpenCV's weights for ``interp`` (AREA/LINEAR/CUBIC, border replicate). Columns past ``n_in`` are
    zero; rows past ``n_out`` repeat row ``n_out - 1`` (the canvas padding)."""
    dev = n_in.device
    b = len(n_in)
    n_in_f = n_in.double()[:, None]
    scale = n_in_f / n_out.double()[:, None]
    i = torch.minimum(torch.arange(s_out, device=dev)[None], n_out[:, None] - 1).double()
    w = torch.zeros(b, s_out, s_in, dtype=torch.float64, device=dev)
    src = (i + 0.5) * scale - 0.5
    sx = torch.floor(src)
    f = src - sx
    last = n_in_f - 1

    def add(idx: torch.Tensor, val: torch.Tensor, where: torch.Tensor) -> None:
        idx = torch.minimum(idx.clamp(min=0), last).long()
        w.scatter_add_(2, idx[..., None], (val * where)[..., None])

    # Two-tap filters: OpenCV's bilinear, and its area filter when enlarging (a linear filter whose
    # weight only moves inside the destination pixels that straddle a source edge); out-of-range
    # source positions take the edge pixel.
    up = ((interp == AREA) & (n_out > n_in))[:, None]
    two = ((interp == LINEAR)[:, None] | up).double()
    ax = torch.floor(i * scale)
    af = (i + 1) - (ax + 1) / scale
    af = torch.where(af <= 0, 0.0, af - torch.floor(af))
    tx, tf = torch.where(up, ax, sx), torch.where(up, af, f)
    tf = torch.where((tx < 0) | (tx >= last), 0.0, tf)
    tx = torch.where(tx < 0, 0.0, torch.where(tx >= last, last, tx))
    add(tx, 1 - tf, two)
    add(tx + 1, tf, two)
    cub = (interp == CUBIC).double()[:, None]
    a = -0.75
    w0 = ((a * (f + 1) - 5 * a) * (f + 1) + 8 * a) * (f + 1) - 4 * a
    w1 = ((a + 2) * f - (a + 3)) * f * f + 1
    w2 = ((a + 2) * (1 - f) - (a + 3)) * (1 - f) * (1 - f) + 1
    for t, wt in enumerate((w0, w1, w2, 1 - w0 - w1 - w2)):
        add(sx - 1 + t, wt, cub)
    # Area (shrinking): the overlap of each source pixel with the destination cell
    area = ((interp == AREA) & (n_out <= n_in)).double()[:, None, None]
    j = torch.arange(s_in, device=dev, dtype=torch.float64)[None, None]
    lo, hi = (i * scale)[..., None], ((i + 1) * scale)[..., None]
    overlap = (torch.minimum(j + 1, hi) - torch.maximum(j, lo)).clamp(min=0) * (j < n_in_f[..., None])
    cell = torch.minimum(scale, n_in_f - i * scale)[..., None]
    w = w + area * overlap / cell
    return w.float()


def resize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply per-sample square resize matrices ``m`` (float[B, S_out, S_in]) to ``x`` (float[B, C, S_in, S_in])."""
    b, c, s_in, _ = x.shape
    s_out = m.shape[1]
    m = m.to(x.dtype)
    # two batched products over all channels at once: rows, then columns
    y = torch.bmm(m, x.transpose(1, 2).reshape(b, s_in, c * s_in))
    y = torch.bmm(y.reshape(b, s_out * c, s_in), m.transpose(1, 2))
    return y.reshape(b, s_out, c, s_out).transpose(1, 2).contiguous()


def replicate_beyond(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Repeat each image's last valid row/column (``n``: long[B]) over the rest of its canvas."""
    b, c, s, _ = x.shape
    idx = torch.minimum(torch.arange(s, device=x.device)[None], n.to(x.device)[:, None] - 1)
    x = torch.gather(x, 2, idx[:, None, :, None].expand(b, c, s, s))
    return torch.gather(x, 3, idx[:, None, None, :].expand(b, c, s, s))


# --------------------------------------------------------------------------- JPEG model
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def quant_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float[B, 8, 8] luma and chroma tables of the IJG encoder at ``quality`` (long[B], 1..100)."""
    q = quality.clamp(1, 100).double()
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)[:, None, None]

    def table(base):
        t = torch.tensor(base, dtype=torch.float64, device=q.device).reshape(1, 8, 8)
        return torch.floor((t * scale + 50) / 100).clamp(1, 255).float()

    return table(_LUMA), table(_CHROMA)


def _dct_basis(device, dtype) -> torch.Tensor:
    """float[64, 64]: the orthonormal 2-D DCT-II of an 8x8 block, flattened (coef = block @ basis),
    so a whole image's blocks are transformed by one matrix product."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return torch.kron(d, d).T.to(device=device, dtype=dtype)


def _blocks(x: torch.Tensor, table: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Quantise ``x`` (float[B, C, H, W], level-shifted) block by block with ``table`` (float[B, 8, 8])."""
    b, c, h, w = x.shape
    blk = x.reshape(b, c, h // 8, 8, w // 8, 8).transpose(3, 4).reshape(b, -1, 64)
    t = table.to(x).reshape(b, 1, 64)
    coef = torch.round(blk @ basis / t) * t
    return (coef @ basis.T).reshape(b, c, h // 8, w // 8, 8, 8).transpose(3, 4).reshape(b, c, h, w)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Baseline JPEG round trip (4:2:0) of ``x`` (float[B, 3, H, W] in [0, 1], H, W multiples of 16)
    at ``quality`` (long[B]); samples with quality 0 pass through unchanged."""
    u8 = torch.floor(x.clamp(0, 1) * 255 + 0.5)
    r, g_, b_ = u8.unbind(1)
    y = 0.299 * r + 0.587 * g_ + 0.114 * b_
    cb = -0.168736 * r - 0.331264 * g_ + 0.5 * b_ + 128
    cr = 0.5 * r - 0.418688 * g_ - 0.081312 * b_ + 128
    y = torch.round(y)[:, None]
    chroma = torch.round(F.avg_pool2d(torch.stack([cb, cr], 1), 2))
    lt, ct = quant_tables(quality)
    basis = _dct_basis(x.device, x.dtype)
    y = torch.round(_blocks(y - 128, lt, basis) + 128).clamp(0, 255)
    chroma = torch.round(_blocks(chroma - 128, ct, basis) + 128).clamp(0, 255)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False) - 128
    y = y[:, 0]
    cb, cr = chroma.unbind(1)
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    out = torch.round(rgb).clamp(0, 255) / 255.0
    keep = (quality > 0).to(x.device)[:, None, None, None]
    return torch.where(keep, out, x)


# --------------------------------------------------------------------------- the pipeline
def apply(x: torch.Tensor, p: BatchParams, g_dev: torch.Generator) -> torch.Tensor:
    """Degrade ``x`` (float[B, 3, R, R] in [0, 1]) with ``p``; ``g_dev`` (on x's device) draws the
    noise. Returns ``lq``: float[B, 3, R, R] in [0, 1].

    Each bucket is degraded as one group, with kernels as large as its largest and a canvas as
    large as its largest reduced image: severe samples are shrunk 4-16 times, video blurs are
    short, so neither pays for the others' sizes."""
    out = torch.empty_like(x)
    for b in range(len(BUCKETS)):
        idx = (p.bucket == b).nonzero().flatten()
        if len(idx):
            didx = idx.to(x.device)
            out.index_copy_(0, didx, _degrade_group(x.index_select(0, didx), p.take(idx), g_dev))
    return out


def _degrade_group(x: torch.Tensor, p: BatchParams, g_dev: torch.Generator) -> torch.Tensor:
    """:func:`apply` for samples of one bucket."""
    k_max = int(p.ksize.max())  # the parameters live on the host: no device sync
    kern = torch.where(p.motion[:, None, None], motion_kernels(p.ksize, p.angle, k_max),
                       gaussian_kernels(p.ksize, p.sigma, p.angle, k_max))
    x = blur(x, kern.to(x.device))
    n, _, size, _ = x.shape
    dev = x.device
    small_cpu = torch.clamp(torch.round(size / p.scale.double()), min=4).long()
    canvas = 16 * math.ceil(int(small_cpu.max()) / 16)  # sizes are known on the host: no device sync
    small = small_cpu.to(dev)
    full = torch.full((n,), size, dtype=torch.long, device=dev)
    x = resize(x, resize_matrix(full, small, p.interp.to(dev), size, canvas))
    noise = torch.randn(x.shape, generator=g_dev, device=dev, dtype=x.dtype)
    x = (x + noise * p.noise.to(dev, x.dtype)[:, None, None, None]).clamp(0, 1)
    x = jpeg(replicate_beyond(x, small), p.jpeg[:, 0].to(dev))
    if bool((p.jpeg[:, 1] > 0).all()):  # the video bucket: a small re-scale, then the second compression
        mid = torch.clamp(torch.round(small.double() * p.rescale2.to(dev).double()), min=4).long()
        area, linear = torch.full_like(small, AREA), torch.full_like(small, LINEAR)
        m = resize_matrix(mid, small, linear, canvas, canvas) @ resize_matrix(small, mid, area, canvas, canvas)
        x = jpeg(resize(x, m), p.jpeg[:, 1].to(dev))
    x = colour_shift(x, p)
    return resize(x, resize_matrix(small, full, torch.full_like(small, LINEAR), canvas, size)).clamp(0, 1)


def colour_shift(x: torch.Tensor, p: BatchParams) -> torch.Tensor:
    """Gain, offset, gamma and (rarely) grey, per sample, as degrade._colour_shift."""
    dev = x.device
    x = (x * p.gain.to(dev, x.dtype)[:, :, None, None] + p.offset.to(dev, x.dtype)[:, :, None, None]).clamp(0, 1)
    if bool((p.gamma != 1).any()):
        x = x ** p.gamma.to(dev, x.dtype)[:, None, None, None]
    grey = p.gray.nonzero().flatten().to(dev)
    if len(grey):
        y = x.index_select(0, grey)
        y = (0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2])[:, None].expand_as(y)
        x = x.index_copy(0, grey, y.contiguous())
    return x


def degrade(x: torch.Tensor, bucket: torch.Tensor, g: torch.Generator, g_dev: torch.Generator) -> torch.Tensor:
    """Draw (from ``g``, CPU) and apply (noise from ``g_dev``) one degradation of ``bucket`` per sample."""
    return apply(x, sample_params(g, bucket, x.shape[-1]), g_dev)


def light_reference(x: torch.Tensor, g: torch.Generator, ref_size: int) -> torch.Tensor:
    """The mild degradation of training references (degrade.light_reference), then an area resize
    to ``ref_size``: blur σ ≤ 1.5 (512-scale), JPEG 70-100, small colour jitter, flip half the time.
    ``x``: float[N, 3, R, R] -> float[N, 3, ref_size, ref_size]."""
    n, _, size, _ = x.shape
    dev = x.device
    if n == 0:
        return x.new_zeros(0, 3, ref_size, ref_size)
    s = size / GFPGAN_SIZE
    sigma = torch.rand(n, generator=g, dtype=torch.float64) * 1.5 * s
    # OpenCV's GaussianBlur with ksize (0, 0) on float images: ksize = round(8σ + 1) | 1
    ksize = (torch.round(sigma * 8 + 1).long() | 1).clamp(min=1)
    k_max = int(round(1.5 * s * 8 + 1)) | 1
    kern = gaussian_kernels(ksize, torch.stack([sigma, sigma], 1).float(), torch.zeros(n), k_max)
    delta = torch.zeros(k_max, k_max)
    delta[k_max // 2, k_max // 2] = 1
    kern = torch.where((sigma > 0.05)[:, None, None], kern, delta)
    x = blur(x, kern.to(dev))
    x = jpeg(x, (torch.randint(0, 1 << 30, (n,), generator=g) % 31 + 70).to(dev))
    gain = (0.95 + 0.1 * torch.rand(n, 3, generator=g)).to(dev, x.dtype)
    offset = (-0.02 + 0.04 * torch.rand(n, 3, generator=g)).to(dev, x.dtype)
    x = (x * gain[:, :, None, None] + offset[:, :, None, None]).clamp(0, 1)
    flip = (torch.rand(n, generator=g) < 0.5).to(dev)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    full = torch.full((n,), size, dtype=torch.long, device=dev)
    out = torch.full((n,), ref_size, dtype=torch.long, device=dev)
    return resize(x, resize_matrix(full, out, torch.full_like(full, AREA), size, ref_size))
