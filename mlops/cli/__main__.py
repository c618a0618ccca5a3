import sys

from mlops.cli.main import main

sys.exit(main())
