"""``python -m rollout``: the promotion CLI."""

from rollout.cli import main

raise SystemExit(main())
