import sys

from target.cli import main

sys.exit(main())
