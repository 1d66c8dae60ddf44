"""Command line: `icrl-lite train`, `eval`, `study`, `chat`, `plot`, `export`, `plan`, `config`. Parses arguments and calls the library."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from .config import describe, load_config
from .preflight import check_writable_file


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["eval", "bfcl"]:
        return eval_bfcl(argv[2:])
    if argv[:2] == ["eval", "qa7"]:
        return eval_qa7(argv[2:])
    from .evaluate import EvalConfig
    from .trainer import TrainConfig

    parser = argparse.ArgumentParser(prog="icrl-lite", description="In-context RL for tool use on one GPU or a CPU.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a LoRA policy with ICRL", formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="config keys (set in --config YAML or as key=value):\n" + "\n".join(describe(TrainConfig)))
    train.add_argument("--config", help="YAML file or packaged config name (e.g. smoke)")
    train.add_argument("--resume", action="store_true", help="continue the run in output_dir from its latest checkpoint")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. learning_rate=5e-5 model.lora_rank=8")

    ev = sub.add_parser("eval", help="evaluate a checkpoint (or `base`) on its task (QA with search, math with Python, "
                        "function calling); `icrl-lite eval bfcl --help` for the BFCL benchmark, `icrl-lite eval qa7 --help` "
                        "for the seven QA datasets of Search-R1 and ICRL",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="more keys as key=value:\n" + "\n".join(describe(EvalConfig)))
    ev.add_argument("--checkpoint", default="base", help="checkpoint or run directory, or `base` (default)")
    ev.add_argument("--task", default="", help="qa | math | fc | a plugin's task (default: the checkpoint's task; qa for base)")
    ev.add_argument("--split", default="test")
    ev.add_argument("--demos", type=int, default=0, help="in-context demonstrations (default 0: zero-shot)")
    ev.add_argument("--dataset", default="", help="QA file or HF dataset name (default: bundled task)")
    ev.add_argument("--corpus", default="", help="corpus JSONL (default: bundled corpus)")
    ev.add_argument("--limit", type=int, default=0, help="first N questions only")
    ev.add_argument("--output", default="", help="per-question records JSONL")
    ev.add_argument("--config", help="YAML file of eval keys")
    ev.add_argument("overrides", nargs="*", metavar="key=value")

    study = sub.add_parser("study", help="train and evaluate several arms x seeds on one budget: results.md/.json and curves",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=study_keys())
    study.add_argument("--config", required=True, help="study YAML or packaged study name (e.g. qa-smoke)")
    study.add_argument("--report", nargs="+", metavar="ARM", default=None,
                       help="after the study chose on its split: evaluate these arms once on --report-split (all seeds)")
    study.add_argument("--report-split", default="test", help="the split of --report (default: test)")
    study.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. seeds=[0,1,2] eval.limit=50")

    plot = sub.add_parser("plot", help="draw a run's training curves and its tool-use health to PNGs")
    plot.add_argument("run_dir")
    plot.add_argument("--output", default=None, help="PNG path of the curves (default: <run_dir>/curves.png; the "
                      "health monitor goes beside it, as <name>-health.png or <run_dir>/health.png)")

    chat = sub.add_parser("chat", help="talk to a checkpoint (or `base`) in the terminal, its tool calls and their results "
                          "shown as they happen", formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="commands in the chat: /reset, /trace, /quit (or Ctrl-D, Ctrl-C)\nmore keys as key=value "
                          "(the evaluation keys; split, dataset, limit, batch_size and output do not apply):\n"
                          + "\n".join(describe(EvalConfig)))
    chat.add_argument("--checkpoint", default="base", help="checkpoint or run directory, or `base` (default)")
    chat.add_argument("--task", default="", help="qa | math | fc | a plugin's task (default: the checkpoint's task; qa for base)")
    chat.add_argument("--demos", type=int, default=0, help="in-context demonstrations (default 0: zero-shot)")
    chat.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    chat.add_argument("--memory", type=int, default=0, help="earlier exchanges kept in the prompt (default 0)")
    chat.add_argument("--schemas", default="", help="fc: JSON/JSONL file of the function schemas the agent may call "
                      "(default: those of the functions= implementations)")
    chat.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. corpus=my.jsonl rollout.max_turns=4")

    export = sub.add_parser("export", help="write a checkpoint's LoRA adapter (PEFT format) or, with --merge, a merged "
                            "model loadable by plain transformers")
    export.add_argument("--checkpoint", required=True, help="checkpoint or run directory (its latest checkpoint)")
    export.add_argument("--output", required=True, help="directory to write (refused if it holds files, unless --force)")
    export.add_argument("--merge", action="store_true", help="merge the adapter into the base weights: a standalone model")
    export.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="dtype of the merged weights (default: the base model's)")
    export.add_argument("--force", action="store_true", help="replace a non-empty --output")

    plan = sub.add_parser("plan", help="a training config's memory estimate and expected wall time on GPUs, from "
                          "arithmetic (no model is loaded)")
    plan.add_argument("--config", required=True, help="YAML file or packaged config name (e.g. paper-qwen3b)")
    plan.add_argument("--gpu", default="", help="comma-separated GPUs (default: those the config names, else all): "
                      "T4, L4, A10, RTX 4090, A100-80GB, H100")
    plan.add_argument("overrides", nargs="*", metavar="key=value")

    cfg = sub.add_parser("config", help="print every config key with its default and meaning")
    cfg.add_argument("which", nargs="?", default="train", choices=["train", "eval"])

    args = parser.parse_args(argv)
    try:
        if args.command == "config":
            print("\n".join(describe(TrainConfig if args.which == "train" else EvalConfig)))
            return 0
        if args.command == "study":
            from .study import load_study, report_study, run_study

            study_cfg, command = load_study(args.config, args.overrides), " ".join(["icrl-lite", *argv])
            if args.report:
                results = report_study(study_cfg, args.report, args.report_split, command=command)
                print(f"report: {results['config']['output_dir']}/report-{args.report_split}.md")
                return 0
            results = run_study(study_cfg, command=command)
            print(f"results: {results['config']['output_dir']}/results.md")
            return 0
        if args.command == "plan":
            from .config import resolve_config_path
            from .plan import GPUS, format_plan, plan_run, recipe_gpus

            config = load_config(TrainConfig, args.config, args.overrides)
            gpus = [g.strip() for g in args.gpu.split(",") if g.strip()] or recipe_gpus(resolve_config_path(args.config)) or list(GPUS)
            print(format_plan(config, plan_run(config, gpus), source=args.config))
            return 0
        if args.command == "chat":
            from .chat import Agent, ChatView, quiet_libraries, run_chat

            quiet_libraries()
            view = ChatView()
            view.line(f"loading {args.checkpoint} ...", "dim")
            agent = Agent(args.checkpoint, task=args.task, demos=args.demos, temperature=args.temperature,
                          memory=args.memory, schemas=args.schemas, overrides=args.overrides)
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C works even if started with SIGINT ignored
            status = run_chat(agent, view)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while the process exits prints no traceback
            return status
        if args.command == "export":
            from .export import export

            source = export(args.checkpoint, args.output, merge=args.merge, dtype=args.dtype, force=args.force)
            print(f"exported {source} to {args.output} ({'merged model' if args.merge else 'LoRA adapter'} + tokenizer)")
            return 0
        if args.command == "plot":
            from .plots import plot_health, plot_run

            print(plot_run(args.run_dir, args.output))
            health = Path(args.output).with_name(Path(args.output).stem + "-health.png") if args.output else None
            print(plot_health(args.run_dir, health))
            return 0
        if args.command == "train":
            from . import distributed
            from .trainer import Trainer

            source = args.config or (saved_run_config(args.overrides) if args.resume else None)
            config = load_config(TrainConfig, source, args.overrides)
            try:  # under torchrun: one of several processes (icrl_lite/distributed.py)
                trainer = Trainer(config, resume=args.resume)
                history = trainer.train()
                main = distributed.is_main()
            finally:
                distributed.teardown()
            if not main:  # rank 0 alone reports and runs the final evaluation
                return 0
            if history:
                last = history[-1]
                print(f"done: {len(history)} steps this run; last reward {last['reward']:.3f}, EM {last['em']:.3f}; run dir {config.output_dir}")
            if config.final_eval:
                from .evaluate import side_by_side

                print(side_by_side(trainer.final_evaluation(), trainer.task, trainer.tools))
            return 0
        from .checkpoints import resolve_checkpoint
        from .evaluate import default_output, evaluate, format_summary

        flags = [f"{k}={v}" for k, v in (("checkpoint", args.checkpoint), ("task", args.task), ("split", args.split), ("demos", args.demos),
                                         ("dataset", args.dataset), ("corpus", args.corpus), ("limit", args.limit),
                                         ("output", args.output))]
        config = load_config(EvalConfig, args.config, flags + args.overrides)
        source = None if config.checkpoint == "base" else resolve_checkpoint(config.checkpoint)
        check_writable_file(config.output or default_output(source, config), "--output")  # before any model work
        summary = evaluate(config)
        print(format_summary(summary))
        print(f"records: {summary['records']}")
        return 0
    except (ValueError, FileNotFoundError, FileExistsError, ImportError, FloatingPointError) as e:
        print(f"icrl-lite: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # training has printed how to resume
        print("icrl-lite: interrupted", file=sys.stderr)
        return 130


def saved_run_config(overrides: list[str]) -> str | None:
    """`train --resume` without `--config`: the config.yaml of the run in output_dir (given or default), so the run
    continues under its own config; the key=value overrides apply on top (the trainer names what they change)."""
    from .trainer import TrainConfig

    run_dir = load_config(TrainConfig, None, [o for o in overrides if o.startswith("output_dir=")]).output_dir
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        return None
    print(f"[icrl-lite] --resume: the run's own config, {saved}" + (", with the overrides on top" if overrides else ""))
    return str(saved)


def study_keys() -> str:
    from .study import ArmConfig, StudyConfig

    return ("study keys (in the YAML, or key=value):\n" + "\n".join(describe(StudyConfig))
            + "\neach arm's keys:\n" + "\n".join(describe(ArmConfig, "arms[].")))


def eval_bfcl(argv: list[str]) -> int:
    """`icrl-lite eval bfcl`: BFCL's Python single-turn categories, scored by our AST checker."""
    from .bfcl_eval import BfclConfig, format_report, run_bfcl

    parser = argparse.ArgumentParser(prog="icrl-lite eval bfcl", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Evaluate a checkpoint (or `base`) on BFCL (data from `pip install --no-deps bfcl-eval`).",
                                     epilog="more keys as key=value:\n" + "\n".join(describe(BfclConfig)))
    parser.add_argument("--checkpoint", default="base", help="checkpoint or run directory, or `base` (default)")
    parser.add_argument("--categories", default="", help="comma-separated categories (default: all Python single-turn ones)")
    parser.add_argument("--prompt", default="bfcl", choices=["bfcl", "toolrl"])
    parser.add_argument("--limit", type=int, default=0, help="first N entries per category")
    parser.add_argument("--sample", type=int, default=0, help="N random entries per category (seed=S picks them; default all)")
    parser.add_argument("--output", default="", help="JSONL of raw outputs and verdicts")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    flags = [f"checkpoint={args.checkpoint}", f"prompt={args.prompt}", f"limit={args.limit}", f"sample={args.sample}",
             f"output={args.output}"]
    if args.categories:
        flags.append(f"categories=[{args.categories}]")
    try:
        config = load_config(BfclConfig, None, flags + args.overrides)
        if config.output:
            check_writable_file(config.output, "--output")  # before the model loads and the benchmark runs
        report = run_bfcl(config)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"icrl-lite: error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


def eval_qa7(argv: list[str]) -> int:
    """`icrl-lite eval qa7`: NQ, TriviaQA, PopQA, HotpotQA, 2Wiki, MuSiQue, Bamboogle in the papers' table."""
    from .qa7 import Qa7Config, format_table, run_qa7

    parser = argparse.ArgumentParser(prog="icrl-lite eval qa7", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Evaluate a checkpoint (or `base`) on the seven QA datasets of "
                                     "Search-R1 and ICRL (FlashRAG layout) and print the papers' table.",
                                     epilog="more keys as key=value:\n" + "\n".join(describe(Qa7Config)))
    parser.add_argument("--checkpoint", default="base", help="checkpoint or run directory, or `base` (default)")
    parser.add_argument("--datasets", default="", help="comma-separated subset (default: all seven)")
    parser.add_argument("--source", default="", help="hub dataset or local FlashRAG-layout directory "
                        "(default: RUC-NLPIR/FlashRAG_datasets)")
    parser.add_argument("--corpus", default="", help="retrieval corpus JSONL (e.g. wiki18_100w.jsonl)")
    parser.add_argument("--demos", type=int, default=0, help="in-context demonstrations (default 0: zero-shot)")
    parser.add_argument("--limit", type=int, default=500, help="first N questions per dataset (default 500; 0 = all)")
    parser.add_argument("--output-dir", default="", help="records, summaries and the table (default: beside the checkpoint)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    flags = [f"checkpoint={args.checkpoint}", f"demos={args.demos}", f"limit={args.limit}"]
    flags += [f"{key}={value}" for key, value in (("source", args.source), ("corpus", args.corpus),
                                                   ("output_dir", args.output_dir)) if value]
    if args.datasets:
        flags.append(f"datasets=[{args.datasets}]")
    try:
        report = run_qa7(load_config(Qa7Config, None, flags + args.overrides))
    except (ValueError, FileNotFoundError, ImportError, FloatingPointError) as e:
        print(f"icrl-lite: error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"table: {report['output_dir']}/qa7.md (and qa7.json; per-question records beside them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
