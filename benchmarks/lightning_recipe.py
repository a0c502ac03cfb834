"""The tutorial's recipe in PyTorch Lightning (optional contender: ``pip install 'overfitlab[bench]'``).

Same model class, data sets and loaders as ``tutorial_loop`` (torchvision MNIST,
``ToTensor``, batch 32, shuffle, drop_last), Adam 0.01, cross-entropy; loss and
accuracy logged per epoch the Lightning way (``self.log``, no sync per step).
No progress bar, logger, checkpointing or sanity validation: only the epoch.
"""

from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn as nn
import torch.optim as optim

from . import tutorial_loop


class TutorialModule(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = tutorial_loop.CNN(in_dim=1, hidden_dim=16, out_dim=10)
        self.loss_func = nn.CrossEntropyLoss()
        self.valid_correct = 0.0
        self.valid_batches = 0

    def training_step(self, batch, batch_idx):
        images, labels = batch
        outputs = self.model(images)
        loss = self.loss_func(outputs, labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        self.log("train_acc", tutorial_loop.cal_accuracy(outputs, labels), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        outputs = self.model(images)
        self.log("valid_loss", self.loss_func(outputs, labels), on_step=False, on_epoch=True)
        self.log("valid_acc", tutorial_loop.cal_accuracy(outputs, labels), on_step=False, on_epoch=True)

    def configure_optimizers(self):
        return optim.Adam(self.parameters(), lr=tutorial_loop.Config["learning_rate"])


class EpochTimer(L.Callback):
    """Training and validation time per epoch (validation runs inside the training epoch)."""

    def __init__(self):
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, module):
        self._started = time.perf_counter()

    def on_validation_epoch_start(self, trainer, module):
        self._validating = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module):
        self._validated = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.epochs.append(
            {
                "train_seconds": self._validating - self._started,
                "valid_seconds": self._validated - self._validating,
            }
        )


def run(
    data_root: str, epochs: int, threads: int | None, max_batches: int | None, device: str, seed: int
) -> dict:
    if threads:
        torch.set_num_threads(threads)
    L.seed_everything(seed, verbose=False)
    train_loader, valid_loader = tutorial_loop.mnist_loaders(data_root)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
        limit_train_batches=max_batches or 1.0,
        limit_val_batches=max_batches or 1.0,
    )
    module = TutorialModule()
    trainer.fit(module, train_loader, valid_loader)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    train = sum(e["train_seconds"] for e in timer.epochs)
    valid = sum(e["valid_seconds"] for e in timer.epochs)
    return {
        "train_seconds": train,
        "valid_seconds": valid,
        "epoch_seconds": train + valid,
        "epochs": len(timer.epochs),
        "train_acc": metrics.get("train_acc"),
        "valid_acc": metrics.get("valid_acc"),
        "valid_loss": metrics.get("valid_loss"),
    }
