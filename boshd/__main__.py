import sys

from boshd.cli import main

sys.exit(main())
