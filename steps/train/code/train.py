"""Train (SageMaker Training job): the digits MLP with PyTorch DDP, one process per rank under torchrun.

Container contract: hyperparameters arrive as CLI arguments (the SDK's torchrun driver turns SM_HPS into
``--epochs 20 --batch_size 64 ...``), data from SM_CHANNEL_TRAIN / SM_CHANNEL_VALIDATION (folders of
CSVs with a ``label`` column), the model goes to SM_MODEL_DIR. Distributed settings come from the
variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); without them it trains
in one process. Spot-safe: rank 0 checkpoints every epoch to /opt/ml/checkpoints/checkpoint.pt and a
restarted job resumes from it. Rank 0 prints one metric line per epoch for the job's metric regexes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model import build_model  # noqa: E402  (shipped beside this script)

CHECKPOINT = Path("/opt/ml/checkpoints/checkpoint.pt")
FAILURE_FILE = Path("/opt/ml/output/failure")
LABEL = "label"
NUM_CLASSES = 10
SERVING_FILES = ("model.py", "inference.py")


class TrainingError(Exception):
    """A reason to stop that belongs in SageMaker's failure file, e.g. a bad hyperparameter."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise TrainingError(f"bad hyperparameter: {message}")


def write_failure(reason: str) -> None:
    """SageMaker reports /opt/ml/output/failure as the job's FailureReason; the first writer wins."""
    try:
        FAILURE_FILE.parent.mkdir(parents=True, exist_ok=True)
        with open(FAILURE_FILE, "x") as handle:
            handle.write(reason[:1024])
    except OSError:
        pass  # another rank (or the driver) already explained the failure


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(description=__doc__.splitlines()[0])
    # Both spellings: SageMaker passes hyperparameter names exactly as the pipeline config wrote them.
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", "--learning-rate", dest="learning_rate", type=float, default=0.003)
    parser.add_argument("--hidden_units", "--hidden-units", dest="hidden_units", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"ignoring unknown arguments: {' '.join(unknown)}", flush=True)
    for name in ("epochs", "batch_size", "hidden_units"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1 (got {getattr(args, name)})")
    if args.learning_rate <= 0:
        parser.error(f"--learning_rate must be > 0 (got {args.learning_rate})")
    return args


def load_channel(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    folder = Path(os.environ.get(f"SM_CHANNEL_{name.upper()}", f"/opt/ml/input/data/{name}"))
    files = sorted(folder.rglob("*.csv"))
    if not files:
        raise SystemExit(f"no CSV files in channel {name!r} ({folder})")
    frame = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    if LABEL not in frame.columns:
        raise SystemExit(f"channel {name!r}: no {LABEL!r} column in {files[0].name}")
    features = frame.drop(columns=[LABEL]).to_numpy(dtype=np.float32)
    labels = frame[LABEL].to_numpy(dtype=np.int64)
    return torch.from_numpy(features.copy()), torch.from_numpy(labels.copy())


def setup_distributed() -> tuple[int, int, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        # Ranks on one host share its cores; oversubscribing them slows every rank down.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return dist.get_rank(), world_size, device
    return 0, 1, device


def all_sum(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, rank: int, world: int, device
) -> tuple[float, float]:
    """Loss and accuracy over the whole set, each rank scoring every world-th row (no padded duplicates)."""
    model.eval()
    with torch.no_grad():
        xs, ys = x[rank::world].to(device), y[rank::world].to(device)
        logits = model(xs)
        loss_sum = nn.functional.cross_entropy(logits, ys, reduction="sum").item() if len(ys) else 0.0
        correct = (logits.argmax(dim=1) == ys).sum().item()
    model.train()
    loss_sum, correct, count = all_sum([loss_sum, correct, len(ys)], device)
    return loss_sum / max(count, 1), correct / max(count, 1)


def save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: nn.Module, config: dict, model_dir: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    save_atomic(model.state_dict(), model_dir / "model.pth")
    (model_dir / "model_config.json").write_text(json.dumps(config, indent=2) + "\n")
    code_dir = model_dir / "code"
    code_dir.mkdir(exist_ok=True)
    here = Path(__file__).resolve().parent
    for name in SERVING_FILES:
        shutil.copy2(here / name, code_dir / name)


def load_checkpoint(rank: int) -> dict | None:
    """Rank 0's checkpoint, shared with every rank so all resume at the same epoch with the same state.

    (On SageMaker each host gets the S3 checkpoints; locally only rank 0's host may have it.)
    """
    state = None
    if rank == 0 and CHECKPOINT.is_file():
        state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    if dist.is_initialized():
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    return state


def main(argv: list[str] | None = None) -> int:
    """Train, then leave the process group in an order that cannot abort a rank at exit.

    The DDP wrapper (whose reducer holds the group and its hooks) is gone when ``_train`` returns. A
    barrier lets every rank finish its collectives before any rank tears down, so no rank exits (taking
    the rendezvous store with it) while a peer still talks to it; then every rank destroys the group
    explicitly, on failure too (without the barrier, which a failed peer would never reach). A group left
    to interpreter shutdown is destroyed by static destructors while its worker threads still run:
    ``terminate called without an active exception`` and SIGABRT.
    """
    args = parse_args(argv)
    rank, world, device = setup_distributed()
    try:
        code = _train(args, rank, world, device)
        if dist.is_initialized():
            dist.barrier()
        return code
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> int:
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    x_train, y_train = load_channel("train")
    x_val, y_val = load_channel("validation")
    config = {
        "input_size": int(x_train.shape[1]),
        "hidden_units": args.hidden_units,
        "num_classes": NUM_CLASSES,
    }
    if rank == 0:
        print(
            f"training on {len(y_train)} rows, validating on {len(y_val)}; world size {world} on {device}",
            flush=True,
        )

    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    start_epoch = 0
    state = load_checkpoint(rank)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        if rank == 0:
            print(f"resumed from epoch {start_epoch} ({CHECKPOINT})", flush=True)

    trained = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    dataset = TensorDataset(x_train, y_train)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)

    for epoch in range(start_epoch + 1, args.epochs + 1):
        started = time.monotonic()
        sampler.set_epoch(epoch)
        loss_sum, seen = 0.0, 0
        for features, labels in loader:
            features, labels = features.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(trained(features), labels)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            seen += len(labels)
        loss_sum, seen = all_sum([loss_sum, seen], device)
        val_loss, val_acc = evaluate(model, x_val, y_val, rank, world, device)
        if rank == 0:
            print(
                f"epoch={epoch} train_loss={loss_sum / seen:.4f} validation_loss={val_loss:.4f} "
                f"validation_accuracy={val_acc:.4f} seconds={time.monotonic() - started:.2f}",
                flush=True,
            )
            save_atomic(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "config": config,
                },
                CHECKPOINT,
            )

    del trained  # the DDP reducer lets go of the process group before it is destroyed
    if rank == 0:
        model_dir = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
        save_model(model.cpu(), config, model_dir)
        print(f"saved model to {model_dir}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (TrainingError, SystemExit) as exc:
        if isinstance(exc, SystemExit) and (exc.code in (None, 0) or isinstance(exc.code, int)):
            raise
        write_failure(str(exc) if isinstance(exc, TrainingError) else str(exc.code))
        print(exc, file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as exc:
        write_failure(f"{type(exc).__name__}: {exc}")
        raise
