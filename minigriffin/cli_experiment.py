"""`minigriffin experiment`: parse-level checks, the command line recorded with each result, and the call into
the study (minigriffin/experiment.py, window_study.py, copy_retrieval.py). Bad arguments raise SystemExit with
one line, which minigriffin.cli prints with exit status 2."""

import os


def experiment_command(args):
    """minigriffin experiment NAME: the long-context studies (6.1, Appendix E) or copy and retrieval (6.2)."""
    if args.name == "copy-retrieval":
        return copy_retrieval_command(args)
    if args.task or args.model or args.steps is not None:
        raise SystemExit("--task, --model and --steps apply to `experiment copy-retrieval` only")
    from minigriffin.experiment import run_study
    from minigriffin.gutenberg import resolve_data_dir
    args.study = args.study or "extrapolation"
    out = args.out or os.path.join("runs", f"experiment-{args.preset}")
    data_dir = resolve_data_dir(args.data_dir)
    command = (f"minigriffin experiment {args.name} --study {args.study} --preset {args.preset} "
               + (f"--data-dir {args.data_dir} " if args.data_dir else "")     # as typed: portable
               + f"--out {out} --seed {args.seed}"
               + (f" --device {args.device}" if args.device != "cpu" else "")
               + "".join(f" --eval-data-dir {d}" for d in args.eval_data_dir))
    if args.study == "window":                       # Appendix E: minigriffin/window_study.py
        if args.eval_data_dir:
            raise SystemExit("--eval-data-dir applies to the extrapolation and train-length studies only")
        from minigriffin.window_study import run_window_study
        run_window_study(args.preset, data_dir, out, seed=args.seed, command=command, device=args.device)
        return 0
    run_study(args.study, args.preset, data_dir, out, seed=args.seed, command=command,
              eval_data_dirs=args.eval_data_dir, device=args.device)
    return 0


def copy_retrieval_command(args):
    """experiment copy-retrieval: Griffin section 6.2's tasks (minigriffin/copy_retrieval.py)."""
    from minigriffin.copy_retrieval import TASKS, run_copy_retrieval
    if args.study or args.data_dir or args.eval_data_dir:
        raise SystemExit("--study, --data-dir and --eval-data-dir apply to `experiment extrapolation` only "
                         "(the copy and retrieval tasks are generated, not read from books)")
    out = args.out or os.path.join("runs", f"copy-retrieval-{args.preset}")
    tasks = tuple(dict.fromkeys(args.task)) if args.task else TASKS
    command = (f"minigriffin experiment copy-retrieval --preset {args.preset}"
               + "".join(f" --task {t}" for t in (tasks if args.task else ()))
               + "".join(f" --model {m}" for m in args.model or ())
               + (f" --steps {args.steps}" if args.steps is not None else "")
               + f" --out {out} --seed {args.seed}" + (f" --device {args.device}" if args.device != "cpu" else ""))
    run_copy_retrieval(args.preset, out, tasks=tasks, seed=args.seed, device=args.device, command=command,
                       models=args.model, steps=args.steps)
    return 0
