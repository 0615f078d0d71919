"""The training loop of a vectorised study against K plain PyTorch loops (issue 28).

K members of the digits MLP (3 hidden ReLU layers of 256 units, trainlab's `model=mlp`), each with
its own seed-drawn init and its own data order, batch 64, 5 epochs, SGD (lr 0.05, momentum 0.9)
or Adam (lr 3e-3), on scikit-learn's 8x8 digits (70/10/20 stratified split, normalised):

  (a) sequential: K ordinary PyTorch training loops, one after the other;
  (b) vectorised: one loop over trainlab.vectorised's StackedNetwork (torch.func vmap) with the
      stacked optimizer and member_cross_entropy, each step every member's own batch.

Both start from the same K initial networks and see the same batches; at the end (b)'s member
weights are checked against (a)'s (the max absolute difference is printed; the issue's bound is
1e-5 in float32). Only the training loops are timed (data, networks and batch orders are built
before); each is run `--repeats` times (in ABBA order) after one untimed warm-up epoch; the
fastest of each and the median of the repeats' speed-ups are reported.
The (b) loop reads nothing back to the host per step.

    python scripts/bench/vectorised.py --members 16 --device cpu
    python scripts/bench/vectorised.py --members 64 --device cuda --optimizer adam
    python scripts/bench/vectorised.py --members 16 --mode fast   # the GPU's mode, on the CPU
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time

import numpy as np
import torch
from common import print_table, write_json
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from trainlab.models.factory import build_network
from trainlab.vectorised.losses import member_cross_entropy
from trainlab.vectorised.optimizers import stacked_optimizer
from trainlab.vectorised.stacked import StackedNetwork

MLP = {"_target_": "trainlab.models.mlp.MLP", "depth": 3, "width": 256}
NORM = {"_target_": "trainlab.norm.none", "_partial_": True}
RELU = {"_target_": "torch.nn.ReLU", "_partial_": True}
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    "adam": (torch.optim.Adam, {"lr": 3e-3}),
}


def digits_train_set(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training 70% of the digits (the split of scripts/bench/plain_study.py), normalised."""
    digits = load_digits()
    images, labels = digits.images.astype(np.float32)[:, None], digits.target
    rest, _, rest_y, _ = train_test_split(images, labels, test_size=0.2, stratify=labels, random_state=0)
    train, _, train_y, _ = train_test_split(
        rest, rest_y, test_size=0.1 / 0.8, stratify=rest_y, random_state=0
    )
    train = (train - train.mean()) / train.std()
    return torch.from_numpy(train).to(device), torch.from_numpy(train_y).to(device)


def initial_networks(count: int, device: torch.device) -> list[nn.Module]:
    """Member k: trainlab's digits MLP initialised from seed k."""
    networks = []
    for seed in range(count):
        torch.manual_seed(seed)
        networks.append(build_network(MLP, NORM, RELU, (1, 8, 8), 10).to(device))
    return networks


def batch_orders(count: int, examples: int, epochs: int, device: torch.device) -> torch.Tensor:
    """[K, epochs, examples]: member k's shuffled order in each epoch, from its own seed."""
    orders = torch.empty(count, epochs, examples, dtype=torch.long)
    for k in range(count):
        generator = torch.Generator().manual_seed(1000 + k)
        for epoch in range(epochs):
            orders[k, epoch] = torch.randperm(examples, generator=generator)
    return orders.to(device)


def sequential(networks, optimizer_name, data, orders, batch_size, epochs) -> list[nn.Module]:
    """(a) K ordinary training loops, one after the other."""
    images, labels = data
    cls, options = OPTIMIZERS[optimizer_name]
    loss_fn = nn.CrossEntropyLoss()
    for k, net in enumerate(networks):
        optimizer = cls(net.parameters(), **options)
        for epoch in range(epochs):
            order = orders[k, epoch]
            for start in range(0, order.numel(), batch_size):
                index = order[start : start + batch_size]
                loss = loss_fn(net(images[index]), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return networks


def vectorised(networks, optimizer_name, data, orders, batch_size, epochs, exact=None) -> StackedNetwork:
    """(b) one loop over the K members stacked: each step every member's own batch."""
    images, labels = data
    cls, options = OPTIMIZERS[optimizer_name]
    stacked = StackedNetwork(networks, exact=exact)
    members = [cls(net.parameters(), **options) for net in networks]
    optimizer = stacked_optimizer(members, networks, stacked, exact=exact)
    no_smoothing = torch.zeros(len(networks), device=images.device)
    for epoch in range(epochs):
        order = orders[:, epoch]
        for start in range(0, order.shape[1], batch_size):
            index = order[:, start : start + batch_size]  # [K, B]
            losses = member_cross_entropy(stacked(images[index]), labels[index], no_smoothing)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # member k's gradient is its own loss's
            optimizer.step()
    return stacked


def timed(run, *args) -> tuple[float, object]:
    device = args[2][0].device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = run(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--optimizer", default="sgd", choices=list(OPTIMIZERS))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--mode",
        choices=["default", "exact", "fast"],
        default="default",
        help="the stacked network's and optimizer's mode (default: exact on the CPU, fast on a GPU)",
    )
    parser.add_argument("--out", default="bench_results/vectorised.json")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here.")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = digits_train_set(device)
    orders = batch_orders(args.members, len(data[1]), args.epochs, device)
    initial = initial_networks(args.members, device)
    loop_args = (args.optimizer, data, orders, args.batch_size)
    exact = {"default": None, "exact": True, "fast": False}[args.mode]
    # as in a run of trainlab.train (trainlab.run.garbage_collection): what the imports and the
    # set-up created is frozen, so a full collection during a loop does not walk it (unfrozen, the
    # loops paid ~0.1 s a collection, more often in the loop that allocates more Python objects)
    gc.collect()
    gc.freeze()

    # warm-up (kernels, vmap's and the allocator's first calls): one untimed epoch of each
    sequential(copy.deepcopy(initial), *loop_args, 1)
    vectorised(copy.deepcopy(initial), *loop_args, 1, exact)
    rows, sequential_times, vectorised_times = [], [], []
    for repeat in range(args.repeats):  # ABBA: a shared machine's drift touches both alike
        order = ("a", "b") if repeat % 2 == 0 else ("b", "a")
        for which in order:
            if which == "a":
                seconds_a, alone = timed(sequential, copy.deepcopy(initial), *loop_args, args.epochs)
            else:
                seconds_b, stacked = timed(vectorised, copy.deepcopy(initial), *loop_args, args.epochs, exact)
        sequential_times.append(seconds_a)
        vectorised_times.append(seconds_b)
        rows.append(
            {
                "repeat": repeat,
                "sequential s": seconds_a,
                "vectorised s": seconds_b,
                "speed-up": seconds_a / seconds_b,
            }
        )
    max_difference = max(
        (stacked.member_state_dict(k)[name] - value).abs().max().item()
        for k, net in enumerate(alone)
        for name, value in net.state_dict().items()
    )
    best_a, best_b = min(sequential_times), min(vectorised_times)
    paired = statistics.median(row["speed-up"] for row in rows)
    steps = args.epochs * -(-len(data[1]) // args.batch_size)
    print_table(
        f"digits MLP 3x256, {args.members} members, {args.optimizer}, {args.epochs} epochs of {steps // args.epochs} "
        f"steps, {args.device} ({torch.get_num_threads()} threads), mode {args.mode}",
        rows,
    )
    print(f"\nfastest: sequential {best_a:.3f} s, vectorised {best_b:.3f} s, speed-up {best_a / best_b:.2f}x")
    print(f"median of the repeats' speed-ups: {paired:.2f}x")
    print(f"max |weight difference| vectorised vs sequential: {max_difference:.3g} (bound 1e-5)")
    write_json(
        args.out,
        {
            "benchmark": "vectorised",
            "members": args.members,
            "device": args.device,
            "optimizer": args.optimizer,
            "mode": args.mode,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "steps_per_member": steps,
            "rows": rows,
            "sequential_s": best_a,
            "vectorised_s": best_b,
            "speed_up": best_a / best_b,
            "median_paired_speed_up": paired,
            "max_weight_difference": max_difference,
            "weights_match": max_difference <= 1e-5,
        },
    )


if __name__ == "__main__":
    main()
