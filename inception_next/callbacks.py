"""Callbacks the CLI attaches to every run: reports on data quality and prediction output."""

import csv
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_warn


class UnreadableFilesReport(Callback):
    """At the end of each training epoch, say how many unreadable training files were skipped."""

    def __init__(self):
        self.reported = 0

    def on_train_epoch_end(self, trainer, pl_module):
        skipped = getattr(trainer.datamodule, "unreadable_train_files", 0)
        if skipped > self.reported:
            rank_zero_warn(f"epoch {trainer.current_epoch}: skipped {skipped - self.reported} unreadable training "
                           f"file(s) ({skipped} so far)")
            self.reported = skipped
        pl_module.log("train/unreadable_files", float(skipped), sync_dist=True)


class TopKCSVWriter(BasePredictionWriter):
    """Write one CSV row per image: the file, then its top-5 class names and probabilities."""

    def __init__(self, output: str):
        super().__init__(write_interval="epoch")
        self.output = Path(output)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        names = trainer.datamodule.class_names
        self.output.parent.mkdir(parents=True, exist_ok=True)
        partial = self.output.with_name(self.output.name + ".partial")
        with open(partial, "w", newline="") as handle:
            writer = csv.writer(handle)
            k = predictions[0]["indices"].shape[1]
            writer.writerow(["file"] + [f"{field}{i}" for i in range(1, k + 1) for field in ("class", "prob")])
            for batch in predictions:
                for path, probs, indices in zip(batch["paths"], batch["probs"], batch["indices"]):
                    row = [path]
                    for p, i in zip(probs.tolist(), indices.tolist()):
                        row += [names[i], f"{p:.4f}"]
                    writer.writerow(row)
        partial.replace(self.output)
        print(f"predictions: {self.output}")
