"""Writes the API's OpenAPI document, generated from the app, to openapi/openapi.json.

    python -m rocr.service.openapi            # (re)write openapi/openapi.json
    python -m rocr.service.openapi --check    # exit 1 if the file differs from the app

The committed file is the API's contract for clients in other languages; a test fails when
the app and the file differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_PATH = Path("openapi") / "openapi.json"


def document() -> str:
    """The OpenAPI document of a default app, as the committed file holds it."""
    from rocr.service.app import create_app

    return json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rocr.service.openapi", description=__doc__)
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_PATH)
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    args = p.parse_args(argv)
    text = document()
    if args.check:
        try:
            current = args.output.read_text()
        except OSError as e:
            print(f"cannot read {args.output}: {e}", file=sys.stderr)
            return 1
        if current != text:
            print(
                f"{args.output} differs from the app; regenerate it with "
                "python -m rocr.service.openapi",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output} matches the app")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
