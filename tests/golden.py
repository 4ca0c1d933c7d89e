"""The golden regression file: what the float64 path computes for a fixed tiny Griffin, seed and batch.

    python tests/golden.py          # rewrite tests/data/golden_griffin_tiny.npz (only after a deliberate change)

It holds the inputs, the logits, the loss, a few gradients and the losses of five plain SGD steps (no
optimiser state), in the llm.c spirit: a regression shows even where the oracle (torch, recurrentgemma) is not
installed. The weights are tests/strategies.py's tiny_model (every leaf perturbed away from init, so biases,
norm scales, conv and a_param all carry weight). Where the oracle is installed, tests/test_golden.py checks the
stored numbers against recurrentgemma as well, so the file records verified values, not just old ones.
"""

from pathlib import Path

import numpy as np
from strategies import tiny_model

from minigriffin.convert import to_torch_state_dict
from minigriffin.head import cross_entropy_backward, cross_entropy_forward
from minigriffin.model import model_backward, model_forward
from minigriffin.tree import tree_map

PATH = Path(__file__).parent / "data" / "golden_griffin_tiny.npz"
CASE = dict(preset="griffin-tiny", logits_soft_cap=30.0, embeddings_scale_by_sqrt_dim=True)
SEED = 20240229
SEGMENT_POS = np.array([list(range(12)), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]])   # packed documents, W = 4 < T
GRADS_KEPT = ("blocks.0.recurrent_block.rg_lru.a_param", "blocks.0.recurrent_block.conv_1d.w",
              "blocks.0.recurrent_block.conv_1d.b", "blocks.0.recurrent_block.rg_lru.a_gate.b",
              "blocks.2.attention_block.proj_q.weight", "blocks.1.mlp_block.ffw_down.bias",
              "blocks.1.mlp_block.ffw_up.b", "final_norm.scale")
SGD_STEPS, SGD_LR = 5, 0.5


def setup():
    """(cfg, params, tokens, targets, segment_pos) of the golden case."""
    cfg, params, rng = tiny_model(CASE, "float64", SEED)
    tokens = rng.integers(0, cfg.vocab_size, SEGMENT_POS.shape)
    targets = rng.integers(0, cfg.vocab_size, SEGMENT_POS.shape)
    return cfg, params, tokens, targets, SEGMENT_POS


def compute():
    """Everything the golden file stores, recomputed with the current code."""
    cfg, params, tokens, targets, segment_pos = setup()

    def loss_and_grads(params):
        logits, cache = model_forward(params, tokens, segment_pos, cfg)
        loss, ce_cache = cross_entropy_forward(logits, targets)
        return loss, logits, model_backward(cross_entropy_backward(1.0, ce_cache), cache)

    loss, logits, grads = loss_and_grads(params)
    flat_grads = to_torch_state_dict(grads)
    sgd_losses = []
    for _ in range(SGD_STEPS):
        step_loss, _, step_grads = loss_and_grads(params)
        sgd_losses.append(step_loss)
        params = tree_map(lambda p, g: p - SGD_LR * g, params, step_grads)
    out = {"tokens": tokens, "targets": targets, "segment_pos": segment_pos, "loss": np.array(loss),
           "logits": logits, "sgd_losses": np.array(sgd_losses)}
    out.update({f"grad:{name}": flat_grads[name] for name in GRADS_KEPT})
    return out


if __name__ == "__main__":
    PATH.parent.mkdir(exist_ok=True)
    with open(PATH, "wb") as f:
        np.savez_compressed(f, **compute())
    print(f"wrote {PATH} ({PATH.stat().st_size} bytes)")
