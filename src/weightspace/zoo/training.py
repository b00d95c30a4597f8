"""Training many networks of one architecture at once, and measuring them.

The networks of a training group share an architecture, a data set, an optimizer type, a
batch size and an epoch budget; everything else (seed, learning rate, weight decay,
initialisation scale, label noise, fraction of the training set) varies per network.
Their parameters are stacked along a leading model dimension and trained together with
``torch.func.vmap``: one forward/backward call serves every network of the group.
Evaluation runs network by network: on CPU a vmapped forward pass (a grouped
convolution) was 1.7x slower at inference than the loop.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from .datasets import TaskData
from .families import build_model

# Robustness: accuracy under a fixed input perturbation (recorded in the catalog).
NOISE_STD = 0.5  # Gaussian noise, in units of the (standardised) feature std
TOKEN_SUBSTITUTION = 0.1  # fraction of tokens replaced at random (nlp)
FGSM_EPSILON = 0.1  # FGSM step, in units of the (standardised) feature std; float inputs only
FGSM_EVAL_LIMIT = 1000  # test examples attacked (a gradient per example and model is costly)
TRAIN_EVAL_LIMIT = 5000  # training examples used to measure train accuracy
EVAL_BATCH = 1000
# Detection: the loss adds this weight times the smooth L1 loss of the box (its 4 numbers
# summed; quadratic below an error of DETECTION_BOX_BETA, a fraction of the image side) to
# the cross-entropy of the class; a detection is right with the right class and an IoU of
# at least DETECTION_MIN_IOU with the true box.
DETECTION_BOX_WEIGHT = 2.0
DETECTION_BOX_BETA = 0.05
DETECTION_MIN_IOU = 0.5
# Segmentation: the per-pixel cross-entropy weighs foreground pixels (target > 0, 12% of
# MNIST's pixels) this much and background pixels 1, so that the digits are learnt sooner.
SEGMENTATION_FOREGROUND_WEIGHT = 5.0
# Families trained with vmap. Attention and depthwise convolutions have slow (or no)
# batching rules, so those families are trained one network after the other; so is the
# U-Net, which vmap trains correctly but a quarter slower (its full-resolution convolutions).
VECTORIZED_FAMILIES = frozenset({"mlp", "vgg", "cnn", "resnet", "detector", "autoencoder"})


@dataclass(frozen=True)
class RunSettings:
    """Hyperparameters of one training run that may differ inside a group.

    The defaults are a plain run: no weight decay, PyTorch's initial weights unscaled,
    clean labels, the whole training set.
    """

    seed: int
    lr: float
    weight_decay: float = 0.0
    init_scale: float = 1.0
    label_noise: float = 0.0
    train_fraction: float = 1.0
    initializer: str = "default"


@dataclass(frozen=True)
class Checkpoint:
    """One trained network after ``epoch`` epochs, with its measured properties."""

    run_index: int
    epoch: int
    state: dict[str, Tensor]
    metrics: dict[str, float]


def robustness_kind(data: TaskData) -> str:
    """How robustness is measured for ``data`` (a catalog column)."""
    if data.type == "nlp":
        return f"token_substitution_{TOKEN_SUBSTITUTION:g}"
    return f"gaussian_noise_{NOISE_STD:g}std"


def checkpoint_epochs(epochs: int) -> list[int]:
    """Epochs after which a checkpoint is kept: 1, 2, 4, ... and the last."""
    marks = [2**i for i in range(int(math.log2(epochs)) + 1)]
    return sorted(set(marks + [epochs]))


# How a run draws its initial weights (matrices and kernels; biases and norms keep
# PyTorch's defaults); the run's init_scale multiplies the result.
INITIALIZERS: dict[str, Callable[[Tensor], object]] = {
    "default": lambda weight: None,  # PyTorch's own (Kaiming uniform, a=sqrt(5))
    "xavier_normal": nn.init.xavier_normal_,
    "he_normal": functools.partial(nn.init.kaiming_normal_, nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
    "normal": functools.partial(nn.init.normal_, std=0.1),
}


def _stack_models(spec: dict, runs: Sequence[RunSettings]) -> tuple[nn.Module, dict, dict]:
    models = []
    for run in runs:
        torch.manual_seed(run.seed)
        model = build_model(spec)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() > 1 and "norm" not in name:  # weights, not biases or norms
                    INITIALIZERS[run.initializer](p)
                    p.mul_(run.init_scale)
        models.append(model)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    return base, params, buffers


OPTIMIZERS = ("sgd", "adam", "rmsprop")


class _Optimizer:
    """SGD with momentum, Adam or RMSProp over stacked parameters, per-model lr and decay.

    RMSProp is PyTorch's (and Keras's) default form: squared-gradient average with decay
    0.99, no momentum, epsilon 1e-8 added to its root.
    """

    def __init__(self, kind: str, params: dict[str, Tensor], lr: Tensor, wd: Tensor) -> None:
        if kind not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
        self.kind, self.lr, self.wd, self.step_count = kind, lr, wd, 0
        self.m = {k: torch.zeros_like(v) for k, v in params.items()} if kind != "rmsprop" else {}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()} if kind != "sgd" else {}

    def step(self, params: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
        self.step_count += 1
        t = self.step_count
        for name, p in params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr, wd = self.lr.view(shape), self.wd.view(shape)
            g = grads[name] + wd * p
            if self.kind == "sgd":
                self.m[name].mul_(0.9).add_(g)
                p.sub_(lr * self.m[name])
            elif self.kind == "rmsprop":
                self.v[name].mul_(0.99).addcmul_(g, g, value=0.01)
                p.sub_(lr * g / (self.v[name].sqrt() + 1e-8))
            else:
                self.m[name].mul_(0.9).add_(g, alpha=0.1)
                self.v[name].mul_(0.999).addcmul_(g, g, value=0.001)
                m_hat = self.m[name] / (1 - 0.9**t)
                v_hat = self.v[name] / (1 - 0.999**t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + 1e-8))


def _network(params: dict, buffers: dict, m: int) -> tuple[dict, dict]:
    """Network ``m``'s parameters and buffers: views into the stacked tensors."""
    return {k: v[m] for k, v in params.items()}, {k: v[m] for k, v in buffers.items()}


def _noisy_labels(data: TaskData, runs: Sequence[RunSettings]) -> Tensor:
    """Per-model training targets ``[M, N, ...]``.

    For classification a fraction of labels replaced at random; the other tasks have no
    label noise and share the clean targets (a view).
    """
    if data.task != "classification":
        return data.y_train.expand(len(runs), *data.y_train.shape)
    rows = []
    for run in runs:
        y = data.y_train.clone()
        if run.label_noise > 0:
            gen = torch.Generator().manual_seed(run.seed + 1)
            flip = torch.rand(len(y), generator=gen) < run.label_noise
            y[flip] = torch.randint(0, data.num_classes, (int(flip.sum()),), generator=gen)
        rows.append(y)
    return torch.stack(rows)


def _train_masks(n: int, runs: Sequence[RunSettings]) -> Tensor:
    """``[M, N]`` 1.0 on the training examples each model may see."""
    masks = torch.zeros(len(runs), n)
    for i, run in enumerate(runs):
        gen = torch.Generator().manual_seed(run.seed + 2)
        keep = max(1, round(run.train_fraction * n))
        masks[i, torch.randperm(n, generator=gen)[:keep]] = 1.0
    return masks


def task_loss(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Per-example training loss ``[N]`` of outputs ``[N, ...]`` against targets ``[N, ...]``.

    Squared error (regression); cross-entropy (classification), averaged over the pixels
    with foreground pixels weighted :data:`SEGMENTATION_FOREGROUND_WEIGHT` (segmentation);
    cross-entropy of the class plus :data:`DETECTION_BOX_WEIGHT` times the
    smooth L1 loss of the box (detection); mean squared error over the pixels (generation).
    """
    if task == "regression":
        return (out.squeeze(-1) - y) ** 2
    if task == "segmentation":
        pixel_weight = 1 + (SEGMENTATION_FOREGROUND_WEIGHT - 1) * (y > 0)  # [N, H, W]
        return (F.cross_entropy(out, y, reduction="none") * pixel_weight).mean((-2, -1))
    if task == "detection":
        class_loss = F.cross_entropy(out[:, :-4], y[:, 0].long(), reduction="none")
        box = F.smooth_l1_loss(out[:, -4:], y[:, 1:], reduction="none", beta=DETECTION_BOX_BETA)
        return class_loss + DETECTION_BOX_WEIGHT * box.sum(-1)
    if task == "generation":
        return ((out - y) ** 2).flatten(1).mean(-1)
    return F.cross_entropy(out, y, reduction="none")


def task_score(out: Tensor, y: Tensor, task: str, weight: Tensor | None = None) -> Tensor:
    """The score of each of M stacked models, the metric ``TASK_METRICS[task]``.

    - ``accuracy`` (classification): the fraction of right classes.
    - ``r2`` (regression) and ``reconstruction_r2`` (generation): 1 - SSE / SST over all
      targets (all pixels), SST around the mean target of the N examples.
    - ``mean_iou`` (segmentation): per class TP / (TP + FP + FN) over all pixels, averaged
      over the classes present in the targets or the predictions.
    - ``detection_accuracy``: the fraction of examples with the right class and a box
      whose IoU with the true box is at least :data:`DETECTION_MIN_IOU`.

    Args:
        out: Outputs ``[M, N, ...]`` of M models on N examples.
        y: Targets ``[N, ...]`` (see :class:`~weightspace.zoo.datasets.TaskData`).
        task: The task, a key of :data:`~weightspace.zoo.datasets.TASK_METRICS`.
        weight: ``[M, N]`` weight of each example for each model (1 on the examples a
            model trained on, 0 elsewhere); None counts every example once.

    Returns:
        ``[M]`` scores; higher is better, 1 is perfect.
    """
    if task == "regression":
        sse, sst = (out.squeeze(-1) - y) ** 2, (y - y.mean()) ** 2  # [M, N], [N]
    elif task == "generation":
        sse = ((out - y) ** 2).flatten(2).sum(-1)  # [M, N]
        sst = ((y - y.mean()) ** 2).flatten(1).sum(-1)  # [N]
    elif task == "segmentation":
        return _mean_iou(out.argmax(2), y, out.shape[2], weight)
    elif task == "detection":
        right_class = out[..., :-4].argmax(-1) == y[:, 0].long()  # [M, N]
        hit = right_class & (box_iou(out[..., -4:], y[:, 1:]) >= DETECTION_MIN_IOU)
        return _weighted_mean(hit.float(), weight)
    else:
        return _weighted_mean((out.argmax(-1) == y).float(), weight)
    return 1 - _weighted_sum(sse, weight) / _weighted_sum(sst, weight).clamp(min=1e-12)


def _weighted_sum(values: Tensor, weight: Tensor | None) -> Tensor:
    """Sums ``values`` ``[..., N]`` over the examples, times their weights ``[M, N]`` if given."""
    return values.sum(-1) if weight is None else (values * weight).sum(-1)


def _weighted_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    """The mean of ``values`` ``[M, N]`` over the examples, weighted by ``[M, N]`` if given."""
    if weight is None:
        return values.mean(-1)
    return (values * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)


def _mean_iou(pred: Tensor, y: Tensor, num_classes: int, weight: Tensor | None) -> Tensor:
    """Mean IoU ``[M]`` of predicted classes ``[M, N, H, W]`` against ``y`` ``[N, H, W]``."""
    m, c = pred.shape[0], num_classes
    w = torch.ones(pred.shape[:2]) if weight is None else weight
    pixel_weight = w[:, :, None, None].double().expand(pred.shape)  # [M, N, H, W]
    cell = (torch.arange(m)[:, None, None, None] * c + y) * c + pred  # model, true, predicted
    confusion = torch.bincount(
        cell.flatten(), weights=pixel_weight.flatten(), minlength=m * c * c
    ).view(m, c, c)  # [M, true, predicted]
    tp = confusion.diagonal(dim1=1, dim2=2)  # [M, C]
    union = confusion.sum(1) + confusion.sum(2) - tp  # TP + FP + FN
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1e-12), 0.0)
    return (iou.sum(-1) / present.sum(-1).clamp(min=1)).float()


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of boxes ``(x0, y0, x1, y1)`` ``[..., 4]`` (broadcast).

    A box with ``x1 <= x0`` or ``y1 <= y0`` is empty; two empty boxes have IoU 0.
    """

    def area(box: Tensor) -> Tensor:
        return (box[..., 2] - box[..., 0]).clamp(min=0) * (box[..., 3] - box[..., 1]).clamp(min=0)

    width = torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])
    height = torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])
    inter = width.clamp(min=0) * height.clamp(min=0)
    return inter / (area(a) + area(b) - inter).clamp(min=1e-12)


def _perturb(x: Tensor, data: TaskData, generator: torch.Generator) -> Tensor:
    if data.type == "nlp":
        assert data.vocab_size is not None
        replace = torch.rand(x.shape, generator=generator) < TOKEN_SUBSTITUTION
        random_tokens = torch.randint(0, data.vocab_size, x.shape, generator=generator)
        return torch.where(replace, random_tokens, x)
    return x + NOISE_STD * torch.randn(x.shape, generator=generator)


class GroupTrainer:
    """Trains the networks of one group and measures every checkpoint.

    Args:
        spec: the architecture spec shared by the group (``build_model`` input).
        data: the data set (inputs already shaped for the architecture).
        runs: one :class:`RunSettings` per network.
        optimizer: ``"sgd"`` or ``"adam"``.
        epochs: training epochs; checkpoints after 1, 2, 4, ... and ``epochs``.
        batch_size: examples per step (shared by the group).
        max_train: use at most this many training examples (None: all).
        vectorize: train the networks together with ``vmap`` (default: for families whose
            layers all have batching rules); otherwise one after the other.
    """

    def __init__(
        self,
        spec: dict,
        data: TaskData,
        runs: Sequence[RunSettings],
        optimizer: str,
        epochs: int,
        batch_size: int,
        max_train: int | None = None,
        vectorize: bool | None = None,
    ) -> None:
        self.spec, self.data, self.runs = spec, data, list(runs)
        self.vectorize = spec["family"] in VECTORIZED_FAMILIES if vectorize is None else vectorize
        self.optimizer, self.epochs, self.batch_size = optimizer, epochs, batch_size
        n = len(data.x_train) if max_train is None else min(max_train, len(data.x_train))
        self.x_train = data.x_train[:n]
        self.y_train = _noisy_labels(data, self.runs)[:, :n]  # [M, n]
        self.masks = _train_masks(n, self.runs)  # [M, n]

    def _forward(self, base: nn.Module, params: dict, buffers: dict, x: Tensor) -> Tensor:
        return functional_call(base, (params, buffers), (x,))

    def train(self) -> Iterator[Checkpoint]:
        """Train; yield a :class:`Checkpoint` per network at each checkpoint epoch."""
        base, params, buffers = _stack_models(self.spec, self.runs)
        task = self.data.task
        lr = torch.tensor([r.lr for r in self.runs])
        wd = torch.tensor([r.weight_decay for r in self.runs])
        opt = _Optimizer(self.optimizer, params, lr, wd)

        def loss_fn(p: dict, b: dict, x: Tensor, y: Tensor, w: Tensor) -> Tensor:
            out = self._forward(base, p, b, x)
            return (w * task_loss(out, y, task)).sum() / w.sum().clamp(min=1.0)

        step = self._stepper(grad_and_value(loss_fn))
        gen = torch.Generator().manual_seed(self.runs[0].seed)
        marks = set(checkpoint_epochs(self.epochs))
        n = len(self.x_train)
        for epoch in range(1, self.epochs + 1):
            base.train()
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                grads, _ = step(
                    params, buffers, self.x_train[idx], self.y_train[:, idx], self.masks[:, idx]
                )
                with torch.no_grad():
                    opt.step(params, grads)
            if epoch in marks:
                metrics = self.evaluate(base, params, buffers)
                for i in range(len(self.runs)):
                    state = {k: v[i].detach().clone() for k, v in {**params, **buffers}.items()}
                    yield Checkpoint(i, epoch, state, {k: float(v[i]) for k, v in metrics.items()})

    def _stepper(self, fn: Callable) -> Callable:
        """``fn(params, buffers, x, y, w)`` over the model dimension of everything but ``x``."""
        if self.vectorize:
            return vmap(fn, in_dims=(0, 0, None, 0, 0), randomness="different")

        def loop(params: dict, buffers: dict, x: Tensor, y: Tensor, w: Tensor) -> tuple:
            results = []
            for i in range(len(self.runs)):  # buffer slices are views: BN updates land
                p_i, b_i = _network(params, buffers, i)
                results.append(fn(p_i, b_i, x, y[i], w[i]))
            grads = {k: torch.stack([r[0][k] for r in results]) for k in params}
            return grads, torch.stack([r[1] for r in results])

        return loop

    @torch.no_grad()
    def _outputs(self, base: nn.Module, params: dict, buffers: dict, x: Tensor) -> Tensor:
        """``[M, N, ...]`` eval-mode outputs of every network.

        Measured network by network, never with ``vmap``: on one CPU thread, four VGG
        networks' 10,000 MNIST test outputs took 5.0-5.4 s vmapped and 3.0-3.1 s in the
        loop (the same outputs to 6e-8).
        """
        base.eval()
        per_model = []
        for m in range(len(self.runs)):
            p_m, b_m = _network(params, buffers, m)
            per_model.append(
                torch.cat(
                    [
                        self._forward(base, p_m, b_m, x[i : i + EVAL_BATCH])
                        for i in range(0, len(x), EVAL_BATCH)
                    ]
                )
            )
        return torch.stack(per_model)

    def evaluate(self, base: nn.Module, params: dict, buffers: dict) -> dict[str, Tensor]:
        """Test/train score (:func:`task_score`), gap, robustness, FGSM score and test loss.

        Robustness and the FGSM score are the test score on perturbed inputs, against the
        clean targets. The FGSM score is NaN for token inputs, which have no input gradient.
        """
        data, task = self.data, self.data.task
        test_out = self._outputs(base, params, buffers, data.x_test)
        test_score = task_score(test_out, data.y_test, task)
        test_loss = torch.stack([task_loss(o, data.y_test, task).mean() for o in test_out])
        k = min(TRAIN_EVAL_LIMIT, len(self.x_train))
        train_out = self._outputs(base, params, buffers, self.x_train[:k])
        seen = self.masks[:, :k]  # each model on its own training examples and targets
        train_score = torch.cat(
            [
                task_score(train_out[m : m + 1], self.y_train[m, :k], task, seen[m : m + 1])
                for m in range(len(self.runs))
            ]
        )
        gen = torch.Generator().manual_seed(12345)
        noisy_x = _perturb(data.x_test, data, gen)
        robust = task_score(self._outputs(base, params, buffers, noisy_x), data.y_test, task)
        if data.x_test.is_floating_point():
            y_attacked = data.y_test[:FGSM_EVAL_LIMIT]
            fgsm = task_score(self._fgsm_outputs(base, params, buffers), y_attacked, task)
        else:  # token ids have no gradient
            fgsm = torch.full((len(self.runs),), float("nan"))
        return {
            "test_accuracy": test_score,
            "train_accuracy": train_score,
            "generalization_gap": train_score - test_score,
            "robustness": robust,
            "fgsm_accuracy": fgsm,
            "test_loss": test_loss,
        }

    def _fgsm_outputs(self, base: nn.Module, params: dict, buffers: dict) -> Tensor:
        """``[M, N, ...]`` outputs on each model's own FGSM examples of the first
        ``FGSM_EVAL_LIMIT`` test examples (eval mode)."""
        data, task = self.data, self.data.task
        base.eval()

        def loss_of_input(p: dict, b: dict, x: Tensor, y: Tensor) -> Tensor:
            return task_loss(self._forward(base, p, b, x), y, task).sum()

        def attacked(p: dict, b: dict, x: Tensor, y: Tensor) -> Tensor:
            x_adv = x + FGSM_EPSILON * torch.func.grad(loss_of_input, argnums=2)(p, b, x, y).sign()
            return self._forward(base, p, b, x_adv.detach())

        x_test, y_test = data.x_test[:FGSM_EVAL_LIMIT], data.y_test[:FGSM_EVAL_LIMIT]
        per_model = []
        for m in range(len(self.runs)):  # not vmapped (see _outputs)
            p_m, b_m = _network(params, buffers, m)
            chunks = [
                attacked(p_m, b_m, x_test[i : i + EVAL_BATCH], y_test[i : i + EVAL_BATCH])
                for i in range(0, len(x_test), EVAL_BATCH)
            ]
            per_model.append(torch.cat(chunks).detach())
        return torch.stack(per_model)
