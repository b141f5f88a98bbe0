"""FID Inception features: layout of the pytorch-fid weights file, loading round trips, TF pooling variants."""

import argparse

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models.inception import Inception3

from comfy_aig.core import features as ft
from comfy_aig.core.errors import FileLoadError


@pytest.fixture(scope="module")
def random_net():
    torch.manual_seed(0)
    net = ft.build_fid_inception()
    for module in net.modules():  # non-trivial BN statistics so a wrong load would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return net


@pytest.fixture(scope="module")
def weight_files(random_net, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inception")
    state = {k: v.contiguous() for k, v in random_net.state_dict().items()}
    torch.save(state, folder / "pt_inception-2015-12-05-6726825d.pth")
    save_file(state, str(folder / "pt_inception.safetensors"))
    return folder


def test_layout_equals_torchvision_inception_with_1008_classes_and_no_aux_head(random_net):
    reference = Inception3(num_classes=1008, aux_logits=False, init_weights=False).state_dict()
    ours = random_net.state_dict()
    assert list(ours) == list(reference)
    assert all(ours[k].shape == reference[k].shape for k in ours)
    assert ours["fc.weight"].shape == (1008, 2048) and not any(k.startswith("AuxLogits") for k in ours)


@pytest.mark.slow
def test_loaded_files_give_the_same_pool_features(random_net, weight_files):
    images = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ft.InceptionFeatures(random_net)(images)
        for name in ("pt_inception-2015-12-05-6726825d.pth", "pt_inception.safetensors"):
            got = ft.load_fid_inception(weight_files / name)(images)
            assert got.shape == (2, ft.FEATURE_DIM)
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not expected[0].equal(expected[1])


def test_pool_branches_follow_the_tf_graph(random_net):
    x = torch.rand(1, 2048, 8, 8)
    block = random_net.Mixed_7c
    with torch.no_grad():
        pool_out = block._forward(x)[3]
        expected = block.branch_pool(F.max_pool2d(x, 3, stride=1, padding=1))
        torch.testing.assert_close(pool_out, expected)
        a_block = random_net.Mixed_5b
        y = torch.rand(1, 192, 6, 6)
        expected_a = a_block.branch_pool(F.avg_pool2d(y, 3, 1, 1, count_include_pad=False))
        torch.testing.assert_close(a_block._forward(y)[3], expected_a)
        torchvision_style = a_block.branch_pool(F.avg_pool2d(y, 3, 1, 1))
        assert not torch.allclose(torchvision_style, expected_a)  # padding matters at the border


def test_wrong_file_names_the_mismatch(tmp_path):
    bad = tmp_path / "not_inception.safetensors"
    save_file({"weight": torch.zeros(2)}, str(bad))
    with pytest.raises(ft.FeatureModelError, match="not the FID Inception-v3 state dict"):
        ft.load_fid_inception(bad)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": argparse.Namespace(code="not a tensor")}, path)  # any non-allowlisted global
    with pytest.raises(FileLoadError, match=r"evil.pth was refused by torch.load\(weights_only=True\)"):
        ft.load_fid_inception(path)
