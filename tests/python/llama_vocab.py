"""Writes the vocabulary GGUF of a Qwen3 checkpoint with llama.cpp's own converter.

Usage: llama_vocab.py CHECKPOINT_DIR OUT.gguf [--onto BASE.gguf]

Runs `convert_hf_to_gguf.py --vocab-only` from the llama-cpp-python sdist on PyPI (the
whole llama.cpp tree is under vendor/llama.cpp; the same source scripts/gpu/fetch-llama.sh
uses), downloaded once with pip into ~/.cache/orthrus (LLAMA_CPP_PYTHON picks the
version). The output is the metadata llama.cpp writes into every Qwen3 GGUF: the
hyperparameters, the tokenizer as `tokenizer.ggml.*` arrays, `tokenizer.chat_template`,
and no `tokenizer.huggingface.json`.

With `--onto`, OUT is a copy of BASE (a Qwen3 GGUF of the same checkpoint, such as our
`--split` base) whose `tokenizer.*` metadata is llama.cpp's instead: the tokenizer a
Qwen3 GGUF made by llama.cpp carries, on weights that run here without torch.

An Orthrus checkpoint (`OrthrusLM`) is presented to the converter as the plain Qwen3 it
extends, through a copy of its config and tokenizer files.

The converter imports torch at the top of every module, but its vocabulary export uses
none of it, and torch is not installed here (its wheels are gigabytes). A stand-in
module is put first on the import path: importing it and naming its attributes works,
while calling anything but `inference_mode` raises, so a conversion that did use torch
fails instead of writing something made up.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))
from gguf_scan import scan  # noqa: E402

VERSION = os.environ.get("LLAMA_CPP_PYTHON", "0.3.36")
# What the vocabulary export needs of the sdist's llama.cpp tree.
PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")

TORCH_STAND_IN = '''
class _StandIn(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stand_in(cls.__name__ + "." + name)

    def __call__(cls, *args, **kwargs):
        raise RuntimeError(cls.__name__ + " was called: the vocabulary export used torch")


_made = {}


def _stand_in(name):
    if name not in _made:
        _made[name] = _StandIn(name, (), {})
    return _made[name]


class inference_mode:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _stand_in("torch." + name)
'''


def llama_tree() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "orthrus"
    tree = cache / f"llama-cpp-python-{VERSION}"
    if (tree / "convert_hf_to_gguf.py").exists():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={VERSION}", "-d", tmp], check=True)
        prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
        part = Path(tmp) / "part"
        with tarfile.open(Path(tmp) / f"llama_cpp_python-{VERSION}.tar.gz") as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith(prefix) and m.name[len(prefix):].startswith(PARTS)]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(part, members=members, filter="data")
        (part / "torch-stand-in" / "torch").mkdir(parents=True)
        (part / "torch-stand-in" / "torch" / "__init__.py").write_text(TORCH_STAND_IN)
        try:
            part.rename(tree)
        except OSError:
            # Tests running side by side each fetch it; the first rename wins,
            # whole (a rename is atomic), and the others use its tree.
            if not (tree / "convert_hf_to_gguf.py").exists():
                raise
    return tree


def with_tokenizer_of(base: Path, vocab: Path, out: Path) -> None:
    """Writes `out`: `base` with the `tokenizer.*` keys of `vocab` in place of its own.

    The keys are copied as the bytes each file holds, not decoded and written again
    (GGUFReader takes ~12 s a file to decode the tokenizer's 300k strings); the tensor
    infos and data are base's, whose offsets count from the data section.
    """
    b, v = scan(base), scan(vocab)

    def entries(s, tokenizer: bool) -> list[bytes]:
        return [s.raw[start:end].tobytes() for name, start, end in s.keys
                if name.startswith("tokenizer.") == tokenizer]

    keys = entries(b, False) + entries(v, True)
    head = struct.pack("<4sIQQ", b"GGUF", 3, len(b.tensors), len(keys)) + b"".join(keys)
    head += b.raw[b.tensor_infos[0]:b.tensor_infos[1]].tobytes()
    with open(out, "wb") as f:
        f.write(head + bytes(-len(head) % b.alignment))
        f.write(b.raw[b.data_start:].tobytes())


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    onto = Path(sys.argv[4]) if len(sys.argv) == 5 and sys.argv[3] == "--onto" else None
    if len(sys.argv) != (5 if onto else 3):
        sys.exit(__doc__)
    tree = llama_tree()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "checkpoint"
        ckpt.mkdir()
        for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
            if (src / name).exists():
                shutil.copy(src / name, ckpt / name)
        cfg = json.loads((ckpt / "config.json").read_text())
        if cfg.get("model_type") == "orthrus":
            cfg.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3")
            cfg.pop("auto_map", None)
            (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(tree / "torch-stand-in"), str(tree / "gguf-py"), str(tree)]))
        vocab = Path(tmp) / "vocab.gguf" if onto else out
        run = subprocess.run([sys.executable, str(tree / "convert_hf_to_gguf.py"), str(ckpt), "--vocab-only",
                              "--outfile", str(vocab)], env=env, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"convert_hf_to_gguf.py failed:\n{run.stderr[-4000:]}")
        if onto:
            with_tokenizer_of(onto, vocab, out)


if __name__ == "__main__":
    main()
