"""Record a chat with a checkpoint as a transcript (text) and a picture (SVG), for the docs.

    python scripts/render_chat.py --checkpoint runs/studies/qa-transfer/demofree/seed0 \
        --question "Which company did Thakhour Skunnou found?" --svg docs/trajectory.svg --text docs/chat-transcript.txt

Each question goes to `Agent(checkpoint).ask`, drawn by the same `ChatView` as `icrl-lite chat`, on a rich console
that records what it prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from icrl_lite.chat import Agent, ChatView, quiet_libraries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="base")
    parser.add_argument("--question", action="append", required=True, help="repeat for several questions")
    parser.add_argument("--demos", type=int, default=0)
    parser.add_argument("--svg", default="", help="write the recorded console as an SVG picture")
    parser.add_argument("--text", default="", help="write the recorded console as plain text")
    parser.add_argument("--title", default="icrl-lite chat")
    args = parser.parse_args(argv)
    quiet_libraries()
    agent = Agent(args.checkpoint, demos=args.demos)
    console = Console(record=True, width=104, force_terminal=True, highlight=False)
    view = ChatView(console)
    console.print(agent.describe(), style="dim", markup=False)
    for question in args.question:
        view.line(f"> {question}", "bold")
        view.reply(agent.ask(question, on_event=view.on_event))
    if args.text:
        Path(args.text).write_text(console.export_text(clear=False))
    if args.svg:
        Path(args.svg).write_text(console.export_svg(title=args.title, clear=False))


if __name__ == "__main__":
    main()
