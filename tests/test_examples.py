"""cnnvis.examples: which images and feature maps an experiment shows, and the class purity of a map's top images."""

import numpy as np
import pytest
import torch

from cnnvis.examples import (chance_purity, label_purity, pick_examples, pick_images, pick_labelled_images,
                             pick_maps, sample_labelled_images)
from cnnvis.mining import TopK

LABELS = np.array([5, -1, 7, 3, 7, 5])


def test_pick_examples_takes_each_wanted_class_once_else_the_first_labelled_images():
    assert pick_examples(LABELS, [7, 3, 9]) == [2, 3]
    assert pick_examples(LABELS, [9, 8]) == [0, 2]  # none of them: as many labelled images as classes asked for


def test_pick_images_takes_the_wanted_classes_first_then_the_other_images():
    assert pick_images(LABELS, [7, 3, 9], 3) == [2, 3, 0]
    assert pick_images(LABELS, [9], 2) == [0, 1]
    assert pick_images(np.array([-1, -1, -1]), [1], 2) == [0, 1]  # an unlabelled folder: its first images


def test_pick_labelled_images_tops_up_with_labelled_images_only():
    assert pick_labelled_images(LABELS, [3], 3) == [3, 0, 2]
    assert pick_labelled_images(LABELS, [], 10) == [0, 2, 3, 4, 5]


def test_sample_labelled_images_is_seeded_sorted_and_skips_unlabelled_ones():
    sample = sample_labelled_images(LABELS, 3, seed=0)
    assert sample == sample_labelled_images(LABELS, 3, seed=0) == sorted(sample)
    assert len(sample) == 3 and 1 not in sample
    assert sample_labelled_images(LABELS, 100, seed=0) == [0, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="experiment.sample_images"):
        sample_labelled_images(LABELS, 1, seed=0)


def _top(kth_values):
    """A TopK of k = 2 per channel whose second-strongest activations are ``kth_values``."""
    values = torch.tensor([[9.0, v] for v in kth_values])
    zeros = torch.zeros(len(values), 2, dtype=torch.long)
    return TopK(values=values, image_index=zeros, y=zeros, x=zeros)


def test_pick_maps_draws_among_firing_maps_unless_too_few_fire():
    top = _top([1.0, 0.0, 2.0, 0.0, 3.0])
    assert pick_maps(top, 3, np.random.default_rng(0)) == [0, 2, 4]  # the three firing ones, sorted
    assert len(set(pick_maps(top, 4, np.random.default_rng(0)))) == 4  # too few fire: any map
    assert pick_maps(top, 9, np.random.default_rng(0), channels=[3, 1]) == [3, 1]
    with pytest.raises(IndexError, match="5 feature maps"):
        pick_maps(top, 1, np.random.default_rng(0), channels=[5])


def test_label_purity_and_its_chance_level():
    assert label_purity(np.array([2, 2, 1, 2])) == 0.75
    one_class = np.array([4] * 10)
    assert chance_purity(one_class, 3, np.random.default_rng(0), draws=20) == 1.0
    balanced = np.repeat(np.arange(50), 2)  # 50 classes: 3 random images rarely share one
    assert 1 / 3 <= chance_purity(balanced, 3, np.random.default_rng(0), draws=200) < 0.4
