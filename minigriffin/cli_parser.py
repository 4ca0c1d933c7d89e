"""The `minigriffin` command line's arguments: one subcommand each for train, sample, plot, eval-length,
experiment, download, doctor, demo and check-scan. minigriffin.cli runs the command the parsed arguments name.
"""

import argparse

EXIT_ERROR = 2          # bad input or a refused run: one line on stderr, no traceback


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (no usage block) and exit status 2."""

    def __init__(self, *args, **kwargs):
        # no abbreviations: `--res=...` must not silently mean --resume, and any --key=value that is not an
        # option of the command goes on to the config overrides, which name unknown keys
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seconds(text):
    """A positive number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def build_parser():
    parser = _Parser(
        prog="minigriffin",
        description="Hawk and Griffin (De, Smith et al. 2024) in NumPy with hand-written backprop.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    sub.add_parser("doctor", help="print versions, Numba threading, scan backends and GPU availability")
    demo = sub.add_parser("demo", help="train a small Griffin on books for a few minutes, sample, plot")
    demo.add_argument("--data-dir", help="folder of .txt books (default: $MINIGRIFFIN_BOOKS or a download)")
    demo.add_argument("--run-dir", help="output folder (default: runs/demo-<time>)")
    demo.add_argument("--steps", type=int, help="training steps (default: 300)")
    demo.add_argument("--scan", action="store_true", help="instead: the scan backends against the reference")
    demo.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for smoke tests")

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
    train.add_argument("--tokenizer", metavar="PATH",
                       help="a BPE tokenizer saved by `minigriffin bpe` (default: UTF-8 bytes); vocab_size is "
                            "set from it, and the run keeps a copy for eval-length and sample")
    train.add_argument("--distributed", choices=["auto", "mpi", "none"], default="auto",
                       help="mpi: one rank of a data-parallel job (mpiexec -n N minigriffin train ...; needs "
                            "minigriffin[mpi]); auto: mpi when started by an MPI launcher; none: one process "
                            "(default: %(default)s; docs/distributed.md)")
    train.add_argument("--distributed-timeout", type=_seconds, default=300.0, metavar="SECONDS",
                       help="under MPI, stop every rank with an error when another rank has not answered for this "
                            "long (a rank died or hung) (default: %(default)g)")
    train.set_defaults(takes_extra=True)      # its other --key=value options are config overrides

    bpe = sub.add_parser("bpe", help="train a byte-level BPE tokenizer on the training books",
                         description="Learn BPE merges on the books' training split (minigriffin/bpe.py) and save "
                                     "them as JSON, for `minigriffin train --tokenizer PATH`.")
    bpe.add_argument("--vocab-size", type=int, required=True, help="tokens, including the 256 bytes")
    bpe.add_argument("--data-dir", help="books folder (its train/ books; default: $MINIGRIFFIN_BOOKS or a download)")
    bpe.add_argument("--max-bytes", type=int, default=5_000_000,
                     help="learn from this many bytes, the same fraction of each book (default: %(default)s)")
    bpe.add_argument("--out", required=True, help="JSON file to write")

    sample = sub.add_parser("sample", help="generate text from a trained run")
    sample.add_argument("run_dir")
    sample.add_argument("--prompt", default="It was ")
    sample.add_argument("--max-new-tokens", type=int, default=300)
    sample.add_argument("--temperature", type=float, default=0.8)
    sample.add_argument("--top-k", type=int, default=None)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--checkpoint", choices=["best", "last"], default="best")

    plot = sub.add_parser("plot", help="draw loss curves of one or more runs to a PNG")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--out", help="PNG path (default: RUN_DIR/loss.png of the first run)")

    evl = sub.add_parser("eval-length", help="loss per token position on long validation books (Figure 5)")
    evl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    evl.add_argument("--data-dir", help="books folder (its valid/ books are evaluated)")
    evl.add_argument("--eval-data-dir", help="evaluate on this folder's books instead (its valid/ books if it has "
                                             "train/ and valid/, else every .txt file in it)")
    evl.add_argument("--max-len", type=int, required=True, help="evaluate each book up to this many tokens")
    evl.add_argument("--chunk-size", type=int, default=512, help="tokens per forward pass (state carried over)")
    evl.add_argument("--segments-per-book", type=int, default=1,
                     help="score up to K consecutive pieces of --max-len tokens per book, each as one document")
    evl.add_argument("--same-token", type=int, nargs="?", const=0, metavar="CUT",
                     help="also predict targets at 2L, 4L and the last positions with the context cut to CUT "
                          "tokens (default: the training length L) and report cut - full with a 95%% "
                          "bootstrap interval over documents (Griffin section 6.1, finding 1)")
    evl.add_argument("--context-use", action="store_true",
                     help="also print cut - full for contexts cut to 4, 16, 64, L/2 and L tokens, at targets "
                          "inside the training length and past it: how far back each model uses its context")
    evl.add_argument("--checkpoint", choices=["best", "last"], default="best")
    evl.add_argument("--out", help="folder for the CSVs and length.png (default: the first RUN_DIR)")

    exp = sub.add_parser("experiment", help="reproduce the paper's long-context (6.1) or copy and retrieval (6.2) "
                                            "study at laptop scale")
    exp.add_argument("name", choices=["extrapolation", "copy-retrieval"],
                     help="extrapolation: Griffin section 6.1 (Figure 5); copy-retrieval: section 6.2 (Figure 6)")
    exp.add_argument("--study", choices=["extrapolation", "train-length", "window"],
                     help="extrapolation only: which study (default: extrapolation; window: Griffin's window "
                          "size against global and local-only Transformers, Appendix E)")
    exp.add_argument("--preset", choices=["laptop", "tiny", "gpu"], default="laptop",
                     help="laptop: each experiment in ~15-30 min on 2 cores; tiny: seconds (tests); gpu: larger, "
                          "for --device gpu")
    exp.add_argument("--task", action="append", choices=["selective-copy", "induction", "phonebook"],
                     help="copy-retrieval only: a task to run (repeatable; default: all three)")
    exp.add_argument("--model", action="append", choices=["mqa", "hawk", "griffin", "hawk-cg", "griffin-cg",
                                                           "hawk-noconv", "griffin-noconv"],
                     help="copy-retrieval only: a model to train (repeatable; default: each task's models); "
                          "-cg: the CG-LRU, -noconv: the Conv1D ablation (temporal width 1)")
    exp.add_argument("--steps", type=int, help="copy-retrieval only: training steps instead of the preset's")
    exp.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="train and evaluate on this device")
    exp.add_argument("--data-dir")
    exp.add_argument("--out", help="output folder, shared by both extrapolation studies (default: "
                                   "runs/experiment-<preset>; copy-retrieval: runs/copy-retrieval-<preset>)")
    exp.add_argument("--seed", type=int, default=0)
    exp.add_argument("--eval-data-dir", action="append", default=[],
                     help="also evaluate the trained models on this folder's books (its valid/ books if it has "
                          "train/ and valid/, else every .txt file in it), e.g. the non-fiction books of "
                          "`minigriffin download --nonfiction`; repeatable; files <study>-on-<folder name>.*")

    check = sub.add_parser(
        "check-scan", help="property-test a scan kernel of your own against the reference, then time it",
        description="Check a function scan(x, a, h0, reverse, out) against minigriffin's reference scan, forward "
                    "and backward, on Hypothesis's hard cases (docs/testing-kernels.md), then time it against the "
                    "memory floor as benchmarks/bench_scan.py does. Exit status: 0 it agrees, 1 it disagrees (the "
                    "report shows the shrunk counterexample), 2 bad input.")
    check.add_argument("target", metavar="MODULE:FUNCTION",
                       help="e.g. my_kernels:scan or path/to/my_scan.py:scan (or the name of a scan backend)")
    check.add_argument("--max-examples", type=int, default=100, help="Hypothesis examples (default: %(default)s)")
    check.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    check.add_argument("--gpu", action="store_true", help="run the kernel on CuPy arrays (needs a usable GPU)")
    check.add_argument("--seed", type=int, help="a seed for a reproducible run")
    check.add_argument("--no-bench", action="store_true", help="check only, do not time")
    check.add_argument("--shapes", default="8x2048x512,1x16384x256",
                       help="comma-separated BxTxD to time (default: %(default)s, as bench_scan.py)")
    check.add_argument("--repeats", type=int, default=7, help="timings per call per round; the best counts")
    check.add_argument("--rounds", type=int, default=5, help="rounds of floor, bound and scans (CPU)")
    check.add_argument("--compare", default="numba",
                       help="built-in backends timed alongside on the CPU, comma-separated ('' for none; "
                            "default: %(default)s)")

    download = sub.add_parser("download", help="download the Project Gutenberg books into the cache")
    download.add_argument("--out", help="folder (default: the user cache directory)")
    download.add_argument("--nonfiction", action="store_true",
                          help="fetch the non-fiction evaluation books instead, into <folder>/nonfiction (then: "
                               "experiment ... --eval-data-dir <folder>/nonfiction)")
    return parser
