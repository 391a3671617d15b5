"""The numpy half of Grad-CAM and of its gallery: maps, example choice, colours; no TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from worker.engine.gallery import candidates, heat_colors, overlay, pick_examples
from worker.engine.gradcam import class_activation_maps, scaled, upsample


def test_class_activation_map_weights_each_channel_by_its_mean_gradient_then_clips_negatives() -> None:
    features = np.zeros((1, 2, 2, 2), np.float32)
    features[0, :, :, 0] = [[1, 2], [3, 4]]
    features[0, :, :, 1] = [[4, 0], [0, 0]]
    gradients = np.zeros_like(features)
    gradients[0, :, :, 0] = 0.5  # alpha_0 = 0.5
    gradients[0, 0, 0, 1] = -4.0  # alpha_1 = -1

    cam = class_activation_maps(features, gradients)

    # 0.5 * [[1, 2], [3, 4]] - [[4, 0], [0, 0]] = [[-3.5, 1], [1.5, 2]], then ReLU
    np.testing.assert_allclose(cam[0], [[0.0, 1.0], [1.5, 2.0]])


def test_scaled_maps_peak_at_one_and_a_map_without_evidence_stays_zero() -> None:
    maps = np.array([[[0.0, 2.0], [1.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)

    np.testing.assert_allclose(scaled(maps), [[[0.0, 1.0], [0.5, 0.25]], [[0, 0], [0, 0]]])


def test_upsampled_map_keeps_its_hot_corner() -> None:
    cam = np.zeros((1, 4, 4), np.float32)
    cam[0, 0, 3] = 1.0

    big = upsample(cam, 32)

    assert big.shape == (1, 32, 32)
    row, col = np.unravel_index(np.argmax(big[0]), (32, 32))
    assert row < 8 and col >= 24  # the top-right cell of 4x4 covers rows 0-7, columns 24-31


def test_examples_are_the_most_confident_of_each_category_ties_to_the_lower_index() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 0, 1])
    probabilities = np.array([0.9, 0.99, 0.9, 0.1, 0.3, 0.8, 0.2, 0.5, 0.5])

    picked = pick_examples(labels, probabilities, per_category=2)

    assert [(e.category, e.index, e.rank) for e in picked] == [
        ("TP", 1, 1),  # p 0.99
        ("TP", 0, 2),  # p 0.9, index 0 before index 2
        ("TN", 3, 1),  # 1 - p = 0.9
        ("TN", 4, 2),
        ("FP", 5, 1),  # p 0.8 before 0.5 (p = threshold counts as PNEUMONIA)
        ("FP", 7, 2),
        ("FN", 6, 1),  # the only missed PNEUMONIA
    ]
    assert picked[-1].label == 1 and picked[-1].probability == pytest.approx(0.2)


def test_candidates_are_all_images_or_a_seeded_sorted_sample() -> None:
    np.testing.assert_array_equal(candidates(5, 10, seed=1), np.arange(5))
    sample = candidates(100, 10, seed=1)

    assert len(set(sample.tolist())) == 10 and (np.diff(sample) > 0).all()
    np.testing.assert_array_equal(sample, candidates(100, 10, seed=1))
    assert not np.array_equal(sample, candidates(100, 10, seed=2))


def test_heat_colours_run_from_dark_blue_through_yellow_to_dark_red() -> None:
    np.testing.assert_allclose(
        heat_colors(np.array([0.0, 0.25, 0.5, 1.0, 2.0])),
        [[0, 0, 0.5], [0, 0.5, 1], [0.5, 1, 0.5], [0.5, 0, 0], [0.5, 0, 0]],
    )


def test_overlay_leaves_the_xray_where_there_is_no_heat_and_tints_it_where_it_is_hottest() -> None:
    image = np.full((2, 2), 0.5, np.float32)
    heat = np.array([[0.0, 1.0], [0.0, 0.0]], np.float32)

    pixels = overlay(image, heat)

    assert pixels.dtype == np.uint8 and pixels.shape == (2, 2, 3)
    assert pixels[0, 0].tolist() == [128, 128, 128]
    assert pixels[0, 1].tolist() == [round(255 * (0.4 * 0.5 + 0.6 * 0.5)), 51, 51]  # 60% dark red over gray
