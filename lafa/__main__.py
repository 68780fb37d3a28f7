import sys

from lafa.cli import main

sys.exit(main())
