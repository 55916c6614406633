"""fit_to_model on arrays: what a checkpoint's preprocessing lets through, and what it refuses."""

from __future__ import annotations

import numpy as np
import pytest
from domainvlm.core.model_input import (
    InputAdjustment,
    InputMismatchError,
    ModelInput,
    fit_to_model,
    parse_bands,
    parse_rescale,
)

RGBN = {"mean": [0.1, 0.2, 0.3, 0.4], "bands": [3, 2, 1, 4], "max_pixel_value": 10_000.0}


def test_bands_are_selected_in_channel_order_when_the_file_fits():
    model = ModelInput.from_preprocessing({**RGBN, "file_bands": 4, "file_dtype": "uint16"})
    assert model.mean == pytest.approx((1000, 2000, 3000, 4000))
    array = np.arange(2 * 2 * 4, dtype=np.uint16).reshape(2, 2, 4)
    out = fit_to_model(array, "a.tif", model)
    assert out.dtype == np.uint16 and np.array_equal(out, array[..., [2, 1, 0, 3]])


def test_floats_of_any_width_fit_a_float_model_but_integers_must_match():
    model = ModelInput.from_preprocessing({"mean": [0.5], "file_bands": 1, "file_dtype": "float32"})
    assert fit_to_model(np.zeros((2, 2, 1), np.float64), "f.tif", model).shape == (2, 2, 1)
    with pytest.raises(InputMismatchError, match=r"f\.tif: int16 pixels"):
        fit_to_model(np.zeros((2, 2, 1), np.int16), "f.tif", model)


def test_rescale_answers_for_the_pixel_type_and_returns_float32():
    model = ModelInput.from_preprocessing({**RGBN, "file_bands": 4, "file_dtype": "uint16"})
    array = np.full((1, 1, 4), 10, np.uint8)
    out = fit_to_model(array, "a.tif", model, InputAdjustment(rescale=(40.0, 5.0)))
    assert out.dtype == np.float32 and out.ravel().tolist() == [405.0] * 4


def test_a_checkpoint_without_a_record_checks_only_that_its_bands_exist():
    model = ModelInput.from_preprocessing(RGBN)  # trained before file_bands/file_dtype existed
    assert fit_to_model(np.zeros((2, 2, 6), np.uint8), "six.tif", model).shape == (2, 2, 4)
    with pytest.raises(InputMismatchError, match=r"band\(s\) \[4\] asked for but the file has 3"):
        fit_to_model(np.zeros((2, 2, 3), np.uint16), "rgb.tif", model)
    all_bands = ModelInput.from_preprocessing({"mean": [0.1, 0.2, 0.3]})
    with pytest.raises(InputMismatchError, match="4 band"):
        fit_to_model(np.zeros((2, 2, 4), np.uint8), "rgba.tif", all_bands)


def test_option_parsing():
    assert parse_bands("4, 3,2") == (4, 3, 2) and parse_rescale("2.75e-5,-0.2") == (2.75e-5, -0.2)
    assert parse_rescale("40") == (40.0, 0.0)
    for bad in ("", "0,1", "a"):
        with pytest.raises(ValueError):
            parse_bands(bad)
    for bad in ("0", "1,2,3", "x"):
        with pytest.raises(ValueError):
            parse_rescale(bad)
