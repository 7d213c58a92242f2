"""HOME/secrets.env: the values jobs name in `secrets = [...]`, [forge] token, [smtp] password."""

from __future__ import annotations

from pathlib import Path

from lightci.errors import UserError


def read_secrets(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments, optional 'export ' and quotes.

    A double-quoted value may go on over several lines (a PEM key, a service account's
    JSON) up to the line that ends with the closing quote; its lines keep their text.
    """
    if not path.exists():
        return {}
    secrets = {}
    lines = enumerate(path.read_text().splitlines(), 1)
    for number, line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").strip().partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name.isidentifier():
            raise UserError(f"{path}:{number}: expected KEY=VALUE")
        while value[:1] == '"' and (len(value) == 1 or value[-1] != '"'):
            more = next(lines, None)
            if more is None:
                raise UserError(f'{path}:{number}: the " that opens {name} is never closed')
            value += "\n" + more[1].rstrip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        secrets[name] = value
    return secrets
