"""The assembled model: configuration, initialisation, parameter counts, conversion to and from recurrentgemma's
formats, the end-to-end gradient and input validation. (The committed golden file: tests/test_golden.py.)"""

import dataclasses

import numpy as np
import pytest
from strategies import tiny_model

from minigriffin.config import PRESETS, GriffinConfig, config_from_dict, config_to_dict, make_config
from minigriffin.convert import (config_from_params, from_flax_params, from_torch_state_dict, to_flax_params,
                                 to_torch_state_dict)
from minigriffin.gradcheck import assert_grads_close
from minigriffin.head import cross_entropy_backward, cross_entropy_forward, embedding_scale, round_to_bfloat16
from minigriffin.model import model_backward, model_forward
from minigriffin.params import count_params, init_params
from minigriffin.tree import num_params, tree_leaves

SP = np.array([list(range(10)), [0, 1, 2, 3, 0, 1, 2, 3, 4, 0]])   # packed documents, T = 10 > W = 4


# ---------------------------------------------------------------------------------------------- config
def test_presets_exist_for_every_family_and_size():
    for family in ("hawk", "griffin", "mqa"):
        for size in ("tiny", "small", "100m", "200m", "400m", "1b", "3b", "7b", "14b"):
            assert f"{family}-{size}" in PRESETS
    assert set(PRESETS["hawk-small"].block_types) == {"recurrent"}
    assert set(PRESETS["mqa-small"].block_types) == {"attention"}
    assert PRESETS["griffin-tiny"].block_types == ("recurrent", "recurrent", "attention")
    assert PRESETS["griffin-1b"].block_types[:6] == ("recurrent", "recurrent", "attention") * 2


def test_unknown_keys_and_wrong_types_are_rejected():
    with pytest.raises(KeyError, match=r"unknown config key\(s\) \['widht'\]; valid keys are"):
        make_config("griffin-tiny", widht=64)
    with pytest.raises(TypeError, match="config field 'width' must be int, got str"):
        make_config("griffin-tiny", width="64")
    with pytest.raises(TypeError, match="config field 'embeddings_scale_by_sqrt_dim' must be bool"):
        make_config("griffin-tiny", embeddings_scale_by_sqrt_dim=1)
    with pytest.raises(TypeError, match="config field 'num_heads' must be int, got bool"):
        make_config("griffin-tiny", num_heads=True)
    with pytest.raises(KeyError, match="unknown preset 'griffin-huge'"):
        make_config("griffin-huge")
    with pytest.raises(ValueError, match="must be divisible by num_heads"):
        make_config("griffin-tiny", width=17)
    with pytest.raises(ValueError, match="dtype must be"):
        make_config("griffin-tiny", dtype="float16")
    assert make_config("griffin-tiny", logits_soft_cap=30).logits_soft_cap == 30.0   # int accepted as float


def test_the_decay_initialisation_range_is_a_config_field():
    """a = sigmoid(-a_param) starts inside [lru_min_rad, lru_max_rad] (float64: exact to 1e-12), and a
    reversed or out-of-(0, 1) range is refused."""
    for lo, hi in ((0.9, 0.999), (0.99, 0.9999)):
        cfg = make_config("hawk-tiny", lru_width=64, num_heads=2, lru_min_rad=lo, lru_max_rad=hi, dtype="float64")
        a_param = init_params(cfg, np.random.default_rng(0))["blocks"][0]["recurrent_block"]["rg_lru"]["a_param"]
        a = 1.0 / (1.0 + np.exp(a_param))
        assert a.min() >= lo - 1e-12 and a.max() <= hi + 1e-12
        assert a.max() - a.min() > 0.5 * (hi - lo)                     # spread over the range, not one value
    for lo, hi in ((0.999, 0.9), (0.0, 0.9), (0.5, 1.0), (float("nan"), 0.9)):
        with pytest.raises(ValueError, match="lru_min_rad <= lru_max_rad"):
            make_config("hawk-tiny", lru_min_rad=lo, lru_max_rad=hi)


def test_config_is_frozen_and_round_trips_through_a_dict():
    cfg = make_config("griffin-small")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.width = 3
    assert config_from_dict(config_to_dict(cfg)) == cfg
    with pytest.raises(KeyError, match="unknown config key"):
        config_from_dict({**config_to_dict(cfg), "learning_rate": 1.0})


# ---------------------------------------------------------------------------------- params and counts
def test_parameter_counts_match_recurrentgemma_and_the_formula():
    """Small models (D = E = 64, F = 192, H = 4, V = 16, 5 blocks) have the counts recurrentgemma gives: the
    numbers below are sum(p.numel() for p in recurrentgemma.torch.Griffin(config).parameters()) for the
    same shapes (recurrentgemma/torch/griffin.py Griffin)."""
    expected = {"hawk": 263_488, "griffin": 258_752, "mqa": 239_808}
    patterns = {"hawk": ("recurrent",) * 5, "griffin": ("recurrent", "recurrent", "attention", "recurrent",
                                                        "recurrent"), "mqa": ("attention",) * 5}
    for family, count in expected.items():
        cfg = GriffinConfig(vocab_size=16, width=64, mlp_expanded_width=192, num_heads=4, lru_width=64,
                            block_types=patterns[family])
        assert count_params(cfg) == count
        assert num_params(init_params(cfg, np.random.default_rng(0))) == count
    for name in ("hawk-small", "griffin-small", "mqa-small", "griffin-tiny"):
        cfg = PRESETS[name]
        assert count_params(cfg) == num_params(init_params(cfg, np.random.default_rng(0)))
    for name in ("hawk-small", "griffin-tiny"):                      # the complex-gated unit (CG-LRU)
        cfg = make_config(name, lru_only_real=False)
        assert count_params(cfg) == num_params(init_params(cfg, np.random.default_rng(0))) < count_params(PRESETS[name])
    with pytest.raises(ValueError, match="CG-LRU"):
        make_config("hawk-tiny", lru_only_real=False, lru_width=18)   # half of 18 is not divisible by 2 blocks
    assert 3e6 < count_params(PRESETS["griffin-small"]) < 8e6          # "a few million"


def test_initialisation_statistics():
    """Normal weights with the standard deviations of recurrentgemma's reset_parameters (recurrentgemma/torch/
    layers.py and modules.py, e.g. RGLRU.reset_parameters, MLPBlock.reset_parameters; minigriffin/params.py
    init_params lists them), zero biases and norm scales, and a = sigmoid(-a_param) in [0.9, 0.999]
    (layers.py rnn_param_init: a^2 uniform on [0.9^2, 0.999^2], "uniformly on a ring")."""
    cfg = make_config("griffin-small", dtype="float64")
    params = init_params(cfg, np.random.default_rng(0))
    D, E, F, L = cfg.width, cfg.lru_width, cfg.mlp_expanded_width, cfg.num_layers
    rec = params["blocks"][0]["recurrent_block"]
    att = params["blocks"][2]["attention_block"]
    mlp = params["blocks"][0]["mlp_block"]
    checks = {"emb": (params["embedder"]["input_embedding"], (1 / D) ** 0.5),
              "linear_x": (rec["linear_x"]["weight"], (1 / D) ** 0.5),
              "linear_out": (rec["linear_out"]["weight"], (2 / L / E) ** 0.5),
              "conv": (rec["conv_1d"]["w"], 0.05),
              "gate": (rec["rg_lru"]["a_gate"]["w"], (1 / (E // cfg.num_heads)) ** 0.5),
              "proj_final": (att["proj_final"]["weight"], (2 / L / D) ** 0.5),
              "ffw_down": (mlp["ffw_down"]["weight"], (2 / L / F) ** 0.5)}
    for name, (w, std) in checks.items():
        assert abs(w.std() / std - 1) < 0.1, name                     # sampling error << 10% at these sizes
    assert not rec["linear_x"]["bias"].any() and not params["final_norm"]["scale"].any()
    a = 1 / (1 + np.exp(rec["rg_lru"]["a_param"]))
    assert a.min() >= 0.9 - 1e-9 and a.max() <= 0.999 + 1e-9           # float64, 1e-9 for the log/exp round trip


def test_bfloat16_embedding_scale():
    # recurrentgemma/torch/modules.py Embedder.encode multiplies by sqrt(D) rounded to bfloat16 (the dtype it was
    # trained in): sqrt(2560) = 50.596 becomes 50.5, sqrt(768) = 27.713 becomes 27.75 (exact, float)
    assert embedding_scale(2560) == 50.5 and embedding_scale(768) == 27.75
    assert round_to_bfloat16(1.0) == 1.0 and round_to_bfloat16(256.0) == 256.0


# ------------------------------------------------------------------------------------------ conversion
@pytest.mark.parametrize("preset", ["hawk-tiny", "griffin-tiny", "mqa-tiny"])
def test_torch_and_flax_round_trips(preset):
    cfg = PRESETS[preset]
    params = init_params(cfg, np.random.default_rng(0))
    state = to_torch_state_dict(params)
    assert "embedder.input_embedding" in state and "final_norm.scale" in state
    back = from_torch_state_dict(state)
    flax = to_flax_params(params)
    back2 = from_flax_params(flax)
    for (name, a), (_, b), (_, c) in zip(tree_leaves(params), tree_leaves(back), tree_leaves(back2)):
        np.testing.assert_array_equal(a, b, err_msg=name)       # float32, exact: renaming only
        np.testing.assert_array_equal(a, c, err_msg=name)       # float32, exact: renaming and transposes
    if "recurrent" in cfg.block_types:   # flax kernels are the transpose of torch weights
        kernel = flax["params"]["blocks.0"]["recurrent_block"]["linear_x"]["kernel"]
        np.testing.assert_array_equal(kernel, params["blocks"][0]["recurrent_block"]["linear_x"]["weight"].T)  # exact
    assert config_from_params(params, preset=preset) == cfg


def test_bad_state_dict_names_are_reported():
    with pytest.raises(KeyError, match="unexpected state-dict entry 'blocks.0.fancy_block.w'"):
        from_torch_state_dict({"blocks.0.fancy_block.w": np.zeros(1)})


# ------------------------------------------------------------------------------------------ the model
@pytest.mark.parametrize("preset, extra", [("hawk-tiny", {}), ("griffin-tiny", {}), ("mqa-tiny", {}),
                                           ("mqa-tiny", {"use_rope": False}), ("hawk-tiny", {"lru_only_real": False}),
                                           ("griffin-tiny", {"lru_only_real": False})],
                         ids=["hawk", "griffin", "mqa", "mqa-nope", "hawk-cglru", "griffin-cglru"])
def test_model_gradient_matches_finite_differences(preset, extra):
    """End to end through the loss, sampled elements of every parameter (float64, fourth-order stencil,
    step 1e-3: |num - ana| <= 1e-9 + 1e-6 |num|). The weights are tiny_model's (tests/strategies.py): every
    bias, norm scale and a_param perturbed away from init, so a derivative taken at the wrong point (say,
    before a bias is added) shows."""
    cfg, params, rng = tiny_model(dict(preset=preset, logits_soft_cap=5.0, embeddings_scale_by_sqrt_dim=True,
                                       **extra), "float64", 0)
    tokens = rng.integers(0, cfg.vocab_size, SP.shape)
    targets = rng.integers(0, cfg.vocab_size, SP.shape)

    def loss_fn(params):
        logits, _ = model_forward(params, tokens, SP, cfg)
        return np.array(cross_entropy_forward(logits, targets)[0])

    logits, cache = model_forward(params, tokens, SP, cfg)
    _, ce_cache = cross_entropy_forward(logits, targets)
    grads = model_backward(cross_entropy_backward(1.0, ce_cache), cache)
    assert_grads_close(loss_fn, {"params": params}, {"params": grads}, np.array(1.0), rtol=1e-6, atol=1e-9,
                       eps=1e-3, order=4, max_elements=4)


@pytest.mark.parametrize("preset", ["hawk-tiny", "griffin-tiny", "mqa-tiny"])
def test_float32_is_the_default_and_stays_float32(preset):
    cfg = PRESETS[preset]
    assert cfg.dtype == "float32"
    params = init_params(cfg, np.random.default_rng(0))
    tokens = np.zeros(SP.shape, dtype=np.int64)
    logits, cache = model_forward(params, tokens, SP, cfg)
    grads = model_backward(np.ones_like(logits), cache)
    assert logits.dtype == np.float32
    assert all(g.dtype == np.float32 for _, g in tree_leaves(grads))


@pytest.mark.parametrize("preset", ["hawk-tiny", "griffin-tiny"])
def test_t_equals_one(preset):
    cfg = make_config(preset, dtype="float64")
    params = init_params(cfg, np.random.default_rng(0))
    logits, cache = model_forward(params, np.array([[5], [7]]), np.zeros((2, 1), dtype=np.int64), cfg)
    assert logits.shape == (2, 1, cfg.vocab_size) and np.all(np.isfinite(logits))
    model_backward(np.ones_like(logits), cache)


def test_documents_do_not_leak_into_each_other():
    """Changing the first document of a packed row leaves the logits of the second unchanged (float64, 1e-13).
    (Not bitwise: matmuls over the whole row may round differently when other rows' values change.)"""
    for preset in ("hawk-tiny", "griffin-tiny", "mqa-tiny"):
        cfg, params, _ = tiny_model({"preset": preset}, "float64", 0)     # every bias and norm scale non-zero
        tokens = np.random.default_rng(1).integers(0, 256, SP.shape)
        logits, _ = model_forward(params, tokens, SP, cfg)
        tokens2 = tokens.copy()
        tokens2[1, :4] = (tokens2[1, :4] + 1) % 256             # row 1's first document is positions 0-3
        logits2, _ = model_forward(params, tokens2, SP, cfg)
        np.testing.assert_allclose(logits2[1, 4:], logits[1, 4:], rtol=1e-13, atol=1e-13)   # float64, 1e-13
        assert not np.allclose(logits2[1, :4], logits[1, :4])


def test_bad_inputs_name_the_problem():
    cfg = PRESETS["griffin-tiny"]
    params = init_params(cfg, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"segment_pos must be an integer array of shape \(2, 10\)"):
        model_forward(params, np.zeros((2, 10), int), np.zeros((2, 9), int), cfg)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 256\)"):
        model_forward(params, np.full((2, 10), 300), SP, cfg)
    with pytest.raises(TypeError, match="params are float32 but cfg.dtype is 'float64'"):
        model_forward(params, np.zeros((2, 10), int), SP, make_config("griffin-tiny", dtype="float64"))
    with pytest.raises(TypeError, match="tokens must be a \\(B, T\\) integer array"):
        model_forward(params, np.zeros((2, 10)), SP, cfg)
