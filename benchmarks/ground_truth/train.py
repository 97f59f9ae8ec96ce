"""Training: one compiled program per (structure, data set), vmapped over the structure's
scalar settings and the learning rates, ``lax.scan`` over the steps.

Recipe (fixed for every architecture):
  * optimizer: Adam (optax defaults b1 = 0.9, b2 = 0.999, eps = 1e-8), constant learning rate,
    no weight decay, no gradient clipping; two learning rates, ``LEARNING_RATES``;
  * ``STEPS`` steps of minibatches of ``BATCH`` training samples, drawn as successive epochs of a
    seeded permutation (the same order for every architecture);
  * softmax cross-entropy on the 10 logits of the final dense layer;
  * the initialization is zsad's own (``Network.init`` with the architecture's scalars), seed
    ``INIT_SEED`` for every architecture and learning rate;
  * batch norm trains in training mode: every step normalizes with the minibatch's own statistics,
    and gradients flow through them (``Network.calibrate`` followed by ``Network.apply`` inside the
    loss). For evaluation the statistics are recomputed once, with the final weights, on the first
    ``CALIBRATION`` training samples (population statistics), and then held fixed;
  * errors: misclassification rate on the whole training set and on the test set; a sample whose
    logits are not finite counts as misclassified (a diverged run has error 1.0).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zsad._types import Network

LEARNING_RATES = (1e-3, 1e-2)
STEPS = 400
BATCH = 64
INIT_SEED = 7
ORDER_SEED = 11
CALIBRATION = 1024
#: Data sets are zero-padded to these sizes (with masks), so one compiled program serves both.
PAD_TRAIN = 4000
PAD_TEST = 1000


def batch_indices(n_train: int, steps: int = STEPS, batch: int = BATCH, seed: int = ORDER_SEED) -> np.ndarray:
    """[steps, batch] training indices: successive epochs of seeded permutations."""
    rng = np.random.default_rng(seed)
    need = steps * batch
    order = np.concatenate([rng.permutation(n_train) for _ in range(need // n_train + 1)])
    return order[:need].reshape(steps, batch).astype(np.int32)


def _cross_entropy(logits, labels):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def _error(logits, labels, mask):
    ok = (jnp.argmax(logits, -1) == labels) & jnp.all(jnp.isfinite(logits), -1)
    return jnp.sum(jnp.where(mask, ~ok, False)) / jnp.sum(mask)


def _masked_ce(logits, labels, mask):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.sum(mask)


#: The worker processes compile with XLA's backend optimization off (the zero-shot programs run
#: once); the training program runs STEPS steps, so it asks for the default optimization back.
TRAIN_COMPILER_OPTIONS = {"xla_backend_optimization_level": 3, "xla_llvm_disable_expensive_passes": False}


@functools.partial(jax.jit, static_argnames=("init", "apply", "calibrate"), compiler_options=TRAIN_COMPILER_OPTIONS)
def _train_all(scalars, lrs, keys, x_train, y_train, m_train, x_test, y_test, m_test, idx, *, init, apply,
               calibrate):
    """Trains every (settings, learning rate) pair; leading axis R on scalars, lrs, keys."""

    def one(s, lr, key):
        variables = init(key, s)
        stats = {k: v for k, v in variables.items() if k != "params"}
        tx = optax.adam(lr)

        def forward(params, x):
            v = calibrate({**stats, "params": params}, s, x)  # identity without batch norm
            return apply(v, s, x)[0]

        def loss_fn(params, x, y):
            return _cross_entropy(forward(params, x), y)

        def step(carry, batch_idx):
            params, opt_state = carry
            x, y = x_train[batch_idx], y_train[batch_idx]
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        params = variables["params"]
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), idx)
        final = calibrate({**stats, "params": params}, s, x_train[:CALIBRATION])  # population statistics
        train_logits = apply(final, s, x_train)[0]
        test_logits = apply(final, s, x_test)[0]
        quarter = losses.shape[0] // 4
        return {
            "train_error": _error(train_logits, y_train, m_train),
            "test_error": _error(test_logits, y_test, m_test),
            "train_loss": _masked_ce(train_logits, y_train, m_train),
            "test_loss": _masked_ce(test_logits, y_test, m_test),
            "first_loss": losses[0],
            "loss_q1": jnp.mean(losses[quarter - 10:quarter]),
            "loss_last": jnp.mean(losses[-10:]),
        }

    return jax.vmap(one)(scalars, lrs, keys)


def _pad(x, y, n):
    k = len(y)
    if k > n:
        raise ValueError(f"data set of {k} samples exceeds the padded size {n}")
    xp = np.zeros((n, *x.shape[1:]), np.float32)
    xp[:k] = x
    yp = np.zeros((n,), np.int32)
    yp[:k] = y
    return jnp.asarray(xp), jnp.asarray(yp), jnp.asarray(np.arange(n) < k)


def train_group(net: Network, scalars_list: list, x_train, y_train, x_test, y_test,
                learning_rates=LEARNING_RATES, steps: int = STEPS, batch: int = BATCH) -> list[list[dict]]:
    """Trains every settings × learning rate; returns ``out[settings][lr] = {metric: float}``."""
    g, nl = len(scalars_list), len(learning_rates)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *scalars_list)
    scalars = jax.tree.map(lambda a: jnp.repeat(a, nl, axis=0), stacked)
    lrs = jnp.tile(jnp.asarray(learning_rates, jnp.float32), g)
    keys = jnp.stack([jax.random.key(INIT_SEED)] * (g * nl))
    idx = jnp.asarray(batch_indices(len(y_train), steps, batch))
    xtr, ytr, mtr = _pad(x_train, y_train, PAD_TRAIN)
    xte, yte, mte = _pad(x_test, y_test, PAD_TEST)
    res = jax.device_get(_train_all(scalars, lrs, keys, xtr, ytr, mtr, xte, yte, mte, idx,
                                    init=net.init, apply=net.apply, calibrate=net.calibrate))
    out = []
    for i in range(g):
        out.append([{k: float(np.asarray(v)[i * nl + j]) for k, v in res.items()} for j in range(nl)])
    return out
