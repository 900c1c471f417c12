"""`python -m inception_next export`: a trained model to ONNX, checked against onnxruntime.

    python -m inception_next export --ckpt_path logs/demo/version_0/checkpoints/last.ckpt --output demo.onnx
    python -m inception_next export --model inception_next_tiny --weights inceptionnext_tiny.pth --fold

The input is NCHW float images, normalised with the mean/std the weights were trained with, at the size printed
(any batch size); the output is the logits. With onnxruntime installed (`pip install "inception-next[export]"`),
the exported file is run on a random batch beside the PyTorch model and the largest difference is printed.
"""

import argparse
import sys
from pathlib import Path

import torch
from timm.utils import reparameterize_model

from ..deprecation import add_flag
from ..errors import UserError
from ..models.factory import CheckpointError, create_model, get_variant
from ..training.checkpoints import check_checkpoint, trained_data_settings


def load(args):
    """(model in eval mode, image size) from a checkpoint of ours or a registered variant with released weights."""
    if args.ckpt_path:
        from ..training.module import ImageClassifier

        checkpoint = check_checkpoint(args.ckpt_path)
        module = ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
        if args.ema and module.ema is None:
            raise CheckpointError(f"--ema: {checkpoint} has no EMA copy (its run had no model.ema_decay)")
        model = module.ema.module if args.ema else module.backbone
        size = trained_data_settings(checkpoint).get("img_size", model.pretrained_cfg["input_size"][-1])
    else:
        model = create_model(args.model, pretrained=args.weights)
        size = get_variant(args.model).input_size
    return model.eval(), args.img_size or size


def export(model, size, output, opset):
    images = torch.randn(2, 3, size, size)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (images,), str(output), input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                      dynamo=False)


def check_with_onnxruntime(model, size, output):
    """Largest |onnxruntime - torch| / max |torch| on a random batch of 3, or None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    images = torch.randn(3, 3, size, size)
    with torch.inference_mode():
        expected = model(images)
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    return ((got - expected).abs().max() / expected.abs().max()).item()


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m inception_next export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt_path", help="a checkpoint written by fit")
    source.add_argument("--model", help="a registered variant (see inception_next.list_models())")
    parser.add_argument("--weights", help="with --model: a released or state-dict weight file")
    parser.add_argument("--ema", action="store_true", help="with --ckpt_path: export the EMA copy of the weights")
    parser.add_argument("--fold", action="store_true", help="fold every BatchNorm into its neighbouring conv first")
    add_flag(parser, "--img_size", type=int, default=None, help="default: the size the weights were trained at")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--output", type=Path, default=Path("model.onnx"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    try:
        model, size = load(args)
    except UserError as error:
        sys.exit(f"error: {error}")
    if args.fold:
        model = reparameterize_model(model)
    export(model, size, args.output, args.opset)
    cfg = model.pretrained_cfg
    print(f"{args.output}: images (batch, 3, {size}, {size}) normalised with mean {cfg['mean']} std {cfg['std']} "
          f"-> logits (batch, {model.num_classes})")
    difference = check_with_onnxruntime(model, size, args.output)
    print("onnxruntime not installed: not checked" if difference is None
          else f"onnxruntime vs PyTorch on a random batch: largest difference {difference:.2g} of the largest logit")
    return difference
