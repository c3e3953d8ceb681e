import sys

from compiler.main import main

sys.exit(main())
