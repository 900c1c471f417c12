"""Callbacks the CLI attaches to runs: step checkpoints, reports on data quality, prediction output."""

import csv
from pathlib import Path

from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn


class LastCheckpoint(ModelCheckpoint):
    """Write last.ckpt at the end of every epoch (after its validation) and, with `every_n_train_steps`, every that
    many optimizer steps, so that `--ckpt_path last` loses at most that much work. (Lightning's own save_last only
    rewrites it when a new best is saved.) Lightning saves atomically, to a temporary file then renamed, so a kill
    mid-save leaves the previous last.ckpt whole."""

    def __init__(self, dirpath, every_n_train_steps=None):
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_top_k=0, save_last=True,
                         enable_version_counter=False)

    def on_train_epoch_end(self, trainer, pl_module):
        if not (trainer.fast_dev_run or trainer.sanity_checking):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, pl_module):
        pass

    def on_train_end(self, trainer, pl_module):
        pass


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
