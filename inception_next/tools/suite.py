"""`python -m inception_next benchmark --suite paper`: what a lent GPU should measure, in one command that writes one
Markdown report (machine, versions, date), within about 9 minutes on one H100.

1. Speed, the paper's Table 4 protocol (random images, batch 128 halved until it fits, warm-up then timed steps,
   synchronised; a train step is forward + cross-entropy + backward + AdamW): InceptionNeXt-A/T/S/B against timm's
   ConvNeXt-A/T/S/B and ResNet-50, in TF32 and bf16, channels-first and channels-last, eager; the T pair and timm's
   InceptionNeXt-T also compiled (torch.compile). Each InceptionNeXt / ConvNeXt ratio beside the paper's A100 one.
2. Ours against timm's InceptionNeXt-T on the same settings.
3. The training path: our LightningModule in a Lightning fit (bf16-mixed, channels-last, compiled), fed from memory,
   against the bare model's train step: what the loop costs.
4. Numerics: a bf16-mixed and a compiled training step against fp32 eager on one fixed batch (loss, gradients), and
   the loss falling over a few hundred steps.
5. Peak GPU memory per model and batch (in the speed tables).
6. The data supply: decode + augment images/s of one loader worker on photograph-sized JPEGs (generated, 500 x 375,
   about 110 KB, or --photos_root), with RandAugment in the workers, on the device (`data.device_from`), and with
   decoding on the device too; what each device path costs the GPU (RandAugment, normalization and
   erasing of a training batch; before them, nvJPEG decoding and the crops); and how many workers each model needs
   to keep the GPU busy each way.

`--small` runs every part on the CPU with tiny inputs and one or two steps (the tests run it), so that the suite
cannot rot between the rare GPU leases.
"""

import math
import os
import platform
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import lightning as L
import numpy as np
import timm
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from ..data import ImageNetDataModule, demo
from ..data.module import collate
from ..training.module import ImageClassifier
from . import data_benchmark
from .speed import build, measure, paper_a100


@dataclass
class Plan:
    device: str
    img_size: int
    batch: int
    warmup: int
    iters: int
    pairs: tuple  # (ours, timm's ConvNeXt of the same size)
    extra: tuple  # also timed: the paper's ResNet-50, timm's InceptionNeXt
    precisions: tuple
    compiled: tuple  # the models also timed compiled, in bf16 (or fp32) channels-last
    compile_backend: str
    fit_steps: int
    loss_steps: int
    photos: int
    data_img_size: int
    budget_s: float
    timed: dict = field(default_factory=dict)


def plan(small):
    if small:
        return Plan("cpu", 32, 2, 1, 1, (("inception_next_atto", "timm:convnext_atto"),),
                    ("timm:inception_next_atto",), ("fp32", "bf16"), ("inception_next_atto",), "aot_eager",
                    3, 6, 4, 32, 600)
    return Plan("cuda", 224, 128, 5, 15,
                (("inception_next_atto", "timm:convnext_atto"), ("inception_next_tiny", "timm:convnext_tiny"),
                 ("inception_next_small", "timm:convnext_small"), ("inception_next_base", "timm:convnext_base")),
                ("timm:resnet50", "timm:inception_next_tiny"), ("tf32", "bf16"),
                ("inception_next_tiny", "timm:convnext_tiny", "timm:inception_next_tiny"), "inductor",
                40, 300, 200, 224, 8.5 * 60)


def set_precision(precision, device):
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision != "fp32"
        torch.backends.cudnn.benchmark = True


def environment(device):
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return dict(date=date.today().isoformat(), gpu=gpu, cpu=f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} cores", torch=torch.__version__, cuda=torch.version.cuda or "-",
                cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "-",
                timm=timm.__version__, lightning=L.__version__, python=platform.python_version())


def speed(p, device, started):
    """Train and inference images/s (and peak memory) of every model in every setting, as long as time allows."""
    rows = []
    names = [name for pair in p.pairs for name in pair] + list(p.extra)
    settings = [(precision, layout, False) for precision in p.precisions for layout in (False, True)]
    settings += [(p.precisions[-1], True, True)]
    for precision, channels_last, compiled in settings:
        set_precision(precision, device)
        for name in names:
            if compiled and name not in p.compiled:
                continue
            if time.perf_counter() - started > p.budget_s:
                return rows, f"stopped at {name} ({precision}, compiled={compiled}): past the time budget"
            model = build(name)
            if compiled:
                model = torch.compile(model, backend=p.compile_backend)
            common = dict(device=device, batch=p.batch, img_size=p.img_size, precision=precision,
                          channels_last=channels_last, warmup=p.warmup, iters=p.iters)
            train, train_batch, train_peak = measure(model, train=True, **common)
            infer, _, infer_peak = measure(model, train=False, **common)
            rows.append(dict(model=name, precision=precision, layout="channels-last" if channels_last else
                             "channels-first", mode="compiled" if compiled else "eager", train=train, infer=infer,
                             batch=train_batch, train_peak_mb=train_peak, infer_peak_mb=infer_peak))
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows, None


def ratios(rows, pairs, img_size):
    """Per pair and setting: ours / ConvNeXt, train and inference, beside the paper's A100 ratio."""
    found = {(r["model"], r["precision"], r["layout"], r["mode"]): r for r in rows}
    out = []
    for ours, convnext in pairs:
        paper_ours, paper_convnext = paper_a100(ours, img_size), paper_a100(convnext, img_size)
        paper = (paper_ours[0] / paper_convnext[0], paper_ours[1] / paper_convnext[1]) if paper_ours[0] and \
            paper_convnext[0] else (None, None)
        for (model, precision, layout, mode), row in found.items():
            other = found.get((convnext, precision, layout, mode))
            if model == ours and other:
                out.append(dict(pair=f"{ours} / {convnext}", precision=precision, layout=layout, mode=mode,
                                train=row["train"] / other["train"], infer=row["infer"] / other["infer"],
                                paper_train=paper[0], paper_infer=paper[1]))
    return out


class MemoryImages(Dataset):
    """Random images and labels held in memory: a training path fed without decoding."""

    def __init__(self, count, size, classes=1000):
        self.images = torch.randn(count, 3, size, size)
        self.labels = torch.randint(0, classes, (count,))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]


class StepTimer(Callback):
    """Images/s of the steps after the first `skip` (warm-up, compilation), synchronised at both ends."""

    def __init__(self, skip, device):
        self.skip, self.device, self.start, self.images = skip, device, None, 0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.skip:
            self._sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.skip:
            self.images += len(batch[0])

    def on_train_end(self, trainer, pl_module):
        self._sync()
        self.speed = self.images / (time.perf_counter() - self.start) if self.start else None


def training_path(p, device, name):
    """Our LightningModule in a Lightning fit (the recipe's Mixup and loss; bf16-mixed, channels-last, compiled on a
    GPU) against the bare train step of the same network, same batch and settings."""
    gpu = device.type == "cuda"
    skip = max(1, p.fit_steps // 4)
    timer = StepTimer(skip, device)
    module = ImageClassifier(backbone=name, num_classes=1000, batch_size=p.batch, channels_last=True, compile=gpu,
                             sched=None)
    trainer = L.Trainer(accelerator=device.type, devices=1, precision="bf16-mixed" if gpu else "32-true",
                        max_steps=p.fit_steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, DataLoader(MemoryImages(p.batch * p.fit_steps, p.img_size), batch_size=p.batch,
                                   drop_last=True, pin_memory=gpu))
    precision = "bf16" if gpu else "fp32"
    set_precision(precision, device)
    bare_model = build(name)
    if gpu:
        bare_model = torch.compile(bare_model, backend=p.compile_backend)
    bare, _, _ = measure(bare_model, device, p.batch, p.img_size, precision, True, p.warmup, p.iters, train=True)
    return dict(model=name, lightning=timer.speed, bare=bare, overhead=bare / timer.speed if timer.speed else None)


def _loss_and_gradients(model, images, labels, device, autocast):
    model.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    return loss.item(), torch.cat([q.grad.double().flatten() for q in model.parameters() if q.grad is not None])


def numerics(p, device, name):
    """bf16-mixed and compiled training steps against fp32 eager on one batch; then the loss over many steps."""
    torch.manual_seed(0)
    reference = build(name).to(device)
    images = torch.randn(min(p.batch, 32), 3, p.img_size, p.img_size, device=device)
    labels = torch.randint(0, 1000, (len(images),), device=device)
    set_precision("fp32", device)
    loss, grads = _loss_and_gradients(reference, images, labels, device, autocast=False)
    results = {}
    for label, autocast, compiled in (("bf16-mixed", True, False), ("compiled fp32", False, True)):
        model = build(name).to(device)
        model.load_state_dict(reference.state_dict())
        if compiled:
            model = torch.compile(model, backend=p.compile_backend)
        other_loss, other_grads = _loss_and_gradients(model, images, labels, device, autocast)
        results[label] = dict(loss_rel=abs(other_loss - loss) / abs(loss),
                              grad_cos=torch.nn.functional.cosine_similarity(grads, other_grads, dim=0).item(),
                              grad_rel=((other_grads - grads).norm() / grads.norm()).item())
    batches = [(torch.randn(len(images), 3, p.img_size, p.img_size, device=device),
                torch.randint(0, 10, (len(images),), device=device)) for _ in range(4)]
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-3)
    losses = []
    for step in range(p.loss_steps):  # four fixed batches to fit: the loss must fall
        x, y = batches[step % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(reference(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    window = max(1, len(losses) // 10)
    return results, dict(steps=p.loss_steps, first=sum(losses[:window]) / window, last=sum(losses[-window:]) / window)


def data_supply(p, device, photos_root):
    """Images/s of one loader worker through our dataset, the paper's training transform, on photograph-sized
    JPEGs, each way; and of the device's share of a training batch on `device`, each device way."""
    if photos_root:
        return measure_supply(p, device, Path(photos_root))
    with tempfile.TemporaryDirectory(prefix="photos-") as scratch:
        return measure_supply(p, device, demo.write_photographs(Path(scratch), p.photos))


def measure_supply(p, device, root):
    settings = dict(root=str(root), img_size=p.data_img_size)
    ra_on_device, decoding = (ImageNetDataModule(device_from=start, **settings) for start in ("randaugment", "decode"))
    row, ra_row, decoding_row = data_benchmark.measure(ImageNetDataModule(**settings), "train",
                                                       images=min(p.photos, 200) - 1, rounds=1, workers=1,
                                                       others=(ra_on_device, decoding))
    files = sorted((root / "train").rglob("*.JPEG"))
    row["mean_file_kb"] = sum(f.stat().st_size for f in files) / len(files) / 1024
    row["device_path_worker_img_s"] = ra_row["ours_img_s"]
    row["decoding_path_worker_img_s"] = decoding_row["ours_img_s"]
    crops = torch.stack([torch.from_numpy(np.array(demo.photograph(random.Random(i)).resize(
        (p.data_img_size, p.data_img_size)))).permute(2, 0, 1) for i in range(p.batch)]).to(device)
    row["device_img_s"] = device_share(p, device, ra_on_device, lambda: crops.clone())
    training_set = decoding.training_set()
    encoded = collate(decoding.hparams, train=True)([training_set[i % len(training_set), i] for i in range(p.batch)])
    row["decoding_device_img_s"] = device_share(p, device, decoding,
                                                lambda: decoding.device_work.decode(encoded, device)[0])
    return row


def device_share(p, device, data, images):
    """Images/s of the device's share of a training batch (`images()`, then RandAugment, normalize, random erasing;
    timm's recipe), synchronised."""
    timings = []
    for step in range(p.warmup + p.iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        seeds = range(step * p.batch, (step + 1) * p.batch)  # other draws each step, as training's batches
        data.device_work(images(), seeds)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= p.warmup:
            timings.append(time.perf_counter() - start)
    return p.batch * len(timings) / sum(timings)


def markdown(env, p, rows, note, pair_ratios, path_rows, numeric, loss, supply):
    lines = ["# GPU suite: the paper's speed table, the training path, numerics, the data supply", ""]
    lines += [f"- {key}: {value}" for key, value in env.items()]
    lines += [f"- images {p.img_size} px, batch {p.batch} (halved until it fits), {p.warmup} warm-up then {p.iters} "
              f"timed steps, synchronised", ""]
    lines += ["## Speed (images/s) and peak memory", "",
              "| model | precision | layout | mode | train img/s | infer img/s | batch | train peak MB "
              "| infer peak MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = [f"{v:.0f}" if v is not None else "-" for v in (r["train_peak_mb"], r["infer_peak_mb"])]
        lines.append(f"| {r['model']} | {r['precision']} | {r['layout']} | {r['mode']} | {r['train']:.1f} | "
                     f"{r['infer']:.1f} | {r['batch']} | {peak[0]} | {peak[1]} |")
    if note:
        lines += ["", f"Not measured: {note}."]
    lines += ["", "## InceptionNeXt / ConvNeXt (the paper: A100, TF32, the better layout)", "",
              "| pair | precision | layout | mode | train ratio | infer ratio | paper train | paper infer |",
              "|---|---|---|---|---|---|---|---|"]
    for r in pair_ratios:
        paper = [f"{v:.2f}" if v else "-" for v in (r["paper_train"], r["paper_infer"])]
        lines.append(f"| {r['pair']} | {r['precision']} | {r['layout']} | {r['mode']} | {r['train']:.2f} | "
                     f"{r['infer']:.2f} | {paper[0]} | {paper[1]} |")
    ours_vs_timm = ratios(rows, [(pair[0], extra) for pair in p.pairs for extra in p.extra
                                 if extra.endswith(pair[0].removeprefix("inception_next"))], p.img_size)
    lines += ["", "## Ours / timm's InceptionNeXt (1.00 or more: ours is not slower)", "",
              "| pair | precision | layout | mode | train ratio | infer ratio |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['pair']} | {r['precision']} | {r['layout']} | {r['mode']} | {r['train']:.2f} | "
              f"{r['infer']:.2f} |" for r in ours_vs_timm]
    lines += ["", "## The training path: Lightning fit against the bare train step", "",
              "| model | Lightning img/s | bare img/s | bare / Lightning |", "|---|---|---|---|"]
    for r in path_rows:
        lines.append(f"| {r['model']} | {r['lightning']:.1f} | {r['bare']:.1f} | {r['overhead']:.2f} |")
    lines += ["", "## Numerics: one training step against fp32 eager", "",
              "| step | loss relative difference | gradient cosine | gradient relative L2 error |", "|---|---|---|---|"]
    lines += [f"| {label} | {v['loss_rel']:.2g} | {v['grad_cos']:.6f} | {v['grad_rel']:.2g} |"
              for label, v in numeric.items()]
    lines += ["", f"Fitting 4 fixed batches for {loss['steps']} steps: loss {loss['first']:.3f} (first tenth) -> "
              f"{loss['last']:.3f} (last tenth)."]
    return "\n".join(lines + supply_section(p, rows, supply)) + "\n"


def supply_section(p, rows, supply):
    """The report's data supply: a loader worker's images/s each way, and the workers each model needs."""
    lines = ["", "## The data supply", "",
             f"One loader worker, our dataset with the paper's training transform at {p.data_img_size} px, on "
             f"photograph-sized JPEGs ({supply['mean_file_kb']:.0f} KB on average): {supply['ours_img_s']:.1f} "
             f"img/s (bare timm + PIL: {supply['bare_timm_img_s']:.1f}); with RandAugment on the device "
             f"(`data.device_from: randaugment`) {supply['device_path_worker_img_s']:.1f} img/s, and the device's "
             f"share (RandAugment, normalize, erase) runs at {supply['device_img_s']:.0f} img/s on the "
             f"{'GPU' if p.device == 'cuda' else 'CPU'}; decoding there too (`data.device_from: decode`) "
             f"{supply['decoding_path_worker_img_s']:.1f} img/s, and the device's share (decode, crop, flip, then "
             f"the same) runs at {supply['decoding_device_img_s']:.0f} img/s.", "",
             "| model | best train img/s | workers needed | workers needed, RA on device | GPU time the device "
             "path adds | workers needed, decoding on device | GPU time decoding there adds | this machine's cores |",
             "|---|---|---|---|---|---|---|---|"]
    best = {}
    for r in rows:
        best[r["model"]] = max(best.get(r["model"], 0), r["train"])
    for model, train in best.items():
        needed = math.ceil(train / supply["ours_img_s"])
        needed_on_device = math.ceil(train / supply["device_path_worker_img_s"])
        needed_decoding = math.ceil(train / supply["decoding_path_worker_img_s"])
        lines.append(f"| {model} | {train:.1f} | {needed} | {needed_on_device} | "
                     f"{100 * train / supply['device_img_s']:.0f}% | {needed_decoding} | "
                     f"{100 * train / supply['decoding_device_img_s']:.0f}% | {os.cpu_count()} "
                     f"({'enough' if needed <= os.cpu_count() else 'not enough'}) |")
    return lines


def run(small=False, out=Path("docs/benchmarks"), photos_root=None):
    p = plan(small)
    if p.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --suite paper: no CUDA GPU here; expected a GPU machine (or --small on the CPU)")
    started = time.perf_counter()
    device = torch.device(p.device)
    env = environment(device)
    rows, note = speed(p, device, started)
    pair_ratios = ratios(rows, p.pairs, p.img_size)
    tiny = p.pairs[min(1, len(p.pairs) - 1)][0]
    path_rows = [training_path(p, device, tiny)]
    numeric, loss = numerics(p, device, tiny)
    supply = data_supply(p, device, photos_root)
    report = markdown(env, p, rows, note, pair_ratios, path_rows, numeric, loss, supply)
    out.mkdir(parents=True, exist_ok=True)
    name = f"suite-{'small-' if small else ''}{env['gpu'].replace(' ', '_') if env['gpu'] != 'none' else 'cpu'}-" \
           f"{env['date']}.md"
    (out / name).write_text(report)
    print(report)
    print(f"saved {out / name} ({time.perf_counter() - started:.0f} s)")
    return out / name
