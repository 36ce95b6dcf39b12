"""Boot menus for every boot path, rendered from ``image/boot/``.

``entries.toml`` lists the menu entries once; each ``*.in`` template has text rendered once
and blocks between ``#@entry`` and ``#@end`` (or the end of the file) rendered per entry.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from string import Template

from build.errors import BuildError

TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Entry:
    id: str
    label: str
    options: str


def load_entries(boot_dir: Path, name: str) -> list[Entry]:
    data = tomllib.loads((boot_dir / "entries.toml").read_text())
    entries = [
        Entry(e["id"], Template(e["label"]).safe_substitute(name=name), e["options"])
        for e in data["entry"]
    ]
    if not entries:
        raise BuildError(f"{boot_dir / 'entries.toml'} has no [[entry]].")
    return entries


def render(
    template: Path,
    entries: list[Entry],
    *,
    base_params: str,
    kernel: str,
    initrd: str,
    where: str,
    name: str,
    version: str,
) -> str:
    """Render ``template`` for ``entries``; ``base_params`` come before each entry's options."""
    common = {
        "where": where,
        "name": name,
        "version": version,
        "kernel": kernel,
        "initrd": initrd,
        "timeout": str(TIMEOUT_SECONDS),
        "timeout_tenths": str(TIMEOUT_SECONDS * 10),
        "timeout_ms": str(TIMEOUT_SECONDS * 1000),
        "default": entries[0].id,
    }
    out: list[str] = []
    block: list[str] | None = None

    def flush() -> None:
        if block is not None:
            for e in entries:
                params = f"{base_params} {e.options}".strip()
                values = {**common, "id": e.id, "label": e.label, "params": params}
                out.append(Template("".join(block)).substitute(values))

    for line in template.read_text().splitlines(keepends=True):
        if line.strip() == "#@entry":
            flush()
            block = []
        elif line.strip() == "#@end":
            flush()
            block = None
        elif block is not None:
            block.append(line)
        else:
            out.append(Template(line).substitute(common))
    flush()
    return "".join(out)
