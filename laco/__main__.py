import sys

from laco.cli import main

sys.exit(main())
