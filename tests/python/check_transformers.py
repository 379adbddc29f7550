"""Checks models/reference.py's AR view against transformers' Qwen3ForCausalLM.

Needs torch and transformers (the GPU machine has them; CI does not, so this is
a script, not a pytest case). For each fixture, builds Qwen3ForCausalLM from
its config (model_type set to qwen3), loads the checkpoint's AR tensors, runs
the same token ids in float64 and prints the largest relative error of the
logits against the reference. Exits 1 above 1e-5: transformers computes
RMSNorm and the RoPE frequencies in float32 even in a float64 model, so
agreement stops near 1e-7 (measured 1.9e-7 and 4.2e-7 on the two fixtures
with transformers 5.17).

Usage: check_transformers.py FIXTURE_DIR [FIXTURE_DIR ...]
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))
import reference  # noqa: E402

IDS = [9707, 11, 1879, 0, 151644, 77, 30, 3, 1, 2]


def main() -> int:
    worst = 0.0
    for d in map(Path, sys.argv[1:]):
        cfg = json.loads((d / "config.json").read_text())
        cfg = {k: v for k, v in cfg.items() if k not in ("auto_map", "block_size", "mask_token_id", "architectures")}
        cfg["model_type"] = "qwen3"
        if "rope_parameters" not in cfg and "rope_theta" in cfg:
            cfg["rope_parameters"] = {"rope_theta": cfg["rope_theta"], "rope_type": "default"}
        config = Qwen3Config(**cfg)
        config._attn_implementation = "eager"
        model = Qwen3ForCausalLM(config).to(torch.float64).eval()
        weights = reference.load_weights(d)
        state = {k: torch.from_numpy(v.astype(np.float64)) for k, v in weights.items() if "_diff" not in k}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
        assert not missing and not unexpected, (missing, unexpected)
        if config.tie_word_embeddings:
            model.tie_weights()
        with torch.no_grad():
            got = model(torch.tensor([IDS])).logits[0].numpy()
        want = reference.Model.load(d).ar_forward(IDS)
        err = float(np.max(np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)))
        print(f"{d.name}: transformers {__import__('transformers').__version__} vs reference.py, "
              f"{len(IDS)} positions, max relative error {err:.3e}")
        worst = max(worst, err)
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
