"""`python -m wtbi_monitor` runs the command line."""

from wtbi_monitor.cli import main

raise SystemExit(main())
