"""The tutorial's recipe in Keras 3 on the torch backend (optional contender).

The same network (Conv-BN-ReLU-Dropout(0.1)-MaxPool ×2, Dense 100, Dense 10;
hidden 16), Adam 0.01, cross-entropy, batch 32, shuffled, validated every
epoch; batch-norm momentum, epsilons and Adam's epsilon set to torch's values.
Data as Keras users feed it: the MNIST arrays scaled once to float32 in
channels-last layout, ``model.fit(x, y, ...)``.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import torch


def build_model() -> keras.Model:
    layers = keras.layers

    def block(width):
        return [
            layers.Conv2D(width, 3, padding="same"),
            layers.BatchNormalization(momentum=0.9, epsilon=1e-5),  # torch's defaults
            layers.ReLU(),
            layers.Dropout(0.1),
            layers.MaxPooling2D(2),
        ]

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            *block(16),
            *block(32),
            layers.Flatten(),
            layers.Dense(100, activation="relu"),
            layers.Dense(10),
        ]
    )


class EpochTimer(keras.callbacks.Callback):
    """Keras validates at the end of each epoch: split the epoch at ``on_test_begin``."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._validating = time.perf_counter()

    def on_test_end(self, logs=None):
        self._validated = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(
            {
                "train_seconds": self._validating - self._started,
                "valid_seconds": self._validated - self._validating,
            }
        )


def _arrays(data_root: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision.datasets as dsets

    dataset = dsets.MNIST(root=data_root, train=train, download=False)
    images = dataset.data.numpy().astype("float32")[..., None] / 255.0
    return images, dataset.targets.numpy()


def run(
    data_root: str, epochs: int, threads: int | None, max_batches: int | None, device: str, seed: int
) -> dict:
    if threads:
        torch.set_num_threads(threads)
    keras.utils.set_random_seed(seed)
    x_train, y_train = _arrays(data_root, True)
    x_valid, y_valid = _arrays(data_root, False)
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01, epsilon=1e-8),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    history = model.fit(
        x_train,
        y_train,
        batch_size=32,
        epochs=epochs,
        shuffle=True,
        validation_data=(x_valid, y_valid),
        validation_batch_size=32,
        steps_per_epoch=max_batches,
        validation_steps=max_batches,
        callbacks=[timer],
        verbose=0,
    )
    train = sum(e["train_seconds"] for e in timer.epochs)
    valid = sum(e["valid_seconds"] for e in timer.epochs)
    return {
        "train_seconds": train,
        "valid_seconds": valid,
        "epoch_seconds": train + valid,
        "epochs": len(timer.epochs),
        "train_acc": history.history["accuracy"][-1],
        "valid_acc": history.history["val_accuracy"][-1],
        "valid_loss": history.history["val_loss"][-1],
    }
