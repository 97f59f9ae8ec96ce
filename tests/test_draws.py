"""Blocked random draws (zsad.draws) and the initialization built from them (Network.init_with)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsad import draws
from zsad.arch.build import build

from helpers import arch_from, mlp

REFERENCE = {
    "normal": lambda key, n, dtype: jax.random.normal(key, (n,), dtype),
    "truncated_normal": lambda key, n, dtype: jax.random.truncated_normal(key, -2.0, 2.0, (n,), dtype),
    "uniform": lambda key, n, dtype: jax.random.uniform(key, (n,), dtype, -1.0, 1.0),
}


@pytest.mark.parametrize("dist", draws.DISTRIBUTIONS)
@pytest.mark.parametrize("size", [1, 1000, draws.BLOCK, draws.BLOCK + 3, 2 * draws.BLOCK + 777])
def test_blocks_reproduce_the_whole_array_draw_bit_for_bit(dist, size):
    assert draws.available()
    keys = jax.random.split(jax.random.key(7), 3)
    got = draws.draw(dist, keys, size, jnp.float32)
    want = np.stack([np.asarray(jax.jit(REFERENCE[dist], static_argnums=(1, 2))(k, size, jnp.float32))
                     for k in keys])
    assert got.shape == (3, size) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dist", draws.DISTRIBUTIONS)
def test_blocks_reproduce_float64_draws(dist):
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(1), 2)
        got = draws.draw(dist, keys, 5000, jnp.float64)
        want = np.stack([np.asarray(REFERENCE[dist](k, 5000, jnp.float64)) for k in keys])
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)


def test_a_block_inside_a_program_is_a_slice_of_the_whole_draw():
    key = jax.random.key(3)
    start = jnp.uint32(12345)
    got = jax.jit(lambda k, s: draws.block("normal", k, s, 100, jnp.float32))(key, start)
    np.testing.assert_array_equal(got, jax.random.normal(key, (20000,))[12345:12445])


@pytest.mark.parametrize("dist", draws.DISTRIBUTIONS)
def test_elements_at_any_indices_are_those_of_the_whole_draw(dist):
    key = jax.random.key(5)
    index = np.random.default_rng(0).integers(0, 3000, (7, 11))
    got = jax.jit(lambda k, i: draws.at(dist, k, i, jnp.float32))(key, jnp.asarray(index, jnp.int32))
    np.testing.assert_array_equal(got, np.asarray(REFERENCE[dist](key, 3000, jnp.float32))[index])


def test_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match="unknown distribution 'cauchy'"):
        draws.block("cauchy", jax.random.key(0), jnp.uint32(0), 4, jnp.float32)


@pytest.mark.parametrize("dist", ["normal", "truncated_normal", "uniform", "orthogonal"])
def test_init_with_the_drawn_pieces_equals_init(dist):
    """init(key) == init_with(pieces of the blocked draws, key): the shared-draw path of zsad rank
    holds exactly the weights that zsad score draws for the same key."""
    net = build(arch_from(mlp("tanh", depth=2, width=24, d_in=8, weight_std=1.3, bias_std=0.2, dist=dist)))
    key = jax.random.key(11)
    flats = {}
    for name, fold, dtype, shapes in net.draws:
        sizes = [int(np.prod(s)) for s in shapes]
        flat = draws.draw(name, key[None], sum(sizes), dtype, fold=fold)[0]  # folded in the block program
        np.testing.assert_array_equal(flat, draws.draw(name, jax.random.fold_in(key, fold)[None], sum(sizes), dtype)[0])
        ends = np.cumsum(sizes)
        flats[name] = [jnp.asarray(flat[e - n:e].reshape(s)) for n, e, s in zip(sizes, ends, shapes)]
    assert "normal" in flats  # the biases
    assert (dist in flats) == (dist != "orthogonal")  # orthogonal kernels are drawn inside init_with
    want = jax.jit(net.init)(key, net.scalars)
    got = jax.jit(net.init_with)(flats, key, net.scalars)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def _bn_cnn():
    return arch_from({
        "name": "bn-cnn", "input": {"shape": [6, 6, 3]}, "init": {"weight_std": 1.41, "bias_std": 0.1},
        "layers": [{"type": "conv", "features": 4, "kernel": 3}, {"type": "batchnorm"},
                   {"type": "activation", "fn": "relu"}, {"type": "flatten"}, {"type": "dense", "features": 3}]})


def _space_program():
    """A built-in space's shared program (operations chosen by switches on traced scalars), kept small."""
    from zsad.spaces.nasbench101 import NB101Space
    from zsad.spaces.nasbench101_cell import parse_cell

    space = NB101Space(width=4, depth=1, input_shape=(8, 8, 3))
    cell = parse_cell({"matrix": [[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]],
                       "ops": ["input", "conv3x3-bn-relu", "conv1x1-bn-relu", "output"]})
    return space.program(space.group(cell)), space.scalars(cell)


@pytest.mark.parametrize("network", ["cnn", "space"])
def test_apply_calibrating_is_calibrate_then_apply_with_frozen_statistics(network):
    """One pass (zsad rank's NLC): the outputs, the statistics and the input-Jacobian of calibrate + apply."""
    if network == "cnn":
        net = build(_bn_cnn())
        scalars, n = net.scalars, 16
    else:
        net, scalars = _space_program()
        n = 8
    x = jax.random.normal(jax.random.key(0), (n, *net.input_shape))
    t = jax.random.normal(jax.random.key(1), x.shape)
    v0 = jax.jit(net.init)(jax.random.key(2), scalars)

    @jax.jit  # one program each, not one per operation (a space's switches compile their branches eagerly)
    def both_ways(v0, scalars, x, t):
        v_cal = net.calibrate(v0, scalars, x)
        (y, _), v = net.apply_calibrating(v0, scalars, x)
        _, want = jax.jvp(lambda z: net.apply(v_cal, scalars, z)[0], (x,), (t,))
        _, got = jax.jvp(lambda z: net.apply_calibrating(v0, scalars, z)[0][0], (x,), (t,))
        # training mode (calibrate=True) differentiates through the statistics: a different Jacobian
        _, through = jax.jvp(lambda z: net.apply(net.calibrate(v0, scalars, z), scalars, z)[0], (x,), (t,))
        return v_cal, v, y, net.apply(v_cal, scalars, x)[0], want, got, through

    v_cal, v, y, y_cal, want, got, through = both_ways(v0, scalars, x, t)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), v, v_cal)
    np.testing.assert_allclose(y, y_cal, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(through, want, rtol=1e-3, atol=1e-4)
