from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from fewshot.images.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    apply_theta,
    augment_batch,
    color_jitter,
    crop_flip_theta,
    eval_transform,
    normalize,
    sample_crop_flip,
    to_float_nchw,
)

PLAIN = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, brightness=0.0, contrast=0.0, saturation=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(n: int = 4, h: int = 10, w: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), generator=g, dtype=torch.uint8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(1, 4, 4), (5, 10, 6), (3, 80, 60)])
def test_eval_transform_equals_numpy_reference_normalisation(shape):
    batch = _batch(*shape)
    ref = (batch.numpy().astype(np.float64) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    out = eval_transform(batch)
    assert out.shape == (shape[0], 3, shape[1], shape[2]) and out.dtype == torch.float32
    assert out.is_contiguous()
    np.testing.assert_allclose(out.numpy(), ref.transpose(0, 3, 1, 2), atol=1e-5)
    torch.testing.assert_close(out, normalize(to_float_nchw(batch)))


def test_disabled_augmentation_is_the_eval_transform_and_draws_nothing():
    batch, g = _batch(), _gen()
    state = g.get_state()
    out = augment_batch(batch, AugmentConfig(enabled=False), g)
    assert torch.equal(out, eval_transform(batch))
    assert torch.equal(g.get_state(), state)


def test_full_size_unflipped_crop_without_jitter_reproduces_the_image():
    batch = _batch(6, 12, 8)
    torch.testing.assert_close(augment_batch(batch, PLAIN, _gen()), eval_transform(batch), atol=1e-4, rtol=0)


def test_certain_flip_mirrors_every_image_horizontally():
    batch = _batch(6, 12, 8)
    out = augment_batch(batch, dataclasses.replace(PLAIN, hflip=1.0), _gen())
    torch.testing.assert_close(out, eval_transform(batch).flip(-1), atol=1e-4, rtol=0)


def _reference_affine_bilinear(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Pixel-by-pixel bilinear resampling with border clamping (grid_sample, align_corners=False)."""
    n, c, h, w = x.shape
    out = np.zeros_like(x)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                xo, yo = (2 * j + 1) / w - 1, (2 * i + 1) / h - 1
                xi = theta[b, 0, 0] * xo + theta[b, 0, 1] * yo + theta[b, 0, 2]
                yi = theta[b, 1, 0] * xo + theta[b, 1, 1] * yo + theta[b, 1, 2]
                px = min(max(((xi + 1) * w - 1) / 2, 0), w - 1)
                py = min(max(((yi + 1) * h - 1) / 2, 0), h - 1)
                x0, y0 = int(np.floor(px)), int(np.floor(py))
                x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
                fx, fy = px - x0, py - y0
                out[b, :, i, j] = ((1 - fy) * ((1 - fx) * x[b, :, y0, x0] + fx * x[b, :, y0, x1])
                                   + fy * ((1 - fx) * x[b, :, y1, x0] + fx * x[b, :, y1, x1]))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_and_flip_resampling_matches_a_pixel_loop_reference(seed):
    g = _gen(seed)
    x = torch.rand(3, 3, 7, 5, generator=g)
    u = torch.rand(3, 5, generator=g)
    theta = sample_crop_flip(AugmentConfig(scale=(0.2, 1.0), ratio=(0.5, 2.0), hflip=0.5), 3, u)
    ref = _reference_affine_bilinear(x.double().numpy(), theta.double().numpy())
    np.testing.assert_allclose(apply_theta(x, theta).numpy(), ref, atol=1e-5)


def test_crop_of_the_left_half_stretches_that_half_over_the_output():
    x = torch.arange(2 * 8, dtype=torch.float32).view(1, 1, 2, 8)
    theta = crop_flip_theta(torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([-0.5]), torch.tensor([0.0]),
                            torch.tensor([False]))
    out = apply_theta(x, theta)
    # Output column j samples input column j/2 - 0.25 (clamped at 0): left half only, upsampled 2x.
    expected = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25])
    torch.testing.assert_close(out[0, 0, 0], expected)
    torch.testing.assert_close(out[0, 0, 1], expected + 8)


@pytest.mark.parametrize("scale,ratio", [((0.08, 1.0), (0.75, 4 / 3)), ((0.5, 1.0), (0.5, 2.0)),
                                         ((0.3, 0.3), (1.0, 1.0))])
def test_sampled_crops_respect_the_scale_and_stay_inside_the_image(scale, ratio):
    cfg = AugmentConfig(scale=scale, ratio=ratio, hflip=0.5)
    theta = sample_crop_flip(cfg, 4000, torch.rand(4000, 5, generator=_gen()))
    w, h = theta[:, 0, 0].abs(), theta[:, 1, 1]
    assert (w <= 1 + 1e-6).all() and (h <= 1 + 1e-6).all()
    assert (theta[:, 0, 2].abs() + w <= 1 + 1e-5).all() and (theta[:, 1, 2].abs() + h <= 1 + 1e-5).all()
    unclamped = (w < 1 - 1e-6) & (h < 1 - 1e-6)
    area, aspect = (w * h)[unclamped], (w / h)[unclamped]
    assert unclamped.any()
    assert (area >= scale[0] - 1e-5).all() and (area <= scale[1] + 1e-5).all()
    assert (aspect >= ratio[0] - 1e-4).all() and (aspect <= ratio[1] + 1e-4).all()
    flipped = (theta[:, 0, 0] < 0).double().mean().item()
    assert abs(flipped - 0.5) < 0.04  # 4000 fair coins: sd 0.008


@pytest.mark.parametrize("p", [0.0, 0.2, 1.0])
def test_flip_probability_is_honoured(p):
    theta = sample_crop_flip(AugmentConfig(hflip=p), 5000, torch.rand(5000, 5, generator=_gen(3)))
    assert abs((theta[:, 0, 0] < 0).double().mean().item() - p) < 0.03


def _sequential_jitter(x, b, c, s):
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    b, c, s = (t.view(-1, 1, 1, 1) for t in (b, c, s))
    x = x * b
    mean = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = c * x + (1 - c) * mean
    grey = (x * luma).sum(1, keepdim=True)
    return (s * x + (1 - s) * grey).clamp(0, 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_fused_colour_jitter_equals_the_sequential_definition(seed):
    g = _gen(seed)
    x = torch.rand(5, 3, 6, 4, generator=g, dtype=torch.float64)
    b, c, s = (0.5 + torch.rand(5, generator=g, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(color_jitter(x, b, c, s), _sequential_jitter(x, b, c, s))


def test_colour_jitter_matches_torchvision_where_nothing_clips():
    g = _gen(4)
    x = 0.35 + 0.3 * torch.rand(3, 3, 8, 8, generator=g)
    b, c, s = (0.9 + 0.2 * torch.rand(3, generator=g) for _ in range(3))
    ref = torch.stack([TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], float(b[i])),
                                                               float(c[i])), float(s[i])) for i in range(3)])
    # torchvision's grey weights sum to 0.9999, ours to 1: agreement to ~1e-4.
    torch.testing.assert_close(color_jitter(x, b, c, s), ref, atol=5e-4, rtol=0)


def test_unit_jitter_factors_leave_the_image_unchanged():
    x = torch.rand(2, 3, 5, 5, generator=_gen())
    torch.testing.assert_close(color_jitter(x, *(torch.ones(2) for _ in range(3))), x)


def test_augmentation_is_a_pure_function_of_the_generator_seed():
    batch = _batch(8, 16, 12)
    a = augment_batch(batch, AugmentConfig(), _gen(7))
    b = augment_batch(batch, AugmentConfig(), _gen(7))
    c = augment_batch(batch, AugmentConfig(), _gen(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_each_sample_gets_its_own_random_transform():
    one = _batch(1, 16, 12)
    out = augment_batch(one.expand(6, -1, -1, -1).contiguous(), AugmentConfig(), _gen())
    flat = out.flatten(1)
    distinct = {tuple(np.round(r.numpy()[:50], 4)) for r in flat}
    assert len(distinct) == 6


def test_augmented_values_stay_within_the_normalised_pixel_range():
    out = augment_batch(_batch(16, 20, 14), AugmentConfig(brightness=0.9, contrast=0.9, saturation=0.9), _gen())
    lo = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    hi = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    per_channel = out.transpose(0, 1).flatten(1)
    assert (per_channel.min(1).values >= lo - 1e-5).all() and (per_channel.max(1).values <= hi + 1e-5).all()


@pytest.mark.parametrize("kwargs", [dict(scale=(0.0, 1.0)), dict(scale=(0.8, 0.5)), dict(scale=(0.5, 1.5)),
                                    dict(ratio=(0.0, 1.0)), dict(hflip=1.5), dict(brightness=-0.1),
                                    dict(saturation=1.0)])
def test_invalid_augment_config_is_rejected_naming_the_field(kwargs):
    with pytest.raises(ValueError, match=f"augment.{next(iter(kwargs))}"):
        AugmentConfig(**kwargs)


@pytest.mark.parametrize("bad", [torch.zeros(2, 4, 4, 3), torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
                                 torch.zeros(4, 4, 3, dtype=torch.uint8)])
def test_non_uint8_nhwc_input_is_rejected(bad):
    with pytest.raises(ValueError, match="uint8 image batch"):
        augment_batch(bad, AugmentConfig(), _gen())
