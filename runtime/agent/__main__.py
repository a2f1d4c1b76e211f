"""`python -m edgewise.runtime.agent` runs the agent like `edgewise-agent`."""

import sys

from edgewise.runtime.agent.cli import main

sys.exit(main())
