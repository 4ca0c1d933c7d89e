"""The `minigriffin` command line: train, sample, plot, eval-length, experiment, download, doctor, demo, check-scan,
bpe.

The arguments are defined in cli_parser.py; each subcommand runs in its own function here (`doctor` in
doctor.py, `demo` in demo.py, `check-scan` in check_scan.py); heavy imports happen inside them so
`minigriffin --help` is instant.
"""

import contextlib
import os
import sys
import time
from types import SimpleNamespace

from minigriffin.cli_experiment import experiment_command
from minigriffin.cli_parser import EXIT_ERROR, build_parser


def _doctor(args):
    from minigriffin.doctor import doctor
    return doctor()


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


@contextlib.contextmanager
def _refusal():
    """A bad setting or a run that cannot start, as SystemExit("message"): one line, exit status 2."""
    try:
        yield
    except (KeyError, ValueError, TypeError, FileExistsError, RuntimeError) as exc:
        raise SystemExit(exc.args[0] if exc.args else str(exc)) from None


def _train_plan(args, extra):
    """What `train` is asked to do, read from the command line before any file is touched (under MPI, on
    every rank: minigriffin.distributed compares the plans)."""
    from minigriffin.config import TrainConfig, make_config, split_overrides
    from minigriffin.data import load_corpus, load_tokenizer, run_tokenizer
    from minigriffin.gutenberg import resolve_data_dir
    model_over, train_over = split_overrides(_parse_overrides(extra))
    if args.resume and (model_over or set(train_over) - {"max_steps"} or args.tokenizer):
        raise SystemExit("--resume continues a run with its saved settings (and tokenizer); only --max_steps may "
                         "be changed")
    tokenizer = run_tokenizer(args.resume) if args.resume else load_tokenizer(args.tokenizer)
    plan = SimpleNamespace(resume=args.resume, max_steps=train_over.get("max_steps"), device=args.device,
                           tokenizer=tokenizer, load_corpus=lambda d: load_corpus(d, tokenizer=tokenizer))
    if not args.resume:
        if args.tokenizer:               # the embedding table has one row per token of the tokenizer
            model_over.setdefault("vocab_size", tokenizer.vocab_size)
        plan.model_cfg, plan.train_cfg = make_config(args.preset, **model_over), TrainConfig(**train_over)
        plan.data_dir = resolve_data_dir(args.data_dir)
        plan.run_dir = args.run_dir or os.path.join("runs", f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    return plan


def _make_trainer(plan, cls, start=True):
    """The plan's Trainer (class cls): resumed, or fresh, its folder written if start (MPI checks first)."""
    with _refusal():
        if plan.resume:
            return cls.resume(plan.resume, plan.load_corpus, max_steps=plan.max_steps, device=plan.device)
        trainer = cls(plan.run_dir, plan.model_cfg, plan.train_cfg, plan.data_dir,
                      plan.load_corpus(plan.data_dir), device=plan.device, tokenizer=plan.tokenizer)
        if start:
            trainer.start_fresh()
        return trainer


def _train(args, extra):
    from minigriffin.distributed import launch, run_distributed
    from minigriffin.train import Trainer, run_and_report
    how = launch(args.distributed)                  # None: one process; else why this is one rank of several
    with _refusal():
        plan = _train_plan(args, extra)
    if how is None:
        return run_and_report(_make_trainer(plan, Trainer), progress_bar=not args.no_progress)
    return run_distributed(how, plan, lambda cls, start: _make_trainer(plan, cls, start),
                           timeout=args.distributed_timeout, progress_bar=not args.no_progress)


def _plot(args):
    from minigriffin.plots import plot_runs
    out = plot_runs(args.run_dirs, args.out)
    print(f"wrote {out}")
    return 0


def _sample(args):
    import numpy as np

    from minigriffin.checkpoint import load_run
    from minigriffin.data import run_tokenizer
    from minigriffin.sample import generate
    params, cfg, _ = load_run(args.run_dir, args.checkpoint)
    tokenizer = run_tokenizer(args.run_dir)
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
    from minigriffin.checkpoint import load_run
    from minigriffin.data import load_corpus, load_eval_books, run_tokenizer
    from minigriffin.evaluate import bucket_summary, curve_from_losses, document_losses, documents, plot_curves, write_csv
    from minigriffin.experiment import attention_kind
    from minigriffin.findings import context_findings, context_use, context_use_markdown, findings_markdown
    from minigriffin.gutenberg import resolve_data_dir
    from minigriffin.paired import save_losses
    tokenizers = {run_tokenizer(run_dir).name: run_tokenizer(run_dir) for run_dir in args.run_dirs}
    if len(tokenizers) > 1:                  # the same documents for every run need the same tokens
        raise SystemExit(f"these runs were trained with different tokenizers ({', '.join(tokenizers)}); "
                         f"evaluate each group separately")
    tokenizer = next(iter(tokenizers.values()))
    split = (load_corpus(resolve_data_dir(args.data_dir), tokenizer=tokenizer).valid if args.eval_data_dir is None
             else load_eval_books(args.eval_data_dir, tokenizer=tokenizer))
    if args.max_len < 2 or args.chunk_size < 1 or args.segments_per_book < 1:
        raise ValueError("--max-len must be >= 2, --chunk-size and --segments-per-book >= 1")
    unit = "nats/token" if hasattr(tokenizer, "token_bytes") else "nats/byte"
    if hasattr(tokenizer, "token_bytes"):    # BPE: every loss below is per token, not per byte
        per_token = tokenizer.token_bytes(split.tokens) / max(1, len(split.tokens))
        print(f"tokenizer {tokenizer.name}: losses and positions below are in tokens ({per_token:.2f} bytes per "
              f"token on these books; divide a loss by {per_token:.2f} for nats per byte)")
    docs = documents(split, args.max_len, args.segments_per_book)     # the same documents for every run
    findings = []
    out = args.out or args.run_dirs[0]
    os.makedirs(out, exist_ok=True)
    curves = []
    for run_dir in args.run_dirs:
        params, cfg, meta = load_run(run_dir, args.checkpoint)     # evaluated exactly as trained: local stays local
        train_len = int(meta["train_config"]["seq_len"])
        print(f"{run_dir}: attention {attention_kind(cfg)}"
              + (" (its key/value cache grows with the context)" if cfg.global_attention else ""))
        name = os.path.basename(os.path.normpath(run_dir))
        losses = document_losses(params, cfg, docs, chunk_size=args.chunk_size,
                                 progress=lambda i, n: print(f"  {name}: document {i}/{n}", flush=True))
        save_losses(os.path.join(out, f"{name}-length.npz"), losses, name=name, train_len=train_len)
        curve = curve_from_losses(losses, args.max_len, name=name, train_len=train_len)
        csv_path = write_csv(curve, os.path.join(out, f"{name}-length.csv"))
        print(f"{bucket_summary(curve)}\n  -> {csv_path} (and per-document losses: {name}-length.npz)")
        curves.append(curve)
        if args.context_use:                 # how far back the context is used, inside and past L
            print(context_use_markdown(name, context_use(params, cfg, docs, losses, train_len, args.max_len), unit))
        if args.same_token is not None:      # finding 1: the same targets with the context cut to N tokens
            findings += context_findings(params, cfg, docs, losses, name, train_len, args.max_len,
                                         cut=args.same_token or train_len)
    if findings:
        print(findings_markdown(findings, unit))
    print(f"figure: {plot_curves(curves, os.path.join(out, 'length.png'))}")
    return 0


def _check_scan(args):
    from minigriffin.check_scan import run_check_scan
    return run_check_scan(args.target, max_examples=args.max_examples, dtype=args.dtype, gpu=args.gpu,
                          shapes=args.shapes, repeats=args.repeats, rounds=args.rounds, compare=args.compare,
                          seed=args.seed, bench=not args.no_bench)


def _bpe(args):
    from minigriffin.bpe import train_bpe_on_folder
    from minigriffin.gutenberg import resolve_data_dir
    tokenizer = train_bpe_on_folder(resolve_data_dir(args.data_dir), args.vocab_size, max_bytes=args.max_bytes)
    tokenizer.save(args.out)
    print(f"{tokenizer.name}: {tokenizer.vocab_size} tokens ({len(tokenizer.merges)} merges) -> {args.out}")
    return 0


def _download(args):
    from minigriffin.gutenberg import download_books
    out = download_books(args.out, nonfiction=args.nonfiction)
    print(f"books in {out / 'nonfiction' if args.nonfiction else out}")
    return 0


COMMANDS = {"doctor": _doctor, "demo": _demo, "train": _train, "sample": _sample, "plot": _plot,
            "eval-length": _eval_length, "experiment": experiment_command, "download": _download,
            "check-scan": _check_scan, "bpe": _bpe}

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
    args, extra = parser.parse_known_args(argv)          # argparse's own errors exit 2 with one line
    if extra and not getattr(args, "takes_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    debug = os.environ.get("MINIGRIFFIN_DEBUG", "").lower() in ("1", "true", "yes")
    try:
        command = COMMANDS[args.command]
        return command(args, extra) if getattr(args, "takes_extra", False) else command(args)
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
