"""Frozen-feature k-shot probes: how linearly readable a task is from a pretrained model's states.

    tokens = np.concatenate([task.train.tokens, task.eval.tokens])   # every labelled example
    labels = np.concatenate([task.train.labels, task.eval.labels])
    pool, test = split_for_probe(labels, pool_per_class=128, seed=0)
    x = features(model, params, cfg.family, tokens)                   # [N, d_model] float32
    correct = probe_accuracy(x, labels, pool, test)                   # {16: [10, T], 64: [10, T]}
    stats.bootstrap_ci(correct[16]), stats.paired_bootstrap(correct_a[16], correct_b[16])

Why a probe instead of (or beside) fine-tuning: fine-tuning one model on a few thousand examples and
testing on ~200 cannot tell the objectives apart (the interval is wider than the differences). A
probe trains nothing in the model, so it is cheap enough to repeat over many training subsets, and
re-splitting the labelled data so that only a small pool trains and the rest (>= 2,000 examples on
`stdlib_modules`) tests narrows the interval on the test side.

Features (`features`): the final hidden states (after the final norm, before the output head),
mean-pooled over real tokens, of the stream that reads the whole text: the encoder's for
encoder-only and encoder-decoder models (the encoder-decoder's decoder is never run), the
decoder's for decoder-only models, which read the text shifted right with pad as BOS exactly as in
CLM pretraining. Mean pooling is used for every family so that the pooling is not what differs.

Protocol (`probe_accuracy`): the examples are split once into a training pool (`pool_per_class`
per class) and a test set (all the rest); for each k, `num_subsets` subsets of exactly k examples
per class are drawn from the pool, a logistic regression is fitted on each, and every test example
is scored by every subset's classifier. The split and the subsets depend only on the labels and
the seed, so every model is scored on the same subsets and test examples: the [subsets, test]
correctness matrices of two models are paired (`stats.paired_bootstrap`).

Classifier (`logistic_regression`): multinomial logistic regression on features standardised with
the training subset's mean and standard deviation, minimising
    sum_i cross_entropy_i + (l2 / 2) ||W||^2        (bias not penalised)
i.e. scikit-learn's LogisticRegression with C = 1 / l2, by L-BFGS (optax) to a gradient-norm
tolerance. l2 = 1.0 (scikit-learn's default C = 1) is fixed a priori, never tuned on the test set:
standardising the features keeps one value sensible across models of any width and scale.

Leakage: on `stdlib_modules` the pretraining corpus holds the (unlabelled) texts of the task's
train split, so after re-splitting some test texts were seen in pretraining. Every pretrained model
saw the same corpus, so the comparison between objectives stays fair; the absolute accuracies of
pretrained models against the random-init baseline carry that caveat.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlm.finetune import classifier_batch
from jaxlm.finetune import pool as pool_hidden
from jaxlm.models.transformer import decoder_valid, encoder_valid

KS = (16, 64)
NUM_SUBSETS = 10
POOL_PER_CLASS = 128
L2 = 1.0
FAMILIES = ("decoder", "encoder", "encoder_decoder")


# --------------------------------------------------------------------------------------------------
# Features


def features(model: Any, params: Any, family: str, tokens: np.ndarray,
             batch_size: int = 64) -> np.ndarray:
    """[N, d_model] float32: mean-pooled final hidden states of EOS-terminated, 0-padded rows.

    `model` is a jaxlm family module (or anything with the same `apply`); `params` its unboxed
    parameters. Rows are run in batches of `batch_size` (the last one padded, so one compile).
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown model family {family!r}: expected one of {FAMILIES}.")
    tokens = np.asarray(tokens, np.int32)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [N, length]; got shape {tokens.shape}.")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1.")

    @jax.jit
    def pooled(params: Any, batch: dict[str, jax.Array]) -> jax.Array:
        if family == "encoder_decoder":
            hidden = model.apply({"params": params}, batch, method="encode")
            valid = encoder_valid(batch)
        elif family == "encoder":
            hidden = model.apply({"params": params}, batch, return_hidden=True)
            valid = encoder_valid(batch)
        else:
            hidden = model.apply({"params": params}, batch, return_hidden=True)
            valid = decoder_valid(batch)
        return pool_hidden(hidden, valid, "mean")

    stream = "decoder" if family == "decoder" else "encoder"  # the encoder-decoder's encoder
    out = []
    for start in range(0, len(tokens), batch_size):
        rows = tokens[start:start + batch_size]
        padded = np.zeros((batch_size, tokens.shape[1]), np.int32)  # all-pad rows pool to 0
        padded[:len(rows)] = rows
        x = pooled(params, classifier_batch(stream, padded))
        out.append(np.asarray(x, np.float32)[:len(rows)])
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------------
# Splits


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D int array; got {labels.dtype} "
                         f"{labels.shape}.")
    if labels.min() < 0:
        raise ValueError("labels must be >= 0.")
    return labels


def split_for_probe(labels: np.ndarray, pool_per_class: int = POOL_PER_CLASS,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) sorted index arrays: `pool_per_class` random examples of each class form the
    training pool, every other example is a test example. Disjoint; deterministic for a seed.
    A class needs more than `pool_per_class` examples, so that it is also in the test set."""
    labels = _check_labels(labels)
    rng = np.random.default_rng([seed, 0x9B0BE])
    pool_idx = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) <= pool_per_class:
            raise ValueError(f"class {c} has {len(members)} examples; pool_per_class="
                             f"{pool_per_class} would leave none of it to test.")
        pool_idx.append(rng.choice(members, pool_per_class, replace=False))
    pool_set = np.sort(np.concatenate(pool_idx))
    test = np.setdiff1d(np.arange(len(labels)), pool_set)
    return pool_set, test


def kshot_subsets(labels: np.ndarray, k: int, num_subsets: int = NUM_SUBSETS, seed: int = 0,
                  test_indices: np.ndarray | Sequence[int] = ()) -> np.ndarray:
    """[num_subsets, k * classes] example indices: each row holds exactly k examples of every
    class present in `labels`, drawn without replacement from the examples not in
    `test_indices`, independently per row. Deterministic for (labels, k, seed, test_indices)."""
    labels = _check_labels(labels)
    if k < 1 or num_subsets < 1:
        raise ValueError(f"k={k} and num_subsets={num_subsets} must be >= 1.")
    available = np.ones(len(labels), bool)
    available[np.asarray(test_indices, np.int64)] = False
    rng = np.random.default_rng([seed, k, 0x5AB5E7])
    per_class = []
    for c in np.unique(labels):
        members = np.flatnonzero(available & (labels == c))
        if len(members) < k:
            raise ValueError(f"class {c} has {len(members)} non-test examples; k={k} needs "
                             f"at least {k}.")
        per_class.append(np.stack([rng.choice(members, k, replace=False)
                                   for _ in range(num_subsets)]))
    return np.sort(np.concatenate(per_class, axis=1), axis=1)


# --------------------------------------------------------------------------------------------------
# Logistic regression


@dataclasses.dataclass(frozen=True)
class LogisticRegression:
    """A fitted multinomial logistic regression on standardised features."""

    mean: np.ndarray  # [D] train-set feature mean
    scale: np.ndarray  # [D] train-set feature std (1 where constant)
    weights: np.ndarray  # [D, C]
    bias: np.ndarray  # [C]
    iterations: int
    grad_norm: float  # of the objective divided by the number of examples, at the returned point
    converged: bool

    def logits(self, x: np.ndarray) -> np.ndarray:
        """[N, C] class scores of raw (unstandardised) features [N, D]."""
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        return z @ self.weights + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        """[N] predicted class ids."""
        return np.argmax(self.logits(x), axis=1)


def logistic_objective(w: jax.Array, b: jax.Array, z: jax.Array, y: jax.Array,
                       l2: float) -> jax.Array:
    """(sum_i cross_entropy_i + l2/2 ||w||^2) / n for standardised features z [n, D]."""
    logits = z @ w + b
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
    return (ce + 0.5 * l2 * jnp.sum(w * w)) / z.shape[0]


def _fit(z: jax.Array, y: jax.Array, num_classes: int, l2: float, tol: float,
         max_iter: int) -> tuple[Any, jax.Array, jax.Array]:
    solver = optax.lbfgs()
    params = (jnp.zeros((z.shape[1], num_classes), z.dtype), jnp.zeros((num_classes,), z.dtype))

    def loss(p):
        return logistic_objective(p[0], p[1], z, y, l2)

    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = solver.update(grad, state, p, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(p, updates), state

    def grad_norm(state):  # the line search stores the gradient at the point it accepted
        return optax.tree_utils.tree_l2_norm(optax.tree_utils.tree_get(state, "grad"))

    def keep_going(carry):
        count = optax.tree_utils.tree_get(carry[1], "count")
        return (count == 0) | ((count < max_iter) & (grad_norm(carry[1]) > tol))

    p, state = jax.lax.while_loop(keep_going, step, (params, solver.init(params)))
    return p, optax.tree_utils.tree_get(state, "count"), grad_norm(state)


_fit_jit = jax.jit(_fit, static_argnames=("num_classes", "max_iter"))


def logistic_regression(x_train: np.ndarray, y_train: np.ndarray, l2: float = L2, *,
                        num_classes: int | None = None, tol: float = 1e-5,
                        max_iter: int = 1000) -> LogisticRegression:
    """Fits the module docstring's regularised multinomial logistic regression by L-BFGS until
    the gradient norm of the per-example objective is below `tol` (or `max_iter` steps)."""
    x = np.asarray(x_train, np.float64)
    y = np.asarray(y_train)
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"x_train [N, D] and y_train [N] expected; got {x.shape}, {y.shape}.")
    if l2 <= 0:
        raise ValueError(f"l2={l2} must be > 0 (an unpenalised fit diverges on separable data).")
    num_classes = int(num_classes or y.max() + 1)
    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale > 1e-12 * max(1.0, float(np.abs(x).max())), scale, 1.0)
    z = jnp.asarray((x - mean) / scale, jnp.float32)
    (w, b), count, grad_norm = _fit_jit(z, jnp.asarray(y, jnp.int32), num_classes=num_classes,
                                        l2=float(l2), tol=float(tol), max_iter=int(max_iter))
    grad_norm = float(grad_norm)
    if grad_norm > tol:  # rare (float32 round-off near the optimum); the fit is still usable
        warnings.warn(f"logistic_regression stopped after {int(count)} L-BFGS steps with "
                      f"gradient norm {grad_norm:.2e} > tol={tol:g}.", RuntimeWarning,
                      stacklevel=2)
    return LogisticRegression(mean, scale, np.asarray(w, np.float64), np.asarray(b, np.float64),
                              int(count), grad_norm, grad_norm <= tol)


# --------------------------------------------------------------------------------------------------
# The probe


def probe_accuracy(x: np.ndarray, labels: np.ndarray, train_pool: np.ndarray,
                   test: np.ndarray, *, ks: Sequence[int] = KS, num_subsets: int = NUM_SUBSETS,
                   seed: int = 0, l2: float = L2) -> dict[int, np.ndarray]:
    """{k: [num_subsets, len(test)] float64 correctness (1 / 0)} of k-shot probes on features
    `x` [N, D]: row s is the classifier fitted on subset s (k per class from `train_pool`),
    column j test example `test[j]`. Same (labels, train_pool, test, seed) -> same subsets for
    every model."""
    x = np.asarray(x)
    labels = _check_labels(labels)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"x must be [N, D] with N = len(labels) = {len(labels)}; got {x.shape}.")
    train_pool, test = np.asarray(train_pool, np.int64), np.asarray(test, np.int64)
    if np.intersect1d(train_pool, test).size:
        raise ValueError("train_pool and test share examples.")
    num_classes = int(labels.max() + 1)
    not_pool = np.setdiff1d(np.arange(len(labels)), train_pool)  # everything outside the pool
    out = {}
    for k in ks:
        subsets = kshot_subsets(labels, k, num_subsets, seed, test_indices=not_pool)
        correct = np.empty((num_subsets, len(test)))
        for s, rows in enumerate(subsets):
            clf = logistic_regression(x[rows], labels[rows], l2, num_classes=num_classes)
            correct[s] = clf.predict(x[test]) == labels[test]
        out[int(k)] = correct
    return out
