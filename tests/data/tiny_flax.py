import flax.linen as nn


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(5)(nn.Dense(7)(x))


def make():
    return Linear()


def broken():
    raise RuntimeError("factory exploded")
