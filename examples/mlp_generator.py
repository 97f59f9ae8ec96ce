"""Generator of examples/space_generator.yaml: ReLU MLPs of depth 1 to 4."""


def depths():
    for depth in range(1, 5):
        layers = []
        for _ in range(depth):
            layers += [{"type": "dense", "features": 64}, {"type": "activation", "fn": "relu"}]
        yield {
            "name": f"relu-mlp-depth{depth}",
            "input": {"shape": [32]},
            "init": {"weight_std": 1.41},
            "layers": layers + [{"type": "dense", "features": 10}],
        }
