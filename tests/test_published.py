"""benchmarks/published.py: the published rows are well-formed, traceable, and mapped to the right models."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from benchmarks.published import (
    DEVICE_KEYS,
    DLE,
    HISTORICAL,
    LAMBDA,
    ROWS,
    TIMM,
    TIMM_NOT_SAME,
    UNREGISTERED,
    Published,
)
from cnnprobe.core.errors import UnknownModelError
from cnnprobe.models.registry import resolve

ALL = [*ROWS, *HISTORICAL, *UNREGISTERED]


def _key(row: Published) -> tuple[object, ...]:
    return (row.model, row.source_model, row.device, row.dtype, row.tf32, row.channels_last, row.batch,
            row.image_size, row.source)


def test_rows_are_well_formed() -> None:
    assert len(ROWS) == len(DLE) + len(TIMM) + len(LAMBDA) > 250
    for row in ALL:
        assert row.device in DEVICE_KEYS, row
        assert row.dtype in ("float16", "float32"), row
        assert row.mode == "train_step", row
        assert row.batch > 0 and row.image_size > 0 and row.samples_per_s > 0, row
        assert row.source and (row.step_ms is None or row.step_ms > 0), row
        if row.device == "v100-sxm2":
            assert not row.tf32, row  # V100 has no TF32


def test_no_duplicate_rows() -> None:
    keys = [_key(r) for r in ALL]
    assert len(keys) == len(set(keys))


def test_the_rows_issue_20_quotes() -> None:
    def find(dtype: str, tf32: bool) -> list[Published]:
        return [r for r in ROWS if r.model == "resnet50" and r.device == "a100-sxm4-80gb" and r.dtype == dtype
                and r.tf32 is tf32 and r.source_model == "resnet50v1.5"]

    (amp,) = find("float16", True)
    (tf32,) = find("float32", True)
    assert (amp.samples_per_s, amp.batch, amp.channels_last) == (2470.0, 256, True)
    assert (tf32.samples_per_s, tf32.batch, tf32.channels_last) == (938.0, 256, False)


def test_models_are_registered_or_said_not_to_be() -> None:
    for row in [*ROWS, *HISTORICAL]:
        assert resolve(row.model).name == row.model
    for row in UNREGISTERED:
        with pytest.raises(UnknownModelError):
            resolve(row.model)


def test_timm_columns_agree_with_each_other() -> None:
    # samples/s and ms/step are two columns of the CSV, timed separately: their product is the batch
    for row in TIMM:
        assert row.step_ms is not None
        assert row.samples_per_s * row.step_ms / 1000 == pytest.approx(row.batch, rel=0.02), row


def test_timm_models_match_torchvision_parameter_counts() -> None:
    # the mapping's evidence: timm's param_count (1000 classes) is torchvision's published count, to the CSV's rounding
    differ = set()
    for row in TIMM:
        published = resolve(row.model).published_params
        assert published is not None and row.params_m is not None
        if abs(published / 1e6 - row.params_m) > 0.011:
            differ.add(row.source_model)
    assert differ == {"inception_v3", "vit_huge_patch14_224"}  # both explained in their notes
    assert not {r.source_model for r in TIMM} & set(TIMM_NOT_SAME)


def test_both_timm_layouts_cover_the_same_models() -> None:
    nchw = {r.source_model for r in TIMM if not r.channels_last}
    nhwc = {r.source_model for r in TIMM if r.channels_last}
    assert nhwc <= nchw and nchw - nhwc == {"vit_huge_patch14_224"}  # the nhwc CSV has no vit_huge row


def test_mixed_precision_beats_fp32_in_every_pair() -> None:
    # the sources give fp16 and fp32 of one setup side by side; a swapped column would break this
    pairs: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    for row in ALL:
        where = re.sub(r"(AMP|TF32|FP32) column|fp16|fp32", "", row.source.split("; batch")[0])
        pairs[(row.model, row.source_model, row.device, where)][row.dtype] = row.samples_per_s
    both = [p for p in pairs.values() if len(p) == 2]
    assert len(both) > 60
    for pair in both:
        assert pair["float16"] > pair["float32"], pair


def test_lambda_rows() -> None:
    assert {r.model for r in LAMBDA} == {"resnet50"}
    assert {"h200", "h100-sxm", "h100-pcie", "a100-sxm4-80gb", "rtx4090", "l40s"} <= {r.device for r in LAMBDA}
    assert not any("GH200" in r.source_model or "B200" in r.source_model for r in LAMBDA)
