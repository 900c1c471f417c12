"""A timm model in every sense: the behaviours timm's own tests/test_models.py checks on its models, checked here on
ours at the small sizes timm's CI uses (the README says how timm's file itself, unchanged, runs on them), and a real
consumer: torchvision's Faster R-CNN on the features."""

import math
from collections import OrderedDict

import pytest
import timm
import torch
from timm.models import FeatureInfo, get_notrace_functions, get_notrace_modules
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.feature_extraction import (
    create_feature_extractor,
    get_graph_node_names,
)
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

import inception_next
from inception_next.models.factory import TIMM_PREFIX

REGISTERED = inception_next.register_with_timm()
# One variant of each architecture family: Inception mixer (atto: band 9, branches 1/4), partial k x k dwconv with
# LayerNorm and the linear head, and the three isotropic ones (Inception, 7x7 dwconv, attention with position grid).
FAMILIES = ["inception_next_atto", "convnext_tiny_k3_par1_8", "inception_next_small_iso", "convnext_small_iso",
            "metanext_attn_small_iso"]
SIZE = 64  # below timm CI's 96-128 px: every level keeps at least 2 x 2 positions, the iso models 4 x 4


def timm_model(name, **kwargs):
    return timm.create_model(TIMM_PREFIX + name, pretrained=False, **kwargs)


def images(batch=1):
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def test_every_variant_is_registered_with_timm_beside_timms_own():
    assert REGISTERED == [TIMM_PREFIX + name for name in inception_next.list_models()]
    assert set(REGISTERED) <= set(timm.list_models(module="inception_next"))
    assert "inception_next_tiny" in timm.list_models(module="inception_next")  # timm's own, untouched
    assert inception_next.register_with_timm() == REGISTERED  # twice: nothing more
    assert timm.models.get_pretrained_cfg_value(TIMM_PREFIX + "inception_next_base_384", "input_size") == (3, 384, 384)


@pytest.mark.parametrize("name", inception_next.list_models())
def test_every_variants_config_names_its_layers(name):
    with torch.device("meta"):
        model = timm_model(name)
    state = model.state_dict()
    cfg = model.default_cfg
    assert cfg["classifier"] + ".weight" in state and cfg["first_conv"] + ".weight" in state
    assert model.num_classes == 1000 and model.num_features > 0 and model.head_hidden_size > 0
    assert cfg["pool_size"] == (cfg["input_size"][-1] // model.feature_info[-1]["reduction"],) * 2


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_backward_and_every_head_reset(name):
    model = timm_model(name, num_classes=42).train()
    out = model(images(2))
    out.mean().backward()
    assert out.shape == (2, 42) and not torch.isnan(out).any()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    grid = SIZE // model.feature_info[-1]["reduction"]
    with torch.no_grad():
        features = model.forward_features(images())
        pre_logits = model.forward_head(features, pre_logits=True)
        assert features.shape == (1, model.num_features, grid, grid)
        assert pre_logits.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(images()).shape == pre_logits.shape
        model.reset_classifier(0, "")  # no classifier, no pooling: the feature map
        unpooled = model(images())
        assert unpooled.ndim == 4 and unpooled.shape[-2:] == (grid, grid)
        made_so = timm_model(name, num_classes=0, global_pool="").eval()
        assert made_so(images()).shape[-2:] == (grid, grid)
        assert made_so.forward_head(features, pre_logits=True).shape[-2:] == (grid, grid)  # on unpooled features


@pytest.mark.parametrize("name", FAMILIES)
def test_torchscript_gives_the_eager_output(name):
    with timm.layers.set_scriptable(True):
        model = timm_model(name).eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(images()), model(images()))


@pytest.mark.parametrize("feature_cls, wrapper", [(None, "FeatureListNet"), ("getter", "FeatureGetterNet")])
@pytest.mark.parametrize("name", FAMILIES)
def test_features_only_in_both_of_timms_forms(name, feature_cls, wrapper):
    extra = {"feature_cls": feature_cls} if feature_cls else {}
    features = timm_model(name, features_only=True, **extra).eval()
    assert type(features).__name__ == wrapper and isinstance(features.feature_info, FeatureInfo)
    with torch.no_grad():
        maps = features(images())
    assert [m.shape[1] for m in maps] == features.feature_info.channels()
    assert all(m.shape[-1] <= math.ceil(SIZE / r) + 1 for m, r in zip(maps, features.feature_info.reduction()))
    chosen = timm_model(name, features_only=True, out_indices=(1, 3), **extra)
    assert chosen.feature_info.channels() == [features.feature_info.channels()[i] for i in (1, 3)]


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_intermediates_match_the_features_with_and_without_checkpointing(name):
    model = timm_model(name).eval()
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(images())
        assert [m.shape[1] for m in intermediates] == info.channels()
        torch.testing.assert_close(final, model.forward_features(images()))
        model.set_grad_checkpointing()
        torch.testing.assert_close(model.forward_intermediates(images())[0], final)


def fx_model(model, train=False):
    """torch.fx through torchvision's feature extractor, with the leaves and functions timm marks untraceable, as
    timm's tests trace."""
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize("name", FAMILIES)
def test_fx_forward_backward_and_scripted(name):
    model = timm_model(name).eval()
    traced = fx_model(model)
    with torch.no_grad():
        assert torch.equal(next(iter(traced(images()).values())), model(images()))
        scripted = torch.jit.script(traced)
        assert next(iter(scripted(images()).values())).shape == (1, 1000)
    trainable = fx_model(timm_model(name, num_classes=42).train(), train=True)
    next(iter(trainable(images(2)).values())).mean().backward()
    assert all(p.grad is not None for p in trainable.parameters())


class FeaturesWithFPN(nn.Module):
    """A detection backbone as torchvision builds them: the features of three levels, an FPN sized from timm's
    `feature_info.channels()`, and one extra max-pooled level."""

    def __init__(self, name, out_channels=32):
        super().__init__()
        self.body = timm.create_model(TIMM_PREFIX + name, features_only=True, out_indices=(1, 2, 3))
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x):
        return self.fpn(OrderedDict((str(i), level) for i, level in enumerate(self.body(x))))


def boxes_scene(generator, count=4, size=128):
    """Dark images, each with one bright box of a random size and place: the box, label 1."""
    scenes, targets = [], []
    for _ in range(count):
        w, h = (torch.randint(24, 64, (2,), generator=generator)).tolist()
        x0, y0 = torch.randint(0, size - w, (1,), generator=generator).item(), torch.randint(
            0, size - h, (1,), generator=generator).item()
        image = torch.rand(3, size, size, generator=generator) * 0.1
        image[:, y0:y0 + h, x0:x0 + w] = 0.9
        scenes.append(image)
        targets.append(dict(boxes=torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32),
                            labels=torch.tensor([1])))
    return scenes, targets


def test_faster_rcnn_trains_on_the_features_and_predicts():
    torch.manual_seed(0)
    backbone = FeaturesWithFPN("inception_next_atto")
    anchors = AnchorGenerator(sizes=((16,), (32,), (64,), (128,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4)
    detector = FasterRCNN(backbone, num_classes=2, rpn_anchor_generator=anchors, min_size=128, max_size=128,
                          box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2))
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.01, momentum=0.9)
    scenes, targets = boxes_scene(torch.Generator().manual_seed(0))
    detector.train()
    losses = []
    for _ in range(12):
        loss = sum(detector(scenes, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"Faster R-CNN on InceptionNeXt-A features: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3])
    detector.eval()
    with torch.no_grad():
        predictions = detector(scenes[:2])
    assert len(predictions) == 2 and all(set(p) == {"boxes", "labels", "scores"} for p in predictions)
    assert all(p["boxes"].shape[1:] == (4,) for p in predictions)
