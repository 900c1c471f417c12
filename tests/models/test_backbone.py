"""InceptionNeXt as a backbone: timm's model contract, method by method against timm's own models holding the same
weights; features for detection (torch.fx, an FPN); fine-tuning (layer decay, gradient checkpointing); ONNX."""

import csv
from collections import OrderedDict

import pytest
import timm
import torch
from random_weights import HIERARCHICAL, randomise_
from small_runs import SMALL
from timm.optim import param_groups_layer_decay
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FeaturePyramidNetwork

from inception_next import create_model
from inception_next.commands import main
from inception_next.tools.export import main as export
from inception_next.training.config import EXPERIMENTS
from inception_next.training.module import parameter_groups


@pytest.fixture(scope="module", params=HIERARCHICAL)
def pair(request):
    """(ours, timm's) for one variant, timm's randomised weights (and BatchNorm statistics) loaded into both."""
    name = request.param
    reference = randomise_(timm.create_model(name, pretrained=False)).eval()
    ours = create_model(name).eval()
    ours.load_state_dict(reference.state_dict())
    return ours, reference


IMAGES = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def assert_same(got, expected):
    if isinstance(expected, (list, tuple)):
        assert type(got) is type(expected) and len(got) == len(expected)
        for a, b in zip(got, expected):
            assert_same(a, b)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    {}, dict(intermediates_only=True), dict(indices=[1, 2, 3], intermediates_only=True), dict(indices=2),
    dict(indices=[0, -1]), dict(indices=[1], stop_early=True, intermediates_only=True), dict(norm=True),
], ids=str)
@torch.no_grad()
def test_forward_intermediates_matches_timm(pair, kwargs):
    ours, reference = pair
    assert_same(ours.forward_intermediates(IMAGES, **kwargs), reference.forward_intermediates(IMAGES, **kwargs))


@torch.no_grad()
def test_features_head_and_pre_logits_match_timm(pair):
    ours, reference = pair
    features = reference.forward_features(IMAGES)
    assert_same(ours.forward_features(IMAGES), features)
    assert_same(ours.forward_head(features, pre_logits=True), reference.forward_head(features, pre_logits=True))
    assert_same(ours.forward_head(features), reference.forward_head(features))
    assert ours.num_features == reference.num_features and ours.head_hidden_size == reference.head_hidden_size
    assert ours.feature_info == reference.feature_info
    assert ours.get_classifier().weight.shape == reference.get_classifier().weight.shape


def test_config_and_data_config_match_timm(pair):
    ours, reference = pair
    for key in ("input_size", "interpolation", "mean", "std", "first_conv", "classifier", "pool_size"):
        assert ours.pretrained_cfg[key] == reference.pretrained_cfg[key], key
    assert ours.pretrained_cfg["crop_pct"] == 0.875  # the official evaluation's (timm's card for base says 0.95)
    ours_data, theirs = timm.data.resolve_model_data_config(ours), timm.data.resolve_model_data_config(reference)
    assert {**ours_data, "crop_pct": None} == {**theirs, "crop_pct": None}


@pytest.mark.parametrize("num_classes, reset_other", [(10, False), (0, False), (7, True)])
def test_reset_classifier_matches_timm(pair, num_classes, reset_other):
    name = pair[1].pretrained_cfg["architecture"]
    ours, reference = create_model(name), timm.create_model(name)  # fresh: resetting changes them
    ours.reset_classifier(num_classes, reset_other=reset_other)
    reference.reset_classifier(num_classes, reset_other=reset_other)
    with torch.no_grad():
        shapes = [out.shape for out in (ours(IMAGES), reference(IMAGES))]
    assert shapes[0] == shapes[1] and ours.num_classes == num_classes
    assert ours.head_hidden_size == reference.head_hidden_size


@torch.no_grad()
def test_features_only_and_pruning_match_timm(pair):
    ours, reference = pair
    name = reference.pretrained_cfg["architecture"]
    features = create_model(name, features_only=True, out_indices=(1, 2, 3))
    theirs = timm.create_model(name, features_only=True, out_indices=(1, 2, 3))  # keys: stem_0..., stages_1...
    both = {k.replace(".", "_", 1): v for k, v in reference.state_dict().items() if not k.startswith("head")}
    features.load_state_dict(both)  # the same wrapper as timm's, so the same keys
    theirs.load_state_dict(both)
    assert type(features) is type(theirs)
    assert_same(features.eval()(IMAGES), theirs.eval()(IMAGES))
    assert features.feature_info.channels() == theirs.feature_info.channels()
    assert features.feature_info.reduction() == theirs.feature_info.reduction()
    assert not any(name.startswith("head") for name, _ in features.named_parameters())


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = randomise_(create_model("inception_next_atto", num_classes=5))
    checkpointed = create_model("inception_next_atto", num_classes=5)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.set_grad_checkpointing(True)
    images = torch.randn(2, 3, 64, 64)
    for model in (plain, checkpointed):
        model.train()
        model(images).square().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_fx_traces_the_features_and_an_fpn_runs_on_them():
    model = randomise_(create_model("inception_next_tiny")).eval()
    nodes = {f"stages.{i}": f"c{i + 2}" for i in range(4)}
    extractor = create_feature_extractor(model, return_nodes=nodes)  # torch.fx symbolic tracing
    with torch.no_grad():
        traced = extractor(IMAGES)
        assert_same(list(traced.values()), model.forward_intermediates(IMAGES, intermediates_only=True))
        features = create_model("inception_next_tiny", features_only=True)
        fpn = FeaturePyramidNetwork(features.feature_info.channels(), out_channels=64)
        pyramid = fpn(OrderedDict(zip(nodes.values(), features(IMAGES))))
    assert [p.shape for p in pyramid.values()] == [(2, 64, 64 // r, 64 // r) for r in (4, 8, 16, 32)]


def test_layer_decay_scales_each_group_as_timm_does():
    ours = create_model("inception_next_tiny")
    reference = timm.create_model("inception_next_tiny")

    def scale_by_name(model, groups):
        names = {id(p): n for n, p in model.named_parameters()}
        return {names[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}

    got = scale_by_name(ours, parameter_groups(ours, 0.05, layer_decay=0.75))
    expected = scale_by_name(reference, param_groups_layer_decay(reference, weight_decay=0.05, layer_decay=0.75))
    assert got == expected
    assert got["head.fc2.weight"][0] == 1.0 and got["stem.0.weight"][0] == pytest.approx(0.75 ** 19)  # 18 blocks


def test_onnx_export_matches_pytorch(tmp_path):
    weights = tmp_path / "atto.pth"
    torch.save(randomise_(create_model("inception_next_atto")).state_dict(), weights)
    for fold in ([], ["--fold"]):
        difference = export(["--model", "inception_next_atto", "--weights", str(weights), "--img_size", "64",
                             "--output", str(tmp_path / "atto.onnx"), *fold])
        assert difference is not None and difference < 1e-4


def released_weights(path, num_classes=1000):
    """A state dict in the released layout (as the official and timm files), with random values."""
    torch.save(dict(model=randomise_(create_model("inception_next_atto", num_classes=num_classes)).state_dict()), path)
    return path


def test_predict_with_released_weights_names_imagenet_classes_without_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (80, 60), (40 * i, 90, 200)).save(images / f"{i}.jpg")
    main(["predict", "--model.pretrained", str(released_weights(tmp_path / "released.pth")),
          "--data.predict_root", str(images), "--predict_csv", str(tmp_path / "out.csv"), *SMALL])
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    imagenet = set(timm.data.ImageNetInfo().label_descriptions())
    assert len(rows) == 3 and all(row["class1"] in imagenet for row in rows)
    assert not (tmp_path / "logs").exists()


def test_a_1000_class_checkpoint_predicts_imagenet_names_and_refuses_other_data(tiny_dataset, tmp_path, monkeypatch,
                                                                               capsys):
    """A 1000-class ImageNet model, trained (briefly) on 3 of ImageNet's class folders, knows its classes."""
    import json
    import shutil

    synsets = timm.data.ImageNetInfo().label_names()
    data = tmp_path / "data"
    for split in ("train", "val"):
        for folder, synset in zip(sorted((tiny_dataset / split).iterdir()), synsets[:3]):
            shutil.copytree(folder, data / split / synset)
    monkeypatch.chdir(tmp_path)
    demo = ["--config", str(EXPERIMENTS / "demo.yaml"), *SMALL]
    main(["fit", *demo, "--data.root", str(data), "--data.classes", json.dumps(synsets), "--trainer.max_epochs",
          "1", "--save_every_n_steps", "null"])
    last = next((tmp_path / "logs").rglob("last.ckpt"))
    assert torch.load(last, weights_only=False)["state_dict"]["backbone.head.fc2.weight"].shape[0] == 1000
    main(["predict", *demo, "--ckpt_path", "last", "--data.predict_root", str(tiny_dataset / "val"),
          "--predict_csv", str(tmp_path / "out.csv")])  # no data.root: the demo's folders are not needed
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    imagenet = set(timm.data.ImageNetInfo().label_descriptions())
    assert len(rows) == 12 and {row["class1"] for row in rows} <= imagenet
    with pytest.raises(SystemExit) as stopped:
        main(["validate", *demo, "--ckpt_path", "last"])  # on the demo's data, whose classes it does not know
    assert stopped.value.code == 1
    assert "classes the model does not know: checkerboard, circle, cross" in capsys.readouterr().err


def test_dynamo_captures_the_whole_model_in_one_graph():
    """What torch.compile needs: no graph break in the forward pass (checked without compiling kernels)."""
    model = create_model("inception_next_atto").eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert_same(compiled(IMAGES), model(IMAGES))
