"""A model of your own, for ``overfitlab train --model examples/my_model.py:build``.

overfitlab calls ``build(in_shape=(C, H, W), num_classes=K, **model_args)`` with only the
keywords the function takes: ``width`` comes from ``--model-arg width=32``, and ``dropout``
from the ``--dropout`` remedy (a study's dropout variant), since the function takes it.
"""

from torch import nn


def build(in_shape, num_classes, width=16, dropout=0.0):
    channels, height, width_px = in_shape
    return nn.Sequential(
        nn.Conv2d(channels, width, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(2 * width, num_classes),
    )
