"""Run by the tests under 2 CPU processes: a plain Lightning Trainer (no CLI) with DDP and our data module on a
dataset in any layout. Every rank writes the dataset indices it trained on to <out>/rank<r>.txt, and those it
validated to <out>/rank<r>_val.txt, and its BatchNorm statistics after the fit to <out>/rank<r>_bn.pt (averaged
across ranks before validation by the module, unless a third argument says `no-bn-averaging`: then a subclass skips
it)."""

import sys
from pathlib import Path

import lightning as L
import torch

from inception_next.data import ImageNetDataModule, LabelledImages
from inception_next.training.module import ImageClassifier


class WithoutAveraging(ImageClassifier):
    def on_validation_epoch_start(self):
        pass


root, out = sys.argv[1], Path(sys.argv[2])
seen = {"train": [], "val": []}
load = LabelledImages.__getitem__


def recording(self, index):
    seen["train" if self.skip_unreadable else "val"].append(index[0])
    return load(self, index)


LabelledImages.__getitem__ = recording
data = ImageNetDataModule(root=root, img_size=32, batch_size=2, num_workers=0)
network = WithoutAveraging if sys.argv[3:] == ["no-bn-averaging"] else ImageClassifier
model = network(backbone="inception_next_atto", num_classes=data.num_classes, batch_size=2, mixup=0.0, cutmix=0.0,
                backbone_args=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)))
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False, num_sanity_val_steps=0,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model, data)
(out / f"rank{trainer.global_rank}.txt").write_text("\n".join(map(str, seen["train"])))
(out / f"rank{trainer.global_rank}_val.txt").write_text("\n".join(map(str, seen["val"])))
statistics = [buffer.flatten() for name, buffer in model.named_buffers() if "running_" in name]
torch.save(torch.cat(statistics), out / f"rank{trainer.global_rank}_bn.pt")
