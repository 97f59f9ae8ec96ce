"""What each entry point imports: parsing files and the command's help load no jax or flax."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import zsad

ROOT = Path(__file__).resolve().parents[1]

# Run first in a fresh interpreter: any import of jax, jaxlib or flax raises ImportError.
BLOCK = textwrap.dedent("""
    import sys

    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("jax", "jaxlib", "flax"):
                raise ImportError(f"{name} is blocked")
            return None

    sys.meta_path.insert(0, Blocked())
""")


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_blocker_blocks():
    proc = run_python("import jax")
    assert proc.returncode != 0 and "jax is blocked" in proc.stderr


def test_parsing_architecture_files_loads_no_jax():
    proc = run_python("""
        from zsad.arch.shapes import infer_shapes
        from zsad.arch.spec import load_architecture, named_layers
        for name in ("tanh_mlp", "small_cnn", "resnet", "canonical"):
            arch = load_architecture(f"examples/{name}.yaml")
            print(name, len(named_layers(arch.layers)), infer_shapes(arch)[-1])
        print(load_architecture("examples/flax_mlp.yaml").module)  # a flax entry point: named, not imported
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax")))
    """)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("tanh_mlp 13 (10,)")
    assert lines[-2] == "flax_model:make" and lines[-1] == "[]"


def test_parsing_space_files_and_writing_architectures_loads_no_jax(tmp_path):
    proc = run_python("""
        from zsad.arch.files import save_architecture
        from zsad.arch.spec import load_architecture
        from zsad.space import load_space
        for name in ("space_list", "space_mlp"):
            space = load_space(f"examples/{name}.yaml")
            print(name, space.form, len([item.id for item in space]))
        save_architecture(load_architecture("examples/tanh_mlp.yaml"), sys.argv[1])
        print(load_architecture(sys.argv[1]).name)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax")))
    """, str(tmp_path / "copy.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["space_list list 3", "space_mlp product 9", "tanh-mlp", "[]"]


BUILTIN_SPACE_FILES = {
    "nas-bench-201": "space: nas-bench-201\narchs: ['|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|"
                     "nor_conv_1x1~2|']\n",
    "nas-bench-101": "space: nas-bench-101\narchs: {sample: 2, seed: 0}\n",
    "darts": "space: darts\narchs: {sample: 2, seed: 0}\n",
    "transnas-micro": "space: transnas-micro\ntask: class_scene\narchs: {sample: 2, seed: 0}\n",
    "transnas-macro": "space: transnas-macro\ntask: segmentsemantic\narchs: {sample: 2, seed: 0}\n",
}


def test_parsing_space_and_cell_files_of_every_built_in_space_loads_no_jax(tmp_path):
    from zsad.spaces import NAMES, SPACES

    assert set(BUILTIN_SPACE_FILES) == set(NAMES) and set(SPACES) == set(NAMES) - {"nas-bench-201"}
    paths = []
    for name, text in BUILTIN_SPACE_FILES.items():
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(text)
    proc = run_python("""
        from zsad.arch.spec import read_yaml
        from zsad.cell_file import parse_cell
        from zsad.space import load_space
        for path in sys.argv[1:]:
            space = load_space(path)
            items = list(space)
            node = {k: v for k, v in read_yaml(path).items() if k != "archs"}
            cell = parse_cell({**node, "arch": items[0].id}, file=path)  # a file naming one of them
            print(space.form, len(items), all(item.error is None for item in items), cell.notation == items[0].id)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax")))
    """, *map(str, paths))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "[]"
    assert lines[:-1] == [f"{name} {1 if name == 'nas-bench-201' else 2} True True" for name in BUILTIN_SPACE_FILES]


def test_import_zsad_loads_no_jax():
    proc = run_python("""
        import zsad
        assert zsad.__version__
        assert "build" in dir(zsad) and "score_architecture" in zsad.__all__
        print(zsad.SpecError.__name__)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "SpecError"


@pytest.mark.parametrize("args", [("--help",), ("score", "--help"), ("rank", "--help"), ("normalize", "--help"),
                                  ("phase", "--help"), ("select", "--help")])
def test_command_help_loads_no_jax(args):
    proc = run_python("""
        from zsad_cli.main import main
        sys.argv = ["zsad", *sys.argv[1:]]
        try:
            main()
        finally:
            print("jax:", sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "flax")))
            print("numpy:", "numpy" in sys.modules)
    """, *args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: zsad" in proc.stdout
    assert "jax: []" in proc.stdout.splitlines()
    if args[0] != "rank":  # rank's help states the score's formula, made by zsad.ranking (numpy)
        assert proc.stdout.splitlines()[-1] == "numpy: False"


def test_public_names_resolve_to_their_definitions():
    import zsad.nlc  # noqa: F401  (the submodule's import must not hide the function of the same name)
    from zsad.arch.build import build
    from zsad.nlc import nlc
    from zsad.score import score_architecture

    assert zsad.nlc is nlc and zsad.build is build and zsad.score_architecture is score_architecture
    assert set(zsad.__all__) <= set(dir(zsad))
    for name in zsad.__all__:
        assert getattr(zsad, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        zsad.nope  # noqa: B018


def test_the_submodule_does_not_replace_the_function_in_a_fresh_process():
    proc = subprocess.run([sys.executable, "-c", "import zsad\nfrom zsad.nlc import nlc_profile\n"
                           "print(callable(zsad.nlc), type(zsad.nlc).__name__)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "function"]


def test_activation_names_match_their_implementations():
    from zsad.activations import ACTIVATIONS
    from zsad.arch.activation_names import ACTIVATION_NAMES, ACTIVATION_PARAMS, HOMOGENEOUS, KINKED

    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES
    assert set(ACTIVATION_PARAMS) | HOMOGENEOUS | KINKED <= set(ACTIVATION_NAMES)
