import sys

from verb_console.cli import main

sys.exit(main())
