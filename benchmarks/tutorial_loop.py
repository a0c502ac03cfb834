"""The tutorial's training loop, copied as the tutorial writes it: the baseline.

Source: the tutorial "7_overfitting_and_gap" (Sangh0/DeepLearning-Tutorial):
torchvision MNIST with ``ToTensor``, ``DataLoader(batch_size=32, shuffle=True,
drop_last=True)`` for training and validation, the ``CNN`` class with
``hidden_dim=16``, Adam lr 0.01, ``CrossEntropyLoss``, ``.item()`` per batch.
The code between the ``copied`` banners is the tutorial's, changed only where
marked ``# bench:``: parametrized by data root, epochs, threads and an optional
batch limit for smoke tests, timed around its training and validation phases,
and returning its numbers instead of only printing them.

``GAPcnn`` is the tutorial's class too; the tutorial defines it but trains only
``CNN``, so the GAP benchmark trains it with the same loop and recipe.
"""

from __future__ import annotations

import time

import numpy as np  # 텐서 계산을 위해
import torch  # 파이토치 텐서 사용을 위해
import torch.nn as nn  # 뉴럴 네트워크 빌드를 위해
import torch.optim as optim  # optimizer 사용을 위해
import torchvision.datasets as dsets  # torchvision에 내장된 MNIST 데이터셋 다운로드 위해
import torchvision.transforms as transforms  # torchvision 전처리를 위해
from torch.utils.data import DataLoader, Dataset  # 딥러닝 학습 데이터로더 구현을 위해

# ============================================================================ copied
# Set hyperparameters
Config = {
    "batch_size": 32,
    "learning_rate": 0.01,
    "epochs": 10,
}


class CNN(nn.Module):
    def __init__(self, in_dim=1, hidden_dim=8, out_dim=10):
        super().__init__()
        self.features = nn.Sequential(
            # convolution layer
            nn.Conv2d(in_dim, hidden_dim, kernel_size=3, stride=1, padding=1),
            # batch normalization layer
            nn.BatchNorm2d(hidden_dim),
            # activation layer
            nn.ReLU(),
            # dropout layer
            nn.Dropout(0.1),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(hidden_dim, hidden_dim * 2, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(hidden_dim * 2),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )

        self.classifier = nn.Sequential(
            nn.Linear(7 * 7 * hidden_dim * 2, 100),
            nn.ReLU(),
            nn.Linear(100, out_dim),
        )

    def forward(self, x):
        batch_size = x.size(0)
        x = self.features(x)
        x = x.view(batch_size, -1)
        x = self.classifier(x)
        return x


# GAP 적용한 CNN
class GAPcnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            # convolution layer
            nn.Conv2d(1, 8, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(8, 16, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )

        # global average pooling 적용
        self.gap = nn.AdaptiveAvgPool2d(output_size=(1, 1))

        self.classifier = nn.Sequential(
            nn.Linear(16, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )

    def forward(self, x):
        batch_size = x.size(0)
        x = self.features(x)
        x = self.gap(x)
        x = x.view(batch_size, -1)
        x = self.classifier(x)
        return x


def cal_accuracy(outputs, labels):
    outputs = torch.argmax(outputs, dim=1)
    correct = (outputs == labels).sum() / len(outputs)
    return correct


# ============================================================================ end copied


def mnist_loaders(data_root: str):
    """The tutorial's data sets and loaders (``download=False``: the files are already there)."""
    # ======================================================================== copied
    # Load MNIST dataset
    train_set = dsets.MNIST(
        root=data_root,  # bench: was 'mnist/'
        train=True,
        transform=transforms.ToTensor(),
        download=False,  # bench: was True
    )

    valid_set = dsets.MNIST(
        root=data_root,  # bench: was 'mnist/'
        train=False,
        transform=transforms.ToTensor(),
        download=False,  # bench: was True
    )

    train_loader = DataLoader(
        dataset=train_set,
        batch_size=Config["batch_size"],
        shuffle=True,
        drop_last=True,
    )

    valid_loader = DataLoader(
        dataset=valid_set,
        batch_size=Config["batch_size"],
        shuffle=True,
        drop_last=True,
    )
    # ======================================================================== end copied
    return train_loader, valid_loader


class ArrayImages(Dataset):
    """uint8 (N, H, W) images converted one by one with ``ToTensor``, as torchvision's MNIST does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.to_tensor = transforms.ToTensor()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.to_tensor(self.images[i]), int(self.labels[i])


def array_loaders(train_images, train_labels, valid_images, valid_labels):
    """The tutorial's loader settings over in-memory arrays (the digits benchmark)."""
    train_loader = DataLoader(
        dataset=ArrayImages(train_images, train_labels),
        batch_size=Config["batch_size"],
        shuffle=True,
        drop_last=True,
    )
    valid_loader = DataLoader(
        dataset=ArrayImages(valid_images, valid_labels),
        batch_size=Config["batch_size"],
        shuffle=True,
        drop_last=True,
    )
    return train_loader, valid_loader


def train(
    model,
    train_loader,
    valid_loader,
    epochs: int,
    device: torch.device,
    max_batches: int | None = None,
    verbose: bool = False,
) -> list[dict]:
    """The tutorial's loop; one dict per epoch with its timings and printed metrics."""
    loss_func = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=Config["learning_rate"])
    say = print if verbose else (lambda *args, **kw: None)  # bench: printing is optional
    epochs_out = []  # bench

    # ======================================================================== copied
    train_loss_list, train_acc_list = [], []
    valid_loss_list, valid_acc_list = [], []

    for epoch in range(epochs):  # bench: was Config['epochs']
        # Training phase ----------------------------------------------------------
        started = time.perf_counter()  # bench
        model.train()
        train_loss, train_acc = 0, 0
        for batch, (images, labels) in enumerate(train_loader):
            if max_batches is not None and batch >= max_batches:  # bench: smoke tests
                batch -= 1
                break
            images = images.to(device)
            labels = labels.to(device)

            optimizer.zero_grad()
            outputs = model(images)
            acc = cal_accuracy(outputs, labels)
            train_acc += acc.item()
            train_acc_list.append(acc.item())
            loss = loss_func(outputs, labels)
            train_loss += loss.item()
            train_loss_list.append(loss.item())
            loss.backward()
            optimizer.step()
        trained = time.perf_counter()  # bench
        train_batches = batch + 1  # bench

        say(f"# Epoch: {epoch + 1}/{epochs}")
        say(f"# Training phase {'-' * 50}")
        say(f"loss: {train_loss / (batch + 1):.3f}, accuracy: {train_acc / (batch + 1):.3f}")
        say(f"{'-' * 70}")
        # -------------------------------------------------------------------------

        # Validation phase --------------------------------------------------------
        validating = time.perf_counter()  # bench
        with torch.no_grad():
            model.eval()
            valid_loss, valid_acc = 0, 0
            for batch, (images, labels) in enumerate(valid_loader):
                if max_batches is not None and batch >= max_batches:  # bench: smoke tests
                    batch -= 1
                    break
                images = images.to(device)
                labels = labels.to(device)

                outputs = model(images)
                acc = cal_accuracy(outputs, labels)
                valid_acc += acc.item()
                valid_acc_list.append(acc.item())
                loss = loss_func(outputs, labels)
                valid_loss += loss.item()
                valid_loss_list.append(loss.item())
        validated = time.perf_counter()  # bench

        say(f"# Validation phase {'-' * 50}")
        say(f"loss: {valid_loss / (batch + 1):.3f}, accuracy: {valid_acc / (batch + 1):.3f}")
        say(f"{'-' * 70}\n")
        # ======================================================================== end copied
        epochs_out.append(
            {
                "epoch": epoch + 1,
                "train_seconds": trained - started,
                "valid_seconds": validated - validating,
                "train_loss": train_loss / train_batches,
                "train_acc": train_acc / train_batches,
                "valid_loss": valid_loss / (batch + 1),
                "valid_acc": valid_acc / (batch + 1),
            }
        )
    return epochs_out


def run_mnist(
    data_root: str,
    epochs: int = 1,
    threads: int | None = None,
    max_batches: int | None = None,
    model: str = "cnn",
    device: str = "auto",
    seed: int | None = None,
    verbose: bool = False,
) -> list[dict]:
    """The tutorial on MNIST: its CNN (hidden 16) or its GAPcnn, ``epochs`` epochs."""
    if threads:
        torch.set_num_threads(threads)
    if seed is not None:
        torch.manual_seed(seed)
    # The tutorial's device line; "cpu" or "cuda" force one.
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    train_loader, valid_loader = mnist_loaders(data_root)
    if model == "cnn":
        net = CNN(in_dim=1, hidden_dim=16, out_dim=10).to(device)
    elif model == "gap":
        net = GAPcnn().to(device)
    else:
        raise ValueError(f"unknown tutorial model {model!r}: cnn or gap")
    return train(net, train_loader, valid_loader, epochs, device, max_batches, verbose)
