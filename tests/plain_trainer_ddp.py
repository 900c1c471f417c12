"""Run by test_distributed under 2 CPU processes: a plain Lightning Trainer (no CLI) with DDP and our data module.
Every rank writes the dataset indices it trained on to <out>/rank<r>.txt."""

import sys
from pathlib import Path

import lightning as L

from inception_next.data import ClassFolderDataset, ImageFolderDataModule
from inception_next.module import ImageClassifier

root, out = sys.argv[1], Path(sys.argv[2])
seen = []
load = ClassFolderDataset.__getitem__


def recording(self, index):
    if self.skip_unreadable:  # the training set
        seen.append(index[0])
    return load(self, index)


ClassFolderDataset.__getitem__ = recording
model = ImageClassifier(backbone="inception_next_atto", num_classes=3, batch_size=2, mixup=0.0, cutmix=0.0,
                        backbone_args=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)))
data = ImageFolderDataModule(root=root, img_size=32, batch_size=2, num_workers=0)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, limit_val_batches=0, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model, data)
(out / f"rank{trainer.global_rank}.txt").write_text("\n".join(map(str, seen)))
