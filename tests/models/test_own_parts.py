"""A researcher's own parts from their own file, by import path: token mixer, block, MLP, norm, head; variants
declared as data; and the one-line errors of each contract."""

import textwrap

import pytest
import torch
from research_folder import MIXER

from inception_next import create_model, list_models
from inception_next.models.complexity import count_params
from inception_next.models.factory import backbone_name, declare_variant, get_variant, wrap_features
from inception_next.models.parts import ModelConfigError

OWN_PARTS = MIXER + '''
import torch

from inception_next.models import Head, MetaNeXtBlock


class TwoResiduals(MetaNeXtBlock):
    """MetaFormer's block: a residual around the mixer alone, then one around the MLP."""

    def forward(self, x):
        x = x + self.drop_path(self.token_mixer(x))
        return x + self.drop_path(self.mlp(self.norm(x)) * self.gamma.view(1, -1, 1, 1))


class GluMlp(nn.Module):
    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, 2 * hidden_dim, 1)
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x):
        a, b = self.fc1(x).chunk(2, dim=1)
        return self.fc2(a * torch.sigmoid(b))


class OneGroupNorm(nn.GroupNorm):
    def __init__(self, dim):
        super().__init__(1, dim)


class LinearHead(Head):
    def __init__(self, dim, num_classes, drop_rate=0.0, pool_type="avg"):
        super().__init__(dim, pool_type)
        self.num_features = dim
        self.fc = nn.Linear(dim, num_classes)

    def get_classifier(self):
        return self.fc

    def reset(self, num_classes, reset_other=False):
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def layers(self, x, pre_logits: bool):
        return x if pre_logits else self.fc(x)


class Halves(nn.Module):
    def __init__(self, dim):
        super().__init__()

    def forward(self, x):
        return x[:, :, ::2, ::2]


class TakesNoDim(nn.Module):
    def __init__(self):
        super().__init__()


class NotAHead(nn.Linear):
    def __init__(self, dim, num_classes, drop_rate=0.0, pool_type="avg"):
        super().__init__(dim, num_classes)
'''


@pytest.fixture
def own_parts(tmp_path, monkeypatch, forget_declared_variants):
    """`my_parts.py` in a folder outside the package, on the import path as the working folder is for `python -m`."""
    (tmp_path / "my_parts.py").write_text(textwrap.dedent(OWN_PARTS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def small(**args):
    return create_model("inception_next_atto", num_classes=10, depths=(1, 1, 1, 1), **args)


def test_a_token_mixer_by_import_path_or_class_path_replaces_the_inception_mixer_everywhere(own_parts):
    images = torch.randn(2, 3, 64, 64)
    plain = small(token_mixer="my_parts.DilatedBand", mixer_args={"dilation": 3})
    mixers = [block.token_mixer for stage in plain.stages for block in stage.blocks]
    assert [type(m).__name__ for m in mixers] == ["DilatedBand"] * 4 and mixers[0].conv.dilation == (3, 3)
    assert plain(images).shape == (2, 10)
    lightning_form = small(token_mixer={"class_path": "my_parts.DilatedBand", "init_args": {"kernel_size": 3}},
                           mixer_args={"dilation": 1})
    assert lightning_form.stages[0].blocks[0].token_mixer.conv.kernel_size == (3, 3)
    assert lightning_form.stages[0].blocks[0].token_mixer.conv.dilation == (1, 1)  # mixer_args over init_args
    # atto's own mixer_args (band 9, ratio 1/4) belong to the Inception mixer: another mixer starts from its own
    assert count_params(plain) == count_params(small(token_mixer="my_parts.DilatedBand", mixer_args={"dilation": 2}))


def test_block_mlp_norm_and_head_by_import_path(own_parts):
    model = small(token_mixer="attention", mixer_args={"num_heads": 2}, block="my_parts.TwoResiduals",
                  mlp="my_parts.GluMlp", norm="my_parts.OneGroupNorm", head="my_parts.LinearHead")
    block = model.stages[0].blocks[0]
    assert (type(block).__name__, type(block.mlp).__name__, type(block.norm).__name__) == (
        "TwoResiduals", "GluMlp", "OneGroupNorm")
    assert type(model.stem[1]).__name__ == "OneGroupNorm"  # the norm setting covers the stem and downsampling too
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert model.pretrained_cfg["classifier"] == "head.fc" and model.get_classifier() is model.head.fc
    assert set(model.layer_scales()) == {f"stage{i}.block0" for i in range(4)}  # TensorBoard's layer-scale view


def test_features_only_and_isotropic_networks_take_them_too(own_parts):
    features = wrap_features(small(token_mixer="my_parts.DilatedBand"))
    assert [tuple(f.shape[1:]) for f in features(torch.randn(1, 3, 64, 64))] == [
        (40, 16, 16), (80, 8, 8), (160, 4, 4), (320, 2, 2)]
    iso = create_model("inception_next_small_iso", depth=2, dim=32, num_classes=5, token_mixer="my_parts.DilatedBand")
    assert iso(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_a_variant_declared_as_data_is_its_base_with_the_changes(own_parts):
    declaration = dict(name="atto_dilated", base="inception_next_atto", token_mixer="my_parts.DilatedBand",
                       dims=[32, 64, 128, 256], input_size=160)
    assert backbone_name(declaration) == "atto_dilated" and create_model(declaration).pretrained_cfg["input_size"] == (
        3, 160, 160)
    assert "atto_dilated" not in list_models()  # built as declared: registering it is an explicit call
    assert declare_variant(dict(declaration)) == "atto_dilated" == declare_variant(dict(declaration))  # twice: fine
    variant = get_variant("atto_dilated")
    assert variant.input_size == 160 and variant.args["depths"] == (2, 2, 6, 2) and "mixer_args" not in variant.args
    model = create_model("atto_dilated")
    assert type(model.stages[0].blocks[0].token_mixer).__name__ == "DilatedBand"
    assert model.pretrained_cfg["input_size"] == (3, 160, 160)
    with pytest.raises(ModelConfigError, match="^model.backbone name 'atto_dilated': already registered as another"):
        declare_variant({**declaration, "dims": [40, 80, 160, 320]})
    with pytest.raises(ModelConfigError, match="^model 'nope' is not registered"):
        declare_variant(dict(name="x", base="nope"))
    with pytest.raises(ModelConfigError, match="^model.backbone {'base': 'inception_next_atto'}: expected a regis"):
        backbone_name({"base": "inception_next_atto"})


@pytest.mark.parametrize("setting, value, message", [
    ("token_mixer", "my_parts.Missing", r"^token_mixer my_parts.Missing: module my_parts \(.*my_parts.py\) has no "
                                        r"class 'Missing'$"),
    ("token_mixer", "not_there.Mixer", "^token_mixer not_there.Mixer: no module named 'not_there'; expected a "
                                       "module importable from the working folder or PYTHONPATH$"),
    ("token_mixer", "my_parts.TakesNoDim", r"^token_mixer my_parts.TakesNoDim: too many positional arguments; "
                                           "expected a class taking dim first"),
    ("token_mixer", "unknown", "^token_mixer 'unknown': expected one of attention, dwconv, inception or an import "
                               "path"),
    ("mlp", "my_parts.TakesNoDim", "^mlp my_parts.TakesNoDim: too many positional arguments; expected a class "
                                   r"taking \(dim, hidden_dim\)"),
    ("head", "my_parts.NotAHead", "^head NotAHead: not a Head; expected a subclass of inception_next.models.Head"),
    ("token_mixer", {"class_path": "my_parts.DilatedBand", "args": {}}, "^token_mixer .*: expected a name, an import "
                                                                         "path or {class_path"),
])
def test_a_part_that_breaks_its_contract_is_one_line_naming_it(own_parts, setting, value, message):
    with pytest.raises(ModelConfigError, match=message) as caught:
        small(**{setting: value})
    assert "\n" not in str(caught.value)


def test_a_part_that_changes_the_shape_is_named_at_the_first_forward(own_parts):
    model = small(token_mixer="my_parts.Halves")
    with pytest.raises(ModelConfigError, match=r"^token_mixer my_parts.Halves: returned \(1, 40, 8, 8\) for an input "
                                               r"of \(1, 40, 16, 16\); expected the input's shape"):
        model(torch.randn(1, 3, 64, 64))
