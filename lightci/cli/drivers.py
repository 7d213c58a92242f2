"""Before peewee loads: the database drivers a home on SQLite never needs stay unloaded,
and so does OpenSSL's hashing; ssl loads when something uses it, not when it is imported."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

from lightci.config import settings
from lightci.errors import UserError
from lightci.homes import resolve_home

# The drivers of the databases besides SQLite. peewee tries to import each of them when
# it loads (psycopg2 alone, with ssl, costs more than the rest of `lightci trigger`).
OTHER_DRIVERS = ("psycopg2cffi", "psycopg2", "psycopg", "pymysql", "MySQLdb")


def skip_other_drivers(cli_home: str | None) -> None:
    """A home on SQLite: this process never loads a PostgreSQL or MySQL driver.

    Marked missing in sys.modules before peewee loads, each driver fails its
    import at once. A process on [database] url (or one that loaded peewee
    already, such as a test calling main()) keeps them all. Likewise Redis's
    client, which huey imports when it loads (~6 MB in every worker), unless
    [queue] url is redis://.
    """
    if "peewee" in sys.modules:
        return
    # hashlib's OpenSSL half maps libcrypto (3.5 MB of RSS) into every process that
    # imports peewee, hmac or secrets; Python's own SHA-1, SHA-2 and MD5 make every
    # digest lightci asks for. ssl, loaded by an HTTPS delivery or Docker, maps it itself.
    sys.modules.setdefault("_hashlib", None)
    if "ssl" not in sys.modules:
        OnFirstUse.stand_in("ssl", native="_ssl")
    try:
        cfg = settings(resolve_home(cli_home))
    except (UserError, OSError):
        return  # a broken lightci.toml: the command itself says what is wrong
    if not cfg["database"]["url"]:
        for driver in OTHER_DRIVERS:
            sys.modules.setdefault(driver, None)
    if "huey" not in sys.modules and not cfg["queue"]["url"].startswith("redis"):
        sys.modules.setdefault("redis", None)


_loading = threading.Lock()


class OnFirstUse(types.ModuleType):
    """A module that imports the real one when a name is first asked of it.

    bottle imports http.client for its table of status texts, and http.client
    imports ssl to define HTTPSConnection, which uses ssl only once called: in a
    `serve` that sends nothing over TLS, ssl and its libraries would be 4 MB
    that no code touches. importlib.util.LazyLoader does the same, but in Python
    3.11 a second thread may see the module half-loaded (fixed in 3.12); here
    the first use loads it under a lock, and every later one finds its names.
    The real module takes its place in sys.modules; the modules that imported
    this one early keep it, with the real module's names copied into it.
    """

    @classmethod
    def stand_in(cls, name: str, native: str) -> None:
        """A stand-in for `name` in sys.modules, if it and `native` (its compiled half) are
        there to load: a Python built without them keeps failing `import name` as ever."""
        spec = importlib.util.find_spec(name)
        if spec is None or importlib.util.find_spec(native) is None:
            return
        module = cls(name)
        module.__spec__ = spec  # importlib.util.find_spec(name) answers without loading it
        sys.modules[name] = module

    def __getattr__(self, name: str):  # only for names not (yet) in this module
        with _loading:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
                try:
                    real = importlib.import_module(self.__name__)
                except ImportError:  # each later use tries again, and says why it fails
                    sys.modules[self.__name__] = self
                    raise
                self.__dict__.update(vars(real))
        return object.__getattribute__(self, name)  # loaded: a name it lacks, it lacks
