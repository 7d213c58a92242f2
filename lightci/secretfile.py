"""HOME/secrets.env: the values jobs name in `secrets = [...]`, [forge] token, [smtp] password."""

from __future__ import annotations

from pathlib import Path

from lightci.errors import UserError


def read_secrets(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments, optional 'export ' and quotes.

    A quoted value whose quote is not closed on its line goes on over the lines that
    follow, up to the first that ends with that quote: a PEM key in "...", a service
    account's JSON (full of double quotes) in '...'. Its lines keep their text.
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
        quote = value[:1]
        if quote in ("'", '"') and value.count(quote) == 1:  # KEY="x" # note stays one line
            for _, more in lines:
                value += "\n" + more.rstrip()
                if value.endswith(quote):
                    break
            else:
                raise UserError(f"{path}:{number}: the {quote} that opens {name} is never closed")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        secrets[name] = value
    return secrets
