import sys

from portal.main import main

sys.exit(main())
