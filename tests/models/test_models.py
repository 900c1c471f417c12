import pytest
import timm
import torch
from random_weights import HIERARCHICAL, randomise_
from small_runs import demo_run
from timm.utils import reparameterize_model

import inception_next
from inception_next import CheckpointError, create_model, list_models
from inception_next.models.complexity import count_macs, count_params
from inception_next.models.factory import get_variant
from inception_next.models.inception_next import InceptionDWConv2d


def figure_and_rounding(printed):
    """'28.06' -> (28.06, 0.005): the value and the half-unit of its last printed digit."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return float(printed), 0.5 * 10 ** -decimals


@pytest.mark.parametrize("name", HIERARCHICAL)
def test_timm_state_dict_loads_strictly_and_gives_timm_logits(name):
    reference = randomise_(timm.create_model(name, pretrained=False)).eval()
    ours = create_model(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert expected.abs().max() > 0.1  # the comparison means something only if the logits are not ~0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def within_paper(measured, printed, rel):
    value, rounding = figure_and_rounding(printed)
    return abs(measured - value) <= max(rel * value, rounding)


@pytest.mark.parametrize("name", list_models())
def test_params_and_macs_match_the_paper(name):
    variant = get_variant(name)
    with torch.device("meta"):
        model = create_model(name)
    params, macs = count_params(model) / 1e6, count_macs(model, variant.input_size) / 1e9
    paper = variant.paper
    assert within_paper(params, paper.params, 0.01), f"{params:.2f}M vs the paper's {paper.params}M"
    if paper.macs is not None:
        assert within_paper(macs, paper.macs, 0.02), f"{macs:.2f}G vs the paper's {paper.macs}G"


def forward_backward(model, size=64, batch=2):
    model.train()
    x = torch.randn(batch, 3, size, size)
    out = model(x)
    out.sum().backward()
    assert out.shape == (batch, model.num_classes)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    return out


@pytest.mark.parametrize("name", list_models())
def test_every_variant_runs_forward_and_backward(name):
    forward_backward(create_model(name, num_classes=10, drop_path_rate=0.1, drop_rate=0.1))


ABLATIONS = {
    "no_horizontal_band": dict(mixer_args=dict(branches=["square", "vertical"])),
    "no_vertical_band": dict(mixer_args=dict(branches=["square", "horizontal"])),
    "no_square": dict(mixer_args=dict(branches=["horizontal", "vertical"])),
    "sequential_bands": dict(mixer_args=dict(band_mode="sequential")),
    "band_7": dict(mixer_args=dict(band_kernel_size=7)),
    "band_13": dict(mixer_args=dict(band_kernel_size=13)),
    "ratio_1_4": dict(mixer_args=dict(branch_ratio=0.25)),
    "ratio_1_16": dict(mixer_args=dict(branch_ratio=1 / 16)),
    "layernorm": dict(norm="layernorm"),
    "no_layer_scale": dict(layer_scale_init=None),
    "square_5": dict(mixer_args=dict(square_kernel_size=5)),
}


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_every_ablation_switch_runs_forward_and_backward(ablation):
    model = create_model("inception_next_atto", num_classes=10, **ABLATIONS[ablation])
    forward_backward(model)


def test_dict_override_updates_the_variant_rather_than_replacing_it():
    model = create_model("inception_next_atto", mixer_args=dict(band_kernel_size=7))
    mixer = model.stages[0].blocks[0].token_mixer
    assert mixer.dwconv_w.kernel_size == (1, 7)
    assert mixer.split_sizes == [10, 10, 10, 10]  # atto's branch ratio 1/4 is kept


def test_removed_branch_channels_join_the_identity_part():
    mixer = InceptionDWConv2d(64, branches=("horizontal", "vertical"))
    assert mixer.split_sizes == [48, 8, 8]
    assert mixer.dwconv_hw is None and not any(key.startswith("dwconv_hw") for key in mixer.state_dict())
    x = torch.randn(1, 64, 8, 8)
    torch.testing.assert_close(mixer(x)[:, :48], x[:, :48])


def test_sequential_bands_keep_the_parameter_count_and_apply_both_kernels():
    parallel, sequential = InceptionDWConv2d(64), InceptionDWConv2d(64, band_mode="sequential")
    assert count_params(parallel) == count_params(sequential)
    assert sequential.split_sizes == [48, 8, 8]
    # One impulse in a sequential-band channel spreads into a cross after 1xk then kx1: a full k x k square.
    x = torch.zeros(1, 64, 15, 15)
    x[0, 56, 7, 7] = 1
    with torch.no_grad():
        for conv in sequential.dwconv_band:
            conv.weight.fill_(1)
            conv.bias.zero_()
        out = sequential(x)[0, 56]
    assert (out != 0).sum() == 11 * 11


@pytest.mark.parametrize("bad, match", [
    (dict(branches=["diagonal"]), "branches"),
    (dict(band_mode="zigzag"), "band_mode"),
    (dict(branches=["square"], band_mode="sequential"), "sequential"),
    (dict(branch_ratio=0.5), "exceed"),
])
def test_bad_mixer_arguments_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        InceptionDWConv2d(64, **bad)


def test_unknown_model_and_argument_are_clear_errors():
    with pytest.raises(ValueError, match="not registered.*inception_next_tiny"):
        create_model("inception_next_huge")
    with pytest.raises(ValueError, match="inception_next_atto.*band_size"):
        create_model("inception_next_atto", band_size=3)
    with pytest.raises(ValueError, match="norm"):
        create_model("inception_next_atto", norm="groupnorm")


@pytest.mark.parametrize("name", ["inception_next_atto", "convnext_tiny_k3_par1_4", "inception_next_small_iso"])
def test_multi_scale_features(name):
    model = create_model(name)
    features = model.forward_intermediates(torch.randn(1, 3, 64, 64), intermediates_only=True)
    assert [f.shape[1] for f in features] == [info["num_chs"] for info in model.feature_info]
    assert [64 // f.shape[-1] for f in features] == [info["reduction"] for info in model.feature_info]


@pytest.mark.parametrize("name", ["inception_next_atto", "inception_next_small_iso"])
def test_batchnorm_folding_keeps_outputs_and_leaves_no_batchnorm(name):
    model = randomise_(create_model(name, num_classes=10)).eval()
    folded = reparameterize_model(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy was folded


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_checkpoint_on_disk_loads_through_pretrained(tmp_path, wrapper):
    source = randomise_(create_model("inception_next_atto")).eval()
    state = source.state_dict()
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, tmp_path / "ckpt.pth")
    loaded = create_model("inception_next_atto", pretrained=tmp_path / "ckpt.pth").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))


def test_other_number_of_classes_keeps_the_backbone_and_reinitialises_the_classifier(tmp_path):
    source = randomise_(create_model("inception_next_atto"))
    torch.save(source.state_dict(), tmp_path / "ckpt.pth")
    with pytest.warns(UserWarning, match="re-initialising head.fc2.bias, head.fc2.weight"):
        model = create_model("inception_next_atto", num_classes=10, pretrained=tmp_path / "ckpt.pth")
    torch.testing.assert_close(model.stem[0].weight, source.stem[0].weight)
    torch.testing.assert_close(model.head.fc1.weight, source.head.fc1.weight)
    assert model.head.fc2.weight.shape == (10, 960)


def test_bad_checkpoints_get_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        create_model("inception_next_atto", pretrained=tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        create_model("inception_next_atto", pretrained=tmp_path / "junk.pth")
    torch.save(create_model("inception_next_tiny").state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match=r"wrong shape: .*stem.0.weight \(96, 3, 4, 4\) vs \(40, 3, 4, 4\)"):
        create_model("inception_next_atto", pretrained=tmp_path / "tiny.pth")
    state = create_model("inception_next_atto").state_dict()
    state["extra.weight"] = state.pop("stem.0.weight")
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"missing: stem.0.weight; unexpected: extra.weight"):
        create_model("inception_next_atto", pretrained=tmp_path / "renamed.pth")


def test_public_api():
    assert "inception_next_tiny" in inception_next.list_models()
    assert len(inception_next.list_models()) == 16


def test_a_variant_registered_without_paper_figures_works_everywhere(tiny_dataset, tmp_path, monkeypatch):
    from inception_next.commands import main
    from inception_next.models.inception_next import (
        VARIANTS,
        MetaNeXt,
        Variant,
        register,
    )
    from inception_next.tools import benchmark

    register("inception_next_pico", Variant(MetaNeXt, dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128))))
    try:
        forward_backward(create_model("inception_next_pico", num_classes=3))
        row = next(r for r in benchmark.macs_table() if r["model"] == "inception_next_pico")
        assert row["paper_params_m"] is None and row["params_m"] > 0
        speed = benchmark.main(["--models", "inception_next_pico", "--device", "cpu", "--batch_size", "2",
                                "--img_size", "32", "--warmup", "0", "--iters", "1", "--no_chart",
                                "--out", str(tmp_path / "bench")])
        assert speed[0]["paper_a100_train"] is None and speed[0]["train_img_s"] > 0
        monkeypatch.chdir(tmp_path)
        main(["fit", *demo_run(tiny_dataset, "--model.backbone", "inception_next_pico", "--trainer.fast_dev_run", "1")])
    finally:
        VARIANTS.pop("inception_next_pico")


def test_macs_are_counted_the_same_wherever_the_model_lives():
    on_cpu = create_model("metanext_attn_small_iso")
    with torch.device("meta"):
        on_meta = create_model("metanext_attn_small_iso")
    assert count_macs(on_cpu) == count_macs(on_meta)  # torch's counter misses the CPU attention kernel itself
    assert next(on_cpu.parameters()).device.type == "cpu"  # counted on a copy
