"""The `minigriffin` command line: train, sample, plot, download, doctor, demo.

Each subcommand lives in its own function; heavy imports happen inside them so `minigriffin --help` is instant.
"""

import argparse
import os
import sys
import time


def _doctor(args):
    """Print versions, Numba's threading layer and thread count, the scan backends, and whether CuPy/a GPU work."""
    import importlib.metadata
    import platform

    import numpy as np

    import minigriffin
    from minigriffin.scan import _REGISTRY, _unavailable_reason

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    print(f"minigriffin   {minigriffin.__version__}  ({minigriffin.__file__})")
    print(f"python        {platform.python_version()}  ({sys.executable})")
    print(f"platform      {platform.platform()}")
    print(f"numpy         {np.__version__}")
    for dist in ("numba", "matplotlib", "tqdm"):
        print(f"{dist:<13} {version(dist)}")
    ok = True
    try:
        import numba

        from minigriffin.scan import linear_scan
        # The threading layer is only chosen when a parallel function first runs, so run a tiny scan.
        linear_scan(np.zeros((1, 2, 1)), np.zeros((1, 2, 1)), backend="numba")
        print(f"numba threads {numba.get_num_threads()} of {numba.config.NUMBA_NUM_THREADS} "
              f"(set NUMBA_NUM_THREADS to change)")
        print(f"numba layer   {numba.threading_layer()} (set NUMBA_THREADING_LAYER to change)")
    except Exception as exc:  # report, never hide: doctor exists to show what is broken
        ok = False
        print(f"numba         NOT USABLE: {type(exc).__name__}: {exc}")
    print("scan backends:")
    for name in _REGISTRY:
        reason = _unavailable_reason(name)
        print(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    print(f"cupy          {_cupy_status()}")
    for dist in ("pytest", "hypothesis", "torch", "jax", "flax", "recurrentgemma"):
        print(f"{dist:<13} {version(dist)}  (tests only)")
    return 0 if ok else 1


def _cupy_status():
    """One line: whether CuPy imports and whether it can reach a CUDA device."""
    try:
        import cupy
    except ImportError:
        return 'not installed (GPU is optional: pip install "minigriffin[gpu]" for CUDA 12, "[gpu13]" for CUDA 13)'
    except Exception as exc:  # a broken install (wrong CUDA flavour) raises other errors at import
        return f"installed but fails to import: {type(exc).__name__}: {exc}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        if n == 0:
            return f"cupy {cupy.__version__} installed, but no CUDA device is visible"
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"cupy {cupy.__version__}, {n} CUDA device(s), device 0: {name}"
    except Exception as exc:
        return f"cupy {cupy.__version__} installed, but no usable GPU: {type(exc).__name__}: {exc}"


def _demo(args):
    from minigriffin.demo import DEMO_STEPS, run_demo, run_training_demo
    if args.scan:
        return run_demo(quick=args.quick)
    return run_training_demo(args.data_dir, args.run_dir, args.steps or (3 if args.quick else DEMO_STEPS),
                             quick=args.quick)


def _parse_overrides(extra):
    """['--lr=0.01', '--width', '64'] -> {'lr': '0.01', 'width': '64'}; anything else is an error."""
    pairs, i = {}, 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or item == "--":
            raise SystemExit(f"unexpected argument {item!r} (options look like --key=value)")
        key, eq, value = item[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                raise SystemExit(f"option --{key} needs a value (--{key}=VALUE)")
            value, i = extra[i + 1], i + 1
        pairs[key.replace("-", "_")] = value
        i += 1
    return pairs


def _resolve_data_dir(data_dir):
    """--data-dir, else $MINIGRIFFIN_BOOKS, else the downloaded books (downloading them if needed)."""
    if data_dir:
        return data_dir
    if os.environ.get("MINIGRIFFIN_BOOKS"):
        return os.environ["MINIGRIFFIN_BOOKS"]
    from minigriffin.gutenberg import download_books
    print("no --data-dir given: using books from Project Gutenberg (downloaded once into the cache)")
    return str(download_books())


def _train(args, extra):
    from minigriffin.config import TrainConfig, make_config, split_overrides
    from minigriffin.data import load_corpus
    from minigriffin.train import EXIT_INTERRUPTED, Trainer
    try:
        model_over, train_over = split_overrides(_parse_overrides(extra))
        if args.resume:
            if model_over or set(train_over) - {"max_steps"}:
                raise SystemExit("--resume continues a run with its saved settings; only "
                                 "--max_steps may be changed")
            trainer = Trainer.resume(args.resume, load_corpus, max_steps=train_over.get("max_steps"),
                                     device=args.device)
        else:
            model_cfg = make_config(args.preset, **model_over)
            train_cfg = TrainConfig(**train_over)
            data_dir = _resolve_data_dir(args.data_dir)
            run_dir = args.run_dir or os.path.join("runs", f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
            trainer = Trainer(run_dir, model_cfg, train_cfg, data_dir, load_corpus(data_dir), device=args.device)
            trainer.start_fresh()
    except (KeyError, ValueError, TypeError, FileExistsError, RuntimeError) as exc:
        raise SystemExit(exc.args[0] if exc.args else str(exc)) from None
    from minigriffin.params import count_params
    print(f"run folder: {trainer.run_dir}  ({count_params(trainer.model_cfg):,} parameters, "
          f"{trainer.model_cfg.num_layers} blocks, step {trainer.step} of {trainer.train_cfg.max_steps}, "
          f"on the {trainer.device})", flush=True)
    progress = None
    if sys.stderr.isatty() and not args.no_progress:
        from tqdm import tqdm
        progress = lambda **kw: tqdm(dynamic_ncols=True, **kw)  # noqa: E731
    summary = trainer.run(progress=progress)
    print(f"step {summary['step']}: last loss {summary['last_loss']:.4f}, best validation loss "
          f"{summary['best_val_loss']:.4f}; checkpoints in {trainer.ckpt_dir}")
    if summary["interrupted"]:
        print(f"interrupted: resume with\n  minigriffin train --resume {trainer.run_dir}")
        return EXIT_INTERRUPTED
    return 0


def _plot(args):
    from minigriffin.plots import plot_runs
    out = plot_runs(args.run_dirs, args.out)
    print(f"wrote {out}")
    return 0


def _sample(args):
    import numpy as np

    from minigriffin.checkpoint import load_checkpoint
    from minigriffin.config import config_from_dict
    from minigriffin.data import ByteTokenizer
    from minigriffin.sample import generate
    path = os.path.join(args.run_dir, "checkpoints", f"{args.checkpoint}.npz")
    params, _, _, meta = load_checkpoint(path)
    cfg = config_from_dict(meta["model_config"])
    tokenizer = ByteTokenizer()
    try:
        prompt = tokenizer.encode(args.prompt)
    except UnicodeEncodeError as exc:                # bytes the shell passed that are not UTF-8
        raise SystemExit(f"--prompt is not valid UTF-8 text (at character {exc.start})") from None
    if prompt.size == 0:
        raise SystemExit("--prompt must not be empty")
    if prompt.max() >= cfg.vocab_size:
        at = int(np.argmax(prompt >= cfg.vocab_size))
        raise SystemExit(f"--prompt has byte {int(prompt[at])} at byte offset {at}, outside the model's "
                         f"vocabulary of {cfg.vocab_size} tokens")
    out = generate(params, cfg, prompt[None].astype(np.int64), args.max_new_tokens,
                   np.random.default_rng(args.seed), temperature=args.temperature, top_k=args.top_k)
    print(tokenizer.decode(out[0]))
    return 0


def _eval_length(args):
    from minigriffin.checkpoint import load_checkpoint
    from minigriffin.config import config_from_dict
    from minigriffin.data import load_corpus
    from minigriffin.experiment import attention_kind
    from minigriffin.evaluate import bucket_summary, length_curve, plot_curves, write_csv
    corpus = load_corpus(_resolve_data_dir(args.data_dir))
    out = args.out or args.run_dirs[0]
    os.makedirs(out, exist_ok=True)
    curves = []
    for run_dir in args.run_dirs:
        params, _, _, meta = load_checkpoint(os.path.join(run_dir, "checkpoints", f"{args.checkpoint}.npz"))
        cfg = config_from_dict(meta["model_config"])     # evaluated exactly as trained: local stays local
        train_len = int(meta["train_config"]["seq_len"])
        print(f"{run_dir}: attention {attention_kind(cfg)}"
              + (" (its key/value cache grows with the context)" if cfg.global_attention else ""))
        name = os.path.basename(os.path.normpath(run_dir))
        curve = length_curve(params, cfg, corpus.valid, args.max_len, name=name, train_len=train_len,
                             chunk_size=args.chunk_size, segments_per_book=args.segments_per_book,
                             progress=lambda i, n: print(f"  {name}: book {i}/{n}", flush=True))
        csv_path = write_csv(curve, os.path.join(out, f"{name}-length.csv"))
        print(f"{bucket_summary(curve)}\n  -> {csv_path}")
        curves.append(curve)
    print(f"figure: {plot_curves(curves, os.path.join(out, 'length.png'))}")
    return 0


def _experiment(args):
    from minigriffin.experiment import run_study
    out = args.out or os.path.join("runs", f"experiment-{args.preset}")
    data_dir = _resolve_data_dir(args.data_dir)
    command = (f"minigriffin experiment {args.name} --study {args.study} --preset {args.preset} "
               f"--data-dir {data_dir} --out {out} --seed {args.seed}")
    run_study(args.study, args.preset, data_dir, out, seed=args.seed, command=command)
    return 0


def _download(args):
    from minigriffin.gutenberg import download_books
    print(f"books in {download_books(args.out)}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (no usage block) and exit status 2."""

    def __init__(self, *args, **kwargs):
        # no abbreviations: `--res=...` must not silently mean --resume, and any --key=value that is not an
        # option of the command goes on to the config overrides, which name unknown keys
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(
        prog="minigriffin",
        description="Hawk and Griffin (De, Smith et al. 2024) in NumPy with hand-written backprop.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    doctor = sub.add_parser("doctor", help="print versions, Numba threading, scan backends and GPU availability")
    doctor.set_defaults(func=_doctor)
    demo = sub.add_parser("demo", help="train a small Griffin on books for a few minutes, sample, plot")
    demo.add_argument("--data-dir", help="folder of .txt books (default: $MINIGRIFFIN_BOOKS or a download)")
    demo.add_argument("--run-dir", help="output folder (default: runs/demo-<time>)")
    demo.add_argument("--steps", type=int, help="training steps (default: 300)")
    demo.add_argument("--scan", action="store_true", help="instead: the scan backends against the reference")
    demo.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for smoke tests")
    demo.set_defaults(func=_demo)

    train = sub.add_parser("train", help="train a model on a folder of .txt books",
                           description="Train Hawk, Griffin or the MQA baseline. Any model or training field can "
                                       "be set with --key=value, e.g. --lr=1e-3 --seq_len=512 --width=128.")
    train.add_argument("--preset", default="griffin-small", help="model preset (default: %(default)s)")
    train.add_argument("--data-dir", help="folder of UTF-8 .txt books (train/ and valid/ subfolders optional); "
                                          "default: $MINIGRIFFIN_BOOKS or books downloaded from Project Gutenberg")
    train.add_argument("--run-dir", help="where to write checkpoints and metrics (default: runs/<preset>-<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    train.add_argument("--no-progress", action="store_true", help="plain log lines even on a terminal")
    train.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                       help="where to train: cpu (NumPy + Numba) or gpu (CuPy; needs minigriffin[gpu] and a CUDA "
                            "GPU). Checkpoints are device-independent: --resume works on either (default: cpu)")
    train.set_defaults(func=_train, takes_extra=True)

    sample = sub.add_parser("sample", help="generate text from a trained run")
    sample.add_argument("run_dir")
    sample.add_argument("--prompt", default="It was ")
    sample.add_argument("--max-new-tokens", type=int, default=300)
    sample.add_argument("--temperature", type=float, default=0.8)
    sample.add_argument("--top-k", type=int, default=None)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--checkpoint", choices=["best", "last"], default="best")
    sample.set_defaults(func=_sample)

    plot = sub.add_parser("plot", help="draw loss curves of one or more runs to a PNG")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--out", help="PNG path (default: RUN_DIR/loss.png of the first run)")
    plot.set_defaults(func=_plot)

    evl = sub.add_parser("eval-length", help="loss per token position on long validation books (Figure 5)")
    evl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    evl.add_argument("--data-dir", help="books folder (its valid/ books are evaluated)")
    evl.add_argument("--max-len", type=int, required=True, help="evaluate each book up to this many tokens")
    evl.add_argument("--chunk-size", type=int, default=512, help="tokens per forward pass (state carried over)")
    evl.add_argument("--segments-per-book", type=int, default=1,
                     help="score up to K consecutive pieces of --max-len tokens per book, each as one document")
    evl.add_argument("--checkpoint", choices=["best", "last"], default="best")
    evl.add_argument("--out", help="folder for the CSVs and length.png (default: the first RUN_DIR)")
    evl.set_defaults(func=_eval_length)

    exp = sub.add_parser("experiment", help="reproduce the paper's long-context study at laptop scale")
    exp.add_argument("name", choices=["extrapolation"])
    exp.add_argument("--study", choices=["extrapolation", "train-length"], default="extrapolation")
    exp.add_argument("--preset", choices=["laptop", "tiny"], default="laptop")
    exp.add_argument("--data-dir")
    exp.add_argument("--out", help="output folder, shared by both studies (default: runs/experiment-<preset>)")
    exp.add_argument("--seed", type=int, default=0)
    exp.set_defaults(func=_experiment)

    download = sub.add_parser("download", help="download the Project Gutenberg books into the cache")
    download.add_argument("--out", help="folder (default: the user cache directory)")
    download.set_defaults(func=_download)
    return parser


EXIT_ERROR = 2          # bad input or a refused run: one line on stderr, no traceback

#: what a command may raise for bad input or a run it refuses (a missing file, a corrupt checkpoint, a config
#: value out of range, a NaN in training, no memory for the model asked for): shown as one line, exit status 2
_USER_ERRORS = (ValueError, KeyError, TypeError, OSError, RuntimeError, FloatingPointError, MemoryError)


def _one_line(exc):
    """The message of an exception on one line (KeyError's str() would add quotes)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text if isinstance(exc, (ValueError, KeyError, TypeError)) else f"{text} ({type(exc).__name__})"


def _fail(command, message):
    print(f"minigriffin {command}: error: {message}" if command else f"minigriffin: error: {message}",
          file=sys.stderr, flush=True)
    return EXIT_ERROR


def main(argv=None):
    """Run a command; returns its exit status (0 ok, 2 bad input, 130 interrupted).

    Bad input never ends in a traceback: the error is one line on stderr naming the problem, and the exit
    status is 2. MINIGRIFFIN_DEBUG=1 re-raises instead, to see where an error came from."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)          # argparse's own errors exit 2 with one line (_Parser)
    if extra and not getattr(args, "takes_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = os.environ.get("MINIGRIFFIN_DEBUG", "").lower() in ("1", "true", "yes")
    try:
        return args.func(args, extra) if getattr(args, "takes_extra", False) else args.func(args)
    except BrokenPipeError:
        return 1
    except SystemExit as exc:                            # a command's own refusal: SystemExit("message")
        if isinstance(exc.code, str) and not debug:
            raise SystemExit(_fail(args.command, " ".join(exc.code.split()))) from None
        raise
    except KeyboardInterrupt:
        print(f"minigriffin {args.command}: interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as exc:
        if debug:
            raise
        raise SystemExit(_fail(args.command, _one_line(exc))) from None


if __name__ == "__main__":
    sys.exit(main())
