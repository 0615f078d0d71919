"""The plain-script side of scripts/bench/study_overhead.py: the study's config trained for N
seeds in one process by a PyTorch loop a researcher would write, with no trainlab import.

The same data (scikit-learn's 8x8 digits, 70/10/20 stratified split, per-channel normalisation),
network (an MLP of 3 hidden ReLU layers of 256 units, Kaiming-normal weights and zero biases),
optimizer (SGD, lr 0.05, momentum 0.9), per-step cosine decay, batch 64 and 5 epochs; like
trainlab it validates after each epoch and tests at the end (the last weights: the loop keeps no
checkpoints). Prints one JSON line with the accuracies and the seconds spent per seed.

    python scripts/bench/plain_study.py --seeds 8
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


def split(images: np.ndarray, labels: np.ndarray, seed: int = 0):
    rest, test, rest_y, test_y = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=seed
    )
    train, val, train_y, val_y = train_test_split(
        rest, rest_y, test_size=0.1 / 0.8, stratify=rest_y, random_state=seed
    )
    mean, std = train.mean(), train.std()
    as_tensors = lambda x, y: (torch.from_numpy((x - mean) / std).float(), torch.from_numpy(y))  # noqa: E731
    return as_tensors(train, train_y), as_tensors(val, val_y), as_tensors(test, test_y)


def mlp(inputs: int, classes: int, depth: int = 3, width: int = 256) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    network = nn.Sequential(*layers, nn.Linear(inputs, classes))
    for layer in network:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return network


@torch.no_grad()
def accuracy(network: nn.Module, data: tuple[torch.Tensor, torch.Tensor], batch_size: int) -> float:
    network.eval()
    images, labels = data
    correct = sum(
        (network(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum().item()
        for i in range(0, len(labels), batch_size)
    )
    network.train()
    return correct / len(labels)


def train_seed(seed: int, train, val, test, epochs: int = 5, batch_size: int = 64, lr: float = 0.05) -> dict:
    torch.manual_seed(seed)
    images, labels = train
    network = mlp(images.shape[1], 10)
    optimizer = torch.optim.SGD(network.parameters(), lr=lr, momentum=0.9)
    total_steps = epochs * math.ceil(len(labels) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    val_acc = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(labels))
        for i in range(0, len(labels), batch_size):
            batch = order[i : i + batch_size]
            loss = nn.functional.cross_entropy(network(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        val_acc = accuracy(network, val, batch_size)
    return {"seed": seed, "val_acc": val_acc, "test_acc": accuracy(network, test, batch_size)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    digits = load_digits()
    train, val, test = split(digits.data.astype(np.float32), digits.target)
    runs = []
    for seed in range(1, args.seeds + 1):
        start = time.perf_counter()
        runs.append({**train_seed(seed, train, val, test), "seconds": time.perf_counter() - start})
    print(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main()
