"""`python -m ddpm`: the command line of `ddpm.cli`."""

from ddpm.cli import main

raise SystemExit(main())
