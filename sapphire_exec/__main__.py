import sys

from sapphire_exec.cli import main

sys.exit(main())
