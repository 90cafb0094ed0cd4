"""`python -m symbackprop` is the `symbackprop` command."""

from .cli import main

raise SystemExit(main())
