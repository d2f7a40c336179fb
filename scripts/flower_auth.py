"""Flower's user:password for `make run`, so Flower never runs without one.

FLOWER_BASIC_AUTH from .env or the environment when set (.env first, as honcho, which starts Flower,
lets .env win); otherwise a password generated on the first run and kept in var/flower-auth (readable by
its owner only), so it stays the same from one `make run` to the next. Flower reads FLOWER_BASIC_AUTH from
its environment, which keeps the password out of the process list.

`python -m scripts.flower_auth` prints how to sign in on stderr, like the local admin's credentials, and
the value alone on stdout, for the Makefile to export.
"""
import argparse
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from honcho.environ import parse as dotenv_parse

ROOT = Path(__file__).resolve().parents[1]
USER = "ops"
VARIABLE = "FLOWER_BASIC_AUTH"


class FlowerAuthError(Exception):
    """The configured or saved credentials cannot work; the message says what to change."""


@dataclass(frozen=True)
class FlowerAuth:
    credentials: str
    message: str


def flower_auth_ensure(*, environment: Mapping[str, str], dotenv: Path, saved: Path) -> FlowerAuth:
    """The user:password Flower asks for, and how to sign in; generates and saves one when none is set."""
    configured = (dotenv_parse(dotenv.read_text()) if dotenv.exists() else {}).get(VARIABLE) \
        or environment.get(VARIABLE, "")
    if configured:
        users = [_user(entry, f"{VARIABLE} (user:password, several separated by commas)")
                 for entry in configured.split(",")]
        return FlowerAuth(configured, f"Flower: sign in as {' or '.join(users)}, with the password of {VARIABLE}.")
    created = not saved.exists()
    if created:
        saved.parent.mkdir(parents=True, exist_ok=True)
        # A password: readable by its owner only, from the moment it exists.
        with os.fdopen(os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(f"{USER}:{secrets.token_urlsafe(18)}\n")
    credentials = saved.read_text().strip()
    user = _user(credentials, f"{saved} (one line, user:password; delete it to get a new password)")
    password = credentials.split(":", 1)[1]
    shown = saved.relative_to(ROOT) if saved.is_relative_to(ROOT) else saved
    return FlowerAuth(credentials, f"{'Created ' if created else ''}Flower's sign-in: {user} / {password} "
                                   f"(kept in {shown}; set {VARIABLE}=user:password to choose your own)")


def _user(entry: str, where: str) -> str:
    user, colon, password = entry.partition(":")
    if not (user and colon and password):
        raise FlowerAuthError(f"Flower cannot accept the credentials in {where}: write them as user:password.")
    return user


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=ROOT / ".env", help="the .env file honcho reads")
    parser.add_argument("--saved", type=Path, default=ROOT / "var" / "flower-auth",
                        help="where a generated one is kept")
    args = parser.parse_args(argv)
    try:
        auth = flower_auth_ensure(environment=os.environ, dotenv=args.env_file, saved=args.saved)
    except FlowerAuthError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(auth.message, file=sys.stderr)
    print(auth.credentials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
