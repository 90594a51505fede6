"""The sampler works unchanged on a torchvision ImageFolder (labels = ``ImageFolder.targets``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from fewshot import EpisodeSampler, VariableEpisodeSampler

CLASSES = {"boots": 7, "caps": 5, "scarves": 9, "socks": 3, "ties": 6}  # name -> number of images


@pytest.fixture
def image_folder(tmp_path):
    """Small RGB images whose red channel encodes the class and green channel the image number."""
    for c, (name, count) in enumerate(sorted(CLASSES.items())):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.new("RGB", (6, 4), (40 * c, 10 * i, 0)).save(tmp_path / name / f"{i:03d}.png")
    return datasets.ImageFolder(str(tmp_path), transform=transforms.PILToTensor())


@pytest.mark.parametrize("num_workers", [0, 2])
def test_imagefolder_episodes_hold_the_images_of_their_classes(image_folder, num_workers):
    sampler = EpisodeSampler(image_folder.targets, 3, 2, 2, 6, seed=0, small_classes="exclude")
    assert sampler.excluded_classes == {3: 3}  # "socks" has 3 images, fewer than 2 + 2
    loader = DataLoader(image_folder, batch_sampler=sampler, collate_fn=sampler.collate, num_workers=num_workers)
    episodes = list(loader)
    assert len(episodes) == 6
    batch = sampler.sample_batch(0, 6)
    for ep, indices in zip(episodes, batch):
        assert ep.support_x.shape == (6, 3, 4, 6) and ep.query_x.shape == (6, 3, 4, 6)
        assert ep.support_x.dtype == torch.uint8
        assert 3 not in ep.class_ids.tolist()
        # the red channel says which class folder each image came from
        assert (ep.support_x[:, 0, 0, 0] // 40).tolist() == ep.class_ids[ep.support_y].tolist()
        assert (ep.query_x[:, 0, 0, 0] // 40).tolist() == ep.class_ids[ep.query_y].tolist()
        order = np.concatenate([indices[:, :2].reshape(-1), indices[:, 2:].reshape(-1)])  # support, then query
        files = [image_folder.samples[i][0] for i in order]
        numbers = [int(f[-7:-4]) for f in files]
        green = torch.cat([ep.support_x[:, 1, 0, 0], ep.query_x[:, 1, 0, 0]]) // 10
        assert green.tolist() == numbers


def test_imagefolder_works_with_the_variable_sampler(image_folder):
    sampler = VariableEpisodeSampler(image_folder.targets, 4, seed=1)
    for ep in DataLoader(image_folder, batch_sampler=sampler, collate_fn=sampler.collate):
        assert 5 == len(ep.class_ids)  # only 5 classes: ways ~ U[5, 5]
        assert (ep.support_x[:, 0, 0, 0] // 40).tolist() == ep.class_ids[ep.support_y].tolist()
        assert ep.query_y.bincount().tolist() == [1] * 5  # q = min(10, min floor(n_c / 2)) = 1
