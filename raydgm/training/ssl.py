"""Semi-supervised classifier: cross-entropy on a fixed labeled subset + semantic loss.

Per step, a labeled batch (x_l, y_l) of the real train split's fixed labeled subset and an
unlabeled batch x_u of ``cfg.unlabeled``'s pool go through the network in two passes, the
second with BatchNorm's running statistics frozen (so eval mode normalizes with real images'
statistics only, see :func:`running_stats_frozen`); loss = CE(f(x_l), y_l) + semantic_weight S(x_u),
where S is the exactly-one semantic loss (Xu et al. 2018; ``raydgm.semantic_loss``)
averaged over x_u, or for ``unlabeled="weighted"`` its self-normalized importance-weighted
average sum_i softmax(log w_u)_i L_i (Grover et al. 2019, Sec. 4), see
:func:`weighted_semantic`. Unlabeled pools: ``generated`` (raw samples), ``resampled``
(raw samples at ``SSLData.resampled``, with repeats), ``weighted`` (raw samples), ``real``
(train rows outside the labeled subset, labels never read), drawn uniformly with
replacement. Labeled batches cycle through per-epoch permutations of the subset, fixed by
(labeled_size, seed) for the whole run (the 2023 thesis re-drew it every epoch).

Randomness: initial weights from torch's generator seeded by (seed, 0) under
``fork_rng`` (global state untouched); epoch e (0-based) draws its batches and
augmentations from ``np.random.default_rng([seed, 1, e])`` only. Training draws nothing
else, so a run resumed from an epoch-k checkpoint ends with the same weights and history as
an uninterrupted run (same device and thread count). The validation split picks the epoch,
the test split is reported at that epoch. Imports no Ray and no MLflow.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from raydgm.config import SSLConfig
from raydgm.data import labeled_subset
from raydgm.models.resnet import ResNet
from raydgm.semantic_loss import exactly_one
from raydgm.training.common import check_finite, derived_seed
from raydgm.training.ssl_data import SSLData

CHECKPOINT_FORMAT = "raydgm.ssl/1"
OnEpoch = Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None]
_RESUME_FREE = ("epochs", "device", "eval_batch_size")   # may change between run and resume


def validate(cfg: SSLConfig, data: SSLData) -> np.ndarray:
    """Check ``cfg`` against ``data`` before any compute; return the labeled subset: sorted
    int64 (labeled_size,) indices into the train split (``raydgm.data.labeled_subset``).

    Raises ValueError: labeled_size larger than the train split or not a multiple of
    num_classes; the unlabeled source missing from ``data``; ``real`` with no train rows
    outside the labeled subset; ``semantic_weight > 0`` with ``unlabeled='none'`` (it would do
    nothing); an unusable device. ``semantic_weight = 0`` with a source is allowed: unlabeled
    batches still pass through the network (BatchNorm sees them), the control run.
    """
    if not isinstance(cfg, SSLConfig) or not isinstance(data, SSLData):
        raise ValueError(f"expected (SSLConfig, SSLData), got ({type(cfg).__name__}, {type(data).__name__})")
    n = len(data.train_labels)
    try:
        labeled = labeled_subset(data.train_labels, cfg.labeled_size, cfg.seed, data.num_classes)
    except ValueError as err:
        raise ValueError(f"labeled_size={cfg.labeled_size} does not fit the train split "
                         f"({n} images, {data.num_classes} classes): {err}") from None
    source = cfg.unlabeled
    if source == "none" and cfg.semantic_weight > 0:
        raise ValueError(f"semantic_weight={cfg.semantic_weight} needs an unlabeled source, but "
                         "unlabeled='none'; set semantic_weight=0 or choose unlabeled")
    needs = {"generated": ("generated",), "resampled": ("generated", "resampled"),
             "weighted": ("generated", "log_weights")}.get(source, ())
    for name in needs:
        if getattr(data, name) is None:
            raise ValueError(f"unlabeled={source!r} needs SSLData.{name}, which is None")
    if source == "real" and len(labeled) == n:
        raise ValueError(f"unlabeled='real' needs train rows outside the labeled subset, but "
                         f"labeled_size={cfg.labeled_size} takes all {n}")
    _check_device(cfg.device)
    return labeled


def _check_device(name: str) -> None:
    try:
        cuda = torch.device(name).type == "cuda"
    except RuntimeError as err:
        raise ValueError(f"device={name!r} is not a torch device: {err}") from None
    if cuda and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here")


def build_model(cfg: SSLConfig, image_shape: tuple[int, int, int], num_classes: int) -> ResNet:
    """A fresh ``cfg.model`` ResNet on the CPU, initialized from (cfg.seed, 0); global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(cfg.seed, 0))
        return ResNet(tuple(image_shape), num_classes, depth=cfg.model.depth, width=cfg.model.width)


def weighted_semantic(logits: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """Self-normalized importance-weighted semantic loss sum_i softmax(log_w)_i * L_i, a scalar.

    logits: float (B, K); log_weights: finite float (B,) log importance weights of the same
    rows (any constant offset cancels). L_i = ``exactly_one(logits)[i]``. Equal log-weights
    give the plain mean; the softmax is taken in float64, so no weight overflows.
    """
    if log_weights.shape != logits.shape[:1]:
        raise ValueError(f"log_weights must have shape ({logits.shape[0]},) to match the logits, "
                         f"got {tuple(log_weights.shape)}")
    w = torch.softmax(log_weights.to(torch.float64), dim=0).to(logits.dtype)   # (B,), sums to 1
    return (w * exactly_one(logits)).sum()


def augment(images: torch.Tensor, mode: str, rng: np.random.Generator) -> torch.Tensor:
    """Random translation (and flips) of uint8 (B, C, H, W) images; same shape and dtype.

    ``crop``: zero-pad by p (2, or 1 when H <= 8) and crop a random H x W window (offsets
    uniform in 0..2p per image); ``crop_flip``: also mirror each window left-right with
    probability 1/2; ``none``: the images themselves. Draws only from ``rng``.
    """
    if mode == "none":
        return images
    if mode not in ("crop", "crop_flip"):
        raise ValueError(f"unknown augment {mode!r}; known: none, crop, crop_flip")
    B, C, H, W = images.shape
    p = 1 if H <= 8 else 2
    dy, dx = rng.integers(0, 2 * p + 1, size=B), rng.integers(0, 2 * p + 1, size=B)
    flip = rng.random(B) < 0.5 if mode == "crop_flip" else np.zeros(B, dtype=bool)
    rows = dy[:, None] + np.arange(H)                                         # (B, H)
    cols = dx[:, None] + np.where(flip[:, None], W - 1 - np.arange(W), np.arange(W))   # (B, W)
    dev = images.device
    r, c = torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)
    padded = F.pad(images, (p, p, p, p))
    b = torch.arange(B, device=dev).view(B, 1, 1, 1)
    ch = torch.arange(C, device=dev).view(1, C, 1, 1)
    return padded[b, ch, r.view(B, 1, H, 1), c.view(B, 1, 1, W)]


def index_digest(indices: np.ndarray) -> int:
    """48-bit int of sha256 over the sorted distinct int64 ``indices``: equal sets, equal digests."""
    blob = np.unique(np.asarray(indices, dtype=np.int64)).astype("<i8").tobytes()
    return int(hashlib.sha256(blob).hexdigest()[:12], 16)


@dataclass(frozen=True, eq=False)
class _Tensors:
    """``SSLData`` on the training device, plus the labeled subset and the unlabeled pool."""
    train_x: torch.Tensor              # uint8 (N, C, H, W)
    train_y: torch.Tensor              # int64 (N,)
    labeled: np.ndarray                # int64 (L,) indices into train_x
    pool: torch.Tensor | None          # uint8 (P, C, H, W) unlabeled images; None for 'none'
    choices: np.ndarray | None         # int64 indices into pool, drawn from uniformly
    log_w: torch.Tensor | None         # float64 (P,) for 'weighted'
    val: tuple[torch.Tensor, torch.Tensor]   # images, labels
    test: tuple[torch.Tensor, torch.Tensor]


def _tensors(cfg: SSLConfig, data: SSLData, labeled: np.ndarray, device: torch.device) -> _Tensors:
    def put(a: np.ndarray) -> torch.Tensor:
        with warnings.catch_warnings():   # Ray's object store hands out read-only arrays; never written
            warnings.filterwarnings("ignore", message=".*not writable.*")
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)
    train_x = put(data.train_images)
    pool, choices, log_w = None, None, None
    if cfg.unlabeled == "real":
        pool, choices = train_x, np.setdiff1d(np.arange(len(train_x)), labeled).astype(np.int64)
    elif cfg.unlabeled != "none":
        pool = put(data.generated)
        choices = data.resampled if cfg.unlabeled == "resampled" else np.arange(len(pool), dtype=np.int64)
        log_w = put(data.log_weights) if cfg.unlabeled == "weighted" else None
    return _Tensors(train_x, put(data.train_labels), labeled, pool, choices, log_w,
                    (put(data.val_images), put(data.val_labels)),
                    (put(data.test_images), put(data.test_labels)))


def train(cfg: SSLConfig, data: SSLData, *, on_epoch: OnEpoch | None = None,
          state: dict[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Train ``cfg.model`` for ``cfg.epochs`` epochs (the loss: see the module docstring).

    Args:
        on_epoch: called after every epoch as ``on_epoch(row, checkpoint)``; ``checkpoint()``
            (call it inside on_epoch) returns the resume state: CPU copies of model and
            optimizer state, epoch, history; only tensors, numbers, strings, lists and dicts,
            so it round-trips through ``torch.save`` / ``torch.load(weights_only=True)``.
        state: such a state; training resumes after its epoch (its config may differ from
            ``cfg`` only in epochs, device and eval_batch_size).
        progress: print one line per epoch to stderr.

    Returns:
        {"history": rows, "best_epoch", "val_accuracy" (best), "test_accuracy" (at the best
        epoch), "labeled_indices" (int64 into the train split), "model" (the last epoch's
        ResNet, eval mode)}. Row keys: epoch (1-based), train_loss, supervised_loss,
        semantic_loss (the term before semantic_weight; 0 for 'none'), train_accuracy
        (labeled batches, augmented, train mode), labeled_seen, labeled_digest (see
        :func:`index_digest`) of the labeled indices used this epoch, val_accuracy,
        test_accuracy, best_epoch, best_val_accuracy, test_accuracy_at_best (the first
        epoch with the highest val accuracy so far). All values are int or float.
    """
    labeled = validate(cfg, data)
    device = torch.device(cfg.device)
    model = build_model(cfg, data.train_images.shape[1:], data.num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    start, history = (0, []) if state is None else _restore(state, cfg, model, opt, labeled)
    t = _tensors(cfg, data, labeled, device)
    for epoch in range(start, cfg.epochs):
        row = _train_epoch(model, opt, cfg, t, epoch)
        row["val_accuracy"] = accuracy(model, *t.val, cfg.eval_batch_size)
        row["test_accuracy"] = accuracy(model, *t.test, cfg.eval_batch_size)
        row.update(_best(row, history))
        history.append(row)
        if progress:
            print(f"ssl epoch {row['epoch']}/{cfg.epochs}: " + ", ".join(f"{k} {row[k]:.4f}" for k in (
                "train_loss", "val_accuracy", "test_accuracy")), file=sys.stderr, flush=True)
        if on_epoch is not None:
            on_epoch(dict(row), lambda: _checkpoint(cfg, model, opt, history, labeled))
    last = history[-1]
    return {"history": history, "best_epoch": last["best_epoch"], "val_accuracy": last["best_val_accuracy"],
            "test_accuracy": last["test_accuracy_at_best"], "labeled_indices": labeled, "model": model.eval()}


def _train_epoch(model: ResNet, opt: torch.optim.Optimizer, cfg: SSLConfig, t: _Tensors,
                 epoch: int) -> dict[str, Any]:
    """One epoch of ``steps_per_epoch`` steps; epoch is 0-based, the row's ``epoch`` 1-based."""
    model.train()
    rng = np.random.default_rng([cfg.seed, 1, epoch])
    bs, ubs = cfg.batch_size, cfg.unlabeled_batch_size or cfg.batch_size
    steps = cfg.steps_per_epoch or math.ceil(len(t.train_x) / bs)
    reps = math.ceil(steps * bs / len(t.labeled))   # cycle through fresh permutations
    lab = np.concatenate([t.labeled[rng.permutation(len(t.labeled))] for _ in range(reps)])[:steps * bs]
    unl = None if t.choices is None else t.choices[rng.integers(0, len(t.choices), size=steps * ubs)]
    sums = torch.zeros(4, dtype=torch.float64, device=t.train_x.device)   # total, CE, semantic, correct
    for s in range(steps):
        li = torch.from_numpy(lab[s * bs:(s + 1) * bs]).to(t.train_x.device)
        x, y = augment(t.train_x[li], cfg.augment, rng), t.train_y[li]
        ui = None if unl is None else torch.from_numpy(unl[s * ubs:(s + 1) * ubs]).to(x.device)
        logits = model(x)                                           # (bs, K)
        ce = F.cross_entropy(logits, y)
        sem = torch.zeros((), device=x.device)
        if ui is not None:
            with running_stats_frozen(model):                       # eval BN sees real images only
                u_logits = model(augment(t.pool[ui], cfg.augment, rng))   # (ubs, K)
            sem = (weighted_semantic(u_logits, t.log_w[ui]) if t.log_w is not None
                   else exactly_one(u_logits).mean())
        loss = ce + cfg.semantic_weight * sem
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        correct = (logits.argmax(dim=1) == y).sum()
        sums += torch.stack([loss.detach(), ce.detach(), sem.detach(), correct]).to(sums.dtype)
    total, ce_sum, sem_sum, correct_sum = sums.tolist()   # one device sync per epoch
    check_finite(total / steps, "ssl training loss", epoch, f"lower learning_rate (now {cfg.learning_rate})")
    return {"epoch": epoch + 1, "train_loss": total / steps, "supervised_loss": ce_sum / steps,
            "semantic_loss": sem_sum / steps, "train_accuracy": correct_sum / (steps * bs),
            "labeled_seen": int(np.unique(lab).size), "labeled_digest": index_digest(lab)}


@contextlib.contextmanager
def running_stats_frozen(model: torch.nn.Module) -> Iterator[None]:
    """BatchNorm layers normalize with the batch's statistics but leave their running statistics
    (what eval mode uses) alone: momentum 0 makes the update running = 1 * running + 0 * batch.

    The unlabeled batch is generated images; had they entered the running statistics, the
    model would be evaluated on real images with statistics half from another distribution
    (measured: val accuracy collapsing to 0.28 at 1,000 labels for some epochs).
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(layers, saved):
            m.momentum = momentum


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Fraction of uint8 (N, C, H, W) ``images`` whose argmax logit equals int64 (N,) ``labels``,
    in eval mode (BatchNorm's running statistics), no augmentation."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    for s in range(0, len(images), batch_size):
        correct += (model(images[s:s + batch_size]).argmax(dim=1) == labels[s:s + batch_size]).sum()
    return int(correct) / len(images)


def _best(row: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """Best-so-far by val accuracy (the first epoch wins ties) and the test accuracy there."""
    prev = history[-1] if history else None
    if prev is None or row["val_accuracy"] > prev["best_val_accuracy"]:
        return {"best_epoch": row["epoch"], "best_val_accuracy": row["val_accuracy"],
                "test_accuracy_at_best": row["test_accuracy"]}
    return {k: prev[k] for k in ("best_epoch", "best_val_accuracy", "test_accuracy_at_best")}


# --------------------------------------------------------------------------- checkpoints

def _resume_key(cfg: SSLConfig) -> str:
    """16 hex chars over the config minus the keys a resume may change (epochs, device, ...)."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _cpu_copy(obj: Any) -> Any:
    """Deep copy with every tensor detached, cloned and moved to the CPU."""
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    return obj.detach().cpu().clone() if isinstance(obj, torch.Tensor) else obj


def _checkpoint(cfg: SSLConfig, model: ResNet, opt: torch.optim.Optimizer,
                history: list[dict[str, Any]], labeled: np.ndarray) -> dict[str, Any]:
    return {"format": CHECKPOINT_FORMAT, "resume_key": _resume_key(cfg), "epoch": len(history),
            "labeled_digest": index_digest(labeled), "history": [dict(r) for r in history],
            "model": _cpu_copy(model.state_dict()), "optimizer": _cpu_copy(opt.state_dict())}


def _restore(state: dict[str, Any], cfg: SSLConfig, model: ResNet, opt: torch.optim.Optimizer,
             labeled: np.ndarray) -> tuple[int, list[dict[str, Any]]]:
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"state is not a {CHECKPOINT_FORMAT} checkpoint (from ssl.train's on_epoch)")
    if state["resume_key"] != _resume_key(cfg):
        raise ValueError("state belongs to another SSL config (only epochs, device and "
                         "eval_batch_size may change on resume)")
    if state["labeled_digest"] != index_digest(labeled):
        raise ValueError("state was trained on another labeled subset: the train split differs")
    epoch, history = int(state["epoch"]), [dict(r) for r in state["history"]]
    if len(history) != epoch or epoch > cfg.epochs:
        raise ValueError(f"state holds epoch {epoch} ({len(history)} rows); cfg.epochs={cfg.epochs}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return epoch, history
