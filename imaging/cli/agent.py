"""`hourglass agent`: the file journal of a running host (foreground; `--once`), and
`hourglass agent status`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any

from imaging.cli.common import local_time, print_json
from imaging.jobs import agent as jobs_agent
from imaging.units import count, human_duration, human_size


def cmd_agent(args: argparse.Namespace) -> int:
    config = jobs_agent.load_config(args.config)
    if args.action == "status":
        return _status(config, args.json)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent = jobs_agent.run_agent(config, once=args.once, stop=stop)
    failed = bool(agent.last_error)
    if agent.last_error:
        print(f"hourglass: error: {agent.last_error}", file=sys.stderr)
    if args.once and agent.offsite is not None:
        for target in agent.offsite.targets:
            if target.last_error:
                print(
                    f"hourglass: error: the off-site copy to {target.target.location} failed "
                    f"(the journal's changes are committed; the next pass tries again): "
                    f"{target.last_error}",
                    file=sys.stderr,
                )
                failed = True
    return 1 if failed else 0


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
                "offsite": [t.to_dict() for t in status.offsite],
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
    if config.offsite.targets:
        window = config.offsite.window
        limit = config.offsite.bwlimit
        print(
            f"Off-site copies: {f'in the window {window}' if window else 'at any time'}, "
            f"{f'bandwidth limit {limit}' if limit else 'no bandwidth limit'}"
        )
    for target in status.offsite:
        _print_target(target)
    return 0


def _when(moment: float | None) -> str:
    if moment is None:
        return "never"
    ago = human_duration(max(0.0, time.time() - moment))
    return f"{local_time(datetime.fromtimestamp(moment))} ({ago} ago)"


def _print_target(target: jobs_agent.OffsiteStatus) -> None:
    print(f"  {target.target}:{' copying now' if target.copying else ''}")
    print(f"    Last complete copy: {_when(target.last_success)}")
    if target.copied:
        print(
            f"    Last copied: {count(len(target.copied), 'snapshot')}, "
            f"{human_size(target.bytes_sent)}, {_when(target.last_copy)}"
        )
    if target.behind is None:
        print("    Behind: not known yet")
    else:
        print(
            f"    Behind: {count(target.behind, 'snapshot')} not copied yet"
            if target.behind
            else "    Behind: no, it has every snapshot"
        )
    if target.next_window is not None:
        print(f"    Window opens: {local_time(target.next_window)}")
    if target.last_error:
        print(f"    Last error ({_when(target.error_at)}): {target.last_error}")


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "agent", parents=[plain], help="protect this running host's files (the file journal)"
    )
    p.add_argument("action", nargs="?", choices=("status",), help="status: how the agent is")
    p.add_argument("--config", metavar="FILE", help="default /etc/hourglass/agent.toml")
    p.add_argument("--once", action="store_true", help="one rescan pass, commit, exit")
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.set_defaults(handler=cmd_agent)
