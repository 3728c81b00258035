import sys

from domaintune.cli.main import main

sys.exit(main())
