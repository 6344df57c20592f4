"""kohya's bucket list and bucket choice, hand-computed."""

from __future__ import annotations

from brushwork.training.data import BucketSelector, make_bucket_resolutions
from brushwork.training.data.buckets import cover_size, crop_ltrb


def test_bucket_list_for_512_matches_kohya() -> None:
    # max_area 262144; w -> min(1024, (262144 // w) // 64 * 64), e.g. 320 -> 819 // 64 = 12 -> 768
    portrait = [
        (256, 832),
        (256, 896),
        (256, 960),
        (256, 1024),
        (320, 704),
        (320, 768),
        (384, 640),
        (448, 576),
    ]
    expected = sorted([*portrait, (512, 512), *[(h, w) for w, h in portrait]])
    assert make_bucket_resolutions((512, 512), 256, 1024, 64) == expected
    assert len(expected) == 17


def test_bucket_list_for_sdxl_has_41_buckets() -> None:
    buckets = make_bucket_resolutions((1024, 1024), 256, 2048, 64)
    assert len(buckets) == 41
    assert (1024, 1024) in buckets
    assert all(w * h <= 1024 * 1024 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)


def test_exact_size_wins_then_nearest_aspect_ratio() -> None:
    selector = BucketSelector((512, 512), enable_bucket=True)
    exact = selector.select(448, 576)
    assert exact.bucket == (448, 576) and exact.resized == (448, 576)
    # 1000x500 (ratio 2.0): 704x320 (2.2) is nearer than 640x384 (1.67) or 768x320 (2.4)
    wide = selector.select(1000, 500)
    assert wide.bucket == (704, 320)
    assert wide.resized == (704, 352)  # covers the bucket: width decides since 2.0 < 2.2
    assert round(wide.ar_error, 6) == 0.2
    assert selector.select(3000, 3000).bucket == (512, 512)


def test_without_bucketing_everything_goes_to_the_resolution() -> None:
    selector = BucketSelector((512, 512), enable_bucket=False)
    choice = selector.select(1000, 500)
    assert choice.bucket == (512, 512)
    assert choice.resized == (1024, 512)


def test_no_upscale_shrinks_large_images_and_keeps_small_ones() -> None:
    selector = BucketSelector((512, 512), enable_bucket=True, no_upscale=True)
    # 2000x1000: sqrt(262144*2)=724.1 -> width-rounded 704x320 (ratio 2.2) vs
    # height-rounded 640x320 (ratio 2.0): the height-rounded one has less error
    big = selector.select(2000, 1000)
    assert big.resized == (640, 320) and big.bucket == (640, 320)
    small = selector.select(300, 200)
    assert small.resized == (300, 200) and small.bucket == (256, 192)


def test_cover_and_crop_box() -> None:
    assert cover_size((300, 100), (192, 64)) == (192, 64)
    assert cover_size((100, 100), (192, 64)) == (192, 192)
    # kohya's get_crop_ltrb (SDXL crop conditioning): the image fitted inside the bucket,
    # centred; e.g. a square in 192x64 -> 64x64 at left (192 - 64) // 2 = 64
    assert crop_ltrb((192, 64), (100, 100)) == (64, 0, 128, 64)
    # 3:1 image in a 64x192 bucket -> 64x21.3 at top (192 - 21.3) // 2 = 85
    assert crop_ltrb((64, 192), (300, 100)) == (0, 85, 64, 106)
