import sys

from wardgate.cli import main

sys.exit(main())
