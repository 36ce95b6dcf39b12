"""`hourglass agent`: the file journal of a running host (foreground; `--once`), and
`hourglass agent status`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from imaging.cli.common import print_json
from imaging.jobs import agent as jobs_agent
from imaging.units import count, human_duration


def cmd_agent(args: argparse.Namespace) -> int:
    config = jobs_agent.load_config(args.config)
    if args.action == "status":
        return _status(config, args.json)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent = jobs_agent.run_agent(config, once=args.once, stop=stop)
    if agent.last_error:
        print(f"hourglass: error: {agent.last_error}", file=sys.stderr)
        return 1
    return 0


def _status(config: jobs_agent.AgentConfig, as_json: bool) -> int:
    status = jobs_agent.agent_status(config)
    if as_json:
        print_json(
            {
                "protect": list(status.protect),
                "running": status.running,
                "newest_ns": status.newest_ns,
                "age": status.age,
                "queue": status.queue,
                "gaps": status.gaps,
                "segments": status.segments,
                "last_error": status.last_error,
                "unresolved": status.unresolved,
                "repository": status.repository,
            }
        )
        return 0
    print(f"Agent: {'running' if status.running else 'not running'}")
    print(f"Repository: {status.repository}")
    print(f"Protects: {', '.join(status.protect)}")
    age = status.age
    print(
        "Newest recovery point: "
        + (f"{human_duration(age)} ago" if age is not None else "none yet")
    )
    print(f"Queue: {count(status.queue, 'change')} not yet committed")
    print(f"Gaps recorded by this run: {status.gaps}")
    if status.unresolved:
        print(f"Events of directories gone before they were read: {status.unresolved}")
    print(f"Last error: {status.last_error or 'none'}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "agent", parents=[plain], help="protect this running host's files (the file journal)"
    )
    p.add_argument("action", nargs="?", choices=("status",), help="status: how the agent is")
    p.add_argument("--config", metavar="FILE", help="default /etc/hourglass/agent.toml")
    p.add_argument("--once", action="store_true", help="one rescan pass, commit, exit")
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.set_defaults(handler=cmd_agent)
