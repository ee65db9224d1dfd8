"""Size rules shared by the sampler, VAE and nodes: snapping reported, presets, latent shapes."""

import pytest

from wan_core.sizes import check_video_shape, pixel_multiple, preset_size, snap_frames, snap_video_size
from wan_core.vae import WanVAEConfig


@pytest.mark.parametrize("frames,expected", [(1, 1), (2, 1), (4, 5), (80, 81), (81, 81), (82, 81), (120, 121), (0, 1)])
def test_frames_snap_to_4n_plus_1(frames, expected):
    assert snap_frames(frames) == expected


def test_snapping_is_reported():
    size = snap_video_size(833, 481, 80, 16)
    assert (size.width, size.height, size.frames) == (832, 480, 81)
    assert any("833x481 snapped to 832x480" in n for n in size.notes)
    assert any("frames 80 snapped to 81" in n for n in size.notes)
    assert snap_video_size(832, 480, 81, 16).notes == []


def test_multiples_per_family():
    assert pixel_multiple(WanVAEConfig("2.1").stride[1]) == 16
    assert pixel_multiple(WanVAEConfig("2.2", z_dim=48).stride[1]) == 32


@pytest.mark.parametrize("aspect,tier,multiple,expected", [
    ("16:9", "480p", 16, (832, 480)), ("9:16", "480p", 16, (480, 832)), ("16:9", "720p", 16, (1280, 720)),
    ("16:9", "720p", 32, (1280, 704)), ("9:16", "720p", 32, (704, 1280)),
])
def test_known_presets(aspect, tier, multiple, expected):
    assert preset_size(aspect, tier, multiple) == expected


@pytest.mark.parametrize("aspect", ["1:1", "4:3", "3:4", "21:9"])
@pytest.mark.parametrize("tier,pixels", [("480p", 832 * 480), ("720p", 1280 * 720)])
@pytest.mark.parametrize("multiple", [16, 32])
def test_other_presets_keep_ratio_area_and_multiple(aspect, tier, pixels, multiple):
    w, h = preset_size(aspect, tier, multiple)
    a, b = (int(v) for v in aspect.split(":"))
    assert w % multiple == 0 and h % multiple == 0
    assert abs(w / h - a / b) / (a / b) < 0.06
    assert abs(w * h - pixels) / pixels < 0.1


def test_unknown_preset_is_clear():
    with pytest.raises(ValueError, match="unknown aspect ratio '5:4'"):
        preset_size("5:4", "480p", 16)


def test_latent_shape_and_video_check():
    size = snap_video_size(832, 480, 81, 16)
    assert size.latent_shape(WanVAEConfig("2.1").stride) == (21, 60, 104)
    assert size.latent_shape(WanVAEConfig("2.2", z_dim=48).stride) == (21, 30, 52)
    with pytest.raises(ValueError, match="nearest valid: 81 frames at 832x480"):
        check_video_shape((1, 3, 80, 480, 833), WanVAEConfig("2.1"))
