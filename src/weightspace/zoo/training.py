"""Training many networks of one architecture at once, and measuring them.

The networks of a training group share an architecture, a data set, an optimizer type, a
batch size and an epoch budget; everything else (seed, learning rate, weight decay,
initialisation scale, label noise, fraction of the training set) varies per network.
Their parameters are stacked along a leading model dimension and trained together with
``torch.func.vmap``: one forward/backward call serves every network of the group.
"""

from __future__ import annotations

import copy
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
# Families trained with vmap. Attention and depthwise convolutions have slow (or no)
# batching rules, so those families are trained one network after the other.
VECTORIZED_FAMILIES = frozenset({"mlp", "vgg", "resnet"})


@dataclass(frozen=True)
class RunSettings:
    """Hyperparameters of one training run that may differ inside a group."""

    seed: int
    lr: float
    weight_decay: float
    init_scale: float
    label_noise: float
    train_fraction: float


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


def _stack_models(spec: dict, runs: Sequence[RunSettings]) -> tuple[nn.Module, dict, dict]:
    models = []
    for run in runs:
        torch.manual_seed(run.seed)
        model = build_model(spec)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() > 1 and "norm" not in name:  # weights, not biases or norms
                    p.mul_(run.init_scale)
        models.append(model)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    return base, params, buffers


class _Optimizer:
    """SGD with momentum or Adam over stacked parameters, per-model lr and weight decay."""

    def __init__(self, kind: str, params: dict[str, Tensor], lr: Tensor, wd: Tensor) -> None:
        if kind not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {kind!r}")
        self.kind, self.lr, self.wd, self.step_count = kind, lr, wd, 0
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()} if kind == "adam" else {}

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
            else:
                self.m[name].mul_(0.9).add_(g, alpha=0.1)
                self.v[name].mul_(0.999).addcmul_(g, g, value=0.001)
                m_hat = self.m[name] / (1 - 0.9**t)
                v_hat = self.v[name] / (1 - 0.999**t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + 1e-8))


def _noisy_labels(data: TaskData, runs: Sequence[RunSettings]) -> Tensor:
    """Per-model training targets ``[M, N]``: a fraction of labels replaced at random."""
    rows = []
    for run in runs:
        y = data.y_train.clone()
        if data.task == "classification" and run.label_noise > 0:
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
    """Per-example training loss: squared error for regression, cross-entropy otherwise."""
    if task == "regression":
        return (out.squeeze(-1) - y) ** 2
    return F.cross_entropy(out, y, reduction="none")


def task_score(out: Tensor, y: Tensor, task: str) -> Tensor:
    """The score of each of M stacked models from outputs ``[M, N, C]``: accuracy, or R²."""
    if task == "regression":
        pred = out.squeeze(-1)
        residual = ((pred - y) ** 2).sum(-1)
        total = ((y - y.mean()) ** 2).sum()
        return 1 - residual / total
    return (out.argmax(-1) == y).float().mean(-1)


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
        self.clean_y_train = data.y_train[:n]

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
                p_i = {k: v[i] for k, v in params.items()}
                b_i = {k: v[i] for k, v in buffers.items()}
                results.append(fn(p_i, b_i, x, y[i], w[i]))
            grads = {k: torch.stack([r[0][k] for r in results]) for k in params}
            return grads, torch.stack([r[1] for r in results])

        return loop

    @torch.no_grad()
    def _outputs(self, base: nn.Module, params: dict, buffers: dict, x: Tensor) -> Tensor:
        """``[M, N, C]`` eval-mode outputs of every network."""
        base.eval()
        if self.vectorize:
            run = vmap(self._forward, in_dims=(None, 0, 0, None))
            chunks = [
                run(base, params, buffers, x[i : i + EVAL_BATCH])
                for i in range(0, len(x), EVAL_BATCH)
            ]
            return torch.cat(chunks, dim=1)
        per_model = []
        for m in range(len(self.runs)):
            p_m = {k: v[m] for k, v in params.items()}
            b_m = {k: v[m] for k, v in buffers.items()}
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
        """Test/train accuracy (R² for regression), gap, robustness, FGSM accuracy and test loss.

        FGSM accuracy is NaN for token inputs, which have no input gradient.
        """
        data, task = self.data, self.data.task
        test_out = self._outputs(base, params, buffers, data.x_test)
        test_score = task_score(test_out, data.y_test, task)
        test_loss = torch.stack([task_loss(o, data.y_test, task).mean() for o in test_out])
        k = min(TRAIN_EVAL_LIMIT, len(self.x_train))
        train_out = self._outputs(base, params, buffers, self.x_train[:k])
        seen = self.masks[:, :k]  # each model on its own training examples and labels
        if task == "regression":
            residual = ((train_out.squeeze(-1) - self.y_train[:, :k]) ** 2 * seen).sum(1)
            y = self.clean_y_train[:k]
            total = (((y - y.mean()) ** 2) * seen).sum(1)
            train_score = 1 - residual / total.clamp(min=1e-12)
        else:
            correct = (train_out.argmax(-1) == self.y_train[:, :k]).float()
            train_score = (correct * seen).sum(1) / seen.sum(1).clamp(min=1.0)
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
        """``[M, N, C]`` outputs on each model's own FGSM examples of the first
        ``FGSM_EVAL_LIMIT`` test examples (eval mode)."""
        data, task = self.data, self.data.task
        base.eval()

        def loss_of_input(p: dict, b: dict, x: Tensor, y: Tensor) -> Tensor:
            return task_loss(self._forward(base, p, b, x), y, task).sum()

        def attacked(p: dict, b: dict, x: Tensor, y: Tensor) -> Tensor:
            x_adv = x + FGSM_EPSILON * torch.func.grad(loss_of_input, argnums=2)(p, b, x, y).sign()
            return self._forward(base, p, b, x_adv.detach())

        chunks = []
        x_test, y_test = data.x_test[:FGSM_EVAL_LIMIT], data.y_test[:FGSM_EVAL_LIMIT]
        for i in range(0, len(x_test), EVAL_BATCH):
            x, y = x_test[i : i + EVAL_BATCH], y_test[i : i + EVAL_BATCH]
            if self.vectorize:
                out = vmap(attacked, in_dims=(0, 0, None, None))(params, buffers, x, y)
            else:
                out = torch.stack(
                    [
                        attacked(
                            {k: v[m] for k, v in params.items()},
                            {k: v[m] for k, v in buffers.items()},
                            x,
                            y,
                        )
                        for m in range(len(self.runs))
                    ]
                )
            chunks.append(out.detach())
        return torch.cat(chunks, dim=1)
