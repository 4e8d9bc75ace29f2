"""Semi-supervised classifier: cross-entropy on a fixed labeled subset + semantic loss.

Per step, a labeled batch (x_l, y_l) of the real train split's fixed labeled subset and an
unlabeled batch x_u of ``cfg.unlabeled``'s pool go through the network in two passes, every
BatchNorm normalizing both with the labeled batch's statistics (:func:`labeled_statistics`);
evaluation normalizes with statistics recomputed from the labeled subset under the current
weights (:func:`recompute_batch_norm`); loss = CE(f(x_l), y_l)
+ lambda_t S(x_u), lambda_t the semantic weight, ramped up over ``semantic_rampup_epochs``
(:func:`semantic_weight_at`), Adam's lr constant or cosine per step (:func:`learning_rate_at`),
where S is the exactly-one semantic loss (Xu et al. 2018; ``raydgm.semantic_loss``)
averaged over x_u, or for ``unlabeled="weighted"`` its importance-weighted average
(Grover et al. 2019, Sec. 4), normalized per batch or by the pool's mean weight
(``weight_normalization``, :func:`weighted_semantic`). Unlabeled pools: ``generated`` (raw
samples), ``resampled`` (raw samples at the seed's own SIR set, with repeats), ``subset``
(a uniform subset of the raw samples, as many distinct ones as that SIR set), ``weighted``
(raw samples), ``real`` (train rows outside the labeled subset, labels never read), drawn
uniformly with replacement (``ssl_batches.generated_choices``). Labeled batches cycle through per-epoch permutations of the subset, fixed by
(labeled_size, seed) for the whole run (the 2023 thesis re-drew it every epoch).

Randomness: initial weights from torch's generator seeded by (seed, 0) under
``fork_rng`` (global state untouched); epoch e (0-based) draws its labeled batches (the
permutation, then the labeled augmentation) from ``np.random.default_rng([seed, 1, e])`` and
its unlabeled draws and their augmentation from ``np.random.default_rng([seed, 2, e])``
(:func:`epoch_plans`); the SIR set of ``resampled`` and the subset of ``subset`` are drawn
once per run from ``[seed, 3]`` and ``[seed, 4]``, so every arm of a seed (``none``, ``generated``, ...) sees the same
labeled batches, pixel for pixel. Training draws nothing else, and the learning rate and
semantic weight of a step are pure functions of its global step (:func:`learning_rate_at`,
:func:`semantic_weight_at`), so a run resumed from an epoch-k checkpoint ends with the same
weights and history as an uninterrupted run (same device and thread count). The validation
split picks the epoch, the test split is reported at that epoch (its accuracy, its
predictions and its calibration). Calibration (``raydgm.calibration.top_label``): top-label
ECE over 15 equal-width confidence bins, NLL and multiclass Brier score of the softmax, on val
and on test, every epoch, and the reliability curves at the best epoch. Imports no Ray and no
MLflow.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.nn import functional as F

from raydgm.calibration import top_label
from raydgm.config import SSLConfig
from raydgm.data import labeled_subset
from raydgm.models.resnet import ResNet
from raydgm.semantic_loss import exactly_one, log_mean_weight, weighted_semantic  # noqa: F401 (public here)
from raydgm.training.common import check_finite_loss, derived_seed
from raydgm.training.ssl_batches import (Plan, augment, generated_choices, index_digest,  # noqa: F401 (augment)
                                         labeled_plan, unlabeled_plan)
from raydgm.training.ssl_data import SSLData
from raydgm.training.ssl_norm import bn_rows, labeled_statistics, recompute_batch_norm

CHECKPOINT_FORMAT = "raydgm.ssl/3"     # 3: the best epoch's calibration
OnEpoch = Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None]
_RESUME_FREE = ("epochs", "device", "eval_batch_size")   # may change between run and resume
SCORES = ("ece", "nll", "brier")     # per split and epoch, beside the accuracy
AT_BEST = ("test_accuracy",) + tuple(f"{s}_{k}" for s in ("val", "test") for k in SCORES)   # <key>_at_best


def validate(cfg: SSLConfig, data: SSLData) -> np.ndarray:
    """Check ``cfg`` against ``data`` before any compute; return the labeled subset: sorted
    int64 (labeled_size,) indices into the train split (``raydgm.data.labeled_subset``).

    Raises ValueError: labeled_size larger than the train split or not a multiple of
    num_classes; the unlabeled source missing from ``data``; ``real`` with no train rows
    outside the labeled subset; ``semantic_weight > 0`` with ``unlabeled='none'`` (it would do
    nothing); an unusable device. ``semantic_weight = 0`` with a source is allowed: unlabeled
    batches still pass through the network, which then trains exactly as ``none`` does.
    """
    if not isinstance(cfg, SSLConfig) or not isinstance(data, SSLData):
        raise ValueError(f"expected (SSLConfig, SSLData), got ({type(cfg).__name__}, {type(data).__name__})")
    n = len(data.train_labels)
    if data.num_classes > 127:
        raise ValueError(f"num_classes={data.num_classes}: test predictions are kept as int8 (at most 127 classes)")
    try:
        labeled = labeled_subset(data.train_labels, cfg.labeled_size, cfg.seed, data.num_classes)
    except ValueError as err:
        raise ValueError(f"labeled_size={cfg.labeled_size} does not fit the train split "
                         f"({n} images, {data.num_classes} classes): {err}") from None
    source = cfg.unlabeled
    if source == "none" and cfg.semantic_weight > 0:
        raise ValueError(f"semantic_weight={cfg.semantic_weight} needs an unlabeled source, but "
                         "unlabeled='none'; set semantic_weight=0 or choose unlabeled")
    needs = {"generated": ("generated",), "resampled": ("generated", "log_weights"),
             "subset": ("generated", "log_weights"), "weighted": ("generated", "log_weights")}.get(source, ())
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


@dataclass(frozen=True, eq=False)
class _Tensors:
    """``SSLData`` on the training device, plus the labeled subset and the unlabeled pool."""
    train_x: torch.Tensor              # uint8 (N, C, H, W)
    train_y: torch.Tensor              # int64 (N,)
    labeled: np.ndarray                # int64 (L,) indices into train_x
    pool: torch.Tensor | None          # uint8 (P, C, H, W) unlabeled images; None for 'none'
    choices: np.ndarray | None         # int64 indices into pool, drawn from uniformly
    log_w: torch.Tensor | None         # float64 (P,) for 'weighted'
    log_norm: float | None             # 'weighted' with weight_normalization 'pool': log mean_pool w
    val: tuple[torch.Tensor, torch.Tensor]   # images, labels
    test: tuple[torch.Tensor, torch.Tensor]


def _tensors(cfg: SSLConfig, data: SSLData, labeled: np.ndarray, device: torch.device) -> _Tensors:
    def put(a: np.ndarray) -> torch.Tensor:
        with warnings.catch_warnings():   # Ray's object store hands out read-only arrays; never written
            warnings.filterwarnings("ignore", message=".*not writable.*")
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)
    train_x = put(data.train_images)
    pool, choices, log_w, log_norm = None, None, None, None
    if cfg.unlabeled == "real":
        pool, choices = train_x, np.setdiff1d(np.arange(len(train_x)), labeled).astype(np.int64)
    elif cfg.unlabeled != "none":
        pool = put(data.generated)
        choices = generated_choices(cfg.unlabeled, data.log_weights, data.sir_size, data.sir_method, cfg.seed,
                                    len(data.generated))
        if cfg.unlabeled == "weighted":
            log_w = put(data.log_weights)
            log_norm = log_mean_weight(data.log_weights) if cfg.weight_normalization == "pool" else None
    return _Tensors(train_x, put(data.train_labels), labeled, pool, choices, log_w, log_norm,
                    (put(data.val_images), put(data.val_labels)),
                    (put(data.test_images), put(data.test_labels)))


def train(cfg: SSLConfig, data: SSLData, *, on_epoch: OnEpoch | None = None,
          state: dict[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Train ``cfg.model`` for ``cfg.epochs`` epochs (the loss: see the module docstring).

    Args:
        on_epoch: called after every epoch as ``on_epoch(row, checkpoint)``; ``checkpoint()``
            (call it inside on_epoch) returns the resume state: CPU copies of model and
            optimizer state, epoch, history, "test_predictions" (int8 (N_test,) at the best
            epoch so far) and "calibration" (the best epoch's, as in the result); only tensors,
            numbers, strings, lists and dicts (``torch.load(weights_only=True)`` reads it).
        state: such a state; training resumes after its epoch (its config may differ from
            ``cfg`` only in epochs (constant lr_schedule only), device and eval_batch_size).
        progress: print one line per epoch to stderr.

    Returns:
        {"history": rows, "best_epoch", "val_accuracy" (best), "test_accuracy" (at the best
        epoch), "test_predictions" (np.int8 (N_test,): argmax class of every test image at the
        best epoch), "calibration" ({"val", "test"}: :func:`evaluate`'s at the best epoch),
        "labeled_indices" (int64 into the train split), "model" (the last epoch's ResNet, eval
        mode)}. Row keys: epoch (1-based), train_loss, supervised_loss, semantic_loss (before
        the semantic weight; 0 for 'none'), train_accuracy (labeled batches, augmented, train
        mode), labeled_seen, labeled_digest (:func:`index_digest`) of the labeled indices used
        this epoch, val_ and test_ accuracy, ece, nll and brier, best_epoch, best_val_accuracy
        (the first epoch with the highest val accuracy so far) and, at that epoch,
        <key>_at_best for each key of ``AT_BEST``. All values are int or float.
    """
    labeled = validate(cfg, data)
    device = torch.device(cfg.device)
    model = build_model(cfg, data.train_images.shape[1:], data.num_classes).to(device, memory_format=memory_format(device))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, foreach=True)
    start, history, best, calib = (0, [], None, None) if state is None else _restore(state, cfg, model, opt, labeled)
    t = _tensors(cfg, data, labeled, device)
    bn_images = t.train_x[torch.from_numpy(bn_rows(t.labeled)).to(device)]   # fixed for the run
    for epoch in range(start, cfg.epochs):
        row = _train_epoch(model, opt, cfg, t, epoch)
        recompute_batch_norm(model, bn_images, cfg.eval_batch_size)
        scores, test_pred, epoch_calib = _score_epoch(model, t, cfg.eval_batch_size)
        row |= scores | _best(row | scores, history)
        if row["best_epoch"] == row["epoch"]:
            best, calib = test_pred.to("cpu", torch.int8), epoch_calib
        history.append(row)
        if progress:
            print(f"ssl epoch {row['epoch']}/{cfg.epochs}: " + ", ".join(f"{k} {row[k]:.4f}" for k in (
                "train_loss", "val_accuracy", "test_accuracy")), file=sys.stderr, flush=True)
        if on_epoch is not None:
            on_epoch(dict(row), lambda: _checkpoint(cfg, model, opt, history, labeled, best, calib))
    last = history[-1]
    return {"history": history, "best_epoch": last["best_epoch"], "val_accuracy": last["best_val_accuracy"],
            "test_accuracy": last["test_accuracy_at_best"], "test_predictions": best.numpy().copy(),
            "calibration": calib, "labeled_indices": labeled, "model": model.eval()}


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on the CPU (oneDNN's convs: 21.4 vs 18.3 steps/s contiguous, ResNet-8 width 8,
    32x32, 1 thread, medians of 3); what the device prefers elsewhere (not measured on GPUs)."""
    return torch.channels_last if device.type == "cpu" else torch.preserve_format


def steps_per_epoch(cfg: SSLConfig, n_train: int) -> int:
    """``cfg.steps_per_epoch``, or None: one pass over the ``n_train`` train images' size."""
    return cfg.steps_per_epoch or math.ceil(n_train / cfg.batch_size)


def epoch_plans(cfg: SSLConfig, t: "_Tensors", epoch: int) -> tuple[Plan, Plan | None]:
    """Epoch ``epoch``'s (0-based) labeled plan and unlabeled plan (None for 'none'), from
    their own streams (``raydgm.training.ssl_batches``): the labeled one depends only on the
    labeled subset, seed, batch_size, steps and augment, so every arm of a seed shares it."""
    steps = steps_per_epoch(cfg, len(t.train_x))
    lab = labeled_plan(t.train_x, t.labeled, steps=steps, batch=cfg.batch_size, augment=cfg.augment,
                       seed=cfg.seed, epoch=epoch)
    if t.choices is None:
        return lab, None
    return lab, unlabeled_plan(t.pool, t.choices, steps=steps, batch=cfg.unlabeled_batch_size or cfg.batch_size,
                               augment=cfg.augment, seed=cfg.seed, epoch=epoch)


def learning_rate_at(cfg: SSLConfig, step: int, total: int) -> float:
    """Adam's lr at 0-based global ``step`` of ``total``: constant, or cosine
    lr (1 + cos(pi step / total)) / 2 (Loshchilov & Hutter 2017, no restarts; 0 after the run)."""
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def semantic_weight_at(cfg: SSLConfig, step: int, steps: int) -> float:
    """The semantic weight at 0-based global ``step`` (``steps`` per epoch): ``semantic_weight``
    x exp(-5 (1 - t)^2), t = min(1, step / (semantic_rampup_epochs * steps)) (Laine & Aila 2017,
    Sec. 3.1); no ramp-up (the full weight) when semantic_rampup_epochs is 0."""
    ramp = cfg.semantic_rampup_epochs * steps
    if ramp <= 0 or step >= ramp:
        return cfg.semantic_weight
    return cfg.semantic_weight * math.exp(-5.0 * (1.0 - step / ramp) ** 2)


def _train_epoch(model: ResNet, opt: torch.optim.Optimizer, cfg: SSLConfig, t: "_Tensors",
                 epoch: int) -> dict[str, Any]:
    """One epoch of ``steps_per_epoch`` steps; epoch is 0-based, the row's ``epoch`` 1-based."""
    model.train()
    lab, unl = epoch_plans(cfg, t, epoch)
    steps = len(lab.indices) // lab.batch
    sums = torch.zeros(4, dtype=torch.float64, device=t.train_x.device)   # total, CE, semantic, correct
    ys = t.train_y[torch.from_numpy(lab.indices).to(t.train_y.device)].view(steps, lab.batch)
    lws = None if t.log_w is None else t.log_w[torch.from_numpy(unl.indices).to(t.log_w.device)].view(steps, -1)
    for s in range(steps):
        g, y = epoch * steps + s, ys[s]
        for group in opt.param_groups:
            group["lr"] = learning_rate_at(cfg, g, cfg.epochs * steps)
        x_u = None if unl is None else unl.images(s)
        logits, u_logits = _forward(model, lab.images(s), x_u)      # (bs, K), (ubs, K) or None
        ce = F.cross_entropy(logits, y)
        sem = torch.zeros((), device=logits.device)
        if u_logits is not None:
            sem = weighted_semantic(u_logits, lws[s], t.log_norm) if lws is not None else exactly_one(u_logits).mean()
        loss = ce + semantic_weight_at(cfg, g, steps) * sem
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        correct = (logits.argmax(dim=1) == y).sum()
        sums += torch.stack([loss.detach(), ce.detach(), sem.detach(), correct]).to(sums.dtype)
    total, ce_sum, sem_sum, correct_sum = sums.tolist()   # one device sync per epoch
    check_finite_loss(total / steps, "ssl training loss", epoch, f"lower learning_rate (now {cfg.learning_rate})")
    return {"epoch": epoch + 1, "train_loss": total / steps, "supervised_loss": ce_sum / steps,
            "semantic_loss": sem_sum / steps, "train_accuracy": correct_sum / (steps * lab.batch),
            "labeled_seen": int(np.unique(lab.indices).size), "labeled_digest": index_digest(lab.indices)}


def _forward(model: ResNet, x: torch.Tensor, x_u: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of the labeled uint8 (B, C, H, W) ``x`` and the unlabeled (B_u, C, H, W) ``x_u``:
    two passes, the second normalized with the first's batch statistics (:func:`labeled_statistics`)."""
    if x_u is None:
        return model(x), None
    with labeled_statistics(model) as unlabeled_pass:
        logits = model(x)                                           # (B, K), standard BatchNorm
        unlabeled_pass()
        return logits, model(x_u)                                   # (B_u, K)


@torch.no_grad()
def logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """float (N, K) logits of each uint8 (N, C, H, W) image, in eval mode (BatchNorm's running
    statistics), no augmentation, ``batch_size`` images per pass; on images' device."""
    model.eval()
    return torch.cat([model(images[s:s + batch_size]) for s in range(0, len(images), batch_size)])


def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """int64 (N,) argmax class of each image (see :func:`logits`); on images' device."""
    return logits(model, images, batch_size).argmax(dim=1)


def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """(int64 (N,) predictions on images' device, ``top_label`` of the softmax against the int64
    (N,) labels with "accuracy" = :func:`accuracy` of the predictions); one device sync."""
    z = logits(model, images, batch_size)                                     # (N, K)
    pred = z.argmax(dim=1)
    log_probs = torch.log_softmax(z.to(torch.float64), dim=1).cpu().numpy()    # (N, K), float64
    return pred, top_label(log_probs, labels.cpu().numpy()) | {"accuracy": accuracy(pred, labels)}


def _score_epoch(model: torch.nn.Module, t: "_Tensors", batch_size: int
                 ) -> tuple[dict[str, float], torch.Tensor, dict[str, dict[str, Any]]]:
    """(val_ and test_ accuracy, ece, nll and brier; the int64 (N_test,) test predictions;
    {"val": .., "test": ..} the two :func:`evaluate` calibrations)."""
    (_, val), (test_pred, test) = (evaluate(model, x, y, batch_size) for x, y in (t.val, t.test))
    scores = {f"{s}_{k}": d[k] for s, d in (("val", val), ("test", test)) for k in ("accuracy", *SCORES)}
    return scores, test_pred, {"val": val, "test": test}


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of int (N,) ``predictions`` equal to int64 (N,) ``labels``."""
    return int((predictions == labels).sum()) / len(labels)


def _best(row: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """Best-so-far by val accuracy (the first epoch wins ties) and, at that epoch, <key>_at_best
    for each key of ``AT_BEST`` that the row has."""
    prev = history[-1] if history else None
    if prev is None or row["val_accuracy"] > prev["best_val_accuracy"]:
        return {"best_epoch": row["epoch"], "best_val_accuracy": row["val_accuracy"]} | {
            f"{k}_at_best": row[k] for k in AT_BEST if k in row}
    return {k: prev[k] for k in ("best_epoch", "best_val_accuracy", *(f"{k}_at_best" for k in AT_BEST))
            if k in prev}


# --------------------------------------------------------------------------- checkpoints

def _resume_key(cfg: SSLConfig) -> str:
    """16 hex chars over the config minus the keys a resume may change (epochs, device, ...);
    with a cosine schedule, epochs set the lr of every step, so they may not change."""
    free = _RESUME_FREE if cfg.lr_schedule == "constant" else tuple(k for k in _RESUME_FREE if k != "epochs")
    d = {k: v for k, v in cfg.to_dict().items() if k not in free}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _cpu_copy(obj: Any) -> Any:
    """Deep copy with every tensor detached, cloned and moved to the CPU."""
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    return obj.detach().cpu().clone() if isinstance(obj, torch.Tensor) else obj


def _checkpoint(cfg: SSLConfig, model: ResNet, opt: torch.optim.Optimizer, history: list[dict[str, Any]],
                labeled: np.ndarray, test_predictions: torch.Tensor, calibration: dict[str, Any]) -> dict[str, Any]:
    return {"format": CHECKPOINT_FORMAT, "resume_key": _resume_key(cfg), "epoch": len(history),
            "labeled_digest": index_digest(labeled), "history": [dict(r) for r in history],
            "model": _cpu_copy(model.state_dict()), "optimizer": _cpu_copy(opt.state_dict()),
            "test_predictions": test_predictions.clone(), "calibration": json.loads(json.dumps(calibration))}


def _restore(state: dict[str, Any], cfg: SSLConfig, model: ResNet, opt: torch.optim.Optimizer,
             labeled: np.ndarray) -> tuple[int, list[dict[str, Any]], torch.Tensor, dict[str, Any]]:
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"state is not a {CHECKPOINT_FORMAT} checkpoint (from ssl.train's on_epoch)")
    if state["resume_key"] != _resume_key(cfg):
        raise ValueError("state belongs to another SSL config (only epochs (not with a cosine lr_schedule), device and "
                         "eval_batch_size may change on resume)")
    if state["labeled_digest"] != index_digest(labeled):
        raise ValueError("state was trained on another labeled subset: the train split differs")
    epoch, history = int(state["epoch"]), [dict(r) for r in state["history"]]
    if len(history) != epoch or epoch > cfg.epochs:
        raise ValueError(f"state holds epoch {epoch} ({len(history)} rows); cfg.epochs={cfg.epochs}")
    pred = state.get("test_predictions")
    if not isinstance(pred, torch.Tensor) or pred.dtype != torch.int8 or pred.ndim != 1:
        raise ValueError("state has no int8 (N_test,) test_predictions (a checkpoint of an older format)")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return epoch, history, pred.clone(), state["calibration"]
