"""Model configuration: one frozen dataclass, named presets, and overrides that reject unknown keys.

Presets are named "<family>-<size>": family hawk (all recurrent blocks), griffin (recurrent, recurrent,
attention, repeating) or mqa (the global multi-query attention Transformer baseline), and size
tiny (tests), small (laptop training, ~5M parameters) or one of the paper's Table 2 rows
(100m, 200m, 400m, 1b, 3b, 7b, 14b; D_RNN ~ 4D/3, heads = D / 128, MLP expansion 3).

    cfg = make_config("griffin-small", attention_window_size=64)
"""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass

RECURRENT, ATTENTION = "recurrent", "attention"
GLOBAL_WINDOW = 2**40          # the window of global attention: more keys than any document has
FAMILIES = ("hawk", "griffin", "mqa")


def block_pattern(family, depth):
    """Temporal-block types for a family: Griffin R,R,A repeating; Hawk all R; MQA all A."""
    if family == "hawk":
        return (RECURRENT,) * depth
    if family == "griffin":
        return tuple((RECURRENT, RECURRENT, ATTENTION)[i % 3] for i in range(depth))
    if family == "mqa":
        return (ATTENTION,) * depth
    raise ValueError(f"unknown model family {family!r}; choose one of {FAMILIES}")


@dataclass(frozen=True)
class GriffinConfig:
    """Hyperparameters of a Hawk / Griffin / MQA model (names follow recurrentgemma's GriffinConfig)."""
    vocab_size: int = 256
    width: int = 32                              # D
    mlp_expanded_width: int = 96                 # F = 3 D
    num_heads: int = 2                           # H: attention heads
    block_types: tuple = (RECURRENT, RECURRENT, ATTENTION)
    lru_width: int = 32                          # E = D_RNN
    attention_window_size: int = 8               # W: each query sees itself and W earlier keys (local attention)
    global_attention: bool = False               # True: attention sees the whole document, whatever its length
                                                 # (the MQA Transformer baseline); attention_window_size is unused
    embeddings_scale_by_sqrt_dim: bool = False   # multiply embeddings by bf16(sqrt(D)) (RecurrentGemma: True)
    logits_soft_cap: float = 0.0                 # c * tanh(logits / c); 0 = off (RecurrentGemma: 30)
    conv1d_temporal_width: int = 4
    use_rope: bool = True                        # RoPE on queries and keys; False: no positional encoding (NoPE)
    num_gate_blocks: typing.Optional[int] = None  # RG-LRU gate blocks; None = num_heads (recurrentgemma), paper: 16
    lru_only_real: bool = True                   # False: the complex-gated CG-LRU (Griffin Appendix B,
                                                 # minigriffin/cglru.py; recurrentgemma JAX's lru_only_real)
    lru_min_rad: float = 0.9                     # RG-LRU decay a = sigmoid(-a_param) is initialised with a^2
    lru_max_rad: float = 0.999                   # uniform in [min_rad^2, max_rad^2] (recurrentgemma's defaults)
    scan_backend: str = "auto"                   # see minigriffin.scan.available_backends()
    dtype: str = "float32"                       # "float32" (default) or "float64" (for checks)

    def __post_init__(self):
        _check_types(self, GriffinConfig)
        for name in ("vocab_size", "width", "mlp_expanded_width", "num_heads", "lru_width",
                     "conv1d_temporal_width", "gate_blocks"):        # first: the checks below divide by them
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.num_heads:
            raise ValueError(f"width={self.width} must be divisible by num_heads={self.num_heads}")
        if self.lru_width % self.gate_blocks:
            raise ValueError(f"lru_width={self.lru_width} must be divisible by the number of RG-LRU gate blocks "
                             f"({self.gate_blocks}: num_gate_blocks, or num_heads when that is None)")
        if ATTENTION in self.block_types and self.use_rope and self.head_dim % 4:
            raise ValueError(f"head dim width/num_heads={self.head_dim} must be a multiple of 4 "
                             f"(RoPE rotates pairs within the first half of each head)")
        bad = [t for t in self.block_types if t not in (RECURRENT, ATTENTION)]
        if bad or not self.block_types:
            raise ValueError(f"block_types must be a non-empty tuple of {RECURRENT!r}/{ATTENTION!r}, got {bad}")
        from minigriffin.scan import backend_names      # light: no backend is imported
        if self.scan_backend not in ("auto", *backend_names()):
            raise ValueError(f"scan_backend must be one of {['auto', *backend_names()]}, got {self.scan_backend!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not self.lru_only_real and (self.lru_width % 2 or (self.lru_width // 2) % self.gate_blocks):
            raise ValueError(f"the CG-LRU (lru_only_real=false) needs an even lru_width whose half is divisible "
                             f"by the gate blocks ({self.gate_blocks}), got lru_width={self.lru_width}")
        if not 0 < self.lru_min_rad <= self.lru_max_rad < 1:
            raise ValueError(f"need 0 < lru_min_rad <= lru_max_rad < 1 (the RG-LRU decay's initial range), got "
                             f"{self.lru_min_rad} and {self.lru_max_rad}")
        if self.attention_window_size > GLOBAL_WINDOW:
            raise ValueError(f"attention_window_size must be <= {GLOBAL_WINDOW} (for attention over the whole "
                             f"document, set global_attention=true), got {self.attention_window_size}")
        if self.attention_window_size < 0 or not 0 <= self.logits_soft_cap < math.inf:
            raise ValueError(f"attention_window_size must be >= 0 and logits_soft_cap finite and >= 0, got "
                             f"{self.attention_window_size} and {self.logits_soft_cap}")

    @property
    def window(self):
        """The window the attention computes with: attention_window_size, or GLOBAL_WINDOW (longer than any
        sequence, so every earlier key of the document is visible) when global_attention is set. Whether
        attention is local or global is part of the config, never guessed from the window and a length."""
        return GLOBAL_WINDOW if self.global_attention else self.attention_window_size

    @property
    def gate_blocks(self):
        return self.num_heads if self.num_gate_blocks is None else self.num_gate_blocks

    @property
    def head_dim(self):
        return self.width // self.num_heads

    @property
    def num_layers(self):
        return len(self.block_types)


def _check_types(cfg, cls):
    """Reject wrong types with a message naming the field (bool is not accepted as int, int is as float)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cfg):
        value, expected = getattr(cfg, field.name), hints[field.name]
        if typing.get_origin(expected) is typing.Union:          # Optional[X]
            if value is None:
                continue
            expected = next(t for t in typing.get_args(expected) if t is not type(None))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(cfg, field.name, float(value))
            continue
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is tuple and isinstance(value, list):
            object.__setattr__(cfg, field.name, tuple(value))
            ok = True
        if not ok:
            raise TypeError(f"config field {field.name!r} must be {getattr(expected, '__name__', expected)}, "
                            f"got {type(value).__name__} {value!r}")


def _preset(family, width, depth, heads, lru_width, mlp, window, **extra):
    """The MQA family is the paper's global-attention Transformer baseline: global_attention=True, so its
    attention covers every training length (the window is kept only as the value a user may switch back to)."""
    return GriffinConfig(width=width, mlp_expanded_width=mlp, num_heads=heads, lru_width=lru_width,
                         block_types=block_pattern(family, depth), attention_window_size=window,
                         global_attention=family == "mqa", **extra)


# Paper Table 2: (D, D_RNN, depth, heads). The paper's local window is 1024; vocab is ours (bytes).
_PAPER_SIZES = {"100m": (768, 1024, 12, 6), "200m": (1024, 1536, 12, 8), "400m": (1536, 2048, 12, 12),
                "1b": (2048, 2560, 24, 16), "3b": (3072, 4096, 24, 24), "7b": (4096, 5632, 32, 32),
                "14b": (5120, 8192, 40, 40)}


def _build_presets():
    presets = {}
    for family in FAMILIES:
        # tiny: for tests (window 4 so that packed test sequences have W < T); small: laptop training.
        # The mqa-* presets attend globally (global_attention); their window applies only if that is turned off.
        presets[f"{family}-tiny"] = _preset(family, 16, 3, 2, 16, 48, 4)
        presets[f"{family}-small"] = _preset(family, 256, 6, 4, 256, 768, 128)
        for size, (D, E, depth, heads) in _PAPER_SIZES.items():
            window = 1024                # Griffin's local window in the paper; the MQA presets are global
            # The paper uses 16 gate blocks in all its experiments (§4.1); recurrentgemma uses num_heads.
            presets[f"{family}-{size}"] = _preset(family, D, depth, heads, E, 3 * D, window, num_gate_blocks=16)
    return types.MappingProxyType(presets)


PRESETS = _build_presets()


def make_config(preset, **overrides):
    """A preset with some fields replaced; unknown fields and wrong types raise with a clear message."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[preset], **overrides)


def replace(cfg, **overrides):
    """dataclasses.replace that names unknown keys and lists the valid ones."""
    valid = [f.name for f in dataclasses.fields(GriffinConfig)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise KeyError(f"unknown config key(s) {unknown}; valid keys are {valid}")
    return dataclasses.replace(cfg, **overrides)


def config_to_dict(cfg):
    """Plain JSON-able dict of a config."""
    d = dataclasses.asdict(cfg)
    d["block_types"] = list(cfg.block_types)
    return d


def config_from_dict(d):
    """Inverse of config_to_dict; unknown keys and wrong types raise."""
    return replace(GriffinConfig(), **dict(d))


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters (everything that is not the model). Defaults suit griffin-small on a laptop."""
    batch_size: int = 8
    seq_len: int = 256
    max_steps: int = 1000
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0                       # global-norm clipping; 0 = off
    eval_every: int = 100                        # steps between validation losses (and "best" checkpoints)
    eval_batches: int = 4                        # fixed validation batches per evaluation
    checkpoint_every: int = 100                  # steps between "last" checkpoints (also saved at the end)
    log_every: int = 10                          # plain progress lines when not on a terminal
    seed: int = 0                                # seeds parameter init and the data sampler
    cpu_workers: int = 0                         # threads sharing a batch's rows on the CPU; 0 = one per core
    carry_windows: int = 1                       # consecutive windows each row reads with its state carried
                                                 # across them (minigriffin.carry); 1 = independent windows

    def __post_init__(self):
        _check_types(self, TrainConfig)
        for name in ("batch_size", "seq_len", "max_steps", "eval_batches", "eval_every", "checkpoint_every",
                     "log_every", "carry_windows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cpu_workers < 0:
            raise ValueError(f"cpu_workers must be >= 0 (0: one per core), got {self.cpu_workers}")
        for name in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "eps", "grad_clip"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError(f"lr must be > 0; min_lr, warmup_steps and grad_clip must be >= 0 (got lr={self.lr}, "
                             f"min_lr={self.min_lr}, warmup_steps={self.warmup_steps}, grad_clip={self.grad_clip})")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1} and {self.beta2}")
        if self.eps <= 0 or self.weight_decay < 0:
            raise ValueError(f"eps must be > 0 and weight_decay >= 0, got {self.eps} and {self.weight_decay}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


def parse_value(cls, key, text):
    """Convert the string `text` for field `key` of dataclass `cls` (CLI overrides: --key=value)."""
    hints = typing.get_type_hints(cls)
    expected = hints[key]
    if typing.get_origin(expected) is typing.Union:
        if text.lower() == "none":
            return None
        expected = next(t for t in typing.get_args(expected) if t is not type(None))
    try:
        if expected is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if expected is tuple:
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return expected(text)
    except ValueError:
        raise ValueError(f"--{key}={text}: expected a value of type {expected.__name__}") from None


def split_overrides(pairs):
    """{key: text} from CLI overrides -> (model overrides, train overrides), parsed to the fields' types.
    Unknown keys raise, listing the valid ones."""
    model_keys = {f.name for f in dataclasses.fields(GriffinConfig)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    model, train = {}, {}
    for key, text in pairs.items():
        if key in train_keys:
            train[key] = parse_value(TrainConfig, key, text)
        elif key in model_keys:
            model[key] = parse_value(GriffinConfig, key, text)
        else:
            raise KeyError(f"unknown option --{key}; training options: {sorted(train_keys)}; "
                           f"model options: {sorted(model_keys)}")
    return model, train
